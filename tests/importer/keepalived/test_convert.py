"""keepalived.conf conversion: each mapping, the Debian samples, malformed input."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.config.model import FailureAction, InitialState
from lvsd.errors import ImportConfigError
from lvsd.importer import convert
from lvsd.model import Forward, Protocol, SchedFlag, Scheduler, TunnelType
from tests.importer.helpers import FIXTURES, KEEPALIVED_SAMPLES, converted, keywords, loads_back


def test_full_fixture_maps_every_keyword(tmp_path: Path) -> None:
    """The service keywords map onto the lvsd service, and the result loads."""
    result, tree = converted("keepalived", FIXTURES / "full.conf")
    assert result.unconverted == []
    web = tree["services"]["udp_192_0_2_10_80"]
    expected = {
        "address": "192.0.2.10",
        "port": 80,
        "protocol": "udp",
        "scheduler": "sh",
        "flags": ["sh-fallback", "sh-port"],
        "forward": "tun",
        "tunnel": "gue",
        "tunnel_port": 6080,
        "persistence": 360,
        "persistence_netmask": 24,
        "one_packet": True,
        "initial_state": "down",
        "on_failure": "quiesce",
        "sorry_server": {"address": "192.0.2.99"},  # TUN: keepalived uses the service port
        "quorum": {"minimum": 2, "hysteresis": 1, "up_command": ["/usr/local/bin/up.sh", "arg"]},
    }
    assert expected == {k: v for k, v in web.items() if k != "real_servers"}
    config = loads_back(result, tmp_path)
    service = next(s for s in config.services if s.name == "udp_192_0_2_10_80")
    assert (Scheduler.SH, frozenset({SchedFlag.FALLBACK, SchedFlag.PORT})) == (
        service.scheduler,
        service.flags,
    )
    assert (
        service.key.protocol,
        service.initial_state,
        service.on_failure,
    ) == (Protocol.UDP, InitialState.DOWN, FailureAction.QUIESCE)
    server = service.real_servers[0]
    assert (
        server.weight,
        server.upper_threshold,
        server.lower_threshold,
        server.forward,
        server.tunnel,
        server.tunnel_port,
    ) == (3, 100, 10, Forward.TUN, TunnelType.GUE, 6080)


def test_full_fixture_checks() -> None:
    """HTTP_GET and MISC_CHECK options, inherited delay_loop and keepalived's retry."""
    _, tree = converted("keepalived", FIXTURES / "full.conf")
    http, misc = tree["services"]["udp_192_0_2_10_80"]["real_servers"][0]["checks"]
    expected_http = {
        "kind": "http",
        "interval": 10.0,
        "timeout": 2.0,
        "rise": 1,
        "fall": 3,
        "port": 8080,
        "source": "192.0.2.1",
        "host": "www.example.com",
        "path": "/health",
        "status": ["200", "300-399"],
    }
    assert expected_http == http
    expected_misc = {
        "kind": "exec",
        "interval": 10.0,
        "timeout": 4.0,
        "rise": 1,
        "fall": 1,
        "command": ["/bin/check", "--x"],
        "dynamic": True,
        "user": "nobody",
    }
    assert expected_misc == misc


def test_included_fwmark_service_and_probe_kinds() -> None:
    """The included file's fwmark service: DR, DNS/SMTP/UDP checks, keepalived defaults."""
    _, tree = converted("keepalived", FIXTURES / "full.conf")
    service = tree["services"]["fwmark_7"]
    assert (
        service["fwmark"],
        service["scheduler"],
        service["forward"],
        service["initial_state"],
        service["on_failure"],
    ) == (7, "rr", "dr", "up", "remove")
    dns, smtp, udp = service["real_servers"][0]["checks"]
    assert (
        dns["kind"], dns["type"], dns["name"], dns["interval"], dns["timeout"], dns["fall"]
    ) == ("dns", "A", "example.com", 60.0, 5.0, 4)  # fmt: skip
    assert (smtp["kind"], smtp["helo"], smtp["fall"]) == ("smtp", "mx.example.com", 2)
    assert (
        udp["kind"], udp["send"], udp["require_reply"], udp["expect"]
    ) == ("udp", "hi", True, "ok")  # fmt: skip


