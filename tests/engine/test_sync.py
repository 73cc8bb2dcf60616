"""The sync keeper: plans of requests (pure) and passes over the in-memory backend."""

from __future__ import annotations

import errno

import pytest

from lvsd.config.model import SyncConfig, SyncRole
from lvsd.engine.sync import Action, SyncCheck, SyncKeeper, plan_sync
from lvsd.errors import IpvsError
from lvsd.ipvs.memory import MemoryBackend
from lvsd.model import SyncDaemon, SyncState
from tests.ipvs.test_sync import MASTER, RUNNING

BACKUP = SyncDaemon(state=SyncState.BACKUP, interface="eth1", syncid=7)
BOTH = SyncConfig(state=SyncRole.BOTH, interface="eth1", syncid=7)
NOTHING: frozenset[SyncState] = frozenset()


def test_nothing_running_starts_every_daemon_asked() -> None:
    assert [(Action.START, MASTER), (Action.START, BACKUP)] == plan_sync(
        BOTH.daemons(), (), NOTHING
    )


def test_a_daemon_running_as_asked_is_left_alone() -> None:
    assert [] == plan_sync((MASTER,), (RUNNING,), NOTHING)


def test_one_running_otherwise_is_restarted() -> None:
    other = SyncDaemon(state=SyncState.MASTER, interface="eth0", syncid=7)
    assert [(Action.STOP, other), (Action.START, MASTER)] == plan_sync((MASTER,), (other,), NOTHING)


def test_a_state_no_longer_asked_is_stopped_only_when_lvsd_owned_it() -> None:
    assert [(Action.STOP, BACKUP)] == plan_sync((MASTER,), (RUNNING, BACKUP), frozenset(SyncState))
    assert [] == plan_sync((MASTER,), (RUNNING, BACKUP), frozenset({SyncState.MASTER}))


async def test_a_pass_starts_both_and_reports_them_running() -> None:
    backend = MemoryBackend()
    passes: list[tuple[SyncCheck, ...]] = []
    keeper = SyncKeeper(backend, passes.append)
    checks = await keeper.keep(BOTH)
    assert [True, True] == [c.up for c in checks]
    assert [MASTER, BACKUP] == [c.daemon for c in checks]
    assert {SyncState.MASTER, SyncState.BACKUP} == set(backend.sync)
    assert [checks] == passes
    assert "master eth1 syncid=7 group=224.0.0.81 port=8848 ttl=1 maxlen=1472: running" == str(
        checks[0]
    )


async def test_a_daemon_stopped_behind_lvsds_back_is_started_on_the_next_pass() -> None:
    backend = MemoryBackend()
    keeper = SyncKeeper(backend)
    await keeper.keep(BOTH)
    await backend.stop_sync(SyncState.BACKUP)
    checks = await keeper.keep(BOTH)
    assert all(c.up for c in checks)
    assert SyncState.BACKUP in backend.sync


async def test_a_reload_to_master_only_stops_the_backup_lvsd_started() -> None:
    backend = MemoryBackend()
    keeper = SyncKeeper(backend)
    await keeper.keep(BOTH)
    await keeper.keep(SyncConfig(state=SyncRole.MASTER, interface="eth1", syncid=7))
    assert {SyncState.MASTER} == set(backend.sync)
    await keeper.keep(None)
    assert {} == backend.sync


async def test_without_sync_a_daemon_started_by_hand_is_left_alone() -> None:
    backend = MemoryBackend()
    await backend.start_sync(BACKUP)
    keeper = SyncKeeper(backend)
    assert () == await keeper.keep(None)
    assert {SyncState.BACKUP} == set(backend.sync)


async def test_a_refused_start_is_reported_down_with_the_reason_and_retried() -> None:
    backend = MemoryBackend()
    await backend.start_sync(SyncDaemon(state=SyncState.MASTER, interface="eth0"))

    async def refuse(daemon: SyncDaemon) -> None:
        raise IpvsError(f"start-sync {daemon}", "no such interface", errno.ENODEV)

    start = backend.start_sync
    backend.start_sync = refuse  # type: ignore[method-assign]  # a kernel that refuses
    keeper = SyncKeeper(backend)
    (check,) = await keeper.keep(SyncConfig(state=SyncRole.MASTER, interface="eth1", syncid=7))
    assert (False, "no such interface") == (check.up, check.error)
    assert "master eth1 syncid=7: down (no such interface)" == str(check)
    backend.start_sync = start  # type: ignore[method-assign]
    (check,) = await keeper.keep(SyncConfig(state=SyncRole.MASTER, interface="eth1", syncid=7))
    assert check.up


@pytest.mark.parametrize("config", [BOTH, None])
async def test_an_unreadable_kernel_is_every_daemon_down(config: SyncConfig | None) -> None:
    backend = MemoryBackend()
    keeper = SyncKeeper(backend)
    await keeper.keep(BOTH)
    backend.sync_error = IpvsError("sync-daemons", "needs CAP_NET_ADMIN", errno.EPERM)
    checks = await keeper.keep(config)
    expected = [("needs CAP_NET_ADMIN", False)] * len(checks)
    assert expected == [(c.error, c.up) for c in checks]
    assert len(checks) == (2 if config else 0)
