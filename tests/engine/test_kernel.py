"""The engine over its cached kernel table: applies, dumps, staleness, scrapes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Collection, Sequence
from pathlib import Path

from structlog.testing import capture_logs

from lvsd.engine.announce import NullHooks
from lvsd.engine.kernel import RETRY_FIRST, RETRY_MAX, KernelView, PartialDump
from lvsd.errors import IpvsError
from lvsd.ipvs.memory import MemoryBackend
from lvsd.model import (
    ApplyResult,
    Destination,
    DestStats,
    Op,
    OpKind,
    Protocol,
    Service,
    ServiceKey,
    Snapshot,
    Table,
    VirtualService,
)
from tests.engine.helpers import RS1, RS2, WEB, cid, config_text, fail, kinds, started


async def test_burst_of_changes_is_one_apply(tmp_path: Path) -> None:
    """Two servers failing in one round make one apply with two ops."""
    engine, _, _ = await started(tmp_path, config_text())
    applies = engine.applies
    batch = [(cid(engine.config, "10.0.0.2"), fail()), (cid(engine.config, "10.0.0.3"), fail())]
    result = await engine.results(batch)
    assert 2 == len(result.applied)
    assert applies + 1 == engine.applies


async def test_health_change_plans_against_the_cache(tmp_path: Path) -> None:
    """A health change costs no dump."""
    engine, backend, _ = await started(tmp_path, config_text())
    dumps = backend.dumps
    await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
    assert dumps == backend.dumps


async def test_failed_op_makes_the_next_reconcile_dump(tmp_path: Path) -> None:
    """After a refused op the cache is stale; the retry dumps and sends it again."""
    engine, backend, clock = await started(tmp_path, config_text())
    backend.fail = lambda op: IpvsError(str(op), "no memory")
    result = await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
    assert 1 == len(result.failed)
    assert engine.stale
    backend.fail = None
    clock.now += RETRY_FIRST
    assert engine.retry_due()
    dumps = backend.dumps
    result = await engine.reconcile()
    assert dumps + 1 == backend.dumps
    assert ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=0 nat"] == kinds(result.applied)


async def test_a_refused_op_is_retried_with_backoff_and_logged_once(tmp_path: Path) -> None:
    """A kernel that keeps refusing one op: it is sent again only when its delay has
    passed (doubling to RETRY_MAX), one error line for the cause, a recovery line."""
    engine, backend, clock = await started(tmp_path, config_text())
    backend.fail = lambda op: IpvsError(str(op), "no memory")
    sent: list[float] = []
    with capture_logs() as logs:
        await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
        sent.append(clock.now)
        for _ in range(200):  # 100 s of rounds every 0.5 s, the timer's and results'
            clock.now += 0.5
            before = len(backend.received)
            if engine.retry_due():
                await engine.reconcile()
            await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
            if len(backend.received) > before:
                sent.append(clock.now)
        backend.fail = None
        clock.now += RETRY_MAX
        assert engine.retry_due()
        await engine.reconcile()
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0] == gaps[:7]
    assert 1 == sum(
        1 for e in logs if e["event"] == "kernel.op_failed" and e["log_level"] == "error"
    )
    assert ["kernel.op_recovered"] == [e["event"] for e in logs if "recovered" in e["event"]]
    assert 0 == backend.table[WEB].destinations[RS1].weight
    assert not engine.retry_due()


async def test_a_new_cause_is_logged_and_restarts_the_backoff(tmp_path: Path) -> None:
    engine, backend, clock = await started(tmp_path, config_text())
    backend.fail = lambda op: IpvsError(str(op), "no memory")
    with capture_logs() as logs:
        await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
        clock.now += RETRY_FIRST
        backend.fail = lambda op: IpvsError(str(op), "no such destination")
        await engine.reconcile()
    errors = [e["error"] for e in logs if e["event"] == "kernel.op_failed"]
    assert ["no memory", "no such destination"] == errors
    assert not engine.retry_due()
    clock.now += RETRY_FIRST
    assert engine.retry_due()


async def test_counters_for_a_scrape_neither_wait_for_the_lock_nor_change_the_cache(
    tmp_path: Path,
) -> None:
    """A scrape's dump runs while a reconcile holds the lock (a slow scrape never holds
    back a health change's write) and leaves the cached table to the lock's holders."""
    engine, backend, _ = await started(tmp_path, config_text())
    cached = engine.snapshot
    backend.dest_stats[(WEB, RS2)] = DestStats(active_connections=4)
    async with engine._lock:
        snapshot = await asyncio.wait_for(engine.counters(), 1.0)
    assert 4 == snapshot.dest_stats[(WEB, RS2)].active_connections
    assert cached is engine.snapshot


# -- KernelView on its own ---------------------------------------------------------------


class Recorder(NullHooks):
    """Hooks that keep the netlink calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def netlink(self, op_kind: str, ok: bool) -> None:
        self.calls.append((op_kind, ok))


