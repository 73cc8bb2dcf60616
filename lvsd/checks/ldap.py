"""The ``ldap`` kind: an anonymous simple bind (LDAPv3, empty name and password),
which must get a BindResponse with result ``success``; then an unbind. The BER of
the two requests is fixed; the response is read with a minimal BER reader (tags and
definite lengths only, which is all LDAP allows).

Details: ``"ldap: bind success"``, ``"ldap: bind result 53 (unwillingToPerform):
'anonymous bind disallowed'"``, ``"ldap: answer: garbage ..."``.
"""

from __future__ import annotations

import asyncio

from lvsd.checks.handshake import HandshakeProbe
from lvsd.checks.net import Fail, Progress, echo

#: messageID 1, BindRequest: version 3, name "", simple authentication "".
BIND_REQUEST = bytes.fromhex("300c020101600702010304008000")
#: messageID 2, UnbindRequest.
UNBIND_REQUEST = bytes.fromhex("30050201024200")
#: The largest response we read.
MAX_MESSAGE = 1 << 16

_SEQUENCE, _BIND_RESPONSE, _INTEGER, _ENUMERATED, _OCTETS = 0x30, 0x61, 0x02, 0x0A, 0x04
#: Result code names (RFC 4511) shown in details.
RESULTS = {
    0: "success", 1: "operationsError", 2: "protocolError", 7: "authMethodNotSupported",
    8: "strongerAuthRequired", 13: "confidentialityRequired", 48: "inappropriateAuthentication",
    49: "invalidCredentials", 50: "insufficientAccessRights", 51: "busy", 52: "unavailable",
    53: "unwillingToPerform", 80: "other",
}  # fmt: skip


class LdapProbe(HandshakeProbe):
    """Bind anonymously and unbind."""

    __slots__ = ()
    kind = "ldap"
    reading = "answer"
    hello = BIND_REQUEST
    goodbye = UNBIND_REQUEST

    async def judge(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, progress: Progress
    ) -> str:
        head = await reader.readexactly(2)
        if head[0] != _SEQUENCE:
            raise Fail(f"{progress.step}: garbage {echo(head)}", "protocol")
        length = head[1]
        if length & 0x80:  # long form: the next (length & 0x7f) bytes hold the length
            size = length & 0x7F
            if not 1 <= size <= 4:
                raise Fail(f"{progress.step}: bad BER length", "protocol")
            length = int.from_bytes(await reader.readexactly(size), "big")
        if length > MAX_MESSAGE:
            raise Fail(f"{progress.step}: response of {length} bytes", "protocol")
        body = await reader.readexactly(length)
        try:
            code, diagnostic = _bind_result(body)
        except (ValueError, IndexError) as exc:
            raise Fail(f"{progress.step}: bad BindResponse: {exc}", "protocol") from exc
        if code != 0:
            name = RESULTS.get(code, "unknown")
            text = f": {echo(diagnostic)}" if diagnostic else ""
            raise Fail(f"ldap: bind result {code} ({name}){text}", "status")
        return "ldap: bind success"


def _tlv(data: bytes, at: int) -> tuple[int, bytes, int]:
    """(tag, content, offset after) of the BER element at ``at``."""
    tag, length = data[at], data[at + 1]
    at += 2
    if length & 0x80:
        size = length & 0x7F
        if not 1 <= size <= 4:
            raise ValueError("bad length")
        length = int.from_bytes(data[at : at + size], "big")
        at += size
    content = data[at : at + length]
    if len(content) != length:
        raise ValueError("element cut short")
    return tag, content, at + length


def _bind_result(message: bytes) -> tuple[int, bytes]:
    """(resultCode, diagnosticMessage) of an LDAPMessage holding a BindResponse."""
    tag, _, at = _tlv(message, 0)
    if tag != _INTEGER:
        raise ValueError("no messageID")
    tag, op, _ = _tlv(message, at)
    if tag != _BIND_RESPONSE:
        raise ValueError(f"tag 0x{tag:02x}, want a BindResponse (0x61)")
    tag, code, at = _tlv(op, 0)
    if tag != _ENUMERATED or not code:
        raise ValueError("no resultCode")
    diagnostic = b""
    tag, _, at = _tlv(op, at)  # matchedDN
    if tag == _OCTETS and at < len(op):
        tag, diagnostic, _ = _tlv(op, at)
    return int.from_bytes(code, "big"), diagnostic
