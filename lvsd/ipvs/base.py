"""The narrow interface to a kernel IPVS table: read it whole, apply a list of ops."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """The kernel's connection timeouts, seconds: established TCP, TCP after FIN, UDP."""

    tcp: int
    tcp_fin: int
    udp: int

    def __str__(self) -> str:
        return f"tcp {self.tcp} tcpfin {self.tcp_fin} udp {self.udp}"

    def but(self, *, tcp: int | None, tcp_fin: int | None, udp: int | None) -> Timeouts:
        """These timeouts with each one given (not None) in its place."""
        return Timeouts(
            tcp=self.tcp if tcp is None else tcp,
            tcp_fin=self.tcp_fin if tcp_fin is None else tcp_fin,
            udp=self.udp if udp is None else udp,
        )


@runtime_checkable
class TimeoutControl(Protocol):
    """A table whose connection timeouts can be read and set (IPVS_CMD_GET_CONFIG and
    IPVS_CMD_SET_CONFIG); both raise ``IpvsError`` when the kernel refuses."""

    async def get_timeouts(self) -> Timeouts: ...
    async def set_timeouts(self, timeouts: Timeouts) -> None: ...
