"""The engine: start, health results, reloads, drift repair, drains and stop against an
in-memory table."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.checks.scheduler import checks_from_config
from lvsd.config import load
from lvsd.engine.drains import DrainStore
from lvsd.engine.reconcile import adoptable
from lvsd.errors import LvsdError
from lvsd.ipvs.memory import MemoryBackend
from lvsd.model import (
    Destination,
    Forward,
    Protocol,
    Scheduler,
    Service,
    ServiceKey,
    VirtualService,
)
from tests.engine.helpers import (
    RS1,
    RS2,
    RS3,
    WEB,
    cid,
    config_text,
    fail,
    kinds,
    ok,
    started,
    write,
)


async def test_start_issues_the_expected_ops(tmp_path: Path) -> None:
    """Start on an empty table adds the service and every real server at its weight."""
    _, backend, _ = await started(tmp_path, config_text((("10.0.0.2", 3), ("10.0.0.3", 1))))
    expected = [
        "add-service tcp 192.168.3.108:80 wrr",
        "add-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=3 nat",
        "add-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=1 nat",
    ]
    assert expected == kinds(backend.received)


async def test_initial_state_down_starts_quiesced(tmp_path: Path) -> None:
    """With initial_state down the real servers start at weight 0 until probed."""
    _, backend, _ = await started(tmp_path, config_text(initial="down"))
    assert [0, 0] == [d.weight for d in backend.table[WEB].destinations.values()]


async def test_failing_probe_quiesces_and_recovery_restores(tmp_path: Path) -> None:
    """A failure sets weight 0 (one edit op); a success restores the weight."""
    engine, backend, _ = await started(tmp_path, config_text())
    before = len(backend.received)
    result = await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
    assert ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=0 nat"] == kinds(result.applied)
    result = await engine.results([(cid(engine.config, "10.0.0.2"), ok())])
    assert ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=1 nat"] == kinds(result.applied)
    assert before + 2 == len(backend.received)
    assert 1 == backend.table[WEB].destinations[RS1].weight


async def test_no_write_when_nothing_changed(tmp_path: Path) -> None:
    """Successes on up servers write nothing and dump nothing."""
    engine, backend, _ = await started(tmp_path, config_text())
    received, dumps = len(backend.received), backend.dumps
    await engine.results([(cid(engine.config, "10.0.0.2"), ok())] * 3)
    assert (received, dumps) == (len(backend.received), backend.dumps)


async def test_restart_adoption_issues_no_write(tmp_path: Path) -> None:
    """A new engine over the table an earlier one made writes nothing, even with
    initial_state down: servers with weight > 0 are adopted as up."""
    text = config_text(initial="down")
    engine, backend, _ = await started(tmp_path, text)
    await engine.results(
        [(cid(engine.config, "10.0.0.2"), ok()), (cid(engine.config, "10.0.0.3"), ok())]
    )
    assert [1, 1] == [d.weight for d in backend.table[WEB].destinations.values()]
    received = len(backend.received)
    again, _, _ = await started(tmp_path, text, backend)
    assert received == len(backend.received)
    expected = frozenset({("web", RS1), ("web", RS2)})
    assert expected == adoptable(again.config, backend.table)


async def test_reload_weight_change_is_one_op(tmp_path: Path) -> None:
    """Changing one weight in the file and reloading issues exactly one edit."""
    engine, backend, _ = await started(tmp_path, config_text())
    path = write(tmp_path, config_text((("10.0.0.2", 5), ("10.0.0.3", 1))))
    result = await engine.reload(lambda: load(path))
    assert result.ok
    assert ("edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=5 nat",) == result.ops
    assert 5 == backend.table[WEB].destinations[RS1].weight


async def test_reload_keeps_health_of_unchanged_checks(tmp_path: Path) -> None:
    """A server down before a reload stays down after it (its check is unchanged)."""
    engine, backend, _ = await started(tmp_path, config_text())
    await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
    path = write(tmp_path, config_text((("10.0.0.2", 1), ("10.0.0.3", 2))))
    result = await engine.reload(lambda: load(path))
    assert ("edit-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=2 nat",) == result.ops
    assert 0 == backend.table[WEB].destinations[RS1].weight


async def test_broken_reload_keeps_the_old_config(tmp_path: Path) -> None:
    """A config with errors changes nothing and reports every problem."""
    engine, backend, _ = await started(tmp_path, config_text())
    old = engine.config
    received = len(backend.received)
    path = write(tmp_path, config_text().replace('protocol = "tcp"', 'protocol = "tcpx"'), "b.toml")
    result = await engine.reload(lambda: load(path))
    assert not result.ok
    assert 1 == len(result.errors)
    assert "protocol" in result.errors[0]
    assert old is engine.config
    assert received == len(backend.received)


def _unmanaged() -> VirtualService:
    key = ServiceKey.inet(Protocol.UDP, "192.168.3.109", 53)
    service = Service(key=key, scheduler=Scheduler.RR)
    dest = Destination(address="10.0.0.9", port=53, weight=7, forward=Forward.DR)
    return VirtualService(service=service, destinations={dest.key: dest})


async def test_drift_repair_restores_a_hand_edit_and_leaves_unmanaged_alone(
    tmp_path: Path,
) -> None:
    """A weight changed by hand is put back; a hand-made service stays."""
    engine, backend, _ = await started(tmp_path, config_text())
    table = backend.table
    vs = table[WEB]
    edited = Destination(address="10.0.0.2", port=80, weight=9, forward=Forward.NAT)
    table[WEB] = VirtualService(service=vs.service, destinations={**vs.destinations, RS1: edited})
    other = _unmanaged()
    table[other.service.key] = other
    backend.table = table
    result = await engine.repair()
    assert ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=1 nat"] == kinds(result.applied)
    assert other == backend.table[other.service.key]
    result = await engine.repair()
    assert () == result.applied


async def test_drain_is_persisted_and_survives_restart(tmp_path: Path) -> None:
    """A drain sets weight 0 at once, is written to the state dir, and a restarted
    engine keeps it without writing anything."""
    text = config_text(state_dir=str(tmp_path / "state"))
    store = DrainStore.in_dir(tmp_path / "state")
    engine, backend, _ = await started(tmp_path, text, drains=store)
    result = await engine.set_drain("web", RS1, True)
    assert ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=0 nat"] == kinds(result.applied)
    assert frozenset({("web", RS1)}) == DrainStore.in_dir(tmp_path / "state").load()
    received = len(backend.received)
    again, _, _ = await started(
        tmp_path, text, backend, drains=DrainStore.in_dir(tmp_path / "state")
    )
    assert received == len(backend.received)
    result = await again.set_drain("web", RS1, False)
    assert ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=1 nat"] == kinds(result.applied)
    assert frozenset() == DrainStore.in_dir(tmp_path / "state").load()


async def test_drain_of_an_unknown_server_is_refused(tmp_path: Path) -> None:
    """Draining what the config does not list names what is wrong."""
    engine, _, _ = await started(tmp_path, config_text())
    with pytest.raises(LvsdError, match=r"no real server 10\.0\.0\.4:80"):
        await engine.set_drain("web", RS3, True)
    with pytest.raises(LvsdError, match="no service named 'db'"):
        await engine.set_drain("db", RS1, True)


async def test_remove_all_deletes_only_managed_services(tmp_path: Path) -> None:
    """remove_on_stop deletes lvsd's services and nothing else."""
    other = _unmanaged()
    backend = MemoryBackend(table={other.service.key: other})
    engine, backend, _ = await started(tmp_path, config_text(), backend)
    result = await engine.remove_all()
    assert ["del-service tcp 192.168.3.108:80 wrr"] == kinds(result.applied)
    assert [other.service.key] == list(backend.table)


