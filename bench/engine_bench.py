"""Benchmark: the engine's reload and drift repair at 10,000 real servers, on the host
with the in-memory backend (no kernel: this isolates lvsd's own Python work).

Run::

    .venv/bin/python bench/engine_bench.py [--services 100] [--servers 100] [--rounds 5]
        [--profile]

A 100 services x 100 real servers config (tcp checks) is loaded and an engine started
on a ``MemoryBackend``; then, per round, a config with one real server's weight changed
is reloaded (asserting exactly one op, an ``edit-dest``; with ``--partial`` the
backend dumps only the changed service, as ``NetlinkBackend.dump_services`` does), and
a drift repair (a full dump, desired table and plan: no op) is timed. Figures are
medians of CPU time of the engine call (config loading is outside the timings:
``bench/config_bench.py`` has it).
``--profile`` prints the top functions of one reload by cumulative time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import pstats
import statistics
import sys
import time
from collections.abc import Collection
from dataclasses import replace
from typing import Any

import structlog

from lvsd.config.model import Config
from lvsd.engine.reconcile import Engine
from lvsd.ipvs.base import Backend
from lvsd.ipvs.memory import MemoryBackend
from lvsd.model import OpKind, ServiceKey, Snapshot


def generate_toml(services: int, servers: int, *, bump: int = -1) -> str:
    """A TOML config with a tcp check per real server; real server 0 of service 0 has
    weight ``bump`` when it is not -1 (the one change a reload applies)."""
    out = ["[defaults.check]\ninterval = 2.0\ntimeout = 1.0\n"]
    for s in range(services):
        out.append(f'\n[services.s{s}]\naddress = "10.20.{s // 250}.{s % 250 + 1}"\nport = 80\n')
        out.append('scheduler = "wrr"\ninitial_state = "up"\n')
        for d in range(servers):
            weight = bump if (s, d) == (0, 0) and bump != -1 else 1 + d % 5
            out.append(
                f"\n[[services.s{s}.real_servers]]\n"
                f'address = "10.30.{s % 250}.{d % 250 + 1}"\nport = {80 + d // 250}\n'
                f'weight = {weight}\ncheck = {{ kind = "tcp" }}\n'
            )
    return "".join(out)


def bumped(config: Config, weight: int) -> Config:
    """``config`` with real server 0 of service 0 at ``weight`` (what a reload of the
    edited file gives, built without parsing it again)."""
    first = config.services[0]
    rs = replace(first.real_servers[0], weight=weight)
    svc = replace(first, real_servers=(rs, *first.real_servers[1:]))
    return replace(config, services=(svc, *config.services[1:]))


class PartialMemoryBackend(MemoryBackend):
    """The memory backend with ``dump_services`` (the netlink backend's partial dump),
    so the engine's partial reload path runs on the host too."""

    def __init__(self) -> None:
        super().__init__()
        self.partial_dumps = 0

    async def dump_services(self, keys: Collection[ServiceKey]) -> Snapshot:
        self.partial_dumps += 1
        full = await self.dump()
        self.dumps -= 1
        return Snapshot(
            table={k: vs for k, vs in full.table.items() if k in keys},
            service_stats=full.service_stats,
            dest_stats={k: v for k, v in full.dest_stats.items() if k[0] in keys},
        )


class Clock:
    """A clock that stands still (the engine's decisions need no passing time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def measure_reloads(
    engine: Engine, config: Config, rounds: int
) -> tuple[list[float], list[float], list[int]]:
    """Reload ``rounds`` times with one weight changed each time: (wall s, CPU s, ops)."""
    walls: list[float] = []
    cpus: list[float] = []
    ops: list[int] = []
    for i in range(rounds):
        new = bumped(config, 10 + i)
        w0, c0 = time.perf_counter(), time.process_time()
        result = await engine.reload(lambda new=new: new)  # type: ignore[misc]
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        assert result.ok, result
        assert not result.failed, result.failed
        ops.append(len(result.ops))
        assert result.ops[0].startswith(str(OpKind.EDIT_DEST)), result.ops
    return walls, cpus, ops


async def run(
    services: int, servers: int, rounds: int, profile: bool, partial: bool
) -> dict[str, Any]:
    import tempfile
    from pathlib import Path

    from lvsd.config import load

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.toml"
        path.write_text(generate_toml(services, servers), encoding="utf-8")
        config = load(str(path))
    backend: Backend = PartialMemoryBackend() if partial else MemoryBackend()
    engine = Engine(config, backend, clock=Clock())
    result = await engine.start()
    assert result.ok
    walls, cpus, ops = await measure_reloads(engine, config, rounds)
    assert ops == [1] * rounds, ops
    if isinstance(backend, PartialMemoryBackend):
        assert backend.partial_dumps == rounds, backend.partial_dumps
    repairs = []
    for _ in range(rounds):
        c0 = time.process_time()
        repaired = await engine.repair()
        repairs.append(time.process_time() - c0)
        assert not repaired.applied
    if profile:
        prof = cProfile.Profile()
        new = bumped(config, 99)
        prof.enable()
        await engine.reload(lambda: new)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    med = statistics.median
    return {
        "services": services,
        "real_servers": services * servers,
        "reload_wall_s": med(walls),
        "reload_cpu_s": med(cpus),
        "reload_ops": ops[0],
        "repair_cpu_s": med(repairs),
    }


def quiet() -> None:
    """Log warnings and errors only (the engine logs every op at info)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--partial", action="store_true", help="reload with a partial dump (as on netlink)"
    )
    args = parser.parse_args()
    quiet()
    f = asyncio.run(run(args.services, args.servers, args.rounds, args.profile, args.partial))
    dump = "changed services dumped" if args.partial else "full dump"
    print(f"lvsd engine benchmark (memory backend, {dump}, medians of {args.rounds} rounds)")
    print(f"  config: {f['services']} services, {f['real_servers']} real servers")
    reload_ms, repair_ms = f["reload_cpu_s"] * 1e3, f["repair_cpu_s"] * 1e3
    print(f"  reload, one weight changed ({f['reload_ops']} op)   {reload_ms:7.1f} ms CPU")
    print(f"  drift repair (dump + desired + plan, 0 ops) {repair_ms:7.1f} ms CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
