"""The ``dns`` kind: one query over UDP to the real server, checked for rcode and answers.

The query goes to the real server's address, on the check's ``port``, else the real
server's port, else 53. It asks ``options.name`` (made absolute) for ``options.type``
with recursion desired; the reply must carry ``options.rcode`` and, in its answer
section, every record of ``options.expect`` (compared as records, so ``::1`` equals
``0:0::1``).

Details: ``"dns www.example. A: rcode NXDOMAIN, want NOERROR"``,
``"dns www.example. A: answer 10.0.0.9, want 10.0.0.1"``,
``"dns www.example. A: timeout after 1.0s"``, ``"dns www.example. A: refused"``.
"""

from __future__ import annotations

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from lvsd.checks.base import ProbeResult, Target
from lvsd.checks.datagram import connected_udp, receive
from lvsd.checks.net import Fail, Progress, Verdict, run_timed
from lvsd.checks.probe import ProbeBase
from lvsd.config.model import CheckSpec, DnsOptions
from lvsd.config.options import dns_problems

DEFAULT_PORT = 53


class DnsProbe(ProbeBase[DnsOptions]):
    """Ask the real server one question and check its answer."""

    __slots__ = ("_expect", "_label", "_name", "_problem", "_rcode", "_rdtype")
    options_type = DnsOptions
    kind = "dns"

    def __init__(self, spec: CheckSpec, target: Target) -> None:
        super().__init__(spec, target)
        options = self._options
        self._port = spec.port if spec.port is not None else (target.port or DEFAULT_PORT)
        self._label = f"dns {options.name} {options.type}"
        problems = dns_problems(options)
        # A bad option fails every probe with a clear detail (the config loader does
        # not know DNS), instead of crashing whoever builds the probe.
        self._problem = "; ".join(problems) if problems else None
        self._name = dns.name.root
        self._rdtype = dns.rdatatype.A
        self._rcode = dns.rcode.NOERROR
        self._expect: frozenset[dns.rdata.Rdata] = frozenset()
        if not problems:
            self._name = dns.name.from_text(options.name)
            self._rdtype = dns.rdatatype.from_text(options.type)
            self._rcode = dns.rcode.from_text(options.rcode)
            self._expect = frozenset(
                dns.rdata.from_text(dns.rdataclass.IN, self._rdtype, text)
                for text in options.expect
            )
            self._label = f"dns {self._name} {dns.rdatatype.to_text(self._rdtype)}"

    async def probe(self) -> ProbeResult:
        progress = Progress(self._label)
        return await run_timed(self._spec.timeout, progress, self._run)

    async def _run(self) -> Verdict:
        if self._problem is not None:
            raise Fail(f"{self._label}: {self._problem}", "error")
        query = dns.message.make_query(self._name, self._rdtype, flags=dns.flags.RD)
        reply = await self._exchange(query)
        rcode = reply.rcode()
        if rcode != self._rcode:
            want = dns.rcode.to_text(self._rcode)
            raise Fail(f"{self._label}: rcode {dns.rcode.to_text(rcode)}, want {want}", "status")
        got: set[dns.rdata.Rdata] = set()
        for rrset in reply.answer:
            if rrset.rdtype == self._rdtype:  # at the name or at the end of its CNAMEs
                got.update(rrset)
        missing = self._expect - got
        if missing:
            seen = ", ".join(sorted(r.to_text() for r in got)) or "none"
            want = ", ".join(sorted(r.to_text() for r in missing))
            raise Fail(f"{self._label}: answer {seen}, want {want}", "body")
        answers = ", ".join(sorted(r.to_text() for r in got)) or "no answer"
        return Verdict(ok=True, detail=f"{self._label}: {dns.rcode.to_text(rcode)}, {answers}")

    async def _exchange(self, query: dns.message.Message) -> dns.message.Message:
        """Send ``query`` from a connected UDP socket (so an ICMP port unreachable is
        seen) and return the first reply that answers it."""
        async with connected_udp(self._spec, self._target.address, self._port) as (
            transport,
            protocol,
        ):
            transport.sendto(query.to_wire())
            while True:
                item = await receive(protocol)
                try:
                    reply = dns.message.from_wire(item)
                except dns.exception.DNSException as exc:
                    raise Fail(f"{self._label}: bad reply: {exc}", "protocol") from exc
                if query.is_response(reply):
                    return reply
                # Someone else's answer (another id or question): keep waiting.
