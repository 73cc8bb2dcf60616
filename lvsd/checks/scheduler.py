"""Runs every check on its interval: one timer heap, one task per probe run.

The clock and the sleep are injected, so tests drive time by hand. The scheduler
never decides health: it hands each result to ``on_result`` (the daemon feeds
``lvsd.health.state.HealthState``).

Guarantees:

* each check runs every ``spec.interval`` seconds, with a small jitter around its
  base schedule (jitter never accumulates); first runs are spread uniformly across
  the interval, so 10,000 checks starting together do not burst;
* a slow or hanging probe delays no other check: each run is its own task; if a
  check's previous run is still going at its next due time the run is skipped and
  counted, and a run past ``timeout + max(grace, timeout)`` is cancelled and
  reported as a failed result (the probe enforces its timeout itself, giving back
  lvsd's lag up to one timeout more: past that it is a bug); that clock starts again
  when the timer loop was held up meanwhile (lvsd's lag is not the probe's);
* when the loop runs late (a stall, more work than one core does), the runs that
  fell due meanwhile are not fired in one burst: a run more than
  :data:`~lvsd.checks.net.LATE` late moves to a random point within its lateness (at
  most an interval) and fires then, so the backlog is spread evenly and degrades to
  a longer interval instead of a whole pool's worth of probes timing out together.
  Moved runs are counted (``stretched``), the lateness is kept (``late_max``,
  ``lagged``) and logged as ``scheduler.late`` at most once per :data:`LOG_EVERY`;
* at most ``max_concurrent`` probes run at once, and at most ``max_exec`` of kind
  ``exec``;
* :meth:`CheckScheduler.update` keeps the schedule of unchanged checks (reload keeps
  their timing), builds probes for new ones and closes those of removed ones.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import cast

import structlog

from lvsd.checks.base import Probe, ProbeFactory, ProbeResult, QuickProbe, Run, Target
from lvsd.checks.net import LATE, local_cause
from lvsd.config.model import CheckSpec, Config
from lvsd.health.check import LOCAL, CheckId, check_id

OnResult = Callable[[CheckId, ProbeResult, float], None]

#: Kind whose probes start processes, capped separately.
EXEC_KIND = "exec"

#: Seconds between two ``scheduler.late`` lines; also the window of ``late_max``.
LOG_EVERY = 10.0

log = structlog.get_logger("lvsd.checks.scheduler")


def checks_from_config(config: Config) -> dict[CheckId, tuple[CheckSpec, Target]]:
    """Every check to probe for ``config``, each once, with its target. A check shared
    by several services gets the largest configured weight as the bound of an exec
    check's dynamic weight (the health state bounds it per real server again)."""
    checks: dict[CheckId, tuple[CheckSpec, Target]] = {}
    for service in config.services:
        vip = service.key.ip
        for server in service.real_servers:
            for spec in server.checks:
                cid = check_id(service, server, spec)
                target = Target(
                    address=ipaddress.ip_address(cid.address),
                    port=cid.port,
                    vip=vip,
                    vport=service.key.port,
                    weight=server.weight,
                )
                seen = checks.get(cid)
                if seen is None or seen[1].weight < target.weight:
                    checks[cid] = (spec, target)
    return checks


@dataclass(slots=True, eq=False)
class _Entry:
    cid: CheckId
    spec: CheckSpec
    target: Target
    probe: Probe
    base: float  # the un-jittered schedule
    due: float  # when it fires next
    added: float
    last_fired: float | None = None
    task: Run | None = None
    started: float | None = None  # start of the running probe, after admission
    lag_at_start: float = 0.0  # the scheduler's ``lagged`` when the run started
    deferred: bool = False  # moved once for being late: fires at its new time
    queued: bool = False  # due, waiting for a free slot under the caps
    removed: bool = False
    runs: int = 0
    skipped: int = 0
    quick: bool = False  # the probe is a QuickProbe: runs without a task

    def use(self, probe: Probe) -> None:
        self.probe = probe
        self.quick = isinstance(probe, QuickProbe)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckSchedulerStats:
    checks: int
    running: int
    runs: int  # probe runs started
    results: int  # results delivered
    skipped: int  # due runs skipped because the previous one was still running
    overruns: int  # runs cancelled past timeout + grace
    probe_errors: int  # probes that raised (bugs), reported as failed results
    last_progress: float | None
    stretched: int = 0  # late runs moved to spread a backlog
    late_max: float = 0.0  # the timer loop's worst lateness of the last 10-20 s
    lagged: float = 0.0  # seconds the timer loop was held up past due, in all


