"""Boot user-mode Linux (``linux.uml``, a real 6.1 kernel with IPVS) and run a scenario in it.

The guest's root filesystem is the host's, through hostfs, so the guest runs the
project's virtualenv and the host's ``ipvsadm`` directly. It must write only to tmpfs
or to the caller's work folder. The init script (``render_init``) therefore:

1. mounts proc, sys, and tmpfs on ``/run``, ``/tmp`` and ``/var/tmp`` (the caller's work
   folder is bound back at its own path when it lies under one of them);
2. binds the UML modules on ``/lib/modules`` and loads ``modules`` (ip_vs, every
   scheduler, veth, bridge by default; none at all to test "ip_vs not loaded");
3. runs the topology's shell (network namespaces, addresses, routes);
4. runs the scenario with ``$LAB_RESULTS`` pointing at ``<workdir>/results``, writes
   its exit status to ``results/exit_status``, and powers off.

The host reads the results after the guest has halted. Every boot is bounded by a
timeout; on expiry only the process group of the ``linux.uml`` this module started is
killed.

Extension point for systemd inside the guest: ``render_init`` is built from
``Boot.steps``; a boot that chroots into an overlay and execs systemd replaces the
last step (``scenario_step``) by one that writes units into the overlay and ends with
``exec chroot``, the results folder being bound into the overlay first (see
docs/lab.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from lab import xstate

#: Modules the lab loads by default: IPVS with every scheduler the 6.1 guest ships,
#: and what the topologies need.
DEFAULT_MODULES: tuple[str, ...] = (
    "ip_vs",
    *(
        f"ip_vs_{s}"
        for s in ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf")
    ),
    "ip_vs_mh",
    "veth",
    "bridge",
)


class LabError(Exception):
    """The user-mode-Linux lab failed to boot, timed out, or its scenario failed."""


UML_MODULES = Path("/usr/lib/uml/modules")
KERNEL = "linux.uml"

#: The virtualenv's python, by absolute path (PATH in the guest is minimal).
PYTHON = sys.executable
#: The checkout this lab comes from (the guest imports ``lab`` and ``lvsd`` from it).
REPO = Path(__file__).resolve().parents[1]


def kernel_path() -> str | None:
    """Where ``linux.uml`` is, or None when this host lacks it."""
    return shutil.which(KERNEL) or (
        "/usr/bin/linux.uml" if os.path.exists("/usr/bin/linux.uml") else None
    )


def unavailable_reason() -> str | None:
    """Why the lab cannot boot here, in words, or None when it can."""
    if kernel_path() is None:
        return "linux.uml is not installed (run scripts/setup: apt-get install user-mode-linux)"
    if not UML_MODULES.is_dir():
        return f"{UML_MODULES} is missing (user-mode-linux package incomplete)"
    if not Path("/lib/modules").is_dir():
        return "/lib/modules is missing on the host (mkdir -p /lib/modules; scripts/setup does)"
    if shutil.which("ipvsadm") is None and not os.path.exists("/usr/sbin/ipvsadm"):
        return "ipvsadm is not installed (apt-get install ipvsadm)"
    return None


class Topology(Protocol):
    """Something that builds networks inside the guest, as shell."""

    def shell(self) -> str: ...


class NoTopology:
    """Only loopback."""

    def shell(self) -> str:
        return "ip link set lo up\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """What runs in the guest after set-up: a shell snippet. ``Scenario.python`` makes
    one that runs a Python script with the virtualenv's python.

    The snippet sees ``$LAB_RESULTS`` (write results there), ``$LAB_WORK`` (the
    caller's folder), ``$LAB_PYTHON`` and ``$LAB_REPO``. Its exit status is the
    scenario's.
    """

    shell: str

    @classmethod
    def python(cls, script: str | Path, *args: str) -> Scenario:
        argv = " ".join(shlex.quote(a) for a in (str(script), *args))
        return cls(shell=f'"$LAB_PYTHON" {argv}\n')


@dataclass(frozen=True, slots=True)
class LabResult:
    """What came back from one boot."""

    exit_status: int
    results: Path
    console: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def text(self, name: str) -> str:
        """A text file the scenario wrote into ``$LAB_RESULTS``."""
        return (self.results / name).read_text()

    def json(self, name: str) -> Any:
        """A JSON file the scenario wrote into ``$LAB_RESULTS``."""
        return json.loads(self.text(name))

    def log(self) -> str:
        """The scenario's own output (stdout and stderr)."""
        path = self.results / "scenario.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Boot:
    """How to boot: kernel, memory, modules, and the init script's pieces."""

    modules: Sequence[str] = DEFAULT_MODULES
    mem: str = "384M"
    timeout: float = 300.0
    #: Extra tmpfs mount points (created if missing only when under a tmpfs already).
    tmpfs: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)

    def steps(
        self, work: Path, topology: Topology, scenario: Scenario, *, stream: bool = False
    ) -> list[str]:
        """The init script, step by step (override or replace steps to extend it)."""
        return [
            self.prologue_step(work),
            self.mount_step(work),
            self.module_step(),
            topology.shell(),
            self.scenario_step(scenario, stream=stream),
        ]

    def prologue_step(self, work: Path) -> str:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": "/run/lab-home",
            "TMPDIR": "/tmp",
            "LAB_WORK": str(work),
            "LAB_RESULTS": str(work / "results"),
            "LAB_PYTHON": PYTHON,
            "LAB_REPO": str(REPO),
            **self.env,
        }
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        return "#!/bin/sh\n# generated by lab.harness\n" + exports

    def mount_step(self, work: Path) -> str:
        # /tmp and /var/tmp become tmpfs in the guest; host folders under them that the
        # guest needs (the work folder, a checkout or virtualenv in /tmp, as CI may have)
        # are carried over by bind mounts, shortest path first so nesting works.
        keep = kept_paths(work)
        lines = [
            "mount -t proc proc /proc",
            "mount -t sysfs sys /sys",
            "mount -t tmpfs tmpfs /run",
            "mkdir -p /run/lab-home /run/netns",
        ]
        for i, path in enumerate(keep):
            lines.append(
                f"mkdir -p /run/lab-keep/{i}; mount --bind {shlex.quote(path)} /run/lab-keep/{i}"
            )
        lines.append("for d in /tmp /var/tmp; do mount -t tmpfs tmpfs $d; done")
        for i, path in enumerate(keep):
            q = shlex.quote(path)
            lines.append(f"mkdir -p {q}; mount --bind /run/lab-keep/{i} {q}")
        lines.append(f"mount --bind {shlex.quote(str(UML_MODULES))} /lib/modules")
        lines += [
            f"mkdir -p {shlex.quote(p)}; mount -t tmpfs tmpfs {shlex.quote(p)}" for p in self.tmpfs
        ]
        return "\n".join(lines) + "\n"

    def module_step(self) -> str:
        return "".join(
            f"modprobe {shlex.quote(m)} || echo 'lab: modprobe {m} failed'\n" for m in self.modules
        )

    def scenario_step(self, scenario: Scenario, *, stream: bool = False) -> str:
        # With ``stream`` the output also goes to the console, to be followed live.
        sink = (
            '| tee "$LAB_RESULTS/scenario.log" > /dev/console'
            if stream
            else ('> "$LAB_RESULTS/scenario.log"')
        )
        return (
            'mkdir -p "$LAB_RESULTS"\n'
            "cat > /run/lab-scenario.sh <<'LAB_SCENARIO_EOF'\n"
            f"{scenario.shell.rstrip()}\n"
            "LAB_SCENARIO_EOF\n"
            'cd "$LAB_WORK"\n'
            '{ sh -e /run/lab-scenario.sh; echo $? > "$LAB_RESULTS/exit_status"; } 2>&1 '
            f"{sink}\n"
            "sync\n"
            "poweroff -f --no-wtmp\n"
        )


