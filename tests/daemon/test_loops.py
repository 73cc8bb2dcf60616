"""The daemon's loops (``lvsd.daemon.loops``): the batcher, the timer, drift repair and
the watchdog, in a running daemon and on their own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from lvsd.checks.base import ProbeResult
from lvsd.config.model import CheckSpec, TcpOptions
from lvsd.daemon.loops import (
    APPLY_BOUND,
    LOG_EVERY,
    MAX_WINDOWS,
    Batcher,
    StatusLine,
    Throttle,
    batches,
    watchdog,
)
from lvsd.health.check import CheckId
from lvsd.model import Destination, Forward, Protocol, ServiceKey, VirtualService
from tests.daemon.helpers import (
    RS1,
    RS2,
    WEB,
    RecordingNotifier,
    config_text,
    eventually,
    running,
    weight,
)


async def test_failing_probe_quiesces_and_recovery_restores(short_dir: Path) -> None:
    """A real server whose probe fails goes to weight 0; back up when it answers."""
    async with running(short_dir, config_text(short_dir)) as r:
        r.probes.down.add("10.0.0.2")
        await eventually(lambda: weight(r.backend, RS1) == 0)
        r.probes.down.clear()
        await eventually(lambda: weight(r.backend, RS1) == 1)
        assert 1 == weight(r.backend, RS2)
        assert "STATUS=1 service, 1/2 real servers up" in r.notifier.sent
        edits = [str(op) for op in r.backend.received[3:]]
        assert [
            "edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=0 nat",
            "edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=1 nat",
        ] == edits


async def test_steady_health_writes_nothing(short_dir: Path) -> None:
    """Many rounds of unchanged results issue no op and no dump."""
    async with running(short_dir, config_text(short_dir)) as r:
        received, dumps = len(r.backend.received), r.backend.dumps
        await asyncio.sleep(0.3)
        assert r.daemon.scheduler is not None
        assert r.daemon.scheduler.stats().results >= 4
        assert (received, dumps) == (len(r.backend.received), r.backend.dumps)


async def test_failed_op_is_retried_with_a_fresh_dump(short_dir: Path) -> None:
    """An op the kernel refuses is retried by the timer after a fresh dump."""
    from lvsd.errors import IpvsError

    async with running(short_dir, config_text(short_dir)) as r:
        r.backend.fail = lambda op: IpvsError(str(op), "no memory")
        r.probes.down.add("10.0.0.2")
        await eventually(lambda: len(r.backend.received) > 3)
        assert 1 == weight(r.backend, RS1)
        dumps = r.backend.dumps
        r.backend.fail = None
        await eventually(lambda: weight(r.backend, RS1) == 0)
        assert r.backend.dumps > dumps


async def test_drift_repair_in_the_running_daemon(short_dir: Path) -> None:
    """A hand edit is put back by the periodic drift repair; a hand-made service stays."""
    async with running(short_dir, config_text(short_dir, reconcile=0.1)) as r:
        table = r.backend.table
        vs = table[WEB]
        edited = Destination(address="10.0.0.2", port=80, weight=7, forward=Forward.NAT)
        table[WEB] = VirtualService(
            service=vs.service, destinations={**vs.destinations, RS1: edited}
        )
        other_key = ServiceKey.inet(Protocol.UDP, "192.168.3.109", 53)
        other = VirtualService(service=vs.service.__class__(key=other_key), destinations={})
        table[other_key] = other
        r.backend.table = table
        await eventually(lambda: weight(r.backend, RS1) == 1)
        assert other == r.backend.table[other_key]


async def test_watchdog_is_fed(short_dir: Path) -> None:
    """With WATCHDOG_USEC set the daemon pings while the scheduler runs."""
    notifier = RecordingNotifier(watchdog=0.05)
    async with running(short_dir, config_text(short_dir), notifier=notifier):
        await eventually(lambda: notifier.sent.count("WATCHDOG=1") >= 2)


async def test_watchdog_is_withheld_while_stalled_or_stuck() -> None:
    """No WATCHDOG=1 while the scheduler stays stalled (after the first check, which
    may have woken before the scheduler) or an apply runs past its bound; pings resume
    once both are fine."""
    from types import SimpleNamespace

    notifier = RecordingNotifier(watchdog=0.01)
    stalled = {"now": True}
    engine = SimpleNamespace(applying_since=None)
    scheduler = SimpleNamespace(stalled=lambda now: stalled["now"])
    task = asyncio.create_task(watchdog(notifier, engine, scheduler, lambda: 1000.0))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(0.05)
        assert ["WATCHDOG=1"] == notifier.sent
        notifier.sent.clear()
        await asyncio.sleep(0.05)
        assert [] == notifier.sent
        stalled["now"] = False
        engine.applying_since = 1000.0 - APPLY_BOUND - 1
        await asyncio.sleep(0.05)
        assert [] == notifier.sent
        engine.applying_since = None
        await eventually(lambda: "WATCHDOG=1" in notifier.sent)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


SPEC = CheckSpec(kind="tcp", options=TcpOptions(), interval=1.0, timeout=0.5)
RESULT = ProbeResult(ok=True, detail="connected", duration=0.0)


def cid(n: int) -> CheckId:
    return CheckId(spec=SPEC, address=f"10.0.0.{n}", port=80)


class Windows:
    """A sleep for the batcher that records each window and runs ``during`` in it
    (what the scheduler reports meanwhile)."""

    def __init__(self, during: Callable[[int], None] = lambda n: None) -> None:
        self.slept: list[float] = []
        self._during = during

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._during(len(self.slept))


async def test_a_batch_waits_for_its_first_result() -> None:
    """No window opens before the first result; then the batch is taken."""
    windows = Windows()
    batcher = Batcher(0.02, sleep=windows)
    task = asyncio.create_task(batcher.next_batch())
    await asyncio.sleep(0)
    assert not task.done()
    assert [] == windows.slept
    batcher.add(cid(1), RESULT, 0.0)
    assert [(cid(1), RESULT)] == await task
    assert [0.02] == windows.slept  # one window, in which nothing more came


def arriving(windows: int) -> tuple[Batcher, Windows]:
    """A batcher holding one result, to which one more comes in each of its first
    ``windows`` windows."""
    batcher: Batcher

    def during(n: int) -> None:
        if n <= windows:
            batcher.add(cid(n + 1), RESULT, 0.0)

    sleep = Windows(during)
    batcher = Batcher(0.02, sleep=sleep)
    batcher.add(cid(1), RESULT, 0.0)
    return batcher, sleep


async def test_a_batch_ends_when_it_stops_growing() -> None:
    """Windows follow one another while results arrive in them; the first in which
    none does ends the batch."""
    batcher, windows = arriving(2)
    batch = await batcher.next_batch()
    assert [cid(1), cid(2), cid(3)] == [c for c, _ in batch]
    assert 3 == len(windows.slept)


async def test_a_batch_waits_at_most_five_windows() -> None:
    """A batch that keeps growing is taken after five windows; what comes later waits
    for the next batch."""
    batcher, windows = arriving(5)
    batch = await batcher.next_batch()
    assert MAX_WINDOWS == 5 == len(windows.slept)
    assert [cid(n) for n in range(1, 7)] == [c for c, _ in batch]
    batcher.add(cid(9), RESULT, 0.0)
    assert [cid(9)] == [c for c, _ in await batcher.next_batch()]


class RoundsEngine:
    """The part of the engine :func:`batches` uses: it records each round."""

    def __init__(self) -> None:
        self.rounds: list[list[CheckId]] = []
        self.changes = 0

    async def results(self, batch: list[tuple[CheckId, ProbeResult]]) -> None:
        self.rounds.append([c for c, _ in batch])
        self.changes += 1

    def summary(self) -> str:
        return f"{len(self.rounds)} rounds"


async def test_batches_make_one_engine_round_per_batch() -> None:
    """Each batch is one ``Engine.results`` call, followed by the systemd status."""
    batcher = Batcher(0.0)
    engine = RoundsEngine()
    notifier = RecordingNotifier()
    task = asyncio.create_task(batches(batcher, engine, StatusLine(notifier)))  # type: ignore[arg-type]
    try:
        for n in (1, 2, 3):
            batcher.add(cid(n), RESULT, 0.0)
        await eventually(lambda: len(engine.rounds) == 1)
        batcher.add(cid(4), RESULT, 0.0)
        await eventually(lambda: len(engine.rounds) == 2)
        assert [[cid(1), cid(2), cid(3)], [cid(4)]] == engine.rounds
        assert ["STATUS=1 rounds", "STATUS=2 rounds"] == notifier.sent
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_local_errors_are_logged_once_per_cause_per_window() -> None:
    """``local`` results (lvsd's own shortage) log ``probe.local_error``: one line per
    cause per LOG_EVERY seconds, the next line saying how many were held back; other
    results log nothing."""
    from structlog.testing import capture_logs

    now = [0.0]
    batcher = Batcher(0.02, clock=lambda: now[0])
    emfile = ProbeResult(ok=False, detail="too many open files", duration=0.0, reason="local")
    emfile = replace(emfile, local="EMFILE")
    enobufs = replace(emfile, local="ENOBUFS")
    with capture_logs() as logs:
        for n in range(100):
            batcher.add(cid(n), emfile, 0.0)
        batcher.add(cid(1), enobufs, 0.0)
        batcher.add(cid(1), RESULT, 0.0)
        now[0] = LOG_EVERY - 0.1
        batcher.add(cid(2), emfile, 0.0)
        now[0] = LOG_EVERY + 0.1
        batcher.add(cid(3), emfile, 0.0)
    assert [("EMFILE", 0), ("ENOBUFS", 0), ("EMFILE", 100)] == [
        (e["cause"], e["more"]) for e in logs if e["event"] == "probe.local_error"
    ]
    assert 3 == len(logs)
    assert 104 == len(batcher._batch)  # every result still goes to the health state


def test_throttle_keys_are_independent() -> None:
    """Each key has its own window."""
    now = [0.0]
    throttle = Throttle(5.0, lambda: now[0])
    assert [0, None, 0, None] == [throttle.allow(k) for k in ("a", "a", "b", "b")]
    now[0] = 5.0
    assert [1, 1] == [throttle.allow(k) for k in ("a", "b")]
