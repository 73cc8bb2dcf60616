"""The stall meter: a whole-process stop is measured; overlap arithmetic is exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from lab.stall import StallMeter


def test_between_counts_only_the_overlap() -> None:
    """Stalls partly outside the span count only for their part inside it."""
    meter = StallMeter()
    meter.stalls = [(1.0, 2.0), (3.0, 3.5), (9.0, 10.0)]
    assert 0.75 == meter.between(1.5, 3.25)
    assert 0.0 == meter.between(4.0, 8.0)
    assert 2.5 == meter.between(0.0, 100.0)


def test_a_stopped_process_is_a_stall() -> None:
    """The process stopped for 0.4 s (SIGSTOP, then SIGCONT from a child) shows as a
    stall of about 0.4 s; running on, nothing more is counted."""
    with StallMeter() as meter:
        time.sleep(0.1)
        quiet = meter.between(0.0, time.time())
        waker = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import os, time; time.sleep(0.4); os.kill({os.getpid()}, {int(signal.SIGCONT)})",
            ]
        )
        since = time.time()
        os.kill(os.getpid(), signal.SIGSTOP)  # the child sends SIGCONT
        time.sleep(0.05)
        stalled = meter.between(since, time.time())
        waker.wait()
    assert 0.0 == quiet
    assert 0.25 <= stalled <= 0.6, stalled
