"""systemd inside the lab: the repo's hardened ``lvsd.service`` under a real systemd.

Two boots (``SystemdBoot``) install ``systemd/lvsd.service`` with the lab drop-in:

* ``booted``: a stand-in main process (``python -m lab.systemd``: READY=1 with a
  STATUS line after 1 s); the scenario starts the unit and records
  ``systemctl show``/``status``.
* ``reloaded``: the real ``lvsd run``; the scenario breaks the config and runs
  ``systemctl reload lvsd`` (it must fail, the kernel table unchanged in
  ``ipvsadm -Ln``), then reloads a good one, and reads the journal by priority.
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
    """The drop-in resets and replaces the three Exec lines with the venv's absolute lvsd and
    binds the test's config read-only on /etc/lvsd/lvsd.toml."""
    text = systemd.lvsd_dropin(Path("/tmp/t/lvsd.toml"))
    lvsd = systemd.LVSD
    expected = [
        "ExecStartPre=",
        f"ExecStartPre={lvsd} check -c /etc/lvsd/lvsd.toml",
        "ExecStart=",
        f"ExecStart={lvsd} run -c /etc/lvsd/lvsd.toml",
        "ExecReload=",
        f"ExecReload={lvsd} reload -c /etc/lvsd/lvsd.toml",
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


GOOD = """[daemon]
metrics_listen = ""
[services.web]
address = "192.168.3.108"
port = 80
scheduler = "wrr"
forward = "nat"
[[services.web.real_servers]]
address = "10.0.0.2"
port = 80
weight = {weight}
[[services.web.real_servers]]
address = "10.0.0.3"
port = 80
"""
#: A typo in a key: the daemon refuses the file and keeps the old table.
BROKEN = GOOD.format(weight=5).replace("scheduler =", "schedular =")

RELOAD_SCENARIO = """
systemctl start lvsd
ipvsadm -Ln > "$LAB_RESULTS/before.txt"
cat broken.toml > lvsd.toml
systemctl reload lvsd > "$LAB_RESULTS/broken.out" 2>&1 || echo $? > "$LAB_RESULTS/broken.rc"
systemctl is-active lvsd > "$LAB_RESULTS/broken.active" || true
ipvsadm -Ln > "$LAB_RESULTS/after_broken.txt"
cat fixed.toml > lvsd.toml
systemctl reload lvsd && echo 0 > "$LAB_RESULTS/fixed.rc"
ipvsadm -Ln > "$LAB_RESULTS/after_fixed.txt"
journalctl -u lvsd -p warning -o cat --no-pager > "$LAB_RESULTS/warnings.txt" || true
journalctl -u lvsd -p info -o cat --no-pager > "$LAB_RESULTS/info.txt" || true
systemctl stop lvsd
"""


@pytest.fixture(scope="module")
def reloaded(module_lab: Lab) -> LabResult:
    """The second boot: the real daemon under the shipped unit, reloaded twice."""
    work = module_lab.work / "systemd-reload"
    work.mkdir()
    for name, text in (
        ("lvsd.toml", GOOD.format(weight=3)),
        ("broken.toml", BROKEN),
        ("fixed.toml", GOOD.format(weight=7)),
    ):
        (work / name).write_text(text)
        (work / name).chmod(0o644)
    units = systemd.lvsd_units(work / "lvsd.toml")
    boot = systemd.SystemdBoot(units=units, timeout=300)
    result = harness.run(work, Scenario(shell=RELOAD_SCENARIO), topology=NatTopology(), boot=boot)
    assert result.ok, result.log() + result.console[-3000:]
    return result


def _weights(ipvsadm: str) -> dict[str, str]:
    """Real server -> weight from ``ipvsadm -Ln`` (``-> 10.0.0.2:80 Masq 3 0 0``)."""
    return {
        f[1]: f[3] for f in map(str.split, ipvsadm.splitlines()) if f[:1] == ["->"] and "Masq" in f
    }


@pytest.mark.lab
def test_reload_of_a_broken_config_fails_and_keeps_the_table(reloaded: LabResult) -> None:
    """``systemctl reload lvsd`` with a typo in the config exits non-zero and names the
    problem; lvsd stays active and ``ipvsadm -Ln`` is unchanged (weight 3, not 5)."""
    assert "0" != reloaded.text("broken.rc").strip()
    assert {"10.0.0.2:80": "3", "10.0.0.3:80": "1"} == _weights(reloaded.text("before.txt"))
    assert reloaded.text("before.txt") == reloaded.text("after_broken.txt")
    assert "active" == reloaded.text("broken.active").strip()
    assert "schedular" in reloaded.text("warnings.txt")


@pytest.mark.lab
def test_reload_of_a_good_config_succeeds_and_applies_it(reloaded: LabResult) -> None:
    """After the fix, ``systemctl reload lvsd`` exits 0 and the new weight is in."""
    assert "0" == reloaded.text("fixed.rc").strip()
    assert {"10.0.0.2:80": "7", "10.0.0.3:80": "1"} == _weights(reloaded.text("after_fixed.txt"))


@pytest.mark.lab
def test_journal_priorities_separate_warnings_from_info(reloaded: LabResult) -> None:
    """journald sees lvsd's levels: ``-p warning`` shows the failed reload (the daemon's
    event and ``lvsd reload``'s own message as ExecReload) and not the routine events,
    which ``-p info`` shows."""
    warnings, info = reloaded.text("warnings.txt"), reloaded.text("info.txt")
    assert "reload.failed" in warnings
    assert "lvsd: reload failed, old config kept:" in warnings
    assert "daemon.ready" not in warnings
    assert "reload.failed" in info
    assert "daemon.ready" in info