def test_source_comments_name_file_and_line() -> None:
    """Every service, real server and check says where it came from."""
    from lvsd.importer.emit import render

    text = render(convert("keepalived", str(FIXTURES / "full.conf")).document)
    assert "# from full.conf:4 (virtual_server 192.0.2.10 80)" in text
    assert "# from full.conf:22 (real_server 198.51.100.1 80)" in text
    assert "# from inc/dns.conf:1 (virtual_server fwmark 7)" in text


def _conf(tmp_path: Path, text: str) -> str:
    path = tmp_path / "keepalived.conf"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_group_expands_to_one_service_per_member(tmp_path: Path) -> None:
    """virtual_server group: ranges and fwmarks each become a service with the same pool."""
    path = _conf(
        tmp_path,
        "virtual_server_group G {\n 10.0.0.1-3 80\n fwmark 5\n}\n"
        "virtual_server group G {\n lb_algo rr\n real_server 10.1.0.1 80 {\n }\n}\n",
    )
    result, tree = converted("keepalived", path)
    names = list(tree["services"])
    assert names == ["udp_10_0_0_1_80", "udp_10_0_0_2_80", "udp_10_0_0_3_80", "fwmark_5"]
    assert all(s["real_servers"][0]["address"] == "10.1.0.1" for s in tree["services"].values())
    assert len(loads_back(result, tmp_path).services) == 4


def test_timeout_not_below_interval_raises_interval(tmp_path: Path) -> None:
    """keepalived allows connect_timeout >= delay_loop; lvsd gets interval = sum."""
    path = _conf(
        tmp_path,
        "virtual_server 10.0.0.1 80 {\n delay_loop 3\n real_server 10.1.0.1 80 {\n"
        "  TCP_CHECK {\n   connect_timeout 5\n  }\n }\n}\n",
    )
    result, tree = converted("keepalived", path)
    check = tree["services"]["udp_10_0_0_1_80"]["real_servers"][0]["checks"][0]
    assert (check["interval"], check["timeout"]) == (8.0, 5.0)
    loads_back(result, tmp_path)


def test_keepalived_defaults_made_explicit(tmp_path: Path) -> None:
    """No lb_algo, lb_kind, protocol, delay_loop: keepalived's wlc, NAT, UDP (sic: its
    check_data.c, and the lab), 60 s are written out."""
    path = _conf(
        tmp_path,
        "virtual_server 10.0.0.1 80 {\n real_server 10.1.0.1 80 {\n  TCP_CHECK {\n  }\n }\n}\n",
    )
    _, tree = converted("keepalived", path)
    service = tree["services"]["udp_10_0_0_1_80"]
    check = service["real_servers"][0]["checks"][0]
    assert (service["scheduler"], service["forward"], service["protocol"]) == ("wlc", "nat", "udp")
    assert (check["interval"], check["timeout"], check["rise"], check["fall"]) == (60.0, 5.0, 1, 2)


def test_unconvertible_keywords_listed(tmp_path: Path) -> None:
    """VRRP, BFD_CHECK, omega with a quorum_down are listed with file and line."""
    path = _conf(
        tmp_path,
        "global_defs {\n router_id x\n}\nvrrp_instance VI {\n}\n"
        "virtual_server 10.0.0.1 80 {\n omega\n quorum_down /bin/down\n"
        " real_server 10.1.0.1 80 {\n  BFD_CHECK {\n  }\n }\n}\n",
    )
    result = convert("keepalived", path)
    expected = [
        (1, "global_defs"),
        (4, "vrrp_instance"),
        (7, "omega"),
        (10, "BFD_CHECK"),
    ]
    assert expected == keywords(result)
    vrrp = result.unconverted[1]
    assert f"{path}:4: vrrp_instance: not converted:" in str(vrrp)
    assert "keep keepalived running for VRRP only" in str(vrrp)


