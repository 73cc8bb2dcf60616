"""Prometheus metrics: event hooks, scrape-side families from a snapshot and a
report, node_exporter-compatible labels, the dashboard and the alert rules. (The
renderer's tests are in ``test_exposition``.)"""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families

from lvsd.checks.base import ProbeResult
from lvsd.config.model import Config, VirtualServiceConfig
from lvsd.desired import Overrides, desired_table
from lvsd.health.state import HealthState, Transition
from lvsd.model import DestKey, Family, Protocol, ServiceKey, Snapshot
from lvsd.observe.metrics import Metrics, service_labels, state_family_steps
from lvsd.observe.status import StatusReport, build
from lvsd.observe.steps import finish
from tests.observe.conftest import WALL
from tests.observe.test_status import MARK, OK, REFUSED, WEB, A, feed, rs, world

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str, *, openmetrics: bool = False) -> Samples:
    parse = om_parse if openmetrics else text_string_to_metric_families
    out: Samples = {}
    for family in parse(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def scraped(*, openmetrics: bool = False) -> tuple[Metrics, Samples]:
    w = world()
    metrics = Metrics(CollectorRegistry())
    metrics.update(w.snapshot, w.report())
    text = metrics.exposition(openmetrics=openmetrics).decode()
    return metrics, samples(text, openmetrics=openmetrics)


def dest(
    service: str, local: tuple[str, str, str, str], address: str, port: int
) -> frozenset[tuple[str, str]]:
    la, lp, proto, mark = local
    return frozenset(
        {
            ("service", service),
            ("local_address", la),
            ("local_port", lp),
            ("remote_address", address),
            ("remote_port", str(port)),
            ("proto", proto),
            ("local_mark", mark),
        }
    )


def svc(service: str, local: tuple[str, str, str, str]) -> frozenset[tuple[str, str]]:
    la, lp, proto, mark = local
    return frozenset(
        {
            ("service", service),
            ("local_address", la),
            ("local_port", lp),
            ("proto", proto),
            ("local_mark", mark),
        }
    )


WEB_L = ("10.0.0.1", "80", "TCP", "")
MARK_L = ("", "0", "FWM", "00000001")
V6_L = ("2001:db8::1", "443", "TCP", "")


def test_service_labels_like_node_exporter() -> None:
    """proto upper case; a fwmark service has no address, port 0 and its mark as 8
    upper-case hex digits; IPv6 compressed."""
    assert WEB_L == service_labels(WEB)
    assert ("", "0", "FWM", "000000FF") == service_labels(ServiceKey.mark(255, Family.INET6))
    assert ("2001:db8::1", "443", "SCTP", "") == service_labels(
        ServiceKey.inet(Protocol.SCTP, "2001:0db8:0000::0001", 443)
    )


def test_kernel_destination_metrics() -> None:
    """Connections, packets, bytes and weight of a destination, with exact labels."""
    _, got = scraped()
    a = dest("web", WEB_L, "10.0.1.1", 80)
    expected = {
        "lvsd_ipvs_backend_connections_active": 4.0,
        "lvsd_ipvs_backend_connections_inactive": 7.0,
        "lvsd_ipvs_backend_connections_persistent": 1.0,
        "lvsd_ipvs_backend_connections_total": 120.0,
        "lvsd_ipvs_backend_incoming_packets_total": 1000.0,
        "lvsd_ipvs_backend_outgoing_packets_total": 900.0,
        "lvsd_ipvs_backend_incoming_bytes_total": 64000.0,
        "lvsd_ipvs_backend_outgoing_bytes_total": 1_500_000.0,
        "lvsd_ipvs_backend_weight": 3.0,
    }
    assert expected == {name: got[(name, a)] for name in expected}


def test_fwmark_and_ipv6_destination_labels() -> None:
    """The IPv6 fwmark service's destination: local_mark 00000001, remote address
    compressed, remote port 0."""
    _, got = scraped()
    m = dest("mark", MARK_L, "2001:db8::5", 0)
    assert 2.0 == got[("lvsd_ipvs_backend_connections_active", m)]
    assert 2.0 == got[("lvsd_ipvs_backend_weight", m)]
    v = dest("v6", V6_L, "2001:db8::10", 443)
    assert 5.0 == got[("lvsd_ipvs_backend_weight", v)]


def test_kernel_service_metrics() -> None:
    """Service counters come from the service's stats; gauges sum its destinations."""
    _, got = scraped()
    s = svc("web", WEB_L)
    expected = {
        "lvsd_ipvs_service_connections_total": 130.0,
        "lvsd_ipvs_service_incoming_packets_total": 1100.0,
        "lvsd_ipvs_service_outgoing_packets_total": 990.0,
        "lvsd_ipvs_service_incoming_bytes_total": 70000.0,
        "lvsd_ipvs_service_outgoing_bytes_total": 1_600_000.0,
        "lvsd_ipvs_service_connections_active": 4.0,
        "lvsd_ipvs_service_connections_inactive": 7.0,
        "lvsd_ipvs_service_weight": 3.0,
        "lvsd_ipvs_service_destinations": 3.0,
    }
    assert expected == {name: got[(name, s)] for name in expected}


def test_real_server_metrics() -> None:
    """Configured and effective weight, health code, Unix times of the last transition
    and of the stalest probe (the report's time less their ages)."""
    _, got = scraped()
    rows = {
        "10.0.1.1": (3.0, 3.0, 1.0, WALL - 90.0, WALL - 2.0),
        "10.0.1.2": (1.0, 0.0, 0.0, WALL - 80.0, WALL - 80.0),
        "10.0.1.3": (1.0, 1.0, 3.0, WALL - 90.0, WALL - 1.0),
    }
    names = (
        "lvsd_real_server_configured_weight",
        "lvsd_real_server_effective_weight",
        "lvsd_real_server_health",
        "lvsd_real_server_last_transition_timestamp_seconds",
        "lvsd_real_server_last_probe_timestamp_seconds",
    )
    actual = {addr: tuple(got[(n, dest("web", WEB_L, addr, 80))] for n in names) for addr in rows}
    assert rows == actual


def test_weight_factors_explain_the_effective_weight() -> None:
    """A real server back up 5 s into a 10 s slow start, with a dynamic weight of 41
    of its 82, shows factors dynamic 0.5, ramp 21/41 and drain 1 (those of the status
    report), whose product with the configured weight is its effective weight, 21."""
    config = Config(
        path="lvsd.toml",
        services=(
            VirtualServiceConfig(name="web", key=WEB, real_servers=(rs(A, 82),), slow_start=10.0),
        ),
    )
    health = HealthState.from_config(config, 0.0)
    feed(health, A, OK, 1.0)  # the first up at start does not ramp
    feed(health, A, REFUSED, 2.0)
    feed(health, A, replace(OK, weight=41), 10.0)  # up again at 10: ramps until 20
    now = 15.0
    table = desired_table(config, health.server_health(now), Overrides())
    report = build(config, health, table, frozenset(), now)
    metrics = Metrics(CollectorRegistry())
    metrics.update(Snapshot(table=table), report)
    got = samples(metrics.exposition().decode())

    labels = dest("web", WEB_L, "10.0.1.1", 80)
    factors = {
        f: got[("lvsd_real_server_weight_factor", labels | {("factor", f)})]
        for f in ("dynamic", "ramp", "drain")
    }
    assert {"dynamic": 0.5, "ramp": pytest.approx(21 / 41), "drain": 1.0} == factors
    explained = report.services[0].real_servers[0].factors
    assert (explained.dynamic, explained.ramp, explained.drain) == tuple(factors.values())
    configured = got[("lvsd_real_server_configured_weight", labels)]
    effective = got[("lvsd_real_server_effective_weight", labels)]
    assert (82.0, 21.0) == (configured, effective)
    assert effective == pytest.approx(configured * math.prod(factors.values()))


def test_service_state_metrics() -> None:
    """Sorry, quorum (only where configured), panic, server and check counts: web has
    one server up (C is drained) and one stale check (B's last result is 80 s old,
    more than 3 x 2 s + 1 s + 10 s)."""
    _, got = scraped()
    web = svc("web", WEB_L)
    mark = svc("mark", MARK_L)
    assert (0.0, 1.0, 0.0, 3.0, 1.0, 1.0, 3.0) == tuple(
        got[(n, web)]
        for n in (
            "lvsd_service_sorry_active",
            "lvsd_service_quorum_up",
            "lvsd_service_panic",
            "lvsd_service_real_servers",
            "lvsd_service_real_servers_up",
            "lvsd_service_checks_stale",
            "lvsd_service_checks",
        )
    )
    assert ("lvsd_service_quorum_up", mark) not in got
    assert 0.0 == got[("lvsd_service_panic", mark)]


def test_event_hooks() -> None:
    """Probe durations and results, transitions, reloads, netlink ops, drift
    repairs, panic and quorum changes are counted with their labels."""
    metrics = Metrics(CollectorRegistry())
    metrics.probe("tcp", ProbeResult(ok=True, detail="", duration=0.003))
    metrics.probe("tcp", ProbeResult(ok=False, detail="x", duration=0.2, reason="refused"))
    metrics.transition(
        Transition(service="web", realserver=A, old=True, new=False, reason="refused", detail="x")
    )
    metrics.reload("success", 1700000000.0)
    metrics.reload("failure", 1700000100.0)
    metrics.netlink("add-dest", True)
    metrics.netlink("add-dest", False)
    metrics.drift_repair(2)
    metrics.panic("web", True)
    metrics.quorum("web", False)
    got = samples(metrics.exposition().decode())
    f = frozenset
    expected = {
        ("lvsd_probe_duration_seconds_count", f({("kind", "tcp")})): 2.0,
        ("lvsd_probe_duration_seconds_bucket", f({("kind", "tcp"), ("le", "0.005")})): 1.0,
        ("lvsd_probe_duration_seconds_sum", f({("kind", "tcp")})): 0.203,
        (
            "lvsd_probe_results_total",
            f({("kind", "tcp"), ("outcome", "ok"), ("reason", "ok")}),
        ): 1.0,
        (
            "lvsd_probe_results_total",
            f({("kind", "tcp"), ("outcome", "fail"), ("reason", "refused")}),
        ): 1.0,
        (
            "lvsd_real_server_transitions_total",
            f({("service", "web"), ("to", "down"), ("reason", "refused")}),
        ): 1.0,
        ("lvsd_config_reloads_total", f({("result", "success")})): 1.0,
        ("lvsd_config_reloads_total", f({("result", "failure")})): 1.0,
        ("lvsd_config_last_reload_successful", f()): 0.0,
        ("lvsd_config_last_reload_success_timestamp_seconds", f()): 1700000000.0,
        ("lvsd_netlink_operations_total", f({("op", "add-dest")})): 2.0,
        ("lvsd_netlink_errors_total", f({("op", "add-dest")})): 1.0,
        ("lvsd_drift_repairs_total", f()): 2.0,
        ("lvsd_service_panic_transitions_total", f({("service", "web"), ("to", "on")})): 1.0,
        ("lvsd_service_quorum_transitions_total", f({("service", "web"), ("to", "down")})): 1.0,
    }
    assert expected == {k: pytest.approx(got[k]) for k in expected}
    build = [k for k in got if k[0] == "lvsd_build_info"]
    assert 1 == len(build)
    assert {"version", "python_version"} == {name for name, _ in build[0][1]}


def test_label_cache_follows_the_table_between_scrapes() -> None:
    """One Metrics scraped again after a destination leaves the table and a service
    is renamed gives what a fresh Metrics gives: cached label sets never leak."""
    w = world()
    kept = Metrics(CollectorRegistry())
    kept.update(w.snapshot, w.report())
    kept.exposition()
    table = dict(w.snapshot.table)
    vs = table[WEB]
    table[WEB] = replace(vs, destinations={k: d for k, d in vs.destinations.items() if k != A})
    other = ServiceKey.inet(Protocol.UDP, "10.9.9.9", 53)
    table[other] = vs
    snapshot = replace(w.snapshot, table=table)
    report = w.report()
    kept.update(snapshot, report)
    fresh = Metrics(CollectorRegistry())
    fresh.update(snapshot, report)
    expected = {
        k: v for k, v in samples(fresh.exposition().decode()).items() if "_created" not in k[0]
    }
    actual = {
        k: v for k, v in samples(kept.exposition().decode()).items() if "_created" not in k[0]
    }
    assert expected == actual
    gone = ("lvsd_ipvs_backend_weight", dest("web", WEB_L, "10.0.1.1", 80))
    assert gone not in actual


def test_prepared_label_sets_serve_the_first_scrape() -> None:
    """``prepare`` builds the label sets of the config's real servers (and sorry
    servers); the first scrape then uses those very objects, and a service gone from
    the config is forgotten."""
    w = world()
    metrics = Metrics(CollectorRegistry())
    metrics.prepare(w.config)
    vs = w.config.services[0]
    made = metrics._labels.service(vs.name, vs.key).dests[vs.real_servers[0].key]
    metrics.update(w.snapshot, w.report())
    shown = next(
        f for f in metrics.state.families() if f.name == "lvsd_real_server_configured_weight"
    )
    assert any(labels is made for labels in shown.labels)
    metrics.prepare(replace(w.config, services=w.config.services[1:]))
    assert (vs.name, vs.key) not in metrics._labels._services


def test_nothing_before_first_update() -> None:
    """Before the first update, only the event metrics are there."""
    metrics = Metrics(CollectorRegistry())
    names = {name for name, _ in samples(metrics.exposition().decode())}
    assert not any(n.startswith(("lvsd_ipvs_", "lvsd_real_server_health")) for n in names)


def test_unmanaged_service_has_empty_service_label() -> None:
    """A kernel service that lvsd does not manage is exported with service=""."""
    w = world()
    report = w.report()
    other = ServiceKey.inet(Protocol.UDP, "10.9.9.9", 53)
    table = dict(w.snapshot.table)
    table[other] = w.snapshot.table[WEB]
    metrics = Metrics(CollectorRegistry())
    metrics.update(replace(w.snapshot, table=table), report)
    got = samples(metrics.exposition().decode())
    assert (
        3.0
        == got[
            ("lvsd_ipvs_backend_weight", dest("", ("10.9.9.9", "53", "UDP", ""), "10.0.1.1", 80))
        ]
    )


def state_metrics(snapshot: Snapshot, report: StatusReport) -> list[Metric]:
    """The scrape-time families as prometheus_client metrics."""
    return [f.metric() for f in finish(state_family_steps(snapshot, report)) if f.values]


def health_values(metrics: Iterable[Metric]) -> Iterator[tuple[str, str, int, float]]:
    """(service, remote_address, remote_port, value) of every ``lvsd_real_server_health``
    sample: for comparing /metrics with /status."""
    for metric in metrics:
        if metric.name != "lvsd_real_server_health":
            continue
        for sample in metric.samples:
            lab = sample.labels
            yield (lab["service"], lab["remote_address"], int(lab["remote_port"]), sample.value)


def test_health_metric_agrees_with_status() -> None:
    """Every real server's lvsd_real_server_health equals the state code in the
    status report."""
    w = world()
    report = w.report()
    from_metrics = {
        (s, DestKey.of(a, p)): v for s, a, p, v in health_values(state_metrics(w.snapshot, report))
    }
    from_status = {(s.name, r.key): float(r.state) for s in report.services for r in s.real_servers}
    assert from_status == from_metrics
    assert MARK in {s.key for s in report.services}


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt prometheus)"
)
def test_promtool_check_metrics() -> None:
    """promtool lints a full scrape (state and events) without a complaint."""
    metrics, _ = scraped()
    metrics.probe("http", ProbeResult(ok=True, detail="", duration=0.01))
    metrics.reload("success", 1.0)
    metrics.netlink("edit-dest", True)
    w = world()
    metrics.update(w.snapshot, w.report())
    out = subprocess.run(
        ["promtool", "check", "metrics"],
        input=metrics.exposition(),
        capture_output=True,
        check=False,
    )
    assert (0, b"") == (out.returncode, out.stdout + out.stderr)


