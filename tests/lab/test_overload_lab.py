"""A starved ``lvsd run`` against a real IPVS kernel (user-mode Linux), checked with
``ipvsadm -Ln``: lvsd's own trouble is never the real servers' failure.

One boot (``scenario_overload``): four healthy real servers, http checks every 1 s
with fall 1 (a single failed probe would be a weight 0). lvsd stopped for 2.5 s three
times, then out of descriptors for 3 s: no healthy server ever shows weight 0 in
``ipvsadm``; the stalls and the shortage show in its log and ``lvsd status``; a server
really killed afterwards is still taken out within the usual bound.
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

DRIVER = Path(__file__).resolve().parent / "scenario_overload.py"
INTERVAL, TIMEOUT, FALL = 1.0, 0.9, 1


@pytest.fixture(scope="module")
def record(module_lab: Lab) -> dict[str, Any]:
    """The one boot's measurements (``overload.json``)."""
    work = module_lab.work / "overload"
    work.mkdir()
    result = harness.run(work, Scenario.python(DRIVER), topology=NatTopology(real_servers=4))
    log = result.results / "lvsd.log"
    assert result.ok, result.log() + "\n" + (log.read_text() if log.exists() else "")
    data: dict[str, Any] = result.json("overload.json")
    return data


def test_stops_take_no_healthy_server_out(record: dict[str, Any]) -> None:
    """lvsd stopped for 2.5 s, three times: no weight 0 in any ipvsadm reading."""
    assert [] == record["stop_zeros"], record["log"][-4000:]


def test_no_descriptors_takes_no_healthy_server_out(record: dict[str, Any]) -> None:
    """Out of descriptors for 3 s: still no weight 0; the shortage is logged."""
    assert [] == record["zeros"], record["log"][-4000:]
    assert record["reads"] >= 50  # the watcher did watch (100 ms apart, ~20 s)
    assert "probe.local_error" in record["log"]
    assert "EMFILE" in record["log"]


def test_the_lag_is_visible(record: dict[str, Any]) -> None:
    """The stalls show as ``scheduler.late`` in the log and in ``lvsd status``."""
    assert "scheduler.late" in record["log"]
    assert "Checks: late by at most" in record["status"]


def test_a_dead_server_is_still_found(record: dict[str, Any]) -> None:
    """rs1 killed afterwards: weight 0 within fall x interval + timeout + 1.5 s; the
    others keep their weight."""
    assert record["down_s"] <= FALL * INTERVAL + TIMEOUT + 1.5 + 1.0, record["down_s"]
    assert [10, 10, 10] == record["others_after_down"]
    assert 0 == record["exit_status"]
