"""Benchmark: loading a big config, 100 services x 100 real servers (10,000 real
servers), each real server with its own http check.

Run::

    .venv/bin/python bench/config_bench.py [--services 100] [--servers 100] [--rounds 5]
        [--format toml|ini] [--profile]

It writes the file into a temporary directory, then times ``load()`` (median and best
of ``--rounds``, wall clock and CPU: CPU time is the steadier figure on a busy host),
measures the peak of Python allocations during one load (tracemalloc) and the
process's peak RSS, and times ``lvsd check -c FILE`` as a fresh process (interpreter
start-up and imports included). ``--profile`` prints the top
functions of one load by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from lvsd.config import load


def generate_toml(services: int, servers: int) -> str:
    """A TOML config: every real server has an http check on /health."""
    out = ["[defaults.check]\ninterval = 2.0\ntimeout = 1.0\n"]
    for s in range(services):
        out.append(f'\n[services.s{s}]\naddress = "10.20.{s // 250}.{s % 250 + 1}"\nport = 80\n')
        for d in range(servers):
            out.append(
                f"\n[[services.s{s}.real_servers]]\n"
                f'address = "10.30.{s % 250}.{d % 250 + 1}"\nport = {80 + d // 250}\n'
                f"weight = {1 + d % 5}\n"
                f'check = {{ kind = "http", path = "/health", status = [200] }}\n'
            )
    return "".join(out)


def generate_ini(services: int, servers: int) -> str:
    """The same config in INI."""
    out = ["[defaults]\ncheck.interval = 2.0\ncheck.timeout = 1.0\n"]
    for s in range(services):
        out.append(f"\n[service s{s}]\naddress = 10.20.{s // 250}.{s % 250 + 1}\nport = 80\n")
        for d in range(servers):
            out.append(
                f"\n[service s{s} realserver r{d}]\n"
                f"address = 10.30.{s % 250}.{d % 250 + 1}\nport = {80 + d // 250}\n"
                f"weight = {1 + d % 5}\n"
                f"[service s{s} realserver r{d} check]\nkind = http\npath = /health\n"
                "status = 200\n"
            )
    return "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--format", choices=("toml", "ini"), default="toml")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    generate = generate_toml if args.format == "toml" else generate_ini
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / f"big.{args.format}")
        text = generate(args.services, args.servers)
        Path(path).write_text(text, encoding="utf-8")
        print(f"file: {len(text) / 1e6:.1f} MB, {text.count(chr(10))} lines")

        config = load(path)  # warm-up (imports, regex compilation)
        print(f"loaded: {config.summary()}")
        times = []
        cpu = []
        for _ in range(args.rounds):
            start, start_cpu = time.perf_counter(), time.process_time()
            load(path)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        print(
            f"load(): median {statistics.median(times):.3f} s, best {min(times):.3f} s "
            f"wall; median {statistics.median(cpu):.3f} s CPU ({args.rounds} rounds)"
        )

        tracemalloc.start()
        kept = load(path)
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"python allocations: peak {peak / 2**20:.1f} MiB, kept {current / 2**20:.1f} MiB")
        del kept
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"this process: peak RSS {rss:.0f} MiB")

        lvsd = str(Path(sys.executable).with_name("lvsd"))
        start = time.perf_counter()
        done = subprocess.run([lvsd, "check", "-c", path], capture_output=True, text=True)
        wall = time.perf_counter() - start
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"lvsd check: {wall:.2f} s wall, peak RSS {child:.0f} MiB, exit {done.returncode}: "
            f"{(done.stdout or done.stderr).strip().splitlines()[-1]}"
        )

        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(load, path)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
