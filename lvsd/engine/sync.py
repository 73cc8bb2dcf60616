"""Keeps the kernel's connection sync daemons as ``[sync]`` asks: started at start-up,
read and repaired on each drift-repair pass and after a reload.

lvsd owns the states its config names (and those it named before a reload): one
that runs otherwise than asked is stopped and started again; one the config no
longer names is stopped; a state it never named is left alone, as a service lvsd
does not manage is. lvsd leaves the daemons running when it stops: the backup keeps
receiving connections while lvsd restarts. A failure is logged and retried on the
next pass, never raised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import structlog

from lvsd.config.model import SyncConfig
from lvsd.errors import IpvsError
from lvsd.ipvs.base import SyncDaemons
from lvsd.model import SyncDaemon, SyncState

log = structlog.get_logger(__name__)


class Action(StrEnum):
    START = "start"
    STOP = "stop"


#: One kernel request: start a daemon, or stop the daemon of its state.
Step = tuple[Action, SyncDaemon]


def plan_sync(
    wanted: Sequence[SyncDaemon], running: Sequence[SyncDaemon], owned: frozenset[SyncState]
) -> list[Step]:
    """The requests that make ``running`` what ``wanted`` asks, stops first. States in
    ``owned`` that ``wanted`` does not name are stopped; others are left alone."""
    now = {d.state: d for d in running}
    wanted_states = {d.state for d in wanted}
    steps: list[Step] = [
        (Action.STOP, now[state])
        for state in SyncState
        if state in owned and state not in wanted_states and state in now
    ]
    for daemon in wanted:
        current = now.get(daemon.state)
        if current is not None and daemon.covers(current):
            continue
        if current is not None:
            steps.append((Action.STOP, current))
        steps.append((Action.START, daemon))
    return steps


@dataclass(frozen=True, slots=True)
class SyncCheck:
    """A configured daemon, what the kernel runs for it, and the latest failure."""

    daemon: SyncDaemon
    running: SyncDaemon | None = None  # as the kernel reports it; None: not as asked
    error: str = ""

    @property
    def up(self) -> bool:
        return self.running is not None

    def __str__(self) -> str:
        if self.running is not None:
            return f"{self.running}: running"
        return f"{self.daemon}: down" + (f" ({self.error})" if self.error else "")


class SyncKeeper:
    """Starts, checks and repairs the sync daemons on ``backend``; ``checks`` holds
    the outcome of the latest pass (empty without ``[sync]``). ``on_pass`` is told
    every pass's outcome (the metrics)."""

    def __init__(
        self,
        backend: SyncDaemons,
        on_pass: Callable[[tuple[SyncCheck, ...]], None] | None = None,
    ) -> None:
        self._backend = backend
        self._on_pass = on_pass
        self._owned: frozenset[SyncState] = frozenset()
        self.checks: tuple[SyncCheck, ...] = ()

    async def keep(self, sync: SyncConfig | None) -> tuple[SyncCheck, ...]:
        """One pass: read the daemons, start, stop or restart what differs from
        ``sync``, read them again; the outcome is also kept in ``checks``."""
        wanted = sync.daemons() if sync is not None else ()
        if not wanted and not self._owned:
            return self.checks
        errors: dict[SyncState, str] = {}
        try:
            running = await self._backend.sync_daemons()
            for action, daemon in plan_sync(wanted, running, self._owned):
                try:
                    if action is Action.START:
                        await self._backend.start_sync(daemon)
                    else:
                        await self._backend.stop_sync(daemon.state)
                except IpvsError as exc:
                    errors[daemon.state] = exc.reason
                    log.error(
                        "sync.failed", action=str(action), daemon=str(daemon), error=exc.reason
                    )
                else:
                    event = "sync.started" if action is Action.START else "sync.stopped"
                    log.info(event, daemon=str(daemon))
            running = await self._backend.sync_daemons()
        except IpvsError as exc:
            log.error("sync.failed", action="read", error=exc.reason)
            running = ()
            errors = {d.state: exc.reason for d in wanted}
        self._owned = frozenset(d.state for d in wanted)
        by_state = {d.state: d for d in running}
        checks = []
        for daemon in wanted:
            current = by_state.get(daemon.state)
            up = current if current is not None and daemon.covers(current) else None
            checks.append(SyncCheck(daemon, up, "" if up else errors.get(daemon.state, "")))
        self.checks = tuple(checks)
        if self._on_pass is not None:
            self._on_pass(self.checks)
        return self.checks


__all__ = ["Action", "SyncCheck", "SyncKeeper", "plan_sync"]
