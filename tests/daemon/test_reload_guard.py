"""The destructive-reload guard: an emptied or truncated file is refused (the old
config and the table kept) unless forced; any error in a reload is a failed reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.config.model import Config
from lvsd.engine.guard import too_destructive
from tests.daemon.helpers import config_text, running

FOUR = (("10.0.0.2", 1), ("10.0.0.3", 1), ("10.0.0.4", 1), ("10.0.0.5", 1))


async def test_an_emptied_file_is_refused_and_the_table_kept(short_dir: Path) -> None:
    async with running(short_dir, config_text(short_dir)) as r:
        ops = list(r.backend.received)
        r.path.write_text("")
        result = await r.daemon.reload()
        assert (False, ops) == (result.ok, r.backend.received)
        assert "removes every service (1)" in result.errors[0]
        assert "--force" in result.errors[0]
        forced = await r.daemon.reload(force=True)
        assert forced.ok
        assert ("del-service tcp 192.168.3.108:80 wrr",) == forced.ops


async def test_a_truncated_file_removing_most_real_servers_is_refused(short_dir: Path) -> None:
    async with running(short_dir, config_text(short_dir, FOUR)) as r:
        r.path.write_text(config_text(short_dir, FOUR[:1]))
        result = await r.daemon.reload()
        assert not result.ok
        assert "removes 3 of the 4 real servers of service web" in result.errors[0]
        r.path.write_text(config_text(short_dir, FOUR[:2]))  # half: allowed
        assert (await r.daemon.reload()).ok


async def test_an_error_while_loading_is_a_failed_reload(short_dir: Path) -> None:
    async with running(short_dir, config_text(short_dir)) as r:

        def broken() -> Config:
            raise RecursionError("deep")

        r.daemon._load = lambda _path: broken()
        result = await r.daemon.reload()
        assert (False, ("RecursionError: deep",)) == (result.ok, result.errors)
        assert r.notifier.sent[-1].startswith("READY=1")


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5])
def test_the_guard_is_off_at_one(share: float, tmp_path: Path) -> None:
    from lvsd.config import load

    (tmp_path / "a.toml").write_text(config_text(tmp_path, FOUR))
    (tmp_path / "b.toml").write_text("")
    old, new = load(str(tmp_path / "a.toml")), load(str(tmp_path / "b.toml"))
    assert too_destructive(old, new, share) is not None
    assert too_destructive(old, new, 1.0) is None


async def test_a_reload_names_the_daemon_settings_that_wait_for_a_restart(
    short_dir: Path,
) -> None:
    """``state_dir`` or ``max_exec_probes`` changed by a reload: applied, and the answer
    says they take effect at the next start; a setting read live needs no restart."""
    async with running(short_dir, config_text(short_dir)) as r:
        text = config_text(short_dir, reconcile=20.0)
        r.path.write_text(text)
        assert () == (await r.daemon.reload()).restart_needed
        r.path.write_text(
            text.replace(f'"{short_dir}/state"', f'"{short_dir}/elsewhere"').replace(
                "[daemon]", "[daemon]\nmax_exec_probes = 4"
            )
        )
        result = await r.daemon.reload()
        assert result.ok
        assert ("daemon.state_dir", "daemon.max_exec_probes") == result.restart_needed
        assert ["daemon.state_dir", "daemon.max_exec_probes"] == result.to_json()["restart_needed"]
