"""What ``lvsd status`` and ``GET /status`` show: every service and real server with
its health, its weights (configured, explained, in the kernel) and why.

Pure: :func:`build` reads the config, the health state and a kernel table and
returns frozen values; no I/O, no clock (``now`` is passed in, monotonic seconds, the
same clock the health state was fed with). The report renders itself as JSON
(:meth:`StatusReport.to_json`) and as text shaped like ``ipvsadm -Ln`` with health
columns (:meth:`StatusReport.render`).

Health states of a real server (also the values of the metric
``lvsd_real_server_health``, see ``docs/metrics.md``):

====== ===== =========================================================================
state  value meaning
====== ===== =========================================================================
down   0     its checks say down: weight 0 (quiesce) or out of the table (remove)
up     1     its checks say up: in the table with its effective weight
held   2     its checks say down, but the panic guard keeps it up (fail-open)
drained 3    the operator drained it: weight 0 whatever its checks say
====== ===== =========================================================================
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple

from lvsd.config.model import Config, SorryServer
from lvsd.health.check import cause
from lvsd.health.state import HealthState, StatusRow
from lvsd.health.weight import WeightFactors
from lvsd.model import DestKey, Forward, RealServerId, ServiceKey, Table
from lvsd.observe.steps import finish


class HealthCode(IntEnum):
    """A real server's state as one number (the ``lvsd_real_server_health`` gauge)."""

    DOWN = 0
    UP = 1
    HELD = 2
    DRAINED = 3

    def __str__(self) -> str:
        return self.name.lower()


_FORWARD_WORDS = {Forward.NAT: "Masq", Forward.DR: "Route", Forward.TUN: "Tunnel"}


class CheckReport(NamedTuple):
    """One check of one real server: its own up/down and latest result.

    This and :class:`RealServerReport` are named tuples, not frozen dataclasses: a
    scrape builds one per check and per real server, and a frozen dataclass's
    ``__init__`` (an ``object.__setattr__`` per field) is several times slower. They
    are as immutable."""

    kind: str
    port: int | None
    up: bool
    last_ok: bool | None  # None: no result yet
    reason: str
    detail: str
    age: float | None  # seconds since the latest result; None: none yet
    interval: float
    timeout: float

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "port": self.port,
            "up": self.up,
            "last_ok": self.last_ok,
            "reason": self.reason,
            "detail": self.detail,
            "age": self.age,
            "interval": self.interval,
            "timeout": self.timeout,
        }


class RealServerReport(NamedTuple):
    """One real server of one service (a named tuple, see :class:`CheckReport`)."""

    key: DestKey
    forward: Forward
    configured_weight: int
    kernel_weight: int | None  # None: not in the kernel table (or no table read)
    up: bool  # the table view: up (held counts as up)
    state: HealthCode
    drained: bool
    held: bool
    factors: WeightFactors
    since: float  # seconds since ``up`` last changed
    reason: str  # a fixed word from the deciding check (ok, refused, timeout, ...)
    detail: str  # what the deciding check saw
    checks: tuple[CheckReport, ...] = ()
    #: Seconds since the stalest check last reported (None: no check, or one that
    #: never reported).
    probe_age: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.key.address,
            "port": self.key.port,
            "forward": str(self.forward),
            "configured_weight": self.configured_weight,
            "kernel_weight": self.kernel_weight,
            "up": self.up,
            "state": str(self.state),
            "drained": self.drained,
            "held": self.held,
            "weight": {
                "configured": self.factors.configured,
                "dynamic": self.factors.dynamic,
                "ramp": self.factors.ramp,
                "drain": self.factors.drain,
                "effective": self.factors.effective,
                "explained": str(self.factors),
            },
            "since": self.since,
            "reason": self.reason,
            "detail": self.detail,
            "checks": [c.to_json() for c in self.checks],
            "probe_age": self.probe_age,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SorryReport:
    key: DestKey
    forward: Forward
    configured_weight: int
    kernel_weight: int | None
    active: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.key.address,
            "port": self.key.port,
            "configured_weight": self.configured_weight,
            "kernel_weight": self.kernel_weight,
            "active": self.active,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceReport:
    """One configured virtual service."""

    name: str
    key: ServiceKey
    scheduler: str
    in_kernel: bool  # None table counts as False
    sorry: SorryReport | None
    quorum: bool | None  # None: no quorum configured; else whether it holds
    panic: bool
    real_servers: tuple[RealServerReport, ...] = ()

    @property
    def sorry_active(self) -> bool:
        return self.sorry is not None and self.sorry.active

    @property
    def flags(self) -> tuple[str, ...]:
        """What is wrong or special with it, in words (``not in kernel``, ``panic``)."""
        return tuple(
            word
            for word, on in (
                ("not in kernel", not self.in_kernel),
                ("quorum down", self.quorum is False),
                ("panic", self.panic),
                ("sorry", self.sorry_active),
            )
            if on
        )

    def to_json(self) -> dict[str, Any]:
        key = self.key
        return {
            "name": self.name,
            "key": str(key),
            "family": str(key.family),
            "protocol": str(key.protocol) if key.protocol is not None else None,
            "address": key.address,
            "port": key.port,
            "fwmark": key.fwmark,
            "scheduler": self.scheduler,
            "in_kernel": self.in_kernel,
            "sorry": self.sorry.to_json() if self.sorry is not None else None,
            "sorry_active": self.sorry_active,
            "quorum": None if self.quorum is None else ("up" if self.quorum else "down"),
            "panic": self.panic,
            "real_servers": [r.to_json() for r in self.real_servers],
        }


