"""Check options judged at load time: DNS type, rcode and expected answers, body_regex,
an agent check's port and an exec command, in TOML and INI, each at its key and line."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.config import load
from lvsd.config.model import (
    AgentOptions,
    DnsOptions,
    HandshakeOptions,
    HttpOptions,
    IcmpOptions,
    MysqlOptions,
    RadiusOptions,
    SipOptions,
    StatusRange,
)
from lvsd.config.options import (
    RCODES,
    OptionProblem,
    dns_option_problems,
    dns_problems,
    regex_problem,
)
from tests.config.helpers import SERVICE, load_text, only_message, problems, write

TYPES_HINT = "a record type like A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT (or TYPEnnn)"
RCODES_HINT = f"one of {', '.join(RCODES)}"
REAL_SERVER = '[[services.web.real_servers]]\naddress = "10.0.0.2"\n'


def test_rcode_names_are_the_dns_ones() -> None:
    """The rcode hint lists the usual names, starting with NOERROR."""
    assert ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED") == RCODES[:6]


def test_dns_option_problems_name_the_field() -> None:
    """Each bad DNS option is one problem at its field; expect items carry their index."""
    options = DnsOptions(name="a.", type="AAAA", rcode="MAYBE", expect=("::1", "10.0.0.1"))
    assert [
        OptionProblem("rcode", "MAYBE", "unknown rcode", RCODES_HINT, choices=RCODES),
        OptionProblem(
            "expect",
            "10.0.0.1",
            "bad AAAA answer",
            "AAAA records in zone-file text form",
            "Text input is malformed.",
            1,
        ),
    ] == dns_option_problems(options)


def test_dns_problems_keep_the_probe_form() -> None:
    """The probe's short form quotes values Python's way and joins the reason."""
    assert ["unknown type 'BOGUS'", "unknown rcode 'MAYBE'"] == dns_problems(
        DnsOptions(name="a.", type="BOGUS", rcode="MAYBE")
    )


def test_dns_bad_name() -> None:
    """A name with an empty label is refused with dnspython's reason."""
    expected = ["bad name 'a..b': A DNS label is empty."]
    assert expected == dns_problems(DnsOptions(name="a..b"))


def test_good_dns_options_have_no_problem() -> None:
    """Types and rcodes in any case, TYPEnnn, and answers of the type pass."""
    options = DnsOptions(name="example.com", type="mx", rcode="nxdomain", expect=("10 mx.a.",))
    assert ([], []) == (
        dns_option_problems(options),
        dns_problems(DnsOptions(name="x", type="TYPE65")),
    )


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"ok\s+(here|there)", None),
        ("(", "missing ), unterminated subpattern at position 0"),
        ("a{2,1}", "min repeat greater than max repeat at position 2"),
    ],
)
def test_regex_problem(pattern: str, expected: str | None) -> None:
    """A pattern that does not compile comes back with re's reason."""
    assert expected == regex_problem(pattern)


DNS_TOML = (
    SERVICE
    + """
[[services.web.checks]]
kind = "dns"
name = "www.example.com"
type = "AAAAA"
rcode = "NOERR"
[[services.web.checks]]
kind = "dns"
name = "www.example.com"
expect = ["192.0.2.1", "not-an-ip"]
[[services.web.checks]]
kind = "dns"
name = "www.example.com"
type = "MX"
expect = "mail.example.com."
"""
)


def test_dns_options_in_toml(tmp_path: Path) -> None:
    """Unknown type and rcode, and answers that do not parse for the type, are each
    reported at their key and line; a list item is named by its index."""
    path = write(tmp_path, "c.toml", DNS_TOML)
    assert [
        (path, "services.web.checks[0].type", 8,
         f'unknown type "AAAAA" (did you mean "AAAA"?); expected {TYPES_HINT}'),
        (path, "services.web.checks[0].rcode", 9,
         f'unknown rcode "NOERR" (did you mean "NOERROR"?); expected {RCODES_HINT}'),
        (path, "services.web.checks[1].expect[1]", 13,
         'bad A answer "not-an-ip" (Text input is malformed.); '
         "expected A records in zone-file text form"),
        (path, "services.web.checks[2].expect", 18,
         'bad MX answer "mail.example.com." (expecting an integer); '
         "expected MX records in zone-file text form"),
    ] == problems(path)  # fmt: skip


