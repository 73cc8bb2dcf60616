"""The engine: health results, reloads, drains and drift against an in-memory table."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from lvsd.checks.base import ProbeResult
from lvsd.checks.scheduler import checks_from_config
from lvsd.config import load
from lvsd.config.model import Config
from lvsd.engine.drains import DrainStore
from lvsd.engine.reconcile import Engine, adoptable
from lvsd.errors import IpvsError, LvsdError
from lvsd.health.state import CheckId
from lvsd.ipvs.memory import MemoryBackend
from lvsd.model import (
    Destination,
    DestKey,
    DestStats,
    Forward,
    Op,
    OpKind,
    Protocol,
    Scheduler,
    Service,
    ServiceKey,
    VirtualService,
)

WEB = ServiceKey.inet(Protocol.TCP, "192.168.3.108", 80)
RS1 = DestKey.of("10.0.0.2", 80)
RS2 = DestKey.of("10.0.0.3", 80)
RS3 = DestKey.of("10.0.0.4", 80)


def config_text(
    servers: Sequence[tuple[str, int]] = (("10.0.0.2", 1), ("10.0.0.3", 1)),
    *,
    initial: str = "up",
    service_extra: str = "",
    state_dir: str = "/nonexistent",
) -> str:
    """A one-service config with a tcp check (rise 1, fall 1) per real server."""
    text = f"""
[daemon]
state_dir = "{state_dir}"
metrics_listen = ""
drain_timeout = 60.0

[services.web]
address = "192.168.3.108"
port = 80
protocol = "tcp"
initial_state = "{initial}"
{service_extra}

[[services.web.checks]]
kind = "tcp"
interval = 1.0
timeout = 0.5
rise = 1
fall = 1
"""
    for address, weight in servers:
        text += f"""
[[services.web.real_servers]]
address = "{address}"
port = 80
weight = {weight}
"""
    return text


def write(tmp_path: Path, text: str, name: str = "lvsd.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


class Clock:
    """A clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cid(config: Config, address: str) -> CheckId:
    """The check id probing ``address``."""
    (found,) = [c for c in checks_from_config(config) if c.address == address]
    return found


def ok() -> ProbeResult:
    return ProbeResult(ok=True, detail="connected", duration=0.001)


def fail() -> ProbeResult:
    return ProbeResult(ok=False, detail="connect: refused", duration=0.001, reason="refused")


def kinds(ops: Sequence[Op]) -> list[str]:
    """Ops rendered, for comparisons."""
    return [str(op) for op in ops]


async def started(
    tmp_path: Path, text: str, backend: MemoryBackend | None = None, **kw: object
) -> tuple[Engine, MemoryBackend, Clock]:
    config = load(write(tmp_path, text))
    backend = backend if backend is not None else MemoryBackend()
    clock = Clock()
    engine = Engine(config, backend, clock=clock, **kw)  # type: ignore[arg-type]
    await engine.start()
    return engine, backend, clock


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


async def test_burst_of_changes_is_one_apply(tmp_path: Path) -> None:
    """Two servers failing in one round make one apply with two ops."""
    engine, _, _ = await started(tmp_path, config_text())
    applies = engine.applies
    batch = [(cid(engine.config, "10.0.0.2"), fail()), (cid(engine.config, "10.0.0.3"), fail())]
    result = await engine.results(batch)
    assert 2 == len(result.applied)
    assert applies + 1 == engine.applies


async def test_no_write_when_nothing_changed(tmp_path: Path) -> None:
    """Successes on up servers write nothing and dump nothing."""
    engine, backend, _ = await started(tmp_path, config_text())
    received, dumps = len(backend.received), backend.dumps
    await engine.results([(cid(engine.config, "10.0.0.2"), ok())] * 3)
    assert (received, dumps) == (len(backend.received), backend.dumps)


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


async def test_quorum_loss_runs_the_down_command(tmp_path: Path) -> None:
    """Losing the quorum runs down_command once; regaining it runs up_command."""
    extra = """
[services.web.quorum]
minimum = 2
down_command = ["/bin/echo", "down"]
up_command = ["/bin/echo", "up"]
"""
    ran: list[tuple[str, ...]] = []
    engine, _, _ = await started(
        tmp_path, config_text(service_extra=extra), run_command=lambda argv: ran.append(tuple(argv))
    )
    await engine.results([(cid(engine.config, "10.0.0.2"), fail())])
    await engine.results([(cid(engine.config, "10.0.0.2"), ok())])
    assert [("/bin/echo", "down"), ("/bin/echo", "up")] == ran


SORRY = DestKey.of("10.0.0.100", 80)


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


async def test_panic_holds_a_round_of_failures_and_logs_at_error(tmp_path: Path) -> None:
    """Most of the pool failing in one round trips the panic guard: weights are kept
    (no op) and ``service.panic`` is logged at error level."""
    from structlog.testing import capture_logs

    extra = "\n[services.web.panic]\nthreshold = 0.5\nmin_servers = 3\n"
    servers = (("10.0.0.2", 1), ("10.0.0.3", 1), ("10.0.0.4", 1))
    engine, backend, _ = await started(tmp_path, config_text(servers, service_extra=extra))
    received = len(backend.received)
    batch = [(cid(engine.config, a), fail()) for a, _ in servers]
    with capture_logs() as logs:
        await engine.results(batch)
    assert received == len(backend.received)
    panics = [e for e in logs if e["event"] == "service.panic"]
    assert [("error", "web", 3, 3)] == [
        (e["log_level"], e["service"], e["failing"], e["total"]) for e in panics
    ]


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
