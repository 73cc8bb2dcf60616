"""Benchmark: how much later do probes start while ``/metrics`` is scraped every second?

Runs, in one process and on one event loop as ``lvsd run`` does, the check scheduler
with ``--services`` x ``--dests`` cheap fake probes (a result at once, no I/O; only the
first ``--checks`` if given, the scrape still covers every destination), the
health state fed by their results, and the HTTP endpoint of ``lvsd.observe.api`` whose dump
is lvsd's netlink backend reading the replies a kernel would send for a fixed table
whose counters move between dumps (``scrape_bench.fake_kernel``: framing and
decoding included, the kernel's own work left out). A child process
(the Prometheus stand-in, so its CPU is not counted; curl if installed) GETs
``/metrics`` every second.

Prints the probe lateness (actual start minus scheduled start) p50/p99/max without
scraping; over the 2 s of a first scrape (after a start or reload: the label sets are
ready, but the status report's first objects and the probes' first results are not yet
out of the young generation); then with a scrape every second; and the scrape times
the child saw.

    .venv/bin/python bench/scrape_lateness.py [--services 100] [--dests 100]
        [--checks 0] [--interval 2] [--seconds 10] [--mode steps|thread]
        [--probe task|quick]

``--mode steps`` serves with ``lvsd.observe.api`` as it is (report, update and text in ~2 ms
steps on the loop); ``--mode thread`` with the former handler (report in one go on
the loop, update and text in a worker thread), for comparison. Target: scraping
every second adds under 10 ms to the p99 lateness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Generator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from lvsd.checks.base import Finish, Probe, ProbeResult, Target
from lvsd.checks.scheduler import CheckScheduler, checks_from_config
from lvsd.config.model import CheckSpec, Config
from lvsd.daemon import heap
from lvsd.health.check import CheckId
from lvsd.health.state import HealthState
from lvsd.model import Snapshot, Table
from lvsd.observe import api, status
from lvsd.observe.metrics import Metrics
from lvsd.observe.status import StatusReport, build, build_steps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scrape_bench import dump_backend, synthetic  # the same world as scrape_bench


class FakeProbe:
    """A probe that succeeds at once: the scheduler's and the health state's cost only."""

    RESULT = ProbeResult(ok=True, detail="connected", duration=0.0001)

    async def probe(self) -> ProbeResult:
        return self.RESULT

    async def close(self) -> None:
        return None


class QuickFakeProbe(FakeProbe):
    """The same, run as the scheduler runs a plain tcp connect check: from callbacks,
    without a task (``lvsd.checks.base.QuickProbe``)."""

    class _Run:
        def done(self) -> bool:
            return True

        def cancel(self) -> bool:
            return False

    RUN = _Run()

    def start(self, finish: Finish, now: float) -> QuickFakeProbe._Run:
        asyncio.get_running_loop().call_soon(finish, self.RESULT)
        return self.RUN


def fake_factory(spec: CheckSpec, target: Target) -> Probe:
    return FakeProbe()


def quick_factory(spec: CheckSpec, target: Target) -> Probe:
    return QuickFakeProbe()


class Source:
    """What the daemon gives ``lvsd.observe.api``: a dump of a fixed table, a live health state."""

    def __init__(self, config: Config, health: HealthState, snapshot: Snapshot) -> None:
        self.config = config
        self.health = health
        self._backend = dump_backend(snapshot)
        self.loop = asyncio.get_running_loop()

    @property
    def ready(self) -> bool:
        return True

    async def snapshot(self) -> Snapshot:
        return await self._backend.dump()

    def report(self, table: Table | None) -> StatusReport:
        return build(self.config, self.health, table, frozenset(), self.loop.time())

    def report_steps(self, table: Table | None) -> Generator[None, None, StatusReport]:
        return build_steps(self.config, self.health, table, frozenset(), self.loop.time())


def thread_app(source: Source, metrics: Metrics) -> web.Application:
    """The handler lvsd.observe.api had before the steps: report on the loop in one go, then
    update and text in a worker thread under a lock."""
    lock = asyncio.Lock()

    async def handle(request: web.Request) -> web.Response:
        snapshot = await source.snapshot()
        report = source.report(snapshot.table)

        def render() -> bytes:
            metrics.update(snapshot, report)
            return metrics.exposition()

        async with lock:
            body = await asyncio.to_thread(render)
        return web.Response(body=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    return app


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "n": len(ordered),
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def scrape_client(url: str, seconds: float) -> None:
    """The child: GET ``url`` once a second for ``seconds`` (with curl when there is
    one: it reads 25 MB for a fraction of Python's CPU); print the times as JSON."""
    curl = shutil.which("curl")
    times: list[float] = []
    size = 0
    end = time.monotonic() + seconds
    next_at = time.monotonic()
    while next_at < end:
        t0 = time.monotonic()
        if curl is not None:
            out = subprocess.run(
                [curl, "-sS", "-o", "/dev/null", "-w", "%{size_download}", url],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            size = int(out)
        else:
            with urllib.request.urlopen(url, timeout=30) as resp:
                size = len(resp.read())
        times.append(time.monotonic() - t0)
        next_at += 1.0
        time.sleep(max(0.0, next_at - time.monotonic()))
    print(json.dumps({"scrapes": len(times), "bytes": size, "times": times}))


async def scrapes(url: str, seconds: float) -> bytes:
    """What :func:`scrape_client` prints, run in a child process."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--scrape-client",
        url,
        "--seconds",
        str(seconds),
        stdout=subprocess.PIPE,
    )
    out, _ = await child.communicate()
    return out


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    config, _, snapshot = synthetic(args.services, args.dests, interval=args.interval)
    health = HealthState.from_config(config, loop.time())

    def on_result(check: CheckId, result: ProbeResult, started: float) -> None:
        health.observe(check, result, loop.time())

    sched = CheckScheduler(
        quick_factory if args.probe == "quick" else fake_factory,
        on_result,
        clock=loop.time,
        sleep=asyncio.sleep,
        max_concurrent=100_000,
        rng=random.Random(1),
        lateness_samples=10_000_000,
    )
    checks = dict(list(checks_from_config(config).items())[: args.checks or None])
    await sched.update(checks)
    source = Source(config, health, snapshot)
    metrics = Metrics(CollectorRegistry())
    if args.gc == "settled":
        # As the daemon does: its first dump (adopting the kernel table) and the label
        # sets of the config come before the objects alive are frozen.
        await source.snapshot()
        metrics.prepare(config)
        status.prepare(config)
        heap.freeze()
    if args.mode == "thread":
        runner = web.AppRunner(thread_app(source, metrics), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
    else:
        runner = await api.start("127.0.0.1:0", source, metrics)
    url = f"http://127.0.0.1:{api.bound_port(runner)}/metrics"
    running = asyncio.create_task(sched.run())
    tending = asyncio.create_task(heap.tend() if args.gc == "settled" else asyncio.sleep(0))
    try:
        await asyncio.sleep(args.interval + 1)  # every check has run once
        sched.lateness.clear()
        await asyncio.sleep(args.seconds)
        quiet = list(sched.lateness)
        sched.lateness.clear()
        first = json.loads(await scrapes(url, 1.0))
        await asyncio.sleep(1.0)  # the first scrape's collections are over
        first_lateness = list(sched.lateness)
        sched.lateness.clear()
        out = await scrapes(url, args.seconds)
        scraped = list(sched.lateness)
    finally:
        running.cancel()
        tending.cancel()
        await asyncio.gather(running, tending, return_exceptions=True)
        await runner.cleanup()
        await sched.close()
    client = json.loads(out)
    return {
        "mode": args.mode,
        "probe": args.probe,
        "gc": args.gc,
        "checks": len(checks),
        "destinations": args.services * args.dests,
        "interval_s": args.interval,
        "seconds": args.seconds,
        "lateness_without_scrapes": percentiles(quiet),
        "lateness_first_scrape": percentiles(first_lateness),
        "first_scrape_ms": round(first["times"][0] * 1000, 1),
        "lateness_with_scrapes": percentiles(scraped),
        "scrapes": client["scrapes"],
        "scrape_bytes": client["bytes"],
        "scrape_time": percentiles(client["times"]),
        "scrape_time_mean_ms": round(statistics.fmean(client["times"]) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--dests", type=int, default=100)
    parser.add_argument("--checks", type=int, default=0, help="probe only the first N")
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--mode", choices=("steps", "thread"), default="steps")
    parser.add_argument(
        "--probe",
        choices=("task", "quick"),
        default="task",
        help="task: each run a task (as http, dns, exec...); quick: from callbacks (as tcp)",
    )
    parser.add_argument(
        "--gc",
        choices=("settled", "default"),
        default="settled",
        help="settled: lvsd.daemon.heap.freeze() after setup and lvsd.daemon.heap.tend() beside the"
        " checks, as lvsd does; default: CPython's collector",
    )
    parser.add_argument("--scrape-client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scrape_client:
        scrape_client(args.scrape_client, args.seconds)
        return
    print(json.dumps(asyncio.run(bench(args)), indent=1))


if __name__ == "__main__":
    main()
