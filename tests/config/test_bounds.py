"""Hostile or careless input: every number finite and bounded, HTTP text without line
breaks, reading bounded (regular files, size, count, depth, each file once)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lvsd.config import load, loader
from tests.config.helpers import problems, write

SERVICE = """
[services.web]
address = "192.0.2.1"
port = 80
[[services.web.real_servers]]
address = "10.0.0.2"
check = {{kind = "http", {check}}}
"""


@pytest.mark.parametrize(
    ("check", "key", "message"),
    [
        ("interval = nan", "interval", "expected a finite number, got nan"),
        ("interval = inf", "interval", "expected a finite number, got inf"),
        ("interval = 1e-300", "interval", "1e-300 is out of range (expected >= 0.01)"),
        ("interval = 1e9", "interval", "1000000000.0 is out of range (expected at most"),
        ("timeout = nan", "timeout", "expected a finite number, got nan"),
        ("rise = 1" + "0" * 40, "rise", "an integer of more than 30 digits is out of range"),
        ('method = "GET / HTTP/1.1\\r\\nX: y"', "method", "bad method"),
        ('path = "/a\\r\\nX: y"', "path", "bad path"),
        ('host = "h\\nX: y"', "host", "bad host"),
        ('headers = {"X-A" = "v\\r\\nInjected: 1"}', "headers", "bad value of X-A"),
        ('headers = {"Bad Name" = "v"}', "headers", "bad header name"),
    ],
)
def test_bad_check_values_are_refused(tmp_path: Path, check: str, key: str, message: str) -> None:
    path = write(tmp_path, "c.toml", SERVICE.format(check=check))
    [(file, found_key, line, text)] = problems(path)
    assert (path, f"services.web.real_servers[0].check.{key}", 6) == (file, found_key, line)
    assert text.startswith(message), text


def test_an_integer_too_long_for_python_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", "[daemon]\nreconcile_interval = 1" + "0" * 5000 + "\n")
    [(file, _, _, text)] = problems(path)
    assert (path, "TOML value refused: an integer with too many digits") == (file, text)


@pytest.mark.parametrize(
    "text",
    [
        "x = " + "[" * 500 + "]" * 500,
        "x = " + "{a = " * 500 + "1" + "}" * 500,
        "a." * 20000 + "b = 1",
        "[" + "a." * 40 + "b]\nc = 1",
    ],
    ids=["arrays", "inline-tables", "dotted-key", "table-header"],
)
def test_deep_nesting_is_a_config_error_naming_the_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "c.toml", text + "\n")
    assert [(path, "", None, "values nested more than 32 deep")] == problems(path)


def test_deep_nesting_in_ini_dotted_keys_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "c.ini", "[daemon]\n" + "a." * 40 + "b = 1\n")
    assert [(path, "", None, "values nested more than 32 deep")] == problems(path)


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.toml"
    zero.symlink_to("/dev/zero")
    for name in ("fifo.toml", "zero.toml"):
        main = write(tmp_path, "main.toml", f'include = ["{name}"]\n')
        [(file, _, _, message)] = problems(main)
        assert (str(tmp_path / name), "cannot read the file: not a regular file") == (
            file,
            message,
        )
        assert [(str(tmp_path / name), "", None, "cannot read the file: not a regular file")] == (
            problems(str(tmp_path / name))
        )


def test_a_file_included_twice_is_an_error_naming_the_second_include(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", 'include = ["c.toml"]\n')
    second = write(tmp_path, "b.toml", 'include = ["c.toml"]\n')
    write(tmp_path, "c.toml", "")
    main = write(tmp_path, "main.toml", 'include = ["a.toml", "b.toml"]\n')
    c = str(tmp_path / "c.toml")
    assert [(second, "include[0]", 1, f'include "{c}": the file is already included')] == (
        problems(main)
    )


def test_files_that_include_each_other_are_each_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve files that all include each other: 13 reads, not 12! paths through them."""
    reads: list[str] = []
    real_read = loader._read_text

    def counted(file: str) -> str:
        reads.append(file)
        return real_read(file)

    monkeypatch.setattr(loader, "_read_text", counted)
    for i in range(12):
        write(tmp_path, f"d/{i:02}.toml", 'include = ["*.toml"]\n')
    problems(write(tmp_path, "main.toml", 'include = ["d/*.toml"]\n'))
    assert 13 == len(reads)


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    with big.open("wb") as handle:
        handle.truncate(65 * 1024 * 1024)  # sparse: no disk used
    assert [(str(big), "", None, "cannot read the file: larger than 64 MiB")] == problems(str(big))


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ('control_socket = ""', "control_socket", "expected an absolute path of at most 95"),
        ('control_socket = "lvsd.sock"', "control_socket", "expected an absolute path"),
        (f'control_socket = "/{"s" * 95}"', "control_socket", "expected an absolute path"),
        ('state_dir = "var/lib/lvsd"', "state_dir", "expected an absolute path"),
        ('control_group = "no-such-group-lvsd"', "control_group", 'group "no-such-group-lvsd"'),
        ('metrics_listen = "::1:9475"', "metrics_listen", 'expected "ADDRESS:PORT"'),
        ('metrics_listen = "[127.0.0.1]:9475"', "metrics_listen", 'expected "ADDRESS:PORT"'),
        ('metrics_listen = ":9475"', "metrics_listen", 'expected "ADDRESS:PORT"'),
    ],
)
def test_daemon_paths_as_run_uses_them(tmp_path: Path, line: str, key: str, message: str) -> None:
    path = write(tmp_path, "c.toml", f"[daemon]\n{line}\n")
    [(file, found_key, found_line, text)] = problems(path)
    assert (path, f"daemon.{key}", 2) == (file, found_key, found_line)
    assert text.startswith(message), text


def test_a_socket_path_of_95_bytes_loads(tmp_path: Path) -> None:
    path = write(tmp_path, "c.toml", f'[daemon]\ncontrol_socket = "/{"s" * 94}"\n')
    assert 95 == len(load(path).daemon.control_socket)
