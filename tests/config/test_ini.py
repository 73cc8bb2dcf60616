"""INI configs: the section layout, coercion of text values, and equivalence with TOML."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lvsd.config import load
from lvsd.config.model import TcpOptions
from tests.config.helpers import load_text, problems, where, write

RICH_TOML = r"""
[daemon]
state_dir = "/srv/lvsd"
control_group = "adm"
metrics_listen = "[::1]:9475"
reconcile_interval = 12.5
remove_on_stop = true

[defaults]
scheduler = "wlc"
forward = "dr"
initial_state = "up"

[defaults.check]
interval = 5
timeout = 2.5
fall = 4

[services.web]
address = "192.168.3.108"
port = 443
persistence = 600
persistence_netmask = 24
slow_start = 30
sorry_server = { address = "10.0.0.9", port = 8080, weight = 2, forward = "nat" }
panic = { threshold = 0.25, min_servers = 4 }

[services.web.quorum]
minimum = 3
hysteresis = 1
up_command = ["/bin/up", "web"]
down_command = "/bin/down 'web pool'"

[[services.web.checks]]
kind = "https"
path = "/health"
status = ["200", "300-302"]
headers = { X-Probe = "lvsd", Accept = "text/plain" }
verify = false
port = 8443

[[services.web.checks]]
kind = "tcp"
send = "PING\r\n"
expect = "PONG"
rise = 3

[[services.web.real_servers]]
address = "10.0.0.2"
weight = 5
upper_threshold = 100
lower_threshold = 80

[[services.web.real_servers]]
address = "10.0.0.3"
forward = "tun"
tunnel = "gue"
tunnel_port = 6080

[services.web.real_servers.check]
kind = "exec"
command = ["/usr/lib/lvsd/check", "{rip}", "{rport}"]
dynamic = true

[services.dns]
address = "2001:db8::53"
port = 53
protocol = "udp"
one_packet = true
scheduler = "sh"
flags = ["sh-fallback", "sh-port"]
forward = "nat"
on_failure = "remove"

[services.dns.check]
kind = "dns"
name = "example.com"
type = "AAAA"
expect = ["2001:db8::1", "2001:db8::2"]

[[services.dns.real_servers]]
address = "2001:db8:1::2"

[services.mark]
fwmark = 42
family = "inet6"

[[services.mark.real_servers]]
address = "2001:db8:1::2"
port = 0

[[services.mark.real_servers.checks]]
kind = "agent"
port = 9777
send = "ping\n"

[[services.mark.real_servers.checks]]
kind = "udp"
port = 53
send = "\u0000"
require_reply = true
"""

RICH_INI = r"""
[daemon]
state_dir = /srv/lvsd
control_group = adm
metrics_listen = [::1]:9475
reconcile_interval = 12.5
remove_on_stop = yes

[defaults]
scheduler = wlc
forward = dr
initial_state = up
check.interval = 5
check.timeout = 2.5
check.fall = 4

[service web]
address = 192.168.3.108
port = 443
persistence = 600
persistence_netmask = 24
slow_start = 30
sorry_server.address = 10.0.0.9
sorry_server.port = 8080
sorry_server.weight = 2
sorry_server.forward = nat
quorum.minimum = 3
quorum.hysteresis = 1
quorum.up_command = /bin/up web
quorum.down_command = /bin/down 'web pool'
panic.threshold = 0.25
panic.min_servers = 4

[service web check health]
kind = https
path = /health
status = 200, 300-302
headers.X-Probe = lvsd
headers.Accept = text/plain
verify = off
port = 8443

[service web check ping]
kind = tcp
send = PING\r\n
expect = PONG
rise = 3

[service web realserver a]
address = 10.0.0.2
weight = 5
upper_threshold = 100
lower_threshold = 80

[service web realserver b check]
kind = exec
command = /usr/lib/lvsd/check {rip} {rport}
dynamic = true

[service web realserver b]
address = 10.0.0.3
forward = tun
tunnel = gue
tunnel_port = 6080

[service dns]
address = 2001:db8::53
port = 53
protocol = udp
one_packet = 1
scheduler = sh
flags = sh-fallback sh-port
forward = nat
on_failure = remove

[service dns check]
kind = dns
name = example.com
type = AAAA
expect = 2001:db8::1, 2001:db8::2

[service dns realserver one]
address = 2001:db8:1::2

[service mark]
fwmark = 42
family = inet6

[service mark realserver x]
address = 2001:db8:1::2
port = 0

[service mark realserver x check agent]
kind = agent
port = 9777
send = ping\n

