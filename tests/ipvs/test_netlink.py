"""Tests of ``NetlinkBackend`` on a fake socket: the reasons in words, apply's windows
and failures, dumps in turn and in steps, replies never answered, the draining socket.

The fake sockets encode requests as pyroute2 would and answer dumps with the replies
a kernel sends (``tests/ipvs/replies.py``); the kernel round trip is tested in
tests/lab.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

import pytest
from pyroute2.ipvs import AsyncIPVS, IPVSDest, IPVSService
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import ipvs as genl

from lvsd.errors import IpvsError
from lvsd.ipvs import netlink
from lvsd.ipvs.netlink import NetlinkBackend, reason_for
from lvsd.model import (
    Destination,
    DestKey,
    DestStats,
    Family,
    Forward,
    Op,
    OpKind,
    Protocol,
    SchedFlag,
    Service,
    ServiceKey,
    Snapshot,
    Stats,
    TunnelType,
    VirtualService,
)
from tests.ipvs.replies import (
    COUNTERS,
    DEST,
    SERVICE,
    V4,
    V6,
    V6_128,
    VIP,
    VIP6,
    FakeDumpIPVS,
    dest_attrs,
    encode_reply,
    frame,
    legacy_dest,
    legacy_service,
    mark,
    rs,
    svc_tail,
    tcp,
    truncate,
)

RS = Destination(address="10.0.0.2", port=80)
SVC = Service(key=VIP, scheduler="wrr")


# --- errors in words ----------------------------------------------------------------------

ADD_SVC = Op(kind=OpKind.ADD_SERVICE, service=Service(key=VIP, scheduler="twos"))
ADD_DEST = Op(kind=OpKind.ADD_DEST, service=SVC, dest=RS)
EDIT_DEST = Op(kind=OpKind.EDIT_DEST, service=SVC, dest=RS)
DEL_SVC = Op(kind=OpKind.DEL_SERVICE, service=SVC)


@pytest.mark.parametrize(
    ("op", "code", "reason"),
    [
        (ADD_DEST, errno.EEXIST, "already exists"),
        (ADD_SVC, errno.ENOENT, "scheduler module ip_vs_twos not available"),
        (Op(kind=OpKind.EDIT_SERVICE, service=Service(key=VIP, scheduler="xx")), errno.ENOENT,
         "scheduler module ip_vs_xx not available"),
        (EDIT_DEST, errno.ENOENT, "not found"),
        (DEL_SVC, errno.ESRCH, "not found"),
        (ADD_DEST, errno.ESRCH, "service not found"),
        (DEL_SVC, errno.EPERM, "needs CAP_NET_ADMIN"),
        (ADD_DEST, errno.EINVAL, "EINVAL: Invalid argument"),
    ],
)  # fmt: skip
def test_reason_in_words(op: Op, code: int, reason: str) -> None:
    """Kernel errnos become reasons a person can act on."""
    assert reason == reason_for(op, code)


# --- apply, dumps in turn, slow calls, replies never answered -----------------------------


def _encode(attrs: list[tuple[str, Any]]) -> None:
    """Encode a request as AsyncIPVS does before sending it (struct.error on a value
    its field cannot hold)."""
    msg = genl.ipvsmsg()
    msg["cmd"] = genl.IPVS_CMD_NEW_SERVICE
    msg["version"] = genl.GENL_VERSION
    msg["attrs"] = attrs
    msg.encode()


class FakeIPVS:
    """Stands in for pyroute2's AsyncIPVS: encodes each request as pyroute2 would,
    then fails the commands it is told to."""

    def __init__(self, fail: dict[tuple[str, str, str], int]) -> None:
        self.fail = fail
        self.calls: list[tuple[str, str, str]] = []

    async def service(self, command: str, service: IPVSService) -> list[Any]:
        _encode([("IPVS_CMD_ATTR_SERVICE", service.dump_nla())])
        call = ("service", command, str(service["sched_name"]) if command == "add" else "")
        self.calls.append(call)
        if call in self.fail:
            raise NetlinkError(self.fail[call])
        return []

    async def dest(self, command: str, service: IPVSService, dest: IPVSDest) -> list[Any]:
        _encode(
            [("IPVS_CMD_ATTR_SERVICE", service.dump_key()), ("IPVS_CMD_ATTR_DEST", dest.dump_nla())]
        )
        call = ("dest", command, str(dest["addr"]))
        self.calls.append(call)
        if call in self.fail:
            raise NetlinkError(self.fail[call])
        return []

    def close(self) -> None:
        pass


async def test_apply_goes_on_after_a_failure_but_skips_dests_of_a_failed_service() -> None:
    """One failed op does not stop the others; the dest ops of a service whose
    add-service failed are skipped without a request."""
    bad = Service(key=ServiceKey.inet(Protocol.TCP, "192.168.3.109", 80), scheduler="twos")
    good = Service(key=VIP, scheduler="wrr")
    ops = [
        Op(kind=OpKind.ADD_SERVICE, service=bad),
        Op(kind=OpKind.ADD_DEST, service=bad, dest=RS),
        Op(kind=OpKind.ADD_SERVICE, service=good),
        Op(kind=OpKind.ADD_DEST, service=good, dest=RS),
        Op(kind=OpKind.ADD_DEST, service=good, dest=Destination(address="10.0.0.3", port=80)),
    ]
    fake = FakeIPVS({("service", "add", "twos"): errno.ENOENT, ("dest", "add", "10.0.0.3"): 17})
    backend = NetlinkBackend()
    backend._ipvs = fake  # the socket is what we fake
    result = await backend.apply(ops)
    assert [ops[2], ops[3]] == list(result.applied)
    assert [
        (ops[0], "scheduler module ip_vs_twos not available"),
        (ops[1], "skipped: add-service tcp 192.168.3.109:80 failed"),
        (ops[4], "already exists"),
    ] == [(op, err.reason) for op, err in result.failed]
    requests_sent = 4  # the skipped add-dest never reached the kernel
    assert requests_sent == len(fake.calls)
    assert str(ops[4]) == result.failed[2][1].op


async def test_apply_turns_an_encoding_error_into_that_ops_failure() -> None:
    """A value pyroute2 cannot encode (a u32 field above 2**32 - 1) fails its own op with
    the op named, as a kernel error would; the other ops are still applied, and the
    dests of a service that could not be encoded are skipped."""
    huge = 2**32
    bad = Service(key=ServiceKey.inet(Protocol.TCP, "192.168.3.109", 80), timeout=huge)
    good = Service(key=VIP, scheduler="wrr")
    ops = [
        Op(kind=OpKind.ADD_SERVICE, service=bad),
        Op(kind=OpKind.ADD_DEST, service=bad, dest=RS),
        Op(kind=OpKind.ADD_SERVICE, service=good),
        Op(kind=OpKind.ADD_DEST, service=good,
           dest=Destination(address="10.0.0.3", port=80, upper_threshold=huge)),
        Op(kind=OpKind.ADD_DEST, service=good, dest=RS),
    ]  # fmt: skip
    backend = NetlinkBackend()
    backend._ipvs = FakeIPVS({})  # the socket is what we fake
    result = await backend.apply(ops)
    assert [ops[2], ops[4]] == list(result.applied)
    encode = "cannot encode the request: "
    expected = [
        (str(ops[0]), encode),
        (str(ops[1]), "skipped: add-service tcp 192.168.3.109:80 failed"),
        (str(ops[3]), encode),
    ]
    assert expected == [
        (err.op, err.reason[: len(encode)] if err.reason.startswith(encode) else err.reason)
        for _, err in result.failed
    ]


class DumpingIPVS:
    """A socket that dumps as the kernel does: a dump asked while another is still
    running on it is refused with EBUSY."""

    def __init__(self) -> None:
        self.running = False
        self.dumps = 0

    async def service(self, command: str) -> list[Any]:
        assert "dump" == command
        if self.running:
            raise NetlinkError(errno.EBUSY)
        self.running = True
        await asyncio.sleep(0.01)  # the kernel's parts arrive meanwhile
        self.running = False
        self.dumps += 1
        return []

    def close(self) -> None:
        pass


async def test_concurrent_dumps_take_turns_on_the_socket() -> None:
    """A scrape's dump and a reconcile's at once both succeed: the backend sends one
    dump at a time (the kernel would refuse the second with EBUSY)."""
    fake = DumpingIPVS()
    backend = NetlinkBackend()
    backend._ipvs = fake  # the socket is what we fake
    snapshots = await asyncio.gather(backend.dump(), backend.dump(), backend.dump())
    assert 3 == fake.dumps
    assert all({} == s.table for s in snapshots)


async def test_slow_calls_are_logged_with_the_time_spent_behind_another_dump(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dump or apply at ``SLOW_CALL`` seconds or more is logged as ``kernel.slow``; a
    dump's ``waited`` is the part spent behind another dump; quicker calls log nothing."""
    from structlog.testing import capture_logs

    backend = NetlinkBackend()
    backend._ipvs = DumpingIPVS()  # the socket is what we fake
    with capture_logs() as logs:
        await asyncio.gather(backend.dump(), backend.dump())
    assert [] == [e for e in logs if e["event"] == "kernel.slow"]
    monkeypatch.setattr(netlink, "SLOW_CALL", 0.005)
    with capture_logs() as logs:
        await asyncio.gather(backend.dump(), backend.dump())
        backend._ipvs = SlowIPVS({})
        await backend.apply([Op(kind=OpKind.ADD_DEST, service=Service(key=VIP), dest=RS)])
    slow = [e for e in logs if e["event"] == "kernel.slow"]
    assert ["dump", "dump", "apply"] == [e["call"] for e in slow]
    assert slow[0]["waited"] < 0.005 <= slow[1]["waited"]
    assert 0.005 <= slow[0]["seconds"]
    assert 0 == slow[0]["destinations"]
    assert 0.005 <= slow[2]["seconds"]
    assert 1 == slow[2]["ops"]