# --- the dashboard and the alert rules ----------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "etc" / "prometheus" / "lvsd-rules.yml"
DASHBOARD = ROOT / "etc" / "grafana" / "lvsd.json"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt prometheus)"
)


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard (panels, annotations, variables),
    with Grafana's variables replaced by what Grafana would put there."""
    data = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in data["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in data["annotations"]["list"] if "expr" in a]
    for var in data["templating"]["list"]:
        if var["type"] == "query":
            match = re.fullmatch(r"label_values\((.*), *\w+\)", var["definition"])
            assert match is not None, var["definition"]
            exprs.append(match.group(1))
    return [
        e.replace("$__rate_interval", "1m").replace("$instance", ".*").replace("$service", ".*")
        for e in exprs
    ]


def rule_exprs() -> list[str]:
    """The rules' expressions (each on one line of the file: no YAML parser needed)."""
    return re.findall(r"^ +expr: (.+)$", RULES.read_text(), re.MULTILINE)


def test_dashboard_and_rules_use_only_metrics_lvsd_exports() -> None:
    """Every lvsd_* name in the dashboard and the rules is in a scrape (with every
    hook called once), so no panel or alert queries a misspelt metric."""
    metrics, _ = scraped()
    metrics.probe("tcp", ProbeResult(ok=True, detail="", duration=0.01))
    metrics.transition(
        Transition(service="web", realserver=A, old=False, new=True, reason="ok", detail="")
    )
    metrics.reload("success", 1.0)
    metrics.netlink("add-dest", False)
    metrics.panic("web", True)
    metrics.quorum("web", True)
    exported = {name for name, _ in samples(metrics.exposition().decode())}
    used = {n for e in dashboard_exprs() + rule_exprs() for n in re.findall(r"lvsd_\w+", e)}
    assert set() == used - exported
    assert len(used) > 20


@needs_promtool
def test_promtool_check_rules() -> None:
    """promtool accepts the alert rules file."""
    out = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, check=False
    )
    assert 0 == out.returncode, out.stdout + out.stderr
    assert b"SUCCESS: 12 rules found" in out.stdout


