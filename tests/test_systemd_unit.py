"""Tests of systemd/lvsd.service: the settings the daemon relies on, and its exposure
score from ``systemd-analyze security`` (skipped where that tool is missing)."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from lvsd.cli import DEFAULT_CONFIG
from lvsd.config.model import DaemonConfig

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "lvsd.service"
MAX_EXPOSURE = 2.5


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file, each key with every value it was given, in order
    (systemd allows repeated keys, which configparser does not)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"assignment outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def test_parser_keeps_repeated_keys() -> None:
    """The little parser keeps every value of a repeated key, and skips comments."""
    parsed = parse_unit("[Service]\n# c\nA=1\nA=2\n\n[Install]\nB = x y\n")

    assert {"Service": {"A": ["1", "2"]}, "Install": {"B": ["x y"]}} == parsed


def test_notify_type_and_watchdog(service: dict[str, list[str]]) -> None:
    """The daemon talks sd_notify, is watched and restarted on failure."""
    assert ["notify"] == service["Type"]
    assert ["main"] == service["NotifyAccess"]
    assert ["30s"] == service["WatchdogSec"]
    assert ["on-failure"] == service["Restart"]
    assert ["mixed"] == service["KillMode"]


def test_commands_use_the_default_config(service: dict[str, list[str]]) -> None:
    """ExecStartPre validates and ExecStart runs the config the CLI defaults to."""
    assert [f"/usr/bin/lvsd check -c {DEFAULT_CONFIG}"] == service["ExecStartPre"]
    assert [f"/usr/bin/lvsd run -c {DEFAULT_CONFIG}"] == service["ExecStart"]


def test_reload_waits_for_the_daemons_answer(service: dict[str, list[str]]) -> None:
    """``systemctl reload`` runs ``lvsd reload`` (it waits and exits 1 when the daemon
    refuses the config), not a SIGHUP that always succeeds."""
    assert [f"/usr/bin/lvsd reload -c {DEFAULT_CONFIG}"] == service["ExecReload"]


def test_reload_answers_within_the_units_timeout(service: dict[str, list[str]]) -> None:
    """``lvsd reload`` gives up before systemd kills it (a reload job is bounded by
    TimeoutStartSec=), so a slow daemon shows lvsd's message, not a timeout."""
    from lvsd.cli import build_parser

    [timeout] = service["TimeoutStartSec"]
    args = build_parser().parse_args(["reload"])
    assert args.timeout < float(timeout.removesuffix("s"))


def test_directories_match_daemon_defaults(service: dict[str, list[str]]) -> None:
    """StateDirectory and RuntimeDirectory are where DaemonConfig's defaults point."""
    defaults = DaemonConfig()

    assert [PurePosixPath(defaults.state_dir).name] == service["StateDirectory"]
    assert "/var/lib" == str(PurePosixPath(defaults.state_dir).parent)
    assert [PurePosixPath(defaults.control_socket).parent.name] == service["RuntimeDirectory"]
    assert "/run" == str(PurePosixPath(defaults.control_socket).parent.parent)


def test_only_net_admin_capability(service: dict[str, list[str]]) -> None:
    """IPVS needs CAP_NET_ADMIN; the unit grants that and nothing more, to a non-root user."""
    assert ["CAP_NET_ADMIN"] == service["CapabilityBoundingSet"]
    assert ["CAP_NET_ADMIN"] == service["AmbientCapabilities"]
    assert ["yes"] == service["DynamicUser"]
    assert ["yes"] == service["NoNewPrivileges"]


def test_address_families_allow_netlink_and_probes(service: dict[str, list[str]]) -> None:
    """Netlink (IPVS), inet/inet6 (probes, metrics) and unix (control, notify) only."""
    [families] = service["RestrictAddressFamilies"]

    assert {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"} == set(families.split())


def test_no_settings_that_break_ipvs(service: dict[str, list[str]]) -> None:
    """PrivateNetwork would hide the host's IPVS table; PrivateUsers would void
    CAP_NET_ADMIN in the host namespace; IPAddressDeny would stop probes."""
    assert {"PrivateNetwork", "PrivateUsers", "IPAddressDeny"}.isdisjoint(service)


def exposure(unit: Path) -> float:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(
        [analyze, "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--offline" in result.stderr and result.returncode != 0:
        pytest.skip(f"systemd-analyze too old for --offline: {result.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    return float(match[1])


def test_exposure_score_is_low() -> None:
    """`systemd-analyze security --offline=yes` rates the unit at most 2.5."""
    assert exposure(UNIT) <= MAX_EXPOSURE


def test_exposure_check_can_fail(tmp_path: Path) -> None:
    """The score check is real: a bare unit scores far above the limit."""
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/usr/bin/lvsd run\n")

    assert exposure(bare) > MAX_EXPOSURE
