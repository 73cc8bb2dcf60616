"""Lingering real servers (removed by a reload) and sorry servers (no longer needed
while they still serve)."""

from __future__ import annotations

from pathlib import Path

from lvsd.config import load
from lvsd.model import DestKey, DestStats, OpKind
from tests.engine.helpers import RS1, RS2, WEB, cid, config_text, fail, kinds, ok, started, write

SORRY = DestKey.of("10.0.0.100", 80)


async def test_removed_real_server_is_drained_then_deleted(tmp_path: Path) -> None:
    """A real server removed by a reload keeps weight 0 while it has active
    connections, and is deleted once they reach 0."""
    engine, backend, _ = await started(tmp_path, config_text())
    backend.dest_stats[(WEB, RS2)] = DestStats(active_connections=3)
    path = write(tmp_path, config_text((("10.0.0.2", 1),)))
    result = await engine.reload(lambda: load(path))
    assert ("edit-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=0 nat",) == result.ops
    assert ("tcp 192.168.3.108:80 -> 10.0.0.3:80",) == result.lingering
    still = await engine.check_lingering()
    assert () == still.applied
    backend.dest_stats[(WEB, RS2)] = DestStats(active_connections=0)
    gone = await engine.check_lingering()
    assert ["del-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=0 nat"] == kinds(gone.applied)
    assert [RS1] == list(backend.table[WEB].destinations)


async def test_lingering_server_is_deleted_at_the_drain_timeout(tmp_path: Path) -> None:
    """Connections that never end are cut at drain_timeout."""
    engine, backend, clock = await started(tmp_path, config_text())
    backend.dest_stats[(WEB, RS2)] = DestStats(active_connections=3)
    path = write(tmp_path, config_text((("10.0.0.2", 1),)))
    await engine.reload(lambda: load(path))
    clock.now += 61.0
    gone = await engine.check_lingering()
    assert 1 == len(gone.applied)
    assert OpKind.DEL_DEST is gone.applied[0].kind


async def test_removed_idle_server_and_service_are_deleted_at_once(tmp_path: Path) -> None:
    """Without connections a removed real server is deleted by the reload itself;
    a removed service is deleted too."""
    engine, backend, _ = await started(tmp_path, config_text())
    path = write(tmp_path, config_text((("10.0.0.2", 1),)))
    result = await engine.reload(lambda: load(path))
    assert ("del-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=1 nat",) == result.ops
    empty = write(tmp_path, '[daemon]\nmetrics_listen = ""\n', "empty.toml")
    result = await engine.reload(lambda: load(empty))
    assert ("del-service tcp 192.168.3.108:80 wrr",) == result.ops
    assert {} == backend.table


async def test_sorry_server_appears_when_all_are_down(tmp_path: Path) -> None:
    """With every real server down the sorry server is added; on recovery it drops to
    weight 0 (no new connections) and is deleted once its connections have ended."""
    extra = '\n[services.web.sorry_server]\naddress = "10.0.0.100"\nport = 80\n'
    engine, backend, _ = await started(tmp_path, config_text(service_extra=extra))
    batch = [(cid(engine.config, "10.0.0.2"), fail()), (cid(engine.config, "10.0.0.3"), fail())]
    await engine.results(batch)
    assert 1 == backend.table[WEB].destinations[SORRY].weight
    backend.dest_stats[(WEB, SORRY)] = DestStats(active_connections=2)
    await engine.results([(cid(engine.config, "10.0.0.2"), ok())])
    assert 0 == backend.table[WEB].destinations[SORRY].weight
    assert [] == kinds((await engine.check_lingering()).applied)  # still answering
    backend.dest_stats[(WEB, SORRY)] = DestStats(active_connections=0)
    gone = ["del-dest tcp 192.168.3.108:80 -> 10.0.0.100:80 w=0 nat"]
    assert gone == kinds((await engine.check_lingering()).applied)
    assert SORRY not in backend.table[WEB].destinations


async def test_sorry_server_needed_again_while_lingering_gets_its_weight_back(
    tmp_path: Path,
) -> None:
    extra = '\n[services.web.sorry_server]\naddress = "10.0.0.100"\nport = 80\nweight = 5\n'
    engine, backend, _ = await started(tmp_path, config_text(service_extra=extra))
    down = [(cid(engine.config, "10.0.0.2"), fail()), (cid(engine.config, "10.0.0.3"), fail())]
    await engine.results(down)
    backend.dest_stats[(WEB, SORRY)] = DestStats(active_connections=1)
    await engine.results([(cid(engine.config, "10.0.0.2"), ok())])
    assert 0 == backend.table[WEB].destinations[SORRY].weight
    await engine.results(down[:1])
    assert 5 == backend.table[WEB].destinations[SORRY].weight


async def test_sorry_server_at_a_real_servers_address_is_that_real_server(
    tmp_path: Path,
) -> None:
    """A sorry server at a configured real server's address and port is that real
    server's entry: with ``on_failure = "remove"`` the real server going down is
    deleted at once, as any other would be, and nothing lingers (it used to recurse
    until the stack ran out)."""
    from structlog.testing import capture_logs

    extra = (
        'on_failure = "remove"\n\n[services.web.sorry_server]\naddress = "10.0.0.2"\nport = 80\n'
    )
    engine, backend, _ = await started(tmp_path, config_text(service_extra=extra))
    backend.dest_stats[(WEB, RS1)] = DestStats(active_connections=2)
    with capture_logs() as logs:
        result = await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
    assert ["del-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=1 nat"] == kinds(result.applied)
    assert [] == [e for e in logs if e["event"] == "sorry_server.leaving"]
    assert not engine.lingering
