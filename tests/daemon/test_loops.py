"""The daemon's loops (``lvsd.daemon.loops``): the batcher, the timer, drift repair and
the watchdog, in a running daemon and on their own."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lvsd.daemon.loops import APPLY_BOUND, watchdog
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
