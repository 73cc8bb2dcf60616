"""The daemon end to end: fake probes, an in-memory table, the real control socket and
short real intervals (0.05 s)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lvsd import control
from lvsd.checks.base import Probe, ProbeResult, Target
from lvsd.config.model import CheckSpec
from lvsd.daemon import heap
from lvsd.daemon.lifecycle import Daemon, parse_realserver
from lvsd.daemon.systemd import Notifier
from lvsd.errors import ControlError, LvsdError
from lvsd.ipvs.memory import MemoryBackend
from lvsd.model import (
    Destination,
    DestKey,
    DestStats,
    Forward,
    Protocol,
    ServiceKey,
    VirtualService,
)
from tests.test_preflight import Host

WEB = ServiceKey.inet(Protocol.TCP, "192.168.3.108", 80)
RS1 = DestKey.of("10.0.0.2", 80)
RS2 = DestKey.of("10.0.0.3", 80)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path (unix socket paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="lvsd-", dir="/tmp") as path:
        yield Path(path)


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
) -> AsyncIterator[Running]:
    path = folder / "lvsd.toml"
    path.write_text(text)
    backend = backend if backend is not None else MemoryBackend()
    host = host if host is not None else tuned_host(folder)
    probes = FakeProbes()
    notifier = notifier if notifier is not None else RecordingNotifier()
    daemon = Daemon(
        str(path),
        backend_factory=lambda: backend,
        probe_factory=probes,
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


async def test_start_applies_the_table_and_says_ready(short_dir: Path) -> None:
    """Start-up adds the service and its real servers, then sends READY=1 with a status."""
    async with running(short_dir, config_text(short_dir)) as r:
        expected = [
            "add-service tcp 192.168.3.108:80 wrr",
            "add-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=1 nat",
            "add-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=1 nat",
        ]
        assert expected == [str(op) for op in r.backend.received]
        assert ["READY=1\nSTATUS=1 service, 2/2 real servers up"] == r.notifier.sent
    assert "STOPPING=1" == r.notifier.sent[-1]
    assert not Path(r.socket).exists()  # noqa: ASYNC240 -- a stat of a local path, in a test


async def test_failing_probe_quiesces_and_recovery_restores(short_dir: Path) -> None:
    """A real server whose probe fails goes to weight 0; back up when it answers."""
    async with running(short_dir, config_text(short_dir)) as r:
        r.probes.down.add("10.0.0.2")
        await eventually(lambda: weight(r.backend, RS1) == 0)
        r.probes.down.clear()
        await eventually(lambda: weight(r.backend, RS1) == 1)
        assert 1 == weight(r.backend, RS2)
        assert "STATUS=1 service, 1/2 real servers up" in r.notifier.sent
        edits = [str(op) for op in r.backend.received[3:]]
        assert [
            "edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=0 nat",
            "edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=1 nat",
        ] == edits


async def test_steady_health_writes_nothing(short_dir: Path) -> None:
    """Many rounds of unchanged results issue no op and no dump."""
    async with running(short_dir, config_text(short_dir)) as r:
        received, dumps = len(r.backend.received), r.backend.dumps
        await asyncio.sleep(0.3)
        assert r.daemon.scheduler is not None
        assert r.daemon.scheduler.stats().results >= 4
        assert (received, dumps) == (len(r.backend.received), r.backend.dumps)


async def test_restart_over_its_own_table_writes_nothing(short_dir: Path) -> None:
    """A daemon killed and started again adopts the table: zero write ops."""
    backend = MemoryBackend()
    async with running(short_dir, config_text(short_dir), backend=backend):
        pass
    received = len(backend.received)
    async with running(short_dir, config_text(short_dir), backend=backend):
        pass
    assert received == len(backend.received)


async def test_control_reload_applies_the_difference(short_dir: Path) -> None:
    """``reload`` over the socket re-reads the file and answers with the ops."""
    async with running(short_dir, config_text(short_dir)) as r:
        r.path.write_text(config_text(short_dir, (("10.0.0.2", 4), ("10.0.0.3", 1))))
        answer = await control.request(r.socket, {"command": "reload"})
        assert ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=4 nat"] == answer["ops"]
        assert 4 == weight(r.backend, RS1)
        assert any(m.startswith("RELOADING=1") for m in r.notifier.sent)
        assert r.notifier.sent[-1].startswith("READY=1")


async def test_heap_is_frozen_at_start_and_after_a_reload(short_dir: Path) -> None:
    """Once the config's objects are built (start, reload), they are frozen out of the
    collector's walks and full collections are spaced out (``lvsd.daemon.heap``)."""
    gc.unfreeze()
    async with running(short_dir, config_text(short_dir)) as r:
        assert heap.FULL_EVERY == gc.get_threshold()[2]
        assert gc.get_freeze_count() > 0
        gc.unfreeze()
        r.path.write_text(config_text(short_dir, (("10.0.0.2", 4), ("10.0.0.3", 1))))
        await control.request(r.socket, {"command": "reload"})
        assert gc.get_freeze_count() > 0


