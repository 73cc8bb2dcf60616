"""Runs INSIDE the lab guest (not collected by pytest): starts, reads and stops the
kernel's sync daemons through ``NetlinkBackend`` and records, after each step, what
the backend read and ``ipvsadm -L --daemon``.

Usage: ``$LAB_PYTHON guest_sync.py``; writes ``$LAB_RESULTS/sync.json``. Needs an
interface ``br0``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from lvsd.errors import IpvsError
from lvsd.ipvs.netlink import NetlinkBackend
from lvsd.model import SyncDaemon, SyncState

MASTER = SyncDaemon(state=SyncState.MASTER, interface="br0", syncid=7)
BACKUP = SyncDaemon(
    state=SyncState.BACKUP,
    interface="br0",
    syncid=9,
    port=8849,
    ttl=2,
    maxlen=1400,
    group="239.1.2.3",
)


def ipvsadm(*args: str) -> str:
    out = subprocess.run(["ipvsadm", *args], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).strip()


async def main() -> list[dict[str, Any]]:
    backend = NetlinkBackend()
    record: list[dict[str, Any]] = []

    async def step(name: str, call: Awaitable[object] | None = None) -> None:
        entry: dict[str, Any] = {"step": name}
        if call is not None:
            try:
                await call
            except IpvsError as exc:
                entry["error"] = str(exc)
        entry["read"] = [str(d) for d in await backend.sync_daemons()]
        entry["fields"] = [
            [d.state, d.interface, d.syncid, d.port, d.ttl, d.maxlen, d.group]
            for d in await backend.sync_daemons()
        ]
        entry["ipvsadm"] = ipvsadm("-L", "--daemon")
        record.append(entry)

    await step("none")
    await step("start-master", backend.start_sync(MASTER))
    await step("start-backup", backend.start_sync(BACKUP))
    await step("start-master-again", backend.start_sync(MASTER))
    await step("stop-master", backend.stop_sync(SyncState.MASTER))
    await step("stop-master-again", backend.stop_sync(SyncState.MASTER))
    await step("stop-backup", backend.stop_sync(SyncState.BACKUP))
    await step(
        "no-such-interface",
        backend.start_sync(SyncDaemon(state=SyncState.MASTER, interface="nope0")),
    )
    await step(
        "not-multicast",
        backend.start_sync(SyncDaemon(state=SyncState.MASTER, interface="br0", group="10.0.0.1")),
    )
    ipvsadm("--start-daemon", "backup", "--mcast-interface", "br0", "--syncid", "5")
    await step("started-by-ipvsadm")
    await backend.close()
    return record


if __name__ == "__main__":
    record = asyncio.run(main())
    (Path(os.environ["LAB_RESULTS"]) / "sync.json").write_text(json.dumps(record, indent=1))
