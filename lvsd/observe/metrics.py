"""Prometheus metrics on a private registry (never the global one).

Two sides:

* **events**, counted as they happen: the daemon calls the hooks :meth:`Metrics.probe`,
  :meth:`Metrics.transition`, :meth:`Metrics.reload`, :meth:`Metrics.netlink`,
  :meth:`Metrics.drift_repair`, :meth:`Metrics.panic`, :meth:`Metrics.quorum`,
  :meth:`Metrics.preflight` (the host audit at start and after each reload), and
  :meth:`Metrics.sync_daemons` (each check of the sync daemons);
* **state**, read at scrape time: :meth:`Metrics.update` takes one kernel
  :class:`~lvsd.model.Snapshot` and one :class:`~lvsd.observe.status.StatusReport` and sets
  what the custom collector yields on the next scrape (kernel counters per service and
  destination, configured and effective weights with the factors of the effective
  one, health, sorry/quorum/panic states), rendered by ``lvsd.observe.exposition``.

Kernel metrics carry the labels of node_exporter's IPVS collector, with the same
values (``proto`` TCP/UDP/SCTP/FWM; for a fwmark service ``local_mark`` is the mark
as 8 upper-case hex digits, ``local_address`` "" and ``local_port`` "0"; addresses
compressed), plus ``service``: lvsd's name for the service ("" for a service lvsd
does not manage). No label holds free text. Every metric is in ``docs/metrics.md``.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Final, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

import lvsd
from lvsd.checks.base import ProbeResult
from lvsd.config.model import Config
from lvsd.health.check import LOCAL
from lvsd.health.state import Transition
from lvsd.model import DestKey, ServiceKey, Snapshot, Stats
from lvsd.observe.exposition import (
    LabelSet,
    MetricFamily,
    StateCollector,
    escape_label_value,
    render_parts,
    reuse_labels,
    reuse_text,
)
from lvsd.observe.status import ServiceReport, StatusReport
from lvsd.observe.steps import finish
from lvsd.preflight import Finding, Severity

#: Labels of a kernel service (node_exporter's, plus ``service``).
#: No ``*_created`` series: nobody queries them and they double every counter's lines.
disable_created_metrics()  # type: ignore[no-untyped-call]

SERVICE_LABELS: Final = ("service", "local_address", "local_port", "proto", "local_mark")
#: Labels of a destination / real server (node_exporter's backend labels, plus ``service``).
DEST_LABELS: Final = (
    "service",
    "local_address",
    "local_port",
    "remote_address",
    "remote_port",
    "proto",
    "local_mark",
)
#: Labels of ``lvsd_real_server_weight_factor``: a real server's, plus ``factor``.
FACTOR_LABELS: Final = (*DEST_LABELS, "factor")
#: The values of ``factor``, in the order each real server's samples come.
WEIGHT_FACTORS: Final = ("dynamic", "ramp", "drain")

#: Probe duration buckets, seconds: a loopback connect to a slow HTTP check.
PROBE_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def service_labels(key: ServiceKey) -> tuple[str, str, str, str]:
    """(local_address, local_port, proto, local_mark) as node_exporter writes them."""
    if key.fwmark:
        return ("", "0", "FWM", f"{key.fwmark:08X}")
    return (key.address or "", str(key.port), str(key.protocol).upper(), "")


#: Destinations and real servers between two yields of :meth:`Metrics.update_steps`.
UPDATE_CHUNK: Final = 160


def _dest_families() -> dict[str, MetricFamily]:
    k = "kernel: "
    return {
        "active": MetricFamily(
            "lvsd_ipvs_backend_connections_active",
            "gauge",
            k + "active connections of the destination (ActiveConn)",
        ),
        "inactive": MetricFamily(
            "lvsd_ipvs_backend_connections_inactive",
            "gauge",
            k + "inactive connections of the destination (InActConn)",
        ),
        "persistent": MetricFamily(
            "lvsd_ipvs_backend_connections_persistent",
            "gauge",
            k + "persistence templates of the destination",
        ),
        "conns": MetricFamily(
            "lvsd_ipvs_backend_connections",
            "counter",
            k + "connections scheduled to the destination",
        ),
        "pin": MetricFamily(
            "lvsd_ipvs_backend_incoming_packets", "counter", k + "packets in to the destination"
        ),
        "pout": MetricFamily(
            "lvsd_ipvs_backend_outgoing_packets", "counter", k + "packets out of the destination"
        ),
        "bin": MetricFamily(
            "lvsd_ipvs_backend_incoming_bytes", "counter", k + "bytes in to the destination"
        ),
        "bout": MetricFamily(
            "lvsd_ipvs_backend_outgoing_bytes", "counter", k + "bytes out of the destination"
        ),
        "weight": MetricFamily(
            "lvsd_ipvs_backend_weight", "gauge", k + "weight of the destination in the table"
        ),
    }


def _service_families() -> dict[str, MetricFamily]:
    k = "kernel: "
    return {
        "active": MetricFamily(
            "lvsd_ipvs_service_connections_active",
            "gauge",
            k + "active connections of the service (sum over its destinations)",
        ),
        "inactive": MetricFamily(
            "lvsd_ipvs_service_connections_inactive",
            "gauge",
            k + "inactive connections of the service (sum over its destinations)",
        ),
        "persistent": MetricFamily(
            "lvsd_ipvs_service_connections_persistent",
            "gauge",
            k + "persistence templates of the service (sum over its destinations)",
        ),
        "conns": MetricFamily(
            "lvsd_ipvs_service_connections", "counter", k + "connections scheduled by the service"
        ),
        "pin": MetricFamily("lvsd_ipvs_service_incoming_packets", "counter", k + "packets in"),
        "pout": MetricFamily("lvsd_ipvs_service_outgoing_packets", "counter", k + "packets out"),
        "bin": MetricFamily("lvsd_ipvs_service_incoming_bytes", "counter", k + "bytes in"),
        "bout": MetricFamily("lvsd_ipvs_service_outgoing_bytes", "counter", k + "bytes out"),
        "weight": MetricFamily(
            "lvsd_ipvs_service_weight", "gauge", k + "sum of the weights of its destinations"
        ),
        "dests": MetricFamily(
            "lvsd_ipvs_service_destinations", "gauge", k + "destinations of the service"
        ),
    }


def _lvsd_families() -> dict[str, MetricFamily]:
    return {
        "configured": MetricFamily(
            "lvsd_real_server_configured_weight", "gauge", "weight of the real server in the config"
        ),
        "effective": MetricFamily(
            "lvsd_real_server_effective_weight",
            "gauge",
            "weight lvsd wants for the real server (configured x dynamic x slow start x drain; "
            "0 while down)",
        ),
        "factor": MetricFamily(
            "lvsd_real_server_weight_factor",
            "gauge",
            "factor of the real server's effective weight: dynamic (reported weight over "
            "configured), ramp (slow start), drain (0 when a check reports drain or weight 0); "
            "effective = configured x dynamic x ramp x drain, rounded",
            "d",
        ),
        "health": MetricFamily(
            "lvsd_real_server_health",
            "gauge",
            "health state of the real server: 0 down, 1 up, 2 held up by the panic guard, "
            "3 drained by the operator",
        ),
        "age": MetricFamily(
            "lvsd_real_server_last_transition_timestamp_seconds",
            "gauge",
            "Unix time the real server last went up or down (or lvsd started)",
            "d",
        ),
        "probe_age": MetricFamily(
            "lvsd_real_server_last_probe_timestamp_seconds",
            "gauge",
            "Unix time the stalest check of the real server last reported "
            "(absent until every check has reported once)",
            "d",
        ),
        "sorry": MetricFamily(
            "lvsd_service_sorry_active",
            "gauge",
            "1 while the service's sorry server is in the table, else 0",
        ),
        "quorum": MetricFamily(
            "lvsd_service_quorum_up",
            "gauge",
            "1 while the service has its quorum, 0 when lost (only services with a quorum)",
        ),
        "panic": MetricFamily(
            "lvsd_service_panic", "gauge", "1 while the panic guard holds downs back, else 0"
        ),
        "servers": MetricFamily(
            "lvsd_service_real_servers", "gauge", "configured real servers of the service"
        ),
        "servers_up": MetricFamily(
            "lvsd_service_real_servers_up",
            "gauge",
            "real servers of the service in state up or held",
        ),
        "stale": MetricFamily(
            "lvsd_service_checks_stale",
            "gauge",
            "checks of the service with no result in the last 3 intervals plus timeout plus 10 s "
            "(never reported counts as stale)",
        ),
        "checks": MetricFamily("lvsd_service_checks", "gauge", "configured checks of the service"),
    }


class Metrics:
    """Every lvsd metric, on ``registry``. One per daemon."""

    def __init__(self, registry: CollectorRegistry, *, process: bool = False) -> None:
        self.registry = registry
        if process:  # process_*: CPU, RSS, open and maximum descriptors (fd exhaustion)
            ProcessCollector(registry=registry)
        self.build_info = Gauge(
            "lvsd_build_info",
            "lvsd version and Python version; always 1",
            ["version", "python_version"],
            registry=registry,
        )
        self.build_info.labels(lvsd.__version__, platform.python_version()).set(1)
        self.probe_duration = Histogram(
            "lvsd_probe_duration_seconds",
            "time one probe took, by check kind",
            ["kind"],
            buckets=PROBE_BUCKETS,
            registry=registry,
        )
        self.probe_results = Counter(
            "lvsd_probe_results",
            "probe results by check kind, outcome (ok, fail) and reason word",
            ["kind", "outcome", "reason"],
            registry=registry,
        )
        self.local_errors = Counter(
            "lvsd_probe_local_errors",
            "probes that could not be made for want of lvsd's own resources (the server's "
            "state held), by check kind and errno name (EMFILE, ENOBUFS, ...)",
            ["kind", "cause"],
            registry=registry,
        )
        self.transitions = Counter(
            "lvsd_real_server_transitions",
            "real servers going up or down, by service, new state (to) and reason word",
            ["service", "to", "reason"],
            registry=registry,
        )
        self.reloads = Counter(
            "lvsd_config_reloads",
            "configuration reloads by result (success, failure, refused)",
            ["result"],
            registry=registry,
        )
        self.state_set_asides = Counter(
            "lvsd_state_files_set_aside",
            "state files found corrupt at start and renamed aside (the daemon went on "
            "with the entries it could read), by file",
            ["file"],
            registry=registry,
        )
        self.last_reload_ok = Gauge(
            "lvsd_config_last_reload_successful",
            "1 if the latest configuration reload succeeded (or none was tried), else 0",
            registry=registry,
        )
        self.last_reload_ok.set(1)
        self.last_reload_time = Gauge(
            "lvsd_config_last_reload_success_timestamp_seconds",
            "Unix time of the latest successful configuration load",
            registry=registry,
        )
        self.netlink_ops = Counter(
            "lvsd_netlink_operations",
            "IPVS operations sent to the kernel, by kind",
            ["op"],
            registry=registry,
        )
        self.netlink_errors = Counter(
            "lvsd_netlink_errors",
            "IPVS operations the kernel refused, by kind",
            ["op"],
            registry=registry,
        )
        self.drift_repairs = Counter(
            "lvsd_drift_repairs",
            "kernel operations made to repair a table changed behind lvsd's back",
            registry=registry,
        )
        self.drift_repairs.inc(0)
        self.panics = Counter(
            "lvsd_service_panic_transitions",
            "services entering (to=on) or leaving (to=off) panic",
            ["service", "to"],
            registry=registry,
        )
        self.quorums = Counter(
            "lvsd_service_quorum_transitions",
            "services losing (to=down) or regaining (to=up) their quorum",
            ["service", "to"],
            registry=registry,
        )
        for result in ("success", "failure", "refused"):
            self.reloads.labels(result)
        self.commands = Counter(
            "lvsd_commands",
            "commands lvsd ran (kind=notify) by how they ended (result=done, failed, "
            "timeout), and those replaced while waiting (result=coalesced)",
            ["kind", "result"],
            registry=registry,
        )
        self.preflight_problems = Gauge(
            "lvsd_preflight_problems",
            "host settings the config depends on found wrong by the latest preflight "
            "(lvsd check --host's audit, run at start and after each reload), by level "
            "(warn, error)",
            ["level"],
            registry=registry,
        )
        for severity in _PROBLEMS:
            self.preflight_problems.labels(severity)
        self._durations: dict[str, Histogram] = {}
        self._results: dict[tuple[str, bool, str], Counter] = {}
        self.sync_daemon_up = Gauge(
            "lvsd_sync_daemon_up",
            "whether the connection sync daemon of [sync] runs as configured, by state "
            "(master, backup), as of the latest check (start, drift repair, reload)",
            ["state"],
            registry=registry,
        )
        self.state = StateCollector()
        self._labels = LabelCache()
        registry.register(self.state)

    def watch(self, load: Callable[[], SchedulerLoad | None]) -> None:
        """Show the check scheduler's lag (``load()`` at each scrape; None: nothing)."""
        self.registry.register(_LoadCollector(load))

    # -- events -------------------------------------------------------------------------

    def probe(self, kind: str, result: ProbeResult) -> None:
        # once per probe: the label children are looked up once, then kept (kinds,
        # outcomes and reason words are few)
        duration = self._durations.get(kind)
        if duration is None:
            duration = self._durations[kind] = self.probe_duration.labels(kind)
        duration.observe(result.duration)
        key = (kind, result.ok, result.reason)
        counted = self._results.get(key)
        if counted is None:
            outcome = "ok" if result.ok else "fail"
            counted = self._results[key] = self.probe_results.labels(kind, outcome, result.reason)
        counted.inc()
        if result.reason == LOCAL:
            self.local_errors.labels(kind, result.local or "other").inc()

    def transition(self, t: Transition) -> None:
        self.transitions.labels(t.service, "up" if t.new else "down", t.reason).inc()

    def reload(self, result: str, now_wall: float) -> None:
        """A reload's ``result``: success, failure (a bad config) or refused (the guard)."""
        ok = result == "success"
        self.reloads.labels(result).inc()
        self.last_reload_ok.set(1 if ok else 0)
        if ok:
            self.last_reload_time.set(now_wall)

    def loaded(self, now_wall: float) -> None:
        """The config was loaded at start: its time counts as the last success."""
        self.last_reload_time.set(now_wall)

    def netlink(self, op_kind: str, ok: bool) -> None:
        self.netlink_ops.labels(op_kind).inc()
        errors = self.netlink_errors.labels(op_kind)
        if not ok:
            errors.inc()

    def drift_repair(self, count: int) -> None:
        self.drift_repairs.inc(count)

    def panic(self, service: str, on: bool) -> None:
        self.panics.labels(service, "on" if on else "off").inc()

    def quorum(self, service: str, up: bool) -> None:
        self.quorums.labels(service, "up" if up else "down").inc()

    def state_set_aside(self, name: str) -> None:
        self.state_set_asides.labels(name).inc()

    def command(self, kind: str, result: str) -> None:
        self.commands.labels(kind, result).inc()

    def sync_daemons(self, up: Mapping[str, bool]) -> None:
        """The latest sync pass: 1 or 0 per configured state; other states unset."""
        for state in ("master", "backup"):
            if state in up:
                self.sync_daemon_up.labels(state).set(1 if up[state] else 0)
            else:
                with contextlib.suppress(KeyError):
                    self.sync_daemon_up.remove(state)

    def preflight(self, findings: Iterable[Finding]) -> None:
        """The latest host audit's findings: count the warnings and errors."""
        severities = [f.severity for f in findings]
        for severity in _PROBLEMS:
            self.preflight_problems.labels(severity).set(severities.count(severity))

    # -- scrape side --------------------------------------------------------------------

    def prepare(self, config: Config) -> None:
        """Builds the label sets of ``config`` ahead of the scrapes (call before
        :func:`lvsd.daemon.heap.freeze`; see :meth:`LabelCache.prepare`)."""
        self._labels.prepare(config)

    def update(self, snapshot: Snapshot, report: StatusReport) -> None:
        """Set what the next scrape shows from one kernel dump and one status report."""
        finish(self.update_steps(snapshot, report))

    def update_steps(self, snapshot: Snapshot, report: StatusReport) -> Generator[None, None, None]:
        """:meth:`update` in steps of :data:`UPDATE_CHUNK` destinations (see
        ``lvsd.observe.status.build_steps``); the new families show once it has finished."""
        families = yield from state_family_steps(snapshot, report, self._labels)
        previous = self.state.families()
        reuse_labels(families, previous)
        reuse_text(families, previous)
        self.state.set(families)

    def exposition(self, openmetrics: bool = False) -> bytes:
        """The whole registry in the Prometheus text format (or OpenMetrics): what
        ``generate_latest(registry)`` gives, the scrape-side families rendered fast."""
        return finish(self.exposition_steps(openmetrics))

    def exposition_steps(self, openmetrics: bool = False) -> Generator[None, None, bytes]:
        """:meth:`exposition` in steps of ``lvsd.observe.exposition.TEXT_CHUNK`` lines;
        it renders the families of the :meth:`update` finished before it started."""
        return b"".join((yield from self.exposition_parts(openmetrics)))

    def exposition_parts(self, openmetrics: bool = False) -> Generator[None, None, list[bytes]]:
        """:meth:`exposition_steps` without the final join: the text as consecutive
        parts (for a streamed answer, without copying it whole)."""
        return render_parts(self.registry, self.state, openmetrics)


