"""Validation of a TOML config: every rule names the file, the key path and the line,
and every problem of a file is reported at once."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.config.model import (
    DnsOptions,
    ExecOptions,
    HttpOptions,
    StatusRange,
    TcpOptions,
    UdpOptions,
)
from lvsd.model import Forward, SchedFlag, Scheduler, TunnelType
from tests.config.helpers import SERVICE, load_text, only_message, problems, where, write

SIX_MISTAKES = """
[daemon]
reconcile_intervall = 5

[services.web]
address = "192.168.3.108"
port = 80
scheduler = "wrrr"

[[services.web.checks]]
kind = "tcp"
path = "/health"

[[services.web.real_servers]]
address = "10.0.0.2"
weight = 70000

[[services.web.real_servers]]
address = "10.0.0.3"
lower_threshold = 10
upper_threshold = 5

[services.web2]
address = "192.168.3.108"
port = 80

[services.v6]
address = "2001:db8::1"
port = 443

[[services.v6.real_servers]]
address = "10.0.0.4"
port = 0
"""


def test_every_mistake_is_reported_with_file_key_and_line(tmp_path: Path) -> None:
    """A config with eight different mistakes reports exactly those, in file order."""
    path = write(tmp_path, "bad.toml", SIX_MISTAKES)
    expected = [
        (path, "daemon.reconcile_intervall", 2,
         'unknown key in [daemon] (did you mean "reconcile_interval"?)'),
        (path, "services.web.scheduler", 7,
         'unknown scheduler "wrrr" (did you mean "wrr"?); expected one of rr, wrr, lc, wlc, '
         "lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos"),
        (path, "services.web.checks[0].path", 11,
         'option "path" does not belong to check kind "tcp"; tcp takes: send, expect'),
        (path, "services.web.real_servers[0].weight", 15,
         "70000 is out of range (expected 0..65535)"),
        (path, "services.web.real_servers[1].lower_threshold", 19,
         "lower_threshold 10 is above upper_threshold 5"),
        (path, "services.web2.address", 23,
         'tcp 192.168.3.108:80 is already the key of service "web"'),
        (path, "services.v6.real_servers[0].address", 31,
         "IPv4 address 10.0.0.4 on an IPv6 service: NAT needs the real server in the "
         "service's address family"),
        (path, "services.v6.real_servers[0].port", 32,
         "port 0 is allowed only for fwmark services"),
    ]  # fmt: skip
    assert expected == problems(path)


def test_unknown_top_level_key_suggests(tmp_path: Path) -> None:
    """A misspelt top-level table is named with a suggestion."""
    path = write(tmp_path, "c.toml", "[servics.web]\naddress = '1.2.3.4'\n")
    assert 'unknown key in the top level (did you mean "services"?)' == only_message(path)


def test_unknown_key_without_a_close_match_has_no_suggestion(tmp_path: Path) -> None:
    """A key resembling nothing gets no did-you-mean."""
    path = write(tmp_path, "c.toml", SERVICE + "zzzzzz = 1\n")
    assert 'unknown key in service "web"' == only_message(path)


def test_tunnel_needs_tun_and_gue_needs_a_port(tmp_path: Path) -> None:
    """tunnel is for forward = "tun" only, and gue needs tunnel_port."""
    path = write(
        tmp_path,
        "c.toml",
        SERVICE
        + """
        forward = "tun"
        tunnel = "gue"
        [[services.web.real_servers]]
        address = "10.0.0.2"
        forward = "dr"
        tunnel = "gre"
        """.replace("        ", ""),
    )
    assert [
        ("services.web.tunnel", 6),
        ("services.web.real_servers[0].tunnel", 10),
    ] == where(path)


def test_tunnel_is_inherited_by_tun_real_servers(tmp_path: Path) -> None:
    """A service's tunnel and tunnel_port reach its tun real servers, not its dr ones."""
    config = load_text(
        tmp_path,
        "c.toml",
        SERVICE
        + """
forward = "tun"
tunnel = "gue"
tunnel_port = 6080
[[services.web.real_servers]]
address = "10.0.0.2"
[[services.web.real_servers]]
address = "10.0.0.3"
forward = "dr"
""",
    )
    tun, dr = config.services[0].real_servers
    assert (Forward.TUN, TunnelType.GUE, 6080) == (tun.forward, tun.tunnel, tun.tunnel_port)
    assert (Forward.DR, None, 0) == (dr.forward, dr.tunnel, dr.tunnel_port)