def test_dns_options_in_ini(tmp_path: Path) -> None:
    """INI reports the same problems; a list is one value, so no index is named."""
    path = write(
        tmp_path,
        "c.ini",
        """
        [service web]
        address = 192.168.3.108
        port = 53
        protocol = udp
        [service web check one]
        kind = dns
        name = www.example.com
        type = TXTT
        expect = 192.0.2.1, 192.0.2.300
        [service web check two]
        kind = dns
        name = www.example.com
        expect = 192.0.2.1, 192.0.2.300
        """,
    )
    assert [
        (path, "services.web.checks[0].type", 8,
         f'unknown type "TXTT" (did you mean "TXT"?); expected {TYPES_HINT}'),
        (path, "services.web.checks[1].expect", 13,
         'bad A answer "192.0.2.300" (Text input is malformed.); '
         "expected A records in zone-file text form"),
    ] == problems(path)  # fmt: skip


def test_dns_values_that_parse_are_kept(tmp_path: Path) -> None:
    """Lower-case type and rcode and good answers load as written."""
    config = load_text(
        tmp_path,
        "c.toml",
        SERVICE + 'check = { kind = "dns", name = "a.", type = "aaaa", rcode = "nxdomain", '
        'expect = ["2001:db8::1"] }\n' + REAL_SERVER,
    )
    expected = DnsOptions(name="a.", type="aaaa", rcode="nxdomain", expect=("2001:db8::1",))
    assert expected == config.services[0].real_servers[0].checks[0].options


def test_body_regex_must_compile(tmp_path: Path) -> None:
    """A body_regex that does not compile names the pattern and re's reason."""
    path = write(tmp_path, "c.toml", SERVICE + 'check = { kind = "http", body_regex = "up(" }\n')
    assert [
        (path, "services.web.check.body_regex", 4,
         'body_regex "up(" does not compile (missing ), unterminated subpattern at '
         "position 2); expected a Python regular expression"),
    ] == problems(path)  # fmt: skip


def test_body_not_regex_and_header_regex(tmp_path: Path) -> None:
    """body_not_regex must compile; header_regex is a table of names to regexes that
    must compile, each problem at its key."""
    good = write(
        tmp_path,
        "good.toml",
        SERVICE + 'check = { kind = "http", body_not_regex = "maint", '
        'header_regex = { "Content-Type" = "^text/" } }\n' + REAL_SERVER,
    )
    assert (
        HttpOptions(body_not_regex="maint", header_regex=(("Content-Type", "^text/"),))
        == load(good).services[0].real_servers[0].checks[0].options
    )
    bad = write(
        tmp_path,
        "bad.toml",
        SERVICE + 'check = { kind = "http", body_not_regex = "(", header_regex = { X = "[" } }\n',
    )
    assert [
        (bad, "services.web.check.body_not_regex", 4,
         'body_not_regex "(" does not compile (missing ), unterminated subpattern at '
         "position 0); expected a Python regular expression"),
    ] == problems(bad)  # fmt: skip
    bad = write(
        tmp_path, "bad2.toml", SERVICE + 'check = { kind = "http", header_regex = { X = "[" } }\n'
    )
    assert [
        (bad, "services.web.check.header_regex", 4,
         'bad regex for X "[" (unterminated character set at position 0); '
         "expected a Python regular expression"),
    ] == problems(bad)  # fmt: skip


def test_body_regex_in_ini_keeps_backslashes(tmp_path: Path) -> None:
    """An INI body_regex is not unescaped, so ``\\d`` compiles and ``\\`` alone does not."""
    good = write(
        tmp_path,
        "good.ini",
        "[service web]\naddress = 1.2.3.4\nport = 80\n"
        "[service web check]\nkind = https\nbody_regex = ok \\d+\n"
        "[service web realserver a]\naddress = 10.0.0.2\n",
    )
    bad = write(
        tmp_path,
        "bad.ini",
        "[service web]\naddress = 1.2.3.4\nport = 80\n"
        "[service web check]\nkind = https\nbody_regex = ok\\\n",
    )
    assert (
        HttpOptions(tls=True, body_regex="ok \\d+")
        == load(good).services[0].real_servers[0].checks[0].options
    )
    assert [
        (bad, "services.web.check.body_regex", 6,
         'body_regex "ok\\\\" does not compile (bad escape (end of pattern) at position 2); '
         "expected a Python regular expression"),
    ] == problems(bad)  # fmt: skip