class SchedulerLoad(Protocol):
    """What the metrics read of the check scheduler's stats
    (``lvsd.checks.scheduler.CheckSchedulerStats``)."""

    @property
    def late_max(self) -> float: ...

    @property
    def lagged(self) -> float: ...

    @property
    def stretched(self) -> int: ...

    @property
    def skipped(self) -> int: ...

    @property
    def overruns(self) -> int: ...


class _LoadCollector(Collector):
    """The scheduler's lag, read at each scrape."""

    def __init__(self, load: Callable[[], SchedulerLoad | None]) -> None:
        self._load = load

    def collect(self) -> Iterable[Metric]:
        load = self._load()
        if load is None:
            return []
        return [
            GaugeMetricFamily(
                "lvsd_scheduler_lateness_seconds",
                "worst lateness of the check scheduler's timer loop in the last 10-20 s "
                "(lvsd's own lag: late runs are spread out, timeouts get it back)",
                value=load.late_max,
            ),
            CounterMetricFamily(
                "lvsd_scheduler_lag_seconds",
                "seconds the check scheduler's timer loop was held up past due runs",
                value=load.lagged,
            ),
            CounterMetricFamily(
                "lvsd_scheduler_stretched_runs",
                "runs found late and moved within their lateness to spread the backlog",
                value=load.stretched,
            ),
            CounterMetricFamily(
                "lvsd_scheduler_skipped_runs",
                "due runs skipped because the check's previous run was still going",
                value=load.skipped,
            ),
            CounterMetricFamily(
                "lvsd_scheduler_overruns",
                "runs cancelled past timeout + max(1 s, timeout), reported as timeouts",
                value=load.overruns,
            ),
        ]

    def describe(self) -> Iterable[Metric]:
        return []


