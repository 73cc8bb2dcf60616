"""The kernel's connection timeouts (``[ipvs]``: tcp, tcp_fin, udp), kept as configured.

At start, after each reload and at each drift repair, :func:`enforce` reads the
kernel's timeouts (IPVS_CMD_GET_CONFIG) and sets the configured ones that differ
(IPVS_CMD_SET_CONFIG); a timeout the config leaves out keeps the kernel's value. The
timeouts are global to the network namespace, not per service: lvsd owns those it is
configured with. A backend that cannot read them (a stand-in without them) is left
alone; a read or write the kernel refuses is logged and tried again at the next pass.
"""

from __future__ import annotations

import structlog

from lvsd.config.model import IpvsTimeouts
from lvsd.errors import IpvsError
from lvsd.ipvs.base import Backend, TimeoutControl, Timeouts

log = structlog.get_logger("lvsd.engine.timeouts")


def wanted(config: IpvsTimeouts, current: Timeouts) -> Timeouts:
    """``current`` with the configured timeouts in place of the kernel's."""
    return current.but(tcp=config.tcp, tcp_fin=config.tcp_fin, udp=config.udp)


async def enforce(
    backend: Backend, config: IpvsTimeouts
) -> tuple[Timeouts | None, Timeouts | None]:
    """Read the kernel's timeouts and set the configured ones that differ:
    ``(timeouts in force, timeouts found and replaced or None)``; ``(None, None)`` when
    they cannot be read."""
    if not isinstance(backend, TimeoutControl):
        return None, None
    try:
        current = await backend.get_timeouts()
    except IpvsError as exc:
        log.warning("timeouts.unreadable", error=exc.reason)
        return None, None
    want = wanted(config, current)
    if want == current:
        return current, None
    try:
        await backend.set_timeouts(want)
    except IpvsError as exc:
        log.error("timeouts.failed", timeouts=str(want), error=exc.reason)
        return current, None
    return want, current


__all__ = ["enforce", "wanted"]
