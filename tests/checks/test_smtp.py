"""The smtp probe against loopback mail servers that behave and misbehave."""

from __future__ import annotations

import asyncio

from lvsd.checks.smtp import SmtpProbe
from lvsd.config.model import SmtpOptions
from tests.checks.conftest import TIMEOUT, Loopback, StreamHandler, make_spec


def _mail_server(
    net: Loopback,
    banner: bytes,
    ehlo_reply: bytes = b"250 ok\r\n",
    heard: list[bytes] | None = None,
) -> StreamHandler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner)
        await writer.drain()
        while line := await reader.readline():
            if heard is not None:
                heard.append(line)
            if line.startswith(b"EHLO"):
                writer.write(ehlo_reply)
            elif line.startswith(b"QUIT"):
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            await writer.drain()

    return handler


async def _run(
    net: Loopback, handler: StreamHandler, options: SmtpOptions
) -> tuple[str, str, bool]:
    port = await net.tcp(handler)
    result = await SmtpProbe(make_spec("smtp", options), net.target(port)).probe()
    return result.detail, result.reason, result.ok


async def test_banner_ok_and_quit(net: Loopback) -> None:
    """A 220 banner is up; the probe says QUIT before leaving."""
    heard: list[bytes] = []
    handler = _mail_server(net, b"220 mx.example ESMTP\r\n", heard=heard)
    assert ("smtp: banner 220", "ok", True) == await _run(net, handler, SmtpOptions())
    for _ in range(50):
        if heard:
            break
        await asyncio.sleep(0.01)
    assert [b"QUIT\r\n"] == heard


async def test_multiline_banner_and_ehlo(net: Loopback) -> None:
    """A multi-line 220 banner and a multi-line 250 EHLO reply are both read whole."""
    heard: list[bytes] = []
    handler = _mail_server(
        net,
        b"220-mx.example ESMTP\r\n220-no spam\r\n220 ready\r\n",
        b"250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
        heard,
    )
    detail = await _run(net, handler, SmtpOptions(helo="lvsd.example"))
    assert ("smtp: banner 220, EHLO 250", "ok", True) == detail
    assert b"EHLO lvsd.example\r\n" == heard[0]


async def test_banner_554(net: Loopback) -> None:
    """A 554 banner (service refused) is down."""
    handler = _mail_server(net, b"554 go away\r\n")
    assert ("smtp: banner 554, want 220", "status", False) == await _run(
        net, handler, SmtpOptions()
    )


async def test_ehlo_rejected(net: Loopback) -> None:
    """An EHLO answered 550 is down."""
    handler = _mail_server(net, b"220 hi\r\n", b"550 no\r\n")
    assert ("smtp: EHLO 550, want 250", "status", False) == await _run(
        net, handler, SmtpOptions(helo="lvsd")
    )


async def test_garbage_banner(net: Loopback) -> None:
    """Something that is not SMTP is a protocol error echoing what came."""
    handler = _mail_server(net, b"SSH-2.0-OpenSSH_9.6\r\n")
    assert ("smtp: banner: garbage 'SSH-2.0-OpenSSH_9.6'", "protocol", False) == await _run(
        net, handler, SmtpOptions()
    )


async def test_closed_mid_banner(net: Loopback) -> None:
    """A server that closes in the middle of a multi-line banner fails."""

    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220-first line\r\n")
        await writer.drain()

    assert (
        "smtp: banner: connection closed without a reply",
        "protocol",
        False,
    ) == await _run(net, closing, SmtpOptions())


async def test_silent_server(net: Loopback) -> None:
    """A server that never greets times out in the banner step."""
    assert (f"smtp: banner: timeout after {TIMEOUT}s", "timeout", False) == await _run(
        net, net.hang_handler(), SmtpOptions()
    )


async def test_refused(net: Loopback) -> None:
    """Nothing listening: refused."""
    port = net.free_port()
    result = await SmtpProbe(make_spec("smtp", SmtpOptions()), net.target(port)).probe()
    assert not result.ok
    assert "refused" == result.reason
    assert result.detail.endswith(f":{port}: refused")