class _Admission:
    """Admits probe runs under the caps: at most ``max_all`` at once, and at most
    ``max_exec`` of kind ``exec`` (they start processes). A run that may not start yet
    waits in a FIFO (exec runs in their own) and starts, in order of schedule, as
    running ones end.

    Counters and FIFOs of (entry, probe, scheduled): no semaphore (asyncio's wakes its
    waiters in O(waiters) per release) and no task for a run until it may start.
    ``running`` counts the runs under way: :meth:`admit` and :meth:`next_run` count
    them in, the scheduler counts them out as they end. ``running_exec`` counts the
    exec runs under way as tasks: the scheduler counts them in and out around their
    task."""

    __slots__ = ("_max_all", "_max_exec", "_queue", "_queue_exec", "running", "running_exec")

    def __init__(self, max_all: int, max_exec: int) -> None:
        self._max_all = max_all
        self._max_exec = max_exec
        self.running = 0
        self.running_exec = 0
        self._queue: deque[tuple[_Entry, Probe, float]] = deque()
        self._queue_exec: deque[tuple[_Entry, Probe, float]] = deque()

    def admit(self, entry: _Entry, probe: Probe, scheduled: float) -> bool:
        """True: the caps allow the run now (and nothing is queued before it), and it
        is counted in; False: it is queued, to start when :meth:`next_run` gives it."""
        if entry.spec.kind == EXEC_KIND:
            if (
                not self._queue_exec
                and self.running_exec < self._max_exec
                and self.running < self._max_all
            ):
                self._count_in(entry)
                return True
            entry.queued = True
            self._queue_exec.append((entry, probe, scheduled))
        elif not self._queue and self.running < self._max_all:
            self._count_in(entry)
            return True
        else:
            entry.queued = True
            self._queue.append((entry, probe, scheduled))
        return False

    def _count_in(self, entry: _Entry) -> None:
        entry.queued = False
        self.running += 1

    def next_run(self) -> tuple[_Entry, Probe, float] | None:
        """The queued run the caps now allow, the earliest scheduled first, counted in
        (None: none may start). A run queued for a probe since replaced, for a removed
        check, or no longer marked queued is dropped."""
        queue, queue_exec = self._queue, self._queue_exec
        while self.running < self._max_all and (queue or queue_exec):
            if queue_exec and self.running_exec < self._max_exec:
                if not queue or queue_exec[0][2] <= queue[0][2]:
                    queue = queue_exec
            elif not queue:
                return None  # only exec runs wait, for an exec slot
            waiting = queue.popleft()
            queue = self._queue
            entry, probe, _ = waiting
            if entry.removed or probe is not entry.probe or not entry.queued:
                continue
            self._count_in(entry)
            return waiting
        return None

    def drop_queued(self) -> None:
        for entry, _, _ in (*self._queue, *self._queue_exec):
            entry.queued = False
        self._queue.clear()
        self._queue_exec.clear()


