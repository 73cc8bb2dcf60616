"""Tests of the check scheduler with a fake clock and fake probes: no real waiting."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import random
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

import pytest

from lvsd.checks.base import Finish, Probe, ProbeResult, Target
from lvsd.checks.scheduler import CheckScheduler, checks_from_config
from lvsd.config.model import (
    CheckSpec,
    Config,
    ExecOptions,
    RealServer,
    TcpOptions,
    VirtualServiceConfig,
)
from lvsd.health.check import CheckId
from lvsd.model import Protocol, ServiceKey


class FakeClock:
    """A monotonic clock moved by hand; ``sleep`` waits for the clock, not real time."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.now + max(delay, 0.0), self._seq, future))
        await future

    async def settle(self) -> None:
        """Let every runnable task run until the loop has nothing left to do now."""
        for _ in range(20):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking sleepers in order, letting tasks run at each stop."""
        target = self.now + seconds
        await self.settle()
        while True:
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)
            if not self._sleepers or self._sleepers[0][0] > target:
                break
            when, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, when)
            future.set_result(None)
            await self.settle()
        self.now = target
        await self.settle()


class FakeProbe:
    """Records when it ran; takes ``duration`` fake seconds, or hangs forever."""

    def __init__(
        self, clock: FakeClock, log: list[tuple[float, str]], name: str, duration: float
    ) -> None:
        self.clock = clock
        self.log = log
        self.name = name
        self.duration = duration
        self.closed = False
        self.running = 0
        self.peak: list[int] = [0]

    async def probe(self) -> ProbeResult:
        self.log.append((self.clock.now, self.name))
        if self.duration == float("inf"):
            await asyncio.Event().wait()
        await self.clock.sleep(self.duration)
        return ProbeResult(ok=True, detail=f"{self.name} ok", duration=self.duration)

    async def close(self) -> None:
        self.closed = True


SPEC = CheckSpec(kind="tcp", options=TcpOptions(), interval=1.0, timeout=0.5)


def target(n: int) -> Target:
    return Target(address=ipaddress.ip_address(f"127.0.0.{n}"), port=80)


def cid(n: int, spec: CheckSpec = SPEC) -> CheckId:
    return CheckId(spec=spec, address=f"127.0.0.{n}", port=80)


def next_due(sched: CheckScheduler, check: CheckId) -> float:
    """When ``check`` fires next."""
    return sched._entries[check].due


def check_stats(sched: CheckScheduler, check: CheckId) -> tuple[int, int]:
    """(runs, skipped) of one check."""
    entry = sched._entries[check]
    return entry.runs, entry.skipped


class Harness:
    def __init__(self, clock: FakeClock, durations: dict[str, float] | None = None) -> None:
        self.clock = clock
        self.durations = durations or {}
        self.log: list[tuple[float, str]] = []
        self.probes: dict[str, FakeProbe] = {}
        self.results: list[tuple[CheckId, ProbeResult, float]] = []

    def factory(self, spec: CheckSpec, target: Target) -> Probe:
        name = str(target.address)
        probe = FakeProbe(self.clock, self.log, name, self.durations.get(name, 0.01))
        self.probes[name] = probe
        return probe

    def on_result(self, check: CheckId, result: ProbeResult, started: float) -> None:
        self.results.append((check, result, started))

    def starts(self, name: str) -> list[float]:
        return [round(t, 6) for t, n in self.log if n == name]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@asynccontextmanager
async def running(
    harness: Harness,
    *,
    jitter: float = 0.0,
    max_concurrent: int = 1000,
    max_exec: int = 32,
    seed: int = 1,
    setup: Callable[[CheckScheduler], None] | None = None,
) -> AsyncIterator[CheckScheduler]:
    sched = CheckScheduler(
        harness.factory,
        harness.on_result,
        clock=harness.clock,
        sleep=harness.clock.sleep,
        max_concurrent=max_concurrent,
        max_exec=max_exec,
        rng=random.Random(seed),
        jitter=jitter,
    )
    task = asyncio.create_task(sched.run())
    try:
        yield sched
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sched.close()


async def test_runs_every_interval(clock: FakeClock) -> None:
    """Without jitter, a check runs exactly once per interval after its spread first run."""
    harness = Harness(clock)
    async with running(harness) as sched:
        await sched.update({cid(1): (SPEC, target(1))})
        first = next_due(sched, cid(1))
        await clock.advance(5.0)
    assert 0.0 <= first < 1.0
    expected = [round(first + i, 6) for i in range(5)]
    assert expected == harness.starts("127.0.0.1")
    assert 5 == len(harness.results)
    assert all(r.ok for _, r, _ in harness.results)


async def test_first_runs_spread_across_interval(clock: FakeClock) -> None:
    """1,000 checks added together get first runs spread over the interval: every
    tenth of it holds roughly a tenth of them (no burst)."""
    harness = Harness(clock)
    async with running(harness) as sched:
        checks = {cid(n): (SPEC, target(n)) for n in range(1, 255)}
        checks |= {
            CheckId(spec=SPEC, address="127.0.1.1", port=p): (
                SPEC,
                Target(address=ipaddress.ip_address("127.0.1.1"), port=p),
            )
            for p in range(1000, 1746)
        }
        await sched.update(checks)
        firsts = [next_due(sched, c) for c in checks]
    buckets = [0] * 10
    for due in firsts:
        buckets[int(due * 10)] += 1
    assert 1000 == len(firsts)
    assert all(60 <= b <= 140 for b in buckets), buckets


async def test_jitter_bounds(clock: FakeClock) -> None:
    """With 10% jitter, every run is within 0.1 interval of its base schedule, and the
    jitter does not accumulate."""
    harness = Harness(clock)
    async with running(harness, jitter=0.1) as sched:
        await sched.update({cid(1): (SPEC, target(1))})
        first = next_due(sched, cid(1))
        await clock.advance(first + 49.5)  # runs 0..49, whatever the jitter
    starts = harness.starts("127.0.0.1")
    offsets = [start - (first + i) for i, start in enumerate(starts)]
    assert 50 == len(starts)
    assert all(abs(o) <= 0.1 + 1e-9 for o in offsets), offsets
    assert any(abs(o) > 0.01 for o in offsets)  # jitter is actually applied


async def test_global_concurrency_cap(clock: FakeClock) -> None:
    """With max_concurrent 3 and probes lasting 0.5 s, no more than 3 run at once."""
    harness = Harness(clock, {f"127.0.0.{n}": 0.5 for n in range(1, 11)})
    active = 0
    peak = 0

    class Counting(FakeProbe):
        async def probe(self) -> ProbeResult:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            try:
                return await super().probe()
            finally:
                active -= 1

    def factory(spec: CheckSpec, target: Target) -> Probe:
        return Counting(clock, harness.log, str(target.address), 0.5)

    harness.factory = factory  # type: ignore[method-assign]
    async with running(harness, max_concurrent=3) as sched:
        await sched.update({cid(n): (SPEC, target(n)) for n in range(1, 11)})
        await clock.advance(3.0)
    assert 3 == peak
    assert len(harness.log) >= 9  # the cap queues runs, it does not drop them


async def test_exec_cap_separate(clock: FakeClock) -> None:
    """exec probes are capped by max_exec even when the global cap allows more."""
    spec = CheckSpec(kind="exec", options=ExecOptions(command=("true",)), interval=10.0)
    active = 0
    peak = 0
    harness = Harness(clock)

    class Counting(FakeProbe):
        async def probe(self) -> ProbeResult:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            try:
                return await super().probe()
            finally:
                active -= 1

    def factory(spec: CheckSpec, target: Target) -> Probe:
        return Counting(clock, harness.log, str(target.address), 5.0)

    harness.factory = factory  # type: ignore[method-assign]
    async with running(harness, max_exec=2) as sched:
        await sched.update({cid(n, spec): (spec, target(n)) for n in range(1, 9)})
        await clock.advance(9.9)
    assert 2 == peak


async def test_hanging_probe_does_not_delay_others(clock: FakeClock) -> None:
    """A probe that never returns: its later runs are skipped and counted, then it is
    cancelled past timeout + grace and reported as a failure; the other check keeps
    its exact schedule."""
    harness = Harness(clock, {"127.0.0.1": float("inf")})
    async with running(harness) as sched:
        await sched.update({cid(1): (SPEC, target(1)), cid(2): (SPEC, target(2))})
        first2 = next_due(sched, cid(2))
        await clock.advance(10.0)
        runs, skipped = check_stats(sched, cid(1))
        stats = sched.stats()
    assert [round(first2 + i, 6) for i in range(10)] == harness.starts("127.0.0.2")
    # a cycle of three due times: run (hangs); skipped (running 1 s <= timeout 0.5 +
    # grace 1); overran (2 s > 1.5: cancelled, reported). Ten due times: 4 runs.
    assert (4, 3, 3) == (runs, skipped, stats.overruns)
    failures = [r for c, r, _ in harness.results if c == cid(1)]
    assert [("timeout", False)] * 3 == [(r.reason, r.ok) for r in failures]


async def test_skip_when_still_running(clock: FakeClock) -> None:
    """A probe that takes 1.5 intervals: every other due time finds it running and is
    skipped; results keep coming."""
    spec = CheckSpec(kind="tcp", options=TcpOptions(), interval=1.0, timeout=2.0)
    harness = Harness(clock, {"127.0.0.1": 1.5})
    async with running(harness) as sched:
        await sched.update({cid(1, spec): (spec, target(1))})
        first = next_due(sched, cid(1, spec))
        await clock.advance(first + 7.6)
        runs, skipped = check_stats(sched, cid(1, spec))
    # due at first + 0..7: runs at 0, 2, 4, 6 (each done 1.5 s later), skips between
    assert (4, 4, 0) == (runs, skipped, sched.stats().overruns)
    assert 4 == len(harness.results)


async def test_update_keeps_schedule_and_closes_removed(clock: FakeClock) -> None:
    """Reload: unchanged checks keep their next due time and probe object; removed
    ones have their probe closed and stop running; new ones start."""
    harness = Harness(clock)
    async with running(harness) as sched:
        await sched.update({cid(1): (SPEC, target(1)), cid(2): (SPEC, target(2))})
        await clock.advance(2.3)
        due1 = next_due(sched, cid(1))
        probe1 = harness.probes["127.0.0.1"]
        await sched.update({cid(1): (SPEC, target(1)), cid(3): (SPEC, target(3))})
        assert due1 == next_due(sched, cid(1))
        assert harness.probes["127.0.0.2"].closed
        before = len(harness.starts("127.0.0.2"))
        await clock.advance(3.0)
    assert probe1 is harness.probes["127.0.0.1"]
    assert before == len(harness.starts("127.0.0.2"))
    assert 3 == len(harness.starts("127.0.0.3"))
    assert probe1.closed  # closed by close() at the end


async def test_update_with_new_target_replaces_probe_keeps_timing(clock: FakeClock) -> None:
    """Same check id, new target (weight changed): a new probe, the same schedule."""
    harness = Harness(clock)
    async with running(harness) as sched:
        await sched.update({cid(1): (SPEC, target(1))})
        await clock.advance(1.5)
        due = next_due(sched, cid(1))
        old = harness.probes["127.0.0.1"]
        heavier = Target(address=target(1).address, port=80, weight=5)
        await sched.update({cid(1): (SPEC, heavier)})
        assert (True, due) == (old.closed, next_due(sched, cid(1)))
        assert old is not harness.probes["127.0.0.1"]


async def test_ended_run_frees_its_task(clock: FakeClock) -> None:
    """A probe run's task is let go as it ends, not kept until the check's next run:
    freed at once, it never ages into a generation the collector walks again."""
    seen: list[weakref.ref[asyncio.Task[object]]] = []

    class Recording(FakeProbe):
        async def probe(self) -> ProbeResult:
            task = asyncio.current_task()
            assert task is not None
            seen.append(weakref.ref(task))
            return await super().probe()

    harness = Harness(clock)
    # a probe class of its own
    harness.factory = lambda spec, t: Recording(clock, harness.log, "r", 0.01)  # type: ignore[method-assign,assignment]
    async with running(harness) as sched:
        await sched.update({cid(1): (SPEC, target(1))})
        await clock.advance(1.5)  # a run or two, each ended well before the next
        assert seen
        assert [None] * len(seen) == [ref() for ref in seen]


async def test_cancel_during_a_cut_nap_still_cancels(clock: FakeClock) -> None:
    """A nap cut short by an earlier check is the scheduler's own cancel: ``run`` goes
    on. A cancel from outside at the same moment still ends ``run``."""
    slow = CheckSpec(kind="tcp", options=TcpOptions(), interval=100.0, timeout=0.5)
    fast = CheckSpec(kind="tcp", options=TcpOptions(), interval=0.001, timeout=0.0005)
    harness = Harness(clock)
    sched = CheckScheduler(
        harness.factory, harness.on_result, clock=clock, sleep=clock.sleep, rng=random.Random(1)
    )
    await sched.update({cid(1, slow): (slow, target(1))})
    task = asyncio.create_task(sched.run())
    await clock.settle()  # napping until the slow check's first run
    await sched.update({cid(2, fast): (fast, target(2))})  # due sooner: cuts the nap
    task.cancel()
    await clock.settle()
    assert task.cancelled()
    await sched.close()


async def test_stalled(clock: FakeClock) -> None:
    """stalled() is false while checks fire, true when one has not fired for more than
    twice its interval (here: the loop is not running), unless the loop fired some
    other run within that time (an overloaded loop that runs late)."""
    harness = Harness(clock)
    sched = CheckScheduler(
        harness.factory,
        harness.on_result,
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(1),
    )
    await sched.update({cid(1): (SPEC, target(1))})
    assert not sched.stalled(1.9)
    assert sched.stalled(2.1)
    sched.last_progress = 1.5  # the loop fired another check: late, not stuck
    assert not sched.stalled(2.1)
    assert sched.stalled(3.6)
    sched.last_progress = None
    task = asyncio.create_task(sched.run())
    await clock.advance(1.5)
    assert not sched.stalled(clock.now + 1.0)
    assert sched.last_progress is not None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await sched.close()


async def test_lateness_recorded(clock: FakeClock) -> None:
    """Lateness (start minus scheduled start) is recorded per run: 0 for the first run,
    and the queueing delay behind it under a concurrency cap of 1."""
    harness = Harness(clock, {"127.0.0.1": 0.9, "127.0.0.2": 0.9})
    async with running(harness, max_concurrent=1) as sched:
        await sched.update({cid(1): (SPEC, target(1)), cid(2): (SPEC, target(2))})
        early, late = sorted([next_due(sched, cid(1)), next_due(sched, cid(2))])
        await clock.advance(early + 1.85)
        samples = list(sched.lateness)[:2]
    expected = [0.0, max(0.0, early + 0.9 - late)]
    assert expected == pytest.approx(samples)
    assert expected[1] > 0  # seed 1: the two first runs are 0.71 s apart


async def test_probe_exception_becomes_failed_result(clock: FakeClock) -> None:
    """A probe that raises (a bug) yields a failed result with reason error."""
    harness = Harness(clock)

    class Broken(FakeProbe):
        async def probe(self) -> ProbeResult:
            raise RuntimeError("boom")

    harness.factory = lambda spec, target: Broken(clock, harness.log, "x", 0.0)  # type: ignore[method-assign]
    async with running(harness) as sched:
        await sched.update({cid(1): (SPEC, target(1))})
        await clock.advance(1.0)
    assert [(False, "error")] == [(r.ok, r.reason) for _, r, _ in harness.results]
    assert "boom" in harness.results[0][1].detail


async def test_on_result_error_stops_run(clock: FakeClock) -> None:
    """An exception from on_result is a caller bug: run() re-raises it."""
    harness = Harness(clock)

    def bad(check: CheckId, result: ProbeResult, started: float) -> None:
        raise ValueError("bad callback")

    sched = CheckScheduler(
        harness.factory, bad, clock=clock, sleep=clock.sleep, rng=random.Random(1)
    )
    await sched.update({cid(1): (SPEC, target(1))})
    task = asyncio.create_task(sched.run())
    await clock.advance(1.0)
    with pytest.raises(ValueError, match="bad callback"):
        await task
    await sched.close()


class QuickRun:
    """A run of :class:`FakeQuick`: ends when the fake clock reaches ``end``."""

    def __init__(self, probe: FakeQuick, finish: Finish, end: float) -> None:
        self.probe = probe
        self.finish: Finish | None = finish
        self.end = end

    def done(self) -> bool:
        return self.finish is None

    def cancel(self) -> bool:
        if self.finish is None:
            return False
        finish, self.finish = self.finish, None
        self.probe.cancelled += 1
        finish(None)
        return True

    def tick(self, now: float) -> None:
        if self.finish is not None and now >= self.end:
            finish, self.finish = self.finish, None
            finish(ProbeResult(ok=True, detail=f"{self.probe.name} ok", duration=0.0))


class FakeQuick(FakeProbe):
    """A QuickProbe: ``start`` records the start; the harness's ``tick`` ends runs."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.runs: list[QuickRun] = []
        self.cancelled = 0

    def start(self, finish: Finish, now: float) -> QuickRun:
        if self.duration < 0:
            raise RuntimeError("start is broken")
        self.log.append((self.clock.now, self.name))
        run = QuickRun(self, finish, self.clock.now + self.duration)
        self.runs.append(run)
        return run


