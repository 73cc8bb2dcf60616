"""Guest-side driver of tests/lab/test_overload_lab.py: a starved ``lvsd run`` takes
no healthy server out, and still finds a dead one.

Runs in the lab guest (NAT topology, four real servers with an HTTP server each that
answers after 0.5 s: healthy, and slow enough that a probe is often under way).
``lvsd run`` checks them over http every 1 s (timeout 0.9 s, fall 1: one failed
probe is a weight 0). While a watcher reads ``ipvsadm -Ln`` every 100 ms:

1. lvsd is stopped (SIGSTOP) for 2.5 s, three times, 3 s apart: its probes in flight
   see their deadlines pass while it stands still;
2. lvsd's descriptor limit is cut below what it has open (``prlimit``) for 3 s:
   every new probe fails with EMFILE;
3. rs1's server is killed: how long until ``ipvsadm`` shows its weight 0.

Everything measured goes to ``$LAB_RESULTS/overload.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.lab.scenario_daemon import httpd, ipvsadm, lvsd, stop, wait_for, weights

RESULTS = Path(os.environ.get("LAB_RESULTS", "/tmp"))
PYTHON = sys.executable
RUN = Path("/run/lvsd-lab")
WEIGHT = 10
NAMES = ("rs1", "rs2", "rs3", "rs4")
SERVERS = [f"10.0.0.{n + 2}:80" for n in range(len(NAMES))]
STOPS, STOP_S, APART_S, NOFILE_S = 3, 2.5, 3.0, 3.0

CONFIG = """
[daemon]
state_dir = "{run}/state"
control_socket = "{run}/control.sock"
metrics_listen = ""

[services.web]
address = "192.168.3.108"
port = 80
protocol = "tcp"
scheduler = "wrr"
forward = "nat"
initial_state = "down"

[[services.web.checks]]
kind = "http"
path = "/"
interval = 1.0
timeout = 0.9
rise = 1
fall = 1
"""

SERVER = """
[[services.web.real_servers]]
address = "{address}"
port = 80
weight = {weight}
"""


#: Seconds the real servers take to answer (healthy: under the timeout).
ANSWER_S = 0.5


class Watcher:
    """Reads ``ipvsadm -Ln`` every 100 ms in a thread; keeps every weight 0 seen of
    the servers in ``healthy`` (with when)."""

    def __init__(self, healthy: list[str]) -> None:
        self.healthy = healthy
        self.zeros: list[tuple[float, str]] = []
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            seen = weights(ipvsadm())
            self.reads += 1
            for server in self.healthy:
                if seen.get(server, 0) == 0:
                    self.zeros.append((time.monotonic(), server))
            time.sleep(0.1)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def main() -> int:
    RUN.mkdir(parents=True, exist_ok=True)
    config = RUN / "lvsd.toml"
    text = CONFIG.format(run=RUN)
    text += "".join(SERVER.format(address=s.split(":")[0], weight=WEIGHT) for s in SERVERS)
    config.write_text(text)
    out: dict[str, Any] = {}
    servers = {name: httpd(name, ANSWER_S) for name in NAMES}
    log = (RESULTS / "lvsd.log").open("w")
    daemon = subprocess.Popen(
        [PYTHON, "-m", "lvsd", "--log-level", "info", "run", "-c", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        out["start_s"], out["start_table"] = wait_for(
            lambda w, _t: all(w.get(s) == WEIGHT for s in SERVERS), limit=60.0
        )
        time.sleep(2.0)  # a few rounds of checks at full weight
        with Watcher(SERVERS) as watcher:
            for _ in range(STOPS):
                daemon.send_signal(signal.SIGSTOP)
                time.sleep(STOP_S)
                daemon.send_signal(signal.SIGCONT)
                time.sleep(APART_S)
            out["stop_zeros"] = list(watcher.zeros)
            soft_hard = subprocess.run(
                ["prlimit", "--pid", str(daemon.pid), "--nofile", "--noheadings", "--raw",
                 "--output", "SOFT,HARD"],
                capture_output=True, text=True, check=True,
            ).stdout.split()  # fmt: skip
            used = open_fds(daemon.pid)
            # below what it has open: every new descriptor fails (EMFILE), old ones work
            subprocess.run(
                ["prlimit", "--pid", str(daemon.pid), f"--nofile=3:{soft_hard[1]}"], check=True
            )
            time.sleep(NOFILE_S)
            subprocess.run(
                ["prlimit", "--pid", str(daemon.pid), f"--nofile={soft_hard[0]}:{soft_hard[1]}"],
                check=True,
            )
            time.sleep(APART_S)
            out["zeros"] = list(watcher.zeros)
            out["reads"] = watcher.reads
            out["nofile_used"] = used
        status = lvsd("status", "--socket", str(RUN / "control.sock"))
        out["status"] = status.stdout + status.stderr

        stop(servers["rs1"])
        since = time.monotonic()
        out["down_s"], out["down_table"] = wait_for(lambda w, _t: w.get(SERVERS[0]) == 0)
        out["down_s"] = time.monotonic() - since
        out["others_after_down"] = [weights(ipvsadm()).get(s) for s in SERVERS[1:]]
        daemon.send_signal(signal.SIGTERM)
        out["exit_status"] = daemon.wait(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGCONT)
            daemon.kill()
            daemon.wait()
        for proc in servers.values():
            stop(proc)
        log.close()
        out["log"] = (RESULTS / "lvsd.log").read_text()[-20000:]
        (RESULTS / "overload.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