async def test_slow_start_ramp_is_written_by_ticks(tmp_path: Path) -> None:
    """A server coming back ramps: ticks write growing weights up to the configured one,
    and ``ramping`` is False once it is reached."""
    text = config_text((("10.0.0.2", 8), ("10.0.0.3", 8)), service_extra="slow_start = 4.0")
    engine, backend, clock = await started(tmp_path, text)
    await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
    await engine.results([(cid(engine.config, "10.0.0.2"), ok())])
    seen = [backend.table[WEB].destinations[RS1].weight]
    ramping: list[bool] = []
    for _ in range(5):
        clock.now += 1.0
        ramping.append(engine.ramping(clock.now))
        await engine.tick()
        seen.append(backend.table[WEB].destinations[RS1].weight)
    assert [1, 3, 5, 6, 8, 8] == seen
    # at 4 s the ramp is over: the daemon ticks once more after ramping ends
    assert [True, True, True, False, False] == ramping


async def test_drift_repair_logs_each_op(tmp_path: Path) -> None:
    """Every op of a drift repair is logged as ``drift.repaired``."""
    from structlog.testing import capture_logs

    engine, backend, _ = await started(tmp_path, config_text())
    table = backend.table
    del table[WEB]
    backend.table = table
    with capture_logs() as logs:
        await engine.repair()
    repaired = [e["op"] for e in logs if e["event"] == "drift.repaired"]
    expected = [
        "add-service tcp 192.168.3.108:80 wrr",
        "add-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=1 nat",
        "add-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=1 nat",
    ]
    assert expected == repaired


async def test_drift_repair_during_a_ramp_writes_the_step_but_logs_no_drift(
    tmp_path: Path,
) -> None:
    """A repair that finds a slow-start step due writes it as a tick would: the kernel
    held what lvsd wrote, so nothing is logged or counted as drift."""
    from structlog.testing import capture_logs

    text = config_text((("10.0.0.2", 8), ("10.0.0.3", 8)), service_extra="slow_start = 4.0")
    engine, backend, clock = await started(tmp_path, text)
    await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
    await engine.results([(cid(engine.config, "10.0.0.2"), ok())])
    clock.now += 2.0
    with capture_logs() as logs:
        result = await engine.repair()
    assert 5 == backend.table[WEB].destinations[RS1].weight
    assert () == result.applied
    assert [] == [e for e in logs if e["event"] == "drift.repaired"]
    assert ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=5 nat"] == [
        e["op"] for e in logs if e["event"] == "kernel.op"
    ]


async def test_incremental_reconcile_matches_the_full_desired_table(tmp_path: Path) -> None:
    """Health changes replan only the services they touch; after a long random run the
    kernel table still equals the full desired table, with one op per change."""
    import random

    extra = """
[services.db]
address = "192.168.3.108"
port = 5432
protocol = "tcp"
initial_state = "up"
[services.db.quorum]
minimum = 2
[[services.db.checks]]
kind = "tcp"
interval = 1.0
timeout = 0.5
rise = 1
fall = 1
[[services.db.real_servers]]
address = "10.0.1.2"
port = 5432
[[services.db.real_servers]]
address = "10.0.1.3"
port = 5432
"""
    engine, backend, clock = await started(tmp_path, config_text() + extra)
    ids = list(checks_from_config(engine.config))
    rng = random.Random(7)
    for _ in range(200):
        clock.now += 0.5
        batch = [(rng.choice(ids), rng.choice([ok(), fail()])) for _ in range(rng.randint(1, 3))]
        await engine.results(batch)
        if rng.random() < 0.1:
            await engine.set_drain("web", RS1, rng.random() < 0.5)
        assert engine.desired(clock.now) == backend.table
    received = len(backend.received)
    await engine.repair()
    assert received == len(backend.received)