[service mark realserver x check udp]
kind = udp
port = 53
send = \x00
require_reply = true
"""


def test_rich_ini_equals_rich_toml(tmp_path: Path) -> None:
    """Every feature written in INI loads to the same config as in TOML."""
    toml = load_text(tmp_path, "c.toml", RICH_TOML)
    ini = load_text(tmp_path, "c.ini", RICH_INI)
    assert dataclasses.replace(toml, path="") == dataclasses.replace(ini, path="")
    assert 3 == len(ini.services)
    assert 6 == ini.check_count


def test_realserver_sections_keep_their_order_of_first_mention(tmp_path: Path) -> None:
    """A real server is placed where its first section (own or check) appears."""
    config = load_text(tmp_path, "c.ini", RICH_INI)
    web = config.services[0]
    assert ["10.0.0.2", "10.0.0.3"] == [str(r.address) for r in web.real_servers]


@pytest.mark.parametrize("extension", ["ini", "conf", "cf"])
def test_ini_extensions(tmp_path: Path, extension: str) -> None:
    """.ini, .conf and .cf files are read as INI."""
    config = load_text(tmp_path, f"c.{extension}", "[service a]\nfwmark = 1\n")
    assert ["a"] == [s.name for s in config.services]


def test_ini_bytes_escapes(tmp_path: Path) -> None:
    """tcp send/expect in INI accept backslash escapes (\\r, \\n, \\t, \\\\, \\xHH)."""
    config = load_text(
        tmp_path,
        "c.ini",
        r"""
        [service a]
        fwmark = 1
        [service a check]
        kind = tcp
        port = 80
        send = a\tb\\c\x41
        expect = OK\r\n
        [service a realserver r]
        address = 10.0.0.2
        """,
    )
    expected = TcpOptions(send=b"a\tb\\cA", expect=b"OK\r\n")
    assert expected == config.services[0].real_servers[0].checks[0].options


def test_ini_problems_have_section_and_key_lines(tmp_path: Path) -> None:
    """Coercion failures and rule violations in INI point at the key's line, and
    problems at a whole table point at its section header."""
    path = write(
        tmp_path,
        "c.ini",
        """
        [service web]
        address = 192.168.3.108
        port = eighty
        [service web realserver a]
        weight = 5
        [service web realserver b]
        address = 10.0.0.3
        weight = many
        [service web realserver b check x]
        kind = tcp
        timeout = 3  # more than the default interval
        """,
    )
    assert [
        (path, "services.web.port", 3, 'expected an integer, got "eighty"'),
        (path, "services.web.real_servers[0]", 4,
         'missing "address" (the real server\'s address)'),
        (path, "services.web.real_servers[1].weight", 8, 'expected an integer, got "many"'),
        (path, "services.web.real_servers[1].checks[0].timeout", 11,
         "timeout 3 must be less than interval 2"),
    ] == problems(path)  # fmt: skip


def test_unknown_section_suggests(tmp_path: Path) -> None:
    """A misspelt section word gets a suggestion and the header's line."""
    path = write(tmp_path, "c.ini", "[daemon]\n[servce web]\naddress = 1.2.3.4\n")
    [(file, key, line, message)] = problems(path)
    assert (path, "[servce web]", 2) == (file, key, line)
    assert message.endswith("; did you mean [service web]?")


def test_ini_unknown_key_suggests(tmp_path: Path) -> None:
    """A misspelt INI key gets the same did-you-mean as in TOML."""
    path = write(tmp_path, "c.ini", "[service web]\nfwmark = 1\nschedular = rr\n")
    assert [
        (
            path,
            "services.web.schedular",
            3,
            'unknown key in service "web" (did you mean "scheduler"?)',
        )
    ] == problems(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("address = 1.2.3.4\n",
         [("", 1, "INI syntax error: a key before any [section]: 'address = 1.2.3.4' "
                  "(expected a [section] header first)")]),
        ("[daemon]\nthis line has no equals\n",
         [("", 2, "INI syntax error: cannot parse 'this line has no equals'")]),
        ("[daemon]\n[daemon]\n", [("", 2, "section [daemon] appears twice (first at line 1)")]),
        ("[daemon]\nstate_dir = /a\nstate_dir = /b\n",
         [("[daemon] state_dir", 3, "key appears twice in [daemon] (first at line 2)")]),
    ],
)  # fmt: skip
def test_ini_syntax_errors(tmp_path: Path, text: str, expected: list[tuple[str, int, str]]) -> None:
    """configparser's errors become problems with their line."""
    path = write(tmp_path, "c.ini", text)
    assert expected == [(key, line, message) for _, key, line, message in problems(path)]


def test_value_and_dotted_keys_clash(tmp_path: Path) -> None:
    """A key that is both a value and the parent of dotted keys is refused; the value
    kept is still validated (the check defaults are a table)."""
    path = write(tmp_path, "c.ini", "[defaults]\ncheck = 1\ncheck.interval = 2\n")
    assert [
        ("defaults.check", 2, 'expected a table, got "1"'),
        ("defaults.check.interval", 3,
         "clashes with another key (a value and dotted keys below it)"),
    ] == [(key, line, message) for _, key, line, message in problems(path)]  # fmt: skip


def test_unknown_include_key(tmp_path: Path) -> None:
    """[include] takes only files."""
    path = write(tmp_path, "c.ini", "[include]\nfile = x.ini\n")
    assert [(path, "[include] file", 2, "unknown key (expected files)")] == problems(path)


def test_ini_and_toml_mistakes_report_the_same_keys(tmp_path: Path) -> None:
    """The one validator names the same key paths for the same mistakes in both formats."""
    toml = write(
        tmp_path,
        "c.toml",
        '[services.a]\nfwmark = 1\nscheduler = "rr"\nflags = ["sh-port"]\n'
        '[[services.a.real_servers]]\naddress = "10.0.0.2"\nweight = 70000\n',
    )
    ini = write(
        tmp_path,
        "c.ini",
        "[service a]\nfwmark = 1\nscheduler = rr\nflags = sh-port\n"
        "[service a realserver x]\naddress = 10.0.0.2\nweight = 70000\n",
    )
    assert where(toml) == where(ini)
    assert [("services.a.flags", 4), ("services.a.real_servers[0].weight", 7)] == where(ini)


def test_ini_empty_values(tmp_path: Path) -> None:
    """An empty INI list is an empty list; an empty metrics_listen disables it."""
    config = load(
        write(tmp_path, "c.ini", "[daemon]\nmetrics_listen =\n[service a]\nfwmark = 1\nflags =\n")
    )
    assert ("", frozenset()) == (config.daemon.metrics_listen, config.services[0].flags)
