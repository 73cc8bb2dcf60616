"""Runs INSIDE the lab guest: what NetlinkBackend says when it cannot do its job
(no CAP_NET_ADMIN, ip_vs not loaded). Prints one JSON object on stdout."""

from __future__ import annotations

import asyncio
import json

from lvsd.errors import IpvsError
from lvsd.ipvs.netlink import NetlinkBackend
from lvsd.model import Op, OpKind, Protocol, Service, ServiceKey


async def main() -> None:
    backend = NetlinkBackend()
    out: dict[str, object] = {}
    try:
        await backend.dump()
        out["dump"] = "ok"
    except IpvsError as exc:
        out["dump"] = str(exc)
    op = Op(
        kind=OpKind.ADD_SERVICE,
        service=Service(key=ServiceKey.inet(Protocol.TCP, "192.168.3.108", 81)),
    )
    result = await backend.apply([op])
    out["apply"] = [str(e) for _, e in result.failed]
    await backend.close()
    print(json.dumps(out))


asyncio.run(main())
