"""Every probe kind against real servers in their own namespaces, each taken out and
back, in one boot (``scenario_probes``): ``ipvsadm -Ln`` in the director's namespace
says what the kernel did, lvsd's status why, and the client's requests (tcp, https,
agent, exec) what the traffic saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab import harness
from lab.harness import Boot, Scenario
from tests.lab.conftest import Lab

pytestmark = pytest.mark.lab

DRIVER = Path(__file__).resolve().parent / "scenario_probes.py"
FALL, RISE = 3, 1
WEIGHT = 10
#: Detection slack beyond fall x interval + timeout (or rise x interval): the poll of
#: ipvsadm, a guest whose one CPU also runs servers and traffic.
SLACK = 2.0
TRAFFIC = ("tcp", "https", "agent", "exec")
#: Kinds taken out by closing their listener: requests fail until lvsd takes them out.
KILLED = ("tcp", "https")
#: The reason lvsd's status gives for each victim once out.
REASONS = {
    "tcp": "refused", "https": "refused", "exec": "exit", "dns": "status", "smtp": "status",
    "udp": "body", "icmp": "timeout", "imap": "status", "pop3": "status", "ftp": "status",
    "mysql": "status", "pgsql": "status", "ldap": "status", "sip": "status", "radius": "status",
}  # fmt: skip
KINDS = (*REASONS, "agent")


@pytest.fixture(scope="module")
def record(module_lab: Lab) -> dict[str, Any]:
    work = module_lab.work / "probes"
    work.mkdir()
    boot = Boot(mem="512M", timeout=420.0, env={"PYTHONPATH": str(harness.REPO)})
    result = harness.run(work, Scenario.python(DRIVER), boot=boot)
    assert result.ok, result.log()
    data: dict[str, Any] = result.json("probes.json")
    assert "error" not in data, data["error"] + "\n" + (result.results / "lvsd.log").read_text()
    return data


def _step(record: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in record["steps"] if s["step"] == name]
    assert 1 == len(found), record["steps"]
    return found[0]


def _weights(table: str) -> dict[str, int]:
    found = {}
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "->" and fields[1] != "RemoteAddress:Port":
            found[fields[1]] = int(fields[3])
    return found


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def test_every_real_server_comes_up(record: dict[str, Any], kind: str) -> None:
    """Each kind's probe passes against its real server(s): full weight in the kernel."""
    seen = _weights(record["start_table"])
    found = record["kinds"][kind]
    for address in filter(None, (found["victim"], found["partner"])):
        assert WEIGHT == seen.get(address), record["start_table"]


def test_each_victim_is_taken_out_in_time(record: dict[str, Any], kind: str) -> None:
    """Broken (or closed, or drained), each victim gets weight 0 within fall x interval
    + timeout + slack (plus any stall of the whole guest), for the reason its kind says;
    its partner stays in."""
    out = _step(record, "out")
    found = record["kinds"][kind]
    bound = FALL * found["interval"] + found["timeout"] + SLACK + out["stalled_s"][kind]
    if kind == "agent":  # drain takes effect on the next answer: one interval
        bound = found["interval"] + found["timeout"] + SLACK + out["stalled_s"][kind]
    assert out["taken_s"][kind] <= bound, out["table"]
    status = record["out_status"][found["victim"]]
    if kind == "agent":
        assert "agent: drain (drain)" in status["detail"], status
    else:
        assert REASONS[kind] == status["reason"], status
    if found["partner"]:
        assert WEIGHT == _weights(out["table"])[found["partner"]], out["table"]


def test_each_victim_comes_back_in_time(record: dict[str, Any], kind: str) -> None:
    """Restored, each victim is back at full weight within rise x interval + timeout +
    slack (plus stalls), and stays there to the end."""
    back = _step(record, "back")
    found = record["kinds"][kind]
    bound = RISE * found["interval"] + found["timeout"] + SLACK + back["stalled_s"][kind]
    assert back["taken_s"][kind] <= bound, back["table"]
    victim = found["victim"]
    assert WEIGHT == _weights(record["end_table"])[victim], record["end_table"]