@needs_promtool
def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    """Each dashboard expression, as a recording rule, passes promtool's parser."""
    exprs = dashboard_exprs()
    rules = {
        "groups": [
            {
                "name": "dash",
                "rules": [{"record": f"dash:expr{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dash.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    out = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, check=False
    )
    assert 0 == out.returncode, out.stdout + out.stderr
    assert f"SUCCESS: {len(exprs)} rules found".encode() in out.stdout


QUORUM_DESCRIPTION = (
    "The sum of the live weights of web is below its configured quorum minimum; "
    "its quorum down command ran."
)
RELOAD_DESCRIPTION = (
    "lvsd keeps running with the previous configuration. "
    "The journal has the file, key and line of the error."
)

PREFLIGHT_DESCRIPTION = (
    "A kernel module or setting the config needs is missing or off (for example "
    "net.ipv4.ip_forward = 0 with NAT services). The journal has a preflight.finding "
    "event for each, with its fix; `lvsd check --host` prints them too."
)


def labels_of(selector: str) -> dict[str, str]:
    """The labels of a series selector as Prometheus keeps them (an empty value is no
    label at all)."""
    return {k: v for k, v in re.findall(r'(\w+)="([^"]*)"', selector) if v}


@needs_promtool
def test_alerts_fire_on_lvsd_series(tmp_path: Path) -> None:
    """promtool's rule unit test: a real server at health 0 for 2 minutes, a sorry
    server active, a failed reload, a lost quorum and a host preflight error fire
    their alerts; a healthy real server fires none."""
    rs = 'service="web",local_address="10.0.0.1",local_port="80",proto="TCP",local_mark=""'
    down = f'{{{rs},remote_address="10.0.1.2",remote_port="80"}}'
    up = f'{{{rs},remote_address="10.0.1.1",remote_port="80"}}'
    svc = f"{{{rs}}}"
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"lvsd_real_server_health{down}", "values": "1 0 0 0"},
                    {"series": f"lvsd_real_server_health{up}", "values": "1 1 1 1"},
                    {"series": f"lvsd_service_sorry_active{svc}", "values": "0 1 1 1"},
                    {"series": f"lvsd_service_quorum_up{svc}", "values": "1 0 0 0"},
                    {
                        "series": 'lvsd_config_last_reload_successful{instance="d1",job="lvsd"}',
                        "values": "1 0",
                    },
                    {
                        "series": 'lvsd_preflight_problems{instance="d1",job="lvsd",level="error"}',
                        "values": "0 2",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "3m",
                        "alertname": "LvsdRealServerDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    **labels_of(down),
                                    "severity": "warning",
                                },
                                "exp_annotations": {
                                    "summary": "Real server 10.0.1.2:80 of web is down",
                                    "description": "Its health checks fail; it gets no new "
                                    "connections (weight 0 or removed). `lvsd status` "
                                    "shows the failing check's detail.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "3m",
                        "alertname": "LvsdSorryServerActive",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    **labels_of(svc),
                                    "severity": "critical",
                                },
                                "exp_annotations": {
                                    "summary": "Service web is served by its sorry server"
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "3m",
                        "alertname": "LvsdServiceBelowQuorum",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    **labels_of(svc),
                                    "severity": "critical",
                                },
                                "exp_annotations": {
                                    "summary": "Service web lost its quorum",
                                    "description": QUORUM_DESCRIPTION,
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "1m",
                        "alertname": "LvsdConfigReloadFailed",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "instance": "d1",
                                    "job": "lvsd",
                                    "severity": "warning",
                                },
                                "exp_annotations": {
                                    "summary": "lvsd on d1 failed to reload its configuration",
                                    "description": RELOAD_DESCRIPTION,
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "1m",
                        "alertname": "LvsdHostPreflightErrors",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "instance": "d1",
                                    "job": "lvsd",
                                    "level": "error",
                                    "severity": "warning",
                                },
                                "exp_annotations": {
                                    "summary": "lvsd on d1 found 2 host settings that break "
                                    "its services",
                                    "description": PREFLIGHT_DESCRIPTION,
                                },
                            }
                        ],
                    },
                    {"eval_time": "1m", "alertname": "LvsdRealServerDown", "exp_alerts": []},
                ],
            }
        ],
    }
    path = tmp_path / "test.yml"
    path.write_text(json.dumps(test))  # JSON is YAML
    out = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, check=False)
    assert 0 == out.returncode, (out.stdout + out.stderr).decode()


