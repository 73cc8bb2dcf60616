"""Every forwarding method and family carries traffic, and a dead real server is taken
out under it: DR and tunnels (ipip, GUE) on one L2 segment, IPv6 NAT and DR, a
firewall-mark service over two ports, a persistent service (one boot,
``scenario_forwarding``; ``ipvsadm -Ln`` in the director's namespace says what the
kernel did, the client's requests say what it carried)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab import harness
from lab.harness import DEFAULT_MODULES, Boot, Scenario
from tests.lab.conftest import Lab

pytestmark = pytest.mark.lab

DRIVER = Path(__file__).resolve().parent / "scenario_forwarding.py"
INTERVAL, TIMEOUT, FALL = 1.0, 0.9, 2
#: The traffic generator's limit per request (scenario_forwarding).
REQUEST_TIMEOUT = 3.0
CASES = ("dr", "dr6", "tun-ipip", "tun-gue", "nat6", "fwmark", "persistent")
#: ipvsadm's word for each case's forwarding method
FORWARD = {"dr": "Route", "dr6": "Route", "tun-ipip": "Tunnel", "tun-gue": "Tunnel"}
MODULES = (
    *DEFAULT_MODULES,
    *("ipip", "fou"),
    *("x_tables", "ip_tables", "iptable_mangle", "xt_mark", "xt_multiport", "xt_tcpudp"),
)


@pytest.fixture(scope="module")
def record(module_lab: Lab) -> dict[str, Any]:
    work = module_lab.work / "forwarding"
    work.mkdir()
    boot = Boot(modules=MODULES, mem="512M", timeout=600.0)
    result = harness.run(work, Scenario.python(DRIVER), boot=boot)
    assert result.ok, result.log()
    data: dict[str, Any] = result.json("forwarding.json")
    return data


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest, record: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = record[request.param]
    assert "error" not in found, found["error"]
    found["name"] = request.param
    return found


def test_the_kernel_forwards_as_configured(case: dict[str, Any]) -> None:
    word = FORWARD.get(case["name"], "Masq")
    lines = [line.split() for line in case["table"].splitlines() if "->" in line][1:]
    assert 2 == len(lines), case["table"]
    assert {word} == {fields[2] for fields in lines}, case["table"]


def test_both_real_servers_answer_through_the_vip(case: dict[str, Any]) -> None:
    """Before the kill no request fails and both real servers answer (over both ports
    together for the firewall mark); a persistent client sticks to one of them."""
    answered: set[str] = set()
    for stream in case["traffic"]:
        before = stream["before"]
        assert 0 == before["failed"], before
        assert before["sent"] > 0, before
        answered |= set(before["servers"])
    if case["name"] == "persistent":
        assert 1 == len(answered), case["traffic"]
    else:
        assert {"rs1", "rs2"} == answered, case["traffic"]


def test_a_killed_real_server_is_taken_out_under_traffic(case: dict[str, Any]) -> None:
    """Weight 0 (or removed, for DR and tunnels) within fall x interval + timeout + 1 s
    (plus any stall of the whole guest); from 1 s after that every request succeeds, answered by
    the other server; the window of failed requests (first failed start to last failed
    end) is no longer than the detection plus one request's timeout."""
    bound = FALL * INTERVAL + TIMEOUT + 1.0 + case["down_stalled_s"]
    assert case["down_s"] <= bound, case["down_table"]
    survivor = "rs2" if case["victim"] == "rs1" else "rs1"
    for stream in case["traffic"]:
        late = stream["late"]
        assert late["sent"] > 0, stream
        assert (0, [survivor]) == (late["failed"], list(late["servers"])), stream
        assert stream["after"]["failure_window_ms"] <= 1000 * (bound + REQUEST_TIMEOUT), stream


def test_stop_removes_what_it_added(case: dict[str, Any]) -> None:
    """``remove_on_stop``: SIGTERM exits 0 and leaves the director's table empty."""
    assert 0 == case["exit_status"]
    services = [
        line for line in case["after_stop_table"].splitlines() if line[:3] in ("TCP", "FWM")
    ]
    assert [] == services, case["after_stop_table"]
