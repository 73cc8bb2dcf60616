"""Runs INSIDE the lab guest (not collected by pytest), in the topology of
``lab.tier``: the active-active tier of etc/examples/bgp/ under traffic.

The router runs BIRD (bird-router.conf), dira and dirb lvsd and ExaBGP with their
example configs (copied into the work folder, ``python3`` in ExaBGP's ``run`` line
turned into this virtualenv's python). With new connections at a fixed rate and one
long-lived connection sending a request every 100 ms, in one stream of traffic:

1. ``quorum``: dira's checks of rs1 fail (rs1 cannot answer dira: a ``prohibit``
   route), its service falls below quorum, lvsd withdraws the VIP; then back.
2. ``stop``: lvsd on dirb stops (SIGTERM): the VIP de-preferred, then withdrawn.
3. ``add``: lvsd on dirb starts again, a director added to the tier.

The driver marks when each step began and when the router's route changed
(``ip route`` in ``router``: one next hop per director). Writes
``$LAB_RESULTS/tier.json``; the clients write ``traffic.json`` and ``long.json``.
"""

from __future__ import annotations

import json
import os
import re
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
VIP = "198.51.100.10"
#: Two of the topology's three directors: a third one's processes would starve the
#: guest's one CPU (and the checks with it).
DIRECTORS = {"dira": "10.0.0.11", "dirb": "10.0.0.12"}
#: Seconds of traffic: every step and the pauses between them (lvsd takes 15-20 s to
#: start in the loaded guest).
TRAFFIC = 75.0
#: Seconds each phase lasts once the router's route has settled.
SETTLE = 5.0

procs: list[subprocess.Popen[bytes]] = []


def sh(*argv: str) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    return "\n".join(line.rstrip() for line in (out.stdout + out.stderr).splitlines())


def ns(name: str, *argv: str) -> str:
    return sh("ip", "netns", "exec", name, *argv)


def start(name: str, argv: list[str], log: str) -> subprocess.Popen[bytes]:
    out: IO[bytes] = (RESULTS / log).open("ab")
    env = {**os.environ, "exabgp.daemon.user": "root", "exabgp.daemon.drop": "false"}
    env |= {"exabgp.api.cli": "false", "exabgp.log.destination": "stdout"}
    proc = subprocess.Popen(
        ["ip", "netns", "exec", name, *argv],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
    )
    procs.append(proc)
    return proc


def wait_for(what: str, condition: Callable[[], bool], limit: float = 60.0) -> float:
    """Poll ``condition`` every 200 ms (each poll starts processes: more often would
    starve the guest's one CPU, and the directors' checks with it); the wall time it
    first held. Fails after ``limit``."""
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)
    return time.time()


def next_hops() -> set[str]:
    """The directors the router's route to the VIP goes through."""
    route = ns("router", "ip", "-4", "route", "show", f"{VIP}/32")
    return {d for d, addr in DIRECTORS.items() if re.search(rf"via {addr}\b", route)}


def connections(director: str) -> int:
    """The VIP service's connection counter in ``director``'s IPVS."""
    stats = ns(director, "ipvsadm", "-Ln", "--stats", "-t", f"{VIP}:80")
    match = re.search(rf"TCP\s+{VIP}:80\s+(\d+)", stats)
    return int(match.group(1)) if match else -1


def lvsd(director: str, conf: Path) -> subprocess.Popen[bytes]:
    side = director[-1]
    argv = [
        PYTHON,
        "-m",
        "lvsd",
        "--log-level",
        "info",
        "run",
        "-c",
        str(conf / f"lvsd-{side}.toml"),
    ]
    return start(director, argv, f"lvsd-{side}.log")


def main() -> dict[str, Any]:
    conf = WORK / "bgp"
    shutil.copytree(REPO / "etc" / "examples" / "bgp", conf)
    for path in conf.glob("exabgp-*.conf"):
        path.write_text(path.read_text().replace("run python3 ", f"run {PYTHON} "))
    for rs in ("rs1", "rs2"):
        start(rs, [PYTHON, str(HERE / "ha_httpd.py"), rs, "80"], f"{rs}.log")
    bird = ["bird", "-f", "-c", str(conf / "bird-router.conf")]
    start("router", [*bird, "-s", "/run/bird.ctl", "-P", "/run/bird.pid"], "bird.log")
    daemons = {d: lvsd(d, conf) for d in DIRECTORS}
    for d in DIRECTORS:
        side = d[-1]
        wait_for(f"lvsd-{side}'s routes file", Path(f"/run/lvsd-{side}/routes").exists)
        start(d, ["exabgp", str(conf / f"exabgp-{side}.conf")], f"exabgp-{side}.log")
    marks: dict[str, float] = {}
    marks["all_up"] = wait_for("a next hop each", lambda: len(next_hops()) == 2, limit=90)
    out: dict[str, Any] = {"route_all": ns("router", "ip", "route", "show", f"{VIP}/32")}
    traffic = start(
        "client",
        [PYTHON, "-m", "lab.traffic", f"http://{VIP}/", "--rate", "15",
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
    wait_for("the long connection", lambda: (WORK / "long.ready").exists())
    time.sleep(SETTLE)
    out["conns_before"] = {d: connections(d) for d in DIRECTORS}

    # 1. dira's service loses quorum: rs1 cannot answer dira's checks
    marks["quorum_lost"] = time.time()
    ns("rs1", "ip", "route", "add", "prohibit", "10.0.0.11/32")
    marks["a_withdrawn"] = wait_for("dira's route gone", lambda: "dira" not in next_hops())
    out["route_without_a"] = ns("router", "ip", "route", "show", f"{VIP}/32")
    out["routes_a_down"] = Path("/run/lvsd-a/routes").read_text()
    time.sleep(1.0)
    a_then = connections("dira")
    time.sleep(SETTLE)
    out["a_new_conns_withdrawn"] = connections("dira") - a_then
    ns("rs1", "ip", "route", "del", "prohibit", "10.0.0.11/32")
    marks["a_back"] = wait_for("dira's route back", lambda: "dira" in next_hops())
    time.sleep(SETTLE)

    # 2. a graceful stop of dirb
    marks["stop_b"] = time.time()
    daemons["dirb"].send_signal(signal.SIGTERM)
    marks["b_depref"] = wait_for("dirb out of the multipath", lambda: "dirb" not in next_hops())
    daemons["dirb"].wait(timeout=60)
    marks["b_stopped"] = time.time()
    out["routes_b_stopped"] = Path("/run/lvsd-b/routes").read_text()
    time.sleep(SETTLE)

    # 3. a director added: lvsd on dirb again
    marks["add_b"] = time.time()
    daemons["dirb"] = lvsd("dirb", conf)
    marks["b_added"] = wait_for("dirb's route", lambda: "dirb" in next_hops())
    b_then = connections("dirb")
    time.sleep(SETTLE)
    out["b_new_conns_added"] = connections("dirb") - b_then
    out["route_end"] = ns("router", "ip", "route", "show", f"{VIP}/32")
    traffic.wait(timeout=TRAFFIC + 60)
    long.wait(timeout=TRAFFIC + 60)
    marks["end"] = time.time()
    out["marks"] = marks
    return out


if __name__ == "__main__":
    try:
        result = main()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    (RESULTS / "tier.json").write_text(json.dumps(result, indent=1))