def test_agent_check_needs_a_port(tmp_path: Path) -> None:
    """An agent check without port is refused at the check's table; with one it loads."""
    path = write(tmp_path, "c.toml", SERVICE + '[services.web.check]\nkind = "agent"\n')
    message = 'check kind "agent" needs "port" (the port its agent listens on, not the service\'s)'
    assert [(path, "services.web.check", 4, message)] == problems(path)
    config = load_text(
        tmp_path,
        "ok.toml",
        SERVICE + 'check = { kind = "agent", port = 5555, send = "hi" }\n' + REAL_SERVER,
    )
    check = config.services[0].real_servers[0].checks[0]
    assert (5555, AgentOptions(send="hi")) == (check.port, check.options)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('""', 'expected a command (a list of strings, or a string), got an empty one: ""'),
        ("[]", "expected a command (a list of strings, or a string), got an empty one: []"),
        ('["", "x"]', 'expected a program to run first, got an empty program name: ["", "x"]'),
        (
            "'\"\" --flag'",
            'expected a program to run first, got an empty program name: "\\"\\" --flag"',
        ),
        (
            '"a \'b"',
            'cannot split "a \'b" into words (No closing quotation); '
            "expected a command line with balanced quotes",
        ),
    ],
)
def test_exec_command_must_name_a_program(tmp_path: Path, value: str, message: str) -> None:
    """An empty command, or one whose first word is empty, is refused."""
    path = write(tmp_path, "c.toml", SERVICE + f'check = {{ kind = "exec", command = {value} }}\n')
    assert message == only_message(path)


def test_exec_empty_command_in_ini(tmp_path: Path) -> None:
    """An INI ``command =`` with no words is refused at its line."""
    path = write(
        tmp_path,
        "c.ini",
        "[service web]\naddress = 1.2.3.4\nport = 80\n"
        "[service web check]\nkind = exec\ncommand =\n",
    )
    assert [
        (path, "services.web.check.command", 6,
         'expected a command (a list of strings, or a string), got an empty one: ""'),
    ] == problems(path)  # fmt: skip


@pytest.mark.parametrize("kind", ["imap", "pop3", "ftp", "pgsql", "ldap"])
def test_handshake_kinds_take_no_options(tmp_path: Path, kind: str) -> None:
    """The handshake kinds load with the common keys only; any option is refused."""
    good = write(
        tmp_path, "good.toml", SERVICE + f'check = {{ kind = "{kind}", port = 9 }}\n' + REAL_SERVER
    )
    spec = load(good).services[0].real_servers[0].checks[0]
    assert (kind, HandshakeOptions(), 9) == (spec.kind, spec.options, spec.port)
    bad = write(tmp_path, "bad.toml", SERVICE + f'check = {{ kind = "{kind}", user = "x" }}\n')
    assert [f'option "user" does not belong to check kind "{kind}"; {kind} takes: no options'] == [
        message for *_, message in problems(bad)
    ]


def test_icmp_needs_no_port_on_a_fwmark_service(tmp_path: Path) -> None:
    """An icmp check of a port-0 real server (fwmark service) needs no check port."""
    path = write(
        tmp_path,
        "c.toml",
        '[services.m]\nfwmark = 3\ncheck = { kind = "icmp" }\n'
        '[[services.m.real_servers]]\naddress = "10.0.0.2"\nport = 0\n',
    )
    spec = load(path).services[0].real_servers[0].checks[0]
    assert ("icmp", IcmpOptions(), None) == (spec.kind, spec.options, spec.port)


def test_sip_options(tmp_path: Path) -> None:
    """sip takes tcp and status ranges."""
    path = write(
        tmp_path,
        "c.toml",
        SERVICE + 'check = { kind = "sip", tcp = true, status = ["200", "404"] }\n' + REAL_SERVER,
    )
    expected = SipOptions(
        tcp=True, status=(StatusRange(low=200, high=200), StatusRange(low=404, high=404))
    )
    assert expected == load(path).services[0].real_servers[0].checks[0].options


def test_radius_needs_a_secret(tmp_path: Path) -> None:
    """radius needs a non-empty secret."""
    good = write(
        tmp_path, "good.toml", SERVICE + 'check = { kind = "radius", secret = "s" }\n' + REAL_SERVER
    )
    assert RadiusOptions(secret="s") == load(good).services[0].real_servers[0].checks[0].options
    missing = write(tmp_path, "missing.toml", SERVICE + 'check = { kind = "radius" }\n')
    empty = write(tmp_path, "empty.toml", SERVICE + 'check = { kind = "radius", secret = "" }\n')
    assert 'check kind "radius" needs option "secret"' == only_message(missing)
    assert 'empty secret ""; expected the shared secret' == only_message(empty)


def test_mysql_user(tmp_path: Path) -> None:
    """mysql takes a user to log in as; an empty one is refused at its key."""
    good = write(
        tmp_path, "good.toml", SERVICE + 'check = { kind = "mysql", user = "lvsd" }\n' + REAL_SERVER
    )
    assert MysqlOptions(user="lvsd") == load(good).services[0].real_servers[0].checks[0].options
    bad = write(tmp_path, "bad.toml", SERVICE + 'check = { kind = "mysql", user = "" }\n')
    assert [
        (bad, "services.web.check.user", 4,
         'bad user ""; expected a user name, without NUL'),
    ] == problems(bad)  # fmt: skip