class SlowIPVS(FakeIPVS):
    """A socket whose dest requests are answered after 10 ms."""

    async def dest(self, command: str, service: IPVSService, dest: IPVSDest) -> list[Any]:
        await asyncio.sleep(0.01)
        return await super().dest(command, service, dest)


class SilentIPVS(FakeIPVS):
    """A socket whose dest requests and dumps are never answered (a reply lost)."""

    def __init__(self) -> None:
        super().__init__({})
        self.closed = False

    async def service(self, command: str, service: IPVSService | None = None) -> list[Any]:
        if command != "dump":
            assert service is not None
            return await super().service(command, service)
        await asyncio.Event().wait()
        return []

    async def dest(self, command: str, service: IPVSService, dest: IPVSDest) -> list[Any]:
        await super().dest(command, service, dest)
        await asyncio.Event().wait()
        return []

    def close(self) -> None:
        self.closed = True


async def test_a_request_never_answered_fails_its_window_and_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the kernel's answer does not come within ``REPLY_TIMEOUT``, the window's
    ops fail, the ops after it fail unsent, and the socket is closed: the next call
    opens another."""
    monkeypatch.setattr(netlink, "REPLY_TIMEOUT", 0.05)
    good = Service(key=VIP, scheduler="wrr")
    other = Service(key=ServiceKey.inet(Protocol.TCP, "192.168.3.109", 80), scheduler="wrr")
    ops = [
        Op(kind=OpKind.ADD_SERVICE, service=good),
        Op(kind=OpKind.ADD_DEST, service=good, dest=RS),
        Op(kind=OpKind.ADD_SERVICE, service=other),
        Op(kind=OpKind.ADD_DEST, service=other, dest=RS),
    ]
    fake = SilentIPVS()
    backend = NetlinkBackend()
    backend._ipvs = fake  # the socket is what we fake
    result = await backend.apply(ops)
    assert [ops[0]] == list(result.applied)
    silent = "no answer from the kernel within 0.05s"
    assert [
        (str(ops[1]), silent),
        (str(ops[2]), silent),
        (str(ops[3]), "skipped: add-service tcp 192.168.3.109:80 failed"),
    ] == [(err.op, err.reason) for _, err in result.failed]
    assert [("service", "add", "wrr"), ("dest", "add", "10.0.0.2")] == fake.calls
    assert fake.closed
    assert backend._ipvs is None


async def test_a_dump_never_answered_is_a_dump_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dump whose answer does not come within ``REPLY_TIMEOUT`` fails as a dump error
    and closes the socket; the dump lock is free for the next dump."""
    monkeypatch.setattr(netlink, "REPLY_TIMEOUT", 0.05)
    fake = SilentIPVS()
    backend = NetlinkBackend()
    backend._ipvs = fake  # the socket is what we fake
    with pytest.raises(IpvsError) as caught:
        await backend.dump()
    assert ("dump", "no answer from the kernel within 0.05s") == (
        caught.value.op,
        caught.value.reason,
    )
    assert fake.closed
    backend._ipvs = DumpingIPVS()
    assert {} == (await backend.dump()).table


