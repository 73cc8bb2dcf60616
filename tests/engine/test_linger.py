"""Lingering real servers (removed by a reload) and sorry servers (no longer needed
while they still serve)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from lvsd.config import load
from lvsd.config.model import Config
from lvsd.engine import linger
from lvsd.engine.linger import Lingering, Removed
from lvsd.model import (
    Destination,
    DestKey,
    DestStats,
    OpKind,
    Protocol,
    Service,
    ServiceKey,
    Snapshot,
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


# -- the engine's log events -----------------------------------------------------------


async def test_removed_real_servers_are_logged_with_why_they_left(tmp_path: Path) -> None:
    """A lingering real server leaves with ``realserver.removed``: ``timeout`` with the
    connections it still had, or ``drained`` once it had none."""
    text = config_text((("10.0.0.2", 1), ("10.0.0.3", 1), ("10.0.0.4", 1)))
    engine, backend, clock = await started(tmp_path, text)
    backend.dest_stats[(WEB, RS2)] = DestStats(active_connections=3)
    backend.dest_stats[(WEB, RS3)] = DestStats(active_connections=1)
    path = write(tmp_path, config_text((("10.0.0.2", 1),)), "less.toml")
    await engine.reload(lambda: load(path))
    backend.dest_stats[(WEB, RS3)] = DestStats(active_connections=0)
    with capture_logs() as logs:
        await engine.check_lingering()
        clock.now += 61.0
        await engine.check_lingering()
    removed = [
        (e["service"], e["vip"], e["realserver"], e["reason"], e["active"])
        for e in logs
        if e["event"] == "realserver.removed"
    ]
    expected = [
        ("web", "tcp 192.168.3.108:80", "10.0.0.4:80", "drained", 0),
        ("web", "tcp 192.168.3.108:80", "10.0.0.3:80", "timeout", 3),
    ]
    assert expected == removed
    assert not engine.lingering


async def test_serving_sorry_server_leaving_is_logged_once(tmp_path: Path) -> None:
    """A sorry server no longer needed while it serves is logged as
    ``sorry_server.leaving`` once, before the op that sets its weight to 0."""
    extra = '\n[services.web.sorry_server]\naddress = "10.0.0.100"\nport = 80\n'
    engine, backend, _ = await started(tmp_path, config_text(service_extra=extra))
    batch = [(cid(engine.config, "10.0.0.2"), fail()), (cid(engine.config, "10.0.0.3"), fail())]
    await engine.results(batch)
    backend.dest_stats[(WEB, SORRY)] = DestStats(active_connections=2)
    with capture_logs() as logs:
        await engine.results([(cid(engine.config, "10.0.0.2"), ok())])
    events = [
        (e["event"], e.get("service"), e.get("server", e.get("op")))
        for e in logs
        if e["event"] in ("sorry_server.leaving", "kernel.op")
    ]
    expected = [
        ("sorry_server.leaving", "web", "10.0.0.100:80"),
        ("kernel.op", None, "edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=1 nat"),
        ("kernel.op", None, "edit-dest tcp 192.168.3.108:80 -> 10.0.0.100:80 w=0 nat"),
    ]
    assert expected == events


# -- the pure functions ----------------------------------------------------------------

DB = ServiceKey.inet(Protocol.TCP, "192.168.3.108", 5432)


def dest(address: str, weight: int = 1) -> Destination:
    return Destination(address=address, port=80, weight=weight)


def vs(*dests: Destination, key: ServiceKey = WEB) -> VirtualService:
    return VirtualService(service=Service(key=key), destinations={d.key: d for d in dests})


def lingering_at(
    deadline: float, *dests: Destination
) -> dict[ServiceKey, dict[DestKey, Lingering]]:
    return {WEB: {d.key: Lingering(dest=d, deadline=deadline) for d in dests}}


@pytest.mark.parametrize(
    ("stats", "now", "expected"),
    [
        pytest.param({RS2: 0}, 100.0, [(RS2, "drained", 0)], id="no-connection-left"),
        pytest.param({RS2: 3}, 100.0, [], id="still-serving"),
        pytest.param({RS2: 3}, 160.0, [(RS2, "timeout", 3)], id="at-the-deadline"),
        pytest.param({RS2: 3}, 200.0, [(RS2, "timeout", 3)], id="past-the-deadline"),
        pytest.param({}, 100.0, [(RS2, "drained", 0)], id="no-counters-for-it"),
        pytest.param(None, 100.0, [(RS2, "drained", 0)], id="no-snapshot"),
    ],
)
def test_expire_drops_what_drained_or_timed_out(
    stats: dict[DestKey, int] | None, now: float, expected: list[tuple[DestKey, str, int]]
) -> None:
    """A lingering destination leaves once it has no connection (per the snapshot's
    counters; none counted without them) or its deadline has come."""
    lingering = lingering_at(160.0, dest("10.0.0.3"))
    snapshot = None
    if stats is not None:
        dest_stats = {(WEB, k): DestStats(active_connections=n) for k, n in stats.items()}
        snapshot = Snapshot(table={WEB: vs(dest("10.0.0.3"))}, dest_stats=dest_stats)
    kept, removed = linger.expire(lingering, snapshot, now)
    assert [Removed(WEB, k, reason, active) for k, reason, active in expected] == removed
    assert ({} if expected else lingering) == kept


def test_expire_keeps_the_order_and_drops_emptied_services() -> None:
    """What stays keeps its order; a service left with nothing lingering is gone."""
    a, b, c = dest("10.0.0.3"), dest("10.0.0.4"), dest("10.0.0.5")
    lingering = {
        DB: {a.key: Lingering(dest=a, deadline=500.0)},
        WEB: {k: Lingering(dest=d, deadline=500.0) for d in (b, c) for k in [d.key]},
    }
    counters = {(DB, a.key): 0, (WEB, b.key): 2, (WEB, c.key): 1}
    snapshot = Snapshot(
        table={}, dest_stats={k: DestStats(active_connections=n) for k, n in counters.items()}
    )
    kept, removed = linger.expire(lingering, snapshot, 100.0)
    assert [Removed(DB, a.key, "drained", 0)] == removed
    assert {WEB: {b.key: Lingering(b, 500.0), c.key: Lingering(c, 500.0)}} == kept
    assert [b.key, c.key] == list(kept[WEB])


def _config(tmp_path: Path, name: str, web: str, db: str = "", sorry: bool = False) -> Config:
    """web (TCP :80) with the real servers (port 80) that ``web`` lists, and db (TCP
    :5432) when ``db`` lists some; each with the sorry server 10.0.0.100:80 if asked."""
    text = '[daemon]\nmetrics_listen = ""\ndrain_timeout = 60.0\n'
    for service, port, servers in (("web", 80, web), ("db", 5432, db)):
        if not servers:
            continue
        text += f'\n[services.{service}]\naddress = "192.168.3.108"\nport = {port}\n'
        if sorry:
            text += f'[services.{service}.sorry_server]\naddress = "10.0.0.100"\nport = 80\n'
        for address in servers.split():
            text += f'\n[[services.{service}.real_servers]]\naddress = "{address}"\nport = 80\n'
    return load(write(tmp_path, text, name))


@pytest.mark.parametrize(
    ("new_servers", "in_table", "before", "expected"),
    [
        pytest.param("10.0.0.2", "10.0.0.2 10.0.0.3", [], [RS2], id="removed-lingers"),
        pytest.param("10.0.0.2", "10.0.0.2", [], [], id="removed-but-not-in-the-kernel"),
        pytest.param("10.0.0.2 10.0.0.3", "10.0.0.2 10.0.0.3", [], [], id="nothing-removed"),
        pytest.param("10.0.0.2 10.0.0.3", "10.0.0.2", [RS3], [RS3], id="lingering-kept"),
        pytest.param("10.0.0.2 10.0.0.4", "10.0.0.2", [RS3], [], id="listed-again"),
        pytest.param("10.0.0.2", "10.0.0.2 10.0.0.3", [RS3], [RS3, RS2], id="both"),
    ],
)
def test_after_reload(
    tmp_path: Path,
    new_servers: str,
    in_table: str,
    before: list[DestKey],
    expected: list[DestKey],
) -> None:
    """A real server a reload drops lingers when the kernel has it, with the kernel's
    entry, until now plus the new drain timeout; a real server listed again stops
    lingering; other lingering entries stay as they were."""
    old = _config(tmp_path, "old.toml", "10.0.0.2 10.0.0.3")
    new = _config(tmp_path, "new.toml", new_servers)
    table = {WEB: vs(*(dest(a, 4) for a in in_table.split()))}
    earlier = {k: Lingering(dest(str(k.address), 0), 50.0) for k in before}
    lingering = {WEB: earlier} if earlier else {}
    result = linger.after_reload(lingering, old, new, table, 100.0)
    entries = {**earlier, **{k: Lingering(d, 160.0) for k, d in table[WEB].destinations.items()}}
    assert ({WEB: {k: entries[k] for k in expected}} if expected else {}) == result


def test_after_reload_forgets_the_services_the_new_config_drops(tmp_path: Path) -> None:
    """A service the new config drops is deleted whole: nothing lingers in it."""
    old = _config(tmp_path, "old.toml", "10.0.0.2", "10.0.1.2 10.0.1.3")
    new = _config(tmp_path, "new.toml", "10.0.0.2")
    table = {WEB: vs(dest("10.0.0.2")), DB: vs(dest("10.0.1.2"), dest("10.0.1.3"), key=DB)}
    d = dest("10.0.1.4", 0)
    lingering = {DB: {d.key: Lingering(d, 50.0)}}
    assert {} == linger.after_reload(lingering, old, new, table, 100.0)


@pytest.mark.parametrize(
    ("have", "want", "expected"),
    [
        pytest.param({SORRY: 1}, {RS1: 1}, [SORRY], id="serving-and-dropped"),
        pytest.param({SORRY: 0}, {RS1: 1}, [], id="at-weight-0"),
        pytest.param({SORRY: 1}, {SORRY: 1}, [], id="still-wanted"),
        pytest.param({SORRY: 1}, {SORRY: 0}, [], id="lingering-already"),
        pytest.param({RS1: 1}, {}, [], id="not-there"),
        pytest.param(None, {RS1: 1}, [], id="service-not-in-the-kernel"),
        pytest.param({SORRY: 1}, None, [], id="service-not-planned"),
    ],
)
def test_sorry_leaving(
    tmp_path: Path,
    have: dict[DestKey, int] | None,
    want: dict[DestKey, int] | None,
    expected: list[DestKey],
) -> None:
    """A sorry server leaves (lingers) when the plan would delete it while it has a
    weight above 0; the entry that lingers is the kernel's."""
    config = _config(tmp_path, "sorry.toml", "10.0.0.2 10.0.0.3", sorry=True)
    current = {} if have is None else {WEB: vs(*(dest(str(k.address), w) for k, w in have.items()))}
    desired = {} if want is None else {WEB: vs(*(dest(str(k.address), w) for k, w in want.items()))}
    leaving = linger.sorry_leaving(config, current, desired)
    assert [(WEB, current[WEB].destinations[k]) for k in expected] == leaving


