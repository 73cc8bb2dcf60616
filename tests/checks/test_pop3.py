"""The pop3 probe against scripted loopback POP3 servers."""

from __future__ import annotations

from tests.checks.conftest import Loopback
from tests.checks.handshakes import heard_by_now, run, scripted


async def test_ok_greeting_then_quit(net: Loopback) -> None:
    """``+OK`` is up, and the probe says QUIT."""
    heard: list[bytes] = []
    handler = scripted(b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n", heard)
    assert ("pop3: greeting +OK", "ok", True) == await run(net, "pop3", handler)
    assert b"QUIT\r\n" == await heard_by_now(heard)


async def test_err_is_down(net: Loopback) -> None:
    """``-ERR`` is down with the server's text."""
    assert ("pop3: greeting -ERR 'maintenance'", "status", False) == await run(
        net, "pop3", scripted(b"-ERR maintenance\r\n")
    )


async def test_not_pop3(net: Loopback) -> None:
    """An IMAP greeting on the POP3 port is garbage."""
    assert ("pop3: greeting: garbage '* OK imap'", "protocol", False) == await run(
        net, "pop3", scripted(b"* OK imap\r\n")
    )


async def test_closed_without_greeting(net: Loopback) -> None:
    """A server that closes at once fails naming the step."""
    assert (
        "pop3: greeting: connection closed without a reply",
        "protocol",
        False,
    ) == await run(net, "pop3", scripted(b"", hang_up=True))