class QuickHarness(Harness):
    def factory(self, spec: CheckSpec, target: Target) -> Probe:
        name = str(target.address)
        probe = FakeQuick(self.clock, self.log, name, self.durations.get(name, 0.01))
        self.probes[name] = probe
        return probe

    async def advance(self, seconds: float, step: float = 0.01) -> None:
        """Move the clock in steps, ending the quick runs whose time has come."""
        for _ in range(round(seconds / step)):
            await self.clock.advance(step)
            for probe in self.probes.values():
                for run in cast(FakeQuick, probe).runs:
                    run.tick(self.clock.now)


async def test_quick_probe_runs_without_a_task(clock: FakeClock) -> None:
    """A QuickProbe is started by the timer loop itself at its due time (lateness 0,
    no task), and its result arrives through ``finish`` once per interval."""
    harness = QuickHarness(clock, {"127.0.0.1": 0.3})
    async with running(harness) as sched:
        await sched.update({cid(1): (SPEC, target(1))})
        first = next_due(sched, cid(1))
        await harness.advance(first + 0.1)
        probe = cast(FakeQuick, harness.probes["127.0.0.1"])
        assert [False] == [run.done() for run in probe.runs]
        assert 1 == sched.stats().running
        coros = [getattr(task.get_coro(), "__qualname__", "") for task in asyncio.all_tasks()]
        assert "CheckScheduler._probe_once" not in coros
        assert "CheckScheduler.run" in coros  # the names are the ones looked for
        await harness.advance(2.9 - first)
        assert 0 == sched.stats().running
    expected = [round(first + i, 2) for i in range(3)]
    assert expected == [round(t, 2) for t in harness.starts("127.0.0.1")]
    assert 3 == len(harness.results)
    assert [0.0] * 3 == pytest.approx(list(sched.lateness), abs=0.011)