def test_notify_scripts_and_omega_convert(tmp_path: Path) -> None:
    """notify_up/notify_down (with user and group) become the real server's notify
    table; the service's omega sets on_stop; the result loads."""
    path = _conf(
        tmp_path,
        "virtual_server 10.0.0.1 80 {\n omega\n protocol TCP\n"
        " real_server 10.1.0.1 80 {\n"
        '  notify_up "/bin/up.sh web UP" nobody nogroup\n'
        "  notify_down /bin/down.sh\n }\n"
        " real_server 10.1.0.2 80 {\n }\n}\n",
    )
    result, tree = converted("keepalived", path)
    assert [] == result.unconverted
    servers = tree["services"]["tcp_10_0_0_1_80"]["real_servers"]
    assert {
        "up": ["/bin/up.sh", "web", "UP"],
        "down": ["/bin/down.sh"],
        "user": "nobody",
        "group": "nogroup",
        "on_stop": True,
    } == servers[0]["notify"]
    assert "notify" not in servers[1]
    notify = loads_back(result, tmp_path).services[0].real_servers[0].notify
    assert notify is not None
    assert (("/bin/down.sh",), True) == (notify.down, notify.on_stop)


def test_lvs_timeouts_convert_to_the_ipvs_section(tmp_path: Path) -> None:
    """global_defs' lvs_timeouts becomes [ipvs]; the rest of global_defs is listed."""
    path = _conf(
        tmp_path,
        "global_defs {\n router_id x\n lvs_timeouts tcp 7200 tcpfin 30 udp 60\n}\n"
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n real_server 10.1.0.1 80 {\n }\n}\n",
    )
    result, tree = converted("keepalived", path)
    assert {"tcp": 7200, "tcp_fin": 30, "udp": 60} == tree["ipvs"]
    assert [(1, "global_defs")] == keywords(result)
    ipvs = loads_back(result, tmp_path).ipvs
    assert (7200, 30, 60) == (ipvs.tcp, ipvs.tcp_fin, ipvs.udp)


def test_a_global_defs_of_only_lvs_timeouts_converts_whole(tmp_path: Path) -> None:
    """A global_defs holding only lvs_timeouts is converted with nothing left out."""
    path = _conf(tmp_path, "global_defs {\n lvs_timeouts udp 10\n}\n")
    result, tree = converted("keepalived", path)
    assert ({"udp": 10}, []) == (tree["ipvs"], result.unconverted)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("bogus_block {\n}\n", 1, "unknown top-level keyword 'bogus_block'"),
        ("virtual_server group NOPE {\n}\n", 1, "'NOPE' is not defined"),
        ("virtual_server 10.0.0.1 {\n}\n", 1, "needs a port"),
        ("virtual_server 10.0.0.x 80 {\n}\n", 1, "expected an IP address"),
        ("virtual_server 10.0.0.1 80 {\n lb_kind XX\n}\n", 2, "unknown forwarding method"),
        ("virtual_server 10.0.0.1 80 {\n protocol ICMP\n}\n", 2, "unknown protocol"),
        ("global_defs {\n lvs_timeouts tcp 1 sctp 2\n}\n", 2, "expected tcp, tcpfin or udp"),
        ("virtual_server 10.0.0.1 80 {\n real_server 10.1.0.1 80 {\n"
         "  lvs_method TUN type gue port x\n }\n}\n", 3, "expected an integer, got 'x'"),
        ("virtual_server 10.0.0.1 80 {\n lvs_method TUN type gue port 0\n"
         " real_server 10.1.0.1 80 {\n }\n}\n", 2, "tunnel port 0 is out of range"),
        ("virtual_server 10.0.0.1 80 {\n delay_loop nan\n real_server 10.1.0.1 80 {\n"
         "  TCP_CHECK {\n  }\n }\n}\n", 2, "expected a number, got 'nan'"),
    ],
)  # fmt: skip
def test_malformed_input(tmp_path: Path, text: str, line: int, message: str) -> None:
    """Malformed input is an ImportConfigError with file and line."""
    path = _conf(tmp_path, text)
    with pytest.raises(ImportConfigError, match=rf"keepalived.conf:{line}: .*{message}"):
        convert("keepalived", path)


