"""The operator commands (``lvsd status/reload/drain/undrain``) against a running daemon."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsd.cli import (
    APPLY_WARNING,
    COMMANDS,
    EXIT_CODES,
    EXIT_USAGE,
    build_parser,
    control_socket,
    main,
)
from lvsd.cli_docs import subparsers
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


async def test_status_colour(short_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--color=always`` colours the states; a pipe (here captured output) gets none
    by default, nor with ``never``."""
    async with running(short_dir, config_text(short_dir)) as r:
        assert 0 == await cli("status", "--socket", r.socket, "--color=always")
        assert "\033[32mup\033[0m" in capsys.readouterr().out
        for argv in ((), ("--color=never",)):
            assert 0 == await cli("status", "--socket", r.socket, *argv)
            out = capsys.readouterr().out
            assert "10.0.0.2:80" in out
            assert "\033[" not in out


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("choice", "env", "tty", "expected"),
    [
        ("auto", {}, True, True),
        ("auto", {}, False, False),
        ("auto", {"NO_COLOR": "1"}, True, False),
        ("auto", {"NO_COLOR": ""}, True, True),  # no-color.org: only a non-empty value
        ("auto", {"TERM": "dumb"}, True, False),
        ("always", {"NO_COLOR": "1"}, False, True),  # a flag beats the environment
        ("never", {}, True, False),
    ],
)
def test_colour_choice(
    monkeypatch: pytest.MonkeyPatch, choice: str, env: dict[str, str], tty: bool, expected: bool
) -> None:
    """auto colours a terminal only, unless NO_COLOR is set (non-empty) or TERM is
    dumb; always and never do what they say."""
    from lvsd.cli import _colour

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "stdout", Terminal() if tty else io.StringIO())
    assert expected == _colour(choice)


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


@pytest.mark.parametrize(
    ("active", "left"), [(2, "2 active connections left"), (1, "1 active connection left")]
)
async def test_drain_wait_times_out(
    short_dir: Path, capsys: pytest.CaptureFixture[str], active: int, left: str
) -> None:
    """Connections that stay past --timeout: exit 1 with the count left (in the
    singular for one)."""
    async with running(short_dir, config_text(short_dir)) as r:
        r.backend.dest_stats[(WEB, RS2)] = DestStats(active_connections=active)
        argv = ("drain", "web", "10.0.0.3:80", "--socket", r.socket, "--wait")
        assert 1 == await cli(*argv, "--timeout", "0.1", "--interval", "0.02")
        assert f"lvsd: {left} after" in capsys.readouterr().err


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


# -- help, exit codes, wording -------------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_bare_lvsd_prints_the_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Like git, ``lvsd`` alone shows the help (on stderr) and fails with the usage
    status, instead of argparse's one-line error."""
    assert EXIT_USAGE == main([])
    err = capsys.readouterr().err
    assert err.startswith("usage: lvsd")
    assert all(name in err for name in COMMANDS)


def test_every_subcommand_has_a_one_line_description_and_the_exit_codes() -> None:
    """``lvsd X --help`` says what X does in one line and lists the exit statuses."""
    parsers = subparsers(build_parser())
    assert set(COMMANDS) == set(parsers)
    for name, parser in parsers.items():
        assert parser.description, name
        assert "\n" not in parser.description, name
        assert EXIT_CODES == parser.epilog, name
    assert EXIT_CODES == build_parser().epilog


def test_the_exit_codes_are_documented() -> None:
    """docs/operations.md's exit-code table has the statuses the help lists."""
    codes = {line.split()[0] for line in EXIT_CODES.splitlines()[1:] if line[:3].strip()}
    table = (DOCS / "operations.md").read_text()
    assert {"0", "1", "2", "130"} == codes
    assert all(f"| `{code}` |" in table for code in codes)


def test_check_summary_says_1_service(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Counts take the singular for one: "1 service, 1 real server", not "1 services"."""
    path = tmp_path / "lvsd.toml"
    path.write_text(config_text(tmp_path, (("10.0.0.2", 1),), checks=False))
    assert 0 == main(["check", "-c", str(path)])
    assert f"{path}: 1 service, 1 real server, 0 checks\n" == capsys.readouterr().out


async def test_undrain_of_a_server_not_drained_says_so(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``undrain`` of a server nobody drained succeeds but says it was not drained; a
    second ``drain`` says it already was."""
    async with running(short_dir, config_text(short_dir)) as r:
        assert 0 == await cli("undrain", "web", "10.0.0.3:80", "--socket", r.socket)
        assert "web 10.0.0.3:80 was not drained" in capsys.readouterr().out
        assert 0 == await cli("drain", "web", "10.0.0.3:80", "--socket", r.socket)
        assert "drained web 10.0.0.3:80" in capsys.readouterr().out
        assert 0 == await cli("drain", "web", "10.0.0.3:80", "--socket", r.socket)
        assert "web 10.0.0.3:80 was already drained" in capsys.readouterr().out
        assert 0 == await cli("undrain", "web", "10.0.0.3:80", "--socket", r.socket)
        assert "undrained web 10.0.0.3:80" in capsys.readouterr().out


# -- client verbs read only the socket from -c ---------------------------------------------


async def test_status_works_with_a_typo_in_the_config(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``lvsd status -c FILE`` needs only the socket: a typo elsewhere in FILE (the
    daemon's problem on its next reload) does not stop it."""
    async with running(short_dir, config_text(short_dir)) as r:
        r.path.write_text(r.path.read_text().replace("protocol =", "protocoll ="))
        assert 0 == await cli("status", "-c", str(r.path))
        assert "10.0.0.2:80" in capsys.readouterr().out


@pytest.mark.parametrize("breakage", ["typo", "syntax"])
async def test_reload_with_a_broken_config_reaches_the_daemon(
    short_dir: Path, capsys: pytest.CaptureFixture[str], breakage: str
) -> None:
    """``lvsd reload -c FILE`` with a broken FILE (a typo, or not even TOML) asks the
    daemon, which refuses it and says why: exit 1 and "old config kept"."""
    async with running(short_dir, config_text(short_dir)) as r:
        text = r.path.read_text()
        if breakage == "typo":
            text = text.replace("protocol =", "protocoll =")
        else:
            text = text.replace("[services.web]", "[services.web")
        r.path.write_text(text)
        assert 1 == await cli("reload", "-c", str(r.path))
        err = capsys.readouterr().err
        assert "old config kept" in err
        assert "protocoll" in err if breakage == "typo" else "TOML syntax error" in err


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "a.toml",
            '[daemon]\ncontrol_socket = "/run/x.sock"\n[services.w]\nbad = 1\n',
            "/run/x.sock",
        ),
        ("a.toml", '[daemon\ncontrol_socket = "/run/x.sock" # here\n', "/run/x.sock"),
        ("a.toml", "[services.web]\nport = 80\n", None),
        ("a.toml", "[daemon\n", None),
        ("a.ini", "[daemon]\ncontrol_socket = /run/y.sock\n[nonsense]\n", "/run/y.sock"),
        ("a.ini", "[daemon]\ncontrol_socket = /run/y.sock  # ini\nno equals\n", "/run/y.sock"),
    ],
)
def test_control_socket_is_read_leniently(
    tmp_path: Path, name: str, text: str, expected: str | None
) -> None:
    """The socket path comes from a valid, an invalid or an unparsable file alike;
    None when the file does not set it (the caller takes the default)."""
    path = tmp_path / name
    path.write_text(text)
    assert expected == control_socket(str(path))


