"""Helpers shared by the engine tests: a one-service config, a clock moved by hand,
an engine started on an in-memory table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lvsd.checks.base import ProbeResult
from lvsd.checks.scheduler import checks_from_config
from lvsd.config import load
from lvsd.config.model import Config
from lvsd.engine.reconcile import Engine
from lvsd.health.check import CheckId
from lvsd.ipvs.memory import MemoryBackend
from lvsd.model import DestKey, Op, Protocol, ServiceKey

WEB = ServiceKey.inet(Protocol.TCP, "192.168.3.108", 80)
RS1 = DestKey.of("10.0.0.2", 80)
RS2 = DestKey.of("10.0.0.3", 80)
RS3 = DestKey.of("10.0.0.4", 80)


def config_text(
    servers: Sequence[tuple[str, int]] = (("10.0.0.2", 1), ("10.0.0.3", 1)),
    *,
    initial: str = "up",
    service_extra: str = "",
    state_dir: str = "/nonexistent",
) -> str:
    """A one-service config with a tcp check (rise 1, fall 1) per real server."""
    text = f"""
[daemon]
state_dir = "{state_dir}"
metrics_listen = ""
drain_timeout = 60.0

[services.web]
address = "192.168.3.108"
port = 80
protocol = "tcp"
initial_state = "{initial}"
{service_extra}

[[services.web.checks]]
kind = "tcp"
interval = 1.0
timeout = 0.5
rise = 1
fall = 1
"""
    for address, weight in servers:
        text += f"""
[[services.web.real_servers]]
address = "{address}"
port = 80
weight = {weight}
"""
    return text


def write(tmp_path: Path, text: str, name: str = "lvsd.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


class Clock:
    """A clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cid(config: Config, address: str) -> CheckId:
    """The check id probing ``address``."""
    (found,) = [c for c in checks_from_config(config) if c.address == address]
    return found


def ok() -> ProbeResult:
    return ProbeResult(ok=True, detail="connected", duration=0.001)


def fail() -> ProbeResult:
    return ProbeResult(ok=False, detail="connect: refused", duration=0.001, reason="refused")


def kinds(ops: Sequence[Op]) -> list[str]:
    """Ops rendered, for comparisons."""
    return [str(op) for op in ops]


async def started(
    tmp_path: Path, text: str, backend: MemoryBackend | None = None, **kw: object
) -> tuple[Engine, MemoryBackend, Clock]:
    config = load(write(tmp_path, text))
    backend = backend if backend is not None else MemoryBackend()
    clock = Clock()
    engine = Engine(config, backend, clock=clock, **kw)  # type: ignore[arg-type]
    await engine.start()
    return engine, backend, clock