async def test_control_reload_of_a_broken_config_keeps_the_old_one(short_dir: Path) -> None:
    """A broken file is refused with its problems; the table stays."""
    async with running(short_dir, config_text(short_dir)) as r:
        received = len(r.backend.received)
        r.path.write_text(config_text(short_dir).replace("weight = 1", "weight = -1", 1))
        with pytest.raises(ControlError, match="old config kept") as info:
            await control.request(r.socket, {"command": "reload"})
        assert "weight" in str(info.value)
        assert received == len(r.backend.received)


async def test_reload_adds_and_removes_checks(short_dir: Path) -> None:
    """A real server added by a reload is probed; one removed is drained out."""
    async with running(short_dir, config_text(short_dir)) as r:
        r.backend.dest_stats[(WEB, RS2)] = DestStats(active_connections=2)
        r.path.write_text(config_text(short_dir, (("10.0.0.2", 1), ("10.0.0.4", 1))))
        answer = await control.request(r.socket, {"command": "reload"})
        assert ["tcp 192.168.3.108:80 -> 10.0.0.3:80"] == answer["lingering"]
        assert 0 == weight(r.backend, RS2)
        r.backend.dest_stats[(WEB, RS2)] = DestStats(active_connections=0)
        await eventually(lambda: weight(r.backend, RS2) is None)
        r.probes.down.add("10.0.0.4")
        await eventually(lambda: weight(r.backend, DestKey.of("10.0.0.4", 80)) == 0)


async def test_drain_and_undrain_over_the_socket(short_dir: Path) -> None:
    """drain sets weight 0 at once and persists; undrain restores."""
    async with running(short_dir, config_text(short_dir)) as r:
        request = {"command": "drain", "service": "web", "realserver": "10.0.0.3:80"}
        answer = await control.request(r.socket, request)
        assert ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=0 nat"] == answer["ops"]
        assert (short_dir / "state" / "drains.json").exists()
        conns = await control.request(r.socket, {**request, "command": "connections"})
        assert 0 == conns["active"]
        answer = await control.request(r.socket, {**request, "command": "undrain"})
        assert ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=1 nat"] == answer["ops"]


async def test_status_over_the_socket(short_dir: Path) -> None:
    """status answers JSON and a rendering naming every real server."""
    async with running(short_dir, config_text(short_dir)) as r:
        answer = await control.request(r.socket, {"command": "status"})
        assert "10.0.0.2:80" in answer["text"]
        assert "10.0.0.3:80" in answer["text"]
        assert isinstance(answer["status"], dict)


async def test_unknown_command_is_refused(short_dir: Path) -> None:
    """An unknown command lists the known ones."""
    async with running(short_dir, config_text(short_dir)) as r:
        with pytest.raises(ControlError, match="known: connections, drain"):
            await control.request(r.socket, {"command": "explode"})


async def test_drift_repair_in_the_running_daemon(short_dir: Path) -> None:
    """A hand edit is put back by the periodic drift repair; a hand-made service stays."""
    async with running(short_dir, config_text(short_dir, reconcile=0.1)) as r:
        table = r.backend.table
        vs = table[WEB]
        edited = Destination(address="10.0.0.2", port=80, weight=7, forward=Forward.NAT)
        table[WEB] = VirtualService(
            service=vs.service, destinations={**vs.destinations, RS1: edited}
        )
        other_key = ServiceKey.inet(Protocol.UDP, "192.168.3.109", 53)
        other = VirtualService(service=vs.service.__class__(key=other_key), destinations={})
        table[other_key] = other
        r.backend.table = table
        await eventually(lambda: weight(r.backend, RS1) == 1)
        assert other == r.backend.table[other_key]


async def test_watchdog_is_fed(short_dir: Path) -> None:
    """With WATCHDOG_USEC set the daemon pings while the scheduler runs."""
    notifier = RecordingNotifier(watchdog=0.05)
    async with running(short_dir, config_text(short_dir), notifier=notifier):
        await eventually(lambda: notifier.sent.count("WATCHDOG=1") >= 2)


