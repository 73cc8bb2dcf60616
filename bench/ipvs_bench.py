"""Benchmark: programming 10,000 IPVS destinations with lvsd's NetlinkBackend next to
``ipvsadm -R``, in the same user-mode-Linux guest.

Run on the host (boots the lab once)::

    .venv/bin/python bench/ipvs_bench.py [--services 100] [--dests 100] [--rounds 3]

Inside the guest (``--guest OUT.json``) it, for each round, restores the table with
``ipvsadm -R`` and clears it, then programs the same table cold with
``NetlinkBackend.apply`` (plan from an empty table) and checks both give the same
``ipvsadm -Sn``; then it times a full ``dump()``, and a one-destination change against
the full table (dump + plan + apply, asserting exactly one op). Figures are medians.
The guest has one CPU and traps every syscall, so absolute figures are slow: compare
them with each other only.
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
from dataclasses import replace
from pathlib import Path
from typing import Any

from lvsd.model import Destination, DestKey, Protocol, Service, ServiceKey, VirtualService


def build_table(services: int, dests: int) -> dict[ServiceKey, VirtualService]:
    table: dict[ServiceKey, VirtualService] = {}
    for s in range(services):
        key = ServiceKey.inet(Protocol.TCP, f"10.20.{s // 250}.{s % 250 + 1}", 80)
        ds = {}
        for d in range(dests):
            dest = Destination(address=f"10.30.{s % 250}.{d % 250 + 1}", port=80 + d // 250)
            ds[dest.key] = dest
        table[key] = VirtualService(service=Service(key=key, scheduler="wrr"), destinations=ds)
    return table


def ipvsadm_rules(table: dict[ServiceKey, VirtualService]) -> str:
    lines = []
    for key, vs in table.items():
        lines.append(f"-A -t {key.address}:{key.port} -s {vs.service.scheduler}")
        for dest in vs.destinations.values():
            lines.append(
                f"-a -t {key.address}:{key.port} -r {dest.address}:{dest.port} -m -w {dest.weight}"
            )
    return "\n".join(lines) + "\n"


def _ipvsadm(*args: str, stdin: str | None = None) -> str:
    out = subprocess.run(
        ["ipvsadm", *args], input=stdin, capture_output=True, text=True, check=True
    )
    return out.stdout


def _sorted_save() -> list[str]:
    return sorted(_ipvsadm("-Sn").splitlines())


async def guest(services: int, dests: int, rounds: int) -> dict[str, Any]:
    from lvsd.ipvs.netlink import NetlinkBackend
    from lvsd.plan import plan

    table = build_table(services, dests)
    rules = ipvsadm_rules(table)
    n_dests = services * dests
    figures: dict[str, Any] = {"services": services, "destinations": n_dests, "rounds": rounds}
    restore: list[float] = []
    netlink: list[float] = []
    planning: list[float] = []
    backend = NetlinkBackend()
    await backend.dump()  # open the socket outside the timings
    for _ in range(rounds):
        _ipvsadm("-C")
        t0 = time.perf_counter()
        _ipvsadm("-R", stdin=rules)
        restore.append(time.perf_counter() - t0)
        by_ipvsadm = _sorted_save()
        _ipvsadm("-C")

        t0 = time.perf_counter()
        ops = plan({}, table, managed=table.keys())
        t1 = time.perf_counter()
        result = await backend.apply(ops)
        t2 = time.perf_counter()
        assert result.ok, result.failed[:3]
        assert len(ops) == services + n_dests
        planning.append(t1 - t0)
        netlink.append(t2 - t1)
        assert by_ipvsadm == _sorted_save(), "netlink and ipvsadm -R made different tables"

    dumps = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        snap = await backend.dump()
        dumps.append(time.perf_counter() - t0)
        assert n_dests == sum(len(vs.destinations) for vs in snap.table.values())

    changes = []
    first = next(iter(table))
    vs = table[first]
    for weight in range(2, 2 + rounds):
        dkey: DestKey = next(iter(vs.destinations))
        changed = dict(table)
        new_dests = dict(vs.destinations)
        new_dests[dkey] = replace(vs.destinations[dkey], weight=weight)
        changed[first] = VirtualService(service=vs.service, destinations=new_dests)
        t0 = time.perf_counter()
        current = (await backend.dump()).table
        ops = plan(current, changed, managed=changed.keys())
        result = await backend.apply(ops)
        changes.append(time.perf_counter() - t0)
        assert len(ops) == 1, ops
        assert result.ok, result.failed
    await backend.close()
    _ipvsadm("-C")

    med = statistics.median
    figures.update(
        ipvsadm_restore_s=med(restore),
        netlink_apply_s=med(netlink),
        plan_s=med(planning),
        ratio=med(netlink) / med(restore),
        dump_s=med(dumps),
        one_change_s=med(changes),
        raw={"restore": restore, "netlink": netlink, "plan": planning, "dump": dumps,
             "change": changes},
    )  # fmt: skip
    return figures


def host(services: int, dests: int, rounds: int) -> int:
    from lab.harness import Boot, Scenario, run

    with tempfile.TemporaryDirectory(prefix="lvsd-bench-") as tmp:
        work = Path(tmp)
        scenario = Scenario.python(
            Path(__file__).resolve(),
            "--guest", str(work / "results" / "bench.json"),
            "--services", str(services), "--dests", str(dests), "--rounds", str(rounds),
        )  # fmt: skip
        boot = Boot(modules=("ip_vs", "ip_vs_wrr"), mem="1024M", timeout=900)
        result = run(work, scenario, boot=boot)
        if not result.ok:
            print(result.log(), file=sys.stderr)
            return 1
        f = result.json("bench.json")
    n = f["destinations"]
    print(f"lvsd IPVS benchmark (user-mode Linux guest, medians of {f['rounds']} rounds)")
    print(f"  table: {f['services']} services x {n // f['services']} destinations = {n} dests")
    print(f"  ipvsadm -R (cold restore)            {f['ipvsadm_restore_s']:8.2f} s")
    print(f"  NetlinkBackend.apply (cold, {n + f['services']} ops) {f['netlink_apply_s']:8.2f} s")
    print(f"    ratio netlink / ipvsadm -R          {f['ratio']:8.2f} x")
    print(f"  plan() from an empty table           {f['plan_s']:8.2f} s")
    print(f"  NetlinkBackend.dump (full table)     {f['dump_s']:8.2f} s")
    print(f"  one-destination change (dump+plan+apply, 1 op) {f['one_change_s']:8.2f} s")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--dests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--guest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.guest is not None:
        figures = asyncio.run(guest(args.services, args.dests, args.rounds))
        args.guest.write_text(json.dumps(figures, indent=1))
        return 0
    return host(args.services, args.dests, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
