"""Tests of the persisted drain store: round trips, atomic writes, corrupt files."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lvsd.engine.drains import DRAINS_FILE, DrainStore
from lvsd.errors import LvsdError
from lvsd.model import DestKey

RS1 = DestKey.of("10.0.0.2", 80)
RS2 = DestKey.of("2001:db8::2", 443)


def test_missing_file_means_no_drains(tmp_path: Path) -> None:
    """A fresh state dir has no drains and no file is created by reading."""
    store = DrainStore.in_dir(tmp_path)

    assert frozenset() == store.load()
    assert [] == list(tmp_path.iterdir())


def test_drain_persists_across_instances(tmp_path: Path) -> None:
    """A drain written by one store is read back by a new one (a restart)."""
    DrainStore.in_dir(tmp_path).drain("web", RS1)
    DrainStore.in_dir(tmp_path).drain("web6", RS2)

    assert frozenset({("web", RS1), ("web6", RS2)}) == DrainStore.in_dir(tmp_path).load()


def test_drain_and_undrain_report_changes(tmp_path: Path) -> None:
    """drain/undrain return whether anything changed."""
    store = DrainStore(tmp_path / "d.json")

    assert (True, False) == (store.drain("web", RS1), store.drain("web", RS1))
    assert True is store.is_drained("web", RS1)
    assert (True, False) == (store.undrain("web", RS1), store.undrain("web", RS1))
    assert frozenset() == DrainStore(tmp_path / "d.json").load()


def test_file_format_is_versioned_sorted_json(tmp_path: Path) -> None:
    """The file is JSON with a version and drains sorted for stable diffs."""
    store = DrainStore.in_dir(tmp_path)
    store.drain("web", DestKey.of("10.0.0.3", 80))
    store.drain("api", RS1)

    document = json.loads((tmp_path / DRAINS_FILE).read_text())

    assert {
        "version": 1,
        "drains": [
            {"service": "api", "address": "10.0.0.2", "port": 80},
            {"service": "web", "address": "10.0.0.3", "port": 80},
        ],
    } == document


def test_addresses_are_normalised(tmp_path: Path) -> None:
    """An address written in a long form reads back as the same DestKey."""
    path = tmp_path / DRAINS_FILE
    path.write_text(
        json.dumps(
            {"version": 1, "drains": [{"service": "w", "address": "2001:0db8::0002", "port": 443}]}
        )
    )

    assert frozenset({("w", RS2)}) == DrainStore(path).load()


def test_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    """The temporary file is renamed over the target; nothing else remains."""
    store = DrainStore.in_dir(tmp_path)
    store.drain("web", RS1)
    store.drain("web", RS2)

    assert [DRAINS_FILE] == sorted(p.name for p in tmp_path.iterdir())


def test_write_creates_state_dir(tmp_path: Path) -> None:
    """A missing state dir is created on the first write."""
    store = DrainStore.in_dir(tmp_path / "var" / "lib" / "lvsd")

    store.drain("web", RS1)

    assert (tmp_path / "var" / "lib" / "lvsd" / DRAINS_FILE).is_file()


def test_replace_is_atomic_for_a_reader_holding_the_old_file(tmp_path: Path) -> None:
    """A reader that opened the old file keeps the old content (the inode is replaced)."""
    store = DrainStore.in_dir(tmp_path)
    store.drain("web", RS1)
    with (tmp_path / DRAINS_FILE).open() as old:
        store.drain("web", RS2)
        assert 1 == len(json.load(old)["drains"])
    assert 2 == len(json.loads((tmp_path / DRAINS_FILE).read_text())["drains"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ("[]", "expected a JSON object"),
        ('{"drains": []}', "no integer 'version'"),
        ('{"version": 1, "drains": {}}', "'drains' must be a list"),
        ('{"version": 1, "drains": [3]}', r"drains\[0\] is not an object"),
        ('{"version": 1, "drains": [{"address": "10.0.0.2", "port": 80}]}', "service"),
        (
            '{"version": 1, "drains": [{"service": "w", "address": "10.0.0.2", "port": 70000}]}',
            "port must be an integer",
        ),
        (
            '{"version": 1, "drains": [{"service": "w", "address": "host", "port": 80}]}',
            "not an IP address",
        ),
    ],
)
def test_corrupt_file_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    """A corrupt file raises LvsdError naming the file and what is wrong."""
    path = tmp_path / DRAINS_FILE
    path.write_text(content)

    with pytest.raises(LvsdError, match=message) as info:
        DrainStore(path).load()
    assert str(path) in str(info.value)


def test_corrupt_file_is_not_overwritten(tmp_path: Path) -> None:
    """After a failed load, drain() refuses to replace the operator's file."""
    path = tmp_path / DRAINS_FILE
    path.write_text("{garbage")
    store = DrainStore(path)

    with pytest.raises(LvsdError, match="corrupt"):
        store.drain("web", RS1)
    assert "{garbage" == path.read_text()


