"""Start-up claims its sockets before it writes the kernel; the control socket answers
nothing before the daemon serves; a SIGHUP while the daemon imports does not kill it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lvsd.daemon.admin import Admin
from lvsd.engine.reconcile import Engine
from lvsd.errors import ControlError, LvsdError
from lvsd.ipvs.memory import MemoryBackend
from tests.daemon.helpers import RS1, RS2, config_text, eventually, running, weight


async def test_a_second_instance_writes_nothing_to_the_kernel(short_dir: Path) -> None:
    """The second daemon finds the control socket taken and stops before its first op."""
    async with running(short_dir, config_text(short_dir)) as first:
        before = list(first.backend.received)
        second = MemoryBackend()
        (short_dir / "two").mkdir()
        with pytest.raises(ControlError, match="already running"):
            async with running(short_dir / "two", config_text(short_dir), backend=second):
                pass
        assert ([], before) == (second.received, first.backend.received)


async def test_a_metrics_port_in_use_stops_start_up_before_any_kernel_write(
    short_dir: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        backend = MemoryBackend()
        with pytest.raises(LvsdError, match="cannot serve metrics"):
            async with running(
                short_dir, config_text(short_dir, metrics_listen=listen), backend=backend
            ):
                pass
        assert [] == backend.received


async def test_commands_wait_until_the_daemon_serves(short_dir: Path) -> None:
    async with running(short_dir, config_text(short_dir)) as r:
        engine = r.daemon.engine
        assert isinstance(engine, Engine)
        admin = Admin(engine, r.daemon.reload, r.daemon.clock, lambda: False)
        with pytest.raises(ControlError, match="starting or stopping"):
            await admin.handle({"command": "status"})
        assert "status" in await Admin(engine, r.daemon.reload, r.daemon.clock).handle(
            {"command": "status"}
        )


def test_a_sighup_while_the_daemon_starts_does_not_kill_it() -> None:
    """``lvsd run`` ignores SIGHUP until its loop handles it (a reload then)."""
    script = (
        "import os, signal, sys\n"
        "import lvsd.daemon.lifecycle as lifecycle\n"
        "from lvsd import cli\n"
        "def run(path, dry_run=False):\n"
        "    os.kill(os.getpid(), signal.SIGHUP)\n"
        "    return 0\n"
        "lifecycle.run = run\n"
        "sys.exit(cli.main(['run', '-c', '/nonexistent.toml']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert (0, b"") == (done.returncode, done.stderr)


async def test_a_corrupt_drain_file_is_set_aside_and_checking_goes_on(short_dir: Path) -> None:
    """A drains.json with a string port once stopped start-up; now the good entry stays
    drained, the file is kept beside, and the other server is health-checked in."""
    state = short_dir / "state"
    state.mkdir()
    (state / "drains.json").write_text(
        '{"version": 1, "drains": [{"service": "web", "address": "10.0.0.2", "port": 80},'
        ' {"service": "web", "address": "10.0.0.3", "port": "80"}]}'
    )
    async with running(short_dir, config_text(short_dir)) as r:
        await eventually(lambda: weight(r.backend, RS2) == 1)
        assert 0 == weight(r.backend, RS1)
        assert [] != list(state.glob("drains.json.corrupt-*"))
