"""The whole daemon against keepalived: ``lvsd run`` next to ``keepalived -C``, one lab boot.

Run on the host (boots the user-mode-Linux lab once; both daemons run in that guest,
interleaved: lvsd, keepalived, lvsd, keepalived ...)::

    .venv/bin/python bench/daemon_vs_keepalived.py --n 100 --check tcp --rounds 2
    .venv/bin/python bench/daemon_vs_keepalived.py --quick      # smoke test, ~40 s

Workload, the same for both: ``--n`` real servers on the guest's loopback
(``127.0.0.1``, one port each), served by one plain-socket process
(``loopback_servers.serve``: one epoll selector; ``tcp`` accepts and closes, ``http``
answers a fixed 200). Services of 100 real servers (``10.1.0.K:80``, wrr, NAT), checks
every 1 s, timeout 1 s (lvsd 0.9 s: it wants it below the interval), down after two
failures, up after one success:

* keepalived 2.2.7, checker only (``-C``): ``delay_loop 1``, ``retry 1``,
  ``delay_before_retry 1``, ``inhibit_on_failure``, ``connect_timeout 1``, TCP_CHECK or
  HTTP_GET (``/``, status 200); real servers start up (keepalived's default, no alpha);
* lvsd: the real ``lvsd run -c FILE`` on a generated TOML file, ``interval 1``,
  ``timeout 0.9``, ``rise 1``, ``fall 2``, its defaults otherwise (initial state down,
  ``on_failure = "quiesce"``).

Per run: start-up to all real servers at full weight (``ipvsadm -Ln`` polled), then a
CPU window of ``--seconds``: CPU of the daemon is utime + stime from ``/proc`` of all
its processes (the process and its descendants), divided by the checks counted on the
server side (connections accepted by the loopback servers), never by what the daemon
claims. Left out of the daemon's CPU: the loopback servers, the ``ipvsadm`` polls and
this script (they cost the same in both runs, on the guest's one CPU). Then detection:
the listeners of a few real servers are closed, the time until ``ipvsadm`` shows weight
0 (or the destination gone) is taken, then they are reopened and the time until full
weight is back (recovery). Throughout, ``ipvsadm -Ln`` is sampled about every 0.2 s
(slower when a dump of many destinations takes longer: the sampling limit is printed)
and every healthy real server ever seen at weight 0 after start-up is counted. RSS
peak: the sum over the daemon's processes of ``VmHWM`` at the end of the run.

The guest has one CPU and traps every syscall, so absolute figures are far above a real
director's: compare the two daemons of one boot with each other. Host load
(``os.getloadavg``) is printed beside the figures: the host is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
PER_SERVICE = 100
INTERVAL = 1.0
#: lvsd wants its timeout below the interval; keepalived gets connect_timeout 1.
TIMEOUT = 0.9
SAMPLE = 0.2
STARTUP_LIMIT = 90.0
DETECT_LIMIT = 30.0
DAEMONS = ("lvsd", "keepalived")


def vip(index: int) -> str:
    """The service address of the index-th group of 100 real servers."""
    return f"10.1.{index // 250}.{index % 250 + 1}"


def groups(ports: list[int]) -> list[list[int]]:
    return [ports[i : i + PER_SERVICE] for i in range(0, len(ports), PER_SERVICE)]


# --- configs ---------------------------------------------------------------------------------


def keepalived_conf(ports: list[int], check: str) -> str:
    lines = ["global_defs {", "    router_id lvsd_bench", "}"]
    for i, group in enumerate(groups(ports)):
        lines += [
            f"virtual_server {vip(i)} 80 {{",
            "    delay_loop 1",
            "    lb_algo wrr",
            "    lb_kind NAT",
            "    protocol TCP",
        ]
        for port in group:
            lines += [
                f"    real_server {LOOPBACK} {port} {{",
                "        weight 1",
                "        inhibit_on_failure",
            ]
            if check == "tcp":
                lines.append("        TCP_CHECK {")
            else:
                lines += [
                    "        HTTP_GET {",
                    "            url {",
                    "                path /",
                    "                status_code 200",
                    "            }",
                ]
            lines += [
                "            connect_timeout 1",
                "            retry 1",
                "            delay_before_retry 1",
                "        }",
                "    }",
            ]
        lines.append("}")
    return "\n".join(lines) + "\n"


def lvsd_conf(ports: list[int], check: str, run_dir: Path) -> str:
    text = (
        "# lvsd whole-daemon bench (written by bench/daemon_vs_keepalived.py)\n"
        f'[daemon]\nstate_dir = "{run_dir / "state"}"\n'
        f'control_socket = "{run_dir / "control.sock"}"\n'
        'metrics_listen = "127.0.0.1:19475"\n\n'
        '[defaults]\nscheduler = "wrr"\nforward = "nat"\n\n'
        f"[defaults.check]\ninterval = {INTERVAL}\ntimeout = {TIMEOUT}\nrise = 1\nfall = 2\n"
    )
    for i, group in enumerate(groups(ports)):
        text += f'\n[services.s{i}]\naddress = "{vip(i)}"\nport = 80\nprotocol = "tcp"\n'
        text += f'\n[[services.s{i}.checks]]\nkind = "{check}"\n'
        if check == "http":
            text += 'path = "/"\n'
        for port in group:
            text += (
                f"\n[[services.s{i}.real_servers]]\n"
                f'address = "{LOOPBACK}"\nport = {port}\nweight = 1\n'
            )
    return text


# --- guest: processes, /proc, ipvsadm ---------------------------------------------------


def tree(root: int) -> list[int]:
    """``root`` and its descendants that are alive now."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, ()))
    return found


