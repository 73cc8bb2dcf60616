"""lvsd against a real IPVS kernel (user-mode Linux 6.1), checked with ``ipvsadm``.

One boot serves every test here (see ``scenario_kernel``): a Python driver applies
configs step by step in the guest and records the ops and ``ipvsadm -Ln`` after each
step; then the command line, a process without CAP_NET_ADMIN and a kernel without
ip_vs are tried. The tests read what came back.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from lab import harness
from lab.harness import LabResult
from lab.topology import NatTopology
from lvsd.cli import APPLY_WARNING
from tests.lab import scenario_kernel
from tests.lab.conftest import Lab

pytestmark = pytest.mark.lab

HEADER = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
"""
HAND_MADE = """TCP  192.168.3.200:8080 rr
  -> 10.0.0.9:8080                Masq    4      0          0
"""
NAT = """TCP  192.168.3.108:80 wrr
  -> 10.0.0.2:80                  Masq    1      0          0
  -> 10.0.0.3:80                  Masq    1      0          0
"""
KINDS_TCP4 = """TCP  192.168.3.108:8080 nq
  -> 10.0.0.5:8080                Tunnel  1      0          0
"""
KINDS_REST = """UDP  192.168.3.108:53 rr ops
  -> 10.0.0.2:53                  Masq    1      0          0
  -> 10.0.0.3:53                  Masq    1      0          0
SCTP 192.168.3.108:2905 wlc persistent 300 mask 255.255.255.0
  -> 10.0.0.2:2905                Masq    1      0          0
TCP  [2001:db8::108]:443 sh (sh-fallback,sh-port) persistent 600 mask 64
  -> [2001:db8:1::2]:443          Route   2      0          0
  -> [2001:db8:1::3]:443          Tunnel  1      0          0
FWM  1 mh (mh-port)
  -> 10.0.0.2:0                   Route   1      0          0
  -> 10.0.0.4:0                   Tunnel  1      0          0
FWM  2 IPv6 lc
  -> [2001:db8:1::2]:0            Route   1      0          0
"""


@pytest.fixture(scope="module")
def kernel(module_lab: Lab) -> LabResult:
    """The one boot: its results folder holds table.json and the command outputs."""
    work = module_lab.work / "kernel"
    work.mkdir()
    result = harness.run(work, scenario_kernel.scenario(work), topology=NatTopology())
    assert result.ok, result.log()
    return result


@pytest.fixture(scope="module")
def steps(kernel: LabResult) -> list[dict[str, Any]]:
    """The driver's record, one entry per step of ``scenario_kernel.STEPS``."""
    record: list[dict[str, Any]] = kernel.json("table.json")
    assert [e["step"] for e in record] == scenario_kernel.STEPS
    return record


def _ipvsadm(steps: list[dict[str, Any]], index: int) -> str:
    return str(steps[index]["ipvsadm"]) + "\n"


def test_applying_the_nat_config_gives_exactly_the_expected_table(steps: list[Any]) -> None:
    """Three ops, and ``ipvsadm -Ln`` shows the service, both real servers in
    masquerade, and the hand-made service untouched."""
    expected_ops = [
        "add-service tcp 192.168.3.108:80 wrr",
        "add-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=1 nat",
        "add-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=1 nat",
    ]
    assert (expected_ops, []) == (steps[1]["ops"], steps[1]["failed"])
    expected_table = HEADER + NAT + HAND_MADE
    assert expected_table == _ipvsadm(steps, 1)


def test_applying_again_issues_no_op(steps: list[Any]) -> None:
    """The table read back from the kernel equals the desired one: zero ops."""
    expected: tuple[list[Any], str] = ([], HEADER + NAT + HAND_MADE)
    assert expected == (steps[2]["ops"], _ipvsadm(steps, 2))


def test_a_weight_change_is_one_edit(steps: list[Any]) -> None:
    """Changing one weight in the config is one ``edit-dest`` and nothing else."""
    expected = (
        HEADER
        + "TCP  192.168.3.108:80 wrr\n"
        + "  -> 10.0.0.2:80                  Masq    1      0          0\n"
        + "  -> 10.0.0.3:80                  Masq    5      0          0\n"
    )
    expected_ops = ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=5 nat"]
    assert (expected_ops, expected + HAND_MADE) == (steps[4]["ops"], _ipvsadm(steps, 4))


