"""Runs INSIDE the lab guest (not collected by pytest): the connection timeouts of
``[ipvs]`` set by the engine, changed behind its back with ``ipvsadm --set``, and put
back by drift repair; ``ipvsadm -L --timeout`` after each step.

Usage: ``$LAB_PYTHON guest_timeouts.py CONFIG OUT.json``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from lvsd.config import load
from lvsd.engine.reconcile import Engine
from lvsd.ipvs.netlink import NetlinkBackend


def ipvsadm(*args: str) -> str:
    out = subprocess.run(["ipvsadm", *args], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).strip()


async def main(config_path: str) -> dict[str, Any]:
    record: dict[str, Any] = {"before": ipvsadm("-L", "--timeout")}
    backend = NetlinkBackend()
    engine = Engine(load(config_path), backend, clock=time.monotonic)
    with capture_logs() as logs:
        await engine.start()
        record["started"] = ipvsadm("-L", "--timeout")
        record["status"] = str(engine.timeouts)
        record["set_by_hand"] = ipvsadm("--set", "100", "101", "102") or "ok"
        record["changed"] = ipvsadm("-L", "--timeout")
        await engine.repair()
        record["repaired"] = ipvsadm("-L", "--timeout")
        await engine.repair()
    record["events"] = [
        [e["event"], e.get("op", e.get("timeouts", ""))]
        for e in logs
        if e["event"] in ("timeouts.set", "drift.repaired")
    ]
    await engine.close()
    await backend.close()
    return record


if __name__ == "__main__":
    Path(sys.argv[2]).write_text(json.dumps(asyncio.run(main(sys.argv[1])), indent=2))
