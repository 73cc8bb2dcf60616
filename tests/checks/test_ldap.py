"""The ldap probe against scripted loopback servers answering a bind with BER."""

from __future__ import annotations

from lvsd.checks.ldap import BIND_REQUEST, UNBIND_REQUEST
from tests.checks.conftest import Loopback
from tests.checks.handshakes import heard_by_now, run, scripted


def _tlv(tag: int, content: bytes) -> bytes:
    """A BER element, with the long length form past 127 bytes."""
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    size = len(content).to_bytes(2, "big")
    return bytes([tag, 0x82]) + size + content


def _bind_response(code: int, diagnostic: bytes = b"", message_id: int = 1) -> bytes:
    op = _tlv(0x0A, bytes([code])) + _tlv(0x04, b"") + _tlv(0x04, diagnostic)
    return _tlv(0x30, _tlv(0x02, bytes([message_id])) + _tlv(0x61, op))


async def test_anonymous_bind_success_then_unbind(net: Loopback) -> None:
    """A BindResponse with success is up; the probe sent a bind and then an unbind."""
    heard: list[bytes] = []
    handler = scripted(_bind_response(0), heard, first=len(BIND_REQUEST))
    assert ("ldap: bind success", "ok", True) == await run(net, "ldap", handler)
    assert BIND_REQUEST + UNBIND_REQUEST == await heard_by_now(heard, want=2)


async def test_long_form_length(net: Loopback) -> None:
    """A response whose length takes the long form (a long diagnostic) is read whole."""
    says = _bind_response(0, b"x" * 300)
    assert ("ldap: bind success", "ok", True) == await run(
        net, "ldap", scripted(says, first=len(BIND_REQUEST))
    )


async def test_refused_bind_is_down(net: Loopback) -> None:
    """A bind refused (unwillingToPerform) is down naming the result and the reason."""
    says = _bind_response(53, b"anonymous bind disallowed")
    assert (
        "ldap: bind result 53 (unwillingToPerform): 'anonymous bind disallowed'",
        "status",
        False,
    ) == await run(net, "ldap", scripted(says, first=len(BIND_REQUEST)))


async def test_not_ldap(net: Loopback) -> None:
    """Text is garbage; a BER message that is no BindResponse is a bad response."""
    assert ("ldap: answer: garbage 'HT'", "protocol", False) == await run(
        net, "ldap", scripted(b"HTTP/1.0 400 Bad\r\n\r\n", first=len(BIND_REQUEST))
    )
    search_done = _tlv(0x30, _tlv(0x02, b"\x01") + _tlv(0x65, _tlv(0x0A, b"\x00")))
    detail, reason, ok = await run(net, "ldap", scripted(search_done, first=len(BIND_REQUEST)))
    assert ("ldap: answer: bad BindResponse: tag 0x65, want a BindResponse (0x61)", "protocol") == (
        detail,
        reason,
    )
    assert not ok