async def test_quick_probes_keep_the_concurrency_cap(clock: FakeClock) -> None:
    """Quick runs count against max_concurrent: with a cap of 2 and runs of 0.5 s, the
    third waits until one of the first two has finished."""
    harness = QuickHarness(clock, {f"127.0.0.{n}": 0.5 for n in range(1, 4)})
    async with running(harness, max_concurrent=2) as sched:
        await sched.update({cid(n): (SPEC, target(n)) for n in range(1, 4)})
        dues = sorted(next_due(sched, cid(n)) for n in range(1, 4))
        await harness.advance(0.99)
    starts = sorted(t for t, _ in harness.log)[:3]
    assert dues[:2] == pytest.approx(starts[:2], abs=0.011)
    assert max(dues[2], dues[0] + 0.5) == pytest.approx(starts[2], abs=0.021)


async def test_quick_probe_overrun_and_removal_cancel_the_run(clock: FakeClock) -> None:
    """A quick run that never ends is cancelled past timeout + grace and reported as a
    timeout (freeing its slot); removing the check cancels its run too."""
    harness = QuickHarness(clock, {"127.0.0.1": float("inf"), "127.0.0.2": float("inf")})
    async with running(harness, max_concurrent=1) as sched:
        await sched.update({cid(1): (SPEC, target(1))})
        # runs at first (hangs), first + 1 skipped, first + 2 overran, first + 3 hangs
        await harness.advance(round(next_due(sched, cid(1)) + 3.2, 1), step=0.05)
        stats = sched.stats()
        probe = cast(FakeQuick, harness.probes["127.0.0.1"])
        assert 1 == probe.cancelled
        assert 1 == stats.overruns
        assert [("timeout", False)] == [(r.reason, r.ok) for _, r, _ in harness.results]
        await sched.update({})
        assert 2 == probe.cancelled
        assert 0 == sched.stats().running


