"""Benchmark the check scheduler (and real probes) against loopback servers.

Runs N checks at a fixed interval for a fixed time on the real event loop and
prints CPU seconds per 1,000 probes, lateness (actual start minus scheduled start)
p50/p99/max, and RSS. Traffic goes only to 127.0.0.1.

    python bench/probe_bench.py --checks 1000 --seconds 20 --probe null
    python bench/probe_bench.py --checks 10000 --seconds 20 --probe tcp

``--probe null`` measures the scheduler alone (a probe that returns at once).
``tcp``, ``http`` and ``https`` build probes through ``lvsd.checks.registry.make_probe``
and need it; the loopback servers run in a child process, so their CPU is not counted.
``https`` verifies a throwaway certificate (made with the openssl CLI) for 127.0.0.1.
``--http-from REV`` probes http/https with ``lvsd/checks/http.py`` as it was at git
revision REV (e.g. the aiohttp probe), to compare runs of old and new in turn:

    for i in 1 2 3; do for rev in 6c5ad9a~1 HEAD; do
        python bench/probe_bench.py --checks 1000 --seconds 20 --probe https --http-from $rev
    done; done
With ``tcp``, ``connect_floor_s_per_1000`` is what 1,000 bare blocking connects to the
same servers cost this process (the kernel's loopback work for both ends, charged to
the connecting side), and ``cpu_s_per_1000_probes_above_floor`` lvsd's cost beyond it.
By default the heap is frozen once the checks are built (``lvsd.daemon.heap.freeze``) and
tended while they run (``lvsd.daemon.heap.tend``), as the daemon does; ``--gc default`` keeps
CPython's collector settings.

Overload: ``--stall S --stall-every T`` blocks the event loop for S seconds every T
seconds (lvsd's own lateness: a long reload parse, a big dump, a host that stops the
process), and ``--fall N`` counts the checks whose healthy server would have gone down
(N failures in a row; ``local`` results hold, as the health state does):

    python bench/probe_bench.py --checks 3000 --seconds 30 --probe http \
        --stall 2 --stall-every 7 --fall 2
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import ipaddress
import json
import multiprocessing
import os
import random
import resource
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from lvsd.checks.base import ProbeFactory, ProbeResult, Target
from lvsd.checks.scheduler import CheckScheduler
from lvsd.config.model import CheckSpec, HttpOptions, TcpOptions
from lvsd.daemon import heap
from lvsd.health.check import CheckId

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loopback_servers

LOOPBACK = loopback_servers.LOOPBACK
HTTP_REPLY = loopback_servers.HTTP_REPLY


# --- loopback servers (child process) ---------------------------------------------------


def serve(count: int, kind: str, conn: Connection) -> None:
    """``count`` loopback servers in this (child) process: ``loopback_servers.serve``
    for tcp and http (one epoll selector, cheap and off the probing process's core),
    asyncio TLS servers for https. Sends the ports on ``conn``, answers ``("count",)``
    with the connections accepted so far, returns on ``("quit",)``."""
    loopback_servers.raise_nofile()
    if kind == "https":
        asyncio.run(_serve_tls(count, conn, _throwaway_cert()))
        return
    loopback_servers.serve(count, kind, conn)


def _throwaway_cert() -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key (files)."""
    certdir = tempfile.mkdtemp(prefix="probe-bench-")
    cert, key = f"{certdir}/cert.pem", f"{certdir}/key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=bench", "-addext",
         f"subjectAltName=IP:{LOOPBACK}", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def _serve_tls(count: int, conn: Connection, pem: tuple[str, str]) -> None:
    """As :func:`serve` for ``https``: asyncio servers with TLS (the cert travels first)."""
    cert, key = pem
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    accepted = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(HTTP_REPLY)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        writer.close()

    servers = [await asyncio.start_server(answer, LOOPBACK, 0, ssl=context, backlog=256)
               for _ in range(count)]  # fmt: skip
    conn.send(cert)
    conn.send([server.sockets[0].getsockname()[1] for server in servers])
    loop = asyncio.get_running_loop()
    while True:
        message = await loop.run_in_executor(None, conn.recv)
        if message != ("count",):
            return
        conn.send(accepted)


# --- probes --------------------------------------------------------------------------------


class NullProbe:
    """Returns at once: measures the scheduler alone."""

    async def probe(self) -> ProbeResult:
        return ProbeResult(ok=True, detail="null", duration=0.0)

    async def close(self) -> None:
        return None


def _http_from(rev: str) -> ProbeFactory:
    """The ``HttpProbe`` of ``lvsd/checks/http.py`` at git revision ``rev``."""
    source = subprocess.run(
        ["git", "show", f"{rev}:lvsd/checks/http.py"], check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType(f"lvsd.checks.http_at_{rev}")
    exec(
        compile(source, module.__name__, "exec"), module.__dict__
    )  # our own file, at a revision the user names
    factory: ProbeFactory = module.HttpProbe
    return factory


def _factory(kind: str, http_from: str | None = None) -> ProbeFactory:
    if kind == "null":
        return lambda spec, target: NullProbe()
    if http_from is not None and kind in ("http", "https"):
        return _http_from(http_from)
    try:
        registry = importlib.import_module("lvsd.checks.registry")
    except ModuleNotFoundError:
        if kind == "tcp":  # until the registry lands, the tcp module's class will do
            tcp = importlib.import_module("lvsd.checks.tcp")
            tcp_probe: ProbeFactory = tcp.tcp_probe
            return tcp_probe
        sys.exit("lvsd.checks.registry is not there yet: only --probe null/tcp can run")
    make_probe: ProbeFactory = registry.make_probe
    return make_probe


def _spec(kind: str, interval: float, ca_file: str | None = None) -> CheckSpec:
    if kind in ("http", "https"):
        options = HttpOptions(ca_file=ca_file)
        return CheckSpec(kind=kind, options=options, interval=interval, timeout=0.9)
    return CheckSpec(kind="tcp", options=TcpOptions(), interval=interval, timeout=0.9)


# --- the run -------------------------------------------------------------------------------


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


#: Bare connects made to measure the loopback floor (the servers count them too).
FLOOR_CONNECTS = 5000


def connect_floor(ports: list[int], count: int = FLOOR_CONNECTS) -> float:
    """CPU seconds one bare connect and reset-close to the loopback servers costs this
    process (blocking calls in a tight loop): on loopback the kernel's work for both
    ends of the connection is charged to the connecting process, so this is a floor no
    prober here can go below, and most of it stays on the real servers' side in a real
    deployment."""
    linger = struct.pack("ii", 1, 0)
    before = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(count):
        with socket.socket() as sock:
            sock.connect((LOOPBACK, ports[i % len(ports)]))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / count


async def bench(args: argparse.Namespace, ports: list[int]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    counts = {"ok": 0, "fail": 0}
    reasons: dict[str, int] = {}
    durations: list[float] = []
    failing: dict[CheckId, int] = {}  # consecutive failures (local results hold)
    went_down: set[CheckId] = set()

    def on_result(check: CheckId, result: ProbeResult, started: float) -> None:
        durations.append(result.duration)
        if result.ok:
            counts["ok"] += 1
            failing[check] = 0
        else:
            counts["fail"] += 1
            reasons[result.reason] = reasons.get(result.reason, 0) + 1
            if result.reason != "local":
                failing[check] = failing.get(check, 0) + 1
                if failing[check] >= args.fall:
                    went_down.add(check)

    spec = _spec(args.probe, args.interval, args.ca_file)
    checks: dict[CheckId, tuple[CheckSpec, Target]] = {}
    for i in range(args.checks):
        port = ports[i % len(ports)] if ports else 10_000 + i
        # Every check needs its own identity; with fewer ports than checks, vary the
        # spec's source port field (unused by the probes here) to keep ids distinct.
        s = spec if len(ports) >= args.checks or not ports else _distinct(spec, i)
        cid = CheckId(spec=s, address=LOOPBACK, port=port)
        checks[cid] = (s, Target(address=ipaddress.ip_address(LOOPBACK), port=port))

    floor = connect_floor(ports) if args.probe == "tcp" else 0.0
    if args.driver == "tasks":
        return await _bench_tasks(args, checks, on_result, counts)
    clock: Callable[[], float] = loop.time
    sched = CheckScheduler(
        _factory(args.probe, args.http_from),
        on_result,
        clock=clock,
        sleep=asyncio.sleep,
        max_concurrent=args.max_concurrent,
        rng=random.Random(1),
        lateness_samples=10_000_000,
        resolution=args.resolution,
    )
    await sched.update(checks)
    if args.gc == "settled":
        heap.freeze()  # as the daemon does once its checks are built
    rss_before = _rss_kib()
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    wall_before = time.monotonic()
    runner = asyncio.create_task(sched.run())
    tending = asyncio.create_task(heap.tend() if args.gc == "settled" else asyncio.sleep(0))
    stalling = asyncio.create_task(_stall(args.stall, args.stall_every))
    await asyncio.sleep(args.seconds)
    runner.cancel()
    tending.cancel()
    stalling.cancel()
    await asyncio.gather(runner, tending, stalling, return_exceptions=True)
    wall = time.monotonic() - wall_before
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    stats = sched.stats()
    rss_after = _rss_kib()
    await sched.close()

    user = usage_after.ru_utime - usage_before.ru_utime
    system = usage_after.ru_stime - usage_before.ru_stime
    cpu = user + system
    lateness = list(sched.lateness)
    probes = max(stats.runs, 1)
    return {
        "driver": "heap",
        "gc": args.gc,
        "probe": args.probe,
        "http_from": args.http_from,
        "checks": args.checks,
        "interval_s": args.interval,
        "seconds": round(wall, 2),
        "runs": stats.runs,
        "results_ok": counts["ok"],
        "results_fail": counts["fail"],
        "fail_reasons": reasons,
        "skipped": stats.skipped,
        "overruns": stats.overruns,
        "stall_s": args.stall,
        "stall_every_s": args.stall_every,
        "checks_gone_down": len(went_down),
        "probes_per_s": round(stats.runs / wall, 1),
        "cpu_s": round(cpu, 3),
        "cpu_user_s": round(user, 3),
        "cpu_system_s": round(system, 3),
        "cpu_s_per_1000_probes": round(cpu / probes * 1000, 4),
        "user_s_per_1000_probes": round(user / probes * 1000, 4),
        "system_s_per_1000_probes": round(system / probes * 1000, 4),
        "cpu_share_of_one_core": round(cpu / wall, 3),
        "connect_floor_s_per_1000": round(floor * 1000, 4),
        "cpu_s_per_1000_probes_above_floor": round(cpu / probes * 1000 - floor * 1000, 4),
        "lateness_p50_ms": round(_percentile(lateness, 0.50) * 1000, 3),
        "lateness_p99_ms": round(_percentile(lateness, 0.99) * 1000, 3),
        "lateness_max_ms": round(max(lateness, default=float("nan")) * 1000, 3),
        "lateness_mean_ms": round(statistics.fmean(lateness) * 1000, 3) if lateness else None,
        "duration_p50_ms": round(_percentile(durations, 0.50) * 1000, 3),
        "duration_p99_ms": round(_percentile(durations, 0.99) * 1000, 3),
        "rss_mib_start": round(rss_before / 1024, 1),
        "rss_mib_end": round(rss_after / 1024, 1),
        "maxrss_mib": round(usage_after.ru_maxrss / 1024, 1),
    }


async def _stall(seconds: float, every: float) -> None:
    """Block the whole event loop for ``seconds`` every ``every`` seconds (never if 0)."""
    if seconds <= 0:
        return
    while True:
        await asyncio.sleep(every)
        time.sleep(seconds)  # noqa: ASYNC251 (on purpose: the loop stands still)


async def _bench_tasks(
    args: argparse.Namespace,
    checks: dict[CheckId, tuple[CheckSpec, Target]],
    on_result: Callable[[CheckId, ProbeResult, float], None],
    counts: dict[str, int],
) -> dict[str, Any]:
    """The design we did not take, for comparison: one sleeping task per check."""
    loop = asyncio.get_running_loop()
    factory = _factory(args.probe, args.http_from)
    rng = random.Random(1)
    lateness: list[float] = []
    runs = 0

    async def one(cid: CheckId, spec: CheckSpec, target: Target) -> None:
        nonlocal runs
        probe = factory(spec, target)
        due = loop.time() + rng.uniform(0, spec.interval)
        try:
            while True:
                await asyncio.sleep(max(0.0, due - loop.time()))
                started = loop.time()
                lateness.append(started - due)
                runs += 1
                on_result(cid, await probe.probe(), started)
                due += spec.interval
        finally:
            await probe.close()

    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    wall_before = time.monotonic()
    tasks = [asyncio.create_task(one(c, s, t)) for c, (s, t) in checks.items()]
    await asyncio.sleep(args.seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    wall = time.monotonic() - wall_before
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage_after.ru_utime - usage_before.ru_utime) + (
        usage_after.ru_stime - usage_before.ru_stime
    )
    return {
        "driver": "tasks",
        "probe": args.probe,
        "http_from": args.http_from,
        "checks": args.checks,
        "seconds": round(wall, 2),
        "runs": runs,
        "results_ok": counts["ok"],
        "cpu_s_per_1000_probes": round(cpu / max(runs, 1) * 1000, 4),
        "lateness_p50_ms": round(_percentile(lateness, 0.50) * 1000, 3),
        "lateness_p99_ms": round(_percentile(lateness, 0.99) * 1000, 3),
        "lateness_max_ms": round(max(lateness, default=float("nan")) * 1000, 3),
        "maxrss_mib": round(usage_after.ru_maxrss / 1024, 1),
    }


def _distinct(spec: CheckSpec, i: int) -> CheckSpec:
    return replace(spec, source_port=i + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--probe", choices=["null", "tcp", "http", "https"], default="null")
    parser.add_argument(
        "--http-from", metavar="REV", help="http/https: lvsd/checks/http.py as at git REV"
    )
    parser.add_argument("--max-concurrent", type=int, default=1000)
    parser.add_argument(
        "--servers", type=int, default=0, help="listening ports (default: one per check)"
    )
    parser.add_argument(
        "--driver",
        choices=["heap", "tasks"],
        default="heap",
        help="heap: lvsd's scheduler; tasks: one sleeping task per check (for comparison)",
    )
    parser.add_argument(
        "--resolution", type=float, default=0.005, help="the scheduler's timer resolution (s)"
    )
    parser.add_argument(
        "--gc",
        choices=("settled", "default"),
        default="settled",
        help="settled: heap.freeze() once the checks are built and heap.tend()"
        " beside them, as lvsd does; default: CPython's collector settings",
    )
    parser.add_argument(
        "--stall", type=float, default=0.0, help="block the event loop this long (s)"
    )
    parser.add_argument("--stall-every", type=float, default=7.0, help="... this often (s)")
    parser.add_argument(
        "--fall", type=int, default=2, help="failures in a row that take a server down"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    args.ca_file = None
    loopback_servers.raise_nofile()

    ports: list[int] = []
    child = None
    parent_conn = None
    if args.probe != "null":
        _factory(args.probe)  # fail early without the registry
        parent_conn, child_conn = multiprocessing.Pipe()
        count = args.servers or args.checks
        child = multiprocessing.Process(
            target=serve, args=(count, args.probe, child_conn), daemon=True
        )
        child.start()
        if args.probe == "https":
            args.ca_file = parent_conn.recv()
        ports = parent_conn.recv()
    try:
        figures = asyncio.run(bench(args, ports))
    finally:
        if child is not None and parent_conn is not None:
            parent_conn.send(("quit",))
            child.join(5)
            if child.is_alive():
                child.terminate()
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>24}: {value}")


if __name__ == "__main__":
    main()
