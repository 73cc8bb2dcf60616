"""The control commands and the API's source (``lvsd.daemon.admin``), through the real
control socket and HTTP endpoint of a running daemon."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lvsd import control
from lvsd.daemon.admin import parse_realserver
from lvsd.errors import ControlError, LvsdError
from lvsd.model import DestKey, DestStats
from tests.daemon.helpers import RS1, RS2, WEB, config_text, eventually, running, weight


async def test_control_reload_applies_the_difference(short_dir: Path) -> None:
    """``reload`` over the socket re-reads the file and answers with the ops."""
    async with running(short_dir, config_text(short_dir)) as r:
        r.path.write_text(config_text(short_dir, (("10.0.0.2", 4), ("10.0.0.3", 1))))
        answer = await control.request(r.socket, {"command": "reload"})
        assert ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=4 nat"] == answer["ops"]
        assert 4 == weight(r.backend, RS1)
        assert any(m.startswith("RELOADING=1") for m in r.notifier.sent)
        assert r.notifier.sent[-1].startswith("READY=1")


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


async def test_status_shows_the_schedulers_lag(short_dir: Path) -> None:
    """``lvsd status`` says how far behind the check scheduler runs (JSON and text)."""
    async with running(short_dir, config_text(short_dir)) as r:
        answer = await control.request(r.socket, {"command": "status"})
    scheduler = answer["status"]["scheduler"]
    assert {"late_max_s", "lagged_s", "stretched", "skipped", "overruns"} == set(scheduler)
    assert "Checks: late by at most" in answer["text"]


async def test_unknown_command_is_refused(short_dir: Path) -> None:
    """An unknown command lists the known ones."""
    async with running(short_dir, config_text(short_dir)) as r:
        with pytest.raises(ControlError, match="known: connections, drain"):
            await control.request(r.socket, {"command": "explode"})


async def test_odd_fields_are_bad_requests_named_briefly(short_dir: Path) -> None:
    """A command or field of the wrong JSON type, or a huge one, is answered with a
    short error naming it (never rendering a client's value in full)."""
    drain = {"command": "drain", "realserver": "10.0.0.2:80"}
    async with running(short_dir, config_text(short_dir)) as r:
        answers = [
            (await control.request(r.socket, request, check=False))["error"]
            for request in (
                {"command": ["status"]},
                {"command": "x" * 10_000},
                {**drain, "service": [[["web"]]]},
                {**drain, "service": "web", "realserver": 80},
            )
        ]
    known = "(known: connections, drain, reload, status, undrain)"
    assert [
        f"unknown command a JSON array {known}",
        f"unknown command '{'x' * 64}...' {known}",
        "bad request: 'service' must be a string, not a JSON array",
        "bad request: 'realserver' must be a string, not a JSON number",
    ] == answers


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
        assert "\nprocess_open_fds " in body  # fd exhaustion is visible before it bites
        assert "_created" not in body
        async with http.get(f"{base}/status") as response:
            assert 200 == response.status
        assert "lvsd_config_last_reload_successful 1.0" in body
        r.path.write_text("[services.web]\nport = 'x'\n")
        with pytest.raises(ControlError):
            await control.request(r.socket, {"command": "reload"})
        async with http.get(f"{base}/metrics") as response:
            body = await response.text()
        assert "lvsd_config_last_reload_successful 0.0" in body


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
