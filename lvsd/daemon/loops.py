"""The daemon's loops, each over what it needs (the engine, the notifier, a clock).

* :class:`Batcher` and :func:`batches`: the results gathered over a short window go to
  :meth:`lvsd.engine.reconcile.Engine.results` as one round (a burst of changes becomes
  one apply), then :class:`StatusLine` tells systemd the summary if health changed.
* :func:`timer`: about every second, slow-start ramps, lingering real servers and a
  full reconcile after a failure.
* :func:`drift`: drift repair every ``daemon.reconcile_interval`` seconds, the sync
  daemons' with it.
* :func:`watchdog`: the systemd watchdog, fed while the checks and applies run.

Each runs until cancelled; one that returns or raises is a bug the daemon stops for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from lvsd.checks.base import ProbeResult
from lvsd.checks.scheduler import CheckScheduler
from lvsd.daemon.systemd import Notifier
from lvsd.engine.reconcile import Engine
from lvsd.engine.sync import SyncKeeper
from lvsd.health.check import CheckId

log = structlog.get_logger("lvsd.daemon.loops")

#: Seconds an apply may run before the watchdog stops being fed.
APPLY_BOUND = 60.0

#: The most windows one batch waits for while it keeps growing.
MAX_WINDOWS = 5


class Batcher:
    """Collects the scheduler's results (:meth:`add`) into batches (:meth:`next_batch`)."""

    def __init__(
        self, window: float, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        self.window = window
        self._sleep = sleep
        self._batch: list[tuple[CheckId, ProbeResult]] = []
        self._ready = asyncio.Event()

    def add(self, cid: CheckId, result: ProbeResult, started: float) -> None:
        """The scheduler's ``on_result``."""
        self._batch.append((cid, result))
        self._ready.set()

    async def next_batch(self) -> list[tuple[CheckId, ProbeResult]]:
        """Wait for the first result, then for windows until the batch stops growing
        (at most :data:`MAX_WINDOWS`), and take the batch."""
        await self._ready.wait()
        size = -1
        for _ in range(MAX_WINDOWS):
            if len(self._batch) == size:
                break
            size = len(self._batch)
            await self._sleep(self.window)
        batch, self._batch = self._batch, []
        self._ready.clear()
        return batch


class StatusLine:
    """The summary line systemd shows (``STATUS=``), as last sent."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._last = ""
        self._changes_seen = 0

    def ready(self, engine: Engine) -> str:
        """Send ``READY=1`` with the engine's summary (start-up, after a reload)."""
        self._last = engine.summary()
        self._notifier.ready(self._last)
        return self._last

    def update(self, engine: Engine) -> None:
        """Send the summary when health changed (it costs a walk of every real server,
        so not after every round) and the line differs."""
        if engine.changes == self._changes_seen:
            return
        self._changes_seen = engine.changes
        summary = engine.summary()
        if summary != self._last:
            self._last = summary
            self._notifier.status(summary)


async def batches(
    batcher: Batcher,
    engine: Engine,
    status: StatusLine,
    after: Callable[[], None] = lambda: None,
) -> None:
    """Hand the results of one short window to the engine as one round; then tell
    systemd, and ``after`` (the serving file)."""
    while True:
        batch = await batcher.next_batch()
        await engine.results(batch)
        status.update(engine)
        after()


async def timer(engine: Engine, interval: float, clock: Callable[[], float]) -> None:
    """About every ``interval``: slow-start ramps, lingering servers, retry after failure."""
    was_ramping = False
    while True:
        await asyncio.sleep(interval)
        ramping = engine.ramping(clock())
        if ramping or was_ramping:  # one more tick writes the full weight
            await engine.tick()
        was_ramping = ramping
        if engine.lingering:
            await engine.check_lingering()
        if engine.retry_due():  # a stale cache, or a refused op's backoff has passed
            await engine.reconcile()


async def drift(engine: Engine, sync: SyncKeeper | None = None) -> None:
    """Repair drift every ``daemon.reconcile_interval`` of the config in force: the
    table, then the sync daemons."""
    while True:
        await asyncio.sleep(engine.config.daemon.reconcile_interval)
        await engine.repair()
        if sync is not None:
            await sync.keep(engine.config.sync)


async def watchdog(
    notifier: Notifier, engine: Engine, scheduler: CheckScheduler, clock: Callable[[], float]
) -> None:
    """Ping systemd's watchdog while neither the scheduler stalls nor an apply sticks;
    wait forever when no watchdog is asked for."""
    interval = notifier.watchdog_interval
    if interval is None:
        await asyncio.Event().wait()  # never set: no watchdog asked for
        return
    was_stalled = False
    while True:
        now = clock()
        stalled = scheduler.stalled(now)
        since = engine.applying_since
        stuck = since is not None and now - since > APPLY_BOUND
        # The scheduler must be found stalled at two checks in a row: after the whole
        # host stalled (every task stops, this one too), this task may wake before the
        # scheduler has fired its overdue runs. Checking three times per ping interval
        # keeps one withheld ping from outlasting WatchdogSec.
        if stuck or (stalled and was_stalled):
            log.error("watchdog.withheld", scheduler_stalled=stalled, apply_stuck=stuck)
        else:
            notifier.watchdog()
        was_stalled = stalled
        await asyncio.sleep(interval / 3)


__all__ = [
    "APPLY_BOUND",
    "MAX_WINDOWS",
    "Batcher",
    "StatusLine",
    "batches",
    "drift",
    "timer",
    "watchdog",
]
