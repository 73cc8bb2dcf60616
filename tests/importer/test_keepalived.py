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
        "sorry_server": {"address": "192.0.2.99", "port": 8080},
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
    assert names == ["tcp_10_0_0_1_80", "tcp_10_0_0_2_80", "tcp_10_0_0_3_80", "fwmark_5"]
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
    check = tree["services"]["tcp_10_0_0_1_80"]["real_servers"][0]["checks"][0]
    assert (check["interval"], check["timeout"]) == (8.0, 5.0)
    loads_back(result, tmp_path)


def test_keepalived_defaults_made_explicit(tmp_path: Path) -> None:
    """No lb_algo, lb_kind, delay_loop: keepalived's wlc, NAT, 60 s are written out."""
    path = _conf(
        tmp_path,
        "virtual_server 10.0.0.1 80 {\n real_server 10.1.0.1 80 {\n  TCP_CHECK {\n  }\n }\n}\n",
    )
    _, tree = converted("keepalived", path)
    service = tree["services"]["tcp_10_0_0_1_80"]
    check = service["real_servers"][0]["checks"][0]
    assert (service["scheduler"], service["forward"], service["protocol"]) == ("wlc", "nat", "tcp")
    assert (check["interval"], check["timeout"], check["rise"], check["fall"]) == (60.0, 5.0, 1, 2)


def test_unconvertible_keywords_listed(tmp_path: Path) -> None:
    """VRRP, notify hooks, PING_CHECK, omega are listed with file and line."""
    path = _conf(
        tmp_path,
        "global_defs {\n router_id x\n}\nvrrp_instance VI {\n}\n"
        "virtual_server 10.0.0.1 80 {\n omega\n real_server 10.1.0.1 80 {\n"
        "  notify_up /bin/up\n  PING_CHECK {\n  }\n }\n}\n",
    )
    result = convert("keepalived", path)
    expected = [
        (1, "global_defs"),
        (4, "vrrp_instance"),
        (7, "omega"),
        (9, "notify_up"),
        (10, "PING_CHECK"),
    ]
    assert expected == keywords(result)
    vrrp = result.unconverted[1]
    assert f"{path}:4: vrrp_instance: not converted:" in str(vrrp)
    assert "keep keepalived running for VRRP only" in str(vrrp)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("bogus_block {\n}\n", 1, "unknown top-level keyword 'bogus_block'"),
        ("virtual_server group NOPE {\n}\n", 1, "'NOPE' is not defined"),
        ("virtual_server 10.0.0.1 {\n}\n", 1, "needs a port"),
        ("virtual_server 10.0.0.x 80 {\n}\n", 1, "expected an IP address"),
        ("virtual_server 10.0.0.1 80 {\n lb_kind XX\n}\n", 2, "unknown forwarding method"),
        ("virtual_server 10.0.0.1 80 {\n protocol ICMP\n}\n", 2, "unknown protocol"),
    ],
)
def test_malformed_input(tmp_path: Path, text: str, line: int, message: str) -> None:
    """Malformed input is an ImportConfigError with file and line."""
    path = _conf(tmp_path, text)
    with pytest.raises(ImportConfigError, match=rf"keepalived.conf:{line}: .*{message}"):
        convert("keepalived", path)


#: Debian sample -> the (line, keyword) pairs it cannot convert.
SAMPLE_WARNINGS: dict[str, list[tuple[int, str]]] = {
    "keepalived.conf.HTTP_GET.port": [(3, "global_defs")],
    "keepalived.conf.IPv6": [(3, "global_defs")],
    "keepalived.conf.PING_CHECK": [(4, "global_defs"), (23, "PING_CHECK")],
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
