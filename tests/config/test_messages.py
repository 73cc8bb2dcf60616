"""The message sweep: a dozen broken configs, TOML and INI, each reporting every
mistake with its file, key, line, the bad value and what was expected."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.cli import main
from tests.config.helpers import problems, write

SCHEDULERS = "rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos"

CASES: list[tuple[str, str, list[tuple[str, int, str]]]] = [
    (
        "service.toml",
        """
        [services.web]
        address = "192.168.3.108"
        port = 80
        protocol = "tcpp"
        persistence = -5
        persistence_netmask = 40
        [[services.web.real_servers]]
        address = "10.0.0.300"
        """,
        [
            ("services.web.protocol", 4,
             'unknown protocol "tcpp" (did you mean "tcp"?); expected one of tcp, udp, sctp'),
            ("services.web.persistence", 5, "-5 is out of range (expected 0..4294967295)"),
            ("services.web.persistence_netmask", 6, "40 is out of range (expected 0..32)"),
            ("services.web.real_servers[0].address", 8,
             'expected an IPv4 or IPv6 address, got "10.0.0.300"'),
        ],
    ),
    (
        "daemon.toml",
        """
        [daemon]
        metrics_listen = "localhost:9475"
        drain_timeout = "5m"
        max_concurrent_probes = 0
        [defaults]
        scheduler = "robin"
        slow_start = -1
        [defaults.check]
        interval = 0
        rise = 0
        """,
        [
            ("daemon.metrics_listen", 2,
             'expected "ADDRESS:PORT" (like "127.0.0.1:9475" or "[::1]:9475") or "" to '
             'disable, got "localhost:9475"'),
            ("daemon.drain_timeout", 3, 'expected a number, got "5m"'),
            ("daemon.max_concurrent_probes", 4, "0 is out of range (expected >= 1)"),
            ("defaults.scheduler", 6, f'unknown scheduler "robin"; expected one of {SCHEDULERS}'),
            ("defaults.slow_start", 7, "-1 is out of range (expected >= 0)"),
            ("defaults.check.interval", 9, "0 is out of range (expected >= 0.01)"),
            ("defaults.check.rise", 10, "0 is out of range (expected >= 1)"),
        ],
    ),
    (
        "inline.toml",
        """
        [services.web]
        address = "192.168.3.108"
        port = 80
        check = { kind = "http", status = 700, method = 3, headers = ["x"] }
        [[services.web.real_servers]]
        address = "10.0.0.2"
        forward = "direct"
        tunnel = "ipip"
        [[services.web.real_servers]]
        address = "10.0.0.3"
        forward = "dr"
        tunnel = "gre"
        """,
        [
            ("services.web.check.method", 4, "expected a string, got 3"),
            ("services.web.check.status", 4, "700 is not a status range within 100-599"),
            ("services.web.check.headers", 4,
             "expected a table of header names to strings, got a list"),
            ("services.web.real_servers[0].forward", 7,
             'unknown forwarding method "direct"; expected one of nat, dr, tun'),
            ("services.web.real_servers[1].tunnel", 12,
             'tunnel "gre" applies only with forward = "tun", not "dr"'),
        ],
    ),
    (
        "check.toml",
        """
        [services.web]
        address = "192.168.3.108"
        port = 80
        [[services.web.real_servers]]
        address = "10.0.0.2"
        [[services.web.real_servers.checks]]
        kind = "udp"
        require_reply = "yes"
        source = "nope"
        source_port = 0
        [[services.web.real_servers.checks]]
        kind = "exec"
        command = "/bin/x"
        max_weight = -1
        """,
        [
            ("services.web.real_servers[0].checks[0].require_reply", 8,
             'expected true or false, got "yes"'),
            ("services.web.real_servers[0].checks[0].source", 9,
             'expected an IPv4 or IPv6 address, got "nope"'),
            ("services.web.real_servers[0].checks[0].source_port", 10,
             "0 is out of range (expected 1..65535)"),
            ("services.web.real_servers[0].checks[1].max_weight", 14,
             "-1 is out of range (expected >= 0)"),
        ],
    ),
    (
        "flags.toml",
        """
        [services.f]
        fwmark = 0
        family = "inet7"
        scheduler = "sh"
        flags = ["sh-port", "mh-fallback", "bogus"]
        """,
        [
            ("services.f.fwmark", 2, "0 is out of range (expected 1..4294967295)"),
            ("services.f.family", 3,
             'unknown family "inet7" (did you mean "inet"?); expected one of inet, inet6'),
            ("services.f.flags", 5,
             'flag "mh-fallback" is for scheduler mh, not sh; expected sh-fallback or sh-port'),
            ("services.f.flags", 5,
             'unknown flag "bogus" for scheduler sh; expected sh-fallback or sh-port'),
        ],
    ),
    (
        "twice.toml",
        """
        [services.web]
        address = "1.2.3.4"
        port = 80
        port = 81
        """,
        [
            ("", 4, "TOML syntax error: Cannot overwrite a value (the key is already set "
             'above), column 10 of "port = 81"'),
        ],
    ),
    (
        "unquoted.toml",
        """
        [services.web]
        address = 1.2.3.4
        """,
        [
            ("", 2, "TOML syntax error: Expected newline or end of document after a statement "
             '(one key = value per line; text values need quotes), column 14 of '
             '"address = 1.2.3.4"'),
        ],
    ),
    (
        "values.ini",
        """
        [daemon]
        reconcile_interval = soon
        remove_on_stop = maybe
        [defaults]
        check.interval = fast
        [service web]
        address = 192.168.3.108
        port = 80
        scheduler = wrrr
        [service web check]
        kind = https
        status = 2xx
        verify = perhaps
        body_regex = (
        [service web realserver a]
        address = 10.0.0.2
        weight = -1
        """,
        [
            ("daemon.reconcile_interval", 2, 'expected a number, got "soon"'),
            ("daemon.remove_on_stop", 3, 'expected true or false, got "maybe"'),
            ("defaults.check.interval", 5, 'expected a number, got "fast"'),
            ("services.web.scheduler", 9,
             f'unknown scheduler "wrrr" (did you mean "wrr"?); expected one of {SCHEDULERS}'),
            ("services.web.check.status", 12,
             'expected status codes like 200, "200" or "200-299", got "2xx"'),
            ("services.web.check.verify", 13, 'expected true or false, got "perhaps"'),
            ("services.web.check.body_regex", 14,
             'body_regex "(" does not compile (missing ), unterminated subpattern at '
             "position 0); expected a Python regular expression"),
            ("services.web.real_servers[0].weight", 17, "-1 is out of range (expected 0..65535)"),
        ],
    ),
    (
        "twice.ini",
        """
        [service web]
        address = 192.168.3.108
        port = 80
        port = 81
        """,
        [("[service web] port", 4, "key appears twice in [service web] (first at line 3)")],
    ),
    (
        "nosection.ini",
        "no section = 1\n",
        [
            ("", 1, "INI syntax error: a key before any [section]: 'no section = 1' "
             "(expected a [section] header first)"),
        ],
    ),
    (
        "sections.ini",
        """
        [service web]
        address = 192.168.3.108
        port = 80
        [service web check]
        kind = exec
        command = "unclosed
        [service web quorum]
        minimum = 2
        [servic x]
        """,
        [
            ("services.web.check.command", 6,
             'cannot split "\\"unclosed" into words (No closing quotation); '
             "expected a command line with balanced quotes"),
            ("[service web quorum]", 7,
             "unknown section: quorum is not a section of its own; write its keys in "
             "[service web] as dotted keys, like quorum.minimum = 2"),
            ("[servic x]", 9,
             "unknown section (expected [include], [daemon], [defaults], [ipvs], [service NAME], "
             "[service NAME check [CHECK]], [service NAME realserver RS [check [CHECK]]]); "
             "did you mean [service x]?"),
        ],
    ),
    (
        "dns.ini",
        """
        [service dns]
        address = 192.168.3.108
        port = 53
        protocol = udp
        [service dns check]
        kind = dns
        name = www.example.com
        type = AAAA
        rcode = NOERR
        expect = 2001:db8::1 10.0.0.1
        [service dns realserver a]
        address = 10.0.0.2
        [service dns realserver a check]
        kind = agent
        """,
        [
            ("services.dns.check.rcode", 9,
             'unknown rcode "NOERR" (did you mean "NOERROR"?); expected one of NOERROR, '
             "FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, YXDOMAIN, YXRRSET, NXRRSET, "
             "NOTAUTH, NOTZONE, DSOTYPENI, BADVERS, BADKEY, BADTIME, BADMODE, BADNAME, "
             "BADALG, BADTRUNC, BADCOOKIE"),
            ("services.dns.check.expect", 10,
             'bad AAAA answer "10.0.0.1" (Text input is malformed.); '
             "expected AAAA records in zone-file text form"),
            ("services.dns.real_servers[0].check", 13,
             'check kind "agent" needs "port" (the port its agent listens on, not the '
             "service's)"),
        ],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_every_problem_names_file_key_line_value_and_expectation(
    tmp_path: Path, name: str, text: str, expected: list[tuple[str, int, str]]
) -> None:
    """Each broken config reports exactly its mistakes, in file order, each in its file."""
    path = write(tmp_path, name, text)
    assert [(path, key, line, message) for key, line, message in expected] == problems(path)


def test_lvsd_check_prints_file_line_key_and_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``lvsd check`` prints each problem as FILE:LINE: KEY: message, then the count,
    and exits 1."""
    path = write(tmp_path, "c.ini", CASES[8][1])
    status = main(["check", "-c", path])
    expected = (
        f"{path}:4: [service web] port: key appears twice in [service web] (first at line 3)\n"
        "1 problem found\n"
    )
    assert (1, "", expected) == (status, *capsys.readouterr())
