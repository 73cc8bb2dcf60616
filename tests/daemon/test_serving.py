"""``daemon.serving_file``: ``0`` while the director can serve (lvsd running, every
service above its quorum), ``1`` when not, for keepalived's track_file."""

from __future__ import annotations

from pathlib import Path

from lvsd.engine.serving import ServingFile
from tests.daemon.helpers import config_text, eventually, running


def _config(folder: Path, *, quorum: int | None = None) -> str:
    text = config_text(folder).replace(
        "[daemon]\n", f'[daemon]\nserving_file = "{folder}/serving"\n', 1
    )
    if quorum is not None:
        text = text.replace(
            'initial_state = "up"\n', f'initial_state = "up"\nquorum.minimum = {quorum}\n'
        )
    return text


async def test_serving_follows_the_real_servers_and_ends_with_the_daemon(short_dir: Path) -> None:
    """Both real servers down: 1; one back: 0; lvsd stopping: 1."""
    serving = short_dir / "serving"
    async with running(short_dir, _config(short_dir)) as r:
        assert "0\n" == serving.read_text()
        r.probes.down |= {"10.0.0.2", "10.0.0.3"}
        await eventually(lambda: serving.read_text() == "1\n")
        r.probes.down.discard("10.0.0.3")
        await eventually(lambda: serving.read_text() == "0\n")
    assert "1\n" == serving.read_text()


async def test_a_service_below_its_quorum_cannot_serve(short_dir: Path) -> None:
    """With quorum.minimum = 2, one real server down is enough."""
    serving = short_dir / "serving"
    async with running(short_dir, _config(short_dir, quorum=2)) as r:
        assert "0\n" == serving.read_text()
        r.probes.down.add("10.0.0.2")
        await eventually(lambda: serving.read_text() == "1\n")


async def test_without_the_key_no_file_is_written(short_dir: Path) -> None:
    async with running(short_dir, config_text(short_dir)) as r:
        assert r.daemon.serving is None
    assert not (short_dir / "serving").exists()


def test_the_file_is_written_only_when_the_answer_changes(tmp_path: Path) -> None:
    """A new file renamed over the old one: a reader never sees it half written."""
    path = tmp_path / "run" / "serving"
    serving = ServingFile(str(path))
    serving.set([])
    assert "0\n" == path.read_text()
    inode = path.stat().st_ino
    serving.set([])
    assert inode == path.stat().st_ino
    serving.set(["web: quorum lost"])
    assert "1\n" == path.read_text()
    assert ["serving"] == [p.name for p in path.parent.iterdir()]