# --- the draining socket ------------------------------------------------------------------


class _Protocol:
    def __init__(self) -> None:
        self.errors: list[OSError] = []

    def error_received(self, exc: OSError) -> None:
        self.errors.append(exc)


def _draining(
    monkeypatch: pytest.MonkeyPatch, sock: Any
) -> tuple[netlink.DrainingIPVS, list[bytes], _Protocol]:
    """A DrainingIPVS reading ``sock``, whose parent's enqueue records what it gets."""
    got: list[bytes] = []
    monkeypatch.setattr(AsyncIPVS, "enqueue", lambda self, data, addr: got.append(data))
    monkeypatch.setattr(netlink.DrainingIPVS, "socket", property(lambda self: sock))
    ipvs = object.__new__(netlink.DrainingIPVS)
    protocol = _Protocol()
    ipvs.local = type("Local", (), {"protocol": protocol})()
    return ipvs, got, protocol


def test_draining_socket_takes_every_queued_reply_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The datagram the transport hands over, then every one already queued, in order,
    whole; up to DRAIN_BYTES at a time (the rest waits for the next turn)."""
    here, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    here.setblocking(False)
    with here, kernel:
        ipvs, got, protocol = _draining(monkeypatch, here)
        for n in range(5):
            kernel.send(bytes([n]) * 100)
        ipvs.enqueue(b"first", None)
        assert [b"first"] + [bytes([n]) * 100 for n in range(5)] == got
        monkeypatch.setattr(netlink, "DRAIN_BYTES", 250)
        got.clear()
        for n in range(5):
            kernel.send(bytes([n]) * 100)
        ipvs.enqueue(b"first", None)
        assert [b"first", bytes([0]) * 100, bytes([1]) * 100, bytes([2]) * 100] == got
        assert [] == protocol.errors


def test_draining_socket_reports_a_socket_error_as_the_transport_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error on the read (ENOBUFS: the kernel dropped replies) goes to the
    protocol's error_received, and the drain stops; so does the error pyroute2 raises
    for a socket whose transport reported one."""

    class Overrun:
        def recv(self, size: int, flags: int) -> bytes:
            raise OSError(errno.ENOBUFS, "No buffer space available")

    ipvs, got, protocol = _draining(monkeypatch, Overrun())
    ipvs.enqueue(b"first", None)
    assert [b"first"] == got
    assert [errno.ENOBUFS] == [e.errno for e in protocol.errors]

    def broken(self: Any) -> Any:
        raise OSError(errno.ECONNRESET, "reported before")

    monkeypatch.setattr(netlink.DrainingIPVS, "socket", property(broken))
    ipvs.enqueue(b"second", None)
    assert [b"first", b"second"] == got
    assert [errno.ENOBUFS, errno.ECONNRESET] == [e.errno for e in protocol.errors]


