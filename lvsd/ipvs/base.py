"""The narrow interface to a kernel IPVS table: read it whole, apply a list of ops."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from lvsd.model import ApplyResult, Op, Snapshot


class Backend(Protocol):
    """A kernel IPVS table (netlink) or a stand-in for it (memory)."""

    async def dump(self) -> Snapshot:
        """Read every service and destination with their counters, in one pass.

        Raises ``IpvsError`` when the table cannot be read at all.
        """
        ...

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        """Apply ``ops`` in order. A failed op is recorded in the result and does not
        stop the ops after it, except those on the same service that depend on it.
        """
        ...

    async def close(self) -> None: ...
