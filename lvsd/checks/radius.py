"""The ``radius`` kind: one Status-Server request (RFC 5997) over UDP, signed with
``options.secret`` (its Message-Authenticator), which must get an Access-Accept (an
authentication port) or an Accounting-Response (an accounting port) whose Response
Authenticator proves the server knows the same secret.

A server that does not support Status-Server, or has another secret, drops the
request silently: that is a timeout. The socket is connected, so an ICMP port
unreachable is ``refused``.

Details: ``"radius 10.0.0.2:1812: Access-Accept"``,
``"radius 10.0.0.2:1812: Access-Reject, want Access-Accept or Accounting-Response"``,
``"radius 10.0.0.2:1812: bad response authenticator (another secret?)"``,
``"radius 10.0.0.2:1812: timeout after 1.0s"``, ``"radius 10.0.0.2:1812: refused"``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from lvsd.checks.base import ProbeResult
from lvsd.checks.datagram import connected_udp, receive
from lvsd.checks.net import Fail, Progress, Verdict, hostport, run_timed
from lvsd.checks.probe import ProbeBase
from lvsd.config.model import RadiusOptions

STATUS_SERVER = 12
ACCESS_ACCEPT, ACCESS_REJECT, ACCOUNTING_RESPONSE = 2, 3, 5
MESSAGE_AUTHENTICATOR = 80
NAS_IDENTIFIER = 32
CODES = {ACCESS_ACCEPT: "Access-Accept", ACCESS_REJECT: "Access-Reject", 5: "Accounting-Response"}
_HEADER = struct.Struct("!BBH16s")  # code, identifier, length, authenticator


def status_server(secret: bytes, identifier: int, authenticator: bytes) -> bytes:
    """A Status-Server packet with NAS-Identifier "lvsd" and its Message-Authenticator."""
    nas = bytes([NAS_IDENTIFIER, 6]) + b"lvsd"
    attributes = nas + bytes([MESSAGE_AUTHENTICATOR, 18]) + bytes(16)
    header = _HEADER.pack(STATUS_SERVER, identifier, _HEADER.size + len(attributes), authenticator)
    signature = hmac.new(secret, header + attributes, hashlib.md5).digest()
    return header + attributes[:-16] + signature


def response_authenticator(response: bytes, request_authenticator: bytes, secret: bytes) -> bytes:
    """What the Response Authenticator of ``response`` must be (RFC 2865, 3)."""
    return hashlib.md5(
        response[:4] + request_authenticator + response[_HEADER.size :] + secret,
        usedforsecurity=False,
    ).digest()


class RadiusProbe(ProbeBase[RadiusOptions]):
    """Ask the RADIUS server for its status."""

    __slots__ = ()
    options_type = RadiusOptions
    kind = "radius"

    async def probe(self) -> ProbeResult:
        where = f"radius {hostport(self._target.address, self._port)}"
        progress = Progress(where)
        return await run_timed(self._spec.timeout, progress, lambda: self._run(where))

    async def _run(self, where: str) -> Verdict:
        secret = self._options.secret.encode()
        identifier = os.urandom(1)[0]
        authenticator = os.urandom(16)
        async with connected_udp(self._spec, self._target.address, self._port) as (
            transport,
            protocol,
        ):
            transport.sendto(status_server(secret, identifier, authenticator))
            while True:
                item = await receive(protocol)
                if len(item) < _HEADER.size or item[1] != identifier:
                    continue  # not an answer to this request
                code, _, length, got = _HEADER.unpack_from(item)
                if length > len(item) or length < _HEADER.size:
                    raise Fail(f"{where}: bad length {length} of {len(item)} bytes", "protocol")
                response = item[:length]
                if got != response_authenticator(response, authenticator, secret):
                    raise Fail(f"{where}: bad response authenticator (another secret?)", "protocol")
                name = CODES.get(code, f"code {code}")
                if code not in (ACCESS_ACCEPT, ACCOUNTING_RESPONSE):
                    want = "want Access-Accept or Accounting-Response"
                    raise Fail(f"{where}: {name}, {want}", "status")
                return Verdict(ok=True, detail=f"{where}: {name}")