# --- dumps through NetlinkBackend._dump ----------------------------------------------------


MARK6 = ServiceKey.mark(9, Family.INET6)
TABLE_SERVICES = {
    VIP: V4 + tcp("192.168.3.108", 80) + svc_tail("wrr", 0, counters=COUNTERS),
    VIP6: V6 + tcp("2001:db8::108", 53, socket.IPPROTO_UDP) + svc_tail("sh", 0x1, 60, V6_128),
    MARK6: V6 + mark(9) + svc_tail("mh", 0x8),
}
TABLE_DESTS = {
    VIP: [dest_attrs("10.0.0.3", weight=2, counters=COUNTERS), dest_attrs("10.0.0.2", fwd=3)],
    VIP6: [dest_attrs("2001:db8::2", 53, fwd=2, tun=(1, 6080), conns=(1, 2, 3))],
    MARK6: [],
}


def _fake() -> FakeDumpIPVS:
    return FakeDumpIPVS(
        [encode_reply(SERVICE, attrs) for attrs in TABLE_SERVICES.values()],
        {key: [encode_reply(DEST, a) for a in dests] for key, dests in TABLE_DESTS.items()},
    )


def _legacy_snapshot(fake: FakeDumpIPVS, keys: frozenset[ServiceKey] | None) -> Snapshot:
    """What ``_dump`` made of the same replies through pyroute2's decoder."""
    table: dict[ServiceKey, VirtualService] = {}
    service_stats: dict[ServiceKey, Stats] = {}
    dest_stats: dict[tuple[ServiceKey, DestKey], DestStats] = {}
    for msg in frame(*fake.services):
        service, counters = legacy_service(msg)
        service_stats[service.key] = counters
        if keys is not None and service.key not in keys:
            continue
        dests = {}
        for d_msg in frame(*fake.dests[service.key]) if fake.dests[service.key] else []:
            dest, d_counters = legacy_dest(d_msg)
            dests[dest.key] = dest
            dest_stats[(service.key, dest.key)] = d_counters
        table[service.key] = VirtualService(
            service=service, destinations={k: dests[k] for k in sorted(dests)}
        )
    return Snapshot(table=table, service_stats=service_stats, dest_stats=dest_stats)


