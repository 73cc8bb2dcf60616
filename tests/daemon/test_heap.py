"""``lvsd.daemon.heap.freeze``: one collection, then what is alive is frozen and full
collections are rare; ``lvsd.daemon.heap.tend``: young collections on a timer."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from lvsd.daemon import heap


class Cycle:
    """Garbage only the collector frees: it refers to itself."""

    def __init__(self) -> None:
        self.me = self


def test_freeze_collects_and_freezes_and_spaces_full_collections() -> None:
    young, middle, _ = gc.get_threshold()
    garbage = Cycle()
    gone = weakref.ref(garbage)
    del garbage
    alive = Cycle()
    heap.freeze()
    assert None is gone()
    assert gc.get_freeze_count() > 0
    assert not any(o is alive for o in gc.get_objects())  # frozen: in no generation
    assert (young, middle, heap.FULL_EVERY) == gc.get_threshold()


def test_a_later_freeze_collects_cycles_frozen_by_an_earlier_one() -> None:
    kept = Cycle()
    heap.freeze()
    dropped = weakref.ref(kept)
    del kept  # garbage now, but frozen
    gc.collect()
    assert dropped() is not None  # a collection does not look at frozen objects
    heap.freeze()
    assert None is dropped()


async def test_tend_collects_what_the_collector_would_not_start_on() -> None:
    """Garbage made while as many objects are freed as made starts no collection of
    its own (the count does not grow); tended, it is collected within a few ticks,
    and nothing is collected while the collector is disabled."""
    gc.collect()
    gc.set_threshold(100_000)  # no automatic collection in this test
    tending = asyncio.create_task(heap.tend(0.01))
    try:
        garbage = Cycle()
        gone = weakref.ref(garbage)
        del garbage
        for _ in range(100):
            if gone() is None:
                break
            await asyncio.sleep(0.01)
        assert None is gone()
        gc.disable()
        try:
            garbage = Cycle()
            kept = weakref.ref(garbage)
            del garbage
            await asyncio.sleep(0.1)
            assert kept() is not None
        finally:
            gc.enable()
    finally:
        tending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await tending
