"""Check options that need more than a type to judge: DNS names, types, rcodes and
answers (dnspython), ``body_regex`` (:mod:`re`), and HTTP text that goes on the wire.

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

from lvsd.config.model import DnsOptions, HttpOptions, MysqlOptions

#: Record types named in a message about an unknown one (any type dnspython knows,
#: or TYPEnnn, is accepted).
COMMON_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT")
#: Every rcode name dnspython knows, for the message about an unknown one.
RCODES = tuple(code.name for code in dns.rcode.Rcode)
#: Every record type name dnspython knows, for suggestions.
TYPES = tuple(t.name for t in dns.rdatatype.RdataType)
#: An HTTP token (RFC 9110): methods and header names.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: What may not appear in a request line or header value: controls (CR, LF, NUL...).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


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


def http_option_problems(options: HttpOptions) -> list[OptionProblem]:
    """Request text that can't go on the wire as written (CR/LF would inject headers)."""
    problems = []
    if not _TOKEN.fullmatch(options.method):
        problems.append(OptionProblem("method", options.method, "bad method", "an HTTP token"))
    for field, text in (("path", options.path), ("host", options.host), ("sni", options.sni)):
        if text is not None and (not text or _CONTROL.search(text) or " " in text or "\t" in text):
            expected = "text without spaces or control characters"
            problems.append(OptionProblem(field, text, f"bad {field}", expected))
    for name, value in options.headers:
        if not _TOKEN.fullmatch(name):
            problems.append(OptionProblem("headers", name, "bad header name", "an HTTP token"))
        elif _CONTROL.search(value):
            expected = "a value without control characters (CR, LF...)"
            problems.append(OptionProblem("headers", value, f"bad value of {name}", expected))
    for name, pattern in options.header_regex:
        reason = regex_problem(pattern)
        if not _TOKEN.fullmatch(name):
            problems.append(OptionProblem("header_regex", name, "bad header name", "an HTTP token"))
        elif reason is not None:
            expected = "a Python regular expression"
            problems.append(
                OptionProblem("header_regex", pattern, f"bad regex for {name}", expected, reason)
            )
    return problems


def mysql_option_problems(options: MysqlOptions) -> list[OptionProblem]:
    """A user name that cannot go in a login packet (empty, or with a NUL)."""
    user = options.user
    if user is not None and (not user or "\0" in user):
        return [OptionProblem("user", user, "bad user", "a user name, without NUL")]
    return []


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


__all__ = [
    "OptionProblem",
    "dns_option_problems",
    "dns_problems",
    "http_option_problems",
    "mysql_option_problems",
    "regex_problem",
]
