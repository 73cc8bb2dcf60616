"""The exec probe: exit codes, placeholders, dynamic weights, and no process left
behind when a command hangs past its timeout."""

from __future__ import annotations

import asyncio
import grp
import ipaddress
import os
import pwd
import sys
from pathlib import Path

import pytest

from lvsd.checks.base import Target
from lvsd.checks.exec import ExecProbe, render_command, verdict_of_exit
from lvsd.config.model import ExecOptions
from tests.checks.conftest import make_spec

TARGET = Target(
    address=ipaddress.ip_address("127.0.0.1"),
    port=8080,
    vip=ipaddress.ip_address("::1"),
    vport=80,
    weight=10,
)


#: A command expected to finish gets seconds (a busy host starts a shell slowly); one
#: expected to hang is cut at ``HANG_TIMEOUT``, past a slow shell's start.
RUN_TIMEOUT = 10.0
HANG_TIMEOUT = 1.0


def _probe(
    *command: str, target: Target = TARGET, timeout: float = RUN_TIMEOUT, **options: object
) -> ExecProbe:
    spec = make_spec("exec", ExecOptions(command=command, **options), timeout=timeout)  # type: ignore[arg-type]
    return ExecProbe(spec, target)


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone, or going while read
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _living_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies (zombies wait for init to reap)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        state, pgrp = fields[0], int(fields[3])
        if pgrp == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def test_render_command() -> None:
    """Placeholders are substituted inside arguments; nothing else is expanded."""
    command = ("/bin/check", "--vip={vip}", "{vport}", "{rip}:{rport}", "$HOME", "{other}")
    expected = ("/bin/check", "--vip=::1", "80", "127.0.0.1:8080", "$HOME", "{other}")
    assert expected == render_command(command, TARGET, 8080)


@pytest.mark.parametrize(
    ("code", "dynamic", "max_weight", "expected"),
    [
        (0, False, None, (True, "exit 0", None)),
        (1, False, None, (False, "exit 1", None)),
        (1, True, None, (False, "exit 1", None)),
        (7, False, None, (False, "exit 7", None)),
        (7, True, None, (True, "exit 7, weight 5", 5)),
        (2, True, None, (True, "exit 2, weight 0", 0)),
        (255, True, None, (True, "exit 255, weight 10", 10)),
        (255, True, 100, (True, "exit 255, weight 100", 100)),
        (-9, False, None, (False, "killed by SIGKILL", None)),
    ],
)
def test_verdict_of_exit(
    code: int, dynamic: bool, max_weight: int | None, expected: tuple[bool, str, int | None]
) -> None:
    """0 up, 1 down, 2..255 weight code-2 bounded (dynamic) or down; signals down."""
    options = ExecOptions(command=("x",), dynamic=dynamic, max_weight=max_weight)
    assert expected == verdict_of_exit(code, options, 10)


async def test_exit_zero_is_up() -> None:
    """Exit 0 is up; the first line of output is in the detail."""
    result = await _probe("/bin/sh", "-c", "echo all good; echo more").probe()
    assert result.ok
    assert "exec ['/bin/sh', '-c', 'echo all good; echo more']: exit 0: all good" == result.detail


async def test_exit_one_is_down() -> None:
    """Exit 1 is down with reason 'exit'."""
    result = await _probe("/bin/sh", "-c", "exit 1").probe()
    assert not result.ok
    assert "exec ['/bin/sh', '-c', 'exit 1']: exit 1" == result.detail
    assert "exit" == result.reason


async def test_dynamic_weight() -> None:
    """With `dynamic`, exit 5 is up with weight 3."""
    result = await _probe("/bin/sh", "-c", "exit 5", dynamic=True).probe()
    assert (True, 3) == (result.ok, result.weight)


async def test_placeholders_reach_the_command(tmp_path: Path) -> None:
    """The command sees the substituted arguments, unexpanded by any shell."""
    out = tmp_path / "args"
    script = 'printf "%s\\n" "$@" > "$0"'
    result = await _probe(
        "/bin/sh", "-c", script, str(out), "{rip}", "{rport}", "{vip}", "$X"
    ).probe()
    assert result.ok, result.detail
    assert ["127.0.0.1", "8080", "::1", "$X"] == out.read_text().splitlines()


async def test_not_found() -> None:
    """A command that does not exist fails with 'not found', not an exception."""
    result = await _probe("/nonexistent/check").probe()
    assert not result.ok
    assert "exec ['/nonexistent/check']: not found" == result.detail
    assert "error" == result.reason


