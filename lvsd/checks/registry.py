"""From a check's ``kind`` to the class that probes it. Adding a kind: one module,
one line here, one test file."""

from __future__ import annotations

from lvsd.checks.agent import AgentProbe
from lvsd.checks.base import Probe, ProbeFactory, Target
from lvsd.checks.dns import DnsProbe
from lvsd.checks.exec import ExecProbe
from lvsd.checks.ftp import FtpProbe
from lvsd.checks.http import HttpProbe
from lvsd.checks.icmp import IcmpProbe
from lvsd.checks.imap import ImapProbe
from lvsd.checks.ldap import LdapProbe
from lvsd.checks.mysql import MysqlProbe
from lvsd.checks.pgsql import PgsqlProbe
from lvsd.checks.pop3 import Pop3Probe
from lvsd.checks.radius import RadiusProbe
from lvsd.checks.sip import SipProbe
from lvsd.checks.smtp import SmtpProbe
from lvsd.checks.tcp import tcp_probe
from lvsd.checks.udp import UdpProbe
from lvsd.config.model import CheckSpec

PROBES: dict[str, ProbeFactory] = {
    "tcp": tcp_probe,
    "http": HttpProbe,
    "https": HttpProbe,
    "exec": ExecProbe,
    "dns": DnsProbe,
    "smtp": SmtpProbe,
    "agent": AgentProbe,
    "udp": UdpProbe,
    "imap": ImapProbe,
    "pop3": Pop3Probe,
    "ftp": FtpProbe,
    "mysql": MysqlProbe,
    "pgsql": PgsqlProbe,
    "icmp": IcmpProbe,
    "ldap": LdapProbe,
    "sip": SipProbe,
    "radius": RadiusProbe,
}


def make_probe(spec: CheckSpec, target: Target) -> Probe:
    """The probe for ``spec`` aimed at ``target``; ``ValueError`` for an unknown kind."""
    try:
        factory = PROBES[spec.kind]
    except KeyError:
        known = ", ".join(sorted(PROBES))
        raise ValueError(f"unknown check kind {spec.kind!r} (known: {known})") from None
    return factory(spec, target)