def test_sorry_leaving_needs_a_sorry_server_apart_from_the_real_servers(tmp_path: Path) -> None:
    """Without a sorry server, or with one at a real server's address (that real
    server's entry), nothing is a sorry server leaving."""
    none = load(write(tmp_path, config_text(), "none.toml"))
    shared = '\n[services.web.sorry_server]\naddress = "10.0.0.2"\nport = 80\n'
    same = load(write(tmp_path, config_text(service_extra=shared), "same.toml"))
    current = {WEB: vs(dest("10.0.0.2"), dest("10.0.0.100"))}
    desired = {WEB: vs(dest("10.0.0.3"))}
    assert [] == linger.sorry_leaving(none, current, desired)
    assert [] == linger.sorry_leaving(same, current, desired)


def test_sorry_leaving_in_the_order_of_plans_deletions(tmp_path: Path) -> None:
    """Several sorry servers leaving come in service order, as ``plan`` deletes them,
    whatever the config's order."""
    config = _config(tmp_path, "two.toml", "10.0.0.2", "10.0.1.2", sorry=True)
    config = replace(config, services=config.services[::-1])
    assert [DB, WEB] == [s.key for s in config.services]
    current = {key: vs(dest("10.0.0.100"), key=key) for key in (DB, WEB)}
    desired = {key: vs(key=key) for key in (DB, WEB)}
    assert [WEB, DB] == [key for key, _ in linger.sorry_leaving(config, current, desired)]


def test_linger_adds_entries_until_a_deadline() -> None:
    """``linger`` returns a new table with the entries added (the old one is kept)."""
    a, b = dest("10.0.0.3"), dest("10.0.0.100")
    before = lingering_at(50.0, a)
    after = linger.linger(before, [(WEB, b), (DB, a)], 160.0)
    assert {
        WEB: {a.key: Lingering(a, 50.0), b.key: Lingering(b, 160.0)},
        DB: {a.key: Lingering(a, 160.0)},
    } == after
    assert lingering_at(50.0, a) == before


def test_destinations_and_names() -> None:
    """The desired table's view (per service) and the reload result's (one line each)."""
    a, b = dest("10.0.0.3", 0), dest("10.0.0.100", 0)
    lingering = lingering_at(50.0, a, b)
    assert {WEB: (a, b)} == linger.destinations(lingering)
    expected = ("tcp 192.168.3.108:80 -> 10.0.0.3:80", "tcp 192.168.3.108:80 -> 10.0.0.100:80")
    assert expected == linger.names(lingering)
