"""The engine over its cached kernel table: applies, dumps, staleness, scrapes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lvsd.errors import IpvsError
from lvsd.model import DestStats
from tests.engine.helpers import RS2, WEB, cid, config_text, fail, kinds, started


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
    """After a refused op the cache is stale; the next reconcile dumps and retries."""
    engine, backend, _ = await started(tmp_path, config_text())
    backend.fail = lambda op: IpvsError(str(op), "no memory")
    result = await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
    assert 1 == len(result.failed)
    assert engine.stale
    backend.fail = None
    dumps = backend.dumps
    result = await engine.reconcile()
    assert dumps + 1 == backend.dumps
    assert ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=0 nat"] == kinds(result.applied)


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
