"""The sync daemon's requests and replies (model -> bytes -> model), on the host, and
the in-memory stand-in for it. The kernel round trip is in tests/lab/test_sync_lab.py."""

from __future__ import annotations

import errno
import struct

import pytest
from pyroute2.netlink import NLM_F_MULTI
from pyroute2.netlink.generic import ipvs as genl

from lvsd.errors import IpvsError
from lvsd.ipvs.decode import daemon_from_nla, reply_attr
from lvsd.ipvs.encode import daemon_nla, daemon_state_nla
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.netlink import sync_reason
from lvsd.ipvs.uapi import IPVS_CMD_ATTR_DAEMON
from lvsd.model import SyncDaemon, SyncState
from tests.ipvs.replies import GENL_ID, SEQ, frame

MASTER = SyncDaemon(state=SyncState.MASTER, interface="eth1", syncid=7)
#: MASTER as a 6.1 kernel reports it, its defaults filled in.
RUNNING = SyncDaemon(
    state=SyncState.MASTER,
    interface="eth1",
    syncid=7,
    maxlen=1472,
    port=8848,
    ttl=1,
    group="224.0.0.81",
)


def _nla(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + bytes(-len(data) % 4)


def _reply(payload: bytes) -> bytes:
    """A GET_DAEMON dump reply holding ``payload``, encoded and framed by pyroute2."""
    msg = genl.ipvsmsg()
    msg["cmd"] = genl.IPVS_CMD_NEW_DAEMON
    msg["version"] = genl.GENL_VERSION
    msg["header"]["type"] = GENL_ID
    msg["header"]["flags"] = NLM_F_MULTI
    msg["header"]["sequence_number"] = SEQ
    msg["attrs"] = [("IPVS_CMD_ATTR_DAEMON", payload)]
    msg.encode()
    return bytes(msg.data)


def test_a_master_is_state_interface_and_syncid_only() -> None:
    """The three attributes the kernel requires, and nothing it should default."""
    expected = _nla(1, struct.pack("=I", 1)) + _nla(2, b"eth1\0") + _nla(3, struct.pack("=I", 7))
    assert expected == daemon_nla(MASTER)


def test_every_optional_field_is_sent_in_its_kernel_type() -> None:
    """maxlen u16, group in_addr (network order), port u16, ttl u8."""
    daemon = SyncDaemon(
        state=SyncState.BACKUP,
        interface="eth1",
        syncid=7,
        maxlen=1400,
        group="239.1.2.3",
        port=8849,
        ttl=2,
    )
    expected = (
        _nla(1, struct.pack("=I", 2))
        + _nla(2, b"eth1\0")
        + _nla(3, struct.pack("=I", 7))
        + _nla(4, struct.pack("=H", 1400))
        + _nla(5, bytes([239, 1, 2, 3]))
        + _nla(7, struct.pack("=H", 8849))
        + _nla(8, bytes([2]))
    )
    assert expected == daemon_nla(daemon)


def test_a_v6_group_is_group6() -> None:
    payload = daemon_nla(SyncDaemon(state=SyncState.MASTER, interface="e", group="ff02::81"))
    assert _nla(6, bytes.fromhex("ff02" + "00" * 13 + "81")) in payload


def test_the_delete_request_holds_the_state_alone() -> None:
    assert _nla(1, struct.pack("=I", 2)) == daemon_state_nla(SyncState.BACKUP)


@pytest.mark.parametrize("name", ["", "a" * 16, "et\0h"])
def test_an_interface_name_the_kernel_cannot_hold_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="interface name"):
        daemon_nla(SyncDaemon(state=SyncState.MASTER, interface=name))


