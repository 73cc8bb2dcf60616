"""The imap probe against scripted loopback IMAP servers."""

from __future__ import annotations

from lvsd.checks.imap import ImapProbe
from lvsd.config.model import HandshakeOptions
from tests.checks.conftest import TIMEOUT, Loopback, make_spec
from tests.checks.handshakes import heard_by_now, run, scripted


async def test_ok_greeting_then_logout(net: Loopback) -> None:
    """``* OK`` is up, and the probe logs out."""
    heard: list[bytes] = []
    handler = scripted(b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n", heard)
    assert ("imap: greeting OK", "ok", True) == await run(net, "imap", handler)
    assert b"a1 LOGOUT\r\n" == await heard_by_now(heard)


async def test_preauth_is_up(net: Loopback) -> None:
    """``* PREAUTH`` is a live server too."""
    assert ("imap: greeting PREAUTH", "ok", True) == await run(
        net, "imap", scripted(b"* PREAUTH hi\r\n")
    )


async def test_bye_is_down(net: Loopback) -> None:
    """``* BYE`` (the server refuses the connection) is down with its text."""
    assert ("imap: greeting * BYE 'too many connections'", "status", False) == await run(
        net, "imap", scripted(b"* BYE too many connections\r\n")
    )


async def test_not_imap(net: Loopback) -> None:
    """A POP3 greeting on the IMAP port is garbage."""
    assert ("imap: greeting: garbage '+OK ready'", "protocol", False) == await run(
        net, "imap", scripted(b"+OK ready\r\n")
    )


async def test_silent_server_times_out(net: Loopback) -> None:
    """A server that never greets fails at the greeting step."""
    assert (f"imap: greeting: timeout after {TIMEOUT}s", "timeout", False) == await run(
        net, "imap", net.hang_handler()
    )


async def test_refused(net: Loopback) -> None:
    """Nobody listening: the connect step is refused."""
    port = net.free_port()
    result = await ImapProbe(make_spec("imap", HandshakeOptions()), net.target(port)).probe()
    assert (False, "refused") == (result.ok, result.reason)
    assert f"imap: connect {net.target(port)}: refused" == result.detail
