"""The mysql probe against scripted loopback servers sending MySQL's first packet."""

from __future__ import annotations

import asyncio

from lvsd.checks.mysql import auth_plugin
from lvsd.config.model import MysqlOptions
from tests.checks.conftest import Loopback, StreamHandler
from tests.checks.handshakes import heard_by_now, run, scripted


def _packet(payload: bytes, sequence: int = 0) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([sequence]) + payload


#: The start of a real protocol 10 handshake (version, thread id, salt, capabilities...).
HANDSHAKE = (
    b"\x0a8.0.36-0ubuntu0.22.04.1\x00\x0b\x00\x00\x00abcdefgh\x00\xff\xff\xff\x02\x00"
    b"\xff\xdf\x15\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00ijklmnopqrst\x00"
    b"caching_sha2_password\x00"
)


async def test_handshake_is_up_and_nothing_is_sent(net: Loopback) -> None:
    """A protocol 10 handshake is up, naming the server version; the probe sends
    nothing (it only closes)."""
    heard: list[bytes] = []
    assert ("mysql: handshake v10, server 8.0.36-0ubuntu0.22.04.1", "ok", True) == await run(
        net, "mysql", scripted(_packet(HANDSHAKE), heard)
    )
    assert b"" == await heard_by_now(heard, want=0)


async def test_error_packet_is_down(net: Loopback) -> None:
    """An error packet (too many connections) is down with its code and message."""
    says = _packet(b"\xff\x10\x04Too many connections")
    assert ("mysql: error 1040: Too many connections", "status", False) == await run(
        net, "mysql", scripted(says)
    )


async def test_error_packet_with_sql_state(net: Loopback) -> None:
    """An error packet with a SQL state marker shows the message without it."""
    says = _packet(b"\xff\x69\x04#HY000Host '10.0.0.1' is blocked")
    assert ("mysql: error 1129: Host '10.0.0.1' is blocked", "status", False) == await run(
        net, "mysql", scripted(says)
    )


async def test_other_protocol_version(net: Loopback) -> None:
    """Protocol 9 (or anything but 10) is not accepted."""
    assert ("mysql: protocol version 9, want 10", "protocol", False) == await run(
        net, "mysql", scripted(_packet(b"\x093.22\x00"))
    )


async def test_not_mysql(net: Loopback) -> None:
    """Text that is no packet (an SMTP banner: a huge length) is garbage; a packet
    cut short is a closed connection."""
    assert ("mysql: greeting: garbage '220 '", "protocol", False) == await run(
        net, "mysql", scripted(b"220 mx ESMTP\r\n")
    )
    assert ("mysql: greeting: connection closed by peer", "reset", False) == await run(
        net, "mysql", scripted(_packet(HANDSHAKE)[:20], hang_up=True)
    )


def _login_server(replies: list[bytes], heard: list[bytes]) -> StreamHandler:
    """Sends the handshake, then answers each packet the client sends with the next
    of ``replies`` (framed with the next sequence number); keeps the payloads heard."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_packet(HANDSHAKE))
        await writer.drain()
        pending = list(replies)
        while header := await reader.read(4):
            length = int.from_bytes(header[:3], "little")
            heard.append(await reader.readexactly(length) if length else b"")
            if pending:
                writer.write(_packet(pending.pop(0), header[3] + 1))
                await writer.drain()

    return handler


OK = b"\x00\x00\x00\x02\x00\x00\x00"


async def test_login_as_user_then_quit(net: Loopback) -> None:
    """With a user, the probe answers the handshake as that user with an empty
    password and the server's plugin, gets OK and says COM_QUIT."""
    heard: list[bytes] = []
    detail = await run(net, "mysql", _login_server([OK], heard), MysqlOptions(user="lvsd"))
    assert ("mysql: handshake v10, server 8.0.36-0ubuntu0.22.04.1, login as 'lvsd' ok",
            "ok", True) == detail  # fmt: skip
    response = await heard_by_now(heard, want=2)
    capabilities = int.from_bytes(response[:4], "little")
    assert 0x200 == capabilities & 0x200  # CLIENT_PROTOCOL_41
    assert response[32:].startswith(b"lvsd\x00\x00caching_sha2_password\x00")
    assert response.endswith(b"\x01")  # COM_QUIT, its own packet after the login


async def test_auth_switch_is_answered(net: Loopback) -> None:
    """An authentication switch request gets the empty password, then OK is up."""
    heard: list[bytes] = []
    switch = b"\xfemysql_native_password\x00" + b"x" * 20 + b"\x00"
    detail, _, ok = await run(
        net, "mysql", _login_server([switch, OK], heard), MysqlOptions(user="lvsd")
    )
    assert ok, detail
    await heard_by_now(heard, want=3)
    assert [b"", b"\x01"] == heard[1:]  # the empty password, then COM_QUIT


async def test_login_refused_is_down(net: Loopback) -> None:
    """An error after the login (no such user) is down with the server's message."""
    denied = b"\xff\x15\x04#28000Access denied for user 'lvsd'@'127.0.0.1'"
    assert (
        "mysql: login as 'lvsd': error 1045: Access denied for user 'lvsd'@'127.0.0.1'",
        "status",
        False,
    ) == await run(net, "mysql", _login_server([denied], []), MysqlOptions(user="lvsd"))


def test_auth_plugin_of_handshakes() -> None:
    """The plugin is read from a full handshake; a short one means the default."""
    assert b"caching_sha2_password" == auth_plugin(HANDSHAKE)
    assert b"mysql_native_password" == auth_plugin(b"\x0a5.0.1\x00" + bytes(15))
