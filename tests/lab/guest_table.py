"""Runs INSIDE the lab guest (not collected by pytest): drives lvsd against the real
kernel step by step and records, after each step, the ops and ``ipvsadm -Ln``.

Usage: ``$LAB_PYTHON guest_table.py CONFIG_DIR STEPS.json OUT.json``. A step is
``apply:NAME`` (apply ``CONFIG_DIR/NAME.toml`` with ``apply_once``), ``sh:COMMAND``
(run a shell command, for ipvsadm by hand), ``errors`` (error cases through
``NetlinkBackend.apply``), ``stats`` (dump the counters), ``dump:NAME`` (the table
as ``NetlinkBackend.dump`` sees it, rendered), ``dumps:N`` (N dumps at once; the
destinations each saw, or its error), ``turns`` (the event loop's turns taken by an
apply of 64 edits and by a dump, with ``BIG`` loaded). One Python process for every
step: the guest's Python starts slowly.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from lvsd.apply import apply_once
from lvsd.config import load
from lvsd.ipvs.netlink import NetlinkBackend
from lvsd.model import Destination, Op, OpKind, Protocol, Service, ServiceKey


def ipvsadm(*args: str) -> str:
    out = subprocess.run(["ipvsadm", *args], capture_output=True, text=True, check=False)
    text = out.stdout + out.stderr
    return "\n".join(line.rstrip() for line in text.splitlines())


async def errors(backend: NetlinkBackend) -> dict[str, Any]:
    web = Service(key=ServiceKey.inet(Protocol.TCP, "192.168.3.108", 80), scheduler="wrr")
    ghost = Service(key=ServiceKey.inet(Protocol.TCP, "192.168.3.199", 80), scheduler="wrr")
    rs = Destination(address="10.0.0.2", port=80)
    nobody = Destination(address="10.0.0.99", port=80)
    cases = {
        "exists-service": Op(kind=OpKind.ADD_SERVICE, service=web),
        "exists-dest": Op(kind=OpKind.ADD_DEST, service=web, dest=rs),
        "missing-service": Op(kind=OpKind.DEL_SERVICE, service=ghost),
        "missing-dest": Op(kind=OpKind.EDIT_DEST, service=web, dest=nobody),
        "dest-of-missing-service": Op(kind=OpKind.ADD_DEST, service=ghost, dest=rs),
        "unknown-scheduler": Op(
            kind=OpKind.ADD_SERVICE, service=Service(key=ghost.key, scheduler="twos")
        ),
    }
    out: dict[str, Any] = {}
    for name, op in cases.items():
        result = await backend.apply([op])
        out[name] = [str(e) for _, e in result.failed]
    return out


async def turns(backend: NetlinkBackend) -> dict[str, int]:
    """Loop turns (a task that yields at once, counting) taken by an apply of 64 edit
    ops on the BIG service, and by a dump of the whole table."""
    count = 0

    async def ticker() -> None:
        nonlocal count
        while True:
            count += 1
            await asyncio.sleep(0)

    big = Service(key=ServiceKey.inet(Protocol.TCP, "192.168.3.201", 80), scheduler="rr")
    ops = [
        Op(
            kind=OpKind.EDIT_DEST,
            service=big,
            dest=Destination(address=f"10.1.0.{i + 1}", port=80, weight=2),
        )
        for i in range(64)
    ]
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    out: dict[str, int] = {}
    start = count
    result = await backend.apply(ops)
    out["apply_64"], out["apply_failed"] = count - start, len(result.failed)
    start = count
    snapshot = await backend.dump()
    out["dump"], out["dump_dests"] = count - start, len(snapshot.dest_stats)
    task.cancel()
    return out


async def main(config_dir: Path, out_path: Path, steps: list[str]) -> None:
    backend = NetlinkBackend()
    record: list[dict[str, Any]] = []
    for step in steps:
        kind, _, arg = step.partition(":")
        entry: dict[str, Any] = {"step": step}
        if kind == "apply":
            config = load(str(config_dir / f"{arg}.toml"))
            result = await apply_once(config, backend, dry_run=False)
            entry["ops"] = [str(op) for op in result.applied]
            entry["failed"] = [str(err) for _, err in result.failed]
        elif kind == "sh":
            proc = subprocess.run(  # noqa: ASYNC221  (the guest does one thing at a time)
                ["sh", "-c", arg], capture_output=True, text=True, check=False
            )
            entry["status"] = proc.returncode
            entry["output"] = proc.stdout + proc.stderr
        elif kind == "errors":
            entry["errors"] = await errors(backend)
        elif kind == "stats":
            snap = await backend.dump()
            entry["services"] = {
                str(k): [s.connections, s.packets_in, s.packets_out, s.bytes_in, s.bytes_out]
                for k, s in snap.service_stats.items()
            }
            entry["dests"] = {
                f"{k} -> {d}": [
                    s.active_connections,
                    s.inactive_connections,
                    s.stats.connections,
                    s.stats.packets_in,
                    s.stats.packets_out,
                    s.stats.bytes_in,
                    s.stats.bytes_out,
                ]
                for (k, d), s in snap.dest_stats.items()
            }
            entry["ipvsadm_stats"] = ipvsadm("-Ln", "--stats", "--exact")
            entry["ipvsadm_conns"] = ipvsadm("-Ln")
        elif kind == "dumps":  # that many dumps at once on the one backend
            outcomes = await asyncio.gather(
                *(backend.dump() for _ in range(int(arg))), return_exceptions=True
            )
            entry["dumps"] = [
                str(o) if isinstance(o, BaseException) else len(o.dest_stats) for o in outcomes
            ]
        elif kind == "turns":
            entry["turns"] = await turns(backend)
        elif kind == "dump":
            snap = await backend.dump()
            entry["table"] = [
                [str(vs.service), [str(d) for d in vs.destinations.values()]]
                for vs in snap.table.values()
            ]
        else:
            raise SystemExit(f"unknown step {step}")
        entry["ipvsadm"] = ipvsadm("-Ln")
        record.append(entry)
        out_path.write_text(json.dumps(record, indent=1))  # noqa: ASYNC240  (as above)
    await backend.close()


if __name__ == "__main__":
    steps = json.loads(Path(sys.argv[2]).read_text())
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[3]), steps))