class SyncLine(NamedTuple):
    """One connection sync daemon of ``[sync]`` (``lvsd.engine.sync.SyncCheck``)."""

    state: str  # master or backup
    up: bool  # running as configured
    text: str  # the daemon as the kernel runs it (or as configured) and its state

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "up": self.up, "text": self.text}


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadReport:
    """How far behind lvsd's own check scheduler runs (its lag is never the servers'
    failure: late runs are spread out and timeouts get the lag back)."""

    late_max: float  # the timer loop's worst lateness of the last 10-20 s (seconds)
    lagged: float  # seconds it was held up past due runs, in all
    stretched: int  # late runs moved to spread a backlog
    skipped: int  # due runs skipped because the previous one was still going
    overruns: int  # runs cancelled past their bound

    def to_json(self) -> dict[str, Any]:
        return {
            "late_max_s": round(self.late_max, 3),
            "lagged_s": round(self.lagged, 3),
            "stretched": self.stretched,
            "skipped": self.skipped,
            "overruns": self.overruns,
        }

    def __str__(self) -> str:
        return (
            f"Checks: late by at most {self.late_max:.2f} s lately,"
            f" {self.lagged:.1f} s behind in all, {self.stretched} late runs spread out,"
            f" {self.skipped} skipped, {self.overruns} overran"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReport:
    """Every configured service, in config order; ``load``: the scheduler's lag."""

    config_path: str
    services: tuple[ServiceReport, ...] = ()
    table_read: bool = True  # False when built without a kernel table
    #: Unix time the report was made (its ages become timestamps in the metrics);
    #: time.time is looked up per report, so tests can fix it.
    wall: float = field(default_factory=lambda: time.time(), compare=False)
    sync: tuple[SyncLine, ...] = ()  # the sync daemons of [sync], when configured
    load: LoadReport | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "config": self.config_path,
            "table_read": self.table_read,
            "services": [s.to_json() for s in self.services],
            "sync": [line.to_json() for line in self.sync],
        }
        if self.load is not None:
            out["scheduler"] = self.load.to_json()
        return out

    def render(self, *, colour: bool = False) -> str:
        """``ipvsadm -Ln`` with health columns: Weight is the kernel's ("-" when
        absent), Conf the configured weight, then state, seconds since it changed,
        the reason word and the detail. ``colour``: the state in ANSI colours."""
        head = "Prot LocalAddress:Port Scheduler Flags"
        rows: list[tuple[str, ...]] = [
            ("  -> RemoteAddress:Port", "Forward", "Weight", "Conf", "State", "Since", "Why")
        ]
        tones = [""]  # per row of ``rows``: the ANSI colour of its state
        lines: list[str | None] = []  # None marks a row of ``rows``
        for svc in self.services:
            lines.append(_service_line(svc))
            for rs in svc.real_servers:
                state = str(rs.state)
                if rs.state is HealthCode.UP and rs.factors.effective != rs.configured_weight:
                    state += f" ({rs.factors})"
                why = rs.reason if not rs.detail else f"{rs.reason}: {rs.detail}"
                rows.append(
                    (
                        f"  -> {rs.key}",
                        _FORWARD_WORDS.get(rs.forward, str(rs.forward)),
                        _weight(rs.kernel_weight),
                        str(rs.configured_weight),
                        state,
                        _duration(rs.since),
                        why,
                    )
                )
                tones.append(_TONES[rs.state])
                lines.append(None)
            if svc.sorry is not None:
                rows.append(
                    (
                        f"  -> {svc.sorry.key}",
                        _FORWARD_WORDS.get(svc.sorry.forward, str(svc.sorry.forward)),
                        _weight(svc.sorry.kernel_weight),
                        str(svc.sorry.configured_weight),
                        "sorry" if svc.sorry.active else "sorry (idle)",
                        "",
                        "",
                    )
                )
                tones.append(_TONES[HealthCode.HELD] if svc.sorry.active else "")
                lines.append(None)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]

        def fmt(row: tuple[str, ...], tone: str) -> str:
            cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
            if colour and tone:  # after the padding: escapes take no width
                cells[4] = f"\033[{tone}m{row[4]}\033[0m" + cells[4][len(row[4]) :]
            return " ".join([*cells, row[-1]]).rstrip()

        out = [head, fmt(rows[0], "")]
        row_iter = iter(zip(rows[1:], tones[1:], strict=True))
        for line in lines:
            out.append(fmt(*next(row_iter)) if line is None else line)
        if not self.table_read:
            out.append("(kernel table not read: Weight unknown)")
        out += [f"Sync daemon {line.text}" for line in self.sync]
        if self.load is not None:
            out.append(str(self.load))
        return "\n".join(out) + "\n"


