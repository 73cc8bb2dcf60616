"""The tcp probe against real loopback servers that behave and misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from lvsd.checks.base import Probe, ProbeResult
from lvsd.checks.net import connector
from lvsd.checks.tcp import ConnectProbe, tcp_probe
from lvsd.config.model import SmtpOptions, TcpOptions
from lvsd.model import format_hostport
from tests.checks.conftest import TIMEOUT, Loopback, make_spec


async def _probe(net: Loopback, port: int, options: TcpOptions, **fields: object) -> Probe:
    return tcp_probe(make_spec("tcp", options, **fields), net.target(port))


async def test_connect_ok(net: Loopback) -> None:
    """A listening port is up, and the detail names where it connected."""
    port = await net.tcp(net.hang_handler())
    probe = await _probe(net, port, TcpOptions())
    result = await probe.probe()
    assert result.ok
    assert f"connect {format_hostport(net.address, port)}: ok" == result.detail
    assert "ok" == result.reason
    assert 0 <= result.duration < TIMEOUT


async def test_connect_check_closes_with_a_reset(net: Loopback) -> None:
    """A plain connect check ends its connection with a reset, as keepalived's
    TCP_CHECK does (``SO_LINGER`` 0): the server reads ECONNRESET, not an orderly end,
    and no TIME_WAIT socket stays behind on the director's side."""
    family = socket.AF_INET6 if net.address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((net.host, 0))
        listener.listen(1)
        result = await (await _probe(net, listener.getsockname()[1], TcpOptions())).probe()
        assert result.ok, result.detail
        conn, _ = listener.accept()  # already queued
        with conn:
            conn.settimeout(2)
            with pytest.raises(ConnectionResetError):
                conn.recv(1)


async def test_connect_refused(net: Loopback) -> None:
    """A closed port fails fast with 'refused'."""
    port = net.free_port()
    result = await (await _probe(net, port, TcpOptions())).probe()
    assert not result.ok
    assert f"connect {format_hostport(net.address, port)}: refused" == result.detail
    assert "refused" == result.reason


async def test_send_and_expect(net: Loopback) -> None:
    """What is sent reaches the server; the answer containing `expect` (even split over
    several segments) makes the probe pass."""
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readexactly(5))
        writer.write(b"+O")
        await writer.drain()
        writer.write(b"K ready\r\n")
        await writer.drain()
        await net.hang()

    port = await net.tcp(handler)
    probe = await _probe(net, port, TcpOptions(send=b"PING\n", expect=b"+OK"))
    result = await probe.probe()
    assert [b"PING\n"] == received
    assert result.ok, result.detail
    assert f"read {format_hostport(net.address, port)}: '+OK' seen" == result.detail


async def test_expect_wrong_answer_then_close(net: Loopback) -> None:
    """A server that answers something else and closes fails with what it said."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"-ERR nope\r\n")
        await writer.drain()

    port = await net.tcp(handler)
    result = await (await _probe(net, port, TcpOptions(expect=b"+OK"))).probe()
    where = format_hostport(net.address, port)
    assert not result.ok
    assert f"read {where}: closed before '+OK' was seen (got '-ERR nope\\r\\n')" == result.detail
    assert "body" == result.reason


async def test_expect_silent_server_times_out(net: Loopback) -> None:
    """A server that accepts and never answers times out in the read step."""
    port = await net.tcp(net.hang_handler())
    result = await (await _probe(net, port, TcpOptions(expect=b"+OK"))).probe()
    assert not result.ok
    assert f"read {format_hostport(net.address, port)}: timeout after {TIMEOUT}s" == result.detail
    assert "timeout" == result.reason
    assert TIMEOUT <= result.duration < TIMEOUT + 0.5


async def test_expect_reset(net: Loopback) -> None:
    """A server that resets the connection (SO_LINGER 0) fails with 'reset by peer'."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    port = await net.tcp(handler)
    result = await (await _probe(net, port, TcpOptions(expect=b"+OK"))).probe()
    assert not result.ok
    assert f"read {format_hostport(net.address, port)}: reset by peer" == result.detail
    assert "reset" == result.reason


async def test_spec_port_overrides_target_port(net: Loopback) -> None:
    """`port` in the spec is probed instead of the real server's port."""
    port = await net.tcp(net.hang_handler())
    probe = tcp_probe(make_spec("tcp", TcpOptions(), port=port), net.target(net.free_port()))
    result = await probe.probe()
    assert result.ok, result.detail


async def test_source_port_binding(net: Loopback) -> None:
    """`source_port` binds the probe's local port (the server sees it as the peer)."""
    port = await net.tcp(net.hang_handler())
    source_port = net.free_port()
    probe = tcp_probe(
        make_spec("tcp", TcpOptions(), source=net.host, source_port=source_port),
        net.target(port),
    )
    result = await probe.probe()
    for _ in range(10):
        if net.peers:
            break
        await asyncio.sleep(0.01)
    assert result.ok, result.detail
    assert [(net.host, source_port)] == net.peers


