"""The daemon's loops, each over what it needs (the engine, the notifier, a clock).

* :class:`Batcher` and :func:`batches`: the results gathered over a short window go to
  :meth:`lvsd.engine.reconcile.Engine.results` as one round (a burst of changes becomes
  one apply), then :class:`StatusLine` tells systemd the summary if health changed.
  ``local`` results (lvsd's own shortage: the server's state is held) are logged as
  ``probe.local_error``, one line per cause per :data:`LOG_EVERY` seconds.
* :func:`timer`: about every second, slow-start ramps, lingering real servers and a
  full reconcile after a failure.
* :func:`drift`: drift repair every ``daemon.reconcile_interval`` seconds, the sync
  daemons' with it.
* :func:`watchdog`: the systemd watchdog, fed while the checks and applies run.

Each runs until cancelled; one that returns or raises is a bug the daemon stops for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable

import structlog

from lvsd.checks.base import ProbeResult
from lvsd.checks.scheduler import CheckScheduler
from lvsd.daemon.systemd import Notifier
from lvsd.engine.reconcile import Engine
from lvsd.engine.sync import SyncKeeper
from lvsd.health.check import LOCAL, CheckId

log = structlog.get_logger("lvsd.daemon.loops")

#: Seconds an apply may run before the watchdog stops being fed.
APPLY_BOUND = 60.0

#: The most windows one batch waits for while it keeps growing.
MAX_WINDOWS = 5

#: Seconds between two log lines of one cause of trouble (the rest are counted).
LOG_EVERY = 10.0


class Throttle:
    """One log line per key per ``every`` seconds: :meth:`allow` says whether this one
    may be logged, and how many were held back since the last."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> int | None:
        """The count held back since the last line (log this one), or None (do not)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._every:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


class Batcher:
    """Collects the scheduler's results (:meth:`add`) into batches (:meth:`next_batch`)."""

    def __init__(
        self,
        window: float,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self._sleep = sleep
        self._batch: list[tuple[CheckId, ProbeResult]] = []
        self._ready = asyncio.Event()
        self._throttle = Throttle(LOG_EVERY, clock)

    def add(self, cid: CheckId, result: ProbeResult, started: float) -> None:
        """The scheduler's ``on_result``."""
        self._batch.append((cid, result))
        self._ready.set()
        if result.reason == LOCAL:
            self._local(cid, result)

    def _local(self, cid: CheckId, result: ProbeResult) -> None:
        cause = result.local or "other"
        held_back = self._throttle.allow(("local", cause))
        if held_back is not None:
            log.warning(
                "probe.local_error",
                cause=cause,
                check=str(cid),
                detail=result.detail,
                more=held_back,
                note="lvsd's own shortage: the server's state is held",
            )

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
    "LOG_EVERY",
    "MAX_WINDOWS",
    "Batcher",
    "StatusLine",
    "Throttle",
    "batches",
    "drift",
    "timer",
    "watchdog",
]
