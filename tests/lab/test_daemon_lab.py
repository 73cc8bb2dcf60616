"""``lvsd run`` against a real IPVS kernel (user-mode Linux), checked with ``ipvsadm -Ln``.

One boot (``scenario_daemon``): real HTTP servers in two namespaces behind a NAT
director, http checks every 1 s (timeout 0.9 s, fall 2, rise 2: a stall of the guest
shorter than two checks takes no healthy server out), slow start 3 s and a
sorry server. The tests read the timings and ``ipvsadm`` readings it brought back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab import harness
from lab.harness import Scenario
from lab.topology import NatTopology
from tests.lab.conftest import Lab

pytestmark = pytest.mark.lab

DRIVER = Path(__file__).resolve().parent / "scenario_daemon.py"
INTERVAL, TIMEOUT, FALL, RISE = 1.0, 0.9, 2, 2


@pytest.fixture(scope="module")
def record(module_lab: Lab) -> dict[str, Any]:
    """The one boot's measurements (``daemon.json``)."""
    work = module_lab.work / "daemon"
    work.mkdir()
    result = harness.run(work, Scenario.python(DRIVER), topology=NatTopology())
    assert result.ok, result.log() + "\n" + (result.results / "lvsd.log").read_text()
    data: dict[str, Any] = result.json("daemon.json")
    return data


def _line(table: str, realserver: str) -> list[str]:
    (line,) = [row.split() for row in table.splitlines() if realserver in row]
    return line


def test_start_brings_both_real_servers_in(record: dict[str, Any]) -> None:
    """Both real servers reach their weight (10) once probed."""
    assert ["->", "10.0.0.2:80", "Masq", "10"] == _line(record["start_table"], "10.0.0.2:80")[:4]
    assert ["->", "10.0.0.3:80", "Masq", "10"] == _line(record["start_table"], "10.0.0.3:80")[:4]


def test_stopped_server_is_quiesced_within_the_bound(record: dict[str, Any]) -> None:
    """rs1's server stopped: weight 0 within fall x interval + timeout + 0.5 s (plus any
    time the whole guest stood still meanwhile: ``lab.stall``)."""
    assert "0" == _line(record["down_table"], "10.0.0.2:80")[3]
    bound = FALL * INTERVAL + TIMEOUT + 0.5 + record["down_stalled_s"]
    assert record["down_s"] <= bound, record["down_stalled_s"]


def test_restarted_server_comes_back_and_ramps(record: dict[str, Any]) -> None:
    """rs1 back: weight > 0 within rise x interval (+ slack), then a visible ramp to 10."""
    assert record["up_s"] <= RISE * INTERVAL + 1.5 + record["up_stalled_s"]
    ramp = record["ramp"]
    assert ramp == sorted(ramp)
    assert 10 == ramp[-1]
    assert len(ramp) >= 3  # at least one weight between the first and the full one
    assert ramp[0] < 10


def test_all_down_brings_the_sorry_server(record: dict[str, Any]) -> None:
    """Both servers stopped: the sorry server appears; it leaves when they recover."""
    line = _line(record["sorry_table"], "10.0.0.100:80")
    assert ["->", "10.0.0.100:80", "Masq", "1"] == line[:4]
    assert "10.0.0.100" not in record["recovered_table"]


def test_reload_changes_one_weight(record: dict[str, Any]) -> None:
    """``lvsd reload`` after a weight edit: one op, seen in ``ipvsadm``."""
    expected = "edit-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=15 nat\nreloaded: 1 op\n"
    assert {"status": 0, "stdout": expected} == record["reload"]
    assert "15" == _line(record["reload_table"], "10.0.0.3:80")[3]


def test_drain_and_undrain(record: dict[str, Any]) -> None:
    """``lvsd drain`` puts weight 0 in the kernel at once; ``undrain`` restores it."""
    assert 0 == record["drain"]["status"]
    assert "0" == _line(record["drain_table"], "10.0.0.3:80")[3]
    assert "15" == _line(record["undrain_table"], "10.0.0.3:80")[3]


def test_broken_reload_fails_naming_the_problem(record: dict[str, Any]) -> None:
    """``lvsd reload`` of a config with an unknown scheduler exits non-zero, names the
    key and the bad value, and the kernel table is left as it was."""
    broken = record["broken_reload"]
    assert 0 != broken["status"]
    assert "scheduler" in broken["output"]
    assert "wrrr" in broken["output"]
    assert record["reload_table"] == record["broken_reload_table"]


def test_removed_server_is_drained_then_deleted(record: dict[str, Any]) -> None:
    """A reload that removes a real server holding a client's connection sets its weight
    to 0 and keeps it while the connection lasts; once it ends, it is deleted."""
    removal = record["removal"]
    held = removal["held"]
    assert 0 == removal["status"]
    line = _line(record["removal_lingering_table"], held)
    assert "0" == line[3]
    assert int(line[4]) >= 1  # the held connection is still active
    assert held not in record["removal_deleted_table"]


def test_hand_edit_is_repaired_and_hand_made_service_untouched(record: dict[str, Any]) -> None:
    """``ipvsadm -e`` on a managed destination (weight 15 -> 7) is set back within one
    reconcile interval (2 s, plus slack for the guest, plus any time the whole guest
    stood still); a service made by hand with ``ipvsadm -A`` is still there after the
    repair rounds."""
    assert "7" == _line(record["drift_edited_table"], "10.0.0.3:80")[3]
    assert "15" == _line(record["drift_table"], "10.0.0.3:80")[3]
    assert record["drift_s"] <= 2.0 + 1.5 + record["drift_stalled_s"], record["drift_stalled_s"]
    assert "TCP  192.168.3.108:8080 rr" in record["hand_service_table"]


def test_kill_9_and_start_writes_nothing(record: dict[str, Any]) -> None:
    """A daemon killed with SIGKILL and started again adopts the table: no op at all."""
    assert record["restart_same_table"]
    assert "kernel.op" not in record["restart_log"]
    assert "realserver.adopted" in record["restart_log"]


def test_stop_leaves_the_table(record: dict[str, Any]) -> None:
    """SIGTERM: exit 0, and the kernel table is left as it was."""
    assert 0 == record["exit_status"]
    assert record["before_stop_table"] == record["after_stop_table"]


def test_a_second_instance_writes_nothing_to_the_kernel(record: dict[str, Any]) -> None:
    """A second ``lvsd run`` beside the first (the control socket taken), and one whose
    metrics port is in use, exit 1 before any kernel write: ``ipvsadm -Ln`` unchanged."""
    same, port = record["second"]
    assert (1, 0, True) == (same["status"], same["ops"], same["same_table"]), same["output"]
    assert "already running" in same["output"]
    assert (1, 0, True) == (port["status"], port["ops"], port["same_table"]), port["output"]
    assert "cannot serve metrics" in port["output"]
