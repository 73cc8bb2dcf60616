"""The Debian package under systemd in the lab: ``scripts/build-deb`` builds it, and one
boot (``SystemdBoot``: the host's root under an overlay whose upper dir is tmpfs, so the
install never reaches the host) installs it with ``apt-get install /path/lvsd_*.deb``,
starts the packaged ``lvsd.service`` unchanged (no drop-in: the package's
``/usr/bin/lvsd`` runs on Debian's python3), checks the table with ``ipvsadm -Ln``,
reloads, stops and purges it.

The lab config replaces the package's ``/etc/lvsd/lvsd.toml``; state and the control
socket stay at the package's own paths (``/var/lib/lvsd``, ``/run/lvsd``), which in the
overlay are tmpfs. Set ``LVSD_DEB`` to a built package to skip the build (3 min).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lab import harness, systemd
from lab.harness import LabResult, Scenario
from lab.topology import NatTopology
from tests.lab.conftest import Lab

CONFIG = """[daemon]
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

#: Every path the package installs that the test looks for, before and after purge.
PATHS = (
    "/usr/bin/lvsd",
    "/lib/systemd/system/lvsd.service",
    "/etc/lvsd/lvsd.toml",
    "/usr/share/man/man8/lvsd.8.gz",
    "/usr/share/man/man5/lvsd.toml.5.gz",
    "/usr/share/doc/lvsd/copyright",
    "/usr/share/bash-completion/completions/lvsd",
    "/usr/share/zsh/vendor-completions/_lvsd",
)

SCENARIO = f"""
export DEBIAN_FRONTEND=noninteractive
# The host's policy-rc.d (a container image's "exit 101") would deny every
# start anyway: gone from the overlay (a whiteout in tmpfs), "starts nothing" is lvsd's.
rm -f /usr/sbin/policy-rc.d
apt-get install -y --no-install-recommends "$PWD"/lvsd_*.deb \\
    > "$LAB_RESULTS/install.log" 2>&1 && echo 0 > "$LAB_RESULTS/install.rc"
systemctl is-enabled lvsd > "$LAB_RESULTS/enabled.txt" 2>&1 || true
systemctl is-active lvsd > "$LAB_RESULTS/installed.active" || true
ipvsadm -Ln > "$LAB_RESULTS/installed.ipvsadm"
dpkg-query -W -f='${{Conffiles}}\\n' lvsd > "$LAB_RESULTS/conffiles.txt"
ls -d {" ".join(PATHS)} > "$LAB_RESULTS/installed.ls" 2>&1 || true
cat lab.toml > /etc/lvsd/lvsd.toml
systemctl start lvsd && echo 0 > "$LAB_RESULTS/start.rc"
systemctl show lvsd -p ActiveState,SubState,User,FragmentPath,DropInPaths \\
    > "$LAB_RESULTS/started.show"
ipvsadm -Ln > "$LAB_RESULTS/started.ipvsadm"
lvsd status > "$LAB_RESULTS/status.txt" 2>&1 || true
cat reloaded.toml > /etc/lvsd/lvsd.toml
systemctl reload lvsd && echo 0 > "$LAB_RESULTS/reload.rc"
ipvsadm -Ln > "$LAB_RESULTS/reloaded.ipvsadm"
systemctl stop lvsd
systemctl show lvsd -p ActiveState,Result > "$LAB_RESULTS/stopped.show"
systemctl enable lvsd > /dev/null 2>&1
ls /etc/systemd/system/multi-user.target.wants/ > "$LAB_RESULTS/wants.txt"
ls -d /var/lib/private/lvsd /var/lib/lvsd > "$LAB_RESULTS/state.ls" 2>&1 || true
dpkg --purge lvsd > "$LAB_RESULTS/purge.log" 2>&1 && echo 0 > "$LAB_RESULTS/purge.rc"
ls -d {" ".join(PATHS)} /etc/lvsd /usr/lib/lvsd /var/lib/private/lvsd \\
    /etc/systemd/system/multi-user.target.wants/lvsd.service > "$LAB_RESULTS/purged.ls" 2>&1 || true
dpkg-query -W -f='${{Status}}\\n' lvsd > "$LAB_RESULTS/purged.status" 2>&1 || true
"""


