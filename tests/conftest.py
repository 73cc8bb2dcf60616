"""Fixtures for the whole suite."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Every test starts and ends with structlog's and logging's defaults, so a test
    that ran ``lvsd.cli.main`` (which configures logging onto a captured stream) does
    not leave a closed stream behind for the next one."""
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "lvsd"]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


@pytest.fixture(autouse=True)
def _reset_gc() -> Iterator[None]:
    """A test that started a daemon (which freezes the heap, ``lvsd.daemon.heap``) leaves the
    collector as it found it."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