def ticks(pids: list[int]) -> dict[int, int]:
    """utime + stime (clock ticks) per live pid."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = int(fields[11]) + int(fields[12])
    return out


def hwm_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def weights() -> dict[int, int]:
    """Real-server port -> weight, from ``ipvsadm -Ln`` (absent: not in the table)."""
    out = subprocess.run(["ipvsadm", "-Ln"], capture_output=True, text=True, check=True).stdout
    table = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "->" and parts[1].startswith(LOOPBACK + ":"):
            table[int(parts[1].rsplit(":", 1)[1])] = int(parts[3])
    return table


def ask(conn: Connection, *message: Any) -> Any:
    conn.send(message)
    return conn.recv()


class Watch:
    """Samples ``ipvsadm`` and remembers every healthy real server ever seen at weight 0."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.stopped: set[int] = set()
        self.healthy_at_zero: set[int] = set()
        self.gaps: list[float] = []
        self.last = time.monotonic()

    def sample(self) -> dict[int, int]:
        table = weights()
        now = time.monotonic()
        self.gaps.append(now - self.last)
        self.last = now
        for port in self.ports:
            if port not in self.stopped and table.get(port, 0) == 0:
                self.healthy_at_zero.add(port)
        time.sleep(max(0.0, SAMPLE - (time.monotonic() - now)))
        return table


