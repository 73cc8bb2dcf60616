"""Runners of step generators: the report (``lvsd.observe.status.build_steps``), the
metrics' update and text (``Metrics.update_steps``, ``Metrics.exposition_parts``) are
generators that yield between steps of their work and return its result.

:func:`finish` runs one through with nothing in between (what the one-go forms
``build``, ``update`` and ``exposition`` do); :func:`drive` runs one on the event loop,
letting the loop run between steps once a slice has passed, so that probes due
meanwhile start on time. (A worker thread would not help: pure Python holds the GIL,
and the loop would then wait up to the interpreter's switch interval at every
wake-up.) :func:`release` frees large lists in steps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar, cast

T = TypeVar("T")

#: The longest :func:`drive` runs on the loop between two yields (seconds). Steps are
#: short but many, and on a busy loop every yield waits for a whole round of other
#: callbacks: steps are grouped until this much time has passed.
SLICE = 0.001

#: The longest a slice grows to on a busy loop (seconds), see :func:`drive`: what a
#: probe due meanwhile may wait for a step, at most.
SLICE_MAX = 0.05


def finish(steps: Generator[None, Any, T]) -> T:
    """Runs a step generator to its end, with nothing in between, and returns its
    value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return cast("T", stop.value)


async def drive(
    steps: Generator[None, None, T],
    slice_s: float = SLICE,
    slice_max: float = SLICE_MAX,
    clock: Callable[[], float] = time.perf_counter,
) -> T:
    """Runs a step generator to its end, letting the event loop run between steps
    once a slice has passed since it last did; returns its value.

    A slice is ``slice_s``, or as long as the loop's other work took at the last
    yield when that was longer (up to ``slice_max``): on a busy loop the steps then
    get about half of it, not one slice per round of every other callback."""
    until = clock() + slice_s
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return cast("T", stop.value)
        now = clock()
        if now >= until:
            await asyncio.sleep(0)
            resumed = clock()
            until = resumed + min(max(slice_s, resumed - now), slice_max)


def release(held: list[list[object]], chunk: int = 200) -> Generator[None, None, None]:
    """Empties each list of ``held`` ``chunk`` items a step (freeing what they alone
    hold a step at a time, not all at once)."""
    for items in held:
        while items:
            del items[-chunk:]
            yield


__all__ = ["SLICE", "SLICE_MAX", "drive", "finish", "release"]
