"""The many-real-servers scenario: 200 servers, some flapping; health against the kernel."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from lab import faults, traffic
from lab.e2e.guest import Guest
from lab.e2e.settings import (
    ANSWER_WITHIN,
    CONTROL,
    FLAP_ATTEMPTS,
    FLAP_EVERY,
    FLAP_PERIOD,
    FLAP_SECONDS,
    MANY,
    MODES,
    SAMPLE_PAUSE,
    SETTLE,
    many_addresses,
    many_config_text,
)
from lab.e2e.tools import (
    EXPORTED_MANY,
    events,
    excused,
    health_vs_kernel,
    ipvsadm,
    journal,
    kernel_table,
    metrics,
    own_time,
    polled,
    process_cpu,
    run_delay,
    sh,
    unit_property,
    wait_for,
    weights,
)
from lab.faults import FaultServer
from lvsd.errors import ControlError


def flap200(g: Guest) -> None:
    """MANY real servers (addresses of rs1, one fault server answering each with
    its address); every FLAP_EVERY-th flaps (500 / ok every FLAP_PERIOD s) for
    FLAP_SECONDS. Every sample (about one a second): the status over the control
    socket, ``ipvsadm -Ln``, the status again (``health_vs_kernel`` judges every
    real server whose state held across the sample and SETTLE before it), then a
    /metrics scrape; both answers timed. A run in which lvsd waited a whole
    ANSWER_WITHIN for the guest's CPU during one answer (the real servers and the
    client, which stand for other machines, starved it) judges nothing: it is kept
    as ``flap200.disturbed`` and the scenario runs again, up to FLAP_ATTEMPTS runs
    in all (the last is judged, starved or not)."""
    addrs = many_addresses()
    batch = "".join(f"addr add {a}/24 dev eth0\n" for a in addrs[1:])
    subprocess.run(["ip", "-n", "rs1", "-batch", "-"], input=batch, text=True, check=True)
    server = FaultServer(netns="rs1", name="@addr", mode_dir=MODES)
    faults.start(server, log=g.results / "many.log")
    g.write_config(many_config_text())
    for attempt in range(FLAP_ATTEMPTS):
        fields = _flap_run(g, server, addrs)
        last = attempt == FLAP_ATTEMPTS - 1
        if not last and fields["lvsd_cpu_wait_ms_max"] >= ANSWER_WITHIN * 1000:
            g.record("flap200.disturbed", **fields)
            sh("systemctl", "stop", "lvsd")
            continue
        g.record("flap200", attempts=attempt + 1, **fields)
        return


def _flap_run(g: Guest, server: FaultServer, addrs: list[str]) -> dict[str, Any]:
    """One run of ``flap200``, from ``systemctl start lvsd``: its record's fields."""
    from lvsd import control

    t0 = time.time()
    sh("systemctl", "start", "lvsd")
    ready_s = round(time.time() - t0, 2)
    all_up = wait_for(lambda: sum(1 for w in polled().values() if w == 1) == MANY, 90)
    flappers = addrs[::FLAP_EVERY]
    status_ms: list[float] = []
    metrics_ms: list[float] = []
    # each answer's time that was lvsd's own (``own_time``)
    status_ran_ms: list[float] = []
    metrics_ran_ms: list[float] = []
    metrics_errors: list[str] = []
    metrics_stalled: list[float] = []  # seconds the guest stood still, per scrape
    unexcused: list[str] = []
    status_errors: list[str] = []
    status_unexcused: list[str] = []  # as ``unexcused``, for status
    counts: dict[str, int] = {}
    mismatches: list[dict[str, Any]] = []
    samples = 0

    pid = unit_property("MainPID")
    waits: list[float] = []  # seconds lvsd waited for the CPU, per answer

    def status() -> dict[str, Any]:
        """The status report; {} (nothing judged) when lvsd did not answer."""
        t, wall, delay = time.monotonic(), time.time(), run_delay(pid)
        answer: dict[str, Any] = {}
        failed = ""
        try:
            answer = control.request_sync(CONTROL, {"command": "status"}, timeout=10)
        except ControlError as exc:
            failed = str(exc)
        elapsed = time.monotonic() - t
        status_ms.append(round(elapsed * 1000, 1))
        waits.append(run_delay(pid) - delay)
        ran = own_time(elapsed, g.stalls.between(wall, time.time()), waits[-1])
        status_ran_ms.append(round(ran * 1000, 1))
        if failed:
            status_errors.append(failed)
            if ran >= ANSWER_WITHIN:
                status_unexcused.append(failed)
        report: dict[str, Any] = answer.get("status", {})
        return report

    start = time.monotonic()
    phase = -1
    proc = g.traffic(FLAP_SECONDS, rate=20)
    # Who used the guest's CPU during the flapping minute.
    pids = {"lvsd": pid, "real_servers": server.pidfile().read_text()}
    cpu_before = {name: process_cpu(pid) for name, pid in pids.items()}
    cpu_before["driver"] = time.process_time()
    while time.monotonic() - start < FLAP_SECONDS:
        now_phase = int((time.monotonic() - start) / FLAP_PERIOD)
        if now_phase != phase:
            phase = now_phase
            for a in flappers:
                faults.set_mode(MODES, a, "500" if phase % 2 == 0 else "ok")
        # The health as reported, the kernel table (ipvsadm), the health again.
        t = time.monotonic()
        first = status()
        table = kernel_table(ipvsadm())
        second = status()
        got, bad = health_vs_kernel(first, table, second, elapsed=time.monotonic() - t)
        for key, n in got.items():
            counts[key] = counts.get(key, 0) + n
        mismatches += bad
        samples += 1
        t, wall, delay = time.monotonic(), time.time(), run_delay(pid)
        lines = metrics("lvsd_service_real_servers_up")
        elapsed = time.monotonic() - t
        stalled = g.stalls.between(wall, time.time())
        waits.append(run_delay(pid) - delay)
        if lines and lines[0].startswith("# /metrics unavailable"):
            metrics_errors.append(lines[0])
            if not excused(elapsed, max(stalled, waits[-1])):
                unexcused.append(lines[0])
        metrics_ms.append(round(elapsed * 1000, 1))
        metrics_ran_ms.append(round(own_time(elapsed, stalled, waits[-1]) * 1000, 1))
        metrics_stalled.append(round(stalled, 2))
        time.sleep(SAMPLE_PAUSE)
    cpu_s = {name: round(process_cpu(pid) - cpu_before[name], 1) for name, pid in pids.items()}
    cpu_s["driver"] = round(time.process_time() - cpu_before["driver"], 1)
    cpu_s["minute"] = round(time.monotonic() - start, 1)
    for a in flappers:
        faults.set_mode(MODES, a, "ok")
    requests = g.finish(proc)
    settled = wait_for(lambda: sum(1 for w in polled().values() if w == 1) == MANY, 30)
    final = control.request_sync(CONTROL, {"command": "status"}, timeout=10)
    kernel = weights(ipvsadm())
    final_servers = [
        rs for svc in final.get("status", {}).get("services", []) for rs in svc["real_servers"]
    ]
    final_mismatch = [
        rs["address"] for rs in final_servers if (kernel.get(rs["address"]) == 1) != bool(rs["up"])
    ]
    return {
        "real_servers": MANY,
        "flapping": len(flappers),
        "lvsd_active_after_s": ready_s,
        "all_up_after_s": all_up,
        "samples": samples,
        "cpu_s": cpu_s,
        "settle_s": SETTLE,
        "health_compared": counts.get("compared", 0),
        "health_compared_up": counts.get("compared_up", 0),
        "health_compared_down": counts.get("compared_down", 0),
        "health_skipped_settling": counts.get("skipped", 0),
        "health_mismatches": len(mismatches),
        "health_mismatch_examples": mismatches[:10],
        "status_answers": len(status_ms),
        "status_ms_max": max(status_ms, default=0.0),
        "status_ms_median": sorted(status_ms)[len(status_ms) // 2] if status_ms else 0.0,
        "status_over_1s": sum(1 for ms in status_ms if ms >= 1000),
        "status_errors": sorted(set(status_errors)),
        "status_errors_unexcused": sorted(set(status_unexcused)),
        "status_ran_ms_median": sorted(status_ran_ms)[len(status_ran_ms) // 2]
        if status_ran_ms
        else 0.0,
        # answers that took ANSWER_WITHIN or more of lvsd's own time (``own_time``)
        "status_late": sum(1 for ms in status_ran_ms if ms >= ANSWER_WITHIN * 1000),
        "status_ran_ms_max": max(status_ran_ms, default=0.0),
        "metrics_scrapes": len(metrics_ms),
        "metrics_over_1s": sum(1 for ms in metrics_ms if ms >= 1000),
        "metrics_late": sum(1 for ms in metrics_ran_ms if ms >= ANSWER_WITHIN * 1000),
        "metrics_ran_ms_max": max(metrics_ran_ms, default=0.0),
        "metrics_ran_ms_median": sorted(metrics_ran_ms)[len(metrics_ran_ms) // 2]
        if metrics_ran_ms
        else 0.0,
        "lvsd_cpu_wait_ms_max": round(max(waits, default=0.0) * 1000, 1),
        "metrics_ok": not metrics_errors,
        "metrics_errors": sorted(set(metrics_errors)),
        # errors of scrapes the guest ran for ANSWER_WITHIN or more (lvsd's own)
        "metrics_errors_unexcused": sorted(set(unexcused)),
        "metrics_guest_stalled_s_max": max(metrics_stalled, default=0.0),
        "metrics_ms_max": max(metrics_ms, default=0.0),
        # dumps and applies of a second or more, and how long each waited for a dump
        "slow_kernel_calls": [
            {k: e.get(k) for k in ("timestamp", "call", "seconds", "waited", "ops")}
            for e in events(time.time() - FLAP_SECONDS - 30, time.time(), "kernel.slow")
        ],
        "metrics_ms_median": sorted(metrics_ms)[len(metrics_ms) // 2] if metrics_ms else 0.0,
        "settled_after_s": settled,
        "final_reported": len(final_servers),
        "final_up": sum(1 for rs in final_servers if rs["up"]),
        "final_health_mismatch": final_mismatch,
        "summary": traffic.summarize(requests),
        "journal": journal(time.time() - FLAP_SECONDS - 30, limit=8),
        "metrics": metrics(*EXPORTED_MANY),
    }
