"""Guest-side driver of tests/lab/test_daemon_lab.py: ``lvsd run`` against the real kernel.

Runs in the lab guest (NAT topology, two real servers). Starts an HTTP server in each
real server's namespace, runs ``lvsd run`` with http checks (interval 1 s, timeout
0.9 s, fall 2, rise 2, slow start 3 s, a sorry server), then:

1. waits for both real servers at full weight;
2. stops rs1's server and times how long until ``ipvsadm -Ln`` shows weight 0;
3. starts it again, times the first weight > 0 and samples the slow-start ramp;
4. stops both and times the sorry server's arrival;
5. ``lvsd reload`` with a changed weight; ``lvsd drain``/``undrain``;
6. kill -9 and start again (no write op), then SIGTERM: the table stays.

Everything measured goes to ``$LAB_RESULTS/daemon.json``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lab.stall import StallMeter

RESULTS = Path(os.environ.get("LAB_RESULTS", "/tmp"))
PYTHON = sys.executable
RUN = Path("/run/lvsd-lab")
WEIGHT = 10
SORRY = "10.0.0.100:80"
#: Drift repair period (seconds).
RECONCILE = 2.0

CONFIG = """
[daemon]
state_dir = "{run}/state"
control_socket = "{run}/control.sock"
metrics_listen = ""
reconcile_interval = {reconcile}

[services.web]
address = "192.168.3.108"
port = 80
protocol = "tcp"
scheduler = "wrr"
forward = "nat"
initial_state = "down"
slow_start = 3.0

[services.web.sorry_server]
address = "10.0.0.100"
port = 80

[[services.web.checks]]
kind = "http"
path = "/"
interval = 1.0
timeout = 0.9
rise = 2
fall = 2

[[services.web.real_servers]]
address = "10.0.0.2"
port = 80
weight = {w2}

[[services.web.real_servers]]
address = "10.0.0.3"
port = 80
weight = {w3}
"""

#: Run in the client namespace: one connection through the VIP, held open (no request)
#: until killed.
HOLD = (
    "import socket, sys, time\n"
    "s = socket.create_connection(('192.168.3.108', 80), 5)\n"
    "print('connected', flush=True)\n"
    "time.sleep(600)\n"
)


def active(text: str, realserver: str) -> int:
    """ActiveConn of ``realserver`` in ``ipvsadm -Ln`` (0 when absent)."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == realserver:
            return int(fields[4])
    return 0


def shape(text: str) -> list[list[str]]:
    """``ipvsadm -Ln`` without the connection counters (they move as connections
    expire): services, and real servers with forward method and weight."""
    return [line.split()[:4] for line in text.splitlines() if line.strip()]


def without(config: str, realserver: str) -> str:
    """``config`` without the ``[[services.web.real_servers]]`` block of ``realserver``."""
    address = realserver.split(":")[0]
    blocks = config.split("[[services.web.real_servers]]")
    kept = [b for b in blocks[1:] if f'address = "{address}"' not in b]
    return "[[services.web.real_servers]]".join([blocks[0], *kept])


LINE = re.compile(r"^\s+->\s+(\S+)\s+\S+\s+(\d+)\s+")


def ipvsadm() -> str:
    return subprocess.run(["ipvsadm", "-Ln"], capture_output=True, text=True, check=True).stdout


def weights(text: str) -> dict[str, int]:
    """Real server -> weight, from ``ipvsadm -Ln``."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            found[m.group(1)] = int(m.group(2))
    return found


def httpd(name: str, delay: float = 0.0) -> subprocess.Popen[bytes]:
    """``lab.httpd`` on port 80 in namespace ``name`` (answering ``delay`` s late),
    once it listens."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", name, PYTHON, "-m", "lab.httpd", name, "80", str(delay)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while (
        b":80 "
        not in subprocess.run(
            ["ip", "netns", "exec", name, "ss", "-ltn"], capture_output=True, check=False
        ).stdout
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: http server did not start")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


def wait_for(predicate: Any, limit: float = 30.0) -> tuple[float, str]:
    """Poll ``ipvsadm -Ln`` every 50 ms until ``predicate(weights, text)``; seconds taken."""
    start = time.monotonic()
    while True:
        text = ipvsadm()
        if predicate(weights(text), text):
            return time.monotonic() - start, text
        if time.monotonic() - start > limit:
            raise RuntimeError(f"condition not met within {limit} s:\n{text}")
        time.sleep(0.05)


def lvsd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "lvsd", *args], capture_output=True, text=True, check=False
    )


