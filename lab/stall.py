"""How long the guest itself stood still: the host's stalls, measured from inside.

The guest's one CPU is a host thread; when the host is busy or steals CPU, the whole
guest stops, lvsd's timers with it. A check bound such as "out within fall x interval
+ timeout" is lvsd's promise about its own time, so a lab test subtracts the time the
guest stood still during the measured span (CI hosts stall for a second or more).

:class:`StallMeter` runs a thread at real-time priority (``SCHED_FIFO``: nothing in the
guest delays it) that sleeps :data:`TICK` at a time (each wake costs the guest trapped
syscalls, so not often); a wake more than :data:`THRESHOLD` late is a stall, kept as
``(from, to)`` wall-clock times.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from types import TracebackType

#: The meter's sleep.
TICK = 0.05
#: Oversleep that counts as a stall (ordinary wake-up latency stays far below it).
THRESHOLD = 0.1


class StallMeter:
    """Records the guest's stalls while it runs (a context manager)."""

    def __init__(self) -> None:
        self.stalls: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-meter", daemon=True)

    def __enter__(self) -> StallMeter:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        # not root: an ordinary thread still sees whole-guest stalls
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        while not self._stop.is_set():
            before = time.time()
            time.sleep(TICK)
            after = time.time()
            if after - before - TICK > THRESHOLD:
                self.stalls.append((before + TICK, after))

    def between(self, start: float, end: float) -> float:
        """Seconds of stall within ``[start, end]`` (wall clock)."""
        return sum(max(0.0, min(end, to) - max(start, since)) for since, to in list(self.stalls))