class _Nap:
    """The timer loop's sleep until its next due run, which :meth:`wake_up` cuts short.

    The sleep is awaited in the loop's own task, and cut short by cancelling that task
    (as ``asyncio.timeout`` does), not run in a task of its own: from the timer to the
    probes' start there is then one turn of the event loop (two for probes that run as
    tasks), against three more through a sleeper task and ``asyncio.wait``, each of
    which waits for every other ready callback (a scrape's step among them)."""

    __slots__ = ("_napper", "_sleep", "_woken", "until")

    def __init__(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        self._sleep = sleep
        #: The task napping (None when awake).
        self._napper: asyncio.Task[None] | None = None
        self._woken = False  # the nap was cut short by :meth:`wake_up`
        #: When the current nap ends (inf when awake).
        self.until = math.inf

    async def sleep(self, until: float, now: float) -> None:
        """Sleep until ``until`` unless :meth:`wake_up` is called meanwhile."""
        napper = asyncio.current_task()
        assert napper is not None
        self.until = until
        self._napper = napper
        self._woken = False
        try:
            await self._sleep(until - now)
        except asyncio.CancelledError:
            # our own wake-up only when no other cancel is pending
            if not self._woken or napper.uncancel() > 0:
                raise
        finally:
            self._napper = None
            self.until = math.inf

    def wake_up(self) -> None:
        """Cut the current nap short (once; nothing when awake)."""
        if self._napper is not None and not self._woken:
            self._woken = True
            self._napper.cancel()


class CheckScheduler:
    """Drives every check from one timer heap.

    ``probe_factory(spec, target)`` builds one probe per check id; ``on_result(check,
    result, started_at)`` gets every result (it must not block). ``jitter`` is the
    largest shift of a run from its base schedule, as a share of the interval.
    ``resolution`` lets runs due within that many seconds fire together (so up to
    that much early), so a busy heap wakes at most about 1/resolution times a second;
    the default is well inside the default jitter.
    """

    def __init__(
        self,
        probe_factory: ProbeFactory,
        on_result: OnResult,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        max_concurrent: int = 1000,
        max_exec: int = 32,
        rng: random.Random,
        jitter: float = 0.05,
        resolution: float = 0.005,
        grace: float = 1.0,
        lateness_samples: int = 100_000,
    ) -> None:
        self._factory = probe_factory
        self._on_result = on_result
        self._clock = clock
        self._rng = rng
        self._jitter = jitter
        self._resolution = resolution
        self._grace = grace
        self._admission = _Admission(max_concurrent, max_exec)
        self._entries: dict[CheckId, _Entry] = {}
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = 0
        #: Running probe tasks and their entries (a task ends: see ``_finished``).
        self._tasks: dict[asyncio.Task[None], _Entry] = {}
        self._nap = _Nap(sleep)
        self._error: BaseException | None = None
        self._wake = asyncio.Event()
        #: Actual start minus scheduled start of recent runs (seconds), newest last.
        self.lateness: deque[float] = deque(maxlen=lateness_samples)
        #: When the timer loop last fired a run (clock time), None before the first.
        self.last_progress: float | None = None
        self._runs = 0
        self._results = 0
        self._skipped = 0
        self._overruns = 0
        self._probe_errors = 0
        self._stretched = 0
        #: Seconds the timer loop was held up past a due run, in all (each stretch of
        #: time counted once), and the end of the last turn.
        self._lagged = 0.0
        self._last_turn: float | None = None
        self._late_window = (0.0, 0.0, 0.0)  # (window start, its max, the last one's)
        self._late_logged: float | None = None

    # -- configuration -----------------------------------------------------------------

    def _push(self, entry: _Entry) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (entry.due, self._seq, entry))
        if entry.due < self._nap.until:
            self._nap.wake_up()  # the loop sleeps past this one
        self._wake.set()

    def _jittered(self, base: float, interval: float) -> float:
        if self._jitter <= 0:
            return base
        return base + self._rng.uniform(-self._jitter, self._jitter) * interval

    async def update(self, checks: Mapping[CheckId, tuple[CheckSpec, Target]]) -> None:
        """Make the running set of checks ``checks``. Unchanged ids keep their
        schedule; an id whose target changed gets a new probe on the same schedule;
        new ids get a first run spread across their interval; removed ids have their
        running probe cancelled and their probe closed."""
        now = self._clock()
        closing: list[_Entry] = []
        for cid in list(self._entries):
            if cid not in checks:
                gone = self._entries.pop(cid)
                gone.removed = True
                closing.append(gone)
        for cid, (spec, target) in checks.items():
            entry = self._entries.get(cid)
            if entry is not None:
                if entry.target != target:
                    old = _Entry(
                        cid=cid,
                        spec=entry.spec,
                        target=entry.target,
                        probe=entry.probe,
                        base=entry.base,
                        due=entry.due,
                        added=entry.added,
                        task=entry.task,
                        removed=True,
                    )
                    closing.append(old)
                    entry.task = None
                    entry.started = None
                    entry.queued = False
                    entry.target = target
                    entry.use(self._factory(spec, target))
                continue
            first = now + self._rng.uniform(0.0, spec.interval)
            probe = self._factory(spec, target)
            entry = _Entry(
                cid=cid, spec=spec, target=target, probe=probe, base=first, due=first, added=now
            )
            entry.use(probe)
            self._entries[cid] = entry
            self._push(entry)
        for entry in closing:
            await self._retire(entry)

    async def _retire(self, entry: _Entry) -> None:
        task = entry.task
        if task is not None and not task.done():
            task.cancel()
            if isinstance(task, asyncio.Task):
                await asyncio.gather(task, return_exceptions=True)
        await entry.probe.close()

    async def close(self) -> None:
        """Stop every running probe and close every probe."""
        self._admission.drop_queued()
        entries = list(self._entries.values())
        self._entries.clear()
        self._heap.clear()
        for entry in entries:
            entry.removed = True
            await self._retire(entry)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- running -----------------------------------------------------------------------

    async def run(self) -> None:
        """Fire checks as they fall due, until cancelled. Re-raises an exception from
        ``on_result`` (a bug in the caller)."""
        self._defer_first_runs(self._clock())
        try:
            while True:
                if self._error is not None:
                    raise self._error
                if not self._heap:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                now = self._clock()
                due = self._heap[0][0]
                if due > now + self._resolution:
                    await self._nap.sleep(due, now)
                    continue
                self._note_lag(now, due)
                self._fire_due(now)
                self._last_turn = now
        finally:
            self._admission.drop_queued()
            for entry in self._entries.values():
                if entry.task is not None:
                    entry.task.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _defer_first_runs(self, now: float) -> None:
        """Move the first runs that :meth:`update` spread before :meth:`run` began on
        by the time that passed in between (the daemon's start-up, a full collection):
        they stay spread across their interval from now instead of starting late."""
        moved = False
        for entry in self._entries.values():
            if entry.last_fired is None and entry.added < now:
                delta = now - entry.added
                entry.added = now
                entry.base += delta
                entry.due += delta
                moved = True
        if moved:
            self._heap = []
            for entry in self._entries.values():
                self._seq += 1
                self._heap.append((entry.due, self._seq, entry))
            heapq.heapify(self._heap)

    def _note_lag(self, now: float, due: float) -> None:
        """The timer loop woke at ``now`` for a run due at ``due``: count the time it
        was held up (since the later of that due time and its last turn), keep the
        worst lateness of the window and log it, at most once per LOG_EVERY."""
        late = now - due
        since = due if self._last_turn is None else max(due, self._last_turn)
        if now - since > LATE:
            self._lagged += now - since
        start, worst, previous = self._late_window
        if now - start >= LOG_EVERY:
            start, worst, previous = now, 0.0, worst
        self._late_window = (start, max(worst, late), previous)
        if late > LATE and (self._late_logged is None or now - self._late_logged >= LOG_EVERY):
            self._late_logged = now
            log.warning(
                "scheduler.late",
                late=round(late, 3),
                lagged=round(self._lagged, 3),
                stretched=self._stretched,
                note="lvsd's own lateness: late runs are spread out, not failed",
            )

    def _fire_due(self, now: float) -> None:
        horizon = now + self._resolution
        heap = self._heap
        rng = self._rng
        while heap and heap[0][0] <= horizon:
            due, _, entry = heapq.heappop(heap)
            if entry.removed:
                continue
            late = now - due
            if late > LATE and not entry.deferred:
                # Spread the backlog: a random point within the lateness (at most an
                # interval), from now; the run fires then whatever the loop's state.
                entry.deferred = True
                entry.base = entry.due = now + rng.uniform(0.0, min(late, entry.spec.interval))
                self._stretched += 1
                self._push_quiet(entry)
                continue
            entry.deferred = False
            self._fire(entry, now)

    def _fire(self, entry: _Entry, now: float) -> None:
        interval = entry.spec.interval
        scheduled = entry.due
        self.last_progress = now
        entry.last_fired = now
        task = entry.task
        if entry.queued:
            entry.skipped += 1
            self._skipped += 1
        elif task is not None and not task.done():
            started = entry.started
            timeout = entry.spec.timeout
            bound = timeout + max(self._grace, timeout)  # a Deadline gives back one timeout
            if started is not None and self._lagged > entry.lag_at_start:
                # lvsd's own lag since the run began: its overrun clock starts again
                entry.started, entry.lag_at_start = now, self._lagged
                entry.skipped += 1
                self._skipped += 1
            elif started is not None and now - started > bound:
                task.cancel()
                self._overruns += 1
                self._deliver(
                    entry,
                    ProbeResult(
                        ok=False,
                        detail=f"{entry.spec} {entry.target}: probe overran its timeout"
                        f" ({entry.spec.timeout:g} s)",
                        duration=now - started,
                        reason="timeout",
                    ),
                    started,
                )
            else:
                entry.skipped += 1
                self._skipped += 1
        else:
            entry.runs += 1
            self._runs += 1
            entry.started = None
            probe = entry.probe
            if self._admission.admit(entry, probe, scheduled):
                self._start(entry, probe, scheduled, now)
        # Next run: one interval on from the base (skipping any runs missed while the
        # loop was held up), shifted by fresh jitter.
        base = entry.base + interval
        if base < now:
            base += math.ceil((now - base) / interval) * interval
        entry.base = base
        entry.due = self._jittered(base, interval)
        self._push_quiet(entry)

    def _push_quiet(self, entry: _Entry) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (entry.due, self._seq, entry))

    def _start(self, entry: _Entry, probe: Probe, scheduled: float, now: float | None) -> None:
        """Start an admitted run; ``now`` is the clock as read on this turn (None: not
        read)."""
        if entry.quick:
            self._start_quick(entry, probe, scheduled, self._clock() if now is None else now)
            return
        run = asyncio.create_task(self._probe_once(entry, probe, scheduled))
        entry.task = run
        self._tasks[run] = entry
        if entry.spec.kind == EXEC_KIND:
            self._admission.running_exec += 1
            run.add_done_callback(self._finished_exec)
        else:
            run.add_done_callback(self._finished)

    def _finished_exec(self, task: asyncio.Task[None]) -> None:
        self._admission.running_exec -= 1
        self._finished(task)

    def _start_quick(self, entry: _Entry, probe: Probe, scheduled: float, now: float) -> None:
        """Start a run of a :class:`QuickProbe`: no task, its start is ``now``."""
        started = now
        entry.started = started
        entry.lag_at_start = self._lagged
        self.lateness.append(started - scheduled)

        def finish(result: ProbeResult | None) -> None:
            if result is not None and not entry.removed:
                self._deliver(entry, result, started)
            self._release()

        try:
            entry.task = cast(QuickProbe, probe).start(finish, started)
        except Exception as exc:  # a probe bug: report it as a failed result, keep going
            entry.task = None
            self._probe_errors += 1
            failed = self._raised(entry, exc, self._clock() - started)
            asyncio.get_running_loop().call_soon(finish, failed)

    def _finished(self, task: asyncio.Task[None]) -> None:
        # Drop the ended task (and its coroutine) now rather than at the check's next
        # run: freed on the spot, it never reaches an older generation for the
        # collector to walk (else every check keeps one of each alive).
        entry = self._tasks.pop(task, None)
        if entry is not None and entry.task is task:
            entry.task = None
        self._release()

    def _release(self) -> None:
        """A run ended: start queued ones while the caps allow."""
        admission = self._admission
        admission.running -= 1
        while (waiting := admission.next_run()) is not None:
            entry, probe, scheduled = waiting
            self._start(entry, probe, scheduled, None)

    async def _probe_once(self, entry: _Entry, probe: Probe, scheduled: float) -> None:
        started = self._clock()
        entry.started = started
        entry.lag_at_start = self._lagged
        self.lateness.append(started - scheduled)
        try:
            result = await probe.probe()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a probe bug: report it as a failed result, keep going
            self._probe_errors += 1
            result = self._raised(entry, exc, self._clock() - started)
        if not entry.removed:
            self._deliver(entry, result, started)

    @staticmethod
    def _raised(entry: _Entry, exc: Exception, duration: float) -> ProbeResult:
        cause = local_cause(exc)  # out of memory or descriptors: lvsd's, not the server's
        return ProbeResult(
            ok=False,
            detail=f"{entry.spec} {entry.target}: probe raised {type(exc).__name__}: {exc}",
            duration=duration,
            reason=LOCAL if cause else "error",
            local=cause,
        )

    def _deliver(self, entry: _Entry, result: ProbeResult, started: float) -> None:
        self._results += 1
        try:
            self._on_result(entry.cid, result, started)
        except Exception as exc:
            if self._error is None:
                self._error = exc
            self._nap.wake_up()
            self._wake.set()

    # -- reading -----------------------------------------------------------------------

    def stalled(self, now: float) -> bool:
        """True when some check has not fired within twice its interval (of being
        added, or of its last run) and the timer loop has fired no run for as long:
        the loop is stuck. A loop that keeps firing runs, however late (an overloaded
        host), is not stalled: restarting it would only add the cost of a start."""
        progress = self.last_progress
        for entry in self._entries.values():
            last = entry.last_fired if entry.last_fired is not None else entry.added
            limit = 2 * entry.spec.interval
            if now - last > limit and (progress is None or now - progress > limit):
                return True
        return False

    def stats(self) -> CheckSchedulerStats:
        return CheckSchedulerStats(
            checks=len(self._entries),
            running=self._admission.running,
            runs=self._runs,
            results=self._results,
            skipped=self._skipped,
            overruns=self._overruns,
            probe_errors=self._probe_errors,
            last_progress=self.last_progress,
            stretched=self._stretched,
            late_max=max(self._late_window[1], self._late_window[2]),
            lagged=self._lagged,
        )