async def test_unknown_user() -> None:
    """An unknown `user` fails clearly."""
    result = await _probe("/bin/true", user="no-such-user-lvsd").probe()
    assert not result.ok
    assert "exec ['/bin/true']: no such user 'no-such-user-lvsd'" == result.detail


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
async def test_runs_as_user() -> None:
    """With `user`, the command runs as that user, in that user's primary group and
    with that user's supplementary groups only (not root's gid 0 and groups)."""
    entry = pwd.getpwnam("nobody")
    expected = (entry.pw_uid, entry.pw_gid, sorted(set(os.getgrouplist("nobody", entry.pw_gid))))
    result = await _probe(
        "/bin/sh", "-c", 'echo "$(id -u) $(id -g) $(id -G)"', user="nobody"
    ).probe()
    assert result.ok, result.detail
    uid, gid, *groups = map(int, result.detail.rsplit(": ", 1)[1].split())
    assert expected == (uid, gid, sorted(set(groups)))


async def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    """A command that hangs (with a child of its own) past the timeout is killed with its
    whole process group and reaped: no process is left behind."""
    pids = tmp_path / "pids"
    script = f'sleep 30 & echo $$ $! > "{pids}"; wait'
    result = await _probe("/bin/sh", "-c", script, timeout=HANG_TIMEOUT).probe()
    assert not result.ok
    assert f"exec ['/bin/sh', '-c', {script!r}]: timeout after {HANG_TIMEOUT}s" == result.detail
    assert "timeout" == result.reason
    shell, child = (int(pid) for pid in pids.read_text().split())
    assert not _alive(shell)  # reaped by the probe: gone entirely
    for _ in range(100):  # the orphaned child is reaped by init; wait for the kernel
        if not _alive(child):
            break
        await asyncio.sleep(0.01)
    assert not _alive(child)
    assert [] == _living_members(shell)


async def test_background_child_holding_output_is_killed(tmp_path: Path) -> None:
    """A command that exits leaving a child that holds its output open is judged by its
    exit status at once (no timeout), and the child is killed."""
    pids = tmp_path / "pids"
    script = f'sleep 30 & echo $! > "{pids}"; echo fine; exit 0'
    result = await _probe("/bin/sh", "-c", script).probe()
    assert (True, f"exec ['/bin/sh', '-c', {script!r}]: exit 0: fine") == (
        result.ok,
        result.detail,
    )
    assert await _gone(int(pids.read_text()))


async def _gone(pid: int) -> bool:
    """Wait (a bounded number of turns) for ``pid`` to die: SIGKILL is delivered at
    once, but the process ends, and init reaps it, a moment later."""
    for _ in range(500):
        if not _alive(pid):
            return True
        await asyncio.sleep(0.01)
    return False


async def test_exit_zero_leaves_no_child_behind(tmp_path: Path) -> None:
    """The issue's script: a probe exits 0 leaving a child that escaped its stdio;
    the probe is up and the child is killed with the group."""
    pids = tmp_path / "pids"
    script = f'sleep 304 >/dev/null 2>&1 & echo $! > "{pids}"; exit 0'
    result = await _probe("/bin/sh", "-c", script).probe()
    assert result.ok, result.detail
    assert await _gone(int(pids.read_text()))


async def test_output_is_bounded_and_drained() -> None:
    """A command writing megabytes is read to the end (it never blocks on a full pipe)
    and only the first bytes are kept; a flood that never ends is cut at the timeout."""
    script = "head -c 4000000 /dev/zero | tr '\\0' x; exit 1"
    result = await _probe("/bin/sh", "-c", script).probe()
    assert (False, "exit") == (result.ok, result.reason)
    assert result.detail.endswith(": exit 1: " + "x" * 256)
    flood = await _probe("yes", timeout=HANG_TIMEOUT).probe()
    assert (False, "timeout") == (flood.ok, flood.reason)


def _children() -> list[tuple[int, str]]:
    """This process's children, zombies included: ``(pid, state)``."""
    found = []
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[1] == me:
            found.append((int(entry.name), fields[0]))
    return found


async def _left(*argv: str) -> list[int]:
    """:func:`_by_argv` once none are left, or after a bounded number of turns."""
    for _ in range(1000):
        if not (found := _by_argv(*argv)):
            break
        await asyncio.sleep(0.01)
    return found


def _by_argv(*argv: str) -> list[int]:
    """Living processes whose command line is ``argv``."""
    wanted = "\0".join(argv) + "\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _alive(int(entry.name)):
            try:
                if (entry / "cmdline").read_text() == wanted:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


#: The nasty scripts of issue 18, row 4, and the timeout each runs with.
NASTY = {
    "child escapes stdio, exit 0": ("sleep 3041 >/dev/null 2>&1 & exit 0", RUN_TIMEOUT),
    "child keeps the output, exit 0": ("sleep 3042 & exit 0", RUN_TIMEOUT),
    "output flood": ("yes", 0.2),
    "grandchild calls setsid, floods": ("setsid yes & exit 0", RUN_TIMEOUT),
    "grandchild calls setsid, sleeps": ("setsid sleep 3043 & exit 0", RUN_TIMEOUT),
}

