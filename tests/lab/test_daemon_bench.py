"""The whole-daemon bench (bench/daemon_vs_keepalived.py) still runs: a --quick smoke test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab import harness

BENCH = Path(__file__).resolve().parents[2] / "bench" / "daemon_vs_keepalived.py"


@pytest.mark.lab
def test_quick_bench_prints_a_row_with_both_daemons(lab: object) -> None:
    """--quick boots the lab, runs lvsd and keepalived once each and prints the table's
    row for N=20 tcp with figures for both (no daemon died, checks reached the servers)."""
    del lab  # the fixture only skips (or fails in CI) when the lab cannot boot
    assert harness.unavailable_reason() is None
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 20 | tcp |")]
    assert len(rows) == 1, done.stdout
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    keepalived_cpu, lvsd_cpu = cells[2], cells[3]
    assert keepalived_cpu not in ("-", "0"), rows[0]
    assert lvsd_cpu not in ("-", "0"), rows[0]
    checks_per_s = [v.strip() for v in cells[8].split("/")]
    assert all(v not in ("-", "0") for v in checks_per_s), rows[0]