def test_flags_only_for_sh_and_mh(tmp_path: Path) -> None:
    """Scheduler flags on wrr are refused; on sh they map to SchedFlag values."""
    bad = write(tmp_path, "bad.toml", SERVICE + 'flags = ["sh-port"]\n')
    assert "flags apply only to the sh and mh schedulers, not wrr" == only_message(bad)
    good = load_text(
        tmp_path, "good.toml", SERVICE + 'scheduler = "mh"\nflags = ["mh-fallback", "port"]\n'
    )
    assert {SchedFlag.FALLBACK, SchedFlag.PORT} == good.services[0].flags
    assert Scheduler.MH == good.services[0].scheduler


def test_flag_of_the_other_scheduler(tmp_path: Path) -> None:
    """mh-port on an sh service is named as the other scheduler's flag, with this
    scheduler's flags (it used to suggest the very word it refused)."""
    path = write(tmp_path, "c.toml", SERVICE + 'scheduler = "sh"\nflags = ["mh-port"]\n')
    assert (
        'flag "mh-port" is for scheduler mh, not sh; expected sh-fallback or sh-port'
    ) == only_message(path)


def test_misspelt_flag_suggests_the_schedulers_own(tmp_path: Path) -> None:
    """A misspelt flag is suggested among the service's scheduler's flags."""
    path = write(tmp_path, "c.toml", SERVICE + 'scheduler = "mh"\nflags = ["mh-fallbak"]\n')
    assert (
        'unknown flag "mh-fallbak" for scheduler mh (did you mean "mh-fallback"?); '
        "expected mh-fallback or mh-port"
    ) == only_message(path)


def test_duplicate_real_server(tmp_path: Path) -> None:
    """The same address and port twice in a service is refused on the second."""
    path = write(
        tmp_path,
        "c.toml",
        SERVICE + "real_servers = [{address = '10.0.0.2'}, {address = '10.0.0.2', port = 80}]\n",
    )
    assert [
        (
            path,
            "services.web.real_servers[1].address",
            4,
            "real server 10.0.0.2:80 is already listed as real_servers[0]",
        )
    ] == problems(path)


def test_duplicate_fwmark_service(tmp_path: Path) -> None:
    """Two services on the same firewall mark and family are refused."""
    path = write(
        tmp_path, "c.toml", "[services.a]\nfwmark = 7\n[services.b]\nfwmark = 7\nfamily='inet'\n"
    )
    assert [("services.b.fwmark", 4)] == where(path)


def test_fwmark_service_takes_no_address(tmp_path: Path) -> None:
    """fwmark with address and port is refused for each extra key."""
    path = write(tmp_path, "c.toml", SERVICE + "fwmark = 1\n")
    assert [("services.web.address", 2), ("services.web.port", 3)] == where(path)


def test_service_without_address_or_fwmark(tmp_path: Path) -> None:
    """A service with neither address nor fwmark is named at its header."""
    path = write(tmp_path, "c.toml", "[services.web]\nport = 80\n")
    assert [
        (
            path,
            "services.web",
            1,
            'missing "address" (a service needs address and port, or fwmark)',
        )
    ] == problems(path)


def test_real_server_port_defaults(tmp_path: Path) -> None:
    """A real server's port defaults to the service's port, and to 0 on fwmark services."""
    config = load_text(
        tmp_path,
        "c.toml",
        SERVICE
        + """
[[services.web.real_servers]]
address = "10.0.0.2"
[services.m]
fwmark = 3
[[services.m.real_servers]]
address = "10.0.0.2"
""",
    )
    assert [80, 0] == [s.real_servers[0].port for s in config.services]


