"""Loopback servers for the probe tests: well-behaved and misbehaving ones, on
127.0.0.1 and ::1, port 0, all stopped (and their connections closed) at teardown."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from lvsd.checks.base import Target
from lvsd.config.model import CheckOptions, CheckSpec

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
DatagramHandler = Callable[[bytes], bytes | None]

#: Probe timeout used throughout: short, so misbehaving servers cost little.
TIMEOUT = 0.3


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, handler: DatagramHandler, peers: list[tuple[str, int]]) -> None:
        self.handler = handler
        self.peers = peers
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.peers.append((str(addr[0]), int(addr[1])))
        reply = self.handler(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class Loopback:
    """Servers on one loopback address; every one of them is closed by ``aclose``."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.address = ipaddress.ip_address(host)
        self.stop = asyncio.Event()
        self.peers: list[tuple[str, int]] = []
        self._servers: list[asyncio.Server] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._transports: list[asyncio.BaseTransport] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def target(self, port: int, *, weight: int = 1) -> Target:
        return Target(address=self.address, port=port, weight=weight)

    async def tcp(self, handler: StreamHandler) -> int:
        """Start a TCP server running ``handler`` per connection; return its port."""

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            self._writers.append(writer)
            peer = writer.get_extra_info("peername")
            self.peers.append((peer[0], peer[1]))
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
                self._tasks.discard(task)

        server = await asyncio.start_server(serve, self.host, 0)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def hang(self) -> None:
        """What a server that never answers does: wait until the test is over."""
        await self.stop.wait()

    def hang_handler(self) -> StreamHandler:
        """A connection handler that accepts and never says anything."""

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self.hang()

        return handler

    async def udp(self, handler: DatagramHandler) -> int:
        """Start a UDP server answering each datagram with ``handler(data)`` (None: silence)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(handler, self.peers), local_addr=(self.host, 0)
        )
        self._transports.append(transport)
        return int(transport.get_extra_info("sockname")[1])

    def free_port(self, kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
        """A port nobody listens on (connecting to it is refused)."""
        family = socket.AF_INET6 if self.address.version == 6 else socket.AF_INET
        with socket.socket(family, kind) as sock:
            sock.bind((self.host, 0))
            return int(sock.getsockname()[1])

    async def aclose(self) -> None:
        self.stop.set()
        for server in self._servers:
            server.close()
        for writer in self._writers:
            writer.close()
        for transport in self._transports:
            transport.close()
        if self._tasks:  # handlers see `stop` (or their closed socket) and return
            await asyncio.wait(list(self._tasks), timeout=2)
        for server in self._servers:
            await server.wait_closed()
        for _ in range(3):
            await asyncio.sleep(0)


@pytest.fixture(params=["127.0.0.1", "::1"], ids=["v4", "v6"])
def host(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def net(host: str) -> AsyncIterator[Loopback]:
    """Loopback servers on 127.0.0.1 and on ::1 (every test using it runs twice)."""
    loopback = Loopback(host)
    try:
        yield loopback
    finally:
        await loopback.aclose()


@pytest.fixture
async def net4() -> AsyncIterator[Loopback]:
    """Loopback servers on 127.0.0.1 only."""
    loopback = Loopback("127.0.0.1")
    try:
        yield loopback
    finally:
        await loopback.aclose()


def make_spec(kind: str, options: CheckOptions, **fields: object) -> CheckSpec:
    """A check spec with the tests' short timeout unless told otherwise."""
    values: dict[str, object] = {"timeout": TIMEOUT, **fields}
    return CheckSpec(kind=kind, options=options, **values)  # type: ignore[arg-type]


# --- throwaway certificates (openssl CLI: the venv has no `cryptography`) ------------


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA lvsd is told to trust
    server_cert: Path  # signed by ca, for 127.0.0.1, ::1 and www.example.test
    server_key: Path
    rogue_ca: Path  # another CA, trusted by nobody
    rogue_cert: Path  # signed by rogue_ca, same names
    rogue_key: Path
    client_cert: Path  # signed by ca
    client_key: Path


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60
    )


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def _make_leaf(
    directory: Path, name: str, ca: tuple[Path, Path], extensions: str
) -> tuple[Path, Path]:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext,
        cwd=directory,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, a server and a client certificate from it, and a rogue CA and server."""
    directory = tmp_path_factory.mktemp("certs")
    server_ext = (
        "subjectAltName=IP:127.0.0.1,IP:::1,DNS:www.example.test\nextendedKeyUsage=serverAuth\n"
    )
    ca = _make_ca(directory, "ca")
    rogue = _make_ca(directory, "rogue-ca")
    server = _make_leaf(directory, "server", ca, server_ext)
    rogue_server = _make_leaf(directory, "rogue-server", rogue, server_ext)
    client = _make_leaf(directory, "client", ca, "extendedKeyUsage=clientAuth\n")
    return Certs(
        ca=ca[0],
        server_cert=server[0],
        server_key=server[1],
        rogue_ca=rogue[0],
        rogue_cert=rogue_server[0],
        rogue_key=rogue_server[1],
        client_cert=client[0],
        client_key=client[1],
    )


def close_quietly(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