async def test_bad_config_stops_start_up(short_dir: Path) -> None:
    """A config that does not load stops start-up with a ConfigError."""
    from lvsd.errors import ConfigError

    path = short_dir / "lvsd.toml"
    path.write_text("[services.web]\naddress = 1\n")
    daemon = Daemon(str(path), backend_factory=MemoryBackend, signals=False)
    with pytest.raises(ConfigError):
        await daemon.serve()


def test_sighup_and_sigterm_in_a_subprocess(short_dir: Path) -> None:
    """``lvsd run --dry-run`` in its own process: SIGHUP reloads (new weight visible in
    status), SIGTERM stops it with status 0 and removes the socket."""
    path = short_dir / "lvsd.toml"
    path.write_text(config_text(short_dir, checks=False))
    sock = str(short_dir / "control.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lvsd", "run", "-c", str(path), "--dry-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "daemon did not start"
            time.sleep(0.02)
        while True:  # the socket is bound a moment before the daemon answers
            try:
                control.request_sync(sock, {"command": "status"})
                break
            except ControlError:
                assert time.monotonic() < deadline, "daemon did not answer"
                time.sleep(0.02)
        path.write_text(config_text(short_dir, (("10.0.0.2", 6), ("10.0.0.3", 1)), checks=False))
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            answer = control.request_sync(sock, {"command": "status"})
            if " 6 " in answer["text"] or '"weight": 6' in str(answer["status"]):
                break
            assert time.monotonic() < deadline, answer["text"]
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert 0 == proc.returncode
    assert "reload.done" in output
    assert "daemon.stopped" in output
    assert not os.path.exists(sock)


async def test_metrics_endpoint_serves_the_daemon(short_dir: Path) -> None:
    """With metrics_listen set, /metrics shows the real servers' health and weights,
    /readyz says ready once every check has reported, /status is the report."""
    import socket

    import aiohttp

    with socket.socket() as probe:  # a free port (the config refuses port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = config_text(short_dir, metrics_listen=f"127.0.0.1:{port}")
    async with running(short_dir, text) as r, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{r.daemon.api_port}"
        statuses: list[int] = []
        async with asyncio.timeout(3):
            while not statuses or statuses[-1] != 200:
                async with http.get(f"{base}/readyz") as response:
                    statuses.append(response.status)
                await asyncio.sleep(0.02)
        assert set(statuses) <= {200, 503}
        async with http.get(f"{base}/metrics") as response:
            body = await response.text()
        assert "lvsd_ipvs_backend_weight{" in body
        assert "lvsd_real_server_health{" in body
        async with http.get(f"{base}/status") as response:
            assert 200 == response.status
        assert "lvsd_config_last_reload_successful 1.0" in body
        r.path.write_text("[services.web]\nport = 'x'\n")
        with pytest.raises(ControlError):
            await control.request(r.socket, {"command": "reload"})
        async with http.get(f"{base}/metrics") as response:
            body = await response.text()
        assert "lvsd_config_last_reload_successful 0.0" in body


async def test_preflight_at_start_and_after_reload(short_dir: Path) -> None:
    """At start the daemon audits the (fake) host for its config: each problem is a
    preflight.finding event, and lvsd_preflight_problems counts them by level.
    After a reload it audits again (the operator has fixed ip_forward meanwhile).
    Neither audit changes a file of the host."""
    from structlog.testing import capture_logs

    host = Host(short_dir / "host").ipvs_loaded(expire_nodest_conn=0)
    host.loaded_modules("ip_vs", "ip_vs_wrr").write("sys/net/ipv4/ip_forward", "0\n")

    def files() -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in host.proc.rglob("*") if p.is_file()}

    before = files()
    with capture_logs() as logs:
        async with running(short_dir, config_text(short_dir), host=host) as r:
            value = r.daemon.metrics.registry.get_sample_value

            def counts() -> list[float | None]:
                return [value("lvsd_preflight_problems", {"level": s}) for s in ("warn", "error")]

            found = [
                (e["log_level"], e["setting"], e["value"])
                for e in logs
                if e["event"] == "preflight.finding"
            ]
            assert [
                ("error", "net.ipv4.ip_forward", "0"),
                ("warning", "net.ipv4.vs.expire_nodest_conn", "0"),
            ] == found
            assert [1.0, 1.0] == counts()
            assert before == files()

            host.write("sys/net/ipv4/ip_forward", "1\n")
            before = files()
            logs.clear()
            await control.request(r.socket, {"command": "reload"})
            settings = [e["setting"] for e in logs if e["event"] == "preflight.finding"]
            assert ["net.ipv4.vs.expire_nodest_conn"] == settings
            assert [1.0, 0.0] == counts()
            assert before == files()