async def test_a_big_service_is_decoded_in_steps() -> None:
    """The replies of a service with many destinations are decoded, then put in
    order, a step of ``DECODE_STEP`` at a time, the event loop running in between; all
    of them, in order."""
    count = 2 * netlink.DECODE_STEP + 10
    addresses = [f"10.1.{n // 250}.{n % 250 + 1}" for n in range(count)]
    fake = FakeDumpIPVS(
        [encode_reply(SERVICE, TABLE_SERVICES[VIP])],
        {VIP: [encode_reply(DEST, dest_attrs(a)) for a in reversed(addresses)]},
    )
    backend = NetlinkBackend()
    backend._ipvs = fake  # the socket is what we fake
    turns = 0

    async def tick() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)  # the ticker is waiting for its next turn
    start = turns
    snapshot = await backend.dump()
    during = turns - start
    ticker.cancel()
    await asyncio.gather(ticker, return_exceptions=True)
    assert [DestKey.of(a, 80) for a in addresses] == list(snapshot.table[VIP].destinations)
    assert 2 + 2 == during  # 266 decoded: after 128 and 256; ordered: before 128 and 256


async def test_dump_reads_the_whole_table() -> None:
    """``dump()`` decodes every service and its destinations (sorted), with counters,
    as the conversion through pyroute2 did."""
    fake = _fake()
    backend = NetlinkBackend()
    backend._ipvs = fake  # the socket is what we fake
    snapshot = await backend.dump()
    vip6_dest = rs("2001:db8::2", 53, forward=Forward.TUN, tunnel=TunnelType.GUE,
                   tunnel_port=6080)  # fmt: skip
    expected_table = {
        VIP: VirtualService(
            service=Service(key=VIP),
            destinations={DestKey.of("10.0.0.2", 80): rs("10.0.0.2", forward=Forward.DR),
                          DestKey.of("10.0.0.3", 80): rs("10.0.0.3", weight=2)},
        ),
        VIP6: VirtualService(
            service=Service(key=VIP6, scheduler="sh", timeout=60),
            destinations={vip6_dest.key: vip6_dest},
        ),
        MARK6: VirtualService(
            service=Service(key=MARK6, scheduler="mh", flags=frozenset({SchedFlag.FALLBACK})),
            destinations={},
        ),
    }  # fmt: skip
    assert expected_table == snapshot.table
    assert list(expected_table[VIP].destinations) == list(snapshot.table[VIP].destinations)
    assert {VIP: COUNTERS, VIP6: Stats(), MARK6: Stats()} == snapshot.service_stats
    expected_dest_stats = {
        (VIP, DestKey.of("10.0.0.3", 80)): DestStats(stats=COUNTERS),
        (VIP, DestKey.of("10.0.0.2", 80)): DestStats(),
        (VIP6, vip6_dest.key): DestStats(
            active_connections=1, inactive_connections=2, persistent_connections=3
        ),
    }
    assert expected_dest_stats == snapshot.dest_stats
    assert _legacy_snapshot(fake, None) == snapshot


async def test_dump_services_reads_only_the_destinations_asked_for() -> None:
    """``dump_services(keys)`` still reads every service (all in ``service_stats``) but
    the destinations of the services in ``keys`` only."""
    fake = _fake()
    backend = NetlinkBackend()
    backend._ipvs = fake  # the socket is what we fake
    snapshot = await backend.dump_services([VIP6, ServiceKey.mark(1)])
    assert [VIP6] == fake.dest_dumps
    assert ([VIP6], {VIP, VIP6, MARK6}) == (list(snapshot.table), set(snapshot.service_stats))
    assert _legacy_snapshot(fake, frozenset({VIP6})) == snapshot


async def test_dump_with_a_malformed_reply_fails_as_a_dump_error() -> None:
    """A reply the decoder cannot read fails the dump with ``IpvsError("dump", ...)``."""
    fake = _fake()
    fake.dests[VIP] = [truncate(encode_reply(DEST, dest_attrs()), 8)]
    backend = NetlinkBackend()
    backend._ipvs = fake  # the socket is what we fake
    with pytest.raises(IpvsError) as caught:
        await backend.dump()
    reason = "malformed reply: IPVS_CMD_ATTR_DEST: attribute 12 at byte 196 is 124 bytes long,"
    assert ("dump", f"{reason} 116 left") == (caught.value.op, caught.value.reason)
