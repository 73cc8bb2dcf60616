"""A connected UDP socket for one probe run, and the next datagram it gets (the
dns, udp, sip and radius kinds). Connected, so an ICMP error from the target (port
unreachable: ``ConnectionRefusedError``) reaches the probe, and only the target's
datagrams do."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from lvsd.checks.net import DatagramQueue, local_addr
from lvsd.config.model import CheckSpec
from lvsd.model import IPAddress


@contextlib.asynccontextmanager
async def connected_udp(
    spec: CheckSpec, address: IPAddress, port: int
) -> AsyncIterator[tuple[asyncio.DatagramTransport, DatagramQueue]]:
    """A UDP endpoint connected to ``address:port`` from the spec's source, closed on exit."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        DatagramQueue, remote_addr=(str(address), port), local_addr=local_addr(spec)
    )
    try:
        yield transport, protocol
    finally:
        transport.close()


async def receive(protocol: DatagramQueue) -> bytes:
    """The next datagram; an ICMP error that came instead is raised."""
    item = await protocol.queue.get()
    if isinstance(item, OSError):
        raise item
    return item
