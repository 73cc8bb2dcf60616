"""The ``sip`` kind: one ``OPTIONS`` request (RFC 3261) over UDP, or TCP with
``options.tcp``, whose final response's status must be in ``options.status``.

Provisional responses (1xx) are skipped. Over UDP the socket is connected, so an
ICMP port unreachable is ``refused``, and only a response carrying our Call-ID counts.
Each request has a fresh branch, tag and Call-ID.

Details: ``"sip udp 10.0.0.2:5060: status 200 'OK'"``,
``"sip udp 10.0.0.2:5060: status 404 'Not Found', want 200-299"``,
``"sip tcp 10.0.0.2:5060: refused"``, ``"sip udp 10.0.0.2:5060: timeout after 1.0s"``,
``"sip tcp 10.0.0.2:5060: garbage 'HTTP/1.1 400'"``.
"""

from __future__ import annotations

import ipaddress
import re
import secrets

from lvsd.checks.base import ProbeResult, Target
from lvsd.checks.datagram import connected_udp, receive
from lvsd.checks.net import (
    LINE_LIMIT,
    Fail,
    Progress,
    Verdict,
    close_stream,
    echo,
    hostport,
    open_stream,
    read_line,
    run_timed,
)
from lvsd.checks.probe import ProbeBase
from lvsd.config.model import CheckSpec, SipOptions

#: Lines a TCP answer may have (headers of provisional responses included).
MAX_LINES = 500

_STATUS_LINE = re.compile(rb"SIP/2\.0 ([1-6]\d\d)(?: (.*))?$")


class SipProbe(ProbeBase[SipOptions]):
    """Ask the SIP server for its OPTIONS and judge the final response's status."""

    __slots__ = ("_where",)
    options_type = SipOptions
    kind = "sip"

    def __init__(self, spec: CheckSpec, target: Target) -> None:
        super().__init__(spec, target)
        transport = "tcp" if self._options.tcp else "udp"
        self._where = f"sip {transport} {hostport(self._target.address, self._port)}"

    async def probe(self) -> ProbeResult:
        progress = Progress(self._where)
        run = self._tcp if self._options.tcp else self._udp
        return await run_timed(self._spec.timeout, progress, lambda: run(progress))

    def _request(self, sockname: tuple[str, int], call_id: str) -> bytes:
        uri = f"sip:{hostport(self._target.address, self._port)}"
        local = hostport(ipaddress.ip_address(sockname[0]), sockname[1])
        transport = "TCP" if self._options.tcp else "UDP"
        lines = [
            f"OPTIONS {uri} SIP/2.0",
            f"Via: SIP/2.0/{transport} {local};branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: <sip:lvsd@{local}>;tag={secrets.token_hex(4)}",
            f"To: <{uri}>",
            f"Call-ID: {call_id}",
            "CSeq: 1 OPTIONS",
            "Accept: application/sdp",
            "User-Agent: lvsd",
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _judge(self, line: bytes) -> Verdict | None:
        """The verdict of a status line (None: provisional, keep waiting)."""
        match = _STATUS_LINE.match(line)
        if match is None:
            raise Fail(f"{self._where}: garbage {echo(line)}", "protocol")
        code = int(match.group(1))
        if code < 200:
            return None
        said = f"status {code} {echo(match.group(2) or b'')}"
        if not any(code in wanted for wanted in self._options.status):
            want = ", ".join(str(wanted) for wanted in self._options.status)
            return Verdict.fail(f"{self._where}: {said}, want {want}", "status")
        return Verdict(ok=True, detail=f"{self._where}: {said}")

    async def _udp(self, progress: Progress) -> Verdict:
        async with connected_udp(self._spec, self._target.address, self._port) as (
            transport,
            protocol,
        ):
            call_id = f"{secrets.token_hex(8)}@lvsd"
            transport.sendto(self._request(transport.get_extra_info("sockname"), call_id))
            while True:
                item = await receive(protocol)
                if call_id.encode() not in item:
                    continue  # not an answer to this request (Call-ID or its short form i:)
                verdict = self._judge(item.split(b"\r\n", 1)[0])
                if verdict is not None:
                    return verdict

    async def _tcp(self, progress: Progress) -> Verdict:
        reader, writer = await open_stream(
            self._spec, self._target.address, self._port, limit=LINE_LIMIT
        )
        try:
            call_id = f"{secrets.token_hex(8)}@lvsd"
            writer.write(self._request(writer.get_extra_info("sockname"), call_id))
            await writer.drain()
            in_head = False  # inside a provisional response's headers
            for _ in range(MAX_LINES):
                line = await read_line(reader, progress)
                if in_head:
                    in_head = line != b""
                    continue
                verdict = self._judge(line)
                if verdict is not None:
                    return verdict
                in_head = True
            raise Fail(f"{self._where}: no final response in {MAX_LINES} lines", "protocol")
        finally:
            close_stream(writer)
