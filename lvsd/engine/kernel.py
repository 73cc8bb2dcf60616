"""The kernel table as the engine knows it: the last dump plus every op applied since.

:class:`KernelView` wraps a :class:`~lvsd.ipvs.base.Backend`: it dumps (the whole
table, or some services only when the backend is a :class:`PartialDump`), applies ops
and plays the applied ones on its cached table, so a health change plans against the
cache and costs no dump. A netlink error or a failed op marks the cache ``stale``: the
next reconcile dumps. Every dump and op is counted in the hooks; a failed dump is
logged here as ``kernel.dump_failed``. Its callers hold the engine's lock, except for
:meth:`KernelView.counters`, which leaves the cache alone.

A failed op is retried with backoff (:data:`RETRY_FIRST` doubling to :data:`RETRY_MAX`):
until then the same op is held back, reported failed without a netlink call, so a
kernel that keeps refusing costs one error line per change of cause, not one per round.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import structlog

from lvsd.engine.announce import Hooks
from lvsd.errors import IpvsError
from lvsd.ipvs.base import Backend
from lvsd.model import ApplyResult, Op, ServiceKey, Snapshot, Table
from lvsd.plan import apply_ops

log = structlog.get_logger(__name__)

#: Seconds before the first retry of a failed op; the delay doubles per failure.
RETRY_FIRST = 1.0

#: Longest delay between two tries of an op the kernel keeps refusing, in seconds.
RETRY_MAX = 30.0


@dataclass(slots=True)
class _Failing:
    """An op the kernel refused: its last error, when to try again, tries so far."""

    error: IpvsError
    retry_at: float
    delay: float
    tries: int = 1


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
        #: Ops the kernel refused, held back until their retry time.
        self.failing: dict[Op, _Failing] = {}

    def retry_due(self) -> bool:
        """True when a refused op's retry time has come, or the cache is stale with no
        op waiting (the timer then reconciles)."""
        now = self.clock()
        if any(f.retry_at <= now for f in self.failing.values()):
            return True
        return self.stale and not self.failing

    def forget_except(self, ops: Collection[Op]) -> None:
        """Drop the refused ops a whole-table plan no longer asks for."""
        for op in [op for op in self.failing if op not in ops]:
            del self.failing[op]

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
        now = self.clock()
        held = tuple(
            (op, f.error) for op in ops if (f := self.failing.get(op)) and now < f.retry_at
        )
        if held:  # not sent: the cache stays true
            ops = [op for op in ops if op not in self.failing or now >= self.failing[op].retry_at]
        if not ops:
            return ApplyResult(failed=held)
        self.applying_since = now
        self.applies += 1
        try:
            result = await self.backend.apply(ops)
        except IpvsError as exc:  # the whole call failed (the socket, not one op)
            new = [op for op in ops if self._failed(op, exc, now, quiet=True)]
            if new:
                log.error("kernel.apply_failed", error=str(exc), ops=len(ops))
            self.hooks.netlink("apply", False)
            self.stale = True
            return ApplyResult(failed=(*held, *((op, exc) for op in ops)))
        finally:
            self.applying_since = None
        for op in result.applied:
            self.hooks.netlink(str(op.kind), True)
            log.info("kernel.op", op=str(op))
            if (was := self.failing.pop(op, None)) is not None:
                log.info("kernel.op_recovered", op=str(op), tries=was.tries + 1)
        for op, error in result.failed:
            self.hooks.netlink(str(op.kind), False)
            self._failed(op, error, now)
        if result.failed:
            self.stale = True
            result = ApplyResult(applied=result.applied, failed=(*held, *result.failed))
        elif held:
            result = ApplyResult(applied=result.applied, failed=held)
        try:
            self.table = apply_ops(self.table or {}, result.applied)
        except IpvsError:
            self.stale = True
        return result

    def _failed(self, op: Op, error: IpvsError, now: float, *, quiet: bool = False) -> bool:
        """Hold ``op`` back until its next try; log it when its cause is new (True)."""
        was = self.failing.get(op)
        if was is None or was.error.reason != error.reason:
            if not quiet:
                log.error("kernel.op_failed", op=str(op), error=error.reason, retry_in=RETRY_FIRST)
            self.failing[op] = _Failing(error, now + RETRY_FIRST, RETRY_FIRST)
            return True
        delay = min(RETRY_MAX, was.delay * 2)
        if not quiet:
            log.debug("kernel.op_failed", op=str(op), error=error.reason, retry_in=delay)
        self.failing[op] = _Failing(error, now + delay, delay, was.tries + 1)
        return False


def _dump_failed(exc: IpvsError) -> None:
    log.error("kernel.dump_failed", error=str(exc))


__all__ = ["KernelView", "PartialDump"]