class PartialBackend(MemoryBackend):
    """The memory backend with ``dump_services`` (as ``NetlinkBackend`` has)."""

    def __init__(self, table: Table | None = None) -> None:
        super().__init__(table)
        self.partial_error: IpvsError | None = None

    async def dump_services(self, keys: Collection[ServiceKey]) -> Snapshot:
        if self.partial_error is not None:
            raise self.partial_error
        full = await self.dump()
        return Snapshot(
            table={k: vs for k, vs in full.table.items() if k in keys},
            service_stats=full.service_stats,
            dest_stats={k: v for k, v in full.dest_stats.items() if k[0] in keys},
        )


DB = ServiceKey.inet(Protocol.TCP, "192.168.3.108", 5432)
OTHER = ServiceKey.inet(Protocol.UDP, "192.168.3.109", 53)


def vs(key: ServiceKey, *weights: int) -> VirtualService:
    dests = [
        Destination(address=f"10.0.0.{i + 2}", port=80, weight=w) for i, w in enumerate(weights)
    ]
    return VirtualService(service=Service(key=key), destinations={d.key: d for d in dests})


def view(backend: MemoryBackend) -> tuple[KernelView, Recorder]:
    hooks = Recorder()
    return KernelView(backend, hooks, lambda: 100.0), hooks


def test_partial_dump_protocol_is_recognised() -> None:
    """Only a backend with ``dump_services`` is a ``PartialDump``."""
    assert (True, False) == (
        isinstance(PartialBackend(), PartialDump),
        isinstance(MemoryBackend(), PartialDump),
    )


async def test_dump_fills_the_cache_and_a_failed_one_makes_it_stale() -> None:
    """A dump becomes the cache; a failed one is counted, logged once as
    ``kernel.dump_failed`` by ``try_dump`` and leaves the cache stale."""
    backend = MemoryBackend({WEB: vs(WEB, 1)})
    kernel, hooks = view(backend)
    assert kernel.stale
    snapshot = await kernel.dump()
    assert (False, snapshot, snapshot.table) == (kernel.stale, kernel.snapshot, kernel.table)
    backend.dump_error = IpvsError("dump", "no socket")
    with capture_logs() as logs:
        assert None is await kernel.try_dump()
    assert kernel.stale
    assert [("dump", True), ("dump", False)] == hooks.calls
    assert [("kernel.dump_failed", "dump: no socket")] == [(e["event"], e["error"]) for e in logs]


async def test_counters_leave_the_cache_alone() -> None:
    """A scrape's dump is counted but changes neither the cache nor its staleness."""
    backend = MemoryBackend({WEB: vs(WEB, 1)})
    kernel, hooks = view(backend)
    snapshot = await kernel.counters()
    assert (None, None, True) == (kernel.table, kernel.snapshot, kernel.stale)
    assert {WEB} == set(snapshot.table)
    assert [("dump", True)] == hooks.calls


async def test_dump_some_needs_a_trusted_cache_and_a_partial_backend() -> None:
    """No partial dump before a full one, after a failure, or without ``dump_services``."""
    table = {WEB: vs(WEB, 1)}
    partial, _ = view(PartialBackend(table))
    assert None is await partial.dump_some({WEB})  # nothing cached yet
    await partial.dump()
    partial.stale = True
    assert None is await partial.dump_some({WEB})
    full, _ = view(MemoryBackend(table))
    await full.dump()
    assert None is await full.dump_some({WEB})