#: Debian sample -> the (line, keyword) pairs it cannot convert.
SAMPLE_WARNINGS: dict[str, list[tuple[int, str]]] = {
    "keepalived.conf.HTTP_GET.port": [(3, "global_defs")],
    "keepalived.conf.IPv6": [(3, "global_defs")],
    "keepalived.conf.PING_CHECK": [(4, "global_defs")],
    "keepalived.conf.SMTP_CHECK": [(15, "global_defs"), (68, "host"), (72, "host"),
                                   (101, "host"), (107, "host")],
    "keepalived.conf.SSL_GET": [(3, "global_defs"), (13, "vrrp_instance")],
    "keepalived.conf.UDP_CHECK": [(4, "global_defs")],
    "keepalived.conf.conditional_conf": [(3, "@high"), (4, "@low"), (6, "vrrp_script"),
                                         (7, "@high"), (8, "@low"), (15, "vrrp_instance"),
                                         (19, "@high"), (20, "@low")],
    "keepalived.conf.fwmark": [(3, "global_defs")],
    "keepalived.conf.inhibit": [(3, "global_defs")],
    "keepalived.conf.misc_check": [(4, "global_defs")],
    "keepalived.conf.misc_check_arg": [(3, "global_defs")],
    "keepalived.conf.quorum": [(30, "omega")],
    "keepalived.conf.sample": [(3, "global_defs"), (13, "vrrp_instance")],
    "keepalived.conf.status_code": [(4, "global_defs")],
    "keepalived.conf.track_interface": [(3, "global_defs"), (7, "static_routes"),
                                        (14, "vrrp_instance")],
    "keepalived.conf.virtual_server_group": [(3, "global_defs")],
    "keepalived.conf.virtualhost": [(3, "global_defs")],
    "keepalived.conf.vrrp": [(3, "global_defs"), (13, "vrrp_instance"), (36, "vrrp_instance"),
                             (49, "vrrp_instance"), (67, "vrrp_instance")],
}  # fmt: skip


def _samples() -> list[str]:
    if not KEEPALIVED_SAMPLES.is_dir():
        return []
    return sorted(p.name for p in KEEPALIVED_SAMPLES.glob("keepalived.conf.*"))


needs_samples = pytest.mark.skipif(
    not KEEPALIVED_SAMPLES.is_dir(),
    reason=f"{KEEPALIVED_SAMPLES} is absent (apt-get install keepalived)",
)


@needs_samples
@pytest.mark.parametrize("name", _samples() or ["none"])
def test_debian_sample_converts_and_loads(name: str, tmp_path: Path) -> None:
    """Every Debian keepalived sample converts, lists what it cannot express (asserted
    where known: every sample's list is non-empty, since each has VRRP or global
    settings), and the result loads with lvsd's loader."""
    result = convert("keepalived", str(KEEPALIVED_SAMPLES / name))
    if name in SAMPLE_WARNINGS:
        assert SAMPLE_WARNINGS[name] == keywords(result)
    else:
        assert result.unconverted, "every sample has VRRP or global settings"
    config = loads_back(result, tmp_path)
    expected_services = sum(
        1 for t in result.document.tables if len(t.path) == 2 and t.path[0] == "services"
    )
    assert expected_services == len(config.services)


@needs_samples
def test_sample_fwmark_and_group_counts(tmp_path: Path) -> None:
    """The group sample expands to 13 services; the fwmark sample keeps port-less servers."""
    group = loads_back(
        convert("keepalived", str(KEEPALIVED_SAMPLES / "keepalived.conf.virtual_server_group")),
        tmp_path,
    )
    assert (len(group.services), group.real_server_count) == (13, 26)
    fwmark = loads_back(
        convert("keepalived", str(KEEPALIVED_SAMPLES / "keepalived.conf.fwmark")), tmp_path
    )
    assert [(r.port, r.checks[0].port) for r in fwmark.services[0].real_servers] == [
        (0, 80),
        (0, 80),
    ]


