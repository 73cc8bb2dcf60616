"""In-guest driver of tests/lab/test_import_lab.py: the old daemon's table vs lvsd's.

Usage: ``guest_import.py CASES_JSON RESULTS_DIR``. For each case (``name``, ``kind``
keepalived|ldirectord, ``conf`` the daemon's config, ``toml`` the imported lvsd config,
``cli`` whether to go through the ``lvsd apply`` command line):

1. flush the table, run ``lvsd apply -c TOML`` (every real server up at its weight),
   record ``ipvsadm -Ln`` and ``ipvsadm -Ln --thresholds``; flush again;
2. start the old daemon in the foreground (its pid and state files on the /run tmpfs),
   wait until its table equals lvsd's and stays so for 0.3 s, or until it has not
   changed for ``QUIET`` seconds after ``DEADLINE`` (then it is recorded as it is),
   record the same two listings, kill the daemon's process group, flush.

Writes ``RESULTS_DIR/import.json`` (one entry per case) and the daemons' logs. Runs
only inside the lab guest: it flushes the guest's IPVS table.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEADLINE = 60.0  # seconds for a daemon to reach lvsd's table (ldirectord is slow in the guest)
QUIET = 5.0  # after DEADLINE, give up once the table has not changed this long
HOLD = 0.3  # the daemon's table must stay equal this long
POLL = 0.1


def ipvsadm(*args: str) -> str:
    return subprocess.run(
        ["ipvsadm", *args], check=True, capture_output=True, text=True
    ).stdout.rstrip("\n")


def listings() -> dict[str, str]:
    return {"table": ipvsadm("-Ln"), "thresholds": ipvsadm("-Ln", "--thresholds")}


def flush() -> None:
    ipvsadm("-C")


def lvsd_apply(toml: str, cli: bool) -> dict[str, Any]:
    """``lvsd apply -c toml``: through the command line, or in this process (the
    same ``lvsd.apply.main`` the command calls, without another interpreter start)."""
    if cli:
        proc = subprocess.run(
            [sys.executable, "-m", "lvsd", "apply", "-c", toml],
            capture_output=True,
            text=True,
            check=False,
        )
        return {"status": proc.returncode, "output": proc.stdout + proc.stderr}
    from io import StringIO

    from lvsd.apply import main

    out = StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = main(toml, False)
    return {"status": status, "output": out.getvalue()}


def daemon_argv(case: dict[str, Any]) -> list[str]:
    name = case["name"]
    if case["kind"] == "keepalived":
        return [
            "keepalived",
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--check",
            f"--use-file={case['conf']}",
            f"--pid=/run/lab-ka/{name}.pid",
            f"--checkers_pid=/run/lab-ka/{name}.checkers.pid",
            f"--vrrp_pid=/run/lab-ka/{name}.vrrp.pid",
        ]
    return ["ldirectord", "-d", case["conf"], "start"]


def run_daemon(case: dict[str, Any], want: str, logs: Path) -> tuple[dict[str, str], float]:
    """Start the daemon, wait for its table, record it, stop the daemon by its pid."""
    Path("/run/lab-ka").mkdir(exist_ok=True)
    log = (logs / f"{case['name']}.{case['kind']}.log").open("w")
    started = time.monotonic()
    proc = subprocess.Popen(
        daemon_argv(case),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        last, changed, equal_since = "", time.monotonic(), None
        while True:
            now = time.monotonic()
            table = ipvsadm("-Ln")
            if table != last:
                last, changed = table, now
            if table == want:
                equal_since = equal_since if equal_since is not None else now
                if now - equal_since >= HOLD:
                    break
            else:
                equal_since = None
            if now - started > DEADLINE and now - changed > QUIET:
                break
            if now - started > DEADLINE * 2:
                break
            if proc.poll() is not None:
                break
            time.sleep(POLL)
        elapsed = time.monotonic() - started
        return listings(), elapsed
    finally:
        # SIGKILL to the daemon's own process group (it and its checker children):
        # its clean-up is not under test, and the table is flushed next anyway.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def main(cases_path: str, results: str) -> int:
    cases: list[dict[str, Any]] = json.loads(Path(cases_path).read_text())
    out = Path(results)
    logs = out / "daemons"
    logs.mkdir(parents=True, exist_ok=True)
    record = []
    for case in cases:
        flush()
        t0 = time.monotonic()
        applied = lvsd_apply(case["toml"], bool(case.get("cli")))
        lvsd = listings()
        apply_seconds = time.monotonic() - t0
        flush()
        daemon, seconds = run_daemon(case, lvsd["table"], logs)
        flush()
        record.append(
            {
                "name": case["name"],
                "kind": case["kind"],
                "apply": applied,
                "apply_seconds": round(apply_seconds, 2),
                "lvsd": lvsd,
                "daemon": daemon,
                "daemon_seconds": round(seconds, 2),
            }
        )
        print(f"{case['name']}: apply {apply_seconds:.1f} s, {case['kind']} {seconds:.1f} s")
        (out / "import.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