#: The severities ``lvsd_preflight_problems`` counts, as its label ``level`` (not
#: ``severity``, which alerting rules set on their alerts): always both, 0 when none.
_PROBLEMS: Final = (Severity.WARN, Severity.ERROR)


class LabelCache:
    """The label sets of every (service name, service key) and its destinations,
    kept between scrapes: they change only with the config or the kernel table, and
    rendering 10,000 of them anew each scrape costs more than looking them up."""

    __slots__ = ("_services",)

    def __init__(self) -> None:
        self._services: dict[tuple[str, ServiceKey], _ServiceLabels] = {}

    def prepare(self, config: Config) -> None:
        """Holds the label sets of ``config``'s services and real servers (and sorry
        servers), and of no other service. Built at start and reload, before the
        config's objects are frozen (:func:`lvsd.daemon.heap.freeze`), they are frozen with
        them: a first scrape would otherwise make them all, and the collections after it
        walk them all."""
        kept = self._services
        self._services = {}
        for vs in config.services:
            entry = kept.get((vs.name, vs.key)) or _ServiceLabels(vs.name, vs.key)
            self._services[(vs.name, vs.key)] = entry
            for rs in vs.real_servers:
                entry.factor(rs.key)
            if vs.sorry_server is not None:
                entry.dest(vs.sorry_server.key)

    def service(self, name: str, key: ServiceKey) -> _ServiceLabels:
        entry = self._services.get((name, key))
        if entry is None:
            if len(self._services) > 4096:
                self._services.clear()  # bounded: services come and go with reloads
            entry = self._services[(name, key)] = _ServiceLabels(name, key)
        return entry


