"""What a health report turns into: log events, hook calls and quorum commands."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

from structlog.testing import capture_logs

from lvsd.checks.base import ProbeResult
from lvsd.config import load
from lvsd.engine.announce import Announcer, Hooks, NullHooks, _run_bounded
from lvsd.health.state import PanicTransition, QuorumTransition, Report, Transition
from tests.checks.test_exec import _gone
from tests.engine.helpers import RS1, RS2, cid, config_text, fail, ok, started, write


async def test_quorum_loss_runs_the_down_command(tmp_path: Path) -> None:
    """Losing the quorum runs down_command once; regaining it runs up_command."""
    extra = """
[services.web.quorum]
minimum = 2
down_command = ["/bin/echo", "down"]
up_command = ["/bin/echo", "up"]
"""
    ran: list[tuple[str, ...]] = []
    engine, _, _ = await started(
        tmp_path, config_text(service_extra=extra), run_command=lambda argv: ran.append(tuple(argv))
    )
    await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
    await engine.results([(cid(engine.config, "10.0.0.2"), ok())])
    assert [("/bin/echo", "down"), ("/bin/echo", "up")] == ran


async def test_panic_holds_a_round_of_failures_and_logs_at_error(tmp_path: Path) -> None:
    """Most of the pool failing in one round trips the panic guard: weights are kept
    (no op) and ``service.panic`` is logged at error level."""
    from structlog.testing import capture_logs

    extra = "\n[services.web.panic]\nthreshold = 0.5\nmin_servers = 3\n"
    servers = (("10.0.0.2", 1), ("10.0.0.3", 1), ("10.0.0.4", 1))
    engine, backend, _ = await started(tmp_path, config_text(servers, service_extra=extra))
    received = len(backend.received)
    batch = [(cid(engine.config, a), fail()) for a, _ in servers]
    with capture_logs() as logs:
        await engine.results(batch)
    assert received == len(backend.received)
    panics = [e for e in logs if e["event"] == "service.panic"]
    assert [("error", "web", 3, 3)] == [
        (e["log_level"], e["service"], e["failing"], e["total"]) for e in panics
    ]


# -- Announcer on its own ----------------------------------------------------------------


class Recorder:
    """Hooks that keep every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def probe(self, kind: str, result: ProbeResult) -> None:
        self.calls.append(("probe", kind))

    def transition(self, t: Transition) -> None:
        self.calls.append(("transition", t))

    def reload(self, result: str, now_wall: float) -> None:
        self.calls.append(("reload", result))

    def netlink(self, op_kind: str, ok: bool) -> None:
        self.calls.append(("netlink", (op_kind, ok)))

    def drift_repair(self, count: int) -> None:
        self.calls.append(("drift_repair", count))

    def panic(self, service: str, on: bool) -> None:
        self.calls.append(("panic", (service, on)))

    def quorum(self, service: str, up: bool) -> None:
        self.calls.append(("quorum", (service, up)))

    def state_set_aside(self, name: str) -> None:
        self.calls.append(("state_set_aside", name))

    def command(self, kind: str, result: str) -> None:
        self.calls.append(("command", (kind, result)))


QUORUM = """
[services.web.quorum]
minimum = 2
down_command = ["/bin/echo", "down"]
"""


def test_hooks_are_fitted_by_the_null_hooks_and_the_metrics() -> None:
    """Both stand-ins fit the protocol (checked by mypy on these assignments)."""
    from prometheus_client import CollectorRegistry

    from lvsd.observe.metrics import Metrics

    hooks: list[Hooks] = [NullHooks(), Metrics(CollectorRegistry()), Recorder()]
    assert 3 == len(hooks)


def test_a_report_is_logged_and_told_to_the_hooks(tmp_path: Path) -> None:
    """Each change is one log event with its keys and one hook call, in the order
    transitions, panic, quorum; the lost quorum runs its down command."""
    config = load(write(tmp_path, config_text(service_extra=QUORUM)))
    hooks = Recorder()
    ran: list[tuple[str, ...]] = []
    announcer = Announcer(hooks, lambda argv: ran.append(tuple(argv)))
    down = Transition(
        service="web", realserver=RS1, old=True, new=False, reason="refused", detail="refused"
    )
    panic = PanicTransition(service="web", panic=True, failing=2, total=2, held=(RS1, RS2))
    quorum = QuorumTransition(service="web", up=False, live_weight=1, minimum=2)
    with capture_logs() as logs:
        announcer.report(Report(transitions=(down,), quorum=(quorum,), panic=(panic,)), config)
    assert [("transition", down), ("panic", ("web", True)), ("quorum", ("web", False))] == (
        hooks.calls
    )
    expected = [
        {
            "event": "realserver.down",
            "log_level": "warning",
            "service": "web",
            "realserver": "10.0.0.2:80",
            "old": "up",
            "new": "down",
            "reason": "refused",
            "detail": "refused",
        },
        {
            "event": "service.panic",
            "log_level": "error",
            "service": "web",
            "failing": 2,
            "total": 2,
            "held": ["10.0.0.2:80", "10.0.0.3:80"],
        },
        {
            "event": "quorum.down",
            "log_level": "error",
            "service": "web",
            "live_weight": 1,
            "minimum": 2,
        },
    ]
    assert expected == logs
    assert [("/bin/echo", "down")] == ran


