"""What the daemon answers, over the engine's public API only.

:class:`Admin` serves the control socket's commands (``reload``, ``status``, ``drain``,
``undrain``, ``connections``); :class:`ApiSource` is what ``lvsd.observe.api`` reads
(readiness, a fresh dump, the status report).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any, Final

from lvsd.checks.scheduler import CheckSchedulerStats
from lvsd.control import printable
from lvsd.engine.reconcile import Engine, ReloadResult
from lvsd.errors import ControlError, LvsdError
from lvsd.health.state import Transition
from lvsd.model import DestKey, Snapshot, Table, parse_hostport
from lvsd.observe import status
from lvsd.observe.status import LoadReport, StatusReport, SyncLine
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


def text_field(request: Message, key: str) -> str:
    """A request's string field (``""`` when absent); anything else is a bad request."""
    value = request.get(key, "")
    if not isinstance(value, str):
        raise ControlError(f"bad request: {key!r} must be a string, not {printable(value)}")
    return value


def status_reply(
    engine: Engine,
    now: float,
    sync: tuple[SyncLine, ...] = (),
    *,
    colour: bool = False,
    load: LoadReport | None = None,
) -> Message:
    """The ``status`` command's answer: ``status`` (JSON) and ``text`` (for people, in
    ANSI colours when ``colour``)."""
    report = status.build(
        engine.config, engine.health, engine.table, engine.drained, now, load=load
    )
    report = dataclasses.replace(report, sync=sync)
    text, found = report.render(colour=colour), engine.timeouts
    json = report.to_json()
    if found is not None:  # as ``ipvsadm -L --timeout`` shows them
        json["timeouts"] = {"tcp": found.tcp, "tcp_fin": found.tcp_fin, "udp": found.udp}
        text += f"\nTimeout (tcp tcpfin udp): {found.tcp} {found.tcp_fin} {found.udp}"
    return {"status": json, "text": text}


class Admin:
    """The control socket's commands. ``reload`` is the daemon's (it also updates the
    checks and says ``RELOADING=1``/``READY=1`` to systemd)."""

    def __init__(
        self,
        engine: Engine,
        reload: Callable[[bool], Awaitable[ReloadResult]],
        clock: Callable[[], float],
        serving: Callable[[], bool] = lambda: True,
        sync: Callable[[], tuple[SyncLine, ...]] = tuple,
        load: LoadSource = lambda: None,
    ) -> None:
        self._engine = engine
        self._reload = reload
        self._clock = clock
        self._serving = serving
        self._sync = sync  # the sync daemons' latest pass
        self._load = load

    async def handle(self, request: Message) -> Message:
        """Answer one request (``lvsd.control.Handler``); none before the daemon serves
        (the socket is claimed before the first kernel write)."""
        command = request.get("command")
        handler = COMMANDS.get(command) if isinstance(command, str) else None
        if handler is None:
            known = ", ".join(sorted(COMMANDS))
            what = repr(printable(command)) if isinstance(command, str) else printable(command)
            raise ControlError(f"unknown command {what} (known: {known})")
        if not self._serving():
            raise ControlError("lvsd is starting or stopping; try again")
        return await handler(self, request)

    async def _cmd_reload(self, request: Message) -> Message:
        result = await self._reload(request.get("force") is True)
        if not result.ok:
            raise ControlError("reload failed, old config kept:\n" + "\n".join(result.errors))
        return result.to_json()

    async def _cmd_status(self, request: Message) -> Message:
        colour = request.get("color") is True
        load = load_report(self._load())
        return status_reply(self._engine, self._clock(), self._sync(), colour=colour, load=load)

    async def _drain(self, request: Message, on: bool) -> Message:
        service = text_field(request, "service")
        realserver = parse_realserver(text_field(request, "realserver"))
        was_drained = (service, realserver) in self._engine.drained
        result = await self._engine.set_drain(service, realserver, on)
        return {
            "service": service,
            "realserver": str(realserver),
            "drained": on,
            "was_drained": was_drained,
            "ops": [str(op) for op in result.applied],
        }

    async def _cmd_drain(self, request: Message) -> Message:
        return await self._drain(request, True)

    async def _cmd_undrain(self, request: Message) -> Message:
        return await self._drain(request, False)

    async def _cmd_connections(self, request: Message) -> Message:
        """Active connections of one real server, from a fresh dump."""
        engine = self._engine
        service = text_field(request, "service")
        realserver = parse_realserver(text_field(request, "realserver"))
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
        sync: Callable[[], tuple[SyncLine, ...]] = tuple,
        load: LoadSource = lambda: None,
    ) -> None:
        self._engine = engine
        self._serving = serving
        self._clock = clock
        self._sync = sync  # the sync daemons' latest pass
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

    def recent(self) -> list[tuple[float, Transition]]:
        """(seconds ago, transition) of the engine's last transitions, newest first."""
        now = self._clock()
        return [(now - t.at, t) for t in reversed(self._engine.recent)]

    def report_steps(self, table: Table | None) -> Generator[None, None, StatusReport]:
        """:meth:`report` in steps (``lvsd.observe.status.build_steps``):
        ``lvsd.observe.api`` lets the probes start between them."""
        engine = self._engine
        report = yield from status.build_steps(
            engine.config,
            engine.health,
            table,
            engine.drained,
            self._clock(),
            load=load_report(self._load()),
        )
        return dataclasses.replace(report, sync=self._sync())


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
    "text_field",
]
