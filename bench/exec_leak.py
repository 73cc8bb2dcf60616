"""Run exec probes of nasty scripts many times and count what they leave behind.

Issue 18, row 4: a probe script that backgrounds a child and exits 0, floods its output,
or whose grandchild calls setsid, once leaked a pipe, a transport or a process per run.
This runs each script ``--runs`` times (10,000 in all by default), 8 at a time, through
``lvsd.checks.exec.ExecProbe`` as the daemon does, and prints descriptors, children
(zombies included), survivors and RSS before and after, and runs per second:

    python bench/exec_leak.py              # 5 scripts x 2,000 runs
    python bench/exec_leak.py --runs 200   # a quick look

Survivors are processes still alive whose command line is one of the scripts' markers;
a grandchild that left with setsid and stays silent is not lvsd's child (systemd's
cgroup ends it under the unit), so it is counted apart and killed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import resource
import time
from pathlib import Path

from lvsd.checks.base import Target
from lvsd.checks.exec import ExecProbe
from lvsd.config.model import CheckSpec, ExecOptions

#: name -> (script, timeout): the issue's scripts.
NASTY = {
    "child escapes stdio, exit 0": ("sleep 3141 >/dev/null 2>&1 & exit 0", 10.0),
    "child keeps the output, exit 0": ("sleep 3142 & exit 0", 10.0),
    "output flood": ("yes", 0.2),
    "grandchild calls setsid, floods": ("setsid yes & exit 0", 10.0),
    "grandchild calls setsid, sleeps": ("setsid sleep 3143 & exit 0", 10.0),
}
TARGET = Target(address=ipaddress.ip_address("127.0.0.1"), port=80)


def children() -> int:
    """This process's children, zombies included."""
    me, count = str(os.getpid()), 0
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == me
            ):
                count += 1
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return count


def by_argv(*argv: str) -> list[int]:
    """Living (not zombie) processes whose command line is ``argv``."""
    wanted, found = "\0".join(argv) + "\0", []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or (entry / "cmdline").read_text() != wanted:
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def one_script(script: str, limit: float, runs: int) -> dict[str, object]:
    spec = CheckSpec(
        kind="exec", options=ExecOptions(command=("/bin/sh", "-c", script)), timeout=limit
    )
    probe = ExecProbe(spec, TARGET)
    await probe.probe()  # the spawner thread and the loop's descriptors, made once
    fds, kids, rss = len(os.listdir("/proc/self/fd")), children(), rss_mb()
    sem = asyncio.Semaphore(8)

    async def run() -> None:
        async with sem:
            await probe.probe()

    started = time.monotonic()
    await asyncio.gather(*(run() for _ in range(runs)))
    seconds = time.monotonic() - started
    for _ in range(500):  # an escaped `yes` dies of SIGPIPE once its pipe is closed
        if not by_argv("yes"):
            break
        await asyncio.sleep(0.01)
    await probe.close()
    return {
        "runs": runs,
        "runs_per_s": round(runs / seconds, 1),
        "fds_before": fds,
        "fds_after": len(os.listdir("/proc/self/fd")),
        "children_before": kids,
        "children_after": children(),
        "survivors": sum(len(by_argv("sleep", m)) for m in ("3141", "3142")) + len(by_argv("yes")),
        "setsid_sleepers": len(by_argv("sleep", "3143")),
        "rss_mb_before": round(rss, 1),
        "rss_mb_after": round(rss_mb(), 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="runs of each script")
    args = parser.parse_args()
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    )
    try:
        for name, (script, limit) in NASTY.items():
            print(json.dumps({"script": name, **await one_script(script, limit, args.runs)}))
    finally:
        for pid in by_argv("sleep", "3143"):
            os.kill(pid, 9)


if __name__ == "__main__":
    asyncio.run(main())
