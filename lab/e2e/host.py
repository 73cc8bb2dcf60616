"""Host side: boot the lab for the scenarios, render docs/e2e-results.md."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.e2e.settings import (
    BOUND,
    CLIENT_TIMEOUT,
    FALL,
    FAULT_HOLD,
    FLAP_ATTEMPTS,
    FLAP_PERIOD,
    INTERVAL,
    MANY_INTERVAL,
    RATE,
    RELOAD_WEIGHTS,
    RISE,
    RS,
    SCENARIOS,
    SETTLE,
    SLOW_START,
    SORRY,
    TIMEOUT,
    VIP,
    WEIGHT,
    config_text,
    many_config_text,
)
from lab.e2e.tools import DIRECTOR_SYSCTLS


def run_boot(work: Path, names: Sequence[str] = SCENARIOS, *, stream: Any = None) -> Any:
    """Boot once in ``work`` and run ``names``; the LabResult."""
    from lab import harness, systemd
    from lab.topology import NatTopology

    many = list(names) == ["flap200"]
    config = work / "lvsd.toml"
    config.write_text(many_config_text() if many else config_text())
    config.chmod(0o644)
    scenario = harness.Scenario(
        shell=f'"$LAB_PYTHON" -m lab.e2e guest --work "$LAB_WORK" '
        f'--results "$LAB_RESULTS" {" ".join(names)}\n'
    )
    boot = systemd.SystemdBoot(units=systemd.lvsd_units(config), timeout=900)
    if many:
        topology = NatTopology(real_servers=1)
    else:
        topology = NatTopology(real_servers=len(RS), extra=(SORRY[0],))
    return harness.run(work, scenario, topology=topology, boot=boot, stream=stream)


#: What each scenario shows and what its figures should be (printed in the report).
NOTES = {
    "start": "`systemctl start lvsd` with the shipped unit and the lab drop-in: active only "
    "after READY=1 (main process start to active), the STATUS line in `systemctl status`.",
    "kill": f"rs1's server killed (SIGKILL), restarted {FAULT_HOLD:.0f} s later. Requests "
    "fail (refused, or "
    f"cut when in flight) only until lvsd sets weight 0 (`out_after_s`, bound {BOUND:.1f} s); "
    "none after (`after_settled`, served by the `others`); after the restart the slow-start "
    f"ramp 1..{WEIGHT} (`back_ramp`: seconds, weight) and no failure (`after_restore`).",
    "hang": "rs2 accepts and never answers: out after the probe timeouts; the requests "
    f"scheduled to it before then fail by the client's {CLIENT_TIMEOUT:.0f} s timeout (hence "
    "the window); rs1 "
    "and rs3 serve the rest.",
    "status500": "rs3 answers 500: out by the http check while a TCP connect to it still "
    "succeeds (`tcp_connect_while_out`); rs1 and rs2 serve the rest.",
    "link": f"the director's veth end of rs2 down, up {FAULT_HOLD:.0f} s later: out like a "
    "hang (packets "
    "vanish), back with the ramp; rs1 and rs3 serve the rest. The requests cut by the link "
    "stay in `ipvsadm -Ln`'s ActiveConn of rs2 (the kernel's ESTABLISHED timeout).",
    "drain": f"`lvsd drain web {RS['rs1']}:80 --wait` under traffic, then rs1 killed and "
    "restarted, `lvsd undrain`: zero failed requests.",
    "restart": "`systemctl restart lvsd`, then `kill -9` of its main process and "
    "`systemctl start`, under traffic: zero failed requests, `ipvsadm -Ln` (without "
    "counters, sampled every 0.5 s in a thread, so also while systemctl runs) never "
    "changed (`table_changes`), and no kernel write in the journal (`write_ops`).",
    "reload_weights": "config rewritten from 5:5:5 to weights rs1:rs2:rs3 = "
    f"{':'.join(map(str, RELOAD_WEIGHTS))}, i.e. rs1 against the rest of the pool 1:3 "
    "(25/75), and `systemctl reload lvsd` under 80 requests/s: zero failures across the "
    "reload, and the split over the `split_requests` (a second stream) sent once the new "
    "weights were in: "
    "`split_percent` (rs1 against rs2+rs3, the issue's 25/75) and `shares_percent` per "
    "server (rs2 and rs3 37.5 each). A run in which a real server went down meanwhile "
    "(`downs`) is kept as `reload_weights.disturbed` and runs once more.",
    "reload_broken": "a reload with a broken config: lvsd stays active, the table is "
    "unchanged, zero failures, `lvsd_config_last_reload_successful 0` until a good reload.",
    "sorry": "rs1, rs2, then rs3 answer 500, one after the other: the sorry server "
    "(its own namespace) stays out while one real server is up "
    "(`sorry_weight_while_some_up`: its weight in `ipvsadm -Ln` once rs1, then rs2 was "
    "out; None = absent; `before_last_down` answered by no sorry server), goes in once "
    "rs3 is out too (`all_down`: answered by it, zero failures once it is in); rs1 "
    "recovers: traffic returns to it (`one_back`); the sorry server drops to weight 0 "
    "and is deleted once its connections have ended (`sorry_out_after_s`), so the "
    "requests it was answering finish (`switch_back`: zero failures; when lvsd deleted "
    "it at once, one such request in four runs was lost). Failures happen only while the "
    "servers go down (`before_last_down`).",
    "watchdog": "lvsd's main process stopped with SIGSTOP (a wedged loop) under traffic, "
    "with `WatchdogSec=4s`: systemd's watchdog kills it and `Restart=on-failure` starts it "
    "again (`restarted_after_s`), the table unchanged and serving throughout.",
    "flap200": f"200 real servers (addresses of rs1; http checks every {MANY_INTERVAL:.0f} s, "
    f"rise 1, fall 1), 40 of them answering 500 / 200 in turn every {FLAP_PERIOD:.0f} s for "
    "60 s, 20 requests/s; `cpu_s`: CPU seconds used in that minute. Each sample "
    "(`samples`, about one a second) asks for the status over the control socket, reads "
    "`ipvsadm -Ln`, asks for the status again, then scrapes /metrics (both answers timed; "
    "`status_late` and `metrics_late` count those that took 1 s or more of lvsd's own "
    "time, `_ran_ms_max` the longest such time: the goal is none. lvsd's own time is the "
    "answer's less the longer of the time the whole guest stood still and the time lvsd "
    "waited for the guest's CPU, `lvsd_cpu_wait_ms_max` the longest such wait; a run in "
    "which lvsd waited a whole second for the CPU during one answer, starved by the real "
    "servers and the client, which run at a higher priority, is kept as "
    f"`flap200.disturbed` and runs again, up to {FLAP_ATTEMPTS} runs). "
    "Every real server whose state and effective weight are the same in both reports and "
    f"whose last transition is older than the sample plus {SETTLE:.0f} s (`settle_s`: the "
    "batch window, the reconcile and its netlink writes) is judged: its kernel weight must "
    "be its effective weight when up, 0 when down (quiesce). `health_compared` such "
    "judgements (`_up`, `_down`), `health_mismatches` of them wrong, "
    "`health_skipped_settling` servers in or just after a transition. At the end every "
    "server is up in both. Requests fail while a flapping server answers 500 before it is "
    "detected, over the whole minute. The requests go mostly to the last-added servers "
    "(10.0.0.201, .200, ...): the kernel's wrr starts again from the head of its list "
    "(the newest destination) whenever a destination changes, and here one changes "
    "several times a second.",
}


def report(records: Sequence[dict[str, Any]], *, duration: float | None = None) -> str:
    """docs/e2e-results.md: a table per scenario."""
    lines = [
        "# End-to-end results",
        "",
        "Written by `.venv/bin/python -m lab e2e` (lab/e2e/): lvsd under systemd",
        "in the lab (user-mode Linux 6.1, one CPU, every syscall trapped: latencies are the",
        f"guest's, far above a real host's), NAT director (VIP {VIP}:80, wrr), real servers",
        ", ".join(f"{name} {addr}" for name, addr in RS.items())
        + f" (weight {WEIGHT} each), sorry server {SORRY[1]} in its own",
        f'namespace `{SORRY[0]}`. The reload "to 1:3" sets rs1:rs2:rs3 = '
        + ":".join(map(str, RELOAD_WEIGHTS))
        + ": rs1 gets 25% and",
        "rs2 and rs3 together 75% (37.5% each), rs1 against the rest of the pool 1:3.",
        f"Http checks every {INTERVAL} s, timeout {TIMEOUT} s, rise {RISE}, fall {FALL} (a dead",
        f"server is out within fall x interval + timeout = {BOUND:.1f} s), slow start",
        f"{SLOW_START:.0f} s. Traffic: {RATE:.0f} requests/s over fresh connections from the",
        f"client namespace, client timeout {CLIENT_TIMEOUT} s. The director sets "
        + ", ".join(f"`{k} = {v}`" for k, v in DIRECTOR_SYSCTLS.items())
        + " (docs/operations.md). The flapping scenario's last",
        "column: samples taken, real servers judged (kernel weight against reported health),",
        "and how many of those judgements did not match. A fault run in which lvsd also",
        "took one of the other real servers out (their probes timed out too: the host",
        "starved the guest), or in which the guest stood still and the check that took the",
        "server out never saw the fault (it timed out before the 500 came), judges nothing",
        "about the fault: it is kept as `NAME.disturbed` and the scenario runs once more",
        "(`attempts`).",
    ]
    if duration is not None:
        lines += ["", f"Both boots (all scenarios) took {duration:.0f} s."]
    lines += [
        "",
        "| scenario | requests sent | failed | failure window (ms) | out after (s) "
        "| kernel vs health: samples / judged / mismatched |",
        "|---|---|---|---|---|---|",
    ]
    for rec in records:
        summary = rec.get("summary")
        if not isinstance(summary, dict):
            continue
        out_after = rec.get("out_after_s", "-")
        figures = [summary.get(k, "-") for k in ("sent", "failed", "failure_window_ms")]
        health = "-"
        if "health_compared" in rec:
            health = f"{rec['samples']} / {rec['health_compared']} / {rec['health_mismatches']}"
        cells = [*figures, out_after, health]
        lines.append(f"| {rec['name']} | " + " | ".join(map(str, cells)) + " |")
    for rec in records:
        lines += ["", f"## {rec['name']}", ""]
        if rec["name"] in NOTES:
            lines += [NOTES[rec["name"]], ""]
        lines += ["| figure | value |", "|---|---|"]
        for key, value in rec.items():
            if key in ("name",) or _is_block(key, value):
                continue
            lines.append(f"| {key} | {_cell(value)} |")
        for key in [k for k, v in rec.items() if _is_block(k, v)]:
            value = rec[key]
            body = value if isinstance(value, str) else "\n".join(map(str, value))
            lines += ["", f"{key}:", "", "```", body.rstrip() or "(none)", "```"]
    return "\n".join(lines) + "\n"


BLOCKS = ("ipvsadm", "journal", "metrics", "systemctl_status")


def _is_block(key: str, value: Any) -> bool:
    return key.startswith(BLOCKS) and isinstance(value, (str, list))


def _cell(value: Any) -> str:
    if isinstance(value, dict) and len(value) > 12:
        return f"{len(value)} entries, {sum(value.values())} in all"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return " ".join(_cell(v) for v in value) or "-"
    if isinstance(value, tuple):
        return "(" + ", ".join(_cell(v) for v in value) + ")"
    return str(value).replace("|", "/").replace("\n", " ")


def main(out: Path | None = None, keep: Path | None = None) -> int:
    """Boot twice (every scenario; then the 200-server flapping), write ``out``
    (docs/e2e-results.md by default); 0 when both boots ran every scenario."""
    import tempfile

    from lab.harness import REPO

    out = out or REPO / "docs" / "e2e-results.md"
    records: list[dict[str, Any]] = []
    duration = 0.0
    status = 0
    with tempfile.TemporaryDirectory(prefix="lvsd-e2e-") as tmp:
        base = keep or Path(tmp)
        for folder, names in (("main", SCENARIOS), ("flap", ("flap200",))):
            work = base / folder
            work.mkdir(parents=True, exist_ok=True)
            result = run_boot(work, names, stream=sys.stdout)
            duration += result.duration
            status = status or int(result.exit_status)
            path = result.results / "e2e.json"
            records += json.loads(path.read_text()) if path.exists() else []
    out.write_text(report(records, duration=duration))
    print(f"lvsd e2e: exit status {status}; wrote {out}")
    return status
