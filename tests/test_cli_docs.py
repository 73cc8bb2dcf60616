"""The man pages and the shell completions: generated from the parser and the config
schema, committed as generated, and working (groff renders the pages cleanly; bash
and zsh complete the commands)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

import pytest

from lvsd.cli import COMMANDS, build_parser
from lvsd.cli_docs import (
    KEY_SECTIONS,
    OUTPUTS,
    REFERENCE,
    ROOT,
    ReferenceDrift,
    bash_completion,
    config_page,
    man_page,
    options,
    reference_tables,
    subparsers,
    zsh_completion,
    zsh_specs,
)
from lvsd.config.model import CHECK_KINDS, DaemonConfig


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


# --- lvsd.toml(5) --------------------------------------------------------------------


def test_config_page_has_every_key_the_schema_accepts() -> None:
    """Each key of every section the schema validates has an entry, and every check
    kind its own."""
    page = config_page()
    for title, _, keys in KEY_SECTIONS:
        section = page.split(f".SH {title.replace('-', chr(92) + '-')}\n", 1)[1].split(".SH ")[0]
        for key in keys:
            assert f".TP\n\\fB{key}\\fR" in section, (title, key)
    for kind in CHECK_KINDS:
        assert f'\\fBkind = "{kind}"\\fR' in page


def test_a_key_the_reference_lacks_stops_the_generator() -> None:
    """A schema key without its row in docs/configuration.md, or a row for a key the
    schema does not take, is an error naming the key, not a page that silently drifts."""
    reference = REFERENCE.read_text()
    row = next(line for line in reference.splitlines() if line.startswith("| adopt_up |"))
    with pytest.raises(ReferenceDrift, match="adopt_up"):
        config_page(reference.replace(row + "\n", ""))
    with pytest.raises(ReferenceDrift, match="adopt_everything"):
        config_page(reference.replace(row, row + "\n| adopt_everything | bool | `no` | |"))


def _toml(value: object) -> str:
    if value == "":
        return '""'
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_reference_defaults_of_daemon_keys_match_the_model() -> None:
    """The default column of [daemon] (which the page shows) is the model's default."""
    rows = reference_tables(REFERENCE.read_text())["[daemon]"]
    for field in dataclasses.fields(DaemonConfig):
        shown = rows[field.name][1].strip("`")
        expected = "none" if field.default is None else _toml(field.default)
        assert expected == shown, field.name


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_config_page_renders_without_warnings() -> None:
    """``groff -man -ww`` is silent on lvsd.toml(5) (its non-ASCII glyphs are escaped)."""
    page = ROOT / "docs" / "lvsd.toml.5"
    lint = subprocess.run(
        ["groff", "-z", "-ww", "-man", str(page)], capture_output=True, text=True, check=False
    )
    assert ("", 0) == (lint.stderr, lint.returncode)
    assert page.read_text().isascii()


# --- zsh completion ------------------------------------------------------------------


def test_zsh_completion_lists_every_command_and_option() -> None:
    """The commands array names each subcommand with its description, and each
    subcommand's arm has a spec for every one of its options and positionals."""
    text = zsh_completion()
    assert text.startswith("#compdef lvsd\n")
    parser = build_parser()
    for name, sub in subparsers(parser).items():
        assert f"            '{name}:" in text, name
        arm = text.split(f"\n        {name}) _arguments", 1)[1].split(" && ret=0 ;;", 1)[0]
        assert zsh_specs(sub) == [line.strip(" \\") for line in arm.splitlines()[1:]]
        for action in options(sub):
            for flag in action.option_strings:
                assert flag in arm, (name, flag)
    assert "'--log-level[log threshold]:log level:(debug info warning error critical)'" in text
    assert "'1:kind:(keepalived ldirectord)'" in text


#: Runs an interactive zsh in a pty (zsh/zpty) with the completion on $fpath, presses
#: Tab after the line ($2) and prints each candidate compadd was given.
ZSH_DRIVER = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1=''; fpath=($1 \$fpath); autoload -Uz compinit; compinit -u -D"
# the marker is split in the definition, so the echoed input never holds it
hook='compadd () { local -a h; builtin compadd -O h "$@"'
zpty -w z "$hook"'; print -l -- "<h""it>"${^h}; builtin compadd "$@" }'
zpty -w z 'bindkey "^I" complete-word; print "<ready>"'
zpty -r z line '*<ready>*'
zpty -n -w z "$2"$'\t'
zpty -w z $'\C-u'
zpty -w z 'print "<done>"'
while zpty -r z line; do
  [[ $line == *'<done>'* && $line != *print* ]] && break
  [[ $line == *'<hit>'* ]] && print -r -- "${${line##*<hit>}%%$'\r'}"
done
zpty -d z
"""


def zsh_complete(line: str) -> list[str]:
    """What zsh offers on Tab at the end of ``line`` with etc/zsh-completion on $fpath."""
    folder = ROOT / "etc" / "zsh-completion"
    out = subprocess.run(
        ["zsh", "-f", "-c", ZSH_DRIVER, "zsh", str(folder), line],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    # zsh may run the completer twice (once more to list the matches): each word once.
    return list(dict.fromkeys(w for w in out.stdout.splitlines() if w.strip()))


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh not installed")
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("lvsd ", ["check", "run", "status", "reload", "drain", "undrain", "apply", "import"]),
        ("lvsd st", ["status"]),
        ("lvsd import ", ["keepalived", "ldirectord"]),
        ("lvsd --log-level ", ["debug", "info", "warning", "error", "critical"]),
        ("lvsd reload --f", ["--force"]),
        ("lvsd drain --", ["--config", "--socket", "--wait", "--timeout"]),
    ],
)
def test_zsh_completes_commands_options_and_choices(line: str, expected: list[str]) -> None:
    """A real zsh, driven through a pty, offers the commands, a command's options and an
    option's choices."""
    assert expected == zsh_complete(line)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh not installed")
def test_zsh_parses_the_completion() -> None:
    """``zsh -n`` accepts the file (quotes and escapes balanced)."""
    path = ROOT / "etc" / "zsh-completion" / "_lvsd"
    result = subprocess.run(["zsh", "-n", str(path)], capture_output=True, text=True, check=False)
    assert ("", 0) == (result.stderr, result.returncode)
