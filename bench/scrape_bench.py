"""Benchmark: one ``/metrics`` scrape of 10,000 destinations, without the kernel.

Builds a synthetic config (``--services`` x ``--dests`` real servers, one tcp check
each), a health state that has seen one result per check, and a matching kernel
``Snapshot`` with counters; then times, per round, what a scrape does: its one dump
(``NetlinkBackend.dump`` on a fake socket that answers with the replies a kernel
sends for that table, every destination's counters moved on since the dump before
as under traffic, so framing and decoding are lvsd's own; the kernel's side and
the netlink round trips are measured in the lab by bench/reload_bench.py),
``status.build``, ``Metrics.update`` and the text exposition (and the OpenMetrics
one). Prints medians and minimums in milliseconds, of wall time and of this
process's CPU time (on a shared machine the CPU minimum is the steadiest figure).
Target: dump + report + update + text under 250 ms.

    .venv/bin/python bench/scrape_bench.py [--services 100] [--dests 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from lvsd.checks.base import ProbeResult
from lvsd.config.model import CheckSpec, Config, RealServer, TcpOptions, VirtualServiceConfig
from lvsd.daemon import heap
from lvsd.health.state import HealthState
from lvsd.ipvs.netlink import NetlinkBackend
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
from lvsd.observe.metrics import Metrics
from lvsd.observe.status import build

# the reply encoder and the fake socket live in the tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.ipvs.replies import (
    DEST,
    SERVICE,
    V4,
    FakeDumpIPVS,
    dest_attrs,
    encode_reply,
    frame,
    svc_tail,
    tcp,
)


def synthetic(
    services: int, dests: int, *, interval: float = 2.0
) -> tuple[Config, HealthState, Snapshot]:
    spec = CheckSpec(kind="tcp", options=TcpOptions(), interval=interval)
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


#: Dump replies per datagram of the fake kernel.
DATAGRAM = 100


class FakeKernel(FakeDumpIPVS):
    """Answers a dump with the replies a kernel would send for a snapshot, handing the
    loop back before each answer as the socket does. Each dump answers with the next
    of ``rounds`` (in turn): the same table with traffic on every destination since
    the last one, as a busy director's counters move between two scrapes."""

    def __init__(self, services: list[bytes], rounds: list[dict[ServiceKey, list[bytes]]]) -> None:
        super().__init__(services, rounds[0])
        self.rounds = rounds
        self.dumps = 0

    async def service(self, command: str) -> list[Any]:
        self.dests = self.rounds[self.dumps % len(self.rounds)]
        self.dumps += 1
        await asyncio.sleep(0)
        return await super().service(command)

    async def dest(self, command: str, service: Any) -> list[Any]:
        # A kernel answers a dump in datagrams of a few kB, and pyroute2 frames each as
        # it reads it, the loop running in between: here ~100 replies (16 kB) each.
        replies = self.replies(service)
        framed = []
        for start in range(0, len(replies), DATAGRAM):
            await asyncio.sleep(0)
            framed += frame(*replies[start : start + DATAGRAM])
        return framed


def fake_kernel(snapshot: Snapshot, rounds: int = 2) -> FakeKernel:
    """The dump replies of ``snapshot``'s table (IPv4 tcp services), its counters
    moved on by one more connection (and its packets and bytes) per destination each
    round, and its active and inactive counts changing."""
    services = []
    for key in snapshot.table:
        assert key.address is not None  # synthetic() makes address services only
        services.append(encode_reply(SERVICE, V4 + tcp(key.address, key.port) + svc_tail("wlc", 0)))
    answers = []
    for r in range(rounds):
        dests = {}
        for key, vs in snapshot.table.items():
            replies = []
            for dkey, d in vs.destinations.items():
                ds = snapshot.dest_stats.get((key, dkey), DestStats())
                st = ds.stats
                counters = Stats(
                    connections=st.connections + r,
                    packets_in=st.packets_in + 10 * r,
                    packets_out=st.packets_out + 9 * r,
                    bytes_in=st.bytes_in + 1500 * r,
                    bytes_out=st.bytes_out + 9000 * r,
                )
                conns = (ds.active_connections + r, ds.inactive_connections + r, 0)
                attrs = dest_attrs(
                    d.address, d.port, weight=d.weight, conns=conns, counters=counters
                )
                replies.append(encode_reply(DEST, attrs))
            dests[key] = replies
        answers.append(dests)
    return FakeKernel(services, answers)


def dump_backend(snapshot: Snapshot) -> NetlinkBackend:
    """lvsd's netlink backend on a fake socket that answers with ``snapshot``."""
    backend = NetlinkBackend()
    backend._ipvs = fake_kernel(snapshot)  # the socket is what we fake
    return backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--dests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    config, health, snapshot = synthetic(args.services, args.dests)
    metrics = Metrics(CollectorRegistry())
    backend = dump_backend(snapshot)
    # one loop for every round: asyncio.run's SIGINT handling formats the repr of its
    # finished task, whose result is the whole snapshot, which would be timed too
    loop = asyncio.new_event_loop()
    heap.freeze()  # as the daemon does once its config's objects are built
    parts = ("dump", "report", "update", "text", "openmetrics")
    wall: dict[str, list[float]] = {k: [] for k in parts}
    cpu: dict[str, list[float]] = {k: [] for k in parts}
    size = 0
    for _ in range(args.rounds):
        marks = [(time.perf_counter(), time.process_time())]
        dumped = loop.run_until_complete(backend.dump())
        marks.append((time.perf_counter(), time.process_time()))
        report = build(config, health, dumped.table, frozenset(), 2.0)
        marks.append((time.perf_counter(), time.process_time()))
        metrics.update(dumped, report)
        marks.append((time.perf_counter(), time.process_time()))
        body = metrics.exposition()
        marks.append((time.perf_counter(), time.process_time()))
        metrics.exposition(openmetrics=True)
        marks.append((time.perf_counter(), time.process_time()))
        size = len(body)
        for i, k in enumerate(parts):
            wall[k].append(marks[i + 1][0] - marks[i][0])
            cpu[k].append(marks[i + 1][1] - marks[i][1])
    dests = args.services * args.dests
    print(f"{dests} destinations, {size} bytes of text, {args.rounds} rounds (ms):")
    print(f"  {'':<12} {'wall med':>9} {'wall min':>9} {'cpu med':>9} {'cpu min':>9}")

    def row(label: str, keys: tuple[str, ...]) -> None:
        figures = [
            f(sum(t[k][i] for k in keys) for i in range(args.rounds)) * 1000
            for t in (wall, cpu)
            for f in (statistics.median, min)
        ]
        print(f"  {label:<12} " + " ".join(f"{v:9.1f}" for v in figures))

    for k in parts:
        row(k, (k,))
    row("render", ("update", "text"))
    row("total", ("dump", "report", "update", "text"))
    print("  (total = dump + report + update + text; target < 250 ms)")


if __name__ == "__main__":
    main()