# keepalived's corrections of a virtual_server (check_data.c validate_check_config),
# checked in the lab by tests/lab/test_import_lab.py (case "defaults").


def test_ops_is_dropped_for_tcp_and_kept_for_udp_and_fwmark(tmp_path: Path) -> None:
    """keepalived resets one-packet scheduling on a TCP/SCTP service; UDP and
    firewall-mark services keep it."""
    path = _conf(
        tmp_path,
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n ops\n real_server 10.1.0.1 80 {\n }\n}\n"
        "virtual_server 10.0.0.1 53 {\n protocol UDP\n ops\n real_server 10.1.0.1 53 {\n }\n}\n"
        "virtual_server fwmark 3 {\n ops\n real_server 10.1.0.1 {\n }\n}\n",
    )
    result, tree = converted("keepalived", path)
    services = tree["services"]
    expected = {"tcp_10_0_0_1_80": None, "udp_10_0_0_1_53": True, "fwmark_3": True}
    assert expected == {name: s.get("one_packet") for name, s in services.items()}
    assert result.unconverted == []


def test_port_zero_service_becomes_persistent(tmp_path: Path) -> None:
    """One port-0 member makes a whole group persistent (keepalived's 360 s); the
    port-0 services themselves are listed (lvsd's config needs a port), so the file
    still loads."""
    path = _conf(
        tmp_path,
        "virtual_server 10.0.0.1 0 {\n protocol TCP\n real_server 10.1.0.1 0 {\n }\n}\n"
        "virtual_server_group G {\n 10.0.0.5 0\n 10.0.0.6 80\n}\n"
        "virtual_server group G {\n protocol TCP\n real_server 10.1.0.2 80 {\n }\n}\n"
        "virtual_server 10.0.0.9 80 {\n protocol TCP\n real_server 10.1.0.3 80 {\n }\n}\n",
    )
    result, tree = converted("keepalived", path)
    expected = {"tcp_10_0_0_6_80": 360, "tcp_10_0_0_9_80": None}
    assert expected == {n: s.get("persistence") for n, s in tree["services"].items()}
    assert [(1, "port 0"), (10, "port 0")] == keywords(result)
    loads_back(result, tmp_path)


def test_real_server_port_follows_keepalived_unless_nat(tmp_path: Path) -> None:
    """DR/TUN real servers get the service's port (0 under a firewall mark), NAT ones
    keep theirs; a check keeps the port that was written."""
    path = _conf(
        tmp_path,
        "virtual_server fwmark 7 {\n lb_kind DR\n"
        " real_server 10.1.0.5 80 {\n  TCP_CHECK {\n  }\n }\n}\n"
        "virtual_server 10.0.0.1 443 {\n protocol TCP\n lb_kind DR\n"
        " real_server 10.1.0.6 8443 {\n }\n"
        " real_server 10.1.0.7 8443 {\n  lvs_method NAT\n }\n}\n",
    )
    result, tree = converted("keepalived", path)
    fwmark = tree["services"]["fwmark_7"]["real_servers"][0]
    assert "port" not in fwmark
    assert 80 == fwmark["checks"][0]["port"]
    dr, nat = tree["services"]["tcp_10_0_0_1_443"]["real_servers"]
    assert (443, 8443) == (dr["port"], nat["port"])
    config = loads_back(result, tmp_path)
    ports = sorted(rs.port for s in config.services for rs in s.real_servers)
    assert [0, 443, 8443] == ports


def test_quorum_above_total_weight_is_lowered(tmp_path: Path) -> None:
    """keepalived lowers quorum to the total weight and hysteresis below quorum."""
    path = _conf(
        tmp_path,
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n quorum 10\n hysteresis 5\n"
        " real_server 10.1.0.1 80 {\n  weight 2\n }\n real_server 10.1.0.2 80 {\n }\n}\n",
    )
    _, tree = converted("keepalived", path)
    assert {"minimum": 3, "hysteresis": 2} == tree["services"]["tcp_10_0_0_1_80"]["quorum"]