def second_instances(config: Path) -> list[dict[str, Any]]:
    """Start ``lvsd run`` twice beside the running daemon: with the same config (the
    control socket is taken) and with its own socket but a metrics port in use. Each
    exits non-zero; ``ipvsadm -Ln`` is the same before and after, its log has no op."""
    found = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        other = RUN / "second.toml"
        other.write_text(
            config.read_text()
            .replace('control.sock"', 'second.sock"')
            .replace(
                'metrics_listen = ""', f'metrics_listen = "127.0.0.1:{taken.getsockname()[1]}"'
            )
        )
        for path in (config, other):
            before = ipvsadm()
            done = lvsd("--log-level", "info", "run", "-c", str(path))
            found.append(
                {
                    "status": done.returncode,
                    "output": (done.stdout + done.stderr)[-2000:],
                    "ops": (done.stdout + done.stderr).count("kernel.op"),
                    "same_table": before == ipvsadm(),
                }
            )
    return found


def main() -> int:
    RUN.mkdir(parents=True, exist_ok=True)
    config = RUN / "lvsd.toml"
    config.write_text(CONFIG.format(run=RUN, w2=WEIGHT, w3=WEIGHT, reconcile=RECONCILE))
    out: dict[str, Any] = {}
    servers = {name: httpd(name) for name in ("rs1", "rs2")}
    log = (RESULTS / "lvsd.log").open("w")
    daemon = subprocess.Popen(
        [PYTHON, "-m", "lvsd", "--log-level", "info", "run", "-c", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        rs1, rs2 = "10.0.0.2:80", "10.0.0.3:80"
        out["start_s"], out["start_table"] = wait_for(
            lambda w, _t: w.get(rs1) == WEIGHT and w.get(rs2) == WEIGHT
        )

        # the time the whole guest stood still (the host's stalls) is not lvsd's
        with StallMeter() as stalls:
            stop(servers["rs1"])
            since = time.time()
            out["down_s"], out["down_table"] = wait_for(lambda w, _t: w.get(rs1) == 0)
            out["down_stalled_s"] = stalls.between(since, time.time())

            servers["rs1"] = httpd("rs1")
            since = time.time()
            out["up_s"], out["up_table"] = wait_for(lambda w, _t: w.get(rs1, 0) > 0)
            out["up_stalled_s"] = stalls.between(since, time.time())
        ramp: list[int] = []
        start = time.monotonic()
        while time.monotonic() - start < 8:
            w = weights(ipvsadm()).get(rs1, 0)
            if not ramp or ramp[-1] != w:
                ramp.append(w)
            if w == WEIGHT:
                break
            time.sleep(0.1)
        out["ramp"] = ramp
        out["ramp_s"] = time.monotonic() - start

        stop(servers["rs1"])
        stop(servers["rs2"])
        out["sorry_s"], out["sorry_table"] = wait_for(lambda w, _t: SORRY in w)

        servers = {name: httpd(name) for name in ("rs1", "rs2")}
        out["recovered_s"], out["recovered_table"] = wait_for(
            lambda w, _t: SORRY not in w and w.get(rs1, 0) > 0 and w.get(rs2, 0) > 0
        )
        wait_for(lambda w, _t: w.get(rs1) == WEIGHT and w.get(rs2) == WEIGHT)

        config.write_text(CONFIG.format(run=RUN, w2=WEIGHT, w3=WEIGHT + 5, reconcile=RECONCILE))
        reload = subprocess.run(
            [PYTHON, "-m", "lvsd", "reload", "--socket", str(RUN / "control.sock")],
            capture_output=True,
            text=True,
            check=False,
        )
        out["reload"] = {"status": reload.returncode, "stdout": reload.stdout}
        out["reload_table"] = ipvsadm()

        status = subprocess.run(
            [PYTHON, "-m", "lvsd", "status", "--socket", str(RUN / "control.sock")],
            capture_output=True,
            text=True,
            check=False,
        )
        out["status"] = status.stdout

        # a second `lvsd run` (same config; then its own socket but a metrics port in
        # use) stops before its first kernel write: the table is not touched
        out["second"] = second_instances(config)

        sock = str(RUN / "control.sock")
        drain = lvsd("drain", "web", rs2, "--socket", sock)
        out["drain"] = {"status": drain.returncode, "stdout": drain.stdout}
        out["drain_table"] = ipvsadm()
        lvsd("undrain", "web", rs2, "--socket", sock)
        out["undrain_table"] = ipvsadm()

        # a broken config: `lvsd reload` exits non-zero naming the problem; the table
        # and the running config stay
        good = config.read_text()
        config.write_text(good.replace('scheduler = "wrr"', 'scheduler = "wrrr"'))
        broken = lvsd("reload", "--socket", sock)
        out["broken_reload"] = {
            "status": broken.returncode,
            "output": broken.stdout + broken.stderr,
        }
        out["broken_reload_table"] = ipvsadm()
        config.write_text(good)

        # a real server removed by a reload while a client holds a connection to it:
        # weight 0 at once, deleted only once that connection has ended
        holder = subprocess.Popen(
            ["ip", "netns", "exec", "client", PYTHON, "-c", HOLD], stdout=subprocess.PIPE
        )
        assert holder.stdout is not None
        holder.stdout.readline()  # connected
        wait_for(lambda _w, t: any(active(t, a) > 0 for a in (rs1, rs2)))
        held = rs1 if active(ipvsadm(), rs1) > 0 else rs2
        config.write_text(without(good, held))
        removal = lvsd("reload", "--socket", sock)
        out["removal"] = {"held": held, "status": removal.returncode, "stdout": removal.stdout}
        time.sleep(2.5)  # a few lingering checks
        out["removal_lingering_table"] = ipvsadm()
        holder.kill()
        holder.wait()
        out["removal_deleted_s"], out["removal_deleted_table"] = wait_for(
            lambda w, _t: held not in w
        )
        config.write_text(good)
        lvsd("reload", "--socket", sock)
        wait_for(lambda w, _t: w.get(rs1) == WEIGHT and w.get(rs2) == WEIGHT + 5)

        # drift: a hand edit of a managed destination is repaired within one reconcile
        # interval; a hand-made service is left alone (and removed by hand afterwards)
        # lvsd is held stopped while the edit is made and listed: on a slow host its
        # reconcile could otherwise repair the edit before ipvsadm lists it
        subprocess.run(["ipvsadm", "-A", "-t", "192.168.3.108:8080", "-s", "rr"], check=True)
        daemon.send_signal(signal.SIGSTOP)
        try:
            subprocess.run(
                ["ipvsadm", "-e", "-t", "192.168.3.108:80", "-r", rs2, "-m", "-w", "7"],
                check=True,
            )
            out["drift_edited_table"] = ipvsadm()
        finally:
            daemon.send_signal(signal.SIGCONT)
        with StallMeter() as stalls:
            since = time.time()
            out["drift_s"], out["drift_table"] = wait_for(lambda w, _t: w.get(rs2) == WEIGHT + 5)
            out["drift_stalled_s"] = stalls.between(since, time.time())
        time.sleep(RECONCILE + 0.5)  # one more repair round
        out["hand_service_table"] = ipvsadm()
        subprocess.run(["ipvsadm", "-D", "-t", "192.168.3.108:8080"], check=True)

        # kill -9, then start again: the table is adopted, not one write op
        daemon.kill()
        daemon.wait()
        before = ipvsadm()
        log2 = (RESULTS / "lvsd-restart.log").open("w")
        daemon = subprocess.Popen(
            [PYTHON, "-m", "lvsd", "run", "-c", str(config)], stdout=log2, stderr=subprocess.STDOUT
        )
        # generous: a starved guest has taken over 30 s to start lvsd (each try of
        # ``lvsd status`` is a Python start of its own, seconds there too)
        started = time.monotonic()
        while lvsd("status", "--socket", sock).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > started + 90:
                log2.flush()
                tail = (RESULTS / "lvsd-restart.log").read_text()[-3000:]
                raise RuntimeError(
                    f"restarted daemon did not answer (exit {daemon.poll()}):\n{tail}"
                )
            time.sleep(0.1)
        out["restart_answer_s"] = round(time.monotonic() - started, 2)
        time.sleep(2 * 1.0 + 0.5)  # a round of checks too
        out["restart_same_table"] = shape(before) == shape(ipvsadm())

        out["before_stop_table"] = shape(ipvsadm())
        daemon.send_signal(signal.SIGTERM)
        out["exit_status"] = daemon.wait(timeout=30)
        out["restart_log"] = (RESULTS / "lvsd-restart.log").read_text()
        out["after_stop_table"] = shape(ipvsadm())
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        for proc in servers.values():
            stop(proc)
        (RESULTS / "daemon.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