def docs_exprs() -> list[str]:
    """The example queries of docs/metrics.md (one per paragraph of its promql block)."""
    block = (ROOT / "docs" / "metrics.md").read_text().split("```promql")[1].split("```")[0]
    exprs: list[str] = []
    current: list[str] = []
    for line in [*block.splitlines(), ""]:
        if line.startswith("#") or not line.strip():
            if current:
                exprs.append(" ".join(current))
            current = []
        else:
            current.append(line.strip())
    return exprs


@needs_promtool
def test_documented_queries_parse(tmp_path: Path) -> None:
    """Every example query in docs/metrics.md passes promtool's parser and names
    only exported metrics."""
    exprs = docs_exprs()
    rules = {
        "groups": [
            {
                "name": "docs",
                "rules": [{"record": f"docs:e{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "docs.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    out = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, check=False
    )
    assert (0, 11) == (out.returncode, len(exprs)), out.stdout + out.stderr


def test_local_errors_are_counted_by_cause() -> None:
    """A ``local`` result counts in lvsd_probe_results (reason local) and in
    lvsd_probe_local_errors by errno name; other results only in the first."""
    metrics = Metrics(CollectorRegistry())
    local = ProbeResult(ok=False, detail="x", duration=0.0, reason="local", local="EMFILE")
    for result in (local, local, replace(local, local="ENOBUFS"), replace(local, local="")):
        metrics.probe("http", result)
    metrics.probe("http", ProbeResult(ok=False, detail="x", duration=0.0, reason="refused"))
    registry = metrics.registry
    counts = {
        cause: registry.get_sample_value(
            "lvsd_probe_local_errors_total", {"kind": "http", "cause": cause}
        )
        for cause in ("EMFILE", "ENOBUFS", "other")
    }
    assert {"EMFILE": 2.0, "ENOBUFS": 1.0, "other": 1.0} == counts
    assert 4.0 == registry.get_sample_value(
        "lvsd_probe_results_total", {"kind": "http", "outcome": "fail", "reason": "local"}
    )


def test_the_schedulers_lag_is_scraped() -> None:
    """Once watched, each scrape reads the scheduler's stats: lateness gauge, lag
    seconds, stretched, skipped and overran runs; nothing while there is none."""
    from lvsd.observe.status import LoadReport

    metrics = Metrics(CollectorRegistry())
    current: list[LoadReport | None] = [None]
    metrics.watch(lambda: current[0])
    registry = metrics.registry
    assert registry.get_sample_value("lvsd_scheduler_lateness_seconds") is None
    current[0] = LoadReport(late_max=0.25, lagged=3.5, stretched=40, skipped=2, overruns=1)
    samples = {
        name: registry.get_sample_value(name)
        for name in (
            "lvsd_scheduler_lateness_seconds",
            "lvsd_scheduler_lag_seconds_total",
            "lvsd_scheduler_stretched_runs_total",
            "lvsd_scheduler_skipped_runs_total",
            "lvsd_scheduler_overruns_total",
        )
    }
    assert [0.25, 3.5, 40.0, 2.0, 1.0] == list(samples.values())
    assert b"lvsd_scheduler_stretched_runs_total 40.0" in metrics.exposition()