def test_virtual_server_without_real_servers_is_not_written(tmp_path: Path) -> None:
    """keepalived ignores a virtual_server with no real_server; so does the importer
    (the header says so), and the rest converts."""
    path = _conf(
        tmp_path,
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n lb_algo rr\n}\n"
        "virtual_server 10.0.0.2 80 {\n protocol TCP\n real_server 10.1.0.1 80 {\n }\n}\n",
    )
    result, tree = converted("keepalived", path)
    assert ["tcp_10_0_0_2_80"] == list(tree["services"])
    assert any("10.0.0.1 80" in line and "ignores" in line for line in result.document.header)
    assert result.complete


def test_sorry_server_inhibit_is_a_comment_not_a_gap(tmp_path: Path) -> None:
    """sorry_server_inhibit changes only whether an unneeded sorry server sits at
    weight 0 (keepalived) or is removed (lvsd): a comment, and the conversion is
    complete."""
    path = _conf(
        tmp_path,
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n sorry_server 10.1.0.9 80\n"
        " sorry_server_inhibit\n real_server 10.1.0.1 80 {\n }\n}\n",
    )
    result, tree = converted("keepalived", path)
    assert result.unconverted == []
    assert {"address": "10.1.0.9", "port": 80} == tree["services"]["tcp_10_0_0_1_80"][
        "sorry_server"
    ]
    service_table = next(
        t for t in result.document.tables if t.path == ("services", "tcp_10_0_0_1_80")
    )
    assert any("sorry_server_inhibit" in c for c in service_table.comments)


def test_log_all_failures_is_a_comment_on_each_check(tmp_path: Path) -> None:
    """log_all_failures (inherited like the other checker keywords) is not dropped
    silently: like delay_before_retry, each check it applies to says what lvsd does
    instead, and the conversion is complete."""
    path = _conf(
        tmp_path,
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n log_all_failures\n"
        " real_server 10.1.0.1 80 {\n  TCP_CHECK {\n  }\n }\n"
        " real_server 10.1.0.2 80 {\n  TCP_CHECK {\n   log_all_failures no\n  }\n }\n}\n",
    )
    result = convert("keepalived", path)
    expected = [
        [
            "log_all_failures: lvsd logs state changes (realserver.up/down); every "
            'failed probe counts in lvsd_probe_results_total{outcome="fail"}'
        ],
        [
            "log_all_failures no: lvsd logs state changes (realserver.up/down); every "
            'failed probe counts in lvsd_probe_results_total{outcome="fail"}'
        ],
    ]
    checks = [t for t in result.document.tables if t.path[-1:] == ("checks",)]
    assert expected == [[c for c in t.comments if "log_all_failures" in c] for t in checks]
    assert [] == result.unconverted


def test_lb_kind_inside_a_real_server_is_listed(tmp_path: Path) -> None:
    """keepalived 2.2.7 answers "Unknown keyword 'lb_kind'" inside a real_server (the
    lab's log) and keeps the service's method: the importer does the same and lists it."""
    path = _conf(
        tmp_path,
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n lb_kind DR\n"
        " real_server 10.1.0.1 80 {\n  lb_kind NAT\n }\n}\n",
    )
    result, tree = converted("keepalived", path)
    assert "forward" not in tree["services"]["tcp_10_0_0_1_80"]["real_servers"][0]
    assert [(5, "lb_kind")] == keywords(result)


@pytest.mark.parametrize(
    ("method", "sorry", "expected"),
    [
        ("DR", "10.1.0.9 8080", {"address": "10.1.0.9"}),
        ("NAT", "10.1.0.9 8080", {"address": "10.1.0.9", "port": 8080}),
        ("NAT", "10.1.0.9", {"address": "10.1.0.9"}),
    ],
)
def test_sorry_server_port_follows_keepalived(
    tmp_path: Path, method: str, sorry: str, expected: dict[str, object]
) -> None:
    """With DR/TUN keepalived gives the sorry server the service's port (lvsd's
    default, so no port is written); with NAT the port written stays."""
    path = _conf(
        tmp_path,
        f"virtual_server 10.0.0.1 80 {{\n protocol TCP\n lb_kind {method}\n"
        f" sorry_server {sorry}\n real_server 10.1.0.1 80 {{\n }}\n}}\n",
    )
    result, tree = converted("keepalived", path)
    assert expected == tree["services"]["tcp_10_0_0_1_80"]["sorry_server"]
    config = loads_back(result, tmp_path)
    assert config.services[0].sorry_server is not None
    assert (8080 if "port" in expected else 80) == config.services[0].sorry_server.port


