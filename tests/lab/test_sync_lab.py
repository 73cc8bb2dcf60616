"""The kernel's sync daemons through lvsd's netlink backend, in the lab (Linux 6.1),
checked with ``ipvsadm -L --daemon``.

One boot (``guest_sync.py``) starts, reads and stops them step by step; the tests read
its record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab.harness import Scenario
from lab.topology import NatTopology
from tests.lab.conftest import Lab

pytestmark = pytest.mark.lab

HERE = Path(__file__).resolve().parent
MASTER = "master sync daemon (mcast=br0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"
BACKUP = "backup sync daemon (mcast=br0, syncid=9, maxlen=1400, group=239.1.2.3, port=8849, ttl=2)"


@pytest.fixture(scope="module")
def steps(module_lab: Lab) -> dict[str, dict[str, Any]]:
    """The guest's record, by step name."""
    result = module_lab.run(Scenario.python(HERE / "guest_sync.py"), topology=NatTopology())
    assert result.ok, result.log()
    record: list[dict[str, Any]] = result.json("sync.json")
    return {entry["step"]: entry for entry in record}


def test_a_master_started_over_netlink_is_the_one_ipvsadm_shows(steps: dict[str, Any]) -> None:
    """State, interface and syncid as asked; the kernel's defaults read back."""
    assert [] == steps["none"]["read"]
    entry = steps["start-master"]
    assert MASTER == entry["ipvsadm"]
    assert [["master", "br0", 7, 8848, 1, 1472, "224.0.0.81"]] == entry["fields"]


def test_a_backup_with_every_option_runs_beside_the_master(steps: dict[str, Any]) -> None:
    """The kernel runs both states at once; port, ttl, maxlen and group as sent."""
    entry = steps["start-backup"]
    assert f"{MASTER}\n{BACKUP}" == entry["ipvsadm"]
    assert ["backup", "br0", 9, 8849, 2, 1400, "239.1.2.3"] == entry["fields"][1]


def test_refusals_are_in_words_and_change_nothing(steps: dict[str, Any]) -> None:
    assert (
        "start-sync master br0 syncid=7: a daemon of this state is already running"
        == (steps["start-master-again"]["error"])
    )
    assert f"{MASTER}\n{BACKUP}" == steps["start-master-again"]["ipvsadm"]
    assert (
        "stop-sync master: no daemon of this state is running"
        == (steps["stop-master-again"]["error"])
    )
    assert steps["no-such-interface"]["error"].endswith(": no such interface")
    assert "group=10.0.0.1: invalid" in steps["not-multicast"]["error"]
    assert [] == steps["not-multicast"]["read"]


def test_stopping_one_state_leaves_the_other(steps: dict[str, Any]) -> None:
    assert BACKUP == steps["stop-master"]["ipvsadm"]
    assert "" == steps["stop-backup"]["ipvsadm"]
    assert [] == steps["stop-backup"]["read"]


def test_a_daemon_started_by_ipvsadm_reads_back(steps: dict[str, Any]) -> None:
    assert ["backup br0 syncid=5 group=224.0.0.81 port=8848 ttl=1 maxlen=1472"] == (
        steps["started-by-ipvsadm"]["read"]
    )
