"""The man page and the bash completion: generated from the parser, committed as
generated, and working (groff renders the page cleanly; bash completes the commands)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from lvsd.cli import COMMANDS, build_parser
from lvsd.cli_docs import OUTPUTS, ROOT, bash_completion, man_page, options, subparsers


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_committed_files_are_what_the_parser_renders(name: str) -> None:
    """docs/lvsd.8 and etc/bash-completion/lvsd match the parser: after a change to
    the command line, run ``python -m lvsd.cli_docs``."""
    assert OUTPUTS[name]() == (ROOT / name).read_text()


def test_man_page_lists_every_command_and_option() -> None:
    """Each subcommand has its entry, with its description and every option."""
    page = man_page()
    for name, sub in subparsers(build_parser()).items():
        entry = page.split(f".TP\n\\fBlvsd {name}\\fR", 1)[1].split("\n.TP\n\\fBlvsd ", 1)[0]
        assert COMMANDS[name][1:].replace("-", "\\-") in entry, name
        for action in options(sub):
            for flag in action.option_strings:
                escaped = flag.replace("-", "\\-")
                assert f"\\fB{escaped}\\fR" in entry, (name, flag)
    assert ".SH EXIT STATUS\n.TP\n\\fB0\\fR\nsuccess" in page


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_man_page_renders_without_warnings() -> None:
    """``groff -man -ww`` has nothing to say about the page, and the text shows the
    commands."""
    page = ROOT / "docs" / "lvsd.8"
    lint = subprocess.run(
        ["groff", "-z", "-ww", "-man", str(page)], capture_output=True, text=True, check=False
    )
    assert ("", 0) == (lint.stderr, lint.returncode)
    text = subprocess.run(
        ["groff", "-man", "-Tutf8", "-P-cbou", str(page)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "lvsd undrain" in text


def complete(line: str) -> list[str]:
    """What bash offers at the end of ``line`` with the completion loaded."""
    script = (
        f"{bash_completion()}\n"
        f'COMP_LINE={line!r}; read -ra COMP_WORDS <<< "$COMP_LINE"\n'
        '[[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")\n'
        "COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n"
        '_lvsd; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return [w for w in out.stdout.splitlines() if w]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("lvsd dr", ["drain"]),
        ("lvsd un", ["undrain"]),
        ("lvsd --log-level ", ["debug", "info", "warning", "error", "critical"]),
        ("lvsd --log-level info st", ["status"]),
        ("lvsd import ", ["keepalived", "ldirectord"]),
        ("lvsd apply --y", ["--yes"]),
        ("lvsd reload --f", ["--force"]),
        ("lvsd reload --timeout ", []),
    ],
)
def test_bash_completes_commands_options_and_choices(line: str, expected: list[str]) -> None:
    """Commands, a command's options and an option's choices are offered."""
    assert expected == complete(line)


def test_bash_offers_every_command() -> None:
    """A bare ``lvsd `` offers every command (and the global options)."""
    offered = complete("lvsd ")
    assert set(COMMANDS) <= set(offered)
    assert "--log-level" in offered