def test_control_socket_from_an_included_file(tmp_path: Path) -> None:
    """An included file may set ``[daemon]`` keys, the socket among them."""
    (tmp_path / "main.toml").write_text('include = ["d/*.toml"]\n[services.x]\nbad = 1\n')
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "daemon.toml").write_text('[daemon]\ncontrol_socket = "/run/z.sock"\n')
    assert "/run/z.sock" == control_socket(str(tmp_path / "main.toml"))


def test_client_with_an_unreadable_config_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A -c file that does not exist is an error naming it, not a silent default."""
    assert 1 == main(["status", "-c", str(tmp_path / "nope.toml")])
    assert f"cannot read {tmp_path / 'nope.toml'}" in capsys.readouterr().err


# -- apply warns -----------------------------------------------------------------------------


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """``lvsd.apply.main`` replaced: the calls it got (no kernel is touched)."""
    import lvsd.apply

    calls: list[tuple[str, bool]] = []

    def fake(path: str, dry_run: bool) -> int:
        calls.append((path, dry_run))
        return 0

    monkeypatch.setattr(lvsd.apply, "main", fake)
    return calls


def test_apply_warns_and_runs_without_a_terminal(
    applied: list[tuple[str, bool]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A script (no terminal) is never asked: it gets the warning on stderr and the apply."""
    monkeypatch.setattr("lvsd.cli._interactive", lambda: False)
    assert 0 == main(["apply", "-c", "x.toml"])
    assert [("x.toml", False)] == applied
    assert APPLY_WARNING in capsys.readouterr().err


@pytest.mark.parametrize(("answer", "expected"), [("y\n", 0), ("\n", 1), ("no\n", 1), ("", 1)])
def test_apply_on_a_terminal_asks_first(
    applied: list[tuple[str, bool]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    expected: int,
) -> None:
    """On a terminal, only "y" applies; anything else (or end of input) changes nothing."""
    monkeypatch.setattr("lvsd.cli._interactive", lambda: True)
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    assert expected == main(["apply", "-c", "x.toml"])
    assert ([("x.toml", False)] if expected == 0 else []) == applied
    assert "apply? [y/N]" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--yes"], ["-y"], ["--dry-run"]])
def test_apply_yes_or_dry_run_does_not_ask(
    applied: list[tuple[str, bool]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    """``--yes`` skips the question (the warning stays); ``--dry-run`` changes nothing,
    so it neither warns nor asks."""
    monkeypatch.setattr("lvsd.cli._interactive", lambda: True)
    assert 0 == main(["apply", "-c", "x.toml", *argv])
    assert [("x.toml", "--dry-run" in argv)] == applied
    err = capsys.readouterr().err
    assert "apply? [y/N]" not in err
    assert (APPLY_WARNING in err) == ("--dry-run" not in argv)


# -- errors in the journal ---------------------------------------------------------------


def test_errors_to_the_journal_carry_the_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lvsd check`` as ExecStartPre (stderr is the journal): every problem line starts
    with ``<3>``, so ``journalctl -p err`` shows why the start failed."""
    config = tmp_path / "lvsd.toml"
    config.write_text("[services.web]\nport = 'x'\nscheduler = 'nope'\n")
    journal = tmp_path / "journal"
    with journal.open("w") as err:
        st = os.fstat(err.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        monkeypatch.setattr(sys, "stderr", err)
        assert 1 == main(["check", "-c", str(config)])
    lines = journal.read_text().splitlines()
    assert "<3>2 problems found" == lines[-1]
    assert len(lines) >= 3
    assert all(line.startswith("<3>") for line in lines)


def test_errors_elsewhere_have_no_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a terminal or in a pipe the same lines come without ``<N>``."""
    config = tmp_path / "lvsd.toml"
    config.write_text("[services.web]\nport = 'x'\n")
    assert 1 == main(["check", "-c", str(config)])
    assert not any(line.startswith("<") for line in capsys.readouterr().err.splitlines())
