"""What the engine tells the world: metrics hooks, and what a health report turns into.

A :class:`~lvsd.health.state.Report` becomes one log event per change
(``realserver.up``/``realserver.down``, ``service.panic``, ``quorum.down``...), the
matching :class:`Hooks` calls, the service's quorum up/down command, run as a
bounded subprocess (killed with its process group after :data:`COMMAND_TIMEOUT`)
that never blocks the engine, and each changed real server's notify command
(``lvsd.engine.notify``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import structlog

from lvsd import child
from lvsd.checks.base import ProbeResult
from lvsd.config.model import Config, Notify, VirtualServiceConfig
from lvsd.engine.notify import Notifier, job_for, notify_of, stop_jobs
from lvsd.health.state import Report, Transition
from lvsd.model import DestKey, RealServerId

log = structlog.get_logger(__name__)

#: Seconds a quorum up/down command may run before it is killed.
COMMAND_TIMEOUT = 30.0

#: Runs a quorum command (argv); the default starts a bounded subprocess.
CommandRunner = Callable[[Sequence[str]], None]


class Hooks(Protocol):
    """What the engine tells the metrics (``lvsd.observe.metrics.Metrics`` fits)."""

    def probe(self, kind: str, result: ProbeResult) -> None: ...
    def transition(self, t: Transition) -> None: ...
    def reload(self, result: str, now_wall: float) -> None: ...
    def netlink(self, op_kind: str, ok: bool) -> None: ...
    def drift_repair(self, count: int) -> None: ...
    def panic(self, service: str, on: bool) -> None: ...
    def quorum(self, service: str, up: bool) -> None: ...
    def state_set_aside(self, name: str) -> None: ...
    def command(self, kind: str, result: str) -> None: ...


class NullHooks:
    """Metrics that count nothing (no metrics module, or tests)."""

    def probe(self, kind: str, result: ProbeResult) -> None:
        pass

    def transition(self, t: Transition) -> None:
        pass

    def reload(self, result: str, now_wall: float) -> None:
        pass

    def netlink(self, op_kind: str, ok: bool) -> None:
        pass

    def drift_repair(self, count: int) -> None:
        pass

    def panic(self, service: str, on: bool) -> None:
        pass

    def quorum(self, service: str, up: bool) -> None:
        pass

    def state_set_aside(self, name: str) -> None:
        pass

    def command(self, kind: str, result: str) -> None:
        pass


class Announcer:
    """Turns health reports into log events, hooks, quorum and notify commands; owns
    the commands still running (``close`` cancels them)."""

    def __init__(
        self, hooks: Hooks, run_command: CommandRunner | None = None, max_notify: int = 8
    ) -> None:
        self.hooks = hooks
        self._run_command = run_command or self._spawn
        self._commands: set[asyncio.Task[None]] = set()
        self.notifier = Notifier(max_notify, lambda result: hooks.command("notify", result))
        self._notify_index: tuple[Config, dict[RealServerId, tuple[VirtualServiceConfig, Notify]]]
        self._notify_index = (Config(path=""), {})

    def _notifies(self, config: Config) -> dict[RealServerId, tuple[VirtualServiceConfig, Notify]]:
        """The real servers of ``config`` that have a notify table (built once per config)."""
        if self._notify_index[0] is not config:
            found = {}
            for svc in config.services:
                for rs in svc.real_servers:
                    notify = notify_of(svc, rs)
                    if notify is not None:
                        found[(svc.name, rs.key)] = (svc, notify)
            self._notify_index = (config, found)
        return self._notify_index[1]

    def _notify(self, config: Config, t: Transition) -> None:
        entry = self._notifies(config).get((t.service, t.realserver))
        if entry is None:
            return
        svc, notify = entry
        job = job_for(svc, t.realserver, notify, up=t.new, reason=t.reason, detail=t.detail)
        if job is not None:
            self.notifier.submit(job)

    def report(self, report: Report, config: Config) -> None:
        """Log every change of ``report``, feed the hooks, run ``config``'s quorum
        commands."""
        for t in report.transitions:
            self.hooks.transition(t)
            # trouble in the pool is a warning (see lvsd.log); a recovery is routine
            say = log.info if t.new else log.warning
            say(
                t.event,
                service=t.service,
                realserver=str(t.realserver),
                old="up" if t.old else "down",
                new="up" if t.new else "down",
                reason=t.reason,
                detail=t.detail,
            )
            self._notify(config, t)
        for p in report.panic:
            self.hooks.panic(p.service, p.panic)
            say = log.error if p.panic else log.info
            say(
                p.event,
                service=p.service,
                failing=p.failing,
                total=p.total,
                held=[str(d) for d in p.held],
            )
        for q in report.quorum:
            self.hooks.quorum(q.service, q.up)
            say = log.info if q.up else log.error
            say(q.event, service=q.service, live_weight=q.live_weight, minimum=q.minimum)
            svc = next((s for s in config.services if s.name == q.service), None)
            if svc is None or svc.quorum is None:
                continue
            command = svc.quorum.up_command if q.up else svc.quorum.down_command
            if command:
                self._run_command(command)

    def _spawn(self, argv: Sequence[str]) -> None:
        task = asyncio.get_running_loop().create_task(_run_bounded(tuple(argv)))
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)

    async def stopping(self, config: Config, up: Iterable[tuple[str, DestKey]]) -> None:
        """lvsd stops: run the down commands of the real servers in ``up`` whose notify
        has ``on_stop``, and wait for them and the notify commands still running (each
        bounded by its timeout)."""
        jobs = stop_jobs(config, up)
        if not jobs:
            return  # nothing to say: ``close`` cancels what still runs
        for job in jobs:
            self.notifier.submit(job)
        await self.notifier.drain()

    async def close(self) -> None:
        """Cancel (and kill) the commands still running."""
        await self.notifier.close()
        for task in list(self._commands):
            task.cancel()
        await asyncio.gather(*self._commands, return_exceptions=True)


async def _run_bounded(argv: tuple[str, ...], limit: float = COMMAND_TIMEOUT) -> None:
    """Run a quorum command (lvsd's identity); after ``limit`` seconds kill it with its
    whole process group; log how it ended."""
    try:
        async with asyncio.timeout(limit):
            exited = await child.run(argv, kill_group=False)
    except TimeoutError:
        log.error("command.timeout", command=list(argv), timeout=limit)
        return
    except OSError as exc:
        log.error("command.failed", command=list(argv), error=str(exc))
        return
    if exited.code == 0:
        log.info("command.done", command=list(argv))
    else:
        log.error("command.failed", command=list(argv), status=exited.code)


__all__ = ["COMMAND_TIMEOUT", "Announcer", "CommandRunner", "Hooks", "NullHooks"]
