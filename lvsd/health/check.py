"""One check: what is probed (:class:`CheckId`), where its state lives
(:data:`CheckKey`), its rise/fall state machine (:func:`step`) and which check
explains a real server's state (:func:`cause`).

Pure: no I/O, no clock reads; time comes in as ``now`` (monotonic seconds).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lvsd.config.model import (
    CheckSpec,
    Config,
    ExecOptions,
    InitialState,
    RealServer,
    VirtualServiceConfig,
)
from lvsd.model import DestKey, ServiceKey, format_hostport

#: The reason word of a result that says nothing about the server: lvsd could not
#: make the probe (out of descriptors, buffers, memory, local ports) or could not tell
#: its own lateness from the server's (``docs/health.md``). :func:`step` holds the
#: check's state on it.
LOCAL = "local"


class ResultLike(Protocol):
    """What the state machine needs from a probe result (``lvsd.checks.base.ProbeResult``
    has it)."""

    @property
    def ok(self) -> bool: ...

    @property
    def detail(self) -> str: ...

    @property
    def reason(self) -> str: ...

    @property
    def weight(self) -> int | None: ...

    @property
    def drain(self) -> bool: ...


# --- identities ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=False)
class CheckId:
    """What is probed: one spec against one address and port. Identical checks used
    by several services share one id and are probed once.

    ``scope`` is set only for exec checks whose command names the VIP (``{vip}`` or
    ``{vport}``): those differ per service even on the same real server.
    """

    spec: CheckSpec
    address: str  # compressed text form
    port: int
    scope: ServiceKey | None = None

    def __str__(self) -> str:
        text = f"{self.spec.kind} {format_hostport(ipaddress.ip_address(self.address), self.port)}"
        if self.scope is not None:
            text += f" for {self.scope}"
        return text


#: Where one check's state lives: (service name, real server, spec).
CheckKey = tuple[str, DestKey, CheckSpec]


def _names_vip(spec: CheckSpec) -> bool:
    options = spec.options
    if not isinstance(options, ExecOptions):
        return False
    return any("{vip}" in arg or "{vport}" in arg for arg in options.command)


def check_id(service: VirtualServiceConfig, server: RealServer, spec: CheckSpec) -> CheckId:
    """The probing identity of ``spec`` on ``server`` in ``service``."""
    port = spec.port if spec.port is not None else server.port
    scope = service.key if _names_vip(spec) else None
    return CheckId(spec=spec, address=server.key.address, port=port, scope=scope)


def check_subscriptions(config: Config) -> dict[CheckId, list[CheckKey]]:
    """Every check id of ``config`` and the (service, real server, spec) using it,
    in config order."""
    subs: dict[CheckId, list[CheckKey]] = {}
    for service in config.services:
        for server in service.real_servers:
            for spec in server.checks:
                key: CheckKey = (service.name, server.key, spec)
                subs.setdefault(check_id(service, server, spec), []).append(key)
    return subs


# --- one check -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckStatus:
    """The state of one check of one real server.

    ``alpha``: never been up yet, so one success brings it up (keepalived's alpha).
    ``provisional``: adopted from the kernel at start, so the first result decides.
    ``since`` is when ``up`` last changed (or when the state was created).
    """

    up: bool
    since: float
    alpha: bool = False
    provisional: bool = False
    successes: int = 0  # consecutive
    failures: int = 0  # consecutive
    last_ok: bool | None = None  # None: no result yet
    last_at: float | None = None
    detail: str = ""
    reason: str = ""
    weight: int | None = None  # latest dynamic weight (agent: a percentage; None: none)
    drain: bool = False
    total: int = 0
    total_failures: int = 0

    @classmethod
    def initial(cls, state: InitialState, now: float, *, adopted: bool = False) -> CheckStatus:
        """A check that has not been probed yet."""
        if adopted:
            return cls(up=True, since=now, provisional=True, detail="adopted from the kernel")
        if state is InitialState.UP:
            return cls(up=True, since=now, detail="initial state up")
        return cls(up=False, since=now, alpha=True, detail="not checked yet")

    def __str__(self) -> str:
        state = "up" if self.up else "down"
        return f"{state} ({self.detail})" if self.detail else state


def step(status: CheckStatus, result: ResultLike, spec: CheckSpec, now: float) -> CheckStatus:
    """The next state of a check after ``result``: rise/fall hysteresis.

    Up goes down after ``spec.fall`` consecutive failures, down goes up after
    ``spec.rise`` consecutive successes. Exceptions: a check that was never up goes
    up on its first success, and an adopted one takes its first result as is.
    A ``local`` result (lvsd's own trouble, :data:`LOCAL`) changes nothing.
    """
    if result.reason == LOCAL:
        return status
    ok = result.ok
    successes = status.successes + 1 if ok else 0
    failures = 0 if ok else status.failures + 1
    if status.provisional:
        up = ok
    elif status.up:
        up = failures < spec.fall
    elif ok and status.alpha:
        up = True
    else:
        up = successes >= spec.rise
    # A dynamic weight of None is "no opinion": the last opinion stands.
    weight = result.weight if result.weight is not None else status.weight
    # A failure that does not take the server down yet lifts no drain (its agent said
    # drain; one missed answer must not send it new connections meanwhile).
    drain = result.drain if ok or not up else status.drain
    return CheckStatus(
        up=up,
        since=now if up != status.up else status.since,
        alpha=status.alpha and not up,
        provisional=False,
        successes=successes,
        failures=failures,
        last_ok=ok,
        last_at=now,
        detail=result.detail,
        reason=result.reason,
        weight=weight,
        drain=drain,
        total=status.total + 1,
        total_failures=status.total_failures + (0 if ok else 1),
    )


# --- the deciding check ----------------------------------------------------------------


def cause(
    checks: Sequence[tuple[CheckSpec, CheckStatus]], up: bool
) -> tuple[str, str, CheckSpec | None]:
    """The reason word, detail and check that explain a real server being ``up`` (or
    down), for its transitions and its status.

    The deciding check is the first that agrees with the state and has a result; for
    a down, a down check with no result yet counts too (it alone keeps the server
    down). Failing that, the first up check (an up with no result yet: initial state
    up, adopted). A check with no reason word of its own gives ``ok`` for an up,
    ``error`` for a down and ``pending`` for a down not checked yet.
    """
    for spec, status in checks:
        if status.up == up and (not up or status.last_at is not None):
            return (status.reason or _reason(status, up), f"{spec}: {status.detail}", spec)
    if up:
        for spec, status in checks:
            if status.up:
                return (status.reason or _reason(status, up), f"{spec}: {status.detail}", spec)
    return ("ok" if up else "error", "" if checks else "no checks", None)


def _reason(status: CheckStatus, up: bool) -> str:
    """The reason word of a check that has none of its own."""
    if up:
        return "ok"
    return "error" if status.last_at is not None else "pending"
