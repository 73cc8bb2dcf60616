"""lab.protocols' tiny servers on loopback, judged by lvsd's own probes: each is up
when ``up``, down with the expected reason when ``bad`` and refused when ``off`` (the
lab's probe scenario relies on exactly these answers)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator

import pytest

from lab import protocols
from lab.protocols import Server
from lvsd.checks.base import Target
from lvsd.checks.registry import make_probe
from lvsd.config.model import (
    AgentOptions,
    CheckOptions,
    CheckSpec,
    DnsOptions,
    HandshakeOptions,
    MysqlOptions,
    RadiusOptions,
    SipOptions,
    SmtpOptions,
    TcpOptions,
    UdpOptions,
)

#: kind -> (server kind, check options, reason when broken)
CASES: dict[str, tuple[str, CheckOptions, str]] = {
    "dns": ("dns", DnsOptions(name="www.lab", expect=("127.0.0.1",)), "status"),
    "smtp": ("smtp", SmtpOptions(helo="director"), "status"),
    "udp": ("udp", UdpOptions(send=b"PING", expect=b"PONG"), "body"),
    "imap": ("imap", HandshakeOptions(), "status"),
    "pop3": ("pop3", HandshakeOptions(), "status"),
    "ftp": ("ftp", HandshakeOptions(), "status"),
    "mysql": ("mysql", MysqlOptions(), "status"),
    "pgsql": ("pgsql", HandshakeOptions(), "status"),
    "ldap": ("ldap", HandshakeOptions(), "status"),
    "sip": ("sip", SipOptions(), "status"),
    "radius": ("radius", RadiusOptions(secret=protocols.RADIUS_SECRET.decode()), "status"),
    "tcp": ("http", TcpOptions(send=b"GET / HTTP/1.0\r\n\r\n", expect=b"200 OK"), "refused"),
}


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def served(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Server, CheckSpec]]:
    kind: str = request.param
    server_kind, options, _ = CASES[kind]
    datagram = server_kind in protocols.DATAGRAM
    port = _free_port(socket.SOCK_DGRAM if datagram else socket.SOCK_STREAM)
    server = Server(name=kind, kind=server_kind, netns="-", address="127.0.0.1", port=port)
    await protocols.start(server)
    spec = CheckSpec(kind=kind, options=options, timeout=0.5)
    yield server, spec
    protocols.stop(server)


async def _probe(server: Server, spec: CheckSpec) -> tuple[bool, str, str]:
    target = Target(address=ipaddress.ip_address(server.address), port=server.port, weight=10)
    probe = make_probe(spec, target)
    try:
        result = await probe.probe()
    finally:
        await probe.close()
    return result.ok, result.reason, result.detail


@pytest.mark.parametrize("served", sorted(CASES), indirect=True)
async def test_up_bad_off_and_back(served: tuple[Server, CheckSpec]) -> None:
    """up: ok; bad: down with the kind's reason (tcp has no broken answer: refused);
    off: refused (or, for a datagram kind without an ICMP-aware reply, a failure);
    up again: ok."""
    server, spec = served
    _, _, broken = CASES[spec.kind]
    ok, reason, detail = await _probe(server, spec)
    assert (True, "ok") == (ok, reason), detail
    await protocols.set_mode(server, "bad" if spec.kind != "tcp" else "off")
    ok, reason, detail = await _probe(server, spec)
    assert (False, broken) == (ok, reason), detail
    await protocols.set_mode(server, "off")
    ok, reason, detail = await _probe(server, spec)
    assert (False, "refused") == (ok, reason), detail
    await protocols.set_mode(server, "up")
    ok, reason, detail = await _probe(server, spec)
    assert (True, "ok") == (ok, reason), detail


async def test_agent_answers_its_mode() -> None:
    """An agent server answers its mode as the line: a weight, drain, down."""
    port = _free_port(socket.SOCK_STREAM)
    server = Server(name="a", kind="agent", netns="-", address="127.0.0.1", port=port)
    await protocols.start(server)
    spec = CheckSpec(kind="agent", options=AgentOptions(), timeout=0.5)
    try:
        seen = []
        for mode in ("up", "50%", "drain", "down"):
            await protocols.set_mode(server, mode)
            seen.append(await _probe(server, spec))
    finally:
        protocols.stop(server)
    assert [True, True, True, False] == [ok for ok, _, _ in seen], seen
    assert ["agent: up (up)", "agent: up (50%)", "agent: drain (drain)", "agent: down (down)"] == [
        detail for _, _, detail in seen
    ]


async def test_control_socket_sets_a_mode(tmp_path: object) -> None:
    """A ``NAME MODE`` line on the control socket is applied before ``ok`` comes back."""
    path = f"{tmp_path}/control.sock"
    port = _free_port(socket.SOCK_STREAM)
    spec = f"w=weight@-/127.0.0.1:{port}"
    task = asyncio.create_task(protocols.serve(path, [Server.parse(spec)]))
    try:
        for _ in range(100):
            if await asyncio.to_thread(_exists, path):
                break
            await asyncio.sleep(0.02)
        control = await asyncio.to_thread(protocols.Control, path)
        await asyncio.to_thread(control.set, "w", "7")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert b"7\n" == await reader.readline()
        writer.close()
        await writer.wait_closed()
        with pytest.raises(RuntimeError, match="nobody"):
            await asyncio.to_thread(control.set, "nobody", "up")
        control.close()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _exists(path: str) -> bool:
    import os

    return os.path.exists(path)
