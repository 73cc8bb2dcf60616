"""The example configs shipped under etc/ load, and the TOML and INI ones agree."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from lvsd.cli import main
from lvsd.config import load
from lvsd.config.model import FailureAction, HttpOptions, StatusRange
from lvsd.model import Family, Forward, Protocol, SchedFlag, Scheduler, ServiceKey
from tests.config.helpers import REPO

TOML = str(REPO / "etc" / "lvsd.toml")
INI = str(REPO / "etc" / "lvsd.ini")
EXAMPLE = str(REPO / "etc" / "examples" / "dr-ipv6-fwmark.toml")


def test_toml_and_ini_examples_are_the_same_config() -> None:
    """etc/lvsd.toml and etc/lvsd.ini load to equal configs (the path aside)."""
    toml, ini = load(TOML), load(INI)
    assert dataclasses.replace(toml, path="") == dataclasses.replace(ini, path="")


@pytest.mark.parametrize("path", [TOML, INI])
def test_classic_nat_director(path: str) -> None:
    """The shipped config is the classic NAT director: one wrr service, two real
    servers of weight 1, an HTTP check for 200-299 on GET /."""
    config = load(path)
    assert path == config.path
    [service] = config.services
    assert ServiceKey.inet(Protocol.TCP, "192.168.3.108", 80) == service.key
    assert Scheduler.WRR == service.scheduler
    expected_servers = [("10.0.0.2", 80, 1, Forward.NAT), ("10.0.0.3", 80, 1, Forward.NAT)]
    actual_servers = [(str(r.address), r.port, r.weight, r.forward) for r in service.real_servers]
    assert expected_servers == actual_servers
    for server in service.real_servers:
        [check] = server.checks
        assert "http" == check.kind
        assert (
            HttpOptions(method="GET", path="/", status=(StatusRange(low=200, high=299),))
            == check.options
        )
        assert (2.0, 1.0, 2, 3) == (check.interval, check.timeout, check.rise, check.fall)
    assert "127.0.0.1:9475" == config.daemon.metrics_listen


def test_dr_ipv6_fwmark_example() -> None:
    """The second example has a DR service with sorry server, quorum and panic guard,
    an IPv6 service, an IPv6 firewall-mark service and an included DNS service."""
    config = load(EXAMPLE)
    services = {s.name: s for s in config.services}
    assert ["web4", "web6", "mark1", "dns"] == list(services)
    web4 = services["web4"]
    assert {Forward.DR} == {r.forward for r in web4.real_servers}
    assert web4.sorry_server is not None
    assert Forward.NAT == web4.sorry_server.forward
    assert web4.quorum is not None
    assert ("/usr/local/bin/announce", "web4", "up") == web4.quorum.up_command
    assert web4.panic is not None
    assert 3 == web4.panic.min_servers
    assert ["https", "https", "agent"] == [r.checks[0].kind for r in web4.real_servers]
    assert Family.INET6 == services["web6"].key.family
    assert FailureAction.REMOVE == services["web6"].on_failure
    assert {SchedFlag.FALLBACK, SchedFlag.PORT} == services["web6"].flags
    assert ServiceKey.mark(1, Family.INET6) == services["mark1"].key
    assert [0, 0] == [r.port for r in services["mark1"].real_servers]
    assert ipaddress.ip_address("10.0.0.5") == services["dns"].real_servers[0].address
    assert Protocol.UDP == services["dns"].key.protocol


@pytest.mark.parametrize("path", [TOML, INI, EXAMPLE])
def test_cli_check_prints_the_summary(path: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`lvsd check -c FILE` accepts every shipped config and prints its summary."""
    status = main(["check", "-c", path])
    out = capsys.readouterr().out
    assert 0 == status
    assert f"{load(path).summary()}\n" == out