@pytest.mark.parametrize(
    "daemon",
    [
        MASTER,
        SyncDaemon(state=SyncState.BACKUP, interface="eth1", syncid=0, maxlen=1472, ttl=1),
        SyncDaemon(
            state=SyncState.MASTER, interface="bond0.12", syncid=255, group="ff05::1", port=1
        ),
        SyncDaemon(
            state=SyncState.BACKUP, interface="eth0", syncid=3, group="224.0.0.81", port=65535
        ),
    ],
    ids=str,
)
def test_a_request_reads_back_as_the_daemon_through_pyroute2s_framing(
    daemon: SyncDaemon,
) -> None:
    """The request's payload, framed as a dump reply by pyroute2, decodes to the same
    daemon: pyroute2 passes the bytes through unchanged."""
    (msg,) = frame(_reply(daemon_nla(daemon)))
    assert daemon == daemon_from_nla(reply_attr(msg, IPVS_CMD_ATTR_DAEMON))


def test_a_kernel_reply_has_its_defaults_filled_in() -> None:
    """What a 6.1 kernel sends for ``--start-daemon master --mcast-interface eth1
    --syncid 7``: every attribute, in the kernel's order."""
    payload = (
        _nla(1, struct.pack("=I", 1))
        + _nla(2, b"eth1\0")
        + _nla(3, struct.pack("=I", 7))
        + _nla(4, struct.pack("=H", 1472))
        + _nla(7, struct.pack("=H", 8848))
        + _nla(8, bytes([1]))
        + _nla(5, bytes([224, 0, 0, 81]))
    )
    assert RUNNING == daemon_from_nla(payload)


def test_a_reply_without_a_known_state_is_malformed() -> None:
    with pytest.raises(IpvsError, match="IPVS_DAEMON_ATTR_STATE 3 is not master or backup"):
        daemon_from_nla(_nla(1, struct.pack("=I", 3)) + _nla(3, struct.pack("=I", 0)))
    with pytest.raises(IpvsError, match="no IPVS_DAEMON_ATTR_STATE"):
        daemon_from_nla(_nla(3, struct.pack("=I", 0)))


def test_covers_compares_only_what_is_set() -> None:
    """A configured daemon matches the kernel's report of it, defaults and all; any
    field it sets that differs, or another interface or syncid, does not."""
    running = RUNNING
    assert MASTER.covers(running)
    assert SyncDaemon(state=SyncState.MASTER, interface="eth1", syncid=7, port=8848).covers(running)
    for other in (
        SyncDaemon(state=SyncState.MASTER, interface="eth1", syncid=7, port=8849),
        SyncDaemon(state=SyncState.MASTER, interface="eth0", syncid=7),
        SyncDaemon(state=SyncState.MASTER, interface="eth1", syncid=8),
        SyncDaemon(state=SyncState.BACKUP, interface="eth1", syncid=7),
    ):
        assert not other.covers(running), other


def test_a_daemon_renders_the_fields_set() -> None:
    assert "master eth1 syncid=7" == str(MASTER)
    assert "backup eth1 syncid=0 port=9000" == str(
        SyncDaemon(state=SyncState.BACKUP, interface="eth1", port=9000)
    )


def test_kernel_answers_in_words() -> None:
    assert "a daemon of this state is already running" == sync_reason(errno.EEXIST)
    assert "no daemon of this state is running" == sync_reason(errno.ESRCH)
    assert "needs CAP_NET_ADMIN" == sync_reason(errno.EPERM)


async def test_memory_backend_runs_a_master_and_a_backup_as_the_kernel_does() -> None:
    """Both states at once, defaults filled in, a second of one state refused, a stop
    of one not running refused."""
    backend = MemoryBackend()
    await backend.start_sync(SyncDaemon(state=SyncState.BACKUP, interface="eth1", syncid=7))
    await backend.start_sync(MASTER)
    running = await backend.sync_daemons()
    assert [SyncState.MASTER, SyncState.BACKUP] == [d.state for d in running]
    assert (8848, 1, "224.0.0.81") == (running[0].port, running[0].ttl, running[0].group)
    with pytest.raises(IpvsError) as exists:
        await backend.start_sync(MASTER)
    assert errno.EEXIST == exists.value.errno
    await backend.stop_sync(SyncState.MASTER)
    with pytest.raises(IpvsError) as missing:
        await backend.stop_sync(SyncState.MASTER)
    assert errno.ESRCH == missing.value.errno
    assert (SyncState.BACKUP,) == tuple(d.state for d in await backend.sync_daemons())