def render_init(
    boot: Boot, work: Path, topology: Topology, scenario: Scenario, *, stream: bool = False
) -> str:
    return "\n".join(boot.steps(work, topology, scenario, stream=stream))


def run(
    work: Path,
    scenario: Scenario,
    *,
    topology: Topology | None = None,
    boot: Boot | None = None,
    stream: IO[str] | None = None,
) -> LabResult:
    """Boot the guest once in ``work`` (a folder the caller owns), run ``scenario``,
    and return what it left in ``work/results``.

    ``stream``: also copy the scenario's output there as it runs (for the demo).
    Raises ``LabError`` when the lab is unavailable, the boot times out, or the guest
    halts without recording an exit status.
    """
    reason = unavailable_reason()
    if reason is not None:
        raise LabError(f"lab unavailable: {reason}")
    boot = boot or Boot()
    topology = topology or NoTopology()
    work = work.resolve()
    results = work / "results"
    if results.exists():
        shutil.rmtree(results)
    results.mkdir(parents=True)
    init = work / "init.sh"
    init.write_text(render_init(boot, work, topology, scenario, stream=stream is not None))
    init.chmod(0o755)
    console_path = work / "console.log"
    kernel = kernel_path()
    assert kernel is not None
    argv = [
        kernel,
        f"mem={boot.mem}",
        "rootfstype=hostfs",
        "rootflags=/",
        "rw",
        f"init={init}",
        "con=null",
        "con0=null,fd:1",
        "quiet",
    ]
    started = time.monotonic()
    with console_path.open("w") as console:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stream is not None else console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=work,
            env={**os.environ, "LD_PRELOAD": str(xstate.shim())},
        )
        pump: threading.Thread | None = None
        if stream is not None:
            pump = threading.Thread(target=_pump, args=(proc, console, stream), daemon=True)
            pump.start()
        try:
            proc.wait(timeout=boot.timeout)
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc)
            raise LabError(
                f"lab boot timed out after {boot.timeout:.0f} s; console: {console_path}"
            ) from exc
        finally:
            _kill_group(proc)
            if pump is not None:
                pump.join(timeout=5)
    duration = time.monotonic() - started
    text = console_path.read_text(errors="replace").replace("\r", "")
    status_file = results / "exit_status"
    if not status_file.exists():
        tail = "\n".join(text.splitlines()[-20:])
        raise LabError(f"guest halted without an exit status; console tail:\n{tail}")
    return LabResult(
        exit_status=int(status_file.read_text().strip() or "255"),
        results=results,
        console=text,
        duration=duration,
    )


def _pump(proc: subprocess.Popen[bytes], console: IO[str], stream: IO[str]) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode(errors="replace").replace("\r", "")
        console.write(line)
        if not _is_kernel_noise(line):
            stream.write(line)
            stream.flush()


_NOISE = ("SELinux:", "mmapper_init", "Failed to initialize ubd", "Powering off", "reboot:")


def _is_kernel_noise(line: str) -> bool:
    return line.startswith(_NOISE)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill what is left of the process group of the ``linux.uml`` we started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=10)


def kept_paths(*extra: Path) -> list[str]:
    """Host folders the guest needs that its tmpfs on /tmp or /var/tmp would hide (the
    checkout, the virtualenv and its interpreter when they live there, as in a CI clone,
    plus ``extra``), shortest first so that nested ones bind in order."""
    paths = (REPO, Path(sys.prefix), Path(sys.base_prefix), *extra)
    return sorted({str(p.resolve()) for p in paths if _under_tmp(p)}, key=len)


def _under_tmp(path: Path) -> bool:
    """Whether the guest's tmpfs on /tmp or /var/tmp would hide ``path``."""
    resolved = path.resolve()
    return any(resolved.is_relative_to(t) for t in (Path("/tmp"), Path("/var/tmp")))
