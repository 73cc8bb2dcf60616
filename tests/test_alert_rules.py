"""The alert rules (etc/prometheus/lvsd-rules.yml) against their promtool unit tests
(lvsd-rules.test.yml): every alert is tested firing and quiet, and the tests pass."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "etc" / "prometheus" / "lvsd-rules.yml"
TESTS = ROOT / "etc" / "prometheus" / "lvsd-rules.test.yml"

#: Skipped where promtool is missing, except under CI (scripts/setup installs it).
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("CI"),
    reason="promtool not installed (apt prometheus)",
)


def alerts() -> list[str]:
    return re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.MULTILINE)


def cases() -> list[tuple[str, bool]]:
    """(alert name, fires) of each ``alert_rule_test`` case of the test file (each case
    starts with ``- eval_time:``; no YAML parser needed)."""
    found = []
    for block in TESTS.read_text().split("- eval_time:")[1:]:
        name = re.search(r"alertname: (\w+)", block)
        assert name is not None, block
        found.append((name[1], "exp_alerts: []" not in block))
    return found


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """Each rule has a case where it fires and one where it must not: a rule without a
    test, or a test of a rule that is gone, fails here."""
    names = alerts()
    assert len(names) == len(set(names))
    assert {(n, True) for n in names} | {(n, False) for n in names} == set(cases())


def test_lvsd_down_and_absent_are_alerted() -> None:
    """lvsd's own death silences its other alerts, so two rules watch Prometheus' own
    ``up`` for the job the docs' scrape config names."""
    text = RULES.read_text()
    assert 'expr: up{job="lvsd"} == 0' in text
    assert 'expr: absent(up{job="lvsd"})' in text
    assert "- job_name: lvsd\n" in (ROOT / "docs" / "metrics.md").read_text()


@needs_promtool
def test_promtool_rule_tests_pass() -> None:
    """``promtool test rules lvsd-rules.test.yml`` passes."""
    out = subprocess.run(
        ["promtool", "test", "rules", str(TESTS)], capture_output=True, text=True, check=False
    )
    assert 0 == out.returncode, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@needs_promtool
def test_promtool_rule_tests_can_fail(tmp_path: Path) -> None:
    """The rule tests are real: with LvsdDown's threshold flipped they fail."""
    rules = tmp_path / "lvsd-rules.yml"
    rules.write_text(RULES.read_text().replace('up{job="lvsd"} == 0', 'up{job="lvsd"} == 1'))
    tests = tmp_path / "lvsd-rules.test.yml"
    tests.write_text(TESTS.read_text())
    out = subprocess.run(
        ["promtool", "test", "rules", str(tests)], capture_output=True, text=True, check=False
    )
    assert 0 != out.returncode
    assert "LvsdDown" in out.stdout + out.stderr