def test_removing_a_real_server_removes_only_it(steps: list[Any]) -> None:
    """Dropping 10.0.0.2 from the config deletes that destination only."""
    expected = (
        HEADER
        + "TCP  192.168.3.108:80 wrr\n"
        + "  -> 10.0.0.3:80                  Masq    5      0          0\n"
        + HAND_MADE
    )
    expected_ops = ["del-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=1 nat"]
    assert (expected_ops, expected) == (steps[5]["ops"], _ipvsadm(steps, 5))


def test_a_table_already_equal_to_the_config_is_adopted(steps: list[Any]) -> None:
    """A table built by hand with ipvsadm, equal to the config, needs zero ops."""
    expected: tuple[int, list[Any], str] = (0, [], HEADER + NAT + HAND_MADE)
    assert expected == (steps[6]["status"], steps[7]["ops"], _ipvsadm(steps, 7))


def test_hand_made_service_survives_every_apply(steps: list[Any]) -> None:
    """The service made with ipvsadm before lvsd ran is in every ``ipvsadm -Ln`` until
    the scenario clears the table on purpose."""
    cleared = next(i for i, e in enumerate(steps) if e["step"].startswith("sh:ipvsadm -C"))
    missing = [e["step"] for e in steps[:cleared] if HAND_MADE not in e["ipvsadm"] + "\n"]
    expected: list[str] = []
    assert expected == missing


def test_ipv6_fwmark_udp_sctp_and_forwarding_methods(steps: list[Any]) -> None:
    """IPv6 with sh flags and a /64 persistence mask, fwmark (IPv4 and IPv6), UDP with
    one-packet scheduling, SCTP with a /24 persistence mask; nat, dr and tun
    destinations: ``ipvsadm -Ln`` shows each as configured."""
    expected: tuple[list[Any], str] = ([], HEADER + NAT + KINDS_TCP4 + HAND_MADE + KINDS_REST)
    assert expected == (steps[8]["failed"], _ipvsadm(steps, 8))


def test_the_kernel_round_trip_is_exact(steps: list[Any]) -> None:
    """Applying the same varied config again issues zero ops: every field lvsd reads
    back from the kernel (flags, netmasks, tunnels, thresholds) equals what it sent."""
    expected: list[str] = []
    assert expected == steps[9]["ops"]


def test_dump_reads_what_ipvsadm_shows(steps: list[Any]) -> None:
    """``NetlinkBackend.dump`` renders the varied table as lvsd's model."""
    table = dict(steps[10]["table"])
    expected = {
        "sctp 192.168.3.108:2905 wlc persistent 300": ["10.0.0.2:2905 w=1 nat"],
        "tcp 192.168.3.108:8080 nq": ["10.0.0.5:8080 w=1 tun/gre"],
        "tcp [2001:db8::108]:443 sh sh-fallback,sh-port persistent 600": [
            "[2001:db8:1::2]:443 w=2 dr",
            "[2001:db8:1::3]:443 w=1 tun",
        ],
        "tcp 192.168.3.108:80 wrr": ["10.0.0.2:80 w=1 nat", "10.0.0.3:80 w=1 nat"],
        "tcp 192.168.3.200:8080 rr": ["10.0.0.9:8080 w=4 nat"],
        "udp 192.168.3.108:53 rr ops": ["10.0.0.2:53 w=1 nat", "10.0.0.3:53 w=1 nat"],
        "fwm 1 mh mh-port": ["10.0.0.2:0 w=1 dr", "10.0.0.4:0 w=1 tun/gue"],
        "fwm 2 inet6 lc": ["[2001:db8:1::2]:0 w=1 dr"],
    }
    assert expected == table


