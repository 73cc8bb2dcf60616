"""The lab harness's pure parts, on the host (no boot): the init script it writes,
the NAT topology's shell, and the refusal to boot without linux.uml."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import harness
from lab.harness import Boot, LabError, NoTopology, Scenario, render_init
from lab.topology import NatTopology


def test_init_script_mounts_tmpfs_binds_work_folder_and_powers_off(tmp_path: Path) -> None:
    """The guest writes only to tmpfs and the work folder (bound back at its own path
    over the tmpfs on /tmp), loads the modules, records the exit status and halts
    without touching the host's wtmp."""
    text = render_init(
        Boot(modules=("ip_vs", "veth")), tmp_path, NoTopology(), Scenario(shell="true")
    )
    lines = text.splitlines()
    saved = next(line for line in lines if f"; mount --bind {tmp_path} /run/lab-keep/" in line)
    slot = saved.rsplit(" ", 1)[1]
    expected_in_order = [
        "#!/bin/sh",
        "mount -t tmpfs tmpfs /run",
        saved,
        "for d in /tmp /var/tmp; do mount -t tmpfs tmpfs $d; done",
        f"mkdir -p {tmp_path}; mount --bind {slot} {tmp_path}",
        "mount --bind /usr/lib/uml/modules /lib/modules",
        "modprobe ip_vs || echo 'lab: modprobe ip_vs failed'",
        "modprobe veth || echo 'lab: modprobe veth failed'",
        "true",
        "poweroff -f --no-wtmp",
    ]
    positions = [lines.index(line) for line in expected_in_order]
    assert sorted(positions) == positions
    assert "export PYTHONDONTWRITEBYTECODE=1" in lines
    assert f"export LAB_RESULTS={tmp_path}/results" in lines


def test_no_modules_means_no_modprobe(tmp_path: Path) -> None:
    """``Boot(modules=())`` boots a kernel without ip_vs (for the "not loaded" case)."""
    text = render_init(Boot(modules=()), tmp_path, NoTopology(), Scenario(shell="true"))
    expected: list[str] = []
    assert expected == [line for line in text.splitlines() if line.startswith("modprobe")]


def test_python_scenario_runs_the_venv_python_by_absolute_path() -> None:
    """PATH in the guest is minimal: a Python scenario names ``$LAB_PYTHON``."""
    expected = "\"$LAB_PYTHON\" /x/s.py --flag 'a b'\n"
    assert expected == Scenario.python("/x/s.py", "--flag", "a b").shell


def test_nat_topology_addresses_and_routes() -> None:
    """Three real servers: rs1..rs3 at 10.0.0.2..4 behind br0, default route via the
    director, client 192.168.3.50 reaching the VIP's subnet."""
    shell = NatTopology(real_servers=3).shell().splitlines()
    expected = [
        "ip -n rs1 addr add 10.0.0.2/24 dev eth0",
        "ip -n rs2 addr add 10.0.0.3/24 dev eth0",
        "ip -n rs3 addr add 10.0.0.4/24 dev eth0",
    ]
    assert expected == [
        line for line in shell if line.startswith("ip -n rs") and " addr add " in line
    ]
    assert "ip -n client addr add 192.168.3.50/24 dev eth0" in shell
    assert "ip addr add 192.168.3.108/24 dev dir-client" in shell
    assert "echo 1 > /proc/sys/net/ipv4/ip_forward" in shell
    expected_routes = 3
    assert expected_routes == sum("route add default via 10.0.0.1" in line for line in shell)


def test_nat_topology_refuses_zero_real_servers() -> None:
    """At least one real server."""
    with pytest.raises(ValueError, match="real_servers"):
        NatTopology(real_servers=0)


def test_run_without_linux_uml_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No linux.uml: ``run`` raises LabError naming the missing package, boots nothing."""
    monkeypatch.setattr(harness, "kernel_path", lambda: None)
    with pytest.raises(LabError, match="user-mode-linux"):
        harness.run(tmp_path, Scenario(shell="true"))
    assert not (tmp_path / "init.sh").exists()