def test_port_zero_real_server_check_needs_a_port(tmp_path: Path) -> None:
    """On a fwmark service, a check of a port-0 real server must name its port."""
    path = write(
        tmp_path,
        "c.toml",
        """
[services.m]
fwmark = 3
check = { kind = "tcp" }
[[services.m.real_servers]]
address = "10.0.0.2"
port = 0
""",
    )
    assert [
        (
            path,
            "services.m.real_servers[0].port",
            6,
            "real server port is 0, so its tcp check needs its own port",
        )
    ] == problems(path)


def test_weight_bounds(tmp_path: Path) -> None:
    """Weights 0 and 65535 are fine, -1 is not."""
    config = load_text(
        tmp_path,
        "ok.toml",
        SERVICE + "real_servers = [{address='10.0.0.2', weight=0}, {address='10.0.0.3', "
        "weight=65535}]\n",
    )
    assert [0, 65535] == [r.weight for r in config.services[0].real_servers]
    bad = write(tmp_path, "bad.toml", SERVICE + "real_servers = [{address='10.0.0.2', weight=-1}]")
    assert "-1 is out of range (expected 0..65535)" == only_message(bad)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("persistence = 4294967296", "services.web.persistence"),
        ("real_servers = [{ address = '10.0.0.2', upper_threshold = 4294967296 }]",
         "services.web.real_servers[0].upper_threshold"),
        ("real_servers = [{ address = '10.0.0.2', lower_threshold = 4294967296 }]",
         "services.web.real_servers[0].lower_threshold"),
    ],
)  # fmt: skip
def test_kernel_u32_fields_are_bounded(tmp_path: Path, text: str, key: str) -> None:
    """persistence and the connection thresholds are u32 in the kernel: a larger value
    is a config problem with file, key and line, not an encoding crash at apply."""
    path = write(tmp_path, "c.toml", SERVICE + text + "\n")
    expected = [(path, key, 4, "4294967296 is out of range (expected 0..4294967295)")]
    assert expected == problems(path)


def test_kernel_u32_fields_take_their_largest_value(tmp_path: Path) -> None:
    """2**32 - 1, the largest u32, is still accepted for persistence and thresholds."""
    config = load_text(
        tmp_path,
        "ok.toml",
        SERVICE
        + "persistence = 4294967295\n"
        + "real_servers = [{ address = '10.0.0.2', upper_threshold = 4294967295, "
        + "lower_threshold = 4294967295 }]\n",
    )
    service = config.services[0]
    server = service.real_servers[0]
    expected = (4294967295, 4294967295, 4294967295)
    assert expected == (service.persistence, server.upper_threshold, server.lower_threshold)


def test_ipv6_real_server_on_ipv6_service_and_dr_mixing(tmp_path: Path) -> None:
    """Mixed families are refused for NAT only; DR to another family passes validation."""
    config = load_text(
        tmp_path,
        "c.toml",
        """
[services.v6]
address = "2001:db8::1"
port = 80
[[services.v6.real_servers]]
address = "2001:db8::2"
[[services.v6.real_servers]]
address = "10.0.0.2"
forward = "tun"
""",
    )
    assert 2 == len(config.services[0].real_servers)


def test_inheritance_defaults_service_real_server(tmp_path: Path) -> None:
    """[defaults] feed the service; the service's forward feeds its real servers;
    a real server's own forward wins; [defaults.check] feeds every check."""
    config = load_text(
        tmp_path,
        "c.toml",
        """
[defaults]
scheduler = "lc"
forward = "dr"
slow_start = 5
initial_state = "up"
[defaults.check]
interval = 10
rise = 5
[services.a]
address = "192.168.3.108"
port = 80
check = { kind = "tcp", fall = 7 }
real_servers = [{ address = "10.0.0.2" }, { address = "10.0.0.3", forward = "nat" }]
[services.b]
address = "192.168.3.108"
port = 81
scheduler = "rr"
forward = "tun"
real_servers = [{ address = "10.0.0.2" }]
""",
    )
    a, b = config.services
    assert (Scheduler.LC, 5.0, "up") == (a.scheduler, a.slow_start, a.initial_state)
    assert [Forward.DR, Forward.NAT] == [r.forward for r in a.real_servers]
    check = a.real_servers[0].checks[0]
    assert (10.0, 1.0, 5, 7) == (check.interval, check.timeout, check.rise, check.fall)
    assert Scheduler.RR == b.scheduler
    assert [Forward.TUN] == [r.forward for r in b.real_servers]


