"""The garbage collector's settings for a daemon that holds thousands of checks.

CPython's defaults run a full collection once ten collections of the middle
generation have passed and the objects that survived into the oldest one have grown by
a quarter. A daemon with 10,000 checks makes short-lived objects at every probe (tasks,
futures, results) and at every scrape, so some always survive a young collection and
feed the oldest generation: full collections came several times a second in
``bench/probe_bench.py``, each walking every long-lived object (config, health state,
probes, label sets) for up to ~100 ms, about a quarter of the process's CPU and most
of its late probe starts (docs/performance.md).

:func:`settle` runs when the config's objects are built (start and each reload): one
full collection, then ``gc.freeze()`` moves every object alive into a generation the
collector never walks (reference counting still frees them), and full collections
wait for a hundred times more middle-generation collections. Young collections are
left as they are. Objects frozen by an earlier settle are unfrozen first, so those
that a reload made garbage in reference cycles are collected.
"""

from __future__ import annotations

import gc

#: Middle-generation collections between two full ones (CPython's default: 10).
FULL_EVERY = 1000


def settle() -> None:
    """Collect once, freeze what is alive, and make full collections rare."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_EVERY)
