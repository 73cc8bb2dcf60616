"""Benchmark: one ``/metrics`` scrape of 10,000 destinations, without the kernel.

Builds a synthetic config (``--services`` x ``--dests`` real servers, one tcp check
each), a health state that has seen one result per check, and a matching kernel
``Snapshot`` with counters; then times, per round, what a scrape does after its one
netlink dump: ``status.build`` + ``Metrics.update`` + the text exposition (and the
OpenMetrics one). Prints medians in milliseconds. Target: the render (update +
text, given the snapshot and the report) under 250 ms.

    .venv/bin/python bench/scrape_bench.py [--services 100] [--dests 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import time

from prometheus_client import CollectorRegistry

from lvsd.checks.base import ProbeResult
from lvsd.config.model import CheckSpec, Config, RealServer, TcpOptions, VirtualServiceConfig
from lvsd.health import HealthState
from lvsd.metrics import Metrics
from lvsd.model import (
    Destination,
    DestKey,
    DestStats,
    Protocol,
    Service,
    ServiceKey,
    Snapshot,
    Stats,
    VirtualService,
)
from lvsd.status import build


def synthetic(services: int, dests: int) -> tuple[Config, HealthState, Snapshot]:
    spec = CheckSpec(kind="tcp", options=TcpOptions())
    svcs = []
    for s in range(services):
        key = ServiceKey.inet(Protocol.TCP, f"10.20.{s // 250}.{s % 250 + 1}", 80)
        rss = tuple(
            RealServer(
                address=ipaddress.ip_address(f"10.30.{s % 250}.{d % 250 + 1}"),
                port=80 + d // 250,
                weight=1 + d % 5,
                checks=(spec,),
            )
            for d in range(dests)
        )
        svcs.append(VirtualServiceConfig(name=f"svc{s}", key=key, real_servers=rss))
    config = Config(path="bench.toml", services=tuple(svcs))
    health = HealthState.from_config(config, 0.0)
    ok = ProbeResult(ok=True, detail="connected", duration=0.001)
    health.round(((cid, ok) for cid in health.check_ids()), 1.0)
    table: dict[ServiceKey, VirtualService] = {}
    dest_stats: dict[tuple[ServiceKey, DestKey], DestStats] = {}
    service_stats: dict[ServiceKey, Stats] = {}
    for i, svc in enumerate(config.services):
        ds = {}
        for j, rs in enumerate(svc.real_servers):
            ds[rs.key] = Destination(address=str(rs.address), port=rs.port, weight=rs.weight)
            n = i * dests + j
            dest_stats[(svc.key, rs.key)] = DestStats(
                active_connections=n % 7,
                inactive_connections=n % 11,
                stats=Stats(connections=n, packets_in=n * 10, packets_out=n * 9, bytes_in=n * 1500),
            )
        table[svc.key] = VirtualService(service=Service(key=svc.key), destinations=ds)
        service_stats[svc.key] = Stats(connections=i)
    return config, health, Snapshot(table=table, service_stats=service_stats, dest_stats=dest_stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--dests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    config, health, snapshot = synthetic(args.services, args.dests)
    metrics = Metrics(CollectorRegistry())
    times: dict[str, list[float]] = {"report": [], "update": [], "text": [], "openmetrics": []}
    size = 0
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        report = build(config, health, snapshot.table, frozenset(), 2.0)
        t1 = time.perf_counter()
        metrics.update(snapshot, report)
        t2 = time.perf_counter()
        body = metrics.exposition()
        t3 = time.perf_counter()
        metrics.exposition(openmetrics=True)
        t4 = time.perf_counter()
        size = len(body)
        times["report"].append(t1 - t0)
        times["update"].append(t2 - t1)
        times["text"].append(t3 - t2)
        times["openmetrics"].append(t4 - t3)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    render = med["update"] + med["text"]
    total = med["report"] + render
    dests = args.services * args.dests
    print(f"{dests} destinations, {size} bytes of text, median of {args.rounds} rounds:")
    for k, v in med.items():
        print(f"  {k:<12} {v:8.1f} ms")
    print(f"  render       {render:8.1f} ms (update + text; target < 250 ms)")
    print(f"  with report  {total:8.1f} ms (report + update + text)")


if __name__ == "__main__":
    main()