def test_newer_version_is_refused(tmp_path: Path) -> None:
    """A file from a newer lvsd is not misread."""
    path = tmp_path / DRAINS_FILE
    path.write_text('{"version": 2, "drains": []}')

    with pytest.raises(LvsdError, match="newer lvsd"):
        DrainStore(path).load()


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    """A drain file that cannot be read (here: a directory) is reported with its name."""
    path = tmp_path / DRAINS_FILE
    path.mkdir()

    with pytest.raises(LvsdError, match="cannot read drain state") as info:
        DrainStore(path).load()
    assert str(path) in str(info.value)


def test_unwritable_dir_is_a_clear_error(tmp_path: Path) -> None:
    """A state dir that became a file makes drain() fail with the path in the message."""
    blocker = tmp_path / "state"
    store = DrainStore.in_dir(blocker)
    assert frozenset() == store.load()
    blocker.write_text("")

    with pytest.raises(LvsdError, match="cannot save drain state"):
        store.drain("web", RS1)
    assert frozenset() == store.drained()


@pytest.mark.parametrize(
    "content",
    [
        "{garbage",
        '{"version": 2, "drains": []}',
        '{"version": 1, "drains": [{"service": "w", "address": "10.0.0.2", "port": "80"}]}',
        "[" * 100_000,
    ],
)
def test_recover_sets_a_corrupt_file_aside(tmp_path: Path, content: str) -> None:
    """Start-up never stops on a bad drains.json: it is renamed aside, nothing is lost."""
    path = tmp_path / DRAINS_FILE
    path.write_text(content)
    store = DrainStore(path)

    assert frozenset() == store.recover()
    assert store.set_aside is not None
    assert store.set_aside.name.startswith("drains.json.corrupt-")
    assert content == store.set_aside.read_text()
    assert not path.exists()
    assert store.drain("web", RS1)
    assert frozenset({("web", RS1)}) == DrainStore(path).load()


def test_recover_keeps_the_entries_it_can_read(tmp_path: Path) -> None:
    """One malformed entry costs only itself: the good drains stay in force and on disk."""
    path = tmp_path / DRAINS_FILE
    path.write_text(
        '{"version": 1, "drains": [{"service": "web", "address": "10.0.0.2", "port": 80},'
        ' {"service": "web", "address": "10.0.0.3", "port": "80"}, 7]}'
    )
    store = DrainStore(path)

    kept = store.recover()

    assert frozenset({("web", RS1)}) == kept
    assert kept == DrainStore(path).load()
    assert store.set_aside is not None
    assert store.set_aside.exists()


def test_recover_of_a_good_file_sets_nothing_aside(tmp_path: Path) -> None:
    path = tmp_path / DRAINS_FILE
    DrainStore(path).drain("web", RS1)
    store = DrainStore(path)

    assert frozenset({("web", RS1)}) == store.recover()
    assert store.set_aside is None
    assert [DRAINS_FILE] == [p.name for p in tmp_path.iterdir()]


def test_recover_that_cannot_rename_refuses_to_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the file cannot even be moved, the daemon starts without drains and refuses
    drain commands instead of replacing the operator's file."""
    path = tmp_path / DRAINS_FILE
    path.write_text("{garbage")

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("lvsd.engine.drains.os.replace", refuse)
    store = DrainStore(path)
    assert frozenset() == store.recover()
    assert store.set_aside is None
    with pytest.raises(LvsdError, match="corrupt"):
        store.drain("web", RS1)
    assert "{garbage" == path.read_text()
