"""The daemon's decisions, without the loop: health results in, kernel ops out.

:class:`Engine` holds one config, its :class:`~lvsd.health.state.HealthState`, the operator's
drains, the destinations lingering at weight 0 (``lvsd.engine.linger``) and a
:class:`~lvsd.engine.kernel.KernelView` (the kernel table cached: the last dump plus every
op applied since). Every path that may change the kernel goes through
:meth:`Engine.reconcile`, under one lock:

* a batch of probe results (:meth:`Engine.results`) plans against the cache, so a
  health change costs no dump;
* drift repair (:meth:`Engine.repair`) writes what is due, then dumps and logs what
  it still finds different as ``drift.repaired``;
* a reload (:meth:`Engine.reload`) validates the new config completely, rebases the
  health, drains removed real servers, then plans against a fresh dump;
* a failed op or netlink error marks the cache stale: the next reconcile dumps.

What a health report turns into (logs, metrics hooks, quorum commands) is
``lvsd.engine.announce``'s. The engine owns no event loop and reads no clock of its
own: ``clock`` is injected. The daemon (``lvsd.daemon.lifecycle``) wires it to the
scheduler, signals and sockets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import structlog

from lvsd.checks.base import ProbeResult
from lvsd.config.model import Config
from lvsd.desired import Overrides, ServerHealth, desired_table
from lvsd.engine import linger, timeouts
from lvsd.engine.announce import Announcer, CommandRunner, Hooks, NullHooks
from lvsd.engine.drains import DrainStore
from lvsd.engine.guard import too_destructive
from lvsd.engine.kernel import KernelView
from lvsd.engine.notify import Notifier
from lvsd.errors import ConfigError, LvsdError
from lvsd.health.check import CheckId
from lvsd.health.state import HealthState, Report
from lvsd.ipvs.base import Backend, Timeouts
from lvsd.model import (
    ApplyResult,
    Destination,
    DestKey,
    Op,
    RealServerId,
    ServiceKey,
    Snapshot,
    Table,
    VirtualService,
)
from lvsd.plan import plan

log = structlog.get_logger("lvsd.engine.reconcile")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadResult:
    """What a reload did: the ops applied (or that failed), or the config's problems."""

    ok: bool
    ops: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    lingering: tuple[str, ...] = ()
    #: ``[daemon]`` settings that changed but take effect only at the next start.
    restart_needed: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "reloaded": self.ok,
            "ops": list(self.ops),
            "failed": list(self.failed),
            "errors": list(self.errors),
            "lingering": list(self.lingering),
            "restart_needed": list(self.restart_needed),
        }


@dataclass(frozen=True, slots=True)
class _Inputs:
    """What a desired table is computed from."""

    config: Config
    health: Mapping[RealServerId, ServerHealth]
    overrides: Overrides


def _changed_services(old: _Inputs, new: _Inputs) -> set[str] | None:
    """Names of the services whose desired entry may differ between ``old`` and
    ``new``; None when everything must be recomputed (another config, lingering)."""
    if old.config is not new.config or old.overrides.lingering != new.overrides.lingering:
        return None
    if old.health.keys() != new.health.keys():
        return None
    names = {name for name, _ in old.overrides.drained ^ new.overrides.drained}
    names |= old.overrides.quorum_lost ^ new.overrides.quorum_lost
    names |= {rs[0] for rs, h in new.health.items() if old.health[rs] != h}
    return names


class _Planning(NamedTuple):
    """What ``plan`` is given."""

    current: Table
    desired: dict[ServiceKey, VirtualService]
    managed: Collection[ServiceKey]


#: Check kinds whose results carry a weight or a drain flag (the table may change
#: without an up/down transition).
_WEIGHING_KINDS = frozenset({"exec", "agent"})


def _weighs(cid: CheckId, result: ProbeResult) -> bool:
    return cid.spec.kind in _WEIGHING_KINDS or result.weight is not None or result.drain


def adoptable(config: Config, table: Table) -> frozenset[RealServerId]:
    """Configured real servers found in ``table`` with weight > 0."""
    found: set[RealServerId] = set()
    for svc in config.services:
        vs = table.get(svc.key)
        if vs is None:
            continue
        for rs in svc.real_servers:
            dest = vs.destinations.get(rs.key)
            if dest is not None and dest.weight > 0:
                found.add((svc.name, rs.key))
    return frozenset(found)


