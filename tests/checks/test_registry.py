"""The registry from kind to probe class, and what every kind owes: no file
descriptor left behind, whatever the server did."""

from __future__ import annotations

import asyncio
import os

import pytest

from lvsd.checks.agent import AgentProbe
from lvsd.checks.dns import DnsProbe
from lvsd.checks.exec import ExecProbe
from lvsd.checks.ftp import FtpProbe
from lvsd.checks.http import HttpProbe
from lvsd.checks.icmp import IcmpProbe
from lvsd.checks.imap import ImapProbe
from lvsd.checks.ldap import LdapProbe
from lvsd.checks.mysql import MysqlProbe
from lvsd.checks.net import connector
from lvsd.checks.pgsql import PgsqlProbe
from lvsd.checks.pop3 import Pop3Probe
from lvsd.checks.radius import RadiusProbe
from lvsd.checks.registry import PROBES, make_probe
from lvsd.checks.sip import SipProbe
from lvsd.checks.smtp import SmtpProbe
from lvsd.checks.tcp import ConnectProbe, TcpProbe
from lvsd.checks.udp import UdpProbe
from lvsd.config.model import (
    CHECK_KINDS,
    AgentOptions,
    CheckOptions,
    DnsOptions,
    ExecOptions,
    HandshakeOptions,
    HttpOptions,
    IcmpOptions,
    MysqlOptions,
    RadiusOptions,
    SipOptions,
    SmtpOptions,
    TcpOptions,
    UdpOptions,
)
from tests.checks.conftest import Loopback, make_spec


def test_every_config_kind_has_a_probe() -> None:
    """Every kind the config accepts has a probe class, and no other kinds exist."""
    assert set(CHECK_KINDS) == set(PROBES)


@pytest.mark.parametrize(
    ("kind", "options", "cls"),
    [
        ("tcp", TcpOptions(), ConnectProbe),
        ("tcp", TcpOptions(expect=b"+OK"), TcpProbe),
        ("http", HttpOptions(), HttpProbe),
        ("https", HttpOptions(tls=True), HttpProbe),
        ("exec", ExecOptions(command=("/bin/true",)), ExecProbe),
        ("dns", DnsOptions(name="a."), DnsProbe),
        ("smtp", SmtpOptions(), SmtpProbe),
        ("agent", AgentOptions(), AgentProbe),
        ("udp", UdpOptions(), UdpProbe),
        ("imap", HandshakeOptions(), ImapProbe),
        ("pop3", HandshakeOptions(), Pop3Probe),
        ("ftp", HandshakeOptions(), FtpProbe),
        ("mysql", MysqlOptions(), MysqlProbe),
        ("pgsql", HandshakeOptions(), PgsqlProbe),
        ("icmp", IcmpOptions(), IcmpProbe),
        ("ldap", HandshakeOptions(), LdapProbe),
        ("sip", SipOptions(), SipProbe),
        ("sip", SipOptions(tcp=True), SipProbe),
        ("radius", RadiusOptions(secret="x"), RadiusProbe),
    ],
)
def test_make_probe(net4: Loopback, kind: str, options: CheckOptions, cls: type) -> None:
    """make_probe builds the class registered for the spec's kind."""
    assert cls is type(make_probe(make_spec(kind, options), net4.target(80)))


def test_unknown_kind(net4: Loopback) -> None:
    """An unknown kind is a ValueError listing the known ones."""
    with pytest.raises(ValueError, match=r"unknown check kind 'gopher' \(known: agent, dns, "):
        make_probe(make_spec("gopher", TcpOptions()), net4.target(80))


def test_https_kind_uses_tls(net4: Loopback) -> None:
    """The https kind speaks TLS even when the options do not say so."""
    probe = HttpProbe(make_spec("https", HttpOptions()), net4.target(8443))
    assert "https://127.0.0.1:8443/" == probe.url


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_no_descriptor_left_behind(net: Loopback) -> None:
    """Every kind, against silent, closing and absent servers, closes all it opened."""

    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"x")
        await writer.drain()

    silent = await net.tcp(net.hang_handler())
    closer = await net.tcp(closing)
    silent_udp = await net.udp(lambda data: None)
    absent = net.free_port()
    kinds: list[tuple[str, CheckOptions]] = [
        ("tcp", TcpOptions(expect=b"+OK")),
        ("http", HttpOptions()),
        ("https", HttpOptions(verify=False)),
        ("smtp", SmtpOptions()),
        ("agent", AgentOptions()),
        ("sip", SipOptions(tcp=True)),
        ("mysql", MysqlOptions(user="lvsd")),
        *((kind, HandshakeOptions()) for kind in ("imap", "pop3", "ftp", "pgsql", "ldap")),
    ]
    probes = [
        make_probe(make_spec(kind, options, timeout=0.2), net.target(port))
        for kind, options in kinds
        for port in (silent, closer, absent)
    ]
    probes += [
        make_probe(make_spec("udp", UdpOptions(expect=b"x"), timeout=0.2), net.target(silent_udp)),
        make_probe(make_spec("dns", DnsOptions(name="a."), timeout=0.2), net.target(silent_udp)),
        make_probe(
            make_spec("radius", RadiusOptions(secret="x"), timeout=0.2), net.target(silent_udp)
        ),
        make_probe(make_spec("sip", SipOptions(), timeout=0.2), net.target(silent_udp)),
        make_probe(
            make_spec("exec", ExecOptions(command=("/bin/sleep", "5")), timeout=0.2),
            net.target(80),
        ),
    ]
    connector()  # the loop's one epoll set for connects, kept for the loop's life
    before = _open_fds()
    results = await asyncio.gather(*(probe.probe() for probe in probes))
    for probe in probes:
        await probe.close()
    await net.aclose()  # the servers' side of the connections goes too
    for _ in range(5):  # closed transports release their socket on the next loop turn
        await asyncio.sleep(0)
    assert [] == [result for result in results if result.ok]
    assert set() == _open_fds() - before