async def test_quick_probe_start_raising_is_a_failed_result(clock: FakeClock) -> None:
    """A QuickProbe whose ``start`` raises (a bug) yields a failed result with reason
    error, and its slot is freed."""
    harness = QuickHarness(clock, {"127.0.0.1": -1.0})
    async with running(harness, max_concurrent=1) as sched:
        await sched.update({cid(1): (SPEC, target(1))})
        await harness.advance(2.0)
        stats = sched.stats()
    assert [(False, "error")] * 2 == [(r.ok, r.reason) for _, r, _ in harness.results]
    assert "start is broken" in harness.results[0][1].detail
    assert (2, 0) == (stats.probe_errors, stats.running)


async def test_first_runs_count_from_the_start_of_run(clock: FakeClock) -> None:
    """Checks added before ``run()`` begins (the daemon's start-up work, a full
    collection in between) get their spread first runs from when it begins: none is
    late."""
    harness = Harness(clock)
    sched = CheckScheduler(
        harness.factory, harness.on_result, clock=clock, sleep=clock.sleep, rng=random.Random(1)
    )
    await sched.update({cid(n): (SPEC, target(n)) for n in range(1, 21)})
    dues = [next_due(sched, cid(n)) for n in range(1, 21)]
    clock.now = 5.0  # start-up took 5 s
    task = asyncio.create_task(sched.run())
    await clock.advance(1.0)
    assert [d + 5.0 for d in dues] == pytest.approx(
        [harness.starts(f"127.0.0.{n}")[0] for n in range(1, 21)], abs=0.006
    )
    assert [0.0] * 20 == pytest.approx(list(sched.lateness)[:20], abs=0.006)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await sched.close()