#: docs/migration.md "Coverage of the samples": the service-level gaps per sample
#: (global_defs, VRRP, static_* blocks and @ lines aside).
SERVICE_GAPS = {
    "keepalived.conf.SMTP_CHECK": ["host", "host", "host", "host"],
    "keepalived.conf.quorum": ["omega"],
}
OUTSIDE_SERVICES = ("global_defs", "vrrp_", "static_", "@")


@needs_samples
def test_sample_coverage_is_what_the_migration_guide_says() -> None:
    """14 samples with a virtual_server convert it completely, two have the gaps of
    SERVICE_GAPS, and the samples without a virtual_server write no service."""
    gaps: dict[str, list[str]] = {}
    without_services: list[str] = []
    for name in _samples():
        result = convert("keepalived", str(KEEPALIVED_SAMPLES / name))
        if not any(t.path[:1] == ("services",) for t in result.document.tables):
            without_services.append(name.removeprefix("keepalived.conf."))
            continue
        gaps[name] = [
            u.keyword for u in result.unconverted if not u.keyword.startswith(OUTSIDE_SERVICES)
        ]
    complete = sorted(n.removeprefix("keepalived.conf.") for n, g in gaps.items() if not g)
    assert SERVICE_GAPS == {n: g for n, g in gaps.items() if g}
    assert [
        "HTTP_GET.port", "IPv6", "PING_CHECK", "SSL_GET", "UDP_CHECK", "fwmark", "inhibit",
        "misc_check", "misc_check_arg", "sample", "status_code", "virtual_server_group",
        "virtualhost", "vrrp.lvs_syncd",
    ] == complete  # fmt: skip
    assert [
        "conditional_conf", "track_interface", "vrrp", "vrrp.localcheck", "vrrp.routes",
        "vrrp.rules", "vrrp.scripts", "vrrp.static_ipaddress", "vrrp.sync",
    ] == sorted(without_services)  # fmt: skip


def test_regex_no_match_becomes_body_not_regex(tmp_path: Path) -> None:
    """A url's regex with regex_no_match is a body_not_regex; without it, a body_regex."""
    path = _conf(
        tmp_path,
        "virtual_server 10.0.0.1 80 {\n real_server 10.1.0.1 80 {\n  HTTP_GET {\n"
        '   url {\n    path /a\n    regex "maint"\n    regex_no_match\n   }\n'
        '   url {\n    path /b\n    regex "ok"\n   }\n  }\n }\n}\n',
    )
    result, tree = converted("keepalived", path)
    (service,) = tree["services"].values()
    first, second = service["real_servers"][0]["checks"]
    assert ("maint", None) == (first.get("body_not_regex"), first.get("body_regex"))
    assert ("ok", None) == (second.get("body_regex"), second.get("body_not_regex"))
    assert [] == result.unconverted
    loads_back(result, tmp_path)


def test_ping_check_becomes_icmp(tmp_path: Path) -> None:
    """PING_CHECK is an icmp check with keepalived's retry as fall, and no port even
    on a fwmark service."""
    path = _conf(
        tmp_path,
        "virtual_server fwmark 3 {\n real_server 10.1.0.1 0 {\n  PING_CHECK {\n"
        "   retry 4\n   connect_timeout 2\n  }\n }\n}\n",
    )
    result, tree = converted("keepalived", path)
    (check,) = tree["services"]["fwmark_3"]["real_servers"][0]["checks"]
    assert ("icmp", 5, 2.0, None) == (
        check["kind"], check["fall"], check["timeout"], check.get("port")
    )  # fmt: skip
    assert [] == result.unconverted
    loads_back(result, tmp_path)