def test_real_server_checks_replace_the_services(tmp_path: Path) -> None:
    """A real server with its own check drops the service's checks; an empty list
    means no checks at all."""
    config = load_text(
        tmp_path,
        "c.toml",
        SERVICE
        + """
checks = [{ kind = "tcp" }, { kind = "http" }]
[[services.web.real_servers]]
address = "10.0.0.2"
[[services.web.real_servers]]
address = "10.0.0.3"
[services.web.real_servers.check]
kind = "agent"
port = 9777
[[services.web.real_servers]]
address = "10.0.0.4"
checks = []
""",
    )
    kinds = [[c.kind for c in r.checks] for r in config.services[0].real_servers]
    assert [["tcp", "http"], ["agent"], []] == kinds


def test_check_and_checks_together(tmp_path: Path) -> None:
    """check and checks on the same table are refused."""
    path = write(tmp_path, "c.toml", SERVICE + "check = {kind='tcp'}\nchecks = [{kind='tcp'}]\n")
    assert [("services.web.check", 4)] == where(path)


def test_check_options_map_to_each_kind(tmp_path: Path) -> None:
    """Each kind's options become its options type; https sets tls; strings become
    bytes for tcp/udp; status accepts ints, strings and ranges; exec splits a string."""
    config = load_text(
        tmp_path,
        "c.toml",
        SERVICE
        + r"""
[[services.web.real_servers]]
address = "10.0.0.2"
checks = [
  { kind = "tcp", send = "PING\r\n", expect = "PONG" },
  { kind = "https", path = "/h", status = [200, "301", "400-404"], headers = { X-A = "1" }, verify = false },
  { kind = "exec", command = "/bin/check --vip '{vip} x'", dynamic = true },
  { kind = "exec", command = ["/bin/true"] },
  { kind = "dns", name = "example.com", expect = ["192.0.2.1"] },
  { kind = "udp", send = "x", require_reply = true },
]
""",  # noqa: E501
    )
    options = [c.options for c in config.services[0].real_servers[0].checks]
    assert [
        TcpOptions(send=b"PING\r\n", expect=b"PONG"),
        HttpOptions(
            tls=True,
            path="/h",
            status=(
                StatusRange(low=200, high=200),
                StatusRange(low=301, high=301),
                StatusRange(low=400, high=404),
            ),
            headers=(("X-A", "1"),),
            verify=False,
        ),
        ExecOptions(command=("/bin/check", "--vip", "{vip} x"), dynamic=True),
        ExecOptions(command=("/bin/true",)),
        DnsOptions(name="example.com", expect=("192.0.2.1",)),
        UdpOptions(send=b"x", require_reply=True),
    ] == options


def test_check_option_errors(tmp_path: Path) -> None:
    """Wrong option types, a missing required option, an unknown kind, a bad status and
    an option of another kind are each reported."""
    path = write(
        tmp_path,
        "c.toml",
        SERVICE
        + """
[[services.web.checks]]
kind = "http"
status = ["2xx"]
keepalive = "no"
[[services.web.checks]]
kind = "exec"
[[services.web.checks]]
kind = "htttp"
[[services.web.checks]]
kind = "agent"
sendd = "x"
port = 5555
[[services.web.checks]]
kind = "smtp"
interval = 1
timeout = 1
""",
    )
    expected = [
        ("services.web.checks[0].status", 7,
         'expected status codes like 200, "200" or "200-299", got "2xx"'),
        ("services.web.checks[0].keepalive", 8, 'expected true or false, got "no"'),
        ("services.web.checks[1]", 9, 'check kind "exec" needs option "command"'),
        ("services.web.checks[2].kind", 12,
         'unknown check kind "htttp" (did you mean "http"?); expected one of tcp, http, '
         "https, exec, dns, smtp, agent, udp, imap, pop3, ftp, mysql, pgsql, ldap, icmp, sip, "
         "radius"),
        ("services.web.checks[3].sendd", 15,
         'option "sendd" does not belong to check kind "agent" (did you mean "send"?); '
         "agent takes: send"),
        ("services.web.checks[4].timeout", 20, "timeout 1 must be less than interval 1"),
    ]  # fmt: skip
    assert expected == [(k, line, m) for _, k, line, m in problems(path)]