def test_agent_weights_drain_and_down(record: dict[str, Any]) -> None:
    """The agent's ``50%`` halves the kernel weight; ``drain`` sets it to 0 with the
    server up; ``down`` keeps it at 0 with the server down (reason status)."""
    found = record["kinds"]["agent"]
    victim = found["victim"]
    weight = _step(record, "weight")
    assert WEIGHT // 2 == _weights(weight["table"])[victim], weight["table"]
    bound = found["interval"] + found["timeout"] + SLACK + weight["stalled_s"]["agent"]
    assert weight["taken_s"]["agent"] <= bound, weight
    down = record["agent_down"]
    assert 0 == _weights(down["table"])[victim], down["table"]
    assert ("status", False) == (down["status"]["reason"], down["status"]["up"]), down["status"]
    assert "agent: down (down)" in down["status"]["detail"], down["status"]


def test_exec_exit_code_sets_the_weight(record: dict[str, Any]) -> None:
    """exec with ``dynamic``: exit 12 -> weight 10 (the configured bound), 7 -> 5,
    1 -> down."""
    victim = record["kinds"]["exec"]["victim"]
    assert "exit 12, weight 10" in record["start_status"][victim]["detail"]
    weight = _step(record, "weight")
    assert 5 == _weights(weight["table"])[victim], weight["table"]
    assert "exit 1" in record["out_status"][victim]["detail"]


def test_https_refuses_untrusted_chains(record: dict[str, Any]) -> None:
    """A self-signed certificate and one from another CA: those real servers never get
    a weight, down for reason tls from start to end."""
    bad = record["kinds"]["https"]["bad"]
    assert 2 == len(bad)
    for status in ("out_status", "end_status"):
        for address in bad:
            assert "tls" == record[status][address]["reason"], record[status][address]
    for table in (record["start_table"], record["end_table"]):
        for address in bad:
            assert 0 == _weights(table).get(address, 0), table


@pytest.mark.parametrize("name", TRAFFIC)
def test_traffic_while_out_and_back(record: dict[str, Any], name: str) -> None:
    """Before: no request fails, both real servers answer. Once the victim is out only
    its partner answers, without a failure; back, both answer again. agent and exec
    take the victim out gracefully: not one request fails at any time; a killed victim
    (tcp, https) fails requests only within the detection window."""
    found = record["kinds"][name]
    traffic = found["traffic"]
    victim, partner = found["victim"], found["partner"]
    before, late, back = traffic["before"], traffic["late"], traffic["back"]
    assert (0, True) == (before["failed"], before["sent"] > 0), before
    assert set(before["servers"]) == {_name(victim), _name(partner)}, before
    assert (0, True) == (late["failed"], late["sent"] > 0), late
    assert _name(partner) in late["servers"], late
    if name != "agent":  # see test_a_drained_agent_server_gets_no_new_connection
        assert [_name(partner)] == list(late["servers"]), late
    assert (0, True) == (back["failed"], back["sent"] > 0), back
    assert _name(victim) in back["servers"], back
    if name in KILLED:
        out = _step(record, "out")
        window = FALL * found["interval"] + found["timeout"] + SLACK + 1.0
        window += out["stalled_s"][name]
        assert traffic["out"]["failure_window_ms"] <= 1000 * window, traffic["out"]
    else:
        assert 0 == traffic["all"]["failed"], traffic["all"]


def _name(address: str) -> str:
    """The protocol server's answer for the real server at ``address``: its name."""
    kind = {"443": "https"}.get(address.rsplit(":", 1)[1], "http")
    return f"{kind}-{address}"


def test_a_drained_agent_server_gets_no_new_connection(record: dict[str, Any]) -> None:
    """Once drained, the agent's victim has weight 0 in every reading and is sent no
    request until it is back."""
    found = record["kinds"]["agent"]
    assert [] == [w for w in record["agent_down"]["weights_seen"] if w], record["agent_down"]
    assert [_name(found["partner"])] == list(found["traffic"]["late"]["servers"])


def test_stop_exits_cleanly(record: dict[str, Any]) -> None:
    """SIGTERM after the steps: lvsd exits 0."""
    assert 0 == record["exit_status"]