class _ServiceLabels:
    """One service's label set and its destinations' (by DestKey), and the three
    label sets of each destination's weight factors."""

    __slots__ = ("dests", "factors", "labels", "local", "name")

    def __init__(self, name: str, key: ServiceKey) -> None:
        self.name = name
        self.local = service_labels(key)
        self.labels = LabelSet(SERVICE_LABELS, (name, *self.local))
        self.dests: dict[DestKey, LabelSet] = {}
        self.factors: dict[DestKey, tuple[LabelSet, ...]] = {}

    def dest(self, dkey: DestKey) -> LabelSet:
        labels = self.dests.get(dkey)
        if labels is None:
            labels = self.dests[dkey] = _dest_labels(self.name, self.local, dkey)
        return labels

    def factor(self, dkey: DestKey) -> tuple[LabelSet, ...]:
        """The destination's label sets with ``factor`` added, in WEIGHT_FACTORS order."""
        labels = self.factors.get(dkey)
        if labels is None:
            dl = self.dests.get(dkey) or self.dest(dkey)
            labels = self.factors[dkey] = tuple(
                LabelSet(FACTOR_LABELS, (*dl.values, f), f'{dl.text[:-1]},factor="{f}"}}')
                for f in WEIGHT_FACTORS
            )
        return labels

    def trim(self, count: int) -> None:
        """Forget every destination when far more are kept than ``count`` are used."""
        if len(self.dests) > 2 * count + 64:
            self.dests.clear()
        if len(self.factors) > 2 * count + 64:
            self.factors.clear()


