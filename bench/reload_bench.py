"""Benchmark: a reload that changes one weight in a 10,000-destination config, with the
real kernel (``NetlinkBackend``) in the user-mode-Linux lab.

Run on the host (boots the lab once)::

    .venv/bin/python bench/reload_bench.py [--services 100] [--servers 100] [--rounds 3]

Inside the guest (``--guest OUT.json``): a 100 services x 100 real servers config
(tcp checks, every real server up from the start) is loaded, and an ``Engine`` over a
``NetlinkBackend`` started (the cold programming of the table is timed). Then, per
round, a config with real server 0 of service 0 at a new weight is reloaded, by two
engines on the same kernel:

* as the daemon does it: only the changed service's destinations are dumped
  (``NetlinkBackend.dump_services``), the rest comes from the engine's cache;
* with a backend that can only dump everything (the path before ``dump_services``,
  and the one a reload takes when the cache is stale).

Each reload must issue exactly one netlink op (an ``edit-dest``), counted by wrapping
the backend, and ``ipvsadm -Ln`` must show the new weight. A full ``dump()`` and a
drift repair (full dump, desired table, plan) are timed too. Figures are medians of
wall time. The guest has one CPU and traps every syscall, so absolute figures are
slow: compare them with each other only. Loading the config file is outside the
reload figures (``config_load_s`` is one load of the file in the guest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from engine_bench import bumped, generate_toml, quiet

from lvsd.model import ApplyResult, Op, ServiceKey, Snapshot


def _ipvsadm_weight(service: str, realserver: str) -> int:
    """The weight ``ipvsadm -Ln -t SERVICE`` shows for ``realserver``."""
    out = subprocess.run(
        ["ipvsadm", "-Ln", "-t", service], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "->" and fields[1] == realserver:
            return int(fields[3])
    raise AssertionError(f"{realserver} not in ipvsadm -Ln -t {service}:\n{out}")


async def guest(services: int, servers: int, rounds: int) -> dict[str, Any]:
    from lvsd.config import load
    from lvsd.engine.reconcile import Engine
    from lvsd.ipvs.netlink import NetlinkBackend

    class Counting(NetlinkBackend):
        """The netlink backend, counting the ops it is asked to apply and its dumps."""

        def __init__(self) -> None:
            super().__init__()
            self.ops = 0
            self.dumps = 0
            self.partial: list[int] = []

        async def apply(self, ops: Sequence[Op]) -> ApplyResult:
            self.ops += len(ops)
            return await super().apply(ops)

        async def dump(self) -> Snapshot:
            self.dumps += 1
            return await super().dump()

        async def dump_services(self, keys: Collection[ServiceKey]) -> Snapshot:
            self.partial.append(len(keys))
            return await super().dump_services(keys)

    class FullOnly:
        """A backend with ``dump`` and ``apply`` only (no partial dump)."""

        def __init__(self, inner: Counting) -> None:
            self.inner = inner

        async def dump(self) -> Snapshot:
            return await self.inner.dump()

        async def apply(self, ops: Sequence[Op]) -> ApplyResult:
            return await self.inner.apply(ops)

        async def close(self) -> None:
            await self.inner.close()

    quiet()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.toml"
        path.write_text(generate_toml(services, servers), encoding="utf-8")
        t0 = time.perf_counter()
        config = load(str(path))
        config_load = time.perf_counter() - t0
    n = config.real_server_count
    backend = Counting()
    engine = Engine(config, backend, clock=time.monotonic)
    t0 = time.perf_counter()
    started = await engine.start()
    start = time.perf_counter() - t0
    assert started.ok, started.failed[:3]
    assert services + n == len(started.applied)
    vip = str(config.services[0].key).split()[1]
    rs0 = str(config.services[0].real_servers[0].key)

    full_dumps = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        snap = await backend.dump()
        full_dumps.append(time.perf_counter() - t0)
        assert n == sum(len(vs.destinations) for vs in snap.table.values())

    async def reload(eng: Engine, weight: int) -> tuple[float, int]:
        new = bumped(config, weight)
        ops_before = backend.ops
        t0 = time.perf_counter()
        result = await eng.reload(lambda: new)
        took = time.perf_counter() - t0
        assert result.ok, result
        assert not result.failed, result.failed
        assert _ipvsadm_weight(vip, rs0) == weight
        return took, backend.ops - ops_before

    partial: list[float] = []
    partial_ops: list[int] = []
    full: list[float] = []
    full_ops: list[int] = []
    full_engine = Engine(config, FullOnly(backend), clock=time.monotonic)
    await full_engine.start()
    for i in range(rounds):
        took, ops = await reload(engine, 10 + 2 * i)
        partial.append(took)
        partial_ops.append(ops)
        took, ops = await reload(full_engine, 11 + 2 * i)
        full.append(took)
        full_ops.append(ops)
    assert partial_ops == [1] * rounds, partial_ops
    assert full_ops == [1] * rounds, full_ops
    assert backend.partial, "the daemon-style engine did not dump partially"

    repairs = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        repaired = await full_engine.repair()  # its config is what the kernel has
        repairs.append(time.perf_counter() - t0)
        assert not repaired.applied, repaired.applied
        assert not repaired.failed, repaired.failed
    await engine.close()
    await full_engine.close()
    await backend.close()
    med = statistics.median
    return {
        "services": services,
        "destinations": n,
        "rounds": rounds,
        "config_load_s": config_load,
        "start_s": start,
        "full_dump_s": med(full_dumps),
        "reload_partial_s": med(partial),
        "reload_partial_ops": partial_ops[0],
        "reload_partial_keys": backend.partial[0],
        "reload_full_dump_s": med(full),
        "reload_full_dump_ops": full_ops[0],
        "repair_s": med(repairs),
        "raw": {"full_dump": full_dumps, "partial": partial, "full": full, "repair": repairs},
    }


def host(services: int, servers: int, rounds: int) -> int:
    from lab.harness import Boot, Scenario, run

    with tempfile.TemporaryDirectory(prefix="lvsd-bench-") as tmp:
        work = Path(tmp)
        scenario = Scenario.python(
            Path(__file__).resolve(),
            "--guest", str(work / "results" / "bench.json"),
            "--services", str(services), "--servers", str(servers), "--rounds", str(rounds),
        )  # fmt: skip
        boot = Boot(modules=("ip_vs", "ip_vs_wrr"), mem="1024M", timeout=900)
        result = run(work, scenario, boot=boot)
        if not result.ok:
            print(result.log(), file=sys.stderr)
            return 1
        f = result.json("bench.json")
    n = f["destinations"]
    print(
        f"lvsd reload benchmark (user-mode Linux guest, NetlinkBackend, medians of {f['rounds']})"
    )
    print(f"  config: {f['services']} services x {n // f['services']} real servers = {n} dests")
    print(f"  config file load (once)                        {f['config_load_s']:7.2f} s")
    print(f"  engine start (cold, {n + f['services']} ops)                {f['start_s']:7.2f} s")
    print(f"  full dump()                                    {f['full_dump_s']:7.2f} s")
    print(
        f"  reload, one weight, changed services dumped    {f['reload_partial_s']:7.2f} s"
        f"  ({f['reload_partial_ops']} op, {f['reload_partial_keys']} service dumped)"
    )
    print(
        f"  reload, one weight, full dump                  {f['reload_full_dump_s']:7.2f} s"
        f"  ({f['reload_full_dump_ops']} op)"
    )
    print(f"  drift repair (full dump + plan, 0 ops)         {f['repair_s']:7.2f} s")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--guest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.guest is not None:
        figures = asyncio.run(guest(args.services, args.servers, args.rounds))
        args.guest.write_text(json.dumps(figures, indent=1))
        subprocess.run(["ipvsadm", "-C"], check=True)
        return 0
    return host(args.services, args.servers, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