def start(
    daemon: str, ports: list[int], check: str, work: Path, rnd: int
) -> subprocess.Popen[bytes]:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{daemon}-{rnd}-", dir="/run"))
    log = open(work / f"{daemon}-{check}-{rnd}.log", "wb")  # noqa: SIM115 - the child's
    if daemon == "keepalived":
        conf = run_dir / "keepalived.conf"
        conf.write_text(keepalived_conf(ports, check))
        argv = ["keepalived", "-f", str(conf), "-n", "-l", "-C",
                "-p", str(run_dir / "k.pid"), "-c", str(run_dir / "c.pid")]  # fmt: skip
    else:
        conf = run_dir / "lvsd.toml"
        conf.write_text(lvsd_conf(ports, check, run_dir))
        (work / "lvsd.toml").write_text(conf.read_text())
        argv = [sys.executable, "-m", "lvsd", "run", "-c", str(conf), "--log-level", "warning"]
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def run_one(
    daemon: str, ports: list[int], check: str, seconds: float, victims: int,
    conn: Connection, work: Path, rnd: int,
) -> dict[str, Any]:  # fmt: skip
    subprocess.run(["ipvsadm", "-C"], check=False)
    tick = os.sysconf("SC_CLK_TCK")
    watch = Watch(ports)
    t0 = time.monotonic()
    proc = start(daemon, ports, check, work, rnd)
    fig: dict[str, Any] = {"daemon": daemon, "round": rnd}
    try:
        # start-up: all real servers at full weight
        startup = None
        while time.monotonic() - t0 < STARTUP_LIMIT and proc.poll() is None:
            table = weights()
            if sum(1 for p in ports if table.get(p, 0) > 0) == len(ports):
                startup = time.monotonic() - t0
                break
            time.sleep(SAMPLE)
        fig["startup_s"] = None if startup is None else round(startup, 2)
        if proc.poll() is not None:
            raise RuntimeError(f"{daemon} exited with {proc.returncode} during start-up")
        watch.last = time.monotonic()
        # CPU window
        pids = tree(proc.pid)
        c0, k0, w0 = ask(conn, "count"), ticks(pids), time.monotonic()
        while time.monotonic() - w0 < seconds:
            watch.sample()
        pids = sorted(set(pids) | set(tree(proc.pid)))
        c1, k1, w1 = ask(conn, "count"), ticks(pids), time.monotonic()
        used = sum(k1.get(p, 0) - k0.get(p, 0) for p in pids) / tick
        checks = c1 - c0
        fig.update(
            checks=checks,
            checks_per_s=round(checks / (w1 - w0), 1),
            cpu_s=round(used, 3),
            cpu_ms_per_1000=round(used / max(checks, 1) * 1e6, 1),
            cpu_share=round(used / (w1 - w0), 3),
            processes=len(pids),
        )
        # detection and recovery of stopped real servers, spread over the services
        chosen = [ports[(i * len(ports)) // victims] for i in range(victims)]
        watch.stopped.update(chosen)
        ask(conn, "stop", chosen)
        t_stop = time.monotonic()
        detect: dict[int, float] = {}
        while len(detect) < len(chosen) and time.monotonic() - t_stop < DETECT_LIMIT:
            table = watch.sample()
            for p in chosen:
                if p not in detect and table.get(p, 0) == 0:
                    detect[p] = time.monotonic() - t_stop
        ask(conn, "start", chosen)
        t_start = time.monotonic()
        back: dict[int, float] = {}
        while len(back) < len(chosen) and time.monotonic() - t_start < DETECT_LIMIT:
            table = watch.sample()
            for p in chosen:
                if p not in back and table.get(p, 0) > 0:
                    back[p] = time.monotonic() - t_start
        watch.stopped.difference_update(chosen)
        for _ in range(5):  # a last look at the whole pool, all healthy again
            watch.sample()
        fig.update(
            detected=len(detect),
            victims=len(chosen),
            detection_median_s=round(statistics.median(detect.values()), 2) if detect else None,
            recovery_median_s=round(statistics.median(back.values()), 2) if back else None,
            healthy_at_zero=len(watch.healthy_at_zero),
            sample_gap_max_s=round(max(watch.gaps), 2) if watch.gaps else None,
            sample_gap_median_s=round(statistics.median(watch.gaps), 2) if watch.gaps else None,
            rss_peak_mib=round(hwm_kib(pids) / 1024, 1),
        )
    finally:
        live = [p for p in tree(proc.pid) if p != proc.pid]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for pid in live:  # no checker child may outlive its daemon into the next run
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["ipvsadm", "-C"], check=False)
    return fig


def guest(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import loopback_servers

    loopback_servers.raise_nofile()
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(
        target=loopback_servers.serve, args=(args.n, args.check, child), daemon=True
    )
    server.start()
    ports: list[int] = parent.recv()
    version = subprocess.run(["keepalived", "--version"], capture_output=True, text=True).stderr
    runs = []
    for rnd in range(args.rounds):
        for daemon in DAEMONS:
            runs.append(
                run_one(
                    daemon, ports, args.check, args.seconds, args.victims, parent, out.parent, rnd
                )
            )
            out.write_text(json.dumps({"runs": runs}, indent=1))
    parent.send(("quit",))
    server.join(10)
    return {
        "n": args.n, "check": args.check, "seconds": args.seconds, "rounds": args.rounds,
        "keepalived_version": version.splitlines()[0] if version else "?", "runs": runs,
    }  # fmt: skip


# --- host ------------------------------------------------------------------------------------


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(results: list[dict[str, Any]]) -> str:
    """The issue's table: one line per (N, check), medians over the rounds."""
    head = (
        "| N | check | keepalived CPU ms / 1,000 checks | lvsd | ratio | detection median, "
        "keepalived / lvsd | recovery, keepalived / lvsd | start to all at full weight, "
        "keepalived / lvsd | checks/s, keepalived / lvsd | RSS MiB, keepalived / lvsd | "
        "healthy at weight 0, keepalived / lvsd | rounds | ipvsadm sample gap max | host load |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for res in results:
        by = {d: [r for r in res["runs"] if r["daemon"] == d] for d in DAEMONS}
        k, lv = by["keepalived"], by["lvsd"]
        kc, lc = _median(k, "cpu_ms_per_1000"), _median(lv, "cpu_ms_per_1000")
        ratio = None if not kc or lc is None else lc / kc
        gap = max((r.get("sample_gap_max_s") or 0 for r in res["runs"]), default=0)

        def pair(key: str, digits: int, k: Any = k, lv: Any = lv) -> str:
            return f"{_fmt(_median(k, key), digits)} / {_fmt(_median(lv, key), digits)}"

        zero = f"{max((r['healthy_at_zero'] for r in k), default=0)} / " + str(
            max((r["healthy_at_zero"] for r in lv), default=0)
        )
        load = res.get("host_load", [])
        lines.append(
            f"| {res['n']:,} | {res['check']} | {_fmt(kc)} | {_fmt(lc)} | {_fmt(ratio, 2)} "
            f"| {pair('detection_median_s', 2)} s | {pair('recovery_median_s', 2)} s "
            f"| {pair('startup_s', 1)} s | {pair('checks_per_s', 0)} | {pair('rss_peak_mib', 0)} "
            f"| {zero} | {len(lv)} | {gap:.2f} s | {' '.join(f'{x:.1f}' for x in load)} |"
        )
    return "\n".join(lines)


def host(args: argparse.Namespace) -> int:
    from lab.harness import Boot, NoTopology, Scenario, run

    results = []
    for check in args.check:
        for n in args.n:
            with tempfile.TemporaryDirectory(prefix="lvsd-daemon-bench-") as tmp:
                work = Path(tmp)
                before = os.getloadavg()
                scenario = Scenario(
                    shell="ulimit -n 65536\nmodprobe dummy 2>/dev/null\n"
                    + Scenario.python(
                        Path(__file__).resolve(), "--guest", str(work / "results" / "bench.json"),
                        "--n", str(n), "--check", check, "--rounds", str(args.rounds),
                        "--seconds", str(args.seconds), "--victims", str(args.victims),
                    ).shell
                )  # fmt: skip
                result = run(
                    work, scenario, topology=NoTopology(), boot=Boot(mem="1024M", timeout=3600)
                )
                after = os.getloadavg()
                if not result.ok:
                    print(result.log()[-5000:], file=sys.stderr)
                    for log in sorted((work / "results").glob("*.log")):
                        print(
                            f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}",
                            file=sys.stderr,
                        )
                    return 1
                res = result.json("bench.json")
                res["host_load"] = [before[0], after[0]]
                results.append(res)
                if args.json:
                    print(json.dumps(res, indent=1))
    print(
        f"whole daemon against {results[0]['keepalived_version']}, lab guest, "
        f"{args.seconds:g} s CPU window per run, interleaved lvsd/keepalived; "
        "CPU per 1,000 checks counted by the servers; host load 1-min before/after the boot"
    )
    print(table(results))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--check", choices=("tcp", "http"), nargs="+", default=["tcp", "http"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--victims", type=int, default=3, help="real servers stopped per run")
    parser.add_argument("--quick", action="store_true", help="smoke test: N=20 tcp, 1 round, 4 s")
    parser.add_argument("--json", action="store_true", help="also print every run's figures")
    parser.add_argument("--guest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.guest is not None:
        args.guest.parent.mkdir(parents=True, exist_ok=True)
        args.n, args.check = args.n[0], args.check[0]
        figures = guest(args, args.guest)
        args.guest.write_text(json.dumps(figures, indent=1))
        return 0
    if args.quick:
        args.n, args.check, args.rounds, args.seconds, args.victims = [20], ["tcp"], 1, 4.0, 2
    return host(args)


if __name__ == "__main__":
    sys.exit(main())
