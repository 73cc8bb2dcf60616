"""``lvsd apply``: one pass of config -> kernel with every real server up."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.apply import all_up, apply_once, summary
from lvsd.config import load
from lvsd.desired import ServerHealth
from lvsd.errors import IpvsError
from lvsd.ipvs.memory import MemoryBackend
from lvsd.model import ApplyResult, DestKey, Op
from tests.engine.helpers import WEB, config_text, write


async def test_apply_adds_everything_and_reports_each_op(tmp_path: Path) -> None:
    """An empty table gets the service and both real servers; each op is reported."""
    config = load(write(tmp_path, config_text((("10.0.0.2", 2), ("10.0.0.3", 1)))))
    backend = MemoryBackend()
    lines: list[str] = []
    result = await apply_once(config, backend, dry_run=False, report=lines.append)
    expected = [
        "add-service tcp 192.168.3.108:80 wrr",
        "add-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=2 nat",
        "add-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=1 nat",
    ]
    assert expected == lines
    assert result.ok
    assert {DestKey.of("10.0.0.2", 80): 2, DestKey.of("10.0.0.3", 80): 1} == {
        k: d.weight for k, d in backend.table[WEB].destinations.items()
    }


async def test_apply_twice_is_a_no_op(tmp_path: Path) -> None:
    """A second apply of the same config issues no op."""
    config = load(write(tmp_path, config_text()))
    backend = MemoryBackend()
    await apply_once(config, backend, dry_run=False)
    received = len(backend.received)
    result = await apply_once(config, backend, dry_run=False)
    assert ApplyResult() == result
    assert received == len(backend.received)
    assert "nothing to do: the kernel table already matches the config" == summary(
        result, dry_run=False
    )


async def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    """--dry-run plays the ops on a copy: the backend receives none."""
    config = load(write(tmp_path, config_text()))
    backend = MemoryBackend()
    result = await apply_once(config, backend, dry_run=True)
    assert 3 == len(result.applied)
    assert [] == backend.received
    assert {} == backend.table
    assert "dry run: 3 ops would be applied (0 would fail); nothing changed" == summary(
        result, dry_run=True
    )


async def test_dry_run_with_an_unreadable_table_plans_against_empty(tmp_path: Path) -> None:
    """When the table cannot be read a dry run says so and plans from empty."""
    config = load(write(tmp_path, config_text()))
    backend = MemoryBackend()
    backend.dump_error = IpvsError("dump", "permission denied")
    lines: list[str] = []
    result = await apply_once(config, backend, dry_run=True, report=lines.append)
    assert (
        lines[0] == "# live table unreadable (permission denied); planning against an empty table"
    )
    assert 3 == len(result.applied)


async def test_unreadable_table_raises_without_dry_run(tmp_path: Path) -> None:
    """Without --dry-run an unreadable table is an IpvsError."""
    config = load(write(tmp_path, config_text()))
    backend = MemoryBackend()
    backend.dump_error = IpvsError("dump", "permission denied")
    with pytest.raises(IpvsError, match="permission denied"):
        await apply_once(config, backend, dry_run=False)


async def test_failed_ops_are_counted(tmp_path: Path) -> None:
    """A refused op is in the result and in the summary."""
    config = load(write(tmp_path, config_text()))

    def refuse(op: Op) -> IpvsError | None:
        return IpvsError(str(op), "refused") if op.dest is not None and op.dest.port == 80 else None

    backend = MemoryBackend(fail=refuse)
    result = await apply_once(config, backend, dry_run=False)
    assert (1, 2) == (len(result.applied), len(result.failed))
    assert "3 ops: 1 applied, 2 failed" == summary(result, dry_run=False)


async def test_apply_sets_the_ipvs_timeouts_that_differ(tmp_path: Path) -> None:
    """``[ipvs]`` timeouts are reported and set (a dry run only reports them); equal
    ones are not reported."""
    config = load(write(tmp_path, "[ipvs]\ntcp = 3600\n" + config_text()))
    dry, real = MemoryBackend(), MemoryBackend()
    lines: list[str] = []
    await apply_once(config, dry, dry_run=True, report=lines.append)
    await apply_once(config, real, dry_run=False)
    again: list[str] = []
    await apply_once(config, real, dry_run=False, report=again.append)
    said = "set-timeouts tcp 3600 tcpfin 120 udp 300 (was tcp 900 tcpfin 120 udp 300)"
    assert said in lines
    assert (900, 3600) == (dry.timeouts.tcp, real.timeouts.tcp)
    assert [] == again


def test_all_up_gives_configured_weights(tmp_path: Path) -> None:
    """all_up says every real server is up at its configured weight."""
    config = load(write(tmp_path, config_text((("10.0.0.2", 4),))))
    assert {("web", DestKey.of("10.0.0.2", 80)): ServerHealth(up=True, weight=4)} == all_up(config)
