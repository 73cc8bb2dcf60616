"""``lvsd.heap.settle``: one collection, then what is alive is frozen and full
collections are rare."""

from __future__ import annotations

import gc
import weakref

from lvsd import heap


class Cycle:
    """Garbage only the collector frees: it refers to itself."""

    def __init__(self) -> None:
        self.me = self


def test_settle_collects_freezes_and_spaces_full_collections() -> None:
    young, middle, _ = gc.get_threshold()
    garbage = Cycle()
    gone = weakref.ref(garbage)
    del garbage
    alive = Cycle()
    heap.settle()
    assert None is gone()
    assert gc.get_freeze_count() > 0
    assert not any(o is alive for o in gc.get_objects())  # frozen: in no generation
    assert (young, middle, heap.FULL_EVERY) == gc.get_threshold()


def test_a_later_settle_collects_cycles_frozen_by_an_earlier_one() -> None:
    kept = Cycle()
    heap.settle()
    dropped = weakref.ref(kept)
    del kept  # garbage now, but frozen
    gc.collect()
    assert dropped() is not None  # a collection does not look at frozen objects
    heap.settle()
    assert None is dropped()
