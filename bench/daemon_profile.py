"""Where the whole daemon's CPU goes: ``lvsd run --dry-run`` under cProfile on the host.

N real servers on 127.0.0.1 (``loopback_servers.serve`` in a child process, not
profiled), the config ``daemon_vs_keepalived.py`` writes for the lab (services of 100,
checks every 1 s, timeout 0.9 s, rise 1, fall 2), the daemon run for ``--seconds`` on an
in-memory table (``--dry-run``: no kernel), then SIGTERM. Prints the share of CPU time
by part of lvsd (checks, health, engine, observe, daemon, ...) and of the rest (asyncio,
ssl, the collector's callbacks ...), and the top functions by own time::

    .venv/bin/python bench/daemon_profile.py --n 1000 --check http --seconds 30

cProfile times by the wall clock (time waiting in epoll is left out of the shares) and
roughly doubles the cost of Python calls, so compare shares, not totals, and
keep ``bench/daemon_vs_keepalived.py`` for CPU per check. Traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import daemon_vs_keepalived  # noqa: E402  (beside this file)
import loopback_servers  # noqa: E402

#: File path fragment -> the part of the daemon it belongs to (first match wins).
PARTS = (
    ("/lvsd/checks/", "lvsd.checks (probes, scheduler)"),
    ("/lvsd/health/", "lvsd.health"),
    ("/lvsd/engine/", "lvsd.engine"),
    ("/lvsd/observe/", "lvsd.observe (metrics, status, HTTP)"),
    ("/lvsd/daemon/", "lvsd.daemon (loops, heap, watchdog)"),
    ("/lvsd/", "lvsd (other)"),
    ("/asyncio/", "asyncio"),
    ("ssl", "ssl"),
    ("httptools", "httptools"),
    ("/aiohttp/", "aiohttp"),
    ("prometheus_client", "prometheus_client"),
    ("structlog", "structlog"),
)


#: What the wall-clock profiler counts while the loop waits for events (not CPU).
IDLE = "<method 'poll' of 'select.epoll' objects>"


def part(filename: str, name: str) -> str:
    if filename == "~" and ("socket" in name or "epoll" in name):
        return "socket and epoll calls (the kernel's loopback work)"
    for fragment, part_name in PARTS:
        if fragment in filename:
            return part_name
    return "other built-ins" if filename == "~" else "other Python (stdlib)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="real servers")
    parser.add_argument("--check", choices=("tcp", "http"), default="http")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    loopback_servers.raise_nofile()
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(
        target=loopback_servers.serve, args=(args.n, args.check, child), daemon=True
    )
    server.start()
    ports: list[int] = parent.recv()
    with tempfile.TemporaryDirectory(prefix="lvsd-profile-") as folder:
        run = Path(folder)
        config = run / "lvsd.toml"
        config.write_text(daemon_vs_keepalived.lvsd_conf(ports, args.check, run))
        out = run / "daemon.prof"
        argv = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "lvsd",
                "--log-level", "warning", "run", "--dry-run", "-c", str(config)]  # fmt: skip
        started = os.times()
        daemon = subprocess.Popen(argv, cwd=HERE.parent)
        time.sleep(args.seconds)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        ended = os.times()
        parent.send(("count",))
        probes = parent.recv()
        parent.send(("quit",))
        server.join(5)
        stats = pstats.Stats(str(out))
    cpu = (ended.children_user + ended.children_system) - (
        started.children_user + started.children_system
    )
    raw = stats.stats  # type: ignore[attr-defined]
    shares: Counter[str] = Counter()
    idle = 0.0
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        if name == IDLE:
            idle += tottime
        else:
            shares[part(filename, name)] += tottime
    total = sum(shares.values()) or 1.0
    print(f"{args.n} {args.check} checks at 1 s for {args.seconds:.0f} s: {probes} probes")
    print(f"daemon CPU (profiled): {cpu:.1f} s, {1000 * cpu / max(probes, 1):.2f} ms/probe\n")
    print(f"share of own time by part (leaving out {idle:.1f} s waiting in epoll)")
    for name, seconds in shares.most_common():
        print(f"  {100 * seconds / total:5.1f} %  {name}")
    print()
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
