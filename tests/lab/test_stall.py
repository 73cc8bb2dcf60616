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
    """The process stopped (SIGSTOP; a child sends SIGCONT 0.4 s later and says when)
    shows as a stall as long as the stop really was, within the meter's tick; running
    on, nothing more is counted. The truth is the child's clock, so a slow host that
    lengthens the stop does not fail the test."""
    script = (
        "import os, sys, time\n"
        "print('ready', flush=True); sys.stdin.readline(); time.sleep(0.4)\n"
        f"print(time.time(), flush=True); os.kill({os.getpid()}, {int(signal.SIGCONT)})"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    with StallMeter() as meter, child as waker:
        time.sleep(0.1)
        quiet = meter.between(0.0, time.time())
        assert waker.stdin is not None
        assert waker.stdout is not None
        assert "ready\n" == waker.stdout.readline()  # its Python has started
        since = time.time()
        waker.stdin.write("go\n")
        waker.stdin.flush()
        os.kill(os.getpid(), signal.SIGSTOP)  # the child sends SIGCONT
        time.sleep(0.05)
        stalled = meter.between(since, time.time())
        woken = float(waker.stdout.readline())
    assert 0.0 == quiet
    stopped = woken - since
    assert stopped >= 0.4
    assert abs(stalled - stopped) <= 0.15, (stalled, stopped)