def test_timeout_not_below_interval_in_defaults(tmp_path: Path) -> None:
    """[defaults.check] is checked once, at its own keys."""
    path = write(tmp_path, "c.toml", "[defaults.check]\ninterval = 1\ntimeout = 2\n")
    assert [("defaults.check.timeout", 3)] == where(path)


def test_daemon_values(tmp_path: Path) -> None:
    """[daemon] keys are typed from DaemonConfig; metrics_listen is ADDRESS:PORT or ""."""
    config = load_text(
        tmp_path,
        "ok.toml",
        '[daemon]\nmetrics_listen = ""\ncontrol_group = "adm"\nmax_exec_probes = 4\n',
    )
    assert ("", "adm", 4) == (
        config.daemon.metrics_listen,
        config.daemon.control_group,
        config.daemon.max_exec_probes,
    )
    path = write(
        tmp_path,
        "bad.toml",
        '[daemon]\nmetrics_listen = "localhost"\nreconcile_interval = 0\nremove_on_stop = 1\n',
    )
    assert [
        ("daemon.metrics_listen", 2),
        ("daemon.reconcile_interval", 3),
        ("daemon.remove_on_stop", 4),
    ] == where(path)


def test_sorry_quorum_panic(tmp_path: Path) -> None:
    """Inline tables for sorry server, quorum and panic are validated key by key."""
    path = write(
        tmp_path,
        "c.toml",
        SERVICE
        + """
sorry_server = { address = "10.0.0.9", weigth = 1 }
quorum = { minimum = -1, up_command = "" }
panic = { threshold = 1.5 }
""",
    )
    assert [
        ("services.web.sorry_server.weigth", 5,
         'unknown key in sorry_server (did you mean "weight"?)'),
        ("services.web.quorum.minimum", 6, "-1 is out of range (expected >= 0)"),
        ("services.web.quorum.up_command", 6,
         "expected a command (a list of strings, or a string), got an empty one: \"\""),
        ("services.web.panic.threshold", 7, "1.5 is out of range (expected > 0 and <= 1)"),
    ] == [(k, line, m) for _, k, line, m in problems(path)]  # fmt: skip


def test_wrong_shapes(tmp_path: Path) -> None:
    """A scalar where a table or a list of tables belongs is named."""
    path = write(
        tmp_path, "c.toml", 'daemon = 3\nservices = { web = 1 }\n[defaults]\ncheck = "x"\n'
    )
    assert [
        ("daemon", 1, "expected a table, got 3"),
        ("services.web", 2, "expected a table, got 1"),
        ("defaults.check", 4, 'expected a table, got "x"'),
    ] == [(k, line, m) for _, k, line, m in problems(path)]


def test_syntax_error_has_its_line(tmp_path: Path) -> None:
    """A TOML syntax error names the file and the line."""
    path = write(tmp_path, "c.toml", "[daemon]\nstate_dir = /var\n")
    [(file, key, line, message)] = problems(path)
    assert (path, "", 2) == (file, key, line)
    assert message.startswith("TOML syntax error: ")


def test_unreadable_and_unknown_format(tmp_path: Path) -> None:
    """A missing file and an unknown extension are problems, not tracebacks."""
    missing = str(tmp_path / "nope.toml")
    assert [(missing, "", None, "cannot read the file: No such file or directory")] == problems(
        missing
    )
    yaml = write(tmp_path, "c.yaml", "a: 1\n")
    assert "unknown config format (expected one of .toml, .ini, .conf, .cf)" == only_message(yaml)