#: Runs of each script in the suite (bench/exec_leak.py runs 10,000 in all).
RUNS = 40


@pytest.mark.parametrize("name", NASTY)
async def test_nasty_scripts_leave_nothing(name: str) -> None:
    """Many runs of each nasty script leave no descriptor, no child and no zombie of
    lvsd's, and nothing alive in the probe's group; only a grandchild that left with
    setsid and stays silent survives (not lvsd's child; systemd's cgroup ends it)."""
    script, timeout = NASTY[name]
    probe = _probe("/bin/sh", "-c", script, timeout=timeout)
    await probe.probe()  # the spawner thread and the loop's descriptors, made once
    fds = sorted(os.listdir("/proc/self/fd"))
    children = _children()
    sem = asyncio.Semaphore(8)

    async def one() -> None:
        async with sem:
            await probe.probe()

    try:
        await asyncio.gather(*(one() for _ in range(RUNS)))
        assert fds == sorted(os.listdir("/proc/self/fd"))
        assert children == _children()
        # a killed process is gone a moment after SIGKILL (longer on a loaded host); an
        # escaped `yes` dies of SIGPIPE once its pipe is closed
        for argv in (("sleep", "3041"), ("sleep", "3042"), ("yes",)):
            assert [] == await _left(*argv)
    finally:
        for pid in _by_argv("sleep", "3043"):
            os.kill(pid, 9)


@pytest.mark.skipif(os.geteuid() != 0, reason="capabilities to drop need root")
@pytest.mark.parametrize("user", [None, "nobody"])
async def test_command_has_no_capabilities(user: str | None) -> None:
    """Under a parent with every capability (root), the command has none: effective,
    permitted, ambient, inheritable and bounding sets are empty; it runs as ``user``
    (else lvsd's uid) and with no_new_privs."""
    fields = "^(Uid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):"
    script = f"grep -E '{fields}' /proc/self/status | tr -s '\\t\\n' '  '"
    result = await _probe("/bin/sh", "-c", script, user=user).probe()
    assert result.ok, result.detail
    words = result.detail.rsplit(": exit 0: ", 1)[1].split()
    status = {w.rstrip(":"): words[i + 1] for i, w in enumerate(words) if w.endswith(":")}
    uid = 0 if user is None else pwd.getpwnam(user).pw_uid
    zero = "0000000000000000"
    expected = {
        "Uid": str(uid),
        "CapInh": zero,
        "CapPrm": zero,
        "CapEff": zero,
        "CapBnd": zero,
        "CapAmb": zero,
        "NoNewPrivs": "1",
    }
    assert expected == status


@pytest.mark.skipif(os.geteuid() != 0, reason="switching group needs root")
async def test_runs_as_group() -> None:
    """With `group`, the command's primary group is that group."""
    gid = grp.getgrnam("nogroup").gr_gid
    result = await _probe("/bin/sh", "-c", "id -g", user="nobody", group="nogroup").probe()
    assert result.ok, result.detail
    assert str(gid) == result.detail.rsplit(": ", 1)[1]


async def test_unknown_group() -> None:
    """An unknown `group` fails clearly."""
    result = await _probe("/bin/true", group="no-such-group-lvsd").probe()
    assert "exec ['/bin/true']: no such group 'no-such-group-lvsd'" == result.detail


async def test_lvsd_descriptors_are_not_inherited(tmp_path: Path) -> None:
    """A descriptor lvsd holds open (like the control socket or the drain file) is not
    open in the command: it sees only stdin, stdout and stderr."""
    held = os.open(tmp_path / "drains.json", os.O_CREAT | os.O_RDWR)
    os.set_inheritable(held, True)  # even one marked inheritable
    try:
        result = await _probe("/bin/sh", "-c", "ls /proc/self/fd | tr '\\n' ' '").probe()
    finally:
        os.close(held)
    assert result.ok, result.detail
    assert ["0", "1", "2", "3"] == sorted(result.detail.rsplit(": ", 1)[1].split())


async def test_cancelled_probe_kills_the_group(tmp_path: Path) -> None:
    """Cancelling a running exec probe (shutdown) also kills and reaps the command."""
    pids = tmp_path / "pids"
    probe = ExecProbe(
        make_spec(
            "exec",
            ExecOptions(command=("/bin/sh", "-c", f'echo $$ > "{pids}"; sleep 30')),
            timeout=30,
        ),
        TARGET,
    )
    task = asyncio.create_task(probe.probe())
    for _ in range(200):
        if pids.exists() and pids.read_text().strip():
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _alive(int(pids.read_text()))


async def test_python_interpreter_command() -> None:
    """Any executable works, e.g. the test's own Python."""
    result = await _probe(sys.executable, "-c", "raise SystemExit(1)").probe()
    assert (False, "exit") == (result.ok, result.reason)
