"""Scenarios an operator drives: drain, restart, reload (good and broken), watchdog."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lab import faults, traffic
from lab.e2e.guest import Guest
from lab.e2e.settings import DROPIN_DIR, RELOAD_WEIGHTS, RS, config_text
from lab.e2e.tools import (
    down_events,
    ipvsadm,
    journal,
    metrics,
    polled,
    sh,
    table_shape,
    unit_property,
    wait_for,
)
from lab.systemd import LVSD


def drain(g: Guest) -> None:
    since = time.time()
    rs = g.servers["rs1"]
    proc = g.traffic(12)
    time.sleep(1.5)
    started = time.time()
    dest = f"{RS['rs1']}:80"
    out = sh(LVSD, "drain", "web", dest, "--wait", "--timeout", "30", check=False)
    drained_s = round(time.time() - started, 2)
    during = ipvsadm()
    faults.kill(rs)
    time.sleep(1)
    faults.start(rs, log=g.results / "rs1.log")
    undrain = sh(LVSD, "undrain", "web", dest, check=False)
    ramp = g.ramp(RS["rs1"])
    requests = g.finish(proc)
    g.record(
        "drain",
        server=f"rs1 {dest}",
        drain_output=out.strip(),
        drained_after_s=drained_s,
        undrain_output=undrain.strip(),
        back_ramp=ramp,
        summary=traffic.summarize(requests),
        ipvsadm_during=during,
        ipvsadm_after=ipvsadm(),
        journal=journal(since),
    )
    g.settle()


def restart(g: Guest) -> None:
    since = time.time()
    before = table_shape(ipvsadm())
    done, changes = g.sampler(before)
    # one stream of traffic for each of the two, so each runs under traffic however
    # long systemctl takes in a slow guest (restart has taken 12 s, start 10 s)
    proc = g.traffic(16)
    time.sleep(1)
    t0 = time.time()
    sh("systemctl", "restart", "lvsd")
    restart_s = round(time.time() - t0, 2)
    requests = g.finish(proc)
    proc = g.traffic(16)
    time.sleep(1)
    pid = unit_property("MainPID")
    sh("kill", "-9", pid)
    t1 = time.time()
    sh("systemctl", "start", "lvsd")
    start_s = round(time.time() - t1, 2)
    requests += g.finish(proc)
    done.set()
    g.record(
        "restart",
        restart_s=restart_s,
        kill9_start_s=start_s,
        table_changes=changes,
        write_ops=[line for line in journal(since, limit=200) if "kernel.op" in line],
        summary=traffic.summarize(requests),
        ipvsadm_after=ipvsadm(),
        journal=journal(since, limit=24),
        nrestarts=unit_property("NRestarts"),
    )


def reload_weights(g: Guest) -> None:
    """The reload happens under traffic (every request counts for ``failed``); the
    split is measured over the requests sent once the new weights are in: rs1
    against rs2 and rs3 together (RELOAD_WEIGHTS: 1:3), and per server. A run in
    which lvsd took a real server out meanwhile (its probes timed out in a guest
    starved by the host) judges nothing about the split: it is recorded as
    ``reload_weights.disturbed`` and runs once more."""
    for attempt in range(2):
        fields = _reload_weights_run(g)
        if not fields["downs"] or attempt:
            g.record("reload_weights", attempts=attempt + 1, **fields)
            break
        g.record("reload_weights.disturbed", **fields)


def _reload_weights_run(g: Guest) -> dict[str, Any]:
    since = time.time()
    proc = g.traffic(15, rate=80)  # across the reload: every request counts
    time.sleep(1)
    g.write_config(config_text(RELOAD_WEIGHTS))
    sh("systemctl", "reload", "lvsd")
    want = dict(zip(RS.values(), RELOAD_WEIGHTS, strict=True))
    took = wait_for(lambda: polled() == want, 60, step=0.05)
    summary = traffic.summarize(g.finish(proc))
    # the split over 2,080 requests sent once the new weights are in, however long the
    # reload took (a starved guest starts `lvsd reload` slowly)
    split = traffic.summarize(g.finish(g.traffic(26, rate=80)))
    ok = max(1, split["sent"] - split["failed"])
    shares = {k: round(100 * v / ok, 1) for k, v in split["servers"].items()}
    rest = sum(v for k, v in split["servers"].items() if k != "rs1")
    fields = {
        "weights": dict(zip(RS, RELOAD_WEIGHTS, strict=True)),
        "applied_after_s": took,
        "split_requests": split["sent"],
        "split_percent": {
            "rs1": round(100 * split["servers"].get("rs1", 0) / ok, 1),
            "rs2+rs3": round(100 * rest / ok, 1),
        },
        "shares_percent": shares,
        "downs": down_events(since, time.time()),
        "summary": summary,
        "ipvsadm_after": ipvsadm(),
        "journal": journal(since),
        "metrics": metrics("lvsd_config"),
    }
    g.write_config(config_text())
    sh("systemctl", "reload", "lvsd")
    g.settle()
    return fields


def reload_broken(g: Guest) -> None:
    since = time.time()
    before = table_shape(ipvsadm())
    proc = g.traffic(8)
    time.sleep(1)
    g.write_config(config_text(broken=True))
    sh("systemctl", "reload", "lvsd", check=False)  # fails: the daemon refuses the file
    wait_for(
        lambda: (
            "lvsd_config_last_reload_successful 0.0"
            in metrics("lvsd_config_last_reload_successful")
        ),
        30,
    )
    during = metrics("lvsd_config")
    active = sh("systemctl", "is-active", "lvsd", check=False).strip()
    requests = g.finish(proc)
    after = table_shape(ipvsadm())
    g.write_config(config_text())
    sh("systemctl", "reload", "lvsd")
    time.sleep(2)
    g.record(
        "reload_broken",
        table_unchanged=before == after,
        still_active=active,
        metrics=during,
        metrics_after_fix=metrics("lvsd_config"),
        summary=traffic.summarize(requests),
        journal=journal(since),
    )


def watchdog(g: Guest) -> None:
    """lvsd's loop wedged (SIGSTOP): systemd's watchdog (WatchdogSec=4s in a drop-in)
    kills and restarts it; the kernel table serves throughout and is adopted."""
    Path(DROPIN_DIR, "watchdog.conf").write_text(
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nWatchdogSec=4s\n"
    )
    sh("systemctl", "daemon-reload")
    sh("systemctl", "restart", "lvsd")
    g.settle()
    before = table_shape(ipvsadm())
    restarts = int(unit_property("NRestarts"))
    pid = unit_property("MainPID")
    proc = g.traffic(25)
    time.sleep(1)
    since = time.time()
    sh("kill", "-STOP", pid)
    back = wait_for(
        lambda: (
            int(unit_property("NRestarts")) > restarts
            and unit_property("MainPID") not in ("0", pid)
            and unit_property("ActiveState") == "active"
        ),
        90,
        step=0.5,
    )
    requests = g.finish(proc)
    g.record(
        "watchdog",
        stopped_pid=pid,
        restarted_after_s=back,
        nrestarts=int(unit_property("NRestarts")) - restarts,
        table_unchanged=before == table_shape(ipvsadm()),
        summary=traffic.summarize(requests),
        ipvsadm_after=ipvsadm(),
        journal=journal(since, limit=40),
    )
