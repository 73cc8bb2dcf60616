"""The Grafana dashboard's tables (etc/grafana/lvsd.json): instant queries shaped into
one row per series, not range queries that Grafana shows as a series picker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

DASHBOARD = Path(__file__).resolve().parent.parent / "etc" / "grafana" / "lvsd.json"


def tables() -> list[dict[str, Any]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [p for p in panels if p.get("type") == "table"]


def test_the_dashboard_has_its_two_tables() -> None:
    """The tables this file checks are there (a renamed panel fails here, not silently)."""
    expected = {"Service state", "Seconds since the last transition"}
    assert expected == {p["title"] for p in tables()}


@pytest.mark.parametrize("panel", tables(), ids=lambda p: str(p["title"]))
def test_table_queries_are_instant_tables(panel: dict[str, Any]) -> None:
    """Each target asks for the latest value only, as a table frame."""
    for target in panel["targets"]:
        assert (True, False, "table") == (target["instant"], target["range"], target["format"])


@pytest.mark.parametrize("panel", tables(), ids=lambda p: str(p["title"]))
def test_tables_hide_the_time_and_name_every_value(panel: dict[str, Any]) -> None:
    """Several queries are merged into one row per service; the Time and __name__
    columns are hidden, each value column gets the target's legend as its name."""
    steps = [t["id"] for t in panel["transformations"]]
    [organize] = [t["options"] for t in panel["transformations"] if t["id"] == "organize"]
    targets = panel["targets"]
    values = (
        {f"Value #{t['refId']}": t["legendFormat"] for t in targets}
        if len(targets) > 1
        else {"Value": targets[0]["legendFormat"]}
    )
    if len(targets) > 1:
        assert "merge" == steps[0]
    assert {"Time", "__name__"} <= {k for k, v in organize["excludeByName"].items() if v}
    assert values.items() <= organize["renameByName"].items()
    assert all(values.values())
