"""``[sync]``: the kernel's connection sync daemons, in TOML and INI, and every mistake
reported with its file, key and line."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.cli import main
from lvsd.config import load
from lvsd.config.model import SyncConfig, SyncRole
from lvsd.model import SyncDaemon, SyncState
from tests.config.helpers import REPO, SERVICE, load_text, problems, write


def test_a_config_without_sync_leaves_the_daemons_alone(tmp_path: Path) -> None:
    assert None is load_text(tmp_path, "a.toml", SERVICE).sync


def test_every_key_in_toml(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        "a.toml",
        SERVICE
        + """
        [sync]
        state = "both"
        interface = "eth1"
        syncid = 7
        port = 8849
        ttl = 2
        maxlen = 1400
        group = "239.1.2.3"
        """,
    )
    expected = SyncConfig(
        state=SyncRole.BOTH,
        interface="eth1",
        syncid=7,
        port=8849,
        ttl=2,
        maxlen=1400,
        group="239.1.2.3",
    )
    assert expected == config.sync


def test_ini_gives_the_same_section(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        "a.ini",
        """
        [service web]
        address = 192.168.3.108
        port = 80

        [sync]
        state = master
        interface = eth1
        syncid = 7
        group = ff02::8:81
        """,
    )
    assert SyncConfig(state=SyncRole.MASTER, interface="eth1", syncid=7, group="ff02::8:81") == (
        config.sync
    )


@pytest.mark.parametrize(
    ("role", "states"),
    [
        (SyncRole.MASTER, [SyncState.MASTER]),
        (SyncRole.BACKUP, [SyncState.BACKUP]),
        (SyncRole.BOTH, [SyncState.MASTER, SyncState.BACKUP]),
    ],
)
def test_a_role_asks_for_its_daemons(role: SyncRole, states: list[SyncState]) -> None:
    sync = SyncConfig(state=role, interface="eth1", syncid=3, ttl=2)
    expected = tuple(SyncDaemon(state=state, interface="eth1", syncid=3, ttl=2) for state in states)
    assert expected == sync.daemons()


def test_every_mistake_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.toml",
        """
        [sync]
        state = "primary"
        interface = "eth1/2"
        syncid = 256
        port = 0
        ttl = 300
        maxlen = 70000
        group = "10.0.0.1"
        gruop = "x"
        """,
    )
    assert [
        (
            path,
            "sync.state",
            2,
            'unknown sync state "primary"; expected one of master, backup, both',
        ),
        (
            path,
            "sync.interface",
            3,
            '"eth1/2" is not an interface name (1 to 15 bytes, no / : or spaces)',
        ),
        (path, "sync.syncid", 4, "256 is out of range (expected 0..255)"),
        (path, "sync.port", 5, "0 is out of range (expected 1..65535)"),
        (path, "sync.ttl", 6, "300 is out of range (expected 1..255)"),
        (path, "sync.maxlen", 7, "70000 is out of range (expected 1..65507)"),
        (
            path,
            "sync.group",
            8,
            '"10.0.0.1" is not a multicast address (224.0.0.0/4 or ff00::/8)',
        ),
        (path, "sync.gruop", 9, 'unknown key in [sync] (did you mean "group"?)'),
    ] == problems(path)


def test_state_and_interface_are_required(tmp_path: Path) -> None:
    path = write(tmp_path, "a.toml", "[sync]\nsyncid = 7\n")
    assert [
        (path, "sync", 1, 'missing "state" (master, backup or both)'),
        (path, "sync", 1, 'missing "interface" (the interface the sync messages use)'),
    ] == problems(path)


def test_lvsd_check_reports_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "a.toml", SERVICE + '\n[sync]\nstate = "master"\ninterface = ""\n')
    assert 0 != main(["check", "-c", path])
    err = capsys.readouterr().err
    assert f'{path}:7: sync.interface: "" is not an interface name' in err


HA = REPO / "etc" / "examples" / "ha"


def test_the_ha_examples_differ_only_in_their_paths() -> None:
    """lvsd-a.toml and lvsd-b.toml: the same services and sync daemons, each
    director's own state folder and control socket."""
    a, b = (load(str(HA / f"lvsd-{x}.toml")) for x in "ab")
    assert a.services == b.services
    assert a.sync == b.sync == SyncConfig(state=SyncRole.BOTH, interface="eth1", syncid=7)
    assert ("/run/lvsd-a", "/run/lvsd-b") == (a.daemon.state_dir, b.daemon.state_dir)
    assert "/run/lvsd-a/serving" == a.daemon.serving_file
    assert "/run/lvsd-b/control.sock" == b.daemon.control_socket


def test_the_keepalived_examples_differ_in_router_id_state_and_priority_only() -> None:
    """The VRRP instances, their VIPs, the sync group and the tracking are the same on
    both, each director tracking its own lvsd's serving file."""

    def lines(x: str) -> list[str]:
        text = (HA / f"keepalived-{x}.conf").read_text()
        return [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]

    a, b = lines("a"), lines("b")
    different = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    assert [
        ("router_id dira", "router_id dirb"),
        ('file "/run/lvsd-a/serving"', 'file "/run/lvsd-b/serving"'),
        ("state MASTER", "state BACKUP"),
        ("priority 150", "priority 100"),
        ("state MASTER", "state BACKUP"),
        ("priority 150", "priority 100"),
    ] == different
    assert "192.168.3.108/24 dev eth0" in a
    assert "10.0.0.1/24 dev eth1" in a
