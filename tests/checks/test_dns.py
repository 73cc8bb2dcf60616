"""The dns probe against a tiny loopback DNS server built from dnspython messages."""

from __future__ import annotations

import socket

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from lvsd.checks.dns import DnsProbe
from lvsd.config.model import DnsOptions
from lvsd.config.options import dns_problems
from tests.checks.conftest import TIMEOUT, DatagramHandler, Loopback, make_spec

ZONE = {
    ("www.example.", "A"): ["10.0.0.1", "10.0.0.2"],
    ("www.example.", "AAAA"): ["2001:db8::1"],
    ("alias.example.", "A"): ["10.0.0.7"],
}


def authority(
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR, *, wrong: bool = False, cname: bool = False
) -> DatagramHandler:
    """A DNS server answering from ZONE (or with 10.9.9.9 when ``wrong``)."""

    def answer(data: bytes) -> bytes | None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.set_rcode(rcode)
        question = query.question[0]
        name, rdtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
        if rcode == dns.rcode.NOERROR:
            if cname:
                response.answer.append(
                    dns.rrset.from_text(name, 60, "IN", "CNAME", "alias.example.")
                )
                name = "alias.example."
            values = ["10.9.9.9"] if wrong else ZONE.get((name, rdtype), [])
            if values:
                response.answer.append(dns.rrset.from_text_list(name, 60, "IN", rdtype, values))
        return response.to_wire()

    return answer


async def _run(
    net: Loopback, handler: DatagramHandler, options: DnsOptions
) -> tuple[bool, str, str]:
    port = await net.udp(handler)
    result = await DnsProbe(make_spec("dns", options), net.target(port)).probe()
    return result.ok, result.detail, result.reason


async def test_right_answer(net: Loopback) -> None:
    """NOERROR with the expected record is up; the detail lists the answers."""
    options = DnsOptions(name="www.example", expect=("10.0.0.2",))
    assert (True, "dns www.example. A: NOERROR, 10.0.0.1, 10.0.0.2", "ok") == await _run(
        net, authority(), options
    )


async def test_aaaa_compared_as_records(net: Loopback) -> None:
    """Expected answers are compared as records: 2001:db8:0::1 equals 2001:db8::1."""
    options = DnsOptions(name="www.example.", type="aaaa", expect=("2001:db8:0::1",))
    ok, detail, _ = await _run(net, authority(), options)
    assert (True, "dns www.example. AAAA: NOERROR, 2001:db8::1") == (ok, detail)


async def test_answer_through_cname(net: Loopback) -> None:
    """Records at the end of a CNAME chain count as answers."""
    options = DnsOptions(name="www.example.", expect=("10.0.0.7",))
    ok, detail, _ = await _run(net, authority(cname=True), options)
    assert ok, detail


async def test_wrong_answer(net: Loopback) -> None:
    """NOERROR with other records is down, saying what came and what was wanted."""
    options = DnsOptions(name="www.example.", expect=("10.0.0.1",))
    assert (False, "dns www.example. A: answer 10.9.9.9, want 10.0.0.1", "body") == await _run(
        net, authority(wrong=True), options
    )


async def test_empty_answer(net: Loopback) -> None:
    """NOERROR with no records while some are expected is down ('none')."""
    options = DnsOptions(name="nothing.example.", expect=("10.0.0.1",))
    assert (False, "dns nothing.example. A: answer none, want 10.0.0.1", "body") == await _run(
        net, authority(), options
    )


async def test_nxdomain(net: Loopback) -> None:
    """NXDOMAIN while NOERROR is wanted is down with reason 'status'."""
    options = DnsOptions(name="www.example.")
    assert (False, "dns www.example. A: rcode NXDOMAIN, want NOERROR", "status") == await _run(
        net, authority(dns.rcode.NXDOMAIN), options
    )


async def test_nxdomain_wanted(net: Loopback) -> None:
    """An expected NXDOMAIN (rcode = "NXDOMAIN") is up."""
    options = DnsOptions(name="gone.example.", rcode="NXDOMAIN")
    ok, detail, _ = await _run(net, authority(dns.rcode.NXDOMAIN), options)
    assert (True, "dns gone.example. A: NXDOMAIN, no answer") == (ok, detail)


async def test_servfail(net: Loopback) -> None:
    """SERVFAIL is down."""
    options = DnsOptions(name="www.example.")
    assert (False, "dns www.example. A: rcode SERVFAIL, want NOERROR", "status") == await _run(
        net, authority(dns.rcode.SERVFAIL), options
    )


async def test_no_answer_times_out(net: Loopback) -> None:
    """A server that never answers: timeout."""
    options = DnsOptions(name="www.example.")
    assert (False, f"dns www.example. A: timeout after {TIMEOUT}s", "timeout") == await _run(
        net, lambda data: None, options
    )


async def test_garbage_reply(net: Loopback) -> None:
    """A reply that is not DNS is a protocol error."""
    ok, detail, reason = await _run(net, lambda data: b"\x00\x01garbage", DnsOptions(name="a."))
    assert (False, "protocol") == (ok, reason)
    assert detail.startswith("dns a. A: bad reply: ")


async def test_refused(net: Loopback) -> None:
    """No DNS server bound: ICMP port unreachable, refused."""
    port = net.free_port(socket.SOCK_DGRAM)
    probe = DnsProbe(make_spec("dns", DnsOptions(name="a.")), net.target(port))
    result = await probe.probe()
    assert (False, "dns a. A: refused", "refused") == (result.ok, result.detail, result.reason)


async def test_source_port(net: Loopback) -> None:
    """`source`/`source_port` are where the server sees the query come from."""
    port = await net.udp(authority())
    source_port = net.free_port(socket.SOCK_DGRAM)
    spec = make_spec(
        "dns", DnsOptions(name="www.example."), source=net.host, source_port=source_port
    )
    result = await DnsProbe(spec, net.target(port)).probe()
    assert result.ok, result.detail
    assert [(net.host, source_port)] == net.peers


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (DnsOptions(name="www.example."), []),
        (DnsOptions(name="a.", type="BOGUS"), ["unknown type 'BOGUS'"]),
        (DnsOptions(name="a.", rcode="MAYBE"), ["unknown rcode 'MAYBE'"]),
        (
            DnsOptions(name="a.", expect=("not-an-ip",)),
            ["bad A answer 'not-an-ip': Text input is malformed."],
        ),
    ],
)
def test_problems(options: DnsOptions, expected: list[str]) -> None:
    """Bad options are named, so a config check can report them."""
    assert expected == dns_problems(options)


async def test_bad_options_fail_every_probe(net4: Loopback) -> None:
    """A probe built from bad options fails with the problem instead of raising."""
    probe = DnsProbe(make_spec("dns", DnsOptions(name="a.", type="BOGUS")), net4.target(53))
    result = await probe.probe()
    assert (False, "dns a. BOGUS: unknown type 'BOGUS'", "error") == (
        result.ok,
        result.detail,
        result.reason,
    )
