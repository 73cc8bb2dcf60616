"""What the daemon tests share: a config, fake probes, a recording notifier, a fake host
and a running daemon over an in-memory table."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lvsd.checks.base import Probe, ProbeResult, Target
from lvsd.config.model import CheckSpec
from lvsd.daemon.lifecycle import Daemon
from lvsd.daemon.systemd import Notifier
from lvsd.ipvs.memory import MemoryBackend
from lvsd.model import DestKey, Protocol, ServiceKey
from tests.test_preflight import Host

WEB = ServiceKey.inet(Protocol.TCP, "192.168.3.108", 80)
RS1 = DestKey.of("10.0.0.2", 80)
RS2 = DestKey.of("10.0.0.3", 80)


def config_text(
    folder: Path,
    servers: tuple[tuple[str, int], ...] = (("10.0.0.2", 1), ("10.0.0.3", 1)),
    *,
    reconcile: float = 30.0,
    checks: bool = True,
    metrics_listen: str = "",
    remove_on_stop: bool = False,
) -> str:
    text = f"""
[daemon]
remove_on_stop = {"true" if remove_on_stop else "false"}
state_dir = "{folder}/state"
control_socket = "{folder}/control.sock"
metrics_listen = "{metrics_listen}"
reconcile_interval = {reconcile}

[services.web]
address = "192.168.3.108"
port = 80
protocol = "tcp"
initial_state = "up"
"""
    if checks:
        text += """
[[services.web.checks]]
kind = "tcp"
interval = 0.05
timeout = 0.04
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


@dataclass
class FakeProbes:
    """A probe factory whose probes answer what ``down`` says, at once."""

    down: set[str] = field(default_factory=set)
    built: int = 0

    def __call__(self, spec: CheckSpec, target: Target) -> Probe:
        self.built += 1
        return _FakeProbe(self, str(target.address))


class _FakeProbe:
    def __init__(self, owner: FakeProbes, address: str) -> None:
        self._owner = owner
        self._address = address

    async def probe(self) -> ProbeResult:
        if self._address in self._owner.down:
            return ProbeResult(ok=False, detail="connect: refused", duration=0.0, reason="refused")
        return ProbeResult(ok=True, detail="connected", duration=0.0)

    async def close(self) -> None:
        pass


class RecordingNotifier(Notifier):
    """Keeps what would go to systemd."""

    def __init__(self, watchdog: float | None = None) -> None:
        super().__init__("", watchdog=watchdog)
        self.sent: list[str] = []

    def send(self, *assignments: str) -> bool:
        self.sent.append("\n".join(assignments))
        return True


def tuned_host(folder: Path) -> Host:
    """A fake host (/proc, /lib/modules) with nothing for the preflight to report for
    :func:`config_text`'s NAT service."""
    host = Host(folder / "host").ipvs_loaded().loaded_modules("ip_vs", "ip_vs_wrr")
    host.write("sys/net/ipv4/ip_forward", "1\n")
    return host


@dataclass
class Running:
    daemon: Daemon
    backend: MemoryBackend
    probes: FakeProbes
    notifier: RecordingNotifier
    path: Path
    socket: str


@asynccontextmanager
async def running(
    folder: Path,
    text: str,
    *,
    backend: MemoryBackend | None = None,
    notifier: RecordingNotifier | None = None,
    host: Host | None = None,
    real_probes: bool = False,
) -> AsyncIterator[Running]:
    """The daemon on ``text``, over ``backend``, with fake probes (``real_probes``:
    the registry's, against real servers)."""
    path = folder / "lvsd.toml"
    path.write_text(text)
    backend = backend if backend is not None else MemoryBackend()
    host = host if host is not None else tuned_host(folder)
    probes = FakeProbes()
    notifier = notifier if notifier is not None else RecordingNotifier()
    daemon = Daemon(
        str(path),
        backend_factory=lambda: backend,
        probe_factory=None if real_probes else probes,
        notifier=notifier,
        signals=False,
        batch_window=0.01,
        timer_interval=0.05,
        proc=host.proc,
        modules_dir=host.modules,
    )
    task = asyncio.create_task(daemon.serve())
    started = asyncio.create_task(daemon.started.wait())
    await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        started.cancel()
        task.result()
    try:
        yield Running(daemon, backend, probes, notifier, path, str(folder / "control.sock"))
    finally:
        daemon.request_stop()
        assert 0 == await asyncio.wait_for(task, 5)


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait (polling every 10 ms) until ``condition`` holds; fail after 3 s."""
    async with asyncio.timeout(3.0):
        while not condition():  # noqa: ASYNC110 -- the state polled is the daemon's, not ours
            await asyncio.sleep(0.01)


def weight(backend: MemoryBackend, dest: DestKey) -> int | None:
    vs = backend.table.get(WEB)
    found = vs.destinations.get(dest) if vs is not None else None
    return found.weight if found is not None else None
