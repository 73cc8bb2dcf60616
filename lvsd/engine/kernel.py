"""The kernel table as the engine knows it: the last dump plus every op applied since.

:class:`KernelView` wraps a :class:`~lvsd.ipvs.base.Backend`: it dumps (the whole
table, or some services only when the backend is a :class:`PartialDump`), applies ops
and plays the applied ones on its cached table, so a health change plans against the
cache and costs no dump. A netlink error or a failed op marks the cache ``stale``: the
next reconcile dumps. Every dump and op is counted in the hooks; a failed dump is
logged here as ``kernel.dump_failed``. Its callers hold the engine's lock, except for
:meth:`KernelView.counters`, which leaves the cache alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Protocol, runtime_checkable

import structlog

from lvsd.engine.announce import Hooks
from lvsd.errors import IpvsError
from lvsd.ipvs.base import Backend
from lvsd.model import ApplyResult, Op, ServiceKey, Snapshot, Table
from lvsd.plan import apply_ops

log = structlog.get_logger(__name__)


@runtime_checkable
class PartialDump(Protocol):
    """A backend that can dump the destinations of some services only
    (``NetlinkBackend.dump_services``): every service's key in ``service_stats``,
    ``table`` and ``dest_stats`` for the services in ``keys``."""

    async def dump_services(self, keys: Collection[ServiceKey]) -> Snapshot: ...


class KernelView:
    """A backend with a cache of its table; ``stale`` until the first dump."""

    def __init__(self, backend: Backend, hooks: Hooks, clock: Callable[[], float]) -> None:
        self.backend = backend
        self.hooks = hooks
        self.clock = clock
        #: The cached kernel table (last dump plus applied ops).
        self.table: Table | None = None
        #: The last dump (its counters: active connections of lingering servers).
        self.snapshot: Snapshot | None = None
        #: True when the cached table cannot be trusted (a failure since the last dump).
        self.stale = True
        #: Clock time an apply started, while one runs (for the watchdog).
        self.applying_since: float | None = None
        #: How many applies were issued (each one or more ops).
        self.applies = 0

    # -- dumps ---------------------------------------------------------------------------

    async def _counted(self, dump: Callable[[], Awaitable[Snapshot]]) -> Snapshot:
        try:
            snapshot = await dump()
        except IpvsError:
            self.hooks.netlink("dump", False)
            raise
        self.hooks.netlink("dump", True)
        return snapshot

    async def counters(self) -> Snapshot:
        """A fresh dump, not into the cache (a scrape's: it runs outside the lock)."""
        return await self._counted(self.backend.dump)

    async def dump(self) -> Snapshot:
        """A fresh dump into the cache; ``IpvsError`` (the cache is then stale)."""
        try:
            snapshot = await self.counters()
        except IpvsError:
            self.stale = True
            raise
        self.snapshot = snapshot
        self.table = snapshot.table
        self.stale = False
        return snapshot

    async def try_dump(self) -> Snapshot | None:
        """:meth:`dump`, or None once the failure is logged."""
        try:
            return await self.dump()
        except IpvsError as exc:
            _dump_failed(exc)
            return None

    async def dump_some(self, keys: Collection[ServiceKey]) -> Snapshot | None:
        """The cached table with the services in ``keys`` dumped afresh, when the
        backend can do that and the cache is trusted; None otherwise (dump it all).

        A cheap check guards the rest of the cache: the kernel's list of services
        (outside ``keys``) must be the cached one. Destinations of the other services
        are taken from the cache, as for a health change; drift there is the periodic
        repair's (a full dump)."""
        backend = self.backend
        if self.stale or self.table is None or self.snapshot is None:
            return None
        if not isinstance(backend, PartialDump):
            return None
        try:
            part = await self._counted(lambda: backend.dump_services(keys))
        except IpvsError as exc:
            _dump_failed(exc)
            return None
        if part.service_stats.keys() - keys != self.table.keys() - keys:
            log.info("reload.full_dump", reason="services changed outside lvsd")
            return None
        table = {k: vs for k, vs in self.table.items() if k not in keys}
        table.update(part.table)
        dest_stats = {k: v for k, v in self.snapshot.dest_stats.items() if k[0] not in keys}
        dest_stats.update(part.dest_stats)
        snapshot = Snapshot(table=table, service_stats=part.service_stats, dest_stats=dest_stats)
        self.snapshot = snapshot
        self.table = table
        return snapshot

    # -- apply ---------------------------------------------------------------------------

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        """Apply ``ops``, log and count each one, and play the applied ones on the
        cached table."""
        if not ops:
            return ApplyResult()
        self.applying_since = self.clock()
        self.applies += 1
        try:
            result = await self.backend.apply(ops)
        except IpvsError as exc:
            log.error("kernel.apply_failed", error=str(exc), ops=len(ops))
            self.hooks.netlink("apply", False)
            self.stale = True
            return ApplyResult(failed=tuple((op, exc) for op in ops))
        finally:
            self.applying_since = None
        for op in result.applied:
            self.hooks.netlink(str(op.kind), True)
            log.info("kernel.op", op=str(op))
        for op, error in result.failed:
            self.hooks.netlink(str(op.kind), False)
            log.error("kernel.op_failed", op=str(op), error=error.reason)
        if result.failed:
            self.stale = True
        try:
            self.table = apply_ops(self.table or {}, result.applied)
        except IpvsError:
            self.stale = True
        return result


def _dump_failed(exc: IpvsError) -> None:
    log.error("kernel.dump_failed", error=str(exc))


__all__ = ["KernelView", "PartialDump"]
