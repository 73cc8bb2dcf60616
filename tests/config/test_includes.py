"""include: globs relative to the including file, merged into one config."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

from pathlib import Path

from lvsd.config import load
from tests.config.helpers import problems, write

ROOT = """
include = ["conf.d/*.toml", "extra.ini"]
[daemon]
state_dir = "/srv/lvsd"
"""


def _service(name: str, port: int) -> str:
    return f'[services.{name}]\naddress = "192.168.3.108"\nport = {port}\n'


def test_globs_are_relative_to_the_including_file(tmp_path: Path) -> None:
    """Included files (TOML and INI) add their services in glob order, after the
    including file's, and may set daemon keys it leaves unset."""
    write(tmp_path, "conf.d/b.toml", _service("b", 82))
    write(tmp_path, "conf.d/a.toml", _service("a", 81) + "[daemon]\nmax_exec_probes = 3\n")
    write(tmp_path, "extra.ini", "[service c]\naddress = 192.168.3.108\nport = 83\n")
    root = write(tmp_path, "lvsd.toml", ROOT + _service("main", 80))
    config = load(root)
    assert ["main", "a", "b", "c"] == [s.name for s in config.services]
    assert ("/srv/lvsd", 3) == (config.daemon.state_dir, config.daemon.max_exec_probes)


def test_include_matching_nothing(tmp_path: Path) -> None:
    """A glob matching no file is a problem at its place in the include list."""
    root = write(tmp_path, "lvsd.toml", 'include = ["none/*.toml"]\n')
    assert [(root, "include[0]", 1, 'include "none/*.toml" matches no file')] == problems(root)


def test_problem_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    """A bad value in an included file is reported with the included file's name and
    line, next to the root file's own problems."""
    bad = write(tmp_path, "conf.d/web.toml", _service("web", 80) + "scheduler = 'wrrr'\n")
    root = write(tmp_path, "lvsd.toml", 'include = "conf.d/*.toml"\n[daemon]\nadopt_upp = true\n')
    found = [(file, key, line) for file, key, line, _ in problems(root)]
    assert [(root, "daemon.adopt_upp", 3), (bad, "services.web.scheduler", 4)] == found


def test_syntax_error_in_an_included_file(tmp_path: Path) -> None:
    """A syntax error in an included file names that file and line."""
    bad = write(tmp_path, "conf.d/x.toml", "[services.x\n")
    root = write(tmp_path, "lvsd.toml", 'include = ["conf.d/x.toml"]\n')
    [(file, key, line, message)] = problems(root)
    assert (bad, "", 1) == (file, key, line)
    assert message.startswith("TOML syntax error")


def test_same_service_in_two_files(tmp_path: Path) -> None:
    """A service name defined again in an included file is refused there."""
    other = write(tmp_path, "other.toml", _service("web", 81))
    root = write(tmp_path, "lvsd.toml", 'include = ["other.toml"]\n' + _service("web", 80))
    assert [(other, "services.web", 1, f'service "web" is already defined in {root}')] == problems(
        root
    )


def test_same_daemon_key_in_two_files(tmp_path: Path) -> None:
    """A daemon key set in both files is refused in the included one."""
    other = write(tmp_path, "other.toml", '[daemon]\nstate_dir = "/b"\n')
    root = write(tmp_path, "lvsd.toml", 'include = ["other.toml"]\n[daemon]\nstate_dir = "/a"\n')
    assert [
        (other, "daemon.state_dir", 2, f"daemon.state_dir is already set in {root}")
    ] == problems(root)


def test_include_cycle(tmp_path: Path) -> None:
    """A file including itself (directly or not) is refused instead of looping."""
    write(tmp_path, "b.toml", 'include = ["a.toml"]\n')
    root = write(tmp_path, "a.toml", 'include = ["b.toml"]\n')
    b = str(tmp_path / "b.toml")
    assert [(b, "include[0]", 1, f'include "{root}" includes itself')] == problems(root)


def test_include_in_ini(tmp_path: Path) -> None:
    """[include] files = ... in INI takes space or comma separated globs."""
    write(tmp_path, "conf.d/a.ini", "[service a]\nfwmark = 1\n")
    write(tmp_path, "more.toml", "[services.b]\nfwmark = 2\n")
    root = write(tmp_path, "lvsd.ini", "[include]\nfiles = conf.d/*.ini, more.toml\n")
    assert ["a", "b"] == [s.name for s in load(root).services]