def test_checks_from_config_dedups_shared_checks() -> None:
    """Two services sharing a real server and spec yield one check, with the larger
    configured weight as its target weight."""
    spec = CheckSpec(kind="tcp", options=TcpOptions(), port=8080)

    def svc(name: str, vip: str, weight: int) -> VirtualServiceConfig:
        server = RealServer(
            address=ipaddress.ip_address("127.0.0.5"), port=80, weight=weight, checks=(spec,)
        )
        return VirtualServiceConfig(
            name=name, key=ServiceKey.inet(Protocol.TCP, vip, 80), real_servers=(server,)
        )

    config = Config(path="x", services=(svc("a", "192.0.2.1", 2), svc("b", "192.0.2.2", 7)))
    checks = checks_from_config(config)
    [(check, (got_spec, got_target))] = checks.items()
    assert ("127.0.0.5", 8080, spec, 8080, 7) == (
        check.address,
        check.port,
        got_spec,
        got_target.port,
        got_target.weight,
    )


# --- lvsd's own lateness -------------------------------------------------------------


async def stall(clock: FakeClock, seconds: float) -> None:
    """The whole loop stands still for ``seconds`` (no sleeper wakes meanwhile), then
    runs on."""
    await clock.settle()
    clock.now += seconds
    await clock.advance(0.0)


