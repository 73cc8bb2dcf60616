"""The host preflight of a pair (``[sync]``): the sysctls that decide which
connections survive a failover, against fake /proc trees."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lvsd.config.model import Config, SyncConfig, SyncRole
from lvsd.preflight import Severity
from tests.test_preflight import Host, config, service

SYNC = SyncConfig(state=SyncRole.BOTH, interface="eth1", syncid=7)
NAMES = [
    "net.ipv4.vs.sync_version",
    "net.ipv4.vs.sync_threshold",
    "net.ipv4.vs.sloppy_tcp",
    "net.ipv4.vs.sync_persist_mode",
]


def pair(*, persistence: int = 0) -> Config:
    return dataclasses.replace(config(service(persistence=persistence)), sync=SYNC)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    found = Host(tmp_path).ipvs_loaded(sync_version=1, sloppy_tcp=0, sync_persist_mode=0)
    found.write("sys/net/ipv4/vs/sync_threshold", "3\t50\n")
    return found


def test_without_sync_nothing_of_it_is_checked(host: Host) -> None:
    assert not set(NAMES) & set(host.audit(config(service())))


def test_a_default_pair_is_ok_and_says_what_the_settings_mean(host: Host) -> None:
    found = host.audit(pair())
    assert [Severity.OK] * 3 == [found[name].severity for name in NAMES[:3]]
    assert "3 50" == found["net.ipv4.vs.sync_threshold"].value
    assert (
        "a connection is synced at its incoming packet 3, then every 50: a younger one is "
        "not on the backup yet." == found["net.ipv4.vs.sync_threshold"].consequence
    )
    assert "drops mid-stream packets" in found["net.ipv4.vs.sloppy_tcp"].consequence
    assert "net.ipv4.vs.sync_persist_mode" not in found  # no persistent service


def test_the_old_sync_protocol_warns(host: Host) -> None:
    host.write("sys/net/ipv4/vs/sync_version", "0\n")
    finding = host.audit(pair())["net.ipv4.vs.sync_version"]
    assert Severity.WARN is finding.severity
    assert "sysctl -w net.ipv4.vs.sync_version=1" in finding.fix


@pytest.mark.parametrize(("mode", "sloppy", "severity"), [
    (0, 0, Severity.OK), (1, 0, Severity.WARN), (1, 1, Severity.OK),
])  # fmt: skip
def test_templates_only_sync_needs_sloppy_tcp(
    host: Host, mode: int, sloppy: int, severity: Severity
) -> None:
    host.write("sys/net/ipv4/vs/sync_persist_mode", f"{mode}\n")
    host.write("sys/net/ipv4/vs/sloppy_tcp", f"{sloppy}\n")
    finding = host.audit(pair(persistence=300))["net.ipv4.vs.sync_persist_mode"]
    assert severity is finding.severity
    if severity is Severity.WARN:
        assert "sysctl -w net.ipv4.vs.sloppy_tcp=1" in finding.fix


def test_an_unreadable_setting_is_a_warning(host: Host) -> None:
    (host.proc / "sys/net/ipv4/vs/sloppy_tcp").unlink()
    (host.proc / "sys/net/ipv4/vs/sync_threshold").unlink()
    found = host.audit(pair())
    for name in ("net.ipv4.vs.sloppy_tcp", "net.ipv4.vs.sync_threshold"):
        assert (Severity.WARN, None) == (found[name].severity, found[name].value)
