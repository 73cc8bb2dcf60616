"""The whole daemon out of descriptors: real tcp probes of real loopback servers fail
with EMFILE for a while, and no server goes down (their state is held, the shortage is
counted and logged once); once descriptors are back, a server that really stopped is
still taken out."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import asyncio
from pathlib import Path

from lvsd.daemon.lifecycle import Daemon
from lvsd.ipvs.memory import MemoryBackend
from lvsd.model import DestKey
from tests.checks.test_local_errors import no_free_descriptors
from tests.daemon.helpers import WEB, eventually, running

SERVERS = 4


def _config(folder: Path, ports: list[int]) -> str:
    text = f"""
[daemon]
state_dir = "{folder}/state"
control_socket = "{folder}/control.sock"

[services.web]
address = "192.168.3.108"
port = 80
protocol = "tcp"

[[services.web.checks]]
kind = "tcp"
interval = 0.2
timeout = 0.15
rise = 1
fall = 1
"""
    for port in ports:
        text += f"""
[[services.web.real_servers]]
address = "127.0.0.1"
port = {port}
"""
    return text


def _weights(backend: MemoryBackend) -> dict[DestKey, int]:
    service = backend.table.get(WEB)
    return {} if service is None else {k: d.weight for k, d in service.destinations.items()}


def _count(daemon: Daemon, name: str, labels: dict[str, str]) -> float:
    assert daemon.metrics is not None
    registry = daemon.metrics.registry
    return sum(
        s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


async def test_no_server_goes_down_while_lvsd_has_no_descriptor(short_dir: Path) -> None:
    """Four healthy servers, fall = 1: a second without descriptors takes none out (it
    did before: the first EMFILE was a down); a stopped one is found afterwards."""
    from structlog.testing import capture_logs

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    servers = [await asyncio.start_server(accept, "127.0.0.1", 0) for _ in range(SERVERS)]
    ports = [int(s.sockets[0].getsockname()[1]) for s in servers]
    backend = MemoryBackend()
    async with running(
        short_dir, _config(short_dir, ports), backend=backend, real_probes=True
    ) as r:
        daemon = r.daemon
        await eventually(lambda: [1] * SERVERS == list(_weights(backend).values()))
        seen: set[int] = set()
        with capture_logs() as logs:
            with no_free_descriptors():
                for _ in range(100):  # 1 s: five check intervals
                    await asyncio.sleep(0.01)
                    seen.update(_weights(backend).values())
            local = _count(daemon, "lvsd_probe_local_errors_total", {"cause": "EMFILE"})
            assert {1} == seen  # never a weight 0
            assert 0 == _count(daemon, "lvsd_real_server_transitions_total", {"to": "down"})
            assert local >= SERVERS
            lines = [e for e in logs if e["event"] == "probe.local_error"]
            assert 1 == len(lines), lines
        servers[0].close()
        await servers[0].wait_closed()
        gone = DestKey.of("127.0.0.1", ports[0])
        await eventually(lambda: 0 == _weights(backend)[gone])
        assert [1] * (SERVERS - 1) == [w for k, w in _weights(backend).items() if k != gone]
    for server in servers:
        server.close()
