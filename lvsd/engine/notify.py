"""Notify commands: a command run on each real server's up/down change.

keepalived's ``notify_up``/``notify_down`` and ldirectord's ``callback``. A change of a
real server with a ``notify`` table (its own, else its service's) becomes a
:class:`Job`: the ``up`` or ``down`` command with the placeholders ``{service}``,
``{vip}``, ``{vport}``, ``{rip}``, ``{rport}``, ``{state}``, ``{reason}`` replaced in
its arguments, and the change in its environment (``LVSD_SERVICE``, ``LVSD_VIP``,
``LVSD_VPORT``, ``LVSD_REALSERVER``, ``LVSD_RIP``, ``LVSD_RPORT``, ``LVSD_STATE``,
``LVSD_REASON``, ``LVSD_DETAIL``, and ``PATH``; nothing else of lvsd's). It runs
through :func:`lvsd.child.run` as an exec check does: own process group, no
capability, as ``notify.user``/``notify.group``, output read and bounded, killed with
its group after ``notify.timeout``.

Never blocking the engine: :meth:`Notifier.submit` only queues. At most
``daemon.max_notify_commands`` run at once, and at most one per real server, in the
order of its changes. Coalesced per real server: a real server has at most one job
waiting; a newer change replaces the waiting one (logged ``command.coalesced`` and
counted), so the last command a real server's notify runs is always for its latest
state, and the queue never holds more jobs than there are real servers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog

from lvsd import child
from lvsd.config.model import Config, Notify, RealServer, VirtualServiceConfig
from lvsd.model import DestKey, RealServerId, format_hostport

log = structlog.get_logger("lvsd.engine.notify")

#: Bytes of a command's output kept for its log event (the rest is read and dropped).
OUTPUT_LIMIT = 512

#: PATH of a notify command when lvsd has none.
DEFAULT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

#: Told how each command ended: ``done``, ``failed``, ``timeout`` or ``coalesced``.
Count = Callable[[str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One command to run for one change of one real server."""

    key: RealServerId
    argv: tuple[str, ...]
    env: Mapping[str, str]
    user: str | None = None
    group: str | None = None
    timeout: float = 30.0


def notify_of(svc: VirtualServiceConfig, rs: RealServer) -> Notify | None:
    """The real server's notify table, else its service's."""
    return rs.notify if rs.notify is not None else svc.notify


def job_for(
    svc: VirtualServiceConfig,
    realserver: DestKey,
    notify: Notify,
    *,
    up: bool,
    reason: str,
    detail: str,
) -> Job | None:
    """The job of one change, or None when ``notify`` has no command for this state."""
    command = notify.up if up else notify.down
    if not command:
        return None
    state = "up" if up else "down"
    vip = svc.key.address or ""
    values = {
        "{service}": svc.name,
        "{vip}": vip,
        "{vport}": str(svc.key.port),
        "{rip}": realserver.address,
        "{rport}": str(realserver.port),
        "{state}": state,
        "{reason}": reason,
    }
    env = {
        "PATH": os.environ.get("PATH", DEFAULT_PATH),
        "LVSD_SERVICE": svc.name,
        "LVSD_VIP": vip if not svc.key.fwmark else f"fwmark {svc.key.fwmark}",
        "LVSD_VPORT": str(svc.key.port),
        "LVSD_REALSERVER": format_hostport(realserver.ip, realserver.port),
        "LVSD_RIP": realserver.address,
        "LVSD_RPORT": str(realserver.port),
        "LVSD_STATE": state,
        "LVSD_REASON": reason,
        "LVSD_DETAIL": detail,
    }
    return Job(
        key=(svc.name, realserver),
        argv=child.substitute(command, values),
        env=env,
        user=notify.user,
        group=notify.group,
        timeout=notify.timeout,
    )


def stop_jobs(config: Config, up: Iterable[RealServerId]) -> list[Job]:
    """The ``down`` jobs (reason ``stop``) of the real servers in ``up`` whose notify
    has ``on_stop`` (keepalived's omega)."""
    wanted = set(up)
    jobs = []
    for svc in config.services:
        for rs in svc.real_servers:
            notify = notify_of(svc, rs)
            if notify is None or not notify.on_stop or (svc.name, rs.key) not in wanted:
                continue
            job = job_for(svc, rs.key, notify, up=False, reason="stop", detail="lvsd stopping")
            if job is not None:
                jobs.append(job)
    return jobs


class Notifier:
    """Runs jobs in the background: at most ``limit`` at once, one per real server,
    one waiting per real server (see the module's doc)."""

    def __init__(self, limit: int, count: Count | None = None) -> None:
        self.limit = max(1, limit)
        self._count = count or (lambda result: None)
        self._waiting: dict[RealServerId, Job] = {}
        self._running: dict[RealServerId, asyncio.Task[None]] = {}

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def submit(self, job: Job) -> None:
        """Queue ``job``; replaces (and counts) a job of the same real server still
        waiting. Needs a running event loop."""
        replaced = self._waiting.pop(job.key, None)
        if replaced is not None:
            log.warning("command.coalesced", command=list(replaced.argv), by=list(job.argv))
            self._count("coalesced")
        self._waiting[job.key] = job
        self._pump()

    def _pump(self) -> None:
        for key in list(self._waiting):
            if len(self._running) >= self.limit:
                return
            if key in self._running:
                continue
            job = self._waiting.pop(key)
            task = asyncio.get_running_loop().create_task(self._run(job))
            self._running[key] = task

    async def _run(self, job: Job) -> None:
        try:
            self._count(await run_job(job))
        finally:
            del self._running[job.key]
            self._pump()

    async def drain(self) -> None:
        """Wait until nothing runs or waits (each job is bounded by its timeout)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def close(self) -> None:
        """Drop what waits; cancel (and kill) what runs."""
        self._waiting.clear()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_job(job: Job) -> str:
    """Run ``job`` to its end; log it; ``done``, ``failed`` or ``timeout``."""
    fields = {"command": list(job.argv), "service": job.key[0], "realserver": str(job.key[1])}
    try:
        identity = child.identity_of(job.user, job.group)
        async with asyncio.timeout(job.timeout):
            exited = await child.run(
                job.argv,
                output_limit=OUTPUT_LIMIT,
                identity=identity,
                unprivileged=True,
                env=job.env,
            )
    except TimeoutError:
        log.error("command.timeout", **fields, timeout=job.timeout)
        return "timeout"
    except (OSError, LookupError) as exc:
        log.error("command.failed", **fields, error=str(exc))
        return "failed"
    output = exited.output.decode("utf-8", "replace").strip()
    if exited.code == 0:
        log.info("command.done", **fields)
        return "done"
    log.error("command.failed", **fields, status=exited.code, output=output)
    return "failed"


__all__ = ["Job", "Notifier", "job_for", "notify_of", "run_job", "stop_jobs"]
