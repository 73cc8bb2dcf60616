"""The garbage collector's settings for a daemon that holds thousands of checks.

CPython's defaults run a full collection once ten collections of the middle
generation have passed and the objects that survived into the oldest one have grown by
a quarter. A daemon with 10,000 checks makes short-lived objects at every probe (tasks,
futures, results) and at every scrape, so some always survive a young collection and
feed the oldest generation: full collections come often, each walking every
long-lived object (config, health state, probes, label sets) while the probes due
meanwhile wait (``bench/probe_bench.py``; figures in docs/performance.md).

:func:`freeze` runs when the config's objects are built (start and each reload): one
full collection, then ``gc.freeze()`` moves every object alive into a generation the
collector never walks (reference counting still frees them), and full collections
wait for a hundred times more middle-generation collections. Young collections are
left as they are. Objects frozen by an earlier freeze are unfrozen first, so those
that a reload made garbage in reference cycles are collected.

:func:`tend` runs beside the checks: a young collection every ``TEND_EVERY`` seconds,
a middle one every ``MIDDLE_EVERY`` of those, a full one as CPython would. The
collector starts on its own only when more objects were made than freed, but every
probe run replaces objects (a check's status, a timer entry) that live one interval:
in between, these pile up in the young generation by the ten thousand, for the first
collection of a scrape (or any burst) to walk at once while every probe due meanwhile
waits. Tended, each collection walks what one ``TEND_EVERY`` of probing left.
"""

from __future__ import annotations

import asyncio
import gc

#: Middle-generation collections between two full ones (CPython's default: 10).
FULL_EVERY = 1000
#: Seconds between two young collections of :func:`tend`.
TEND_EVERY = 0.05
#: Young collections of :func:`tend` between two middle-generation ones.
MIDDLE_EVERY = 10


def freeze() -> None:
    """Collect once, freeze what is alive, and make full collections rare."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_EVERY)


async def tend(every: float = TEND_EVERY) -> None:
    """Collect the young generation every ``every`` seconds (and the older ones in
    turn) while the collector is enabled; runs until cancelled."""
    ticks = 0
    while True:
        await asyncio.sleep(every)
        if not gc.isenabled():
            continue
        ticks += 1
        if gc.get_count()[2] >= gc.get_threshold()[2]:
            gc.collect()
        else:
            gc.collect(1 if ticks % MIDDLE_EVERY == 0 else 0)
