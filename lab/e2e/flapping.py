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


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] if values else 0.0


class _Answers:
    """lvsd's answers during the flapping minute (status over the control socket,
    /metrics scrapes): how long each took, how much of it was lvsd's own time
    (``own_time``), the errors and which of them are lvsd's (not excused)."""

    def __init__(self, g: Guest, pid: str) -> None:
        self.g = g
        self.pid = pid
        self.status_ms: list[float] = []
        self.metrics_ms: list[float] = []
        # each answer's time that was lvsd's own (``own_time``)
        self.status_ran_ms: list[float] = []
        self.metrics_ran_ms: list[float] = []
        self.metrics_errors: list[str] = []
        self.metrics_stalled: list[float] = []  # seconds the guest stood still, per scrape
        self.unexcused: list[str] = []
        self.status_errors: list[str] = []
        self.status_unexcused: list[str] = []  # as ``unexcused``, for status
        self.waits: list[float] = []  # seconds lvsd waited for the CPU, per answer

    def status(self) -> dict[str, Any]:
        """The status report; {} (nothing judged) when lvsd did not answer."""
        from lvsd import control

        t, wall, delay = time.monotonic(), time.time(), run_delay(self.pid)
        answer: dict[str, Any] = {}
        failed = ""
        try:
            answer = control.request_sync(CONTROL, {"command": "status"}, timeout=10)
        except ControlError as exc:
            failed = str(exc)
        elapsed = time.monotonic() - t
        self.status_ms.append(round(elapsed * 1000, 1))
        self.waits.append(run_delay(self.pid) - delay)
        ran = own_time(elapsed, self.g.stalls.between(wall, time.time()), self.waits[-1])
        self.status_ran_ms.append(round(ran * 1000, 1))
        if failed:
            self.status_errors.append(failed)
            if ran >= ANSWER_WITHIN:
                self.status_unexcused.append(failed)
        report: dict[str, Any] = answer.get("status", {})
        return report

    def scrape(self) -> None:
        """One /metrics scrape, timed."""
        t, wall, delay = time.monotonic(), time.time(), run_delay(self.pid)
        lines = metrics("lvsd_service_real_servers_up")
        elapsed = time.monotonic() - t
        stalled = self.g.stalls.between(wall, time.time())
        self.waits.append(run_delay(self.pid) - delay)
        if lines and lines[0].startswith("# /metrics unavailable"):
            self.metrics_errors.append(lines[0])
            if not excused(elapsed, max(stalled, self.waits[-1])):
                self.unexcused.append(lines[0])
        self.metrics_ms.append(round(elapsed * 1000, 1))
        self.metrics_ran_ms.append(round(own_time(elapsed, stalled, self.waits[-1]) * 1000, 1))
        self.metrics_stalled.append(round(stalled, 2))

    def figures(self) -> dict[str, Any]:
        """The record's status and metrics fields (but ``metrics_ms_median``)."""
        late = ANSWER_WITHIN * 1000
        return {
            "status_answers": len(self.status_ms),
            "status_ms_max": max(self.status_ms, default=0.0),
            "status_ms_median": _median(self.status_ms),
            "status_over_1s": sum(1 for ms in self.status_ms if ms >= 1000),
            "status_errors": sorted(set(self.status_errors)),
            "status_errors_unexcused": sorted(set(self.status_unexcused)),
            "status_ran_ms_median": _median(self.status_ran_ms),
            # answers that took ANSWER_WITHIN or more of lvsd's own time (``own_time``)
            "status_late": sum(1 for ms in self.status_ran_ms if ms >= late),
            "status_ran_ms_max": max(self.status_ran_ms, default=0.0),
            "metrics_scrapes": len(self.metrics_ms),
            "metrics_over_1s": sum(1 for ms in self.metrics_ms if ms >= 1000),
            "metrics_late": sum(1 for ms in self.metrics_ran_ms if ms >= late),
            "metrics_ran_ms_max": max(self.metrics_ran_ms, default=0.0),
            "metrics_ran_ms_median": _median(self.metrics_ran_ms),
            "lvsd_cpu_wait_ms_max": round(max(self.waits, default=0.0) * 1000, 1),
            "metrics_ok": not self.metrics_errors,
            "metrics_errors": sorted(set(self.metrics_errors)),
            # errors of scrapes the guest ran for ANSWER_WITHIN or more (lvsd's own)
            "metrics_errors_unexcused": sorted(set(self.unexcused)),
            "metrics_guest_stalled_s_max": max(self.metrics_stalled, default=0.0),
            "metrics_ms_max": max(self.metrics_ms, default=0.0),
        }


def _flap_minute(
    answers: _Answers, server: FaultServer, flappers: list[str], start: float
) -> tuple[int, dict[str, int], list[dict[str, Any]], dict[str, float]]:
    """Flap ``flappers`` for FLAP_SECONDS under traffic, sampling health against the
    kernel and scraping /metrics, from ``start`` (monotonic); samples, counts,
    mismatches and the CPU used."""
    counts: dict[str, int] = {}
    mismatches: list[dict[str, Any]] = []
    samples = 0
    phase = -1
    # Who used the guest's CPU during the flapping minute.
    pids = {"lvsd": answers.pid, "real_servers": server.pidfile().read_text()}
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
        first = answers.status()
        table = kernel_table(ipvsadm())
        second = answers.status()
        got, bad = health_vs_kernel(first, table, second, elapsed=time.monotonic() - t)
        for key, n in got.items():
            counts[key] = counts.get(key, 0) + n
        mismatches += bad
        samples += 1
        answers.scrape()
        time.sleep(SAMPLE_PAUSE)
    cpu_s = {name: round(process_cpu(pid) - cpu_before[name], 1) for name, pid in pids.items()}
    cpu_s["driver"] = round(time.process_time() - cpu_before["driver"], 1)
    cpu_s["minute"] = round(time.monotonic() - start, 1)
    return samples, counts, mismatches, cpu_s


def _flap_run(g: Guest, server: FaultServer, addrs: list[str]) -> dict[str, Any]:
    """One run of ``flap200``, from ``systemctl start lvsd``: its record's fields."""
    from lvsd import control

    t0 = time.time()
    sh("systemctl", "start", "lvsd")
    ready_s = round(time.time() - t0, 2)
    all_up = wait_for(lambda: sum(1 for w in polled().values() if w == 1) == MANY, 90)
    flappers = addrs[::FLAP_EVERY]
    answers = _Answers(g, unit_property("MainPID"))
    start = time.monotonic()
    proc = g.traffic(FLAP_SECONDS, rate=20)
    samples, counts, mismatches, cpu_s = _flap_minute(answers, server, flappers, start)
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
        **answers.figures(),
        # dumps and applies of a second or more, and how long each waited for a dump
        "slow_kernel_calls": [
            {k: e.get(k) for k in ("timestamp", "call", "seconds", "waited", "ops")}
            for e in events(time.time() - FLAP_SECONDS - 30, time.time(), "kernel.slow")
        ],
        "metrics_ms_median": _median(answers.metrics_ms),
        "settled_after_s": settled,
        "final_reported": len(final_servers),
        "final_up": sum(1 for rs in final_servers if rs["up"]),
        "final_health_mismatch": final_mismatch,
        "summary": traffic.summarize(requests),
        "journal": journal(time.time() - FLAP_SECONDS - 30, limit=8),
        "metrics": metrics(*EXPORTED_MANY),
    }
