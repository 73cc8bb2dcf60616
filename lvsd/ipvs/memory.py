"""An IPVS table in memory: the kernel's stand-in for unit tests and ``--dry-run``.

It accepts and refuses ops exactly as ``lvsd.plan.apply_ops`` does (which plays them
as the kernel would), records every op it is given in ``received``, and can be told
to fail chosen ops (``fail``) or a whole dump (``dump_error``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from lvsd.errors import IpvsError
from lvsd.ipvs.base import Timeouts
from lvsd.model import (
    ApplyResult,
    DestKey,
    DestStats,
    Op,
    OpKind,
    ServiceKey,
    Snapshot,
    Stats,
    Table,
    VirtualService,
)
from lvsd.plan import TableEditor

#: Decides whether an op fails: the error to report, or None to let it through.
FailHook = Callable[[Op], IpvsError | None]


class MemoryBackend:
    """A ``lvsd.ipvs.base.Backend`` over a dict.

    ``table`` is the current table (read it, or assign a new one, in tests);
    ``service_stats`` and ``dest_stats`` are the counters ``dump`` reports (entries
    without counters report zeros); ``received`` lists every op passed to ``apply``,
    in order, failed ones included.
    """

    def __init__(
        self,
        table: Table | None = None,
        *,
        service_stats: Mapping[ServiceKey, Stats] | None = None,
        dest_stats: Mapping[tuple[ServiceKey, DestKey], DestStats] | None = None,
        fail: FailHook | None = None,
    ) -> None:
        self._editor = TableEditor(table or {})
        self.service_stats: dict[ServiceKey, Stats] = dict(service_stats or {})
        self.dest_stats: dict[tuple[ServiceKey, DestKey], DestStats] = dict(dest_stats or {})
        self.fail = fail
        self.received: list[Op] = []
        #: When set, ``dump`` raises it (a table that cannot be read).
        self.dump_error: IpvsError | None = None
        self.dumps = 0
        self.closed = False
        #: The connection timeouts (the kernel's defaults); ``set_timeouts`` writes here.
        self.timeouts = Timeouts(tcp=900, tcp_fin=120, udp=300)
        self.timeout_sets = 0

    @property
    def table(self) -> dict[ServiceKey, VirtualService]:
        """A copy of the current table."""
        return self._editor.table()

    @table.setter
    def table(self, table: Table) -> None:
        self._editor = TableEditor(table)

    def __repr__(self) -> str:
        return f"<MemoryBackend {len(self._editor)} services, {len(self.received)} ops received>"

    async def dump(self) -> Snapshot:
        """The table with a counter for every service and destination."""
        self.dumps += 1
        if self.dump_error is not None:
            raise self.dump_error
        table = self._editor.table()
        service_stats = {key: self.service_stats.get(key, Stats()) for key in table}
        dest_stats = {
            (key, dest): self.dest_stats.get((key, dest), DestStats())
            for key, vs in table.items()
            for dest in vs.destinations
        }
        return Snapshot(table=table, service_stats=service_stats, dest_stats=dest_stats)

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        """Apply ``ops`` one by one. A refused op is reported and the rest go on,
        except the ops on a service whose ``add-service`` failed in this call and
        that does not exist: they fail too, as ``skipped``. (An add refused with
        ``exists`` leaves a service the next ops can use.)"""
        applied: list[Op] = []
        failed: list[tuple[Op, IpvsError]] = []
        lost: set[ServiceKey] = set()
        for op in ops:
            self.received.append(op)
            key = op.service.key
            error: IpvsError | None
            if key in lost:
                error = IpvsError(str(op), f"skipped: add-service {key} failed")
            else:
                error = self.fail(op) if self.fail is not None else None
            if error is None:
                try:
                    self._editor.apply(op)
                except IpvsError as exc:
                    error = exc
            if error is None:
                applied.append(op)
                continue
            failed.append((op, error))
            if op.kind is OpKind.ADD_SERVICE and key not in self._editor:
                lost.add(key)
        return ApplyResult(applied=tuple(applied), failed=tuple(failed))

    async def get_timeouts(self) -> Timeouts:
        return self.timeouts

    async def set_timeouts(self, timeouts: Timeouts) -> None:
        self.timeout_sets += 1
        self.timeouts = timeouts

    async def close(self) -> None:
        self.closed = True


__all__ = ["FailHook", "MemoryBackend"]