async def test_source_address_binding(net4: Loopback) -> None:
    """`source` binds the probe's local address: 127.0.0.2 is what the server sees."""
    port = await net4.tcp(net4.hang_handler())
    probe = tcp_probe(make_spec("tcp", TcpOptions(), source="127.0.0.2"), net4.target(port))
    result = await probe.probe()
    for _ in range(10):
        if net4.peers:
            break
        await asyncio.sleep(0.01)
    assert result.ok, result.detail
    assert ["127.0.0.2"] == [peer[0] for peer in net4.peers]


async def test_source_address_not_local(net4: Loopback) -> None:
    """A source address this host does not have fails with a clear detail, not a crash."""
    port = await net4.tcp(net4.hang_handler())
    probe = tcp_probe(make_spec("tcp", TcpOptions(), source="192.0.2.1"), net4.target(port))
    result = await probe.probe()
    assert not result.ok
    assert f"connect 127.0.0.1:{port}: cannot bind source address" == result.detail
    assert "error" == result.reason


async def test_wrong_options_type_is_a_bug(net4: Loopback) -> None:
    """Building a tcp probe from another kind's options raises TypeError (a bug)."""
    with pytest.raises(TypeError, match="tcp probe needs TcpOptions, got SmtpOptions"):
        tcp_probe(make_spec("tcp", SmtpOptions()), net4.target(1))


@contextlib.asynccontextmanager
async def _full_backlog() -> AsyncIterator[int]:
    """The port of a 127.0.0.1 listener whose accept queue is full: it drops SYNs."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):  # fill the accept queue (backlog 0 still holds one or two)
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.05)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_connect_timeout_when_backlog_is_full(net4: Loopback) -> None:
    """A listener whose accept queue is full drops SYNs: the connect-only probe times out
    in the connect step, within its timeout, and the next probe still works."""
    async with _full_backlog() as port:
        probe = tcp_probe(make_spec("tcp", TcpOptions()), net4.target(port))
        result = await probe.probe()
        assert not result.ok
        assert f"connect 127.0.0.1:{port}: timeout after {TIMEOUT}s" == result.detail
        assert "timeout" == result.reason
        assert TIMEOUT <= result.duration < TIMEOUT + 0.5
    ok_port = await net4.tcp(net4.hang_handler())
    again = await tcp_probe(make_spec("tcp", TcpOptions()), net4.target(ok_port)).probe()
    assert again.ok, again.detail


async def test_many_connects_at_once(net4: Loopback) -> None:
    """Two hundred connect-only probes awaited together (one shared epoll set) all
    report their own port: up for the listening ones, refused for the closed ones."""
    up = [await net4.tcp(net4.hang_handler()) for _ in range(100)]
    down = [net4.free_port() for _ in range(100)]
    probes = [tcp_probe(make_spec("tcp", TcpOptions()), net4.target(p)) for p in up + down]
    results = await asyncio.gather(*(p.probe() for p in probes))
    expected = [f"connect 127.0.0.1:{p}: ok" for p in up]
    expected += [f"connect 127.0.0.1:{p}: refused" for p in down]
    assert expected == [r.detail for r in results]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_connect_runs_from_callbacks(net4: Loopback) -> None:
    """``start`` returns at once; ``finish`` is called exactly once, on a later turn of
    the loop, even when the run fails before any connect (a source that cannot be
    bound)."""
    port = await net4.tcp(net4.hang_handler())
    for spec, ok in (
        (make_spec("tcp", TcpOptions()), True),
        (make_spec("tcp", TcpOptions(), source="192.0.2.1"), False),
    ):
        probe = tcp_probe(spec, net4.target(port))
        assert isinstance(probe, ConnectProbe)
        ended: list[ProbeResult | None] = []
        run = probe.start(ended.append, asyncio.get_running_loop().time())
        assert [] == ended
        assert not run.done()
        for _ in range(200):
            if ended:
                break
            await asyncio.sleep(0.005)
        assert [ok] == [r.ok for r in ended if r is not None]
        assert run.done()
        assert not run.cancel()
        assert 1 == len(ended)


async def test_connect_cancel_closes_the_socket(net4: Loopback) -> None:
    """Cancelling a connect under way (to a listener whose accept queue is full) closes
    its socket at once, calls ``finish(None)`` once, and nothing comes after."""
    async with _full_backlog() as port:
        probe = tcp_probe(make_spec("tcp", TcpOptions()), net4.target(port))
        assert isinstance(probe, ConnectProbe)
        connector()  # the loop's one epoll set exists before counting
        before = _open_fds()
        ended: list[ProbeResult | None] = []
        run = probe.start(ended.append, asyncio.get_running_loop().time())
        await asyncio.sleep(0.05)
        assert [] == ended
        assert before + 1 == _open_fds()
        assert run.cancel()
        assert [None] == ended
        assert before == _open_fds()
        await asyncio.sleep(TIMEOUT + 0.1)  # past the timeout: no second finish
        assert [None] == ended
