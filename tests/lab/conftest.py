"""The ``lab`` fixture: boots user-mode Linux (a real IPVS kernel) in the test's folder.

Lab tests carry ``@pytest.mark.lab`` (deselect them with ``-m 'not lab'``). They are
skipped, with the reason, when this machine cannot boot the lab, except under CI
(``CI`` set), where they fail: ``scripts/setup`` installs what the lab needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import harness
from lab.harness import Boot, LabResult, Scenario, Topology


@dataclass
class Lab:
    """Boots the lab in ``work`` (one sub-folder per boot)."""

    work: Path
    boots: int = 0

    def run(
        self,
        scenario: Scenario,
        *,
        topology: Topology | None = None,
        boot: Boot | None = None,
    ) -> LabResult:
        self.boots += 1
        folder = self.work / f"boot{self.boots}"
        folder.mkdir(parents=True, exist_ok=True)
        return harness.run(folder, scenario, topology=topology, boot=boot)


def _skip_unless_available() -> None:
    reason = harness.unavailable_reason()
    if reason is not None:
        # In CI, scripts/setup has installed the lab: a lab that cannot boot there is a
        # failure, not a skip (a green run must have proved the kernel side).
        if os.environ.get("CI"):
            pytest.fail(f"lab unavailable in CI: {reason}")
        pytest.skip(f"lab unavailable: {reason}")


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    """A lab that boots in this test's temporary folder."""
    _skip_unless_available()
    return Lab(tmp_path)


@pytest.fixture(scope="module")
def module_lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """A lab shared by a module's tests, so one boot can serve several checks."""
    _skip_unless_available()
    return Lab(tmp_path_factory.mktemp("lab"))
