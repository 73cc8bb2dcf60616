"""Child processes that never outlive their run: exec probes, quorum and notify commands.

:func:`run` starts a command in a session of its own (so a process group of its own),
stdin from /dev/null, every other descriptor of lvsd closed, and waits for it on a
pidfd. Its output goes to a pipe that is always read (so the child never blocks on a
full pipe), of which the first ``output_limit`` bytes are kept and the rest dropped.

Whatever ends the run (exit, timeout, cancellation), the command's whole process
group is killed with SIGKILL *before* the command is reaped (its pid, so its group id,
cannot be reused meanwhile), and the pipe and the pidfd are closed. SIGKILL at once,
not SIGTERM and a grace: the run is over, nothing waits for the command's clean-up,
and a grace would hold a probe slot and the shutdown for it. A descendant that calls
setsid() leaves the group and cannot be found again: it is not lvsd's child (its
zombie goes to init), it loses the read end of the pipe (a writer dies of SIGPIPE),
and under the unit systemd kills it with the service's cgroup.

With ``unprivileged``, the command is started from a thread of its own that has
given up, for itself only (they are per-thread), the ambient and inheritable
capabilities, the bounding set (when lvsd may: ``CAP_SETPCAP``) and set
no_new_privs: the command starts, and stays, with no capability at all, even as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import grp
import os
import pwd
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

#: Bytes read from the output pipe at once (one read per loop turn: a flood cannot
#: starve the loop).
CHUNK = 65536

_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_VERSION_3 = 0x20080522


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who the command runs as (None: lvsd's own)."""

    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Exited:
    """How a command ended: its status (negative: killed by that signal) and the first
    bytes of its output."""

    code: int
    output: bytes


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_libc = ctypes.CDLL(None, use_errno=True)
_dropped = threading.local()
_spawner: ThreadPoolExecutor | None = None


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot drop privileges ({what}): {os.strerror(err)}")


def _last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def drop_thread_privileges() -> None:
    """Give up, for the calling thread and what it starts, every capability it can
    pass on: no_new_privs, the ambient and inheritable sets, the bounding set."""
    prctl = _libc.prctl
    _check(prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "ambient")
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    for word in data:
        word.inheritable = 0
    _check(_libc.capset(ctypes.byref(header), data), "inheritable")
    for cap in range(_last_cap() + 1):
        if prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # no CAP_SETPCAP: the bounding set stays (no_new_privs holds it)


def _spawn(
    argv: Sequence[str],
    stdout: int,
    identity: Identity,
    unprivileged: bool,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    if unprivileged and not getattr(_dropped, "done", False):
        drop_thread_privileges()
        _dropped.done = True
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout != subprocess.DEVNULL else subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
        user=identity.uid,
        group=identity.gid,
        extra_groups=identity.groups,
        env=env,
    )


def _unprivileged_spawner() -> ThreadPoolExecutor:
    global _spawner  # one spawner thread per process, made on first use
    if _spawner is None:
        _spawner = ThreadPoolExecutor(1, thread_name_prefix="lvsd-spawn")
    return _spawner


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class _Output:
    """The pipe's read end: keeps the first ``limit`` bytes, drops the rest."""

    __slots__ = ("eof", "fd", "kept", "limit")

    def __init__(self, fd: int, limit: int) -> None:
        self.fd, self.limit = fd, limit
        self.kept = bytearray()
        self.eof = False

    def read(self) -> bool:
        """One read; False when nothing more is there now (or ever)."""
        if self.eof:
            return False
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        if len(self.kept) < self.limit:
            self.kept += data[: self.limit - len(self.kept)]
        return True

    def drain(self) -> None:
        """What the command wrote before it exited, up to the limit."""
        while len(self.kept) < self.limit and self.read():
            pass


