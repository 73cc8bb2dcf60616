"""systemd inside the lab: the repo's hardened ``lvsd.service`` under a real systemd.

One boot (``SystemdBoot``) installs ``systemd/lvsd.service`` with the lab drop-in and
a stand-in main process (``python -m lab.systemd``: READY=1 with a STATUS line
after 1 s). The scenario starts the unit and records ``systemctl show``/``status``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab import harness, systemd
from lab.harness import LabResult, Scenario
from lab.topology import NatTopology
from tests.lab.conftest import Lab

SHOW = (
    "ActiveState,SubState,StatusText,User,"
    "ExecMainStartTimestampMonotonic,ActiveEnterTimestampMonotonic"
)

SCENARIO = f"""
systemctl start lvsd
systemctl show lvsd -p {SHOW} > "$LAB_RESULTS/show.txt"
systemctl status lvsd --no-pager > "$LAB_RESULTS/status.txt" || true
systemctl --failed --no-legend --plain > "$LAB_RESULTS/failed.txt" || true
systemctl stop lvsd
systemctl show lvsd -p ActiveState,Result > "$LAB_RESULTS/stopped.txt"
"""


def test_dropin_points_lvsd_at_the_venv_and_the_config() -> None:
    """The drop-in resets and replaces both Exec lines with the venv's absolute lvsd and
    binds the test's config read-only on /etc/lvsd/lvsd.toml."""
    text = systemd.lvsd_dropin(Path("/tmp/t/lvsd.toml"))
    lvsd = systemd.LVSD
    expected = [
        "ExecStartPre=",
        f"ExecStartPre={lvsd} check -c /etc/lvsd/lvsd.toml",
        "ExecStart=",
        f"ExecStart={lvsd} run -c /etc/lvsd/lvsd.toml",
    ]
    lines = text.splitlines()
    assert expected == [line for line in lines if line.startswith("Exec")]
    assert "BindReadOnlyPaths=/tmp/t/lvsd.toml:/etc/lvsd/lvsd.toml" in lines
    assert os.path.isabs(lvsd)


def test_scenario_step_writes_units_and_execs_systemd() -> None:
    """The init script's last step writes lab.target and the units into the overlay and
    execs systemd in it (nothing runs the scenario before that)."""
    boot = systemd.SystemdBoot(units=[systemd.Unit(name="x.service", text="[Service]\n")])
    step = boot.scenario_step(Scenario(shell="true"))
    assert f"{systemd.ROOT}/etc/systemd/system/lab.target" in step
    assert f"{systemd.ROOT}/etc/systemd/system/x.service" in step
    assert (
        step.rstrip()
        .splitlines()[-1]
        .startswith(f"exec chroot {systemd.ROOT} /lib/systemd/systemd --unit=lab.target")
    )


def test_a_checkout_under_tmp_is_carried_into_the_overlay_and_the_unit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CI clone under /tmp would be hidden twice: by the overlay (its lower dir shows
    the guest's empty /tmp) and by the unit's PrivateTmp=. It is bound into both."""
    monkeypatch.setattr(harness, "REPO", Path("/tmp/clone"))
    step = systemd.SystemdBoot().scenario_step(Scenario(shell="true"))
    assert f"mount --bind /tmp/clone {systemd.ROOT}/tmp/clone" in step
    assert "BindReadOnlyPaths=/tmp/clone" in systemd.lvsd_dropin(Path("/x.toml")).splitlines()


@pytest.fixture(scope="module")
def booted(module_lab: Lab) -> LabResult:
    """The one boot: the stand-in under the shipped, hardened unit."""
    work = module_lab.work / "systemd"
    work.mkdir()
    config = work / "lvsd.toml"
    config.write_text((harness.REPO / "etc" / "lvsd.toml").read_text())
    config.chmod(0o644)
    units = systemd.lvsd_units(config, exec_start=f"{harness.PYTHON} -m lab.systemd")
    boot = systemd.SystemdBoot(units=units, timeout=180)
    result = harness.run(work, Scenario(shell=SCENARIO), topology=NatTopology(), boot=boot)
    assert result.ok, result.log() + result.console[-3000:]
    return result


def _show(result: LabResult, name: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in result.text(name).splitlines() if "=" in line)


@pytest.mark.lab
def test_lvsd_unit_is_active_only_after_ready(booted: LabResult) -> None:
    """``systemctl start lvsd`` returns with the unit active and running as the dynamic
    user, and only once READY=1 came (the stand-in sends it 1 s after it started)."""
    show = _show(booted, "show.txt")
    assert ("active", "running", "lvsd") == (show["ActiveState"], show["SubState"], show["User"])
    started = int(show["ExecMainStartTimestampMonotonic"])
    active = int(show["ActiveEnterTimestampMonotonic"])
    assert active - started >= 1_000_000


@pytest.mark.lab
def test_status_shows_the_status_line_and_nothing_failed(booted: LabResult) -> None:
    """``systemctl status lvsd`` shows the STATUS= text, the drop-in and a passed
    ExecStartPre check; no unit failed; stop ends cleanly."""
    status = booted.text("status.txt")
    assert 'Status: "stand-in: 0 services, 0 real servers up"' in status
    assert "lab.conf" in status
    assert "ExecStartPre=" in status
    assert "status=0/SUCCESS" in status
    assert "" == booted.text("failed.txt").strip()
    assert {"ActiveState": "inactive", "Result": "success"} == _show(booted, "stopped.txt")