#: ANSI colours of the states in :meth:`StatusReport.render` (as on the status page).
_TONES = {
    HealthCode.UP: "32",
    HealthCode.DOWN: "1;31",
    HealthCode.HELD: "33",
    HealthCode.DRAINED: "34",
}


def _weight(value: int | None) -> str:
    return "-" if value is None else str(value)


def _duration(seconds: float) -> str:
    s = int(max(0.0, seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _service_line(svc: ServiceReport) -> str:
    key = svc.key
    if key.fwmark:
        prot = "FWM"
        where = str(key.fwmark) + (" IPv6" if str(key.family) == "inet6" else "")
    else:
        prot = str(key.protocol).upper()
        where = str(key).split(" ", 1)[1]
    return "".join(
        [f"{prot:<4} {where} {svc.scheduler}", f"  [{svc.name}]", *(f" {f}" for f in svc.flags)]
    )


class _Layout:
    """What :func:`build` derives from a config alone, kept between builds of the same
    config (it changes only on reload): per service its scheduler word, per real
    server its forward and weight, per check its name, kind, port, interval and
    timeout."""

    __slots__ = ("config", "services")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.services = [
            (
                svc,
                str(svc.scheduler),
                [
                    (
                        rs.forward,
                        rs.weight,
                        tuple(
                            (str(spec), spec.kind, spec.port, spec.interval, spec.timeout)
                            for spec in rs.checks
                        ),
                    )
                    for rs in svc.real_servers
                ],
            )
            for svc in config.services
        ]


_layout_cache: list[_Layout] = []


def prepare(config: Config) -> None:
    """Derives what :func:`build` needs of ``config`` alone ahead of the first build
    (the daemon does it at start and reload, before it freezes the config's objects)."""
    _layout(config)


def _layout(config: Config) -> _Layout:
    if _layout_cache and _layout_cache[0].config is config:
        return _layout_cache[0]
    layout = _Layout(config)
    _layout_cache[:] = [layout]
    return layout


_CheckInfo = tuple[str, str, int | None, float, float]


def _real_server(
    name: str,
    forward: Forward,
    weight: int,
    infos: tuple[_CheckInfo, ...],
    row: StatusRow,
    kernel: Mapping[DestKey, int] | None,
    drained: frozenset[RealServerId],
    now: float,
) -> RealServerReport:
    _, dest, up, since, held, factors, statuses = row
    is_drained = (name, dest) in drained if drained else False
    if is_drained:
        code = HealthCode.DRAINED
    elif held:
        code = HealthCode.HELD
    elif up:
        code = HealthCode.UP
    else:
        code = HealthCode.DOWN
    checks: list[CheckReport] = []
    probe_age: float | None = 0.0
    for (_, kind, port, interval, timeout), (_, status) in zip(infos, statuses, strict=True):
        last_at = status.last_at
        if last_at is None:
            age = None
            probe_age = None
        else:
            age = now - last_at
            if probe_age is not None and age > probe_age:
                probe_age = age
        checks.append(
            CheckReport(
                kind=kind,
                port=port,
                up=status.up,
                last_ok=status.last_ok,
                reason=status.reason,
                detail=status.detail,
                age=age,
                interval=interval,
                timeout=timeout,
            )
        )
    if not checks:
        probe_age = None
    # The deciding check, by the rule the transitions in the logs use.
    reason, detail, _ = cause(statuses, up and not held)
    if is_drained:
        reason = "drained"
    elif held:
        reason = "panic"
    return RealServerReport(
        key=dest,
        forward=forward,
        configured_weight=weight,
        kernel_weight=kernel.get(dest) if kernel is not None else None,
        up=up,
        state=code,
        drained=is_drained,
        held=held,
        factors=factors,
        since=now - since,
        reason=reason,
        detail=detail,
        checks=tuple(checks),
        probe_age=probe_age,
    )


def _sorry(
    sorry: SorryServer | None,
    servers: tuple[RealServerReport, ...],
    kernel: Mapping[DestKey, int] | None,
    any_up: bool,
    quorum_lost: bool,
) -> SorryReport | None:
    if sorry is None:
        return None
    configured = {r.key for r in servers}
    if kernel is not None:
        active = sorry.key in kernel and sorry.key not in configured
    else:
        active = (not any_up or quorum_lost) and sorry.key not in configured
    return SorryReport(
        key=sorry.key,
        forward=sorry.forward,
        configured_weight=sorry.weight,
        kernel_weight=kernel.get(sorry.key) if kernel is not None else None,
        active=active,
    )


#: Real servers :func:`build_steps` reports between two yields.
CHUNK = 40


def build(
    config: Config,
    health: HealthState,
    table: Table | None,
    drained: frozenset[RealServerId],
    now: float,
    *,
    load: LoadReport | None = None,
) -> StatusReport:
    """The report of ``config`` as ``health`` sees it at ``now``, with the kernel
    weights of ``table`` (None: not read; the sorry server's state is then what the
    desired table would say) and the scheduler's ``load`` if given."""
    return finish(build_steps(config, health, table, drained, now, load=load))


def build_steps(
    config: Config,
    health: HealthState,
    table: Table | None,
    drained: frozenset[RealServerId],
    now: float,
    *,
    chunk: int = CHUNK,
    load: LoadReport | None = None,
) -> Generator[None, None, StatusReport]:
    """:func:`build` in steps: yields after about every ``chunk`` real servers and
    returns the report (``yield from``, or :func:`lvsd.observe.steps.finish`). Whoever
    drives it may let other work run between steps (``lvsd.observe.steps.drive`` lets
    the probes start); the health state may then move on in between, so each real
    server is reported as it was when its step ran (quorum and panic as at the first
    step)."""
    quorum_lost = health.quorum_lost()
    panicking = health.panicking()
    services: list[ServiceReport] = []
    budget = chunk
    for svc, scheduler, layout in _layout(config).services:
        vs = table.get(svc.key) if table is not None else None
        kernel: dict[DestKey, int] | None = None
        if table is not None:
            kernel = {} if vs is None else {k: d.weight for k, d in vs.destinations.items()}
        name = svc.name
        # service_rows lists a service's real servers in config order, a chunk at a
        # time: each as it is when its step runs.
        built: list[RealServerReport] = []
        start = 0
        total = len(layout)
        while start < total:
            if budget <= 0:
                yield
                budget = chunk
            end = start + budget
            rows = health.service_rows(name, now, start, end)
            if len(rows) != len(layout[start:end]):
                raise ValueError(f"service {name}: the health state does not match the config")
            built.extend(
                [
                    _real_server(name, forward, weight, infos, row, kernel, drained, now)
                    for (forward, weight, infos), row in zip(layout[start:end], rows, strict=True)
                ]
            )
            budget -= len(rows)
            start = end
        if not layout and health.service_rows(name, now):
            raise ValueError(f"service {name}: the health state does not match the config")
        servers = tuple(built)
        any_up = any(r.up and not r.drained for r in servers)
        services.append(
            ServiceReport(
                name=name,
                key=svc.key,
                scheduler=scheduler,
                in_kernel=vs is not None,
                sorry=_sorry(svc.sorry_server, servers, kernel, any_up, name in quorum_lost),
                quorum=None if svc.quorum is None else name not in quorum_lost,
                panic=name in panicking,
                real_servers=servers,
            )
        )
    return StatusReport(
        config_path=config.path,
        services=tuple(services),
        table_read=table is not None,
        load=load,
    )


__all__ = [
    "CheckReport",
    "HealthCode",
    "LoadReport",
    "RealServerReport",
    "ServiceReport",
    "SorryReport",
    "StatusReport",
    "build",
    "build_steps",
    "prepare",
]
