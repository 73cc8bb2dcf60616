"""Tiny protocol servers for the lab's probe scenario: one process serves every kind,
each listener in the network namespace it names.

Each server answers as its protocol's real server would, just enough for lvsd's probe
of that kind, and can be switched, through a control socket, to a broken answer or off
(its listener closed, so connections are refused and datagrams draw an ICMP port
unreachable)::

    $LAB_PYTHON -m lab.protocols CONTROL_SOCKET NAME=KIND@NETNS/ADDRESS:PORT ...

``KIND`` is one of :data:`KINDS`; a ``NETNS`` of ``-`` means this process's own
namespace. A line ``NAME MODE`` sent to the control socket sets a server's mode and is
answered ``ok`` once applied: ``up`` (the default), ``bad`` (a broken answer), ``off``;
for ``agent`` and ``weight`` servers any other mode is the line they answer (``50%``,
``drain``, ``7``). ``https`` servers take ``cert=CHAIN,key=KEY`` after the port
(``...:443,cert=/run/pki/a.pem,key=/run/pki/a.key``).

One asyncio process rather than one per namespace: Python starts slowly in the guest.
A listener is made in its namespace by ``setns(2)`` around the socket's creation (a
socket keeps the namespace it was made in).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import os
import socket
import ssl
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

CLONE_NEWNET = 0x40000000
#: Kinds spoken over UDP; the others over TCP.
DATAGRAM = frozenset({"dns", "udp", "sip", "radius"})
KINDS = frozenset(
    {"http", "https", "agent", "weight", "smtp", "imap", "pop3", "ftp", "mysql", "pgsql", "ldap"}
    | DATAGRAM
)
#: The RADIUS secret the lab's director is known by.
RADIUS_SECRET = b"lab-secret"


@dataclass(slots=True, kw_only=True)
class Server:
    """One listener: where, which protocol, and its current mode."""

    name: str
    kind: str
    netns: str
    address: str
    port: int
    cert: str = ""
    key: str = ""
    mode: str = "up"
    closer: Callable[[], None] | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str) -> Server:
        """``NAME=KIND@NETNS/ADDRESS:PORT[,cert=..,key=..]``."""
        name, _, rest = text.partition("=")
        kind, _, rest = rest.partition("@")
        netns, _, rest = rest.partition("/")
        where, *extra = rest.split(",")
        address, _, port = where.rpartition(":")
        options = dict(item.partition("=")[::2] for item in extra)
        if kind not in KINDS:
            raise ValueError(f"{text}: unknown kind {kind!r}")
        return cls(
            name=name,
            kind=kind,
            netns=netns,
            address=address,
            port=int(port),
            cert=options.get("cert", ""),
            key=options.get("key", ""),
        )


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


@contextlib.contextmanager
def namespace(name: str) -> Any:
    """Run the block in network namespace ``name`` (``-``: stay), then come back."""
    if name == "-":
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(there)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(there)
        os.close(home)


def _socket(server: Server) -> socket.socket:
    kind = socket.SOCK_DGRAM if server.kind in DATAGRAM else socket.SOCK_STREAM
    family = socket.AF_INET6 if ":" in server.address else socket.AF_INET
    with namespace(server.netns):
        sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((server.address, server.port))
    if kind == socket.SOCK_STREAM:
        sock.listen(128)
    sock.setblocking(False)
    return sock


# --- answers --------------------------------------------------------------------------

#: Greeting-only protocols: (good, broken) greeting; the client's next line (a
#: goodbye) is answered by the third element.
GREETINGS = {
    "smtp": (b"220 lab ESMTP\r\n", b"554 5.3.2 not now\r\n", b"221 bye\r\n"),
    "imap": (b"* OK lab IMAP ready\r\n", b"* BYE too many connections\r\n", b"* BYE\r\na1 OK\r\n"),
    "pop3": (b"+OK lab POP3\r\n", b"-ERR maintenance\r\n", b"+OK bye\r\n"),
    "ftp": (b"220 lab FTP\r\n", b"421 too busy\r\n", b"221 bye\r\n"),
}


def mysql_packet(payload: bytes, sequence: int = 0) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([sequence]) + payload


MYSQL_HANDSHAKE = mysql_packet(
    b"\x0a" + b"8.0.36-lab\0" + struct.pack("<I", 7) + b"abcdefgh\0" + struct.pack("<H", 0xF7FF)
    + b"\x21" + struct.pack("<H", 2) + struct.pack("<H", 0x81FF) + b"\x15" + bytes(10)
    + b"ijklmnopqrst\0" + b"mysql_native_password\0"
)  # fmt: skip
MYSQL_ERROR = mysql_packet(b"\xff" + struct.pack("<H", 1040) + b"#08004Too many connections")
PGSQL_ERROR_BODY = b"SFATAL\0C57P03\0Mthe database system is starting up\0\0"
PGSQL_ERROR = b"E" + struct.pack("!I", 4 + len(PGSQL_ERROR_BODY)) + PGSQL_ERROR_BODY


def ldap_bind_response(code: int, message_id: int = 1) -> bytes:
    """An LDAPMessage holding a BindResponse with ``code`` (all lengths short form)."""
    diagnostic = b"" if code == 0 else b"lab says no"
    op = b"\x0a\x01" + bytes([code]) + b"\x04\x00" + b"\x04" + bytes([len(diagnostic)]) + diagnostic
    body = b"\x02\x01" + bytes([message_id]) + b"\x61" + bytes([len(op)]) + op
    return b"\x30" + bytes([len(body)]) + body


async def _http(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    body = f"{server.name}\n".encode()
    writer.write(
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


async def _stream(
    server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Serve one connection as ``server``'s protocol in its current mode."""
    bad = server.mode == "bad"
    kind = server.kind
    if kind in ("http", "https"):
        await _http(server, reader, writer)
    elif kind in ("agent", "weight"):
        writer.write(f"{server.mode}\n".encode())
    elif kind in GREETINGS:
        good, broken, goodbye = GREETINGS[kind]
        writer.write(broken if bad else good)
        await writer.drain()
        if not bad:
            while (line := await reader.readline()) and not line.upper().startswith(b"EHLO"):
                if line.upper().startswith((b"QUIT", b"A1 LOGOUT")):
                    writer.write(goodbye)
                    return
            if line:  # EHLO
                writer.write(b"250 lab\r\n")
                await writer.drain()
                await reader.readline()
                writer.write(goodbye)
    elif kind == "mysql":
        writer.write(MYSQL_ERROR if bad else MYSQL_HANDSHAKE)
    elif kind == "pgsql":
        await reader.readexactly(8)  # the SSLRequest
        writer.write(PGSQL_ERROR if bad else b"N")
    elif kind == "ldap":
        request = await reader.read(4096)
        message_id = request[4] if len(request) > 4 else 1
        writer.write(ldap_bind_response(53 if bad else 0, message_id))
    await writer.drain()


