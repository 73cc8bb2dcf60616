"""What the health tests share: a minimal probe result and small configs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lvsd.config.model import CheckSpec, Config, RealServer, TcpOptions, VirtualServiceConfig
from lvsd.health.check import CheckId, check_id
from lvsd.model import DestKey, Protocol, ServiceKey


@dataclass(frozen=True, slots=True)
class R:
    """A minimal probe result."""

    ok: bool
    detail: str = ""
    reason: str = "ok"
    weight: int | None = None
    drain: bool = False


OK = R(True, "connect: ok")
FAIL = R(False, "connect 10.0.0.1:80: refused", "refused")
#: lvsd itself out of descriptors: says nothing about the server.
LOCAL_FAIL = R(False, "connect 10.0.0.1:80: too many open files (lvsd's own error)", "local")

TCP = CheckSpec(kind="tcp", options=TcpOptions(), rise=2, fall=3)
TCP81 = CheckSpec(kind="tcp", options=TcpOptions(), rise=1, fall=1, port=81)


def rs(n: int, *, weight: int = 1, checks: tuple[CheckSpec, ...] = (TCP,)) -> RealServer:
    return RealServer(
        address=ipaddress.ip_address(f"10.0.0.{n}"), port=80, weight=weight, checks=checks
    )


def service(name: str = "web", *servers: RealServer, **kw: object) -> VirtualServiceConfig:
    return VirtualServiceConfig(
        name=name,
        key=ServiceKey.inet(Protocol.TCP, "192.0.2.1", 80),
        real_servers=servers or (rs(1),),
        **kw,  # type: ignore[arg-type]
    )


def config(*services: VirtualServiceConfig) -> Config:
    return Config(path="test.toml", services=services)


def cid(svc: VirtualServiceConfig, n: int = 0, spec_index: int = 0) -> CheckId:
    server = svc.real_servers[n]
    return check_id(svc, server, server.checks[spec_index])


def dest(n: int) -> DestKey:
    return DestKey.of(f"10.0.0.{n}", 80)
