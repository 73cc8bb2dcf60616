"""A fixed wall clock for status reports, so two renders of the same state are equal."""

from __future__ import annotations

import pytest

#: The Unix time every status report of these tests is made at.
WALL = 1_800_000_000.0


@pytest.fixture(autouse=True)
def fixed_wall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lvsd.observe.status.time.time", lambda: WALL)