def test_tunnel_types_and_gue_port_reach_the_kernel(steps: list[Any]) -> None:
    """``ipvsadm --tun-info`` shows gre, ipip and gue with port 6080 (sent big-endian)."""
    lines = [re.sub(r"\s+", " ", line.strip()) for line in steps[11]["output"].splitlines()]
    tunnels = [line for line in lines if " Tunnel " in line]
    expected = [
        "-> 10.0.0.5:8080 Tunnel gre:-c 1 0 0",
        "-> [2001:db8:1::3]:443 Tunnel ipip 1 0 0",
        "-> 10.0.0.4:0 Tunnel gue:6080:-c 1 0 0",
    ]
    assert expected == tunnels


def test_every_scheduler_of_the_guest_and_the_clear_twos_error(steps: list[Any]) -> None:
    """Every scheduler the 6.1 guest ships is accepted; ``twos`` (absent in 6.1) fails
    with a clear reason, and its destination is skipped, not sent."""
    step = steps[12]
    listed = re.findall(r"^TCP  10\.10\.0\.\d+:80 (\w+)$", step["ipvsadm"], re.MULTILINE)
    expected_failed = [
        "add-service tcp 10.10.0.14:80 twos: scheduler module ip_vs_twos not available",
        "add-dest tcp 10.10.0.14:80 -> 10.0.0.2:80 w=1 nat: "
        "skipped: add-service tcp 10.10.0.14:80 failed",
    ]
    assert list(scenario_kernel.SCHEDULERS[:-1]) == listed
    assert expected_failed == step["failed"]


def test_error_cases_are_named_in_words(steps: list[Any]) -> None:
    """Each refused op names itself and the kernel's reason."""
    expected = {
        "exists-service": ["add-service tcp 192.168.3.108:80 wrr: already exists"],
        "exists-dest": ["add-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=1 nat: already exists"],
        "missing-service": ["del-service tcp 192.168.3.199:80 wrr: not found"],
        "missing-dest": ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.99:80 w=1 nat: not found"],
        "dest-of-missing-service": [
            "add-dest tcp 192.168.3.199:80 -> 10.0.0.2:80 w=1 nat: service not found"
        ],
        "unknown-scheduler": [
            "add-service tcp 192.168.3.199:80 twos: scheduler module ip_vs_twos not available"
        ],
    }
    assert expected == steps[3]["errors"]


def test_real_traffic_alternates_between_the_real_servers(steps: list[Any]) -> None:
    """Ten requests from the client namespace through the VIP: wrr alternates."""
    answers = steps[15]["output"].split()
    expected = (0, 10, 5, 5)
    assert expected == (
        steps[15]["status"],
        len(answers),
        answers.count("rs1"),
        answers.count("rs2"),
    )


def _parse_stats(text: str) -> dict[str, list[int]]:
    """``ipvsadm -Ln --stats --exact`` as {"VIP" or "VIP -> RS": counters}."""
    out: dict[str, list[int]] = {}
    service = ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 7 and fields[0] in ("TCP", "UDP", "SCTP"):
            service = f"{fields[0].lower()} {fields[1]}"
            out[service] = [int(f) for f in fields[2:]]
        elif len(fields) == 7 and fields[0] == "->":
            out[f"{service} -> {fields[1]}"] = [int(f) for f in fields[2:]]
    return out


def test_counters_read_by_dump_equal_ipvsadm_stats(steps: list[Any]) -> None:
    """After real traffic, the STATS64 counters ``NetlinkBackend.dump`` reads equal
    ``ipvsadm -Ln --stats --exact``; active/inactive connections equal ``ipvsadm -Ln``."""
    step = steps[16]
    from_ipvsadm = _parse_stats(step["ipvsadm_stats"])
    from_dump = {**step["services"], **{k: v[2:] for k, v in step["dests"].items()}}
    assert from_ipvsadm == from_dump
    requests = 10
    assert requests == from_dump["tcp 192.168.3.108:80"][0]
    conns = {
        f"tcp 192.168.3.108:80 -> {f[1]}": [int(f[4]), int(f[5])]
        for f in (line.split() for line in step["ipvsadm_conns"].splitlines())
        if f and f[0] == "->" and f[1] != "RemoteAddress:Port"
    }
    assert conns == {k: v[:2] for k, v in step["dests"].items()}


