"""What the daemon answers, over the engine's public API only.

:class:`Admin` serves the control socket's commands (``reload``, ``status``, ``drain``,
``undrain``, ``connections``); :class:`ApiSource` is what ``lvsd.observe.api`` reads
(readiness, a fresh dump, the status report).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any, Final

from lvsd.checks.scheduler import CheckSchedulerStats
from lvsd.engine.reconcile import Engine, ReloadResult
from lvsd.errors import ControlError, LvsdError
from lvsd.model import DestKey, Snapshot, Table, parse_hostport
from lvsd.observe import status
from lvsd.observe.status import LoadReport, StatusReport
from lvsd.observe.steps import finish

#: A control request or answer: one JSON object (``lvsd.control``).
Message = dict[str, Any]

#: The scheduler's stats now (None: no scheduler yet).
LoadSource = Callable[[], CheckSchedulerStats | None]


def load_report(stats: CheckSchedulerStats | None) -> LoadReport | None:
    """The scheduler's lag for the status report."""
    if stats is None:
        return None
    return LoadReport(
        late_max=stats.late_max,
        lagged=stats.lagged,
        stretched=stats.stretched,
        skipped=stats.skipped,
        overruns=stats.overruns,
    )


def parse_realserver(text: str) -> DestKey:
    """``10.0.0.2:80`` or ``[::1]:80`` as a key; ``LvsdError`` when malformed."""
    try:
        return DestKey.of(*parse_hostport(text))
    except ValueError as exc:
        raise LvsdError(f"bad real server: {exc}") from None


def status_reply(engine: Engine, now: float, load: LoadReport | None = None) -> Message:
    """The ``status`` command's answer: ``status`` (JSON) and ``text`` (for people)."""
    report = status.build(
        engine.config, engine.health, engine.table, engine.drained, now, load=load
    )
    return {"status": report.to_json(), "text": report.render()}


class Admin:
    """The control socket's commands. ``reload`` is the daemon's (it also updates the
    checks and says ``RELOADING=1``/``READY=1`` to systemd)."""

    def __init__(
        self,
        engine: Engine,
        reload: Callable[[bool], Awaitable[ReloadResult]],
        clock: Callable[[], float],
        serving: Callable[[], bool] = lambda: True,
        load: LoadSource = lambda: None,
    ) -> None:
        self._engine = engine
        self._reload = reload
        self._clock = clock
        self._serving = serving
        self._load = load

    async def handle(self, request: Message) -> Message:
        """Answer one request (``lvsd.control.Handler``); none before the daemon serves
        (the socket is claimed before the first kernel write)."""
        command = request.get("command")
        handler = COMMANDS.get(str(command))
        if handler is None:
            known = ", ".join(sorted(COMMANDS))
            raise ControlError(f"unknown command {command!r} (known: {known})")
        if not self._serving():
            raise ControlError("lvsd is starting or stopping; try again")
        return await handler(self, request)

    async def _cmd_reload(self, request: Message) -> Message:
        result = await self._reload(request.get("force") is True)
        if not result.ok:
            raise ControlError("reload failed, old config kept:\n" + "\n".join(result.errors))
        return result.to_json()

    async def _cmd_status(self, request: Message) -> Message:
        return status_reply(self._engine, self._clock(), load_report(self._load()))

    async def _drain(self, request: Message, on: bool) -> Message:
        service = str(request.get("service", ""))
        realserver = parse_realserver(str(request.get("realserver", "")))
        result = await self._engine.set_drain(service, realserver, on)
        return {
            "service": service,
            "realserver": str(realserver),
            "drained": on,
            "ops": [str(op) for op in result.applied],
        }

    async def _cmd_drain(self, request: Message) -> Message:
        return await self._drain(request, True)

    async def _cmd_undrain(self, request: Message) -> Message:
        return await self._drain(request, False)

    async def _cmd_connections(self, request: Message) -> Message:
        """Active connections of one real server, from a fresh dump."""
        engine = self._engine
        service = str(request.get("service", ""))
        realserver = parse_realserver(str(request.get("realserver", "")))
        engine.find(service, realserver)
        await engine.refresh()
        return {
            "service": service,
            "realserver": str(realserver),
            "active": engine.active_connections(service, realserver),
        }


#: One command: the method of :class:`Admin` that answers it.
Command = Callable[[Admin, Message], Awaitable[Message]]

#: The commands by name.
COMMANDS: Final[Mapping[str, Command]] = {
    "reload": Admin._cmd_reload,
    "status": Admin._cmd_status,
    "drain": Admin._cmd_drain,
    "undrain": Admin._cmd_undrain,
    "connections": Admin._cmd_connections,
}


class ApiSource:
    """What ``lvsd.observe.api`` reads (a ``SteppedSource``): readiness, a fresh dump,
    the status report. ``serving`` says whether the daemon is up (not starting or
    stopping)."""

    def __init__(
        self,
        engine: Engine,
        serving: Callable[[], bool],
        clock: Callable[[], float],
        load: LoadSource = lambda: None,
    ) -> None:
        self._engine = engine
        self._serving = serving
        self._clock = clock
        self._load = load
        self._ready = False

    @property
    def ready(self) -> bool:
        """True once the daemon is up and every check has reported at least once."""
        if not self._ready and self._serving():
            statuses = self._engine.health.status(self._clock())
            self._ready = all(cs.last_at is not None for s in statuses for _, cs in s.checks)
        return self._ready and self._serving()

    async def snapshot(self) -> Snapshot:
        return await self._engine.counters()

    def report(self, table: Table | None) -> StatusReport:
        return finish(self.report_steps(table))

    def report_steps(self, table: Table | None) -> Generator[None, None, StatusReport]:
        """:meth:`report` in steps (``lvsd.observe.status.build_steps``):
        ``lvsd.observe.api`` lets the probes start between them."""
        engine = self._engine
        return status.build_steps(
            engine.config,
            engine.health,
            table,
            engine.drained,
            self._clock(),
            load=load_report(self._load()),
        )


__all__ = [
    "COMMANDS",
    "Admin",
    "ApiSource",
    "Command",
    "LoadSource",
    "Message",
    "load_report",
    "parse_realserver",
    "status_reply",
]
