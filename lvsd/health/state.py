"""The health of every real server of one config: probe results in, up/down and
weights out, every change reported as a value.

Pure: no I/O, no clock reads, no asyncio. Time comes in as ``now`` (monotonic
seconds). Every probe kind feeds the same machine, so rise/fall, the initial
state, slow start, dynamic weights, drain, quorum and the panic guard are written
once (see ``docs/health.md``).

Three levels:

* a **check** (one CheckSpec of one real server of one service) has rise/fall
  hysteresis: :func:`lvsd.health.check.step`;
* a **real server** is up when all its checks are up; its weight is explained by
  :class:`lvsd.health.weight.WeightFactors` (configured x dynamic x slow-start ramp
  x drain);
* a **service** has a quorum (sum of live weights, with hysteresis) and an optional
  fail-open panic guard.

:class:`HealthState` holds all of it for one config; the daemon feeds it batches of
results with :meth:`HealthState.round` and gets every change back as a value
(:class:`Transition`, :class:`QuorumTransition`, :class:`PanicTransition`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice

from lvsd.config.model import (
    AgentOptions,
    CheckSpec,
    Config,
    ExecOptions,
    PanicGuard,
    RealServer,
    VirtualServiceConfig,
)
from lvsd.desired import ServerHealth
from lvsd.health.check import (
    CheckId,
    CheckKey,
    CheckStatus,
    ResultLike,
    cause,
    check_subscriptions,
    step,
)
from lvsd.health.weight import WeightFactors, effective_weight, percent_weight, plain_factors
from lvsd.model import DestKey, RealServerId

# --- reported changes ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """A real server went up or down in the table. The daemon logs it as the event
    ``realserver.up`` / ``realserver.down`` with the reason."""

    service: str
    realserver: DestKey
    old: bool  # was up
    new: bool  # is up
    reason: str  # a short fixed word: ok, refused, timeout, ..., panic, reload
    detail: str
    check: CheckSpec | None = None  # the check that decided, when one did
    at: float = 0.0

    @property
    def event(self) -> str:
        return "realserver.up" if self.new else "realserver.down"

    def __str__(self) -> str:
        return f"{self.event} {self.service} {self.realserver}: {self.detail}"


@dataclass(frozen=True, slots=True, kw_only=True)
class QuorumTransition:
    """A service's quorum was lost (``up`` False) or regained: run its down/up command."""

    service: str
    up: bool
    live_weight: int
    minimum: int
    at: float = 0.0

    @property
    def event(self) -> str:
        return "quorum.up" if self.up else "quorum.down"

    def __str__(self) -> str:
        return (
            f"{self.event} {self.service}: live weight {self.live_weight}, minimum {self.minimum}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PanicTransition:
    """A service entered panic (fail-open: downs held back) or left it."""

    service: str
    panic: bool
    failing: int  # real servers whose checks say down
    total: int
    held: tuple[DestKey, ...] = ()
    at: float = 0.0

    @property
    def event(self) -> str:
        return "service.panic" if self.panic else "service.panic_over"

    def __str__(self) -> str:
        return f"{self.event} {self.service}: {self.failing}/{self.total} failing"


@dataclass(frozen=True, slots=True)
class Report:
    """Everything that changed in one round (or tick, or rebase)."""

    transitions: tuple[Transition, ...] = ()
    quorum: tuple[QuorumTransition, ...] = ()
    panic: tuple[PanicTransition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.transitions or self.quorum or self.panic)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStatus:
    """One real server for ``lvsd status``: its state, weight factors and checks."""

    service: str
    realserver: DestKey
    up: bool
    since: float
    held: bool  # kept up by the panic guard although its checks say down
    factors: WeightFactors
    checks: tuple[tuple[CheckSpec, CheckStatus], ...]


class _HashedKey(tuple[str, DestKey, CheckSpec]):
    """A :data:`CheckKey` that hashes once: a CheckSpec hashes all its options, every
    time, and the status of 10,000 real servers looks up 10,000 keys. Equal to (and
    hashing like) the plain tuple, so either finds the same entry."""

    _hash: int

    def __new__(cls, key: CheckKey) -> _HashedKey:
        self = super().__new__(cls, key)
        self._hash = tuple.__hash__(self)
        return self

    def __hash__(self) -> int:
        return self._hash

    def __getnewargs__(self) -> tuple[CheckKey]:  # for copy and pickle
        return (tuple.__new__(tuple, self),)


#: One real server as :meth:`HealthState.rows` gives it: (service, realserver, up, since,
#: held, factors, checks), the fields of :class:`ServerStatus` in order.
StatusRow = tuple[
    str, DestKey, bool, float, bool, WeightFactors, tuple[tuple[CheckSpec, CheckStatus], ...]
]


# --- a real server, a service (internal) ---------------------------------------------------


@dataclass(slots=True)
class _Server:
    config: RealServer
    checks: tuple[CheckKey, ...]
    up: bool  # what the table gets
    since: float
    up_since: float | None = None  # slow-start anchor; None = no ramp
    may_ramp: bool = True  # False until the first up of a server present at start
    held: bool = False  # panic guard keeps it up
    held_weight: int = 0  # its last good weight, taken when its checks went down
    down_at: float | None = None  # when its checks last took it down (the panic window)
    max_dynamic: int | None = None


@dataclass(slots=True)
class _Service:
    config: VirtualServiceConfig
    servers: dict[DestKey, _Server] = field(default_factory=dict)
    quorum_up: bool = True
    panic: bool = False
    window: float = 0.0  # the panic guard counts the downs of this many seconds


def _panic_window(service: VirtualServiceConfig) -> float:
    """The longest check interval: the first runs of a check are spread over its
    interval, so a broken checker takes a pool down over one interval, not at once."""
    return max((c.interval for rs in service.real_servers for c in rs.checks), default=0.0)


def _max_dynamic(server: RealServer) -> int | None:
    bounds = [
        s.options.max_weight
        for s in server.checks
        if isinstance(s.options, ExecOptions) and s.options.max_weight is not None
    ]
    return max(bounds) if bounds else None


# --- the panic guard and the quorum ----------------------------------------------------------


def _panic_guard(
    service: _Service,
    moves: tuple[list[_Server], list[_Server]],
    now: float,
    panics: list[PanicTransition],
) -> tuple[list[_Server], list[_Server]]:
    """The panic guard over the servers whose checks just took them down: returns the
    servers to bring back up (held) and those to take down. ``moves`` are the ups and
    downs the checks ask for this round.

    It trips when more than its share of the pool went down within ``service.window``
    up to ``now`` (these downs included), holds those servers up at their last good
    weight, holds every further down, and lets go (the held servers then go down)
    when the share of held servers is back at or under the threshold."""
    downs = moves[1]
    guard = service.config.panic
    total = len(service.servers)
    rejoin: list[_Server] = []
    if guard is not None and total >= guard.min_servers and total > 0 and downs:
        if not service.panic:
            rejoin = _trip(service, guard, moves, now, panics)
        if service.panic:
            for server in rejoin + downs:
                server.held = True  # at its held_weight
            downs = []
    if service.panic:
        downs += _let_go(service, guard, now, panics)
    return rejoin, downs


def _trip(
    service: _Service,
    guard: PanicGuard,
    moves: tuple[list[_Server], list[_Server]],
    now: float,
    panics: list[PanicTransition],
) -> list[_Server]:
    """Enter panic if ``downs`` and the downs of the window before them are more than
    the guard's share of the pool; returns the servers of the window, which come back
    (none if the guard does not trip). Of ``moves`` (ups, downs), the ups recover on
    their own and do not count."""
    ups, downs = moves
    total = len(service.servers)
    recovering = {id(s) for s in ups}
    # Those that went down within the window and are still down count too, and come back.
    rejoin = [
        s
        for s in service.servers.values()
        if not s.up
        and s.down_at is not None
        and now - s.down_at < service.window
        and id(s) not in recovering
    ]
    failing = rejoin + downs
    if len(failing) / total <= guard.threshold:
        return []
    service.panic = True
    panics.append(
        PanicTransition(
            service=service.config.name,
            panic=True,
            failing=len(failing),
            total=total,
            held=tuple(s.config.key for s in failing),
            at=now,
        )
    )
    return rejoin


def _let_go(
    service: _Service, guard: PanicGuard | None, now: float, panics: list[PanicTransition]
) -> list[_Server]:
    """Leave panic when the share of held servers is at or under the threshold (or
    the guard no longer applies); returns the servers no longer held."""
    total = len(service.servers)
    held = [s for s in service.servers.values() if s.held]
    share = len(held) / total if total else 0.0
    if guard is not None and total >= guard.min_servers and share > guard.threshold:
        return []
    service.panic = False
    for server in held:
        server.held = False
    panics.append(
        PanicTransition(
            service=service.config.name,
            panic=False,
            failing=len(held),
            total=total,
            at=now,
        )
    )
    return held


def _quorum(service: _Service, live: int, now: float) -> QuorumTransition | None:
    """The service's quorum after its live weight is ``live``, with hysteresis: lost
    under ``minimum - hysteresis``, regained at ``minimum + hysteresis``; the change,
    if any."""
    quorum = service.config.quorum
    if quorum is None:
        return None
    if service.quorum_up and live < quorum.minimum - quorum.hysteresis:
        service.quorum_up = False
    elif not service.quorum_up and live >= quorum.minimum + quorum.hysteresis:
        service.quorum_up = True
    else:
        return None
    return QuorumTransition(
        service=service.config.name,
        up=service.quorum_up,
        live_weight=live,
        minimum=quorum.minimum,
        at=now,
    )


# --- the transitions -----------------------------------------------------------------------


def _flip(
    service: _Service,
    checks: Mapping[CheckKey, CheckStatus],
    moves: tuple[list[_Server], list[_Server], list[_Server]],
    now: float,
    forced_reason: str | None,
) -> list[Transition]:
    """Move servers in the table, in this order: those the panic guard brings back
    (``rejoin``), the ``downs``, the ``ups``; each transition says why (``forced_reason``
    replaces the checks' reason words: a reload). The ups ramp (slow start) unless
    they are the first up of a server present at start."""
    rejoin, downs, ups = moves
    name = service.config.name
    held_up = ("panic", "held up by the panic guard at its last good weight", None)
    transitions = [_transition(name, s, True, now, held_up) for s in rejoin]
    for server in downs:
        reason, detail, spec = _cause(checks, server, False)
        transitions.append(
            _transition(name, server, False, now, (forced_reason or reason, detail, spec))
        )
        server.up_since = None
        server.may_ramp = True
    for server in ups:
        reason, detail, spec = _cause(checks, server, True)
        transitions.append(
            _transition(name, server, True, now, (forced_reason or reason, detail, spec))
        )
        server.up_since = now if server.may_ramp and service.config.slow_start > 0 else None
        server.may_ramp = True
    return transitions


def _cause(
    checks: Mapping[CheckKey, CheckStatus], server: _Server, up: bool
) -> tuple[str, str, CheckSpec | None]:
    """The reason, detail and check that explain a server's new state."""
    return cause([(k[2], checks[k]) for k in server.checks], up)


def _transition(
    service: str,
    server: _Server,
    up: bool,
    now: float,
    why: tuple[str, str, CheckSpec | None],
) -> Transition:
    """Move ``server`` to ``up`` in the table; ``why`` is the reason, detail and check."""
    server.up = up
    server.since = now
    reason, detail, spec = why
    return Transition(
        service=service,
        realserver=server.config.key,
        old=not up,
        new=up,
        reason=reason,
        detail=detail,
        check=spec,
        at=now,
    )


# --- the whole config ------------------------------------------------------------------------


class HealthState:
    """The health of every real server of one config. Not thread-safe; one owner."""

    def __init__(self) -> None:
        self._services: dict[str, _Service] = {}
        self._checks: dict[CheckKey, CheckStatus] = {}
        self._subs: dict[CheckId, list[CheckKey]] = {}

    # -- building ------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, config: Config, now: float, *, adopt: Iterable[RealServerId] = ()
    ) -> HealthState:
        """The state at daemon start. Real servers in ``adopt`` (found in the kernel
        with weight > 0) count as up until their first probe result. Servers that start
        up do not ramp; neither does the first up of a server that starts down."""
        state = cls()
        adopted = frozenset(adopt)
        state._build(config, now, adopted=adopted, old=None)
        return state

    def _build(
        self,
        config: Config,
        now: float,
        *,
        adopted: frozenset[RealServerId],
        old: HealthState | None,
    ) -> None:
        self._subs = check_subscriptions(config)
        for svc in config.services:
            prev_svc = old._services.get(svc.name) if old is not None else None
            service = _Service(config=svc, window=_panic_window(svc))
            if prev_svc is not None:
                service.quorum_up = prev_svc.quorum_up
                service.panic = prev_svc.panic
            for rs in svc.real_servers:
                ref: RealServerId = (svc.name, rs.key)
                keys = tuple(_HashedKey((svc.name, rs.key, spec)) for spec in rs.checks)
                for key in keys:
                    kept = old._checks.get(key) if old is not None else None
                    if kept is None:
                        kept = CheckStatus.initial(svc.initial_state, now, adopted=ref in adopted)
                    self._checks[key] = kept
                prev = prev_svc.servers.get(rs.key) if prev_svc is not None else None
                if prev is not None:
                    server = replace(prev, config=rs, checks=keys, max_dynamic=_max_dynamic(rs))
                else:
                    up = all(self._checks[k].up for k in keys)
                    server = _Server(
                        config=rs,
                        checks=keys,
                        up=up,
                        since=now,
                        may_ramp=old is not None,
                        max_dynamic=_max_dynamic(rs),
                    )
                    if up and old is not None and svc.slow_start > 0:
                        server.up_since = now
                service.servers[rs.key] = server
            if prev_svc is None and svc.quorum is not None:
                service.quorum_up = self._live_weight(service, now) >= svc.quorum.minimum
            self._services[svc.name] = service

    def rebase(self, config: Config, now: float) -> Report:
        """Move to a reloaded config. State is keyed by (service name, real server,
        CheckSpec): unchanged keys keep their state, new ones start in the configured
        initial state, removed ones are dropped. A real server kept by the reload keeps
        its up/down state unless its set of checks now says otherwise (reported with
        reason ``reload``). Real servers added by a reload ramp up like any server
        coming up."""
        old = HealthState()
        old._services, old._checks = self._services, self._checks
        self._services, self._checks = {}, {}
        self._build(config, now, adopted=frozenset(), old=old)
        transitions: list[Transition] = []
        panics: list[PanicTransition] = []
        for service in self._services.values():
            transitions += self._decide(service, list(service.servers), now, panics, "reload")
        quorum = [q for s in self._services.values() if (q := self._evaluate_quorum(s, now))]
        return Report(tuple(transitions), tuple(quorum), tuple(panics))

    # -- feeding results -----------------------------------------------------------------

    def check_ids(self) -> Mapping[CheckId, Sequence[CheckKey]]:
        """Every check to probe, and who uses it."""
        return self._subs

    def observe(self, check: CheckId, result: ResultLike, now: float) -> Report:
        """One result on its own: a round of one."""
        return self.round([(check, result)], now)

    def round(self, results: Iterable[tuple[CheckId, ResultLike]], now: float) -> Report:
        """Apply a batch of results processed together. The panic guard counts the
        downs of this round and of the service's longest check interval before it
        against the size of the pool."""
        touched: dict[str, dict[DestKey, None]] = {}
        for check, result in results:
            for key in self._subs.get(check, ()):
                name, dest, spec = key
                self._checks[key] = step(self._checks[key], result, spec, now)
                touched.setdefault(name, {})[dest] = None
        transitions: list[Transition] = []
        panics: list[PanicTransition] = []
        quorum: list[QuorumTransition] = []
        for name, dests in touched.items():
            service = self._services[name]
            transitions += self._decide(service, list(dests), now, panics, None)
            if (q := self._evaluate_quorum(service, now)) is not None:
                quorum.append(q)
        return Report(tuple(transitions), tuple(quorum), tuple(panics))

    def tick(self, now: float) -> Report:
        """Re-evaluate what changes with time alone (quorum as slow-start weights grow)."""
        quorum = [q for s in self._services.values() if (q := self._evaluate_quorum(s, now))]
        return Report(quorum=tuple(quorum))

    # -- deciding ------------------------------------------------------------------------

    def _checks_up(self, server: _Server) -> bool:
        return all(self._checks[k].up for k in server.checks)

    def _decide(
        self,
        service: _Service,
        dests: list[DestKey],
        now: float,
        panics: list[PanicTransition],
        forced_reason: str | None,
    ) -> list[Transition]:
        """Bring the table view of ``dests`` in line with their checks, through the
        panic guard (which reports to ``panics``): classify, guard, flip."""
        ups, downs = self._classify(service, dests, now)
        rejoin, downs = _panic_guard(service, (ups, downs), now, panics)
        return _flip(service, self._checks, (rejoin, downs, ups), now, forced_reason)

    def _classify(
        self, service: _Service, dests: list[DestKey], now: float
    ) -> tuple[list[_Server], list[_Server]]:
        """The servers of ``dests`` whose checks now say up, and those whose checks
        now say down (their last good weight and the time kept for the panic guard);
        a held server whose checks recovered is simply no longer held."""
        ups: list[_Server] = []
        downs: list[_Server] = []
        for dest in dests:
            server = service.servers[dest]
            checks_up = self._checks_up(server)
            if server.held and checks_up:
                server.held = False  # recovered while held: it never went down
            elif checks_up and not server.up:
                ups.append(server)
            elif not checks_up and server.up and not server.held:
                server.held_weight = self._weight(service, server, now).effective
                server.down_at = now
                downs.append(server)
        return ups, downs

    def _weight(self, service: _Service, server: _Server, now: float) -> WeightFactors:
        dynamic: int | None = None
        drain = False
        for key in server.checks:
            status = self._checks[key]
            weight = status.weight
            if weight is not None:
                if isinstance(key[2].options, AgentOptions):  # a percentage
                    weight = percent_weight(weight, server.config.weight)
                dynamic = weight if dynamic is None else min(dynamic, weight)
            drain = drain or status.drain
        return effective_weight(
            server.config.weight,
            dynamic=dynamic,
            max_dynamic=server.max_dynamic,
            up_since=server.up_since,
            slow_start=service.config.slow_start,
            drain=drain,
            now=now,
        )

    def _table_weight(self, service: _Service, server: _Server, now: float) -> int:
        if not server.up:
            return 0
        if server.held:
            return server.held_weight
        return self._weight(service, server, now).effective

    def _live_weight(self, service: _Service, now: float) -> int:
        return sum(self._table_weight(service, s, now) for s in service.servers.values())

    def _evaluate_quorum(self, service: _Service, now: float) -> QuorumTransition | None:
        if service.config.quorum is None:
            return None
        return _quorum(service, self._live_weight(service, now), now)

    # -- reading -------------------------------------------------------------------------

    def server_health(self, now: float) -> Mapping[RealServerId, ServerHealth]:
        """What ``lvsd.desired.desired_table`` needs: up and weight per real server
        (weight 0 when down)."""
        return {
            (name, dest): ServerHealth(
                up=server.up, weight=self._table_weight(service, server, now)
            )
            for name, service in self._services.items()
            for dest, server in service.servers.items()
        }

    def explain(self, service: str, realserver: DestKey, now: float) -> WeightFactors:
        """The factors of a real server's weight (raises KeyError for an unknown one)."""
        svc = self._services[service]
        return self._factors(svc, svc.servers[realserver], now)

    def _factors(self, service: _Service, server: _Server, now: float) -> WeightFactors:
        if server.held:
            return WeightFactors(configured=server.config.weight, effective=server.held_weight)
        checks = self._checks
        for key in server.checks:
            status = checks[key]
            if status.weight is not None or status.drain:
                return self._weight(service, server, now)
        slow_start = service.config.slow_start
        if server.up_since is not None and slow_start > 0 and now - server.up_since < slow_start:
            return self._weight(service, server, now)
        # No dynamic weight, drain or ramp: the same factors for every server of a
        # weight (shared: they are frozen), which spares a scrape 10,000 objects.
        return plain_factors(server.config.weight)

    def rows(self, now: float) -> list[StatusRow]:
        """What :meth:`status` says, as plain tuples (no object per real server; the
        scrape path of ``lvsd.observe.status`` reads these): every real server in config order
        as (service, realserver, up, since, held, factors, checks)."""
        return [row for name in self._services for row in self.service_rows(name, now)]

    def service_rows(
        self, service: str, now: float, start: int = 0, stop: int | None = None
    ) -> list[StatusRow]:
        """:meth:`rows` of one service (none for an unknown one), in config order;
        only its real servers ``start`` to ``stop`` (a slice) if given."""
        svc = self._services.get(service)
        if svc is None:
            return []
        servers = svc.servers.items()
        # islice, not a list: a service of 10,000 real servers is read in 250 slices
        items = servers if start == 0 and stop is None else islice(servers, start, stop)
        checks = self._checks
        factors = self._factors
        return [
            (
                service,
                dest,
                server.up,
                server.since,
                server.held,
                factors(svc, server, now),
                tuple([(k[2], checks[k]) for k in server.checks]),
            )
            for dest, server in items
        ]

    def status(self, now: float) -> list[ServerStatus]:
        """Every real server with its factors and checks, in config order."""
        return [
            ServerStatus(
                service=name, realserver=dest, up=up, since=since, held=held, factors=f, checks=c
            )
            for name, dest, up, since, held, f, c in self.rows(now)
        ]

    def check_status(self, key: CheckKey) -> CheckStatus:
        return self._checks[key]

    def quorum_lost(self) -> frozenset[str]:
        """Services (by name) whose quorum is lost."""
        return frozenset(n for n, s in self._services.items() if not s.quorum_up)

    def panicking(self) -> frozenset[str]:
        """Services (by name) where the panic guard holds downs back."""
        return frozenset(n for n, s in self._services.items() if s.panic)
