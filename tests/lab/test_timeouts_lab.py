"""IPVS connection timeouts in the real kernel: set from ``[ipvs]``, read back with
``ipvsadm -L --timeout``, changed by hand with ``ipvsadm --set`` and put back by drift
repair (``tests/lab/guest_timeouts.py`` runs in the guest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import harness
from lab.harness import Scenario
from tests.lab.conftest import Lab

pytestmark = pytest.mark.lab

HERE = Path(__file__).resolve().parent

CONFIG = """
[ipvs]
tcp = 3600
tcp_fin = 30
udp = 60

[services.web]
address = "192.168.3.108"
port = 80
initial_state = "up"

[[services.web.real_servers]]
address = "10.0.0.2"
"""


def test_timeouts_are_set_shown_and_repaired_in_the_kernel(lab: Lab) -> None:
    """The kernel's defaults (900 120 300) become the configured 3600 30 60 at start;
    ``ipvsadm --set 100 101 102`` is undone by one drift repair (logged
    ``drift.repaired``), and a second repair finds nothing to do."""
    work = lab.work / "timeouts"  # kept in the guest (the boot's own folder)
    work.mkdir()
    (work / "lvsd.toml").write_text(CONFIG)
    script = HERE / "guest_timeouts.py"
    shell = f'"$LAB_PYTHON" {script} {work / "lvsd.toml"} "$LAB_RESULTS/timeouts.json"\n'
    result = harness.run(work, Scenario(shell=shell))
    assert result.ok, result.log()
    record = result.json("timeouts.json")
    assert "Timeout (tcp tcpfin udp): 900 120 300" == record["before"]
    assert "Timeout (tcp tcpfin udp): 3600 30 60" == record["started"]
    assert "tcp 3600 tcpfin 30 udp 60" == record["status"]
    assert "Timeout (tcp tcpfin udp): 100 101 102" == record["changed"]
    assert "Timeout (tcp tcpfin udp): 3600 30 60" == record["repaired"]
    assert [
        ["timeouts.set", "tcp 3600 tcpfin 30 udp 60"],
        [
            "drift.repaired",
            "set-timeouts tcp 3600 tcpfin 30 udp 60 (was tcp 100 tcpfin 101 udp 102)",
        ],
    ] == record["events"]