def _datagram(server: Server, data: bytes) -> bytes | None:
    """The answer to one datagram in ``server``'s current mode (None: no answer)."""
    bad = server.mode == "bad"
    if server.kind == "udp":
        return b"nope" if bad else b"PONG"
    if server.kind == "dns":
        return _dns(server, data, bad)
    if server.kind == "sip":
        return _sip(data, bad)
    return _radius(data, bad)


def _dns(server: Server, query: bytes, bad: bool) -> bytes:
    """An answer to a one-question query: an A record of the server's own address, or
    SERVFAIL when broken."""
    ident, flags = struct.unpack_from("!HH", query)
    end = 12
    while query[end]:
        end += query[end] + 1
    question = query[12 : end + 5]
    rcode = 2 if bad else 0
    head = struct.pack("!HHHHHH", ident, 0x8000 | 0x0400 | (flags & 0x0100) | 0x80 | rcode, 1,
                       0 if bad else 1, 0, 0)  # fmt: skip
    if bad:
        return head + question
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(server.address)
    return head + question + answer


def _sip(request: bytes, bad: bool) -> bytes:
    """A final response to an OPTIONS request, echoing its dialog headers."""
    keep = [
        line
        for line in request.split(b"\r\n")
        if line.split(b":", 1)[0].strip().lower() in (b"via", b"from", b"to", b"call-id", b"cseq")
    ]
    status = b"SIP/2.0 503 Service Unavailable" if bad else b"SIP/2.0 200 OK"
    return b"\r\n".join([status, *keep, b"Content-Length: 0", b"", b""])


def _radius(request: bytes, bad: bool) -> bytes:
    """Access-Accept (Access-Reject when broken) with a Response Authenticator made with
    :data:`RADIUS_SECRET` (RFC 2865, 3)."""
    code = 3 if bad else 2
    identifier, authenticator = request[1], request[4:20]
    head = bytes([code, identifier]) + struct.pack("!H", 20)
    digest = hashlib.md5(head + authenticator + RADIUS_SECRET, usedforsecurity=False).digest()
    return head + digest


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(Exception):  # a malformed datagram gets no answer
            answer = _datagram(self.server, data)
            if answer is not None and self.transport is not None:
                self.transport.sendto(answer, addr)


# --- serving --------------------------------------------------------------------------


async def start(server: Server) -> None:
    """Open ``server``'s listener (it stays open until :func:`stop`)."""
    sock = _socket(server)
    loop = asyncio.get_running_loop()
    if server.kind in DATAGRAM:
        transport, _ = await loop.create_datagram_endpoint(lambda: _Datagrams(server), sock=sock)
        server.closer = transport.close
        return
    context = None
    if server.kind == "https":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(server.cert, server.key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                await _stream(server, reader, writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError, ValueError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, sock=sock, ssl=context)
    server.closer = listener.close


def stop(server: Server) -> None:
    if server.closer is not None:
        server.closer()
        server.closer = None


async def set_mode(server: Server, mode: str) -> None:
    if mode == "off":
        stop(server)
        return
    server.mode = mode
    if server.closer is None:
        await start(server)


async def serve(control: str, servers: Sequence[Server]) -> None:
    by_name = {s.name: s for s in servers}
    for server in servers:
        await start(server)

    async def command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            name, _, mode = line.decode().strip().partition(" ")
            try:
                await set_mode(by_name[name], mode)
                writer.write(b"ok\n")
            except (KeyError, OSError) as exc:
                writer.write(f"error {exc!r}\n".encode())
            await writer.drain()
        writer.close()

    with contextlib.suppress(FileNotFoundError):
        os.unlink(control)
    listener = await asyncio.start_unix_server(command, control)
    try:
        async with listener:
            await listener.serve_forever()
    finally:
        for server in servers:
            stop(server)


class Control:
    """The driver's side of the control socket (blocking)."""

    def __init__(self, path: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._file = self._sock.makefile("rwb")

    def set(self, name: str, mode: str) -> None:
        self._file.write(f"{name} {mode}\n".encode())
        self._file.flush()
        answer = self._file.readline()
        if answer != b"ok\n":
            raise RuntimeError(f"set {name} {mode}: {answer!r}")

    def close(self) -> None:
        self._file.close()
        self._sock.close()


def main(argv: Sequence[str]) -> int:
    control, *specs = argv
    asyncio.run(serve(control, [Server.parse(s) for s in specs]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