async def run(
    argv: Sequence[str],
    *,
    output_limit: int = 0,
    identity: Identity | None = None,
    unprivileged: bool = False,
    kill_group: bool = True,
    env: Mapping[str, str] | None = None,
) -> Exited:
    """Run ``argv`` until it exits; bound it with ``asyncio.timeout`` around the call.

    ``kill_group``: also kill what the command left in its group when it exits by
    itself (a timed-out or cancelled command's group is always killed). Raises
    OSError when the command cannot start. ``env``: its whole environment (None:
    lvsd's)."""
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe() if output_limit else (-1, subprocess.DEVNULL)

    def started(spawning: asyncio.Future[subprocess.Popen[bytes]]) -> None:
        # only now: the spawning thread used write_fd until Popen returned
        if write_fd >= 0:
            os.close(write_fd)
        if read_fd >= 0 and (spawning.cancelled() or spawning.exception() is not None):
            os.close(read_fd)

    spawning = loop.run_in_executor(
        _unprivileged_spawner() if unprivileged else None,
        _spawn,
        argv,
        write_fd,
        identity or Identity(),
        unprivileged,
        env,
    )
    spawning.add_done_callback(started)
    try:
        proc = await asyncio.shield(spawning)
    except asyncio.CancelledError:
        spawning.add_done_callback(lambda f: _kill_spawned(f, read_fd))
        raise
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:
        _kill_spawned(spawning, read_fd)
        raise
    return await _wait(loop, proc, pidfd, read_fd, output_limit, kill_group)


def _kill_spawned(spawning: asyncio.Future[subprocess.Popen[bytes]], read_fd: int) -> None:
    """Given up while starting: kill and reap what did start (SIGKILL: it cannot take
    long), close its pipe."""
    if spawning.cancelled() or spawning.exception() is not None:
        return
    proc = spawning.result()
    _kill_group(proc.pid)
    proc.wait()
    if read_fd >= 0:
        os.close(read_fd)


async def _wait(
    loop: asyncio.AbstractEventLoop,
    proc: subprocess.Popen[bytes],
    pidfd: int,
    read_fd: int,
    output_limit: int,
    kill_group: bool,
) -> Exited:
    exited: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        loop.remove_reader(pidfd)
        if not exited.done():
            exited.set_result(None)

    def reap(_: object = None) -> None:
        proc.wait()  # it has exited: returns at once
        os.close(pidfd)

    loop.add_reader(pidfd, on_exit)
    output = None
    if read_fd >= 0:
        os.set_blocking(read_fd, False)
        output = _Output(read_fd, output_limit)
        loop.add_reader(read_fd, output.read)
    try:
        await asyncio.shield(exited)  # a cancelled wait must not mark it exited
        if output is not None:
            output.drain()
    finally:
        if output is not None:
            loop.remove_reader(read_fd)
            os.close(read_fd)
        if kill_group or not exited.done():
            _kill_group(proc.pid)  # before reaping: the group id is still ours
        if exited.done():
            reap()
        else:
            exited.add_done_callback(reap)
            await asyncio.shield(exited)
    return Exited(proc.returncode, bytes(output.kept) if output is not None else b"")


def substitute(command: tuple[str, ...], values: Mapping[str, str]) -> tuple[str, ...]:
    """Replace each placeholder of ``values`` in each argument of ``command``."""
    rendered = []
    for arg in command:
        for placeholder, value in values.items():
            arg = arg.replace(placeholder, value)
        rendered.append(arg)
    return tuple(rendered)


def identity_of(user: str | None, group: str | None) -> Identity:
    """``user`` in its own primary and supplementary groups (or root's gid 0 and
    groups stay), ``group`` instead of the primary group. LookupError("no such user
    'x'") when one does not exist."""
    uid = gid = groups = None
    if user is not None:
        try:
            entry = pwd.getpwnam(user)
        except (KeyError, ValueError):
            raise LookupError(f"no such user {user!r}") from None
        uid, gid = entry.pw_uid, entry.pw_gid
        groups = tuple(os.getgrouplist(entry.pw_name, gid))
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except (KeyError, ValueError):
            raise LookupError(f"no such group {group!r}") from None
        groups = (gid,) if groups is None else (gid, *groups)
    return Identity(uid=uid, gid=gid, groups=groups)


__all__ = ["Exited", "Identity", "drop_thread_privileges", "identity_of", "run", "substitute"]
