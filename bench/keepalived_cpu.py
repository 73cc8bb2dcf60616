"""CPU per probe: lvsd's tcp checks next to keepalived's TCP_CHECK, same work, same guest.

Run on the host (boots the user-mode-Linux lab once)::

    .venv/bin/python bench/keepalived_cpu.py [--checks 1000] [--seconds 20]

Inside the guest, on its loopback only, one process holds ``--checks`` listening
sockets (``loopback_servers.serve``: one epoll selector, accept and close, counting the
connections). Then, one after the other over the same servers:

1. keepalived (Debian's 2.2.7, checker process only: ``-C``) with one virtual server
   whose ``--checks`` real servers are the listening ports, each with
   ``TCP_CHECK { connect_timeout 1 }`` and ``delay_loop 1``. After a warm-up (all real
   servers up: ``ipvsadm -Ln`` is recorded), the CPU of its checker process
   (``/proc/PID/stat`` utime + stime) is read over ``--seconds``;
2. lvsd's scheduler with ``tcp`` probes (``probe_bench.bench``: the same checks at a
   1 s interval), its own CPU read with ``getrusage`` over ``--seconds``.

Probes are counted on the server side (connections accepted) for both, so each CPU
figure is divided by the probes that really reached a server. The guest has one CPU
and traps every syscall, so absolute figures are far above the host's: compare the
two with each other only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VIP = "10.1.0.1"
#: The scheduler's default timer resolution.
RESOLUTION = 0.005


def keepalived_conf(ports: list[int]) -> str:
    lines = [
        "global_defs {",
        "    router_id lvsd_bench",
        "}",
        f"virtual_server {VIP} 80 {{",
        "    delay_loop 1",
        "    lb_algo rr",
        "    lb_kind NAT",
        "    protocol TCP",
    ]
    for port in ports:
        lines += [
            f"    real_server 127.0.0.1 {port} {{",
            "        weight 1",
            "        TCP_CHECK {",
            "            connect_timeout 1",
            "        }",
            "    }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of ``pid`` in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def _count(conn: Connection) -> int:
    conn.send(("count",))
    value: int = conn.recv()
    return value


def _up_destinations() -> tuple[int, str]:
    out = subprocess.run(["ipvsadm", "-Ln"], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if line.strip().startswith("-> 127.")), out


def _wait_file(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.1)
    raise SystemExit(f"{path} did not appear within {timeout} s")


def guest(checks: int, seconds: float, warmup: float, out: Path) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import probe_bench

    tick = os.sysconf("SC_CLK_TCK")
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(
        target=probe_bench.serve, args=(checks, "tcp", child), daemon=True
    )
    server.start()
    ports: list[int] = parent.recv()
    figures: dict[str, Any] = {"checks": checks, "seconds": seconds, "interval_s": 1.0}

    # keepalived ---------------------------------------------------------------------
    work = out.parent
    conf = work / "keepalived.conf"
    conf.write_text(keepalived_conf(ports))
    pidfile, checker_pidfile = work / "keepalived.pid", work / "checkers.pid"
    version = subprocess.run(
        ["keepalived", "--version"], capture_output=True, text=True, check=False
    ).stderr.splitlines()
    figures["keepalived_version"] = version[0] if version else "?"
    with open(work / "keepalived.log", "w") as log:
        keepalived = subprocess.Popen(
            ["keepalived", "-f", str(conf), "-n", "-l", "-C",
             "-p", str(pidfile), "-c", str(checker_pidfile)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            checker = int(_wait_file(checker_pidfile, 60))
            deadline = time.monotonic() + max(warmup, 60)
            time.sleep(warmup)
            up, table = _up_destinations()
            while up < checks and time.monotonic() < deadline:
                time.sleep(1)
                up, table = _up_destinations()
            figures["keepalived_destinations_up"] = up
            (work / "ipvsadm_keepalived.txt").write_text(table)
            c0, t0, w0 = _count(parent), _ticks(checker), time.monotonic()
            time.sleep(seconds)
            c1, t1, w1 = _count(parent), _ticks(checker), time.monotonic()
        finally:
            keepalived.terminate()
            keepalived.wait(30)
            # no checker may outlive it into lvsd's turn on the guest's one CPU
            subprocess.run(["pkill", "-KILL", "-x", "keepalived"], check=False)
    probes = c1 - c0
    user, system = (t1[0] - t0[0]) / tick, (t1[1] - t0[1]) / tick
    cpu = user + system
    figures["keepalived"] = {
        "probes": probes,
        "probes_per_s": round(probes / (w1 - w0), 1),
        "cpu_s": round(cpu, 3),
        "cpu_user_s": round(user, 3),
        "cpu_system_s": round(system, 3),
        "cpu_s_per_1000_probes": round(cpu / max(probes, 1) * 1000, 4),
        "cpu_share_of_one_core": round(cpu / (w1 - w0), 3),
    }
    subprocess.run(["ipvsadm", "-C"], check=False)

    # lvsd ---------------------------------------------------------------------------
    args = argparse.Namespace(
        probe="tcp", checks=checks, interval=1.0, seconds=seconds, max_concurrent=1000,
        driver="heap", gc="settled", resolution=RESOLUTION,
    )  # fmt: skip
    c2 = _count(parent)
    lvsd = asyncio.run(probe_bench.bench(args, ports))
    c3 = _count(parent)
    # bench() first makes the floor's bare connects, outside its CPU window
    probes = c3 - c2 - probe_bench.FLOOR_CONNECTS
    lvsd["probes_counted_by_server"] = probes
    cpu = lvsd["cpu_s"]
    lvsd["cpu_s_per_1000_probes"] = round(cpu / max(probes, 1) * 1000, 4)
    figures["lvsd"] = lvsd
    parent.send(("quit",))
    server.join(10)
    return figures


def host(checks: int, seconds: float, warmup: float) -> int:
    from lab.harness import Boot, NoTopology, Scenario, run

    with tempfile.TemporaryDirectory(prefix="lvsd-kacpu-") as tmp:
        work = Path(tmp)
        scenario = Scenario(
            shell="ulimit -n 20000\n"
            + Scenario.python(
                Path(__file__).resolve(),
                "--guest", str(work / "results" / "bench.json"),
                "--checks", str(checks), "--seconds", str(seconds), "--warmup", str(warmup),
            ).shell
        )  # fmt: skip
        boot = Boot(mem="1024M", timeout=900)
        result = run(work, scenario, topology=NoTopology(), boot=boot)
        if not result.ok:
            print(result.log(), file=sys.stderr)
            for name in ("keepalived.log",):
                path = work / "results" / name
                if path.exists():
                    print(path.read_text()[-3000:], file=sys.stderr)
            return 1
        f = result.json("bench.json")
        table = (work / "results" / "ipvsadm_keepalived.txt").read_text()
    print("\n".join(table.splitlines()[:6]))
    print(json.dumps(f, indent=1))
    k, lv = f["keepalived"], f["lvsd"]
    print(f"{f['checks']} tcp checks at 1 s, {f['seconds']} s, in the lab guest:")
    print(f"  {'':12} {'probes/s':>9} {'CPU s':>7} {'CPU s / 1,000 probes':>22}")
    for name, fig, rate in (
        (f["keepalived_version"].split()[1] if " " in f["keepalived_version"] else "keepalived",
         k, k["probes_per_s"]),
        ("lvsd", lv, lv["probes_counted_by_server"] / lv["seconds"]),
    ):  # fmt: skip
        print(f"  {name:12} {rate:9.1f} {fig['cpu_s']:7.2f} {fig['cpu_s_per_1000_probes']:22.4f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--guest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.guest is not None:
        args.guest.parent.mkdir(parents=True, exist_ok=True)
        figures = guest(args.checks, args.seconds, args.warmup, args.guest)
        args.guest.write_text(json.dumps(figures, indent=1))
        return 0
    return host(args.checks, args.seconds, args.warmup)


if __name__ == "__main__":
    sys.exit(main())
