"""Which VIPs this director announces over BGP, as a file its BGP speaker follows
(``[bgp]``, docs/ha.md).

lvsd decides, the speaker only speaks: a VIP is ``announce`` while every service on
it can serve (above its quorum, or a real server up: :func:`lvsd.engine.serving.cannot_serve`)
and ``withdraw`` (or ``depref``, ``on_down``) when one cannot. A graceful stop first
turns every VIP to ``depref`` (the GRACEFUL_SHUTDOWN community and a worse MED, so the
router moves new flows to the other directors), waits until no new connection came
for ``stop_quiet`` seconds or ``stop_deadline`` passed, then withdraws them all.

The file holds one ``PREFIX STATE`` line per VIP, e.g. ``198.51.100.10/32 announce``,
and is written when it changes, as a new file renamed over the old one. Should lvsd
die, the file keeps its last value; the speaker's helper (``lvsd.engine.exabgp``)
reads it again when the speaker restarts it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path

import structlog

from lvsd.config.model import Config, RouteDown
from lvsd.engine.serving import cannot_serve
from lvsd.health.state import HealthState

log = structlog.get_logger(__name__)


class Route(StrEnum):
    """What the speaker does with a VIP's prefix."""

    ANNOUNCE = "announce"
    DEPREF = "depref"  # announced with GRACEFUL_SHUTDOWN (65535:0) and a worse MED
    WITHDRAW = "withdraw"


def prefixes(config: Config) -> dict[str, list[str]]:
    """VIP prefix (``198.51.100.10/32``) -> the services on it; fwmark services have
    no address of their own and announce nothing."""
    found: dict[str, list[str]] = {}
    for svc in config.services:
        ip = svc.key.ip
        if ip is not None:
            found.setdefault(f"{ip}/{ip.max_prefixlen}", []).append(svc.name)
    return found


def desired_routes(config: Config, health: HealthState, now: float) -> dict[str, Route]:
    """Each VIP's route: announced while all its services can serve."""
    if config.bgp is None:
        return {}
    down = Route.DEPREF if config.bgp.on_down is RouteDown.DEPREF else Route.WITHDRAW
    routes = {}
    for prefix, names in prefixes(config).items():
        services = tuple(s for s in config.services if s.name in names)
        alone = dataclasses.replace(config, services=services)
        routes[prefix] = down if cannot_serve(alone, health, now) else Route.ANNOUNCE
    return routes


def render(routes: dict[str, Route]) -> str:
    return "".join(f"{prefix} {route}\n" for prefix, route in sorted(routes.items()))


def parse(text: str) -> dict[str, Route]:
    """The routes of a file :func:`render` wrote (lines it cannot read are skipped)."""
    routes = {}
    for line in text.splitlines():
        match line.split():
            case [prefix, state] if state in {r.value for r in Route}:
                routes[prefix] = Route(state)
    return routes


class RoutesFile:
    """Writes the routes to ``path`` when they change; logs each VIP's change."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.routes: dict[str, Route] | None = None  # as last written; None: not yet

    def set(self, routes: dict[str, Route], reason: str = "health") -> None:
        if routes == self.routes:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            fresh.write_text(render(routes))
            fresh.replace(self.path)
        except OSError as exc:
            log.error("route.write_failed", path=str(self.path), error=str(exc))
            return
        old = self.routes or {}
        for prefix, route in sorted(routes.items()):
            if old.get(prefix) != route:
                log.info("route.changed", prefix=prefix, route=str(route), reason=reason)
        self.routes = dict(routes)


async def quiesce(
    connections: Callable[[], Awaitable[int]],
    *,
    quiet: float,
    deadline: float,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    step: float = 0.25,
) -> bool:
    """Wait until ``connections()`` (the VIPs' connection counter) has not grown for
    ``quiet`` seconds (True), or ``deadline`` seconds passed (False)."""
    start = clock()
    last = await connections()
    since = start
    while clock() - start < deadline:
        await sleep(step)
        now, count = clock(), await connections()
        if count != last:
            last, since = count, now
        elif now - since >= quiet:
            return True
    return False


__all__ = ["Route", "RoutesFile", "desired_routes", "parse", "prefixes", "quiesce", "render"]
