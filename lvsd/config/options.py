"""Check options that only a library can judge: DNS names, types, rcodes and answers
(dnspython), and ``body_regex`` (:mod:`re`).

Pure functions of the option values, shared by the config validator (which reports
each problem at its key) and by the probes (which fail with it, for a spec built by
hand). Nothing here imports :mod:`lvsd.checks`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from lvsd.config.model import DnsOptions

#: Record types named in a message about an unknown one (any type dnspython knows,
#: or TYPEnnn, is accepted).
COMMON_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT")
#: Every rcode name dnspython knows, for the message about an unknown one.
RCODES = tuple(code.name for code in dns.rcode.Rcode)
#: Every record type name dnspython knows, for suggestions.
TYPES = tuple(t.name for t in dns.rdatatype.RdataType)


@dataclass(frozen=True, slots=True)
class OptionProblem:
    """One bad option value: ``what`` is wrong with ``value`` of ``field`` (``expect``
    items carry their ``index``), the library's ``reason`` if any, and what was
    ``expected``."""

    field: str
    value: str
    what: str
    expected: str
    reason: str = ""
    index: int | None = None
    #: names the value may have been meant as (for a "did you mean")
    choices: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        """The short form a probe's detail carries: ``unknown type 'BOGUS'``."""
        return f"{self.what} {self.value!r}" + (f": {self.reason}" if self.reason else "")


def dns_option_problems(options: DnsOptions) -> list[OptionProblem]:
    """Every problem of ``options``, in field order (empty: a probe can be built)."""
    problems = []
    try:
        dns.name.from_text(options.name)
    except dns.exception.DNSException as exc:
        problems.append(OptionProblem("name", options.name, "bad name", "a domain name", str(exc)))
    rdtype: dns.rdatatype.RdataType | None
    try:
        rdtype = dns.rdatatype.from_text(options.type)
    except dns.exception.DNSException:
        rdtype = None
        expected = f"a record type like {', '.join(COMMON_TYPES)} (or TYPEnnn)"
        problems.append(
            OptionProblem("type", options.type, "unknown type", expected, choices=TYPES)
        )
    try:
        dns.rcode.from_text(options.rcode)
    except dns.exception.DNSException:
        expected = f"one of {', '.join(RCODES)}"
        problems.append(
            OptionProblem("rcode", options.rcode, "unknown rcode", expected, choices=RCODES)
        )
    if rdtype is not None:
        for index, text in enumerate(options.expect):
            try:
                dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
            except (dns.exception.DNSException, ValueError) as exc:
                problems.append(
                    OptionProblem(
                        "expect",
                        text,
                        f"bad {options.type} answer",
                        f"{options.type} records in zone-file text form",
                        str(exc),
                        index,
                    )
                )
    return problems


def dns_problems(options: DnsOptions) -> list[str]:
    """What is wrong with ``options`` (empty when a probe can be built from them)."""
    return [problem.text for problem in dns_option_problems(options)]


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` does not compile as a Python regular expression (None: it does)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return None


__all__ = ["OptionProblem", "dns_option_problems", "dns_problems", "regex_problem"]