def state_family_steps(
    snapshot: Snapshot,
    report: StatusReport,
    cache: LabelCache | None = None,
    *,
    chunk: int = UPDATE_CHUNK,
) -> Generator[None, None, list[MetricFamily]]:
    """The scrape-time families of one snapshot and one report (label sets from
    ``cache``, filled as needed; a fresh one without), in steps: yields after about
    every ``chunk`` destinations and real servers."""
    if cache is None:
        cache = LabelCache()
    names = {s.key: s.name for s in report.services}
    dest = _dest_families()
    svc = _service_families()
    # Bound appends: this loop runs once per destination, 10,000 times a scrape.
    get_stats = snapshot.dest_stats.get
    l_active, v_active = dest["active"].labels.append, dest["active"].values.append
    l_inactive, v_inactive = dest["inactive"].labels.append, dest["inactive"].values.append
    l_persistent, v_persistent = dest["persistent"].labels.append, dest["persistent"].values.append
    l_conns, v_conns = dest["conns"].labels.append, dest["conns"].values.append
    l_pin, v_pin = dest["pin"].labels.append, dest["pin"].values.append
    l_pout, v_pout = dest["pout"].labels.append, dest["pout"].values.append
    l_bin, v_bin = dest["bin"].labels.append, dest["bin"].values.append
    l_bout, v_bout = dest["bout"].labels.append, dest["bout"].values.append
    l_weight, v_weight = dest["weight"].labels.append, dest["weight"].values.append
    budget = chunk
    for key, vs in snapshot.table.items():
        entry = cache.service(names.get(key, ""), key)
        entry.trim(len(vs.destinations))
        labels = entry.labels
        dest_labels = entry.dests
        stats = snapshot.service_stats.get(key)
        active = inactive = persistent = weight = 0
        for dkey, d in vs.destinations.items():
            dl = dest_labels.get(dkey) or entry.dest(dkey)
            ds = get_stats((key, dkey))
            if ds is not None:
                st = ds.stats
                l_active(dl)
                v_active(ds.active_connections)
                l_inactive(dl)
                v_inactive(ds.inactive_connections)
                l_persistent(dl)
                v_persistent(ds.persistent_connections)
                l_conns(dl)
                v_conns(st.connections)
                l_pin(dl)
                v_pin(st.packets_in)
                l_pout(dl)
                v_pout(st.packets_out)
                l_bin(dl)
                v_bin(st.bytes_in)
                l_bout(dl)
                v_bout(st.bytes_out)
                active += ds.active_connections
                inactive += ds.inactive_connections
                persistent += ds.persistent_connections
            l_weight(dl)
            v_weight(d.weight)
            weight += d.weight
            budget -= 1
            if budget <= 0:
                yield
                budget = chunk
        svc["active"].add(labels, active)
        svc["inactive"].add(labels, inactive)
        svc["persistent"].add(labels, persistent)
        if stats is not None:
            _add_stats(svc, labels, stats)
        svc["weight"].add(labels, weight)
        svc["dests"].add(labels, len(vs.destinations))
    own = _lvsd_families()
    wall = report.wall  # the report's ages become timestamps, as Prometheus wants them
    for s in report.services:
        entry = cache.service(s.name, s.key)
        budget = yield from _add_service(own, s, entry, budget, chunk, wall)
    return [*dest.values(), *svc.values(), *own.values()]