class Engine:
    """One config's health and kernel table. Create with :meth:`start`."""

    def __init__(
        self,
        config: Config,
        backend: Backend,
        *,
        clock: Callable[[], float],
        drains: DrainStore | None = None,
        hooks: Hooks | None = None,
        run_command: CommandRunner | None = None,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.clock = clock
        self.wall_clock = wall_clock or time.time
        self.hooks: Hooks = hooks or NullHooks()
        self.drains = drains
        self.drained: frozenset[RealServerId] = (
            drains.recover() if drains is not None else frozenset()
        )
        if drains is not None and drains.set_aside is not None:
            self.hooks.state_set_aside(drains.path.name)
        self.health = HealthState()
        #: Destinations kept at weight 0 until their connections end.
        self.lingering: linger.LingeringTable = {}
        self.retiring: frozenset[ServiceKey] = frozenset()
        self.kernel = KernelView(backend, self.hooks, clock)
        self._announcer = Announcer(
            self.hooks, run_command, max_notify=config.daemon.max_notify_commands
        )
        self._lock = asyncio.Lock()
        #: What the last successful reconcile was computed from (None: plan it all).
        self._basis: _Inputs | None = None
        #: How many health reports had a change (transitions, quorum, panic).
        self.changes = 0
        #: The kernel's connection timeouts as last read or set (None: unknown).
        self.timeouts: Timeouts | None = None

    # -- start ---------------------------------------------------------------------------

    async def start(self) -> ApplyResult:
        """Dump, adopt what the kernel already runs, build the health, first reconcile."""
        now = self.clock()
        snapshot = await self.kernel.dump()
        adopt = adoptable(self.config, snapshot.table) if self.config.daemon.adopt_up else ()
        self.health = HealthState.from_config(self.config, now, adopt=adopt)
        for svc in self.config.services:
            for rs in svc.real_servers:
                if (svc.name, rs.key) in adopt:
                    log.info("realserver.adopted", service=svc.name, realserver=str(rs.key))
        async with self._lock:
            result = await self._reconcile_locked(fresh=False)
            await self._keep_timeouts(repair=False)
            return result

    async def _keep_timeouts(self, *, repair: bool) -> None:
        """Set the configured connection timeouts the kernel lacks; what drift repair
        finds changed is logged ``drift.repaired`` and counted."""
        self.timeouts, replaced = await timeouts.enforce(self.backend, self.config.ipvs)
        if replaced is None:
            return
        if repair:
            log.warning("drift.repaired", op=f"set-timeouts {self.timeouts} (was {replaced})")
            self.hooks.drift_repair(1)
        else:
            log.info("timeouts.set", timeouts=str(self.timeouts), was=str(replaced))

    # -- reading -------------------------------------------------------------------------

    @property
    def notifier(self) -> Notifier:
        """The notify commands waiting and running (``lvsd.engine.notify``)."""
        return self._announcer.notifier

    @property
    def managed(self) -> frozenset[ServiceKey]:
        return frozenset(s.key for s in self.config.services) | self.retiring

    @property
    def table(self) -> Table | None:
        """The cached kernel table (last dump plus applied ops)."""
        return self.kernel.table

    @property
    def stale(self) -> bool:
        """True when the cached table cannot be trusted (a failure since the last dump)."""
        return self.kernel.stale

    def retry_due(self) -> bool:
        """True when the timer should reconcile: a stale cache, or a refused op's retry."""
        return self.kernel.retry_due()

    @property
    def snapshot(self) -> Snapshot | None:
        """The last dump."""
        return self.kernel.snapshot

    @property
    def applying_since(self) -> float | None:
        """Clock time an apply started, while one runs (for the watchdog)."""
        return self.kernel.applying_since

    @property
    def applies(self) -> int:
        """How many applies were issued (each one or more ops)."""
        return self.kernel.applies

    def overrides(self) -> Overrides:
        return Overrides(
            drained=self.drained,
            lingering=linger.destinations(self.lingering),
            quorum_lost=self.health.quorum_lost(),
        )

    def desired(self, now: float) -> dict[ServiceKey, VirtualService]:
        return desired_table(self.config, self.health.server_health(now), self.overrides())

    def ramping(self, now: float) -> bool:
        """True while some up real server has not reached its full weight by slow start."""
        if all(svc.slow_start <= 0 for svc in self.config.services):
            return False
        return any(s.up and s.factors.ramp < 1.0 for s in self.health.status(now) if not s.held)

    def summary(self) -> str:
        """``2 services, 5/6 real servers up`` (for systemd's STATUS)."""
        statuses = self.health.status(self.clock())
        up = sum(1 for s in statuses if s.up and (s.service, s.realserver) not in self.drained)
        n = len(self.config.services)
        return f"{n} service{'s' if n != 1 else ''}, {up}/{len(statuses)} real servers up"

    # -- health --------------------------------------------------------------------------

    async def results(self, batch: Iterable[tuple[CheckId, ProbeResult]]) -> ApplyResult:
        """Feed one round of probe results, then reconcile if anything changed."""
        batch = list(batch)
        now = self.clock()
        for cid, result in batch:
            self.hooks.probe(cid.spec.kind, result)
        report = self.health.round(batch, now)
        self.handle(report)
        if not report and not self.kernel.stale and not any(_weighs(c, r) for c, r in batch):
            return ApplyResult()  # counters moved, nothing that decides the table did
        return await self.reconcile()

    async def tick(self) -> ApplyResult:
        """Time passes: slow-start weights grow, quorum may follow."""
        self.handle(self.health.tick(self.clock()))
        return await self.reconcile()

    def handle(self, report: Report) -> None:
        """Count a report with changes; log them, feed the metrics, run quorum commands."""
        if report:
            self.changes += 1
        self._announcer.report(report, self.config)

    # -- kernel --------------------------------------------------------------------------

    async def refresh(self) -> Snapshot:
        """A fresh dump into the cache (for connection counts)."""
        async with self._lock:
            return await self.kernel.dump()

    async def counters(self) -> Snapshot:
        """A fresh dump for a scrape: outside the lock, so that a slow scrape never
        holds back the write of a health change, and not into the cache, which only
        the lock's holders change."""
        return await self.kernel.counters()

    async def reconcile(self, *, fresh: bool = False) -> ApplyResult:
        """Make the kernel match the desired table. Without ``fresh`` the cached table
        is the current one (no dump) unless a previous failure made it stale; nothing
        is written when the desired table did not change since the last success."""
        async with self._lock:
            return await self._reconcile_locked(fresh=fresh)

    async def _reconcile_locked(
        self, *, fresh: bool, also: frozenset[str] = frozenset()
    ) -> ApplyResult:
        """Reconcile under the lock. ``also``: services to replan besides those whose
        inputs changed (a reload's changed services, when the basis was carried over
        to the new config).

        A sorry server the plan would delete while it serves lingers at weight 0
        instead, as a real server removed by a reload does: the requests it is
        answering finish; it leaves once its connections have ended
        (``check_lingering``). The lingering changed, so the whole table is planned."""
        inputs = self._inputs()
        names = self._changed(inputs, fresh=fresh)
        if names is None:
            kernel = self.kernel
            dump = fresh or kernel.stale or kernel.table is None
            if dump and await kernel.try_dump() is None:
                return ApplyResult()
            planning = self._whole(inputs)
        else:
            names |= also
            if not names:
                return ApplyResult()
            planning = self._some(names, inputs)
        while leaving := linger.sorry_leaving(self.config, planning.current, planning.desired):
            self._linger_sorry(leaving)
            inputs = self._inputs()
            planning = self._whole(inputs)
        ops = plan(planning.current, planning.desired, planning.managed)
        if names is None:
            self.kernel.forget_except(ops)
        return await self._apply_planned(ops, inputs)

    def _inputs(self) -> _Inputs:
        health = self.health.server_health(self.clock())
        return _Inputs(config=self.config, health=health, overrides=self.overrides())

    def _changed(self, inputs: _Inputs, *, fresh: bool) -> set[str] | None:
        """The services whose inputs changed since the basis, when the cache can be
        planned against service by service; None to plan the whole table."""
        kernel = self.kernel
        if fresh or kernel.stale or kernel.table is None or self._basis is None:
            return None
        return _changed_services(self._basis, inputs)

    def _whole(self, inputs: _Inputs) -> _Planning:
        desired = desired_table(self.config, inputs.health, inputs.overrides)
        return _Planning(self.kernel.table or {}, desired, self.managed)

    def _some(self, names: set[str], inputs: _Inputs) -> _Planning:
        """Only the services in ``names``: desired_table and plan cost grow with the
        table, a health change touches one service."""
        services = tuple(s for s in self.config.services if s.name in names)
        desired = desired_table(
            replace(self.config, services=services), inputs.health, inputs.overrides
        )
        table = self.kernel.table or {}
        return _Planning({k: table[k] for k in desired if k in table}, desired, desired.keys())

    async def _apply_planned(self, ops: Sequence[Op], inputs: _Inputs) -> ApplyResult:
        """Apply ``ops``; remember ``inputs`` as the table's basis when all went in."""
        result = await self.kernel.apply(ops)
        if result.failed:
            self._basis = None
        else:
            self._basis = inputs
            self.retiring = frozenset(k for k in self.retiring if k in (self.kernel.table or {}))
        return result

    async def repair(self) -> ApplyResult:
        """Drift repair: a fresh dump, plan, apply; log ``drift.repaired`` per op.

        What is due anyway (a slow-start step, a lingering server whose time is up) is
        written first against the cache, as a tick would: only what the dump then finds
        different from what lvsd wrote is drift."""
        async with self._lock:
            self._expire_lingering(None)
            await self._reconcile_locked(fresh=False)
            result = await self._reconcile_locked(fresh=True)
            await self._keep_timeouts(repair=True)
        ops = [*result.applied, *(op for op, _ in result.failed)]
        for op in ops:
            log.warning("drift.repaired", op=str(op))
        if ops:
            self.hooks.drift_repair(len(ops))
        return result

    # -- lingering real servers (removed by a reload) and sorry servers ------------------

    def _linger_sorry(self, leaving: Sequence[tuple[ServiceKey, Destination]]) -> None:
        """The sorry servers of ``leaving`` linger from now on, until the drain timeout."""
        deadline = self.clock() + self.config.daemon.drain_timeout
        self.lingering = linger.linger(self.lingering, leaving, deadline)
        for key, dest in leaving:
            log.info("sorry_server.leaving", **self._service_fields(key), server=str(dest.key))

    def _service_fields(self, key: ServiceKey) -> dict[str, str]:
        """A log event's ``service`` (the name, when the config still has the service)
        and ``vip`` (the key, ``tcp 192.168.3.108:80``): see ``lvsd.log``."""
        names = [s.name for s in self.config.services if s.key == key]
        return {"service": names[0], "vip": str(key)} if names else {"vip": str(key)}

    def _expire_lingering(self, snapshot: Snapshot | None) -> bool:
        """Drop lingering entries whose connections are gone (per ``snapshot``, the
        last dump when None) or whose deadline passed. True when some were."""
        if snapshot is None:
            snapshot = self.kernel.snapshot
        self.lingering, removed = linger.expire(self.lingering, snapshot, self.clock())
        for r in removed:
            log.info(
                "realserver.removed",
                **self._service_fields(r.service),
                realserver=str(r.realserver),
                reason=r.reason,
                active=r.active,
            )
        return bool(removed)

    async def check_lingering(self) -> ApplyResult:
        """Dump, drop drained lingering servers, reconcile (deletes them)."""
        if not self.lingering:
            return ApplyResult()
        async with self._lock:
            snapshot = await self.kernel.try_dump()
            if snapshot is None or not self._expire_lingering(snapshot):
                return ApplyResult()
            return await self._reconcile_locked(fresh=False)

    # -- reload --------------------------------------------------------------------------

    async def reload(
        self, load: Callable[[], Config], *, max_removed: float | None = None
    ) -> ReloadResult:
        """Load a new config with ``load`` (in a thread: probes run on meanwhile); on
        success move to it and apply only the difference. A bad config, any error while
        loading, or a reload removing more than ``max_removed`` (the guard, when given)
        changes nothing and says why."""
        try:
            new = await asyncio.to_thread(load)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload.problem", problem=str(problem))
            return self._refused("failure", tuple(str(p) for p in exc.problems))
        except Exception as exc:  # a bug or the host's trouble: never a dead daemon
            log.exception("reload.error")
            return self._refused("failure", (f"{type(exc).__name__}: {exc}",))
        why = None if max_removed is None else too_destructive(self.config, new, max_removed)
        if why is not None:
            message = f"reload refused: {why}; `lvsd reload --force` applies it"
            return self._refused("refused", (message,))
        async with self._lock:
            result = await self._switch(new)
        self.hooks.reload("success" if result.ok else "failure", self.wall_clock())
        log.info(
            "reload.done",
            ops=len(result.ops),
            failed=len(result.failed),
            lingering=len(result.lingering),
        )
        return result

    def _refused(self, result: str, errors: tuple[str, ...]) -> ReloadResult:
        """A reload that changes nothing: counted, logged, the old config kept."""
        event = "reload.refused" if result == "refused" else "reload.failed"
        log.error(event, problems=len(errors), errors=list(errors))
        self.hooks.reload(result, self.wall_clock())
        return ReloadResult(ok=False, errors=errors)

    def _reload_keys(self, new: Config) -> frozenset[ServiceKey]:
        """The services a reload to ``new`` must read afresh: those added, removed or
        changed in any way, those retiring, and those with lingering real servers."""
        old_services = {s.key: s for s in self.config.services}
        keys = {s.key for s in new.services if old_services.get(s.key) != s}
        keys |= old_services.keys() - {s.key for s in new.services}
        return frozenset(keys | self.retiring | self.lingering.keys())

    async def _switch(self, new: Config) -> ReloadResult:
        """Move to ``new`` under the lock: read the kernel (the changed services only
        when it can), linger removed real servers, rebase the health, reconcile."""
        now = self.clock()
        old, basis = self.config, self._basis
        keys = self._reload_keys(new)
        snapshot = await self.kernel.dump_some(keys)
        partial = snapshot is not None
        if snapshot is None:
            snapshot = await self.kernel.try_dump()
        table = snapshot.table if snapshot is not None else (self.kernel.table or {})
        self.lingering = linger.after_reload(self.lingering, old, new, table, now)
        new_keys = {s.key for s in new.services}
        self.retiring = (self.retiring | {s.key for s in old.services}) - new_keys
        self.config = new
        self.notifier.limit = max(1, new.daemon.max_notify_commands)
        self.handle(self.health.rebase(new, now))
        self._expire_lingering(snapshot)
        self._basis = None
        also: frozenset[str] = frozenset()
        same_services = not self.retiring and {s.key for s in old.services} == new_keys
        if partial and basis is not None and basis.config is old and same_services:
            # The same services, some edited: the last reconcile's inputs still hold
            # for the others, so only the edited ones (and any whose health or
            # overrides moved) are replanned. Anything else replans the whole table.
            self._basis = replace(basis, config=new)
            also = frozenset(s.name for s in new.services if s.key in keys)
        lingering = linger.names(self.lingering)
        result = await self._reconcile_locked(fresh=snapshot is None, also=also)
        await self._keep_timeouts(repair=False)
        return ReloadResult(
            ok=True,
            ops=tuple(str(op) for op in result.applied),
            failed=tuple(f"{op}: {err.reason}" for op, err in result.failed),
            lingering=lingering,
        )

    # -- operator drains -----------------------------------------------------------------

    def find(self, service: str, realserver: DestKey) -> RealServerId:
        """The (service, real server) of the current config; ``LvsdError`` if none."""
        svc = next((s for s in self.config.services if s.name == service), None)
        if svc is None:
            names = ", ".join(s.name for s in self.config.services) or "none"
            raise LvsdError(f"no service named {service!r} (services: {names})")
        if all(rs.key != realserver for rs in svc.real_servers):
            raise LvsdError(f"service {service!r} has no real server {realserver}")
        return (service, realserver)

    async def set_drain(self, service: str, realserver: DestKey, on: bool) -> ApplyResult:
        """Drain (weight 0, kept) or undrain one real server; persisted when a store is
        set. Returns the ops applied."""
        rs_id = self.find(service, realserver)
        if self.drains is not None:
            if on:
                self.drains.drain(service, realserver)
            else:
                self.drains.undrain(service, realserver)
        self.drained = self.drained | {rs_id} if on else self.drained - {rs_id}
        log.info(
            "realserver.drained" if on else "realserver.undrained",
            service=service,
            realserver=str(realserver),
        )
        return await self.reconcile()

    def active_connections(self, service: str, realserver: DestKey) -> int:
        svc = next(s for s in self.config.services if s.name == service)
        snapshot = self.kernel.snapshot
        if snapshot is None:
            return 0
        stats = snapshot.dest_stats.get((svc.key, realserver))
        return stats.active_connections if stats is not None else 0

    # -- stop ----------------------------------------------------------------------------

    async def remove_all(self) -> ApplyResult:
        """Delete every service lvsd manages (``remove_on_stop``)."""
        async with self._lock:
            snapshot = await self.kernel.try_dump()
            if snapshot is None:
                return ApplyResult()
            return await self.kernel.apply(plan(snapshot.table, {}, self.managed))

    async def close(self) -> None:
        """Run the stop-time notify commands (``notify.on_stop``), then cancel the
        commands still running."""
        up = [(s.service, s.realserver) for s in self.health.status(self.clock()) if s.up]
        await self._announcer.stopping(self.config, up)
        await self._announcer.close()


__all__ = ["Engine", "ReloadResult", "adoptable"]
