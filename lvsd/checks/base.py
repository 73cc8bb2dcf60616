"""What every probe kind shares: the target, the result, the protocol, the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from lvsd.config.model import CheckSpec
from lvsd.model import IPAddress, format_hostport


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """What a probe is aimed at: the real server (and the VIP, for exec placeholders)."""

    address: IPAddress
    port: int
    vip: IPAddress | None = None
    vport: int = 0
    weight: int = 1  # configured weight, the bound for dynamic weights

    def __str__(self) -> str:
        return format_hostport(self.address, self.port)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    """A probe's answer. ``detail`` says precisely why it failed (or what it saw):
    ``"connect 10.0.0.2:80: refused"``, ``"GET /health: status 503, want 200-299"``.

    ``weight`` is a dynamic weight (None: no opinion): absolute from exec probes, a
    percentage of each real server's configured weight from agent probes.
    ``drain`` means the server asked to get no new connections (agent ``drain``).
    ``reason`` is a short fixed word for metrics labels (never free text):
    ``ok``, ``refused``, ``timeout``, ``reset``, ``status``, ``body``, ``tls``,
    ``protocol``, ``exit``, ``error``, and ``local``: the probe could not be made for
    want of lvsd's own resources (descriptors, buffers, memory, local ports), so it
    says nothing about the server and the health state holds; ``local`` then names the
    errno (``EMFILE``).
    """

    ok: bool
    detail: str
    duration: float
    reason: str = "ok"
    weight: int | None = None
    drain: bool = False
    local: str = ""

    def __str__(self) -> str:
        state = "ok" if self.ok else "fail"
        return f"{state} ({self.detail}, {self.duration * 1000:.0f} ms)"


class Probe(Protocol):
    """One check of one target. Built once per (spec, target); ``probe`` is called on
    every interval. Expected network errors are returned as failed results; only
    bugs raise. The probe enforces ``spec.timeout`` itself."""

    async def probe(self) -> ProbeResult: ...

    async def close(self) -> None: ...


#: Called once when a run started by :meth:`QuickProbe.start` ends: with its result, or
#: with None when it was cancelled.
Finish = Callable[[ProbeResult | None], None]


class Run(Protocol):
    """A probe run under way (an ``asyncio.Task`` is one)."""

    def done(self) -> bool: ...

    def cancel(self) -> bool: ...


@runtime_checkable
class QuickProbe(Probe, Protocol):
    """A probe that can also run from callbacks, without a task of its own: at
    thousands of checks a second a task per run is much of the scheduler's CPU, and
    the run starts the moment it is due rather than on the loop's next turn.
    ``start(finish, now)`` begins a run and returns it; ``now`` is the loop's time as
    the caller read it on this turn (the run's start: the run need not read the clock
    to begin). ``finish`` is called exactly once, on a later turn of the loop (with None
    at once if the run is cancelled)."""

    def start(self, finish: Finish, now: float) -> Run: ...


class ProbeFactory(Protocol):
    def __call__(self, spec: CheckSpec, target: Target) -> Probe: ...