def build_deb(folder: Path) -> Path:
    """The package: ``$LVSD_DEB`` if set, else built by ``scripts/build-deb``."""
    given = os.environ.get("LVSD_DEB")
    if given:
        return Path(given)
    script = harness.REPO / "scripts" / "build-deb"
    out = subprocess.run(
        [str(script), str(folder)], capture_output=True, text=True, check=False, timeout=1200
    )
    assert 0 == out.returncode, out.stderr[-3000:]
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def installed(module_lab: Lab) -> LabResult:
    """The one boot: install, start, reload, stop, purge."""
    work = module_lab.work / "package"
    work.mkdir()
    deb = build_deb(module_lab.work / "dist")
    shutil.copy(deb, work / deb.name)
    (work / "lab.toml").write_text(CONFIG.format(weight=3))
    (work / "reloaded.toml").write_text(CONFIG.format(weight=7))
    boot = systemd.SystemdBoot(timeout=900)
    result = harness.run(work, Scenario(shell=SCENARIO), topology=NatTopology(), boot=boot)
    assert result.ok, result.log() + result.console[-3000:]
    return result


def _show(result: LabResult, name: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in result.text(name).splitlines() if "=" in line)


def _weights(ipvsadm: str) -> dict[str, str]:
    """Real server -> weight from ``ipvsadm -Ln`` (``-> 10.0.0.2:80 Masq 3 0 0``)."""
    return {
        f[1]: f[3] for f in map(str.split, ipvsadm.splitlines()) if f[:1] == ["->"] and "Masq" in f
    }


@pytest.mark.lab
def test_install_puts_every_file_in_place_and_starts_nothing(installed: LabResult) -> None:
    """``apt-get install`` of the .deb succeeds offline (its dependencies are Debian's
    python3), installs the binary, unit, config, man pages, copyright and completions,
    marks the config a conffile, and neither enables nor starts lvsd: the table stays
    empty."""
    assert "0" == installed.text("install.rc").strip(), installed.text("install.log")
    assert sorted(PATHS) == installed.text("installed.ls").split()
    assert installed.text("conffiles.txt").split()[0] == "/etc/lvsd/lvsd.toml"
    assert "disabled" == installed.text("enabled.txt").strip()
    assert "inactive" == installed.text("installed.active").strip()
    assert "IP Virtual Server" in installed.text("installed.ipvsadm")
    assert {} == _weights(installed.text("installed.ipvsadm"))
    assert "TCP " not in installed.text("installed.ipvsadm")


@pytest.mark.lab
def test_the_packaged_unit_starts_lvsd_and_programs_the_table(installed: LabResult) -> None:
    """``systemctl start lvsd`` runs the packaged unit as shipped (no drop-in) as the
    dynamic user, and the kernel table holds the config's service and weights."""
    assert "0" == installed.text("start.rc").strip()
    show = _show(installed, "started.show")
    assert ("active", "running", "lvsd") == (show["ActiveState"], show["SubState"], show["User"])
    assert "/lib/systemd/system/lvsd.service" == show["FragmentPath"]
    assert "" == show["DropInPaths"]
    assert "TCP  192.168.3.108:80 wrr" in installed.text("started.ipvsadm")
    assert {"10.0.0.2:80": "3", "10.0.0.3:80": "1"} == _weights(installed.text("started.ipvsadm"))
    assert "web" in installed.text("status.txt")


@pytest.mark.lab
def test_reload_applies_the_edited_config_and_stop_is_clean(installed: LabResult) -> None:
    """``systemctl reload lvsd`` after editing /etc/lvsd/lvsd.toml applies the new
    weight; ``systemctl stop lvsd`` ends with result success."""
    assert "0" == installed.text("reload.rc").strip()
    assert {"10.0.0.2:80": "7", "10.0.0.3:80": "1"} == _weights(installed.text("reloaded.ipvsadm"))
    assert {"ActiveState": "inactive", "Result": "success"} == _show(installed, "stopped.show")


@pytest.mark.lab
def test_purge_removes_the_files_the_conffile_the_state_and_the_enablement(
    installed: LabResult,
) -> None:
    """``dpkg --purge lvsd`` removes every installed file, the (edited) conffile and
    /etc/lvsd, the daemon's state, and the symlink ``systemctl enable`` made."""
    assert "lvsd.service" in installed.text("wants.txt").split()
    assert ["/var/lib/lvsd", "/var/lib/private/lvsd"] == installed.text("state.ls").split()
    assert "0" == installed.text("purge.rc").strip(), installed.text("purge.log")
    listing = installed.text("purged.ls")
    assert "" == "\n".join(line for line in listing.splitlines() if "No such file" not in line)
    assert len(PATHS) + 4 == listing.count("No such file")
    assert "no packages found matching lvsd" in installed.text("purged.status")