async def test_dump_some_reads_the_keys_and_keeps_the_rest_of_the_cache() -> None:
    """The services asked for come from the kernel (table and counters), the others
    from the cache, even when the kernel has changed them meanwhile."""
    backend = PartialBackend({WEB: vs(WEB, 1), DB: vs(DB, 1)})
    kernel, hooks = view(backend)
    await kernel.dump()
    backend.table = {WEB: vs(WEB, 5), DB: vs(DB, 7)}
    backend.dest_stats[(WEB, RS1)] = DestStats(active_connections=4)
    snapshot = await kernel.dump_some({WEB})
    assert snapshot is not None
    assert ({WEB: vs(WEB, 5), DB: vs(DB, 1)}, snapshot.table) == (snapshot.table, kernel.table)
    assert 4 == snapshot.dest_stats[(WEB, RS1)].active_connections
    assert snapshot is kernel.snapshot
    assert [("dump", True), ("dump", True)] == hooks.calls


async def test_dump_some_falls_back_when_the_services_changed_outside_lvsd() -> None:
    """A service added by hand outside the keys means the cache is not the kernel's
    list of services: ``reload.full_dump``, None, and the cache is left as it was."""
    backend = PartialBackend({WEB: vs(WEB, 1)})
    kernel, _ = view(backend)
    cached = await kernel.dump()
    backend.table = {WEB: vs(WEB, 1), OTHER: vs(OTHER)}
    with capture_logs() as logs:
        assert None is await kernel.dump_some({WEB})
    assert ["reload.full_dump"] == [e["event"] for e in logs]
    assert (cached, False) == (kernel.snapshot, kernel.stale)


async def test_a_failed_partial_dump_is_logged_and_counted() -> None:
    """A failed partial dump is counted and logged as ``kernel.dump_failed``; the
    cache stays trusted (a full dump follows)."""
    backend = PartialBackend({WEB: vs(WEB, 1)})
    kernel, hooks = view(backend)
    await kernel.dump()
    backend.partial_error = IpvsError("dump", "interrupted")
    with capture_logs() as logs:
        assert None is await kernel.dump_some({WEB})
    assert ["kernel.dump_failed"] == [e["event"] for e in logs]
    assert [("dump", True), ("dump", False)] == hooks.calls
    assert not kernel.stale


async def test_apply_plays_the_applied_ops_on_the_cache() -> None:
    """Applied ops are counted and logged one by one and played on the cached table,
    with no dump."""
    backend = MemoryBackend({WEB: vs(WEB, 1)})
    kernel, hooks = view(backend)
    await kernel.dump()
    edit = Op(kind=OpKind.EDIT_DEST, service=Service(key=WEB), dest=vs(WEB, 3).destinations[RS1])
    with capture_logs() as logs:
        result = await kernel.apply([edit])
    assert ((edit,), ()) == (result.applied, result.failed)
    assert {WEB: vs(WEB, 3)} == kernel.table
    assert (1, 1, False) == (kernel.applies, backend.dumps, kernel.stale)
    assert [("dump", True), ("edit-dest", True)] == hooks.calls
    assert [("kernel.op", str(edit))] == [(e["event"], e["op"]) for e in logs]
    assert None is kernel.applying_since
    assert ApplyResult() == await kernel.apply([])
    assert 1 == kernel.applies


async def test_a_failed_op_or_apply_makes_the_cache_stale() -> None:
    """An op the kernel refuses (``kernel.op_failed``) or an apply that fails whole
    (``kernel.apply_failed``: every op failed) leaves the cache stale."""
    backend = MemoryBackend({WEB: vs(WEB, 1)})
    kernel, _ = view(backend)
    await kernel.dump()
    add = Op(kind=OpKind.ADD_DEST, service=Service(key=WEB), dest=vs(WEB, 1).destinations[RS1])
    with capture_logs() as logs:
        refused = await kernel.apply([add])  # exists
    assert (1, True) == (len(refused.failed), kernel.stale)
    assert ["kernel.op_failed"] == [e["event"] for e in logs]
    await kernel.dump()

    class Broken(MemoryBackend):
        async def apply(self, ops: Sequence[Op]) -> ApplyResult:
            raise IpvsError("apply", "socket closed")

    broken, hooks = view(Broken({WEB: vs(WEB, 1)}))
    await broken.dump()
    with capture_logs() as logs:
        result = await broken.apply([add, add])
    assert ([add, add], True) == ([op for op, _ in result.failed], broken.stale)
    assert [("kernel.apply_failed", 2)] == [(e["event"], e["ops"]) for e in logs]
    assert [("dump", True), ("apply", False)] == hooks.calls
