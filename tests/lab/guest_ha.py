"""Runs INSIDE the lab guest (not collected by pytest), in the topology of
``lab.pair``: the HA pair of etc/examples/ha/ fails over under traffic.

Each director runs ``lvsd run`` with its example config and keepalived in VRRP-only
mode with its example config (copied into the work folder; pid files on the guest's
/run tmpfs), tracking lvsd's serving file. With traffic flowing (new connections at
a fixed rate, and one
long-lived connection sending a request every 100 ms), the master director dies:
``kill -9`` of its keepalived and lvsd, then its links down. The driver records
``ipvsadm`` in both directors before and after, and when the VIP moved; the
requests' records are written by the clients. Writes ``$LAB_RESULTS/ha.json``.

Usage: ``$LAB_PYTHON guest_ha.py kill|stop``. ``stop`` is a planned switchover
instead: lvsd stops on the master (SIGTERM), its serving file turns to 1, and
keepalived, which tracks it, hands the VIPs over.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
REPO = Path(os.environ["LAB_REPO"])
WORK = Path(os.environ["LAB_WORK"])
RESULTS = Path(os.environ["LAB_RESULTS"])
PYTHON = sys.executable
VIP = "192.168.3.108"
#: Seconds of traffic: set-up of the clients, a few seconds before the failure, and
#: enough after it for VRRP's takeover (about 3.6 s at advert_int 1) and more.
TRAFFIC = 24.0
#: Seconds the traffic runs before the master dies.
BEFORE = 5.0

procs: list[subprocess.Popen[bytes]] = []


def sh(*argv: str) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    return "\n".join(line.rstrip() for line in (out.stdout + out.stderr).splitlines())


def ns(name: str, *argv: str) -> str:
    return sh("ip", "netns", "exec", name, *argv)


def start(name: str, argv: list[str], log: str) -> subprocess.Popen[bytes]:
    out: IO[bytes] = (RESULTS / log).open("wb")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", name, *argv], stdout=out, stderr=subprocess.STDOUT, cwd=REPO
    )
    procs.append(proc)
    return proc


def wait_for(what: str, condition: Callable[[], bool], limit: float = 60.0) -> float:
    """Poll ``condition`` every 50 ms; the wall time it first held. Fails after ``limit``."""
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.time()


def holds_vip(director: str) -> bool:
    return f"inet {VIP}/" in ns(director, "ip", "-4", "addr", "show", "dev", "eth0")


def table_ready(director: str) -> bool:
    table = ns(director, "ipvsadm", "-Ln")
    return table.count("Masq    1") == 2


def keepalived(director: str, conf: Path) -> subprocess.Popen[bytes]:
    side = director[-1]
    argv = ["keepalived", "--vrrp", "-n", "-l", "-D", "-f", str(conf)]
    argv += ["-p", f"/run/keepalived-{side}.pid", "-r", f"/run/vrrp-{side}.pid"]
    return start(director, argv, f"keepalived-{side}.log")


def main(scenario: str) -> dict[str, Any]:
    conf = WORK / "ha"
    shutil.copytree(REPO / "etc" / "examples" / "ha", conf)
    for rs in ("rs1", "rs2"):
        start(rs, [PYTHON, str(HERE / "ha_httpd.py"), rs, "80"], f"{rs}.log")
    lvsd = {
        d: start(
            d,
            [
                PYTHON,
                "-m",
                "lvsd",
                "--log-level",
                "info",
                "run",
                "-c",
                str(conf / f"lvsd-{d[-1]}.toml"),
            ],
            f"lvsd-{d[-1]}.log",
        )
        for d in ("dira", "dirb")
    }
    # keepalived after lvsd (as After=lvsd.service would): the folder of the file it
    # tracks must exist when it starts, or it drops the tracking
    for side in "ab":
        wait_for(f"lvsd-{side}'s serving file", Path(f"/run/lvsd-{side}/serving").exists)
    kad = {"dira": keepalived("dira", conf / "keepalived-a.conf")}
    marks: dict[str, float] = {"vip_on_a": wait_for("the VIP on dira", lambda: holds_vip("dira"))}
    kad["dirb"] = keepalived("dirb", conf / "keepalived-b.conf")
    for d in ("dira", "dirb"):
        wait_for(f"the table of {d}", lambda d=d: table_ready(d))  # type: ignore[misc]
    wait_for(
        "dirb's sync daemons",
        lambda: "backup sync daemon" in ns("dirb", "ipvsadm", "-L", "--daemon"),
    )
    # a sync daemon stopped behind lvsd's back is back after a drift-repair pass (5 s)
    # lvsd held stopped while the daemon is stopped and listed: its drift pass could
    # otherwise restart it before ipvsadm lists it
    lvsd["dirb"].send_signal(signal.SIGSTOP)
    try:
        ns("dirb", "ipvsadm", "--stop-daemon", "backup")
        stopped = ns("dirb", "ipvsadm", "-L", "--daemon")
    finally:
        lvsd["dirb"].send_signal(signal.SIGCONT)
    marks["sync_stopped"] = time.time()
    marks["sync_repaired"] = wait_for(
        "lvsd to restart dirb's backup sync daemon",
        lambda: "backup sync daemon" in ns("dirb", "ipvsadm", "-L", "--daemon"),
        limit=30,
    )
    out: dict[str, Any] = {
        "host_b": ns(
            "dirb", PYTHON, "-m", "lvsd", "check", "--host", "-c", str(conf / "lvsd-b.toml")
        ),
        "daemons_b_stopped": stopped,
        "serving_a_before": Path("/run/lvsd-a/serving").read_text(),
        "daemons_a": ns("dira", "ipvsadm", "-L", "--daemon"),
        "daemons_b": ns("dirb", "ipvsadm", "-L", "--daemon"),
        "b_holds_vip_before": holds_vip("dirb"),
    }
    traffic = start(
        "client",
        [PYTHON, "-m", "lab.traffic", f"http://{VIP}/", "--rate", "20",
         "--duration", str(TRAFFIC), "--timeout", "2", "--out", str(RESULTS / "traffic.json"),
         "--ready", str(WORK / "traffic.ready")],
        "traffic.log",
    )  # fmt: skip
    long = start(
        "client",
        [PYTHON, str(HERE / "ha_client.py"), VIP, "80", str(TRAFFIC - 2),
         str(RESULTS / "long.json"), str(WORK / "long.ready")],
        "long.log",
    )  # fmt: skip
    marks["traffic"] = wait_for("the traffic", lambda: (WORK / "traffic.ready").exists())
    marks["long"] = wait_for("the long connection", lambda: (WORK / "long.ready").exists())
    out["long_port"] = int((WORK / "long.ready").read_text())
    time.sleep(BEFORE)
    out["table_b_before"] = ns("dirb", "ipvsadm", "-Ln")
    out["conns_a_before"] = ns("dira", "ipvsadm", "-Lnc")
    out["conns_b_before"] = ns("dirb", "ipvsadm", "-Lnc")
    marks["fail"] = time.time()
    if scenario == "kill":
        # The master dies: keepalived and lvsd at once, then its links. The VRRP child
        # first: killed after its parent, it would get SIGTERM (its parent-death
        # signal) and resign with a priority-0 advert, a switchover, not a death.
        vrrp_child = int(Path("/run/vrrp-a.pid").read_text().split()[0])
        for pid in (vrrp_child, kad["dira"].pid, lvsd["dira"].pid):
            os.kill(pid, signal.SIGKILL)
        for link in ("eth0", "eth1"):
            sh("ip", "-n", "dira", "link", "set", link, "down")
    else:  # "stop": lvsd stops on the master; its serving file makes keepalived resign
        lvsd["dira"].send_signal(signal.SIGTERM)
    marks["vip_on_b"] = wait_for("the VIP on dirb", lambda: holds_vip("dirb"), limit=30)
    out["a_holds_vip_after"] = holds_vip("dira")
    out["serving_a_after"] = Path("/run/lvsd-a/serving").read_text()
    out["serving_b_after"] = Path("/run/lvsd-b/serving").read_text()
    out["conns_b_after"] = ns("dirb", "ipvsadm", "-Lnc")
    out["table_b_after"] = ns("dirb", "ipvsadm", "-Ln")
    traffic.wait(timeout=TRAFFIC + 60)
    long.wait(timeout=TRAFFIC + 60)
    out["lvsd_b_status"] = ns(
        "dirb", PYTHON, "-m", "lvsd", "status", "-c", str(conf / "lvsd-b.toml")
    )
    out["marks"] = marks
    return out


if __name__ == "__main__":
    try:
        result = main(sys.argv[1])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    (RESULTS / "ha.json").write_text(json.dumps(result, indent=1))