def test_dumps_at_once_all_read_the_whole_table(steps: list[Any]) -> None:
    """Three dumps asked at once on one backend while the table spans many netlink
    messages (a scrape's beside a reconcile's): each reads every destination (the
    kernel refuses a dump on a socket whose dump is running, EBUSY)."""
    assert 0 == steps[17]["status"], steps[17]["output"]
    shown = re.findall(r"^\s+-> [\d\[]", steps[18]["ipvsadm"], re.MULTILINE)
    assert len(shown) > scenario_kernel.BIG_DESTS
    assert [len(shown)] * 3 == steps[18]["dumps"]


def test_replies_are_read_in_a_few_turns_of_the_loop(steps: list[Any]) -> None:
    """The kernel answers each request with a datagram of its own, and the event
    loop's transport reads one a turn: the backend reads every answer already there
    at once. An apply of 64 edits took 68 turns before that; a turn of a busy daemon
    can take tens of ms."""
    turns = steps[19]["turns"]
    assert 0 == turns["apply_failed"]
    assert turns["apply_64"] <= 8, turns
    assert re.search(r"-> 10\.1\.0\.64:80 +Masq +2 ", steps[19]["ipvsadm"])
    assert scenario_kernel.BIG_DESTS + 2 <= turns["dump_dests"]
    # and two yields per 128 destinations: decoding, then ordering, in steps
    assert turns["dump"] <= 8 + 2 * (turns["dump_dests"] // 128), turns


def test_cli_dry_run_prints_the_ops_and_changes_nothing(kernel: LabResult) -> None:
    """``lvsd apply --dry-run`` on an empty table lists three ops, exits 0, and the
    kernel table stays empty."""
    expected = (
        "add-service tcp 192.168.3.108:80 wrr\n"
        "add-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=1 nat\n"
        "add-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=1 nat\n"
        "dry run: 3 ops would be applied (0 would fail); nothing changed\n"
    )
    assert (expected, "0", HEADER) == (
        kernel.text("dry.out"),
        kernel.text("dry.status").strip(),
        kernel.text("dry.ipvsadm").replace(" \n", "\n"),
    )


def test_cli_apply_exit_status(kernel: LabResult) -> None:
    """``lvsd apply`` exits 0 when every op applied, 1 (naming each failure on stderr)
    when one failed; without ``--dry-run`` it first warns that no check runs."""
    expected_err = (
        f"{APPLY_WARNING}\n"
        "lvsd: add-service tcp 10.10.0.14:80 twos: scheduler module ip_vs_twos not available\n"
        "lvsd: add-dest tcp 10.10.0.14:80 -> 10.0.0.2:80 w=1 nat: "
        "skipped: add-service tcp 10.10.0.14:80 failed\n"
    )
    expected_ok = ("0", "3 ops: 3 applied, 0 failed")
    assert expected_ok == (
        kernel.text("cli.status").strip(),
        kernel.text("cli.out").splitlines()[-1],
    )
    assert ("1", expected_err, "28 ops: 26 applied, 2 failed") == (
        kernel.text("cli_fail.status").strip(),
        kernel.text("cli_fail.err"),
        kernel.text("cli_fail.out").splitlines()[-1],
    )


def test_without_cap_net_admin(kernel: LabResult) -> None:
    """A process without CAP_NET_ADMIN is told so, for a dump and for an op."""
    expected = {
        "dump": "dump: needs CAP_NET_ADMIN",
        "apply": ["add-service tcp 192.168.3.108:81 wrr: needs CAP_NET_ADMIN"],
    }
    assert expected == kernel.json("nocap.json")


def test_without_ip_vs_loaded(kernel: LabResult) -> None:
    """With ip_vs unloaded (and module loading off), lvsd says how to fix it."""
    expected = {
        "dump": "dump: ip_vs not loaded (modprobe ip_vs)",
        "apply": ["add-service tcp 192.168.3.108:81 wrr: ip_vs not loaded (modprobe ip_vs)"],
    }
    assert ("0", expected) == (
        kernel.text("rmmod.status").strip(),
        kernel.json("notloaded.json"),
    )