def test_recoveries_are_logged_at_info(tmp_path: Path) -> None:
    """A real server back, the quorum regained, the panic over: routine, at info (the
    losses are at warning and error, see ``lvsd.log``)."""
    config = load(write(tmp_path, config_text(service_extra=QUORUM)))
    announcer = Announcer(Recorder(), lambda argv: None)
    up = Transition(service="web", realserver=RS1, old=False, new=True, reason="ok", detail="ok")
    calm = PanicTransition(service="web", panic=False, failing=0, total=2)
    quorum = QuorumTransition(service="web", up=True, live_weight=2, minimum=2)
    with capture_logs() as logs:
        announcer.report(Report(transitions=(up,), quorum=(quorum,), panic=(calm,)), config)
    expected = [
        ("realserver.up", "info"),
        ("service.panic_over", "info"),
        ("quorum.up", "info"),
    ]
    assert expected == [(e["event"], e["log_level"]) for e in logs]


def test_no_command_without_one_configured(tmp_path: Path) -> None:
    """A quorum change runs nothing when the service has no such command, no quorum,
    or is not in the config any more; an empty report does nothing at all."""
    config = load(write(tmp_path, config_text(service_extra=QUORUM)))
    bare = load(write(tmp_path, config_text(), "bare.toml"))
    hooks = Recorder()
    ran: list[tuple[str, ...]] = []
    announcer = Announcer(hooks, lambda argv: ran.append(tuple(argv)))
    up = QuorumTransition(service="web", up=True, live_weight=2, minimum=2)
    gone = QuorumTransition(service="db", up=False, live_weight=0, minimum=2)
    announcer.report(Report(quorum=(up, gone)), config)
    announcer.report(Report(quorum=(replace(up, up=False),)), bare)
    announcer.report(Report(), config)
    assert [] == ran
    assert 3 == len(hooks.calls)


async def test_close_kills_a_command_still_running(tmp_path: Path) -> None:
    """The default runner starts the command in the background; ``close`` kills it
    and waits for it."""
    hang = QUORUM.replace('["/bin/echo", "down"]', '["sleep", "30"]')
    config = load(write(tmp_path, config_text(service_extra=hang)))
    announcer = Announcer(NullHooks())
    lost = QuorumTransition(service="web", up=False, live_weight=1, minimum=2)
    announcer.report(Report(quorum=(lost,)), config)
    await asyncio.sleep(0.05)  # let it start
    started = time.monotonic()
    await asyncio.wait_for(announcer.close(), 10.0)
    assert time.monotonic() - started < 5


async def test_a_timed_out_quorum_command_takes_its_children_with_it(tmp_path: Path) -> None:
    """A hanging quorum script and the children it started are killed together at the
    limit (its whole process group), none left running."""
    pids = tmp_path / "pids"
    script = (
        f'sleep 3061 & echo $! > "{pids}"; sleep 3062 >/dev/null 2>&1 & echo $! >> "{pids}"; wait'
    )
    with capture_logs() as logs:
        await _run_bounded(("/bin/sh", "-c", script), limit=2.0)
    assert ["command.timeout"] == [e["event"] for e in logs]
    children = [int(pid) for pid in pids.read_text().split()]
    assert 2 == len(children)
    for pid in children:
        assert await _gone(pid), pid


async def test_quorum_command_is_bounded() -> None:
    """A quorum command that hangs is killed at its limit; one that fails is logged."""
    started = time.monotonic()
    with capture_logs() as logs:
        await _run_bounded(("sleep", "10"), limit=0.1)
        await _run_bounded(("/nonexistent/command",), limit=1)
        await _run_bounded(("false",), limit=1)
        await _run_bounded(("true",), limit=1)
    assert time.monotonic() - started < 5
    expected = ["command.timeout", "command.failed", "command.failed", "command.done"]
    assert expected == [e["event"] for e in logs]
    assert 1 == logs[2]["status"]
