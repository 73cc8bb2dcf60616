"""The daemon keeps the kernel's sync daemons as ``[sync]`` asks: at start, on each
drift-repair pass and after a reload; shown by ``status`` and ``lvsd_sync_daemon_up``."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp

from lvsd import control
from lvsd.errors import IpvsError
from lvsd.ipvs.memory import MemoryBackend
from lvsd.model import SyncState
from tests.daemon.helpers import config_text, eventually, running

SYNC = """
[sync]
state = "both"
interface = "eth1"
syncid = 7
"""


async def test_start_runs_both_daemons_and_status_and_metrics_show_them(
    short_dir: Path,
) -> None:
    async with running(short_dir, config_text(short_dir) + SYNC) as r:
        assert {SyncState.MASTER, SyncState.BACKUP} == set(r.backend.sync)
        answer = await control.request(r.socket, {"command": "status"})
        assert [
            {
                "state": "master",
                "up": True,
                "text": "master eth1 syncid=7 group=224.0.0.81 port=8848 ttl=1 maxlen=1472:"
                " running",
            },
            {
                "state": "backup",
                "up": True,
                "text": "backup eth1 syncid=7 group=224.0.0.81 port=8848 ttl=1 maxlen=1472:"
                " running",
            },
        ] == answer["status"]["sync"]
        assert "Sync daemon master eth1 syncid=7" in answer["text"]
        assert r.daemon.metrics is not None
        value = r.daemon.metrics.registry.get_sample_value
        assert [1.0, 1.0] == [
            value("lvsd_sync_daemon_up", {"state": s}) for s in ("master", "backup")
        ]


async def test_drift_repair_starts_a_daemon_stopped_behind_lvsds_back(short_dir: Path) -> None:
    backend = MemoryBackend()
    async with running(short_dir, config_text(short_dir, reconcile=0.05) + SYNC, backend=backend):
        await backend.stop_sync(SyncState.BACKUP)
        await eventually(lambda: SyncState.BACKUP in backend.sync)


async def test_a_reload_without_sync_stops_the_daemons_lvsd_started(short_dir: Path) -> None:
    async with running(short_dir, config_text(short_dir) + SYNC) as r:
        assert r.daemon.metrics is not None
        value = r.daemon.metrics.registry.get_sample_value
        r.path.write_text(config_text(short_dir))
        await control.request(r.socket, {"command": "reload"})
        assert {} == r.backend.sync
        assert None is value("lvsd_sync_daemon_up", {"state": "master"})
        answer = await control.request(r.socket, {"command": "status"})
        assert [] == answer["status"]["sync"]


async def test_a_daemon_lvsd_cannot_check_shows_down(short_dir: Path) -> None:
    """The kernel refuses the sync requests: the daemon is 0 in the metric, and
    ``status`` gives the kernel's reason."""
    backend = MemoryBackend()
    async with running(short_dir, config_text(short_dir) + SYNC, backend=backend) as r:
        assert r.daemon.sync is not None
        assert r.daemon.engine is not None
        backend.sync_error = IpvsError("sync-daemons", "needs CAP_NET_ADMIN")
        await r.daemon.sync.keep(r.daemon.engine.config.sync)
        answer = await control.request(r.socket, {"command": "status"})
        assert (
            "master eth1 syncid=7: down (needs CAP_NET_ADMIN)"
            == (answer["status"]["sync"][0]["text"])
        )
        assert r.daemon.metrics is not None
        value = r.daemon.metrics.registry.get_sample_value
        assert [0.0, 0.0] == [
            value("lvsd_sync_daemon_up", {"state": s}) for s in ("master", "backup")
        ]
        backend.sync_error = None


async def test_http_status_and_metrics_show_the_sync_daemons(short_dir: Path) -> None:
    """``GET /status`` has the same sync lines as ``lvsd status``; ``/metrics`` the gauge."""
    with socket.socket() as probe:  # a free port (the config refuses port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = config_text(short_dir, metrics_listen=f"127.0.0.1:{port}") + SYNC
    async with running(short_dir, text) as r, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{r.daemon.api_port}"
        async with http.get(f"{base}/status") as response:
            report = await response.json()
        async with http.get(f"{base}/metrics") as response:
            body = await response.text()
    assert [("master", True), ("backup", True)] == [(s["state"], s["up"]) for s in report["sync"]]
    assert 'lvsd_sync_daemon_up{state="master"} 1.0' in body
