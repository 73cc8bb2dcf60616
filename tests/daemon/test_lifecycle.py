"""The daemon end to end (``lvsd.daemon.lifecycle``): start-up, stop, signals, the host
audit; fake probes, an in-memory table, the real control socket and short real
intervals (0.05 s)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lvsd import control
from lvsd.daemon import heap
from lvsd.daemon.lifecycle import Daemon
from lvsd.errors import ControlError
from lvsd.ipvs.memory import MemoryBackend
from lvsd.model import Protocol, ServiceKey, VirtualService
from tests.daemon.helpers import WEB, config_text, running
from tests.test_preflight import Host


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


async def test_restart_over_its_own_table_writes_nothing(short_dir: Path) -> None:
    """A daemon killed and started again adopts the table: zero write ops."""
    backend = MemoryBackend()
    async with running(short_dir, config_text(short_dir), backend=backend):
        pass
    received = len(backend.received)
    async with running(short_dir, config_text(short_dir), backend=backend):
        pass
    assert received == len(backend.received)


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
            assert r.daemon.metrics is not None
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
            assert r.daemon.metrics is not None
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
