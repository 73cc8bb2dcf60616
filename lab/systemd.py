"""systemd inside the lab guest: boot to ``lab.target`` in an overlay of the host's root.

``SystemdBoot`` replaces the harness's last step (see ``harness.Boot.steps``): instead
of running the scenario from the init script, it

1. loads ``overlay`` and mounts an overlay with lower dir ``/`` (the host, via hostfs)
   and upper/work dirs on the ``/run`` tmpfs, so whatever systemd and the units write
   lands in tmpfs and the host's ``/etc`` is untouched;
2. writes the units into the overlay's ``/etc/systemd/system/``: ``lab.target``
   (``Requires=basic.target lab-test.service``), ``lab-test.service`` (a oneshot that
   runs the scenario, records its exit status and ends with ``systemctl poweroff -ff``)
   and any extra ``Unit`` (for example the repo's ``lvsd.service`` plus a drop-in);
3. bind-mounts the caller's work folder into the overlay at its own path (results
   written there reach the host), a tmpfs on the overlay's ``/run`` (so systemd keeps it
   and the network namespaces stay reachable) with ``/run/netns`` bound into it, and
   the UML modules on ``/lib/modules``;
4. ``exec chroot OVERLAY /lib/systemd/systemd --unit=lab.target``.

The scenario runs as ``lab-test.service``, so it may ``systemctl start lvsd`` and read
the journal. ``lvsd_units(config)`` installs ``systemd/lvsd.service`` with the lab's
drop-in (absolute venv paths, the test's config; see ``LAB_DROPIN`` for the options
that UML cannot honour).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab.harness import REPO, Boot, Scenario, kept_paths

#: Where the overlay is assembled in the guest (on the ``/run`` tmpfs).
OVERLAY = "/run/ov"
ROOT = f"{OVERLAY}/root"
#: The venv's ``lvsd`` console script, by absolute path.
LVSD = str(Path(sys.executable).parent / "lvsd")


@dataclass(frozen=True, slots=True, kw_only=True)
class Unit:
    """A file written into the overlay's ``/etc/systemd/system/`` (``name`` may hold a
    drop-in folder: ``lvsd.service.d/lab.conf``)."""

    name: str
    text: str

    def __str__(self) -> str:
        return self.name


LAB_TARGET = """[Unit]
Description=lvsd lab: the test and nothing else
Requires=basic.target lab-test.service
After=basic.target
AllowIsolate=yes
"""

TEST_SERVICE = """[Unit]
Description=lvsd lab: the scenario
After=basic.target
[Service]
Type=oneshot
ExecStart=/bin/sh /etc/lab/run.sh
StandardOutput=journal+console
StandardError=inherit
TimeoutStartSec=infinity
"""

#: The lab's drop-in for ``lvsd.service``. Every line differs from the shipped unit
#: only where the lab needs it:
#:
#: * ExecStartPre/ExecStart/ExecReload: the venv's ``lvsd`` by absolute path and the test's
#:   config, bound read-only on ``/etc/lvsd/lvsd.toml`` (the test folder itself is
#:   mode 0700, unreadable for the dynamic user).
#: * ``ProtectHome=tmpfs`` + ``BindReadOnlyPaths=<python prefix>``, only when the
#:   venv's interpreter lives under ``/root`` or ``/home`` (pyenv on the CI machine):
#:   the shipped ``ProtectHome=yes`` (and ``DynamicUser``'s unreadable ``/root``) would
#:   hide the interpreter and every start fails with 203/EXEC. A packaged lvsd (python
#:   under ``/usr``) needs no such line.
#: * ``BindReadOnlyPaths=`` for a checkout or venv under ``/tmp`` (a CI clone), which
#:   ``PrivateTmp=yes`` would hide.
_DROPIN = """[Service]
BindReadOnlyPaths={config}:/etc/lvsd/lvsd.toml
{home}ExecStartPre=
ExecStartPre={lvsd} check -c /etc/lvsd/lvsd.toml
ExecStart=
ExecStart={lvsd} run -c /etc/lvsd/lvsd.toml
ExecReload=
ExecReload={lvsd} reload -c /etc/lvsd/lvsd.toml
{extra}"""


def lvsd_dropin(config: Path, *, exec_start: str | None = None, extra: str = "") -> str:
    """The lab drop-in of ``lvsd.service`` for ``config`` (a stand-in command may
    replace ``lvsd run``)."""
    home = ""
    if sys.base_prefix.startswith(("/root/", "/home/")):
        home = f"ProtectHome=tmpfs\nBindReadOnlyPaths={sys.base_prefix}\n"
    # PrivateTmp= hides a checkout or virtualenv under /tmp (a CI clone): bind them back.
    home += "".join(f"BindReadOnlyPaths={path}\n" for path in kept_paths())
    text = _DROPIN.format(config=config, lvsd=LVSD, extra=extra, home=home)
    if exec_start is not None:
        text = text.replace(f"{LVSD} run -c /etc/lvsd/lvsd.toml", exec_start)
    return text


def lvsd_units(config: Path, *, exec_start: str | None = None, extra: str = "") -> list[Unit]:
    """The repo's ``systemd/lvsd.service`` and the lab drop-in pointing it at ``config``."""
    shipped = (REPO / "systemd" / "lvsd.service").read_text()
    return [
        Unit(name="lvsd.service", text=shipped),
        Unit(
            name="lvsd.service.d/lab.conf",
            text=lvsd_dropin(config, exec_start=exec_start, extra=extra),
        ),
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemdBoot(Boot):
    """A boot that runs the scenario as a systemd unit (see the module docstring)."""

    mem: str = "512M"
    units: Sequence[Unit] = ()
    #: systemd's own log level on the console.
    log_level: str = "warning"
    env: dict[str, str] = field(default_factory=dict)

    def scenario_step(self, scenario: Scenario, *, stream: bool = False) -> str:
        q = shlex.quote
        lines = [
            'mkdir -p "$LAB_RESULTS"',
            "modprobe overlay || echo 'lab: modprobe overlay failed'",
            f"mkdir -p {OVERLAY}/upper {OVERLAY}/work {ROOT}",
            f"mount -t overlay overlay -o lowerdir=/,upperdir={OVERLAY}/upper,"
            f"workdir={OVERLAY}/work {ROOT}",
            f"mkdir -p {ROOT}/etc/systemd/system {ROOT}/etc/lab",
            # The host's machine-id would be shared; systemd makes a transient one.
            f"rm -f {ROOT}/etc/machine-id; : > {ROOT}/etc/machine-id",
        ]
        units = [
            Unit(name="lab.target", text=LAB_TARGET),
            Unit(name="lab-test.service", text=TEST_SERVICE),
            *self.units,
        ]
        for unit in units:
            path = f"{ROOT}/etc/systemd/system/{unit.name}"
            lines += [
                f"mkdir -p {q(os.path.dirname(path))}",
                f"cat > {q(path)} <<'LAB_UNIT_EOF'\n{unit.text.rstrip()}\nLAB_UNIT_EOF",
            ]
        sink = (
            '2>&1 | tee "$LAB_RESULTS/scenario.log"'
            if stream
            else ('> "$LAB_RESULTS/scenario.log" 2>&1')
        )
        lines += [
            f"cat > {ROOT}/etc/lab/scenario.sh <<'LAB_SCENARIO_EOF'\n"
            f"{scenario.shell.rstrip()}\nLAB_SCENARIO_EOF",
            f"export -p > {ROOT}/etc/lab/env.sh",
            f"cat > {ROOT}/etc/lab/run.sh <<'LAB_RUN_EOF'\n"
            ". /etc/lab/env.sh\n"
            'cd "$LAB_WORK"\n'
            f'{{ sh -e /etc/lab/scenario.sh; echo $? > "$LAB_RESULTS/exit_status"; }} {sink}\n'
            "sync\n"
            "systemctl poweroff -ff\n"
            "LAB_RUN_EOF",
            # Results reach the host through the work folder, bound at its own path; a
            # checkout or virtualenv under /tmp (a CI clone) is bound the same way, since
            # the overlay's lower dir shows the guest's empty /tmp, not the host's.
            *(
                f"mkdir -p {q(ROOT + path)}; mount --bind {q(path)} {q(ROOT + path)}"
                for path in kept_paths()
            ),
            f'mkdir -p "{ROOT}$LAB_WORK"; mount --bind "$LAB_WORK" "{ROOT}$LAB_WORK"',
            # systemd keeps a /run that is already a mount point: the namespaces stay.
            f"mount -t tmpfs tmpfs {ROOT}/run",
            f"mkdir -p {ROOT}/run/netns; mount --rbind /run/netns {ROOT}/run/netns",
            f"mount --bind /lib/modules {ROOT}/lib/modules",
            "umount /proc/sys/fs/binfmt_misc 2>/dev/null; umount /sys; umount /proc",
            f"exec chroot {ROOT} /lib/systemd/systemd --unit=lab.target "
            f"--log-target=console --log-level={q(self.log_level)} --show-status=false",
        ]
        return "\n".join(lines) + "\n"


def standin_main() -> None:
    """A stand-in for ``lvsd run``: READY=1 with a STATUS line after 1 s, then waits."""
    import signal
    import time

    from lvsd.daemon.systemd import Notifier

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    notifier = Notifier.from_env()
    time.sleep(1.0)
    notifier.ready("stand-in: 0 services, 0 real servers up")
    ping = notifier.watchdog_interval or 3600.0
    while signal.sigtimedwait({signal.SIGTERM}, ping) is None:
        notifier.watchdog()
    notifier.stopping()


if __name__ == "__main__":
    standin_main()

__all__ = ["LAB_TARGET", "LVSD", "SystemdBoot", "Unit", "lvsd_dropin", "lvsd_units"]