async def test_preflight_says_ok_once_on_a_tuned_host(short_dir: Path) -> None:
    """Nothing to report: one preflight.ok line, no findings, both counts 0."""
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        async with running(short_dir, config_text(short_dir)) as r:
            events = [e["event"] for e in logs if e["event"].startswith("preflight.")]
            assert ["preflight.ok"] == events
            problems = r.daemon.metrics.registry.get_sample_value
            assert 0.0 == problems("lvsd_preflight_problems", {"level": "warn"})
            assert 0.0 == problems("lvsd_preflight_problems", {"level": "error"})


async def test_remove_on_stop_deletes_managed_services_only(short_dir: Path) -> None:
    """With remove_on_stop the stop deletes lvsd's service and leaves a hand-made one."""
    other_key = ServiceKey.inet(Protocol.UDP, "192.168.3.109", 53)
    backend = MemoryBackend()
    text = config_text(short_dir, remove_on_stop=True)
    async with running(short_dir, text, backend=backend) as r:
        table = r.backend.table
        table[other_key] = VirtualService(
            service=table[WEB].service.__class__(key=other_key), destinations={}
        )
        r.backend.table = table
    assert [other_key] == list(backend.table)
    assert "del-service tcp 192.168.3.108:80 wrr" == str(backend.received[-1])


async def test_quorum_command_is_bounded() -> None:
    """A quorum command that hangs is killed at its limit; one that fails is logged."""
    from structlog.testing import capture_logs

    from lvsd.engine.announce import _run_bounded

    started = time.monotonic()
    with capture_logs() as logs:
        await _run_bounded(("sleep", "10"), limit=0.1)
        await _run_bounded(("/nonexistent/command",), limit=1)
        await _run_bounded(("false",), limit=1)
        await _run_bounded(("true",), limit=1)
    assert time.monotonic() - started < 5
    expected = ["command.timeout", "command.failed", "command.failed", "command.done"]
    assert expected == [e["event"] for e in logs]
    assert 1 == logs[2]["status"]


async def test_watchdog_is_withheld_while_stalled_or_stuck() -> None:
    """No WATCHDOG=1 while the scheduler stays stalled (after the first check, which
    may have woken before the scheduler) or an apply runs past its bound; pings resume
    once both are fine."""
    from types import SimpleNamespace

    from lvsd.daemon.lifecycle import APPLY_BOUND

    notifier = RecordingNotifier(watchdog=0.01)
    daemon = Daemon("unused.toml", notifier=notifier, signals=False, clock=lambda: 1000.0)
    stalled = {"now": True}
    engine = SimpleNamespace(applying_since=None)
    daemon.engine = engine  # type: ignore[assignment]
    daemon.scheduler = SimpleNamespace(stalled=lambda now: stalled["now"])  # type: ignore[assignment]
    task = asyncio.create_task(daemon._watchdog())
    try:
        await asyncio.sleep(0.05)
        assert ["WATCHDOG=1"] == notifier.sent
        notifier.sent.clear()
        await asyncio.sleep(0.05)
        assert [] == notifier.sent
        stalled["now"] = False
        engine.applying_since = 1000.0 - APPLY_BOUND - 1
        await asyncio.sleep(0.05)
        assert [] == notifier.sent
        engine.applying_since = None
        await eventually(lambda: "WATCHDOG=1" in notifier.sent)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_failed_op_is_retried_with_a_fresh_dump(short_dir: Path) -> None:
    """An op the kernel refuses is retried by the timer after a fresh dump."""
    from lvsd.errors import IpvsError

    async with running(short_dir, config_text(short_dir)) as r:
        r.backend.fail = lambda op: IpvsError(str(op), "no memory")
        r.probes.down.add("10.0.0.2")
        await eventually(lambda: len(r.backend.received) > 3)
        assert 1 == weight(r.backend, RS1)
        dumps = r.backend.dumps
        r.backend.fail = None
        await eventually(lambda: weight(r.backend, RS1) == 0)
        assert r.backend.dumps > dumps


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.2:80", DestKey.of("10.0.0.2", 80)),
        ("[2001:db8::2]:443", DestKey.of("2001:db8::2", 443)),
    ],
)
def test_parse_realserver(text: str, expected: DestKey) -> None:
    """ADDRESS:PORT and [V6]:PORT are understood."""
    assert expected == parse_realserver(text)


@pytest.mark.parametrize("text", ["10.0.0.2", "2001:db8::2:80", "10.0.0.2:x", "host:80", ""])
def test_parse_realserver_refuses_malformed(text: str) -> None:
    """Anything else is an error that shows the expected form."""
    with pytest.raises(LvsdError, match="is not ADDRESS:PORT"):
        parse_realserver(text)