def _dest_labels(name: str, local: Sequence[str], dkey: DestKey) -> LabelSet:
    # Addresses, ports, proto and mark never need escaping; only the service name may.
    port = str(dkey.port)
    text = (
        f'{{service="{escape_label_value(name)}",local_address="{local[0]}",'
        f'local_port="{local[1]}",remote_address="{dkey.address}",remote_port="{port}",'
        f'proto="{local[2]}",local_mark="{local[3]}"}}'
    )
    return LabelSet(
        DEST_LABELS, (name, local[0], local[1], dkey.address, port, local[2], local[3]), text
    )


def _add_stats(families: dict[str, MetricFamily], labels: LabelSet, stats: Stats) -> None:
    families["conns"].add(labels, stats.connections)
    families["pin"].add(labels, stats.packets_in)
    families["pout"].add(labels, stats.packets_out)
    families["bin"].add(labels, stats.bytes_in)
    families["bout"].add(labels, stats.bytes_out)


def _add_service(
    own: dict[str, MetricFamily],
    s: ServiceReport,
    entry: _ServiceLabels,
    budget: int,
    chunk: int,
    wall: float,
) -> Generator[None, None, int]:
    """Adds one service's real servers and service samples; yields when ``budget``
    real servers are done (a new budget of ``chunk`` then) and returns what is left."""
    labels = entry.labels
    dest_labels = entry.dests
    factor_labels = entry.factors
    up = stale = checks = 0
    l_conf, v_conf = own["configured"].labels.append, own["configured"].values.append
    l_eff, v_eff = own["effective"].labels.append, own["effective"].values.append
    l_factor, v_factor = own["factor"].labels.append, own["factor"].values.append
    l_health, v_health = own["health"].labels.append, own["health"].values.append
    l_age, v_age = own["age"].labels.append, own["age"].values.append
    l_probe, v_probe = own["probe_age"].labels.append, own["probe_age"].values.append
    for rs in s.real_servers:
        dl = dest_labels.get(rs.key) or entry.dest(rs.key)
        l_conf(dl)
        v_conf(rs.configured_weight)
        factors = rs.factors
        l_eff(dl)
        v_eff(factors.effective if rs.up else 0)
        fl = factor_labels.get(rs.key) or entry.factor(rs.key)
        l_factor(fl[0])
        v_factor(factors.dynamic)
        l_factor(fl[1])
        v_factor(factors.ramp)
        l_factor(fl[2])
        v_factor(factors.drain)
        l_health(dl)
        v_health(int(rs.state))
        l_age(dl)
        v_age(wall - rs.since)
        if (age := rs.probe_age) is not None:
            l_probe(dl)
            v_probe(wall - age)
        if rs.up and not rs.drained:
            up += 1
        for c in rs.checks:
            if c.age is None or c.age > 3 * c.interval + c.timeout + 10:
                stale += 1
        checks += len(rs.checks)
        budget -= 1
        if budget <= 0:
            yield
            budget = chunk
    own["sorry"].add(labels, 1 if s.sorry_active else 0)
    if s.quorum is not None:
        own["quorum"].add(labels, 1 if s.quorum else 0)
    own["panic"].add(labels, 1 if s.panic else 0)
    own["servers"].add(labels, len(s.real_servers))
    own["servers_up"].add(labels, up)
    own["stale"].add(labels, stale)
    own["checks"].add(labels, checks)
    return budget


__all__ = [
    "DEST_LABELS",
    "FACTOR_LABELS",
    "PROBE_BUCKETS",
    "SERVICE_LABELS",
    "WEIGHT_FACTORS",
    "LabelCache",
    "Metrics",
    "service_labels",
    "state_family_steps",
]