async def test_a_backlog_after_a_stall_is_spread_not_burst(clock: FakeClock) -> None:
    """After a 3 s stall, the 200 checks that fell due do not fire in one burst: they
    move to random points within the next interval, each fires once in it, and every
    move is counted; the stall shows in the stats and in one ``scheduler.late`` line."""
    from structlog.testing import capture_logs

    harness = Harness(clock)
    checks = {cid(n): (SPEC, target(n)) for n in range(1, 201)}
    async with running(harness) as sched:
        await sched.update(checks)
        await clock.advance(1.5)
        harness.log.clear()
        with capture_logs() as logs:
            await stall(clock, 3.0)
            resumed = clock.now
            burst = len(harness.log)
            await clock.advance(1.0)
        stats = sched.stats()
    starts = [t for t, _ in harness.log]
    assert burst < 20, burst  # at most a few at the same instant, not 200
    assert 200 == len({n for t, n in harness.log if t <= resumed + 1.0})
    assert all(t <= resumed + 1.0 for t in starts[:200])
    assert 200 == stats.stretched
    assert 2.0 < stats.late_max <= 3.0
    assert 2.0 < stats.lagged <= 3.0
    assert 0 == stats.overruns
    assert ["scheduler.late"] == [e["event"] for e in logs]


async def test_a_late_run_moves_once_then_fires(clock: FakeClock) -> None:
    """A moved run fires at its new time even if the loop is late again: a loop that
    is always late slows the checks down, never stops them."""
    harness = Harness(clock)
    async with running(harness) as sched:
        await sched.update({cid(1): (SPEC, target(1))})
        await clock.advance(1.5)
        for _ in range(5):
            await stall(clock, 0.6)
        stats = sched.stats()
    assert 1 <= stats.stretched
    assert len(harness.starts("127.0.0.1")) >= 3  # 3 s: one run per ~1.2 s at least


async def test_lag_is_not_an_overrun(clock: FakeClock) -> None:
    """A run under way while the loop stands still (4 s, past timeout + grace) is not
    cancelled as an overrun at the next due time: its overrun clock starts again; a
    run that then really hangs is cancelled past the bound of loop time."""
    harness = Harness(clock, {"127.0.0.1": float("inf")})
    async with running(harness) as sched:
        await sched.update({cid(1): (SPEC, target(1))})
        first = next_due(sched, cid(1))
        await clock.advance(first + 0.2)
        await stall(clock, 4.0)
        await clock.advance(1.2)
        assert 0 == sched.stats().overruns
        await clock.advance(3.0)
        assert 1 == sched.stats().overruns
