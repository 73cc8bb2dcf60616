"""The operator commands (``lvsd status/reload/drain/undrain``) against a running daemon."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsd.cli import main
from lvsd.model import DestKey, DestStats
from tests.daemon.helpers import WEB, config_text, running

RS2 = DestKey.of("10.0.0.3", 80)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lvsd-", dir="/tmp") as path:
        yield Path(path)


async def cli(*argv: str) -> int:
    """Run the command line in a thread (it blocks on the socket) while the daemon runs."""
    return await asyncio.to_thread(main, list(argv))


async def test_status_text_and_json(short_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``lvsd status`` prints the table; ``--json`` prints JSON; the socket comes from -c."""
    async with running(short_dir, config_text(short_dir)) as r:
        assert 0 == await cli("status", "-c", str(r.path))
        text = capsys.readouterr().out
        assert "10.0.0.2:80" in text
        assert 0 == await cli("status", "--json", "--socket", r.socket)
        assert '"services": [' in capsys.readouterr().out


async def test_reload_prints_the_ops(short_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``lvsd reload`` prints each op and a count."""
    async with running(short_dir, config_text(short_dir)) as r:
        r.path.write_text(config_text(short_dir, (("10.0.0.2", 2), ("10.0.0.3", 1))))
        assert 0 == await cli("reload", "--socket", r.socket)
        expected = ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=2 nat", "reloaded: 1 op"]
        # the daemon's own log lines share stdout in this test: compare the last two
        assert expected == capsys.readouterr().out.splitlines()[-2:]


async def test_reload_of_a_broken_config_fails(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken config: exit 1 and the problems on stderr."""
    async with running(short_dir, config_text(short_dir)) as r:
        r.path.write_text("[services.web]\nport = 'x'\n")
        assert 1 == await cli("reload", "--socket", r.socket)
        assert "old config kept" in capsys.readouterr().err


async def test_drain_wait_returns_when_connections_end(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``drain --wait`` polls until the active connections reach 0: exit 0."""
    async with running(short_dir, config_text(short_dir)) as r:
        r.backend.dest_stats[(WEB, RS2)] = DestStats(active_connections=2)
        argv = ("drain", "web", "10.0.0.3:80", "--socket", r.socket, "--wait", "--interval", "0.02")
        waiting = asyncio.create_task(cli(*argv))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        r.backend.dest_stats[(WEB, RS2)] = DestStats(active_connections=0)
        assert 0 == await asyncio.wait_for(waiting, 5)
        out = capsys.readouterr().out
        assert "drained web 10.0.0.3:80" in out
        assert "no active connections left" in out
        assert 0 == await cli("undrain", "web", "10.0.0.3:80", "--socket", r.socket)


async def test_drain_wait_times_out(short_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Connections that stay past --timeout: exit 1 with the count left."""
    async with running(short_dir, config_text(short_dir)) as r:
        r.backend.dest_stats[(WEB, RS2)] = DestStats(active_connections=2)
        argv = ("drain", "web", "10.0.0.3:80", "--socket", r.socket, "--wait")
        assert 1 == await cli(*argv, "--timeout", "0.1", "--interval", "0.02")
        assert "2 active connections left" in capsys.readouterr().err


async def test_drain_of_an_unknown_server_fails(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon's refusal becomes exit 1 and its message."""
    async with running(short_dir, config_text(short_dir)) as r:
        assert 1 == await cli("drain", "web", "10.0.0.9:80", "--socket", r.socket)
        assert "no real server 10.0.0.9:80" in capsys.readouterr().err


def test_status_without_a_daemon_fails(short_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No daemon on the socket: exit 1 and a message."""
    assert 1 == main(["status", "--socket", str(short_dir / "none.sock")])
    assert "lvsd:" in capsys.readouterr().err


def test_run_with_a_bad_config_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``lvsd run`` with a broken config: exit 1 and every problem on stderr."""
    path = tmp_path / "lvsd.toml"
    path.write_text("[services.web]\nport = 'x'\nscheduler = 'nope'\n")
    assert 1 == main(["run", "-c", str(path), "--dry-run", "--log-level", "error"])
    err = capsys.readouterr().err
    assert "scheduler" in err
    assert "problems found" in err
