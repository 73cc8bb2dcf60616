"""The man page (docs/lvsd.8) and bash completion (etc/bash-completion/lvsd), rendered
from the command line's parser so they cannot drift from it (a test compares the
committed files with this output). Regenerate with ``python -m lvsd.cli_docs``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lvsd.cli import DEFAULT_CONFIG, DEFAULT_SOCKET, EXIT_CODES, build_parser

#: Options whose value is a path: the completion offers file names for them.
PATH_OPTIONS = {"config", "socket", "output", "file"}

FILES = (
    (DEFAULT_CONFIG, "the config (TOML, or INI by its extension); see docs/configuration.md"),
    (DEFAULT_SOCKET, "the control socket that status, reload, drain and undrain use"),
    ("/var/lib/lvsd/drains.json", "operator drains, kept across restarts"),
)


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands' parsers, in the order ``lvsd --help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("lvsd's parser has no subcommands")


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The documented options (``--help`` and suppressed ones left out)."""
    return [
        a
        for a in parser._actions
        if a.option_strings
        and a.help != argparse.SUPPRESS
        and not isinstance(a, argparse._HelpAction)
    ]


def positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not a.option_strings]


def _metavar(action: argparse.Action) -> str:
    if action.choices is not None:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return str(action.metavar or action.dest.upper())


# --- the man page -------------------------------------------------------------------


def _roff(text: str) -> str:
    """``text`` safe in roff: backslashes and dashes escaped, no line starting a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def _option_line(action: argparse.Action) -> str:
    names = ", ".join(f"\\fB{_roff(s)}\\fR" for s in action.option_strings)
    if action.nargs == 0:
        return names
    return f"{names} \\fI{_roff(_metavar(action))}\\fR"


def _usage(name: str, parser: argparse.ArgumentParser) -> str:
    words = [f"\\fBlvsd {name}\\fR"]
    words += [f"[{_option_line(a).split(', ')[-1]}]" for a in options(parser)]
    words += [f"\\fI{_roff(_metavar(a))}\\fR" for a in positionals(parser)]
    return " ".join(words)


def man_page() -> str:
    """lvsd(8) in roff (man macros)."""
    parser = build_parser()
    lines = [
        '.TH LVSD 8 "" "lvsd" "System Administration"',
        ".SH NAME",
        "lvsd \\- health\\-checking director daemon for Linux IPVS",
        ".SH SYNOPSIS",
        ".B lvsd",
        " ".join(f"[{_option_line(a)}]" for a in options(parser)),
        "\\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        "lvsd keeps the kernel's IPVS table in line with a config file and the health of",
        "the real servers, which it checks itself. \\fBlvsd run\\fR is the daemon (under",
        "systemd, lvsd.service); the other commands validate a config, talk to the running",
        "daemon over its control socket, program the table once, or convert a keepalived or",
        "ldirectord config. Logs go to stderr (JSON under systemd, with journal priorities).",
        ".SH OPTIONS",
    ]
    for action in options(parser):
        lines += [".TP", _option_line(action), _roff(str(action.help))]
    lines.append(".SH COMMANDS")
    for name, sub in subparsers(parser).items():
        lines += [".TP", _usage(name, sub), _roff(str(sub.description))]
        for action in positionals(sub):
            lines += [".RS", ".TP", f"\\fI{_roff(_metavar(action))}\\fR"]
            lines += [_roff(str(action.help or "")), ".RE"]
        for action in options(sub):
            lines += [".RS", ".TP", _option_line(action), _roff(str(action.help)), ".RE"]
    lines.append(".SH EXIT STATUS")
    for row in EXIT_CODES.splitlines()[1:]:
        code, _, text = row.strip().partition(" ")
        if code.isdigit():
            lines += [".TP", f"\\fB{code}\\fR", _roff(text.strip())]
        else:
            lines.append(_roff(row.strip()))
    lines.append(".SH FILES")
    for path, text in FILES:
        lines += [".TP", f"\\fI{_roff(path)}\\fR", _roff(text)]
    lines += [
        ".SH SEE ALSO",
        "\\fBipvsadm\\fR(8), \\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), \\fBkeepalived\\fR(8);",
        "docs/operations.md and docs/configuration.md in lvsd's sources.",
    ]
    return "\n".join(lines) + "\n"


# --- bash completion -----------------------------------------------------------------


def _words(parser: argparse.ArgumentParser) -> str:
    return " ".join(s for a in options(parser) for s in a.option_strings) + " --help"


def _value_cases(parser: argparse.ArgumentParser) -> list[str]:
    """``case "$prev"`` arms: options whose value is a path, a choice, or free text."""
    paths, free = [], []
    arms = []
    for parsers in (parser, *subparsers(parser).values()):
        for action in options(parsers):
            if action.nargs == 0:
                continue
            names = "|".join(action.option_strings)
            if action.choices is not None:
                words = " ".join(map(str, action.choices))
                arm = f'        {names}) COMPREPLY=($(compgen -W "{words}" -- "$cur")); return ;;'
                if arm not in arms:
                    arms.append(arm)
            elif action.dest in PATH_OPTIONS:
                paths += [n for n in action.option_strings if n not in paths]
            else:
                free += [n for n in action.option_strings if n not in free]
    if paths:
        arms.append(f'        {"|".join(paths)}) COMPREPLY=($(compgen -f -- "$cur")); return ;;')
    if free:
        arms.append(f"        {'|'.join(free)}) return ;;  # a number or text: nothing to offer")
    return arms


def bash_completion() -> str:
    """A bash completion function for lvsd (needs no bash-completion package)."""
    parser = build_parser()
    subs = subparsers(parser)
    takes_value = " ".join(s for a in options(parser) if a.nargs != 0 for s in a.option_strings)
    lines = [
        "# bash completion for lvsd, generated from its parser by `python -m lvsd.cli_docs`.",
        "# Install as /usr/share/bash-completion/completions/lvsd (or source it).",
        "_lvsd() {",
        "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}",
        "    local i cmd='' nargs=0",
        '    case "$prev" in',
        *_value_cases(parser),
        "    esac",
        "    # the command is the first word that is neither an option nor an option's value",
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        case "${COMP_WORDS[i]}" in',
        f"            {takes_value.replace(' ', '|')}) ((i++)) ;;",
        "            -*) ;;",
        "            *) if [[ -z $cmd ]]; then cmd=${COMP_WORDS[i]}; else ((nargs++)); fi ;;",
        "        esac",
        "    done",
        '    case "$cmd" in',
        f'        "") COMPREPLY=($(compgen -W "{_words(parser)} {" ".join(subs)}" -- "$cur")) ;;',
    ]
    for name, sub in subs.items():
        words = _words(sub)
        first = next(iter(positionals(sub)), None)
        if first is not None and first.choices is not None:
            choices = " ".join(map(str, first.choices))
            lines += [
                f"        {name})",
                "            if [[ $cur == -* ]]; then",
                f'                COMPREPLY=($(compgen -W "{words}" -- "$cur"))',
                "            elif ((nargs == 0)); then",
                f'                COMPREPLY=($(compgen -W "{choices}" -- "$cur"))',
                "            else",
                '                COMPREPLY=($(compgen -f -- "$cur"))',
                "            fi ;;",
            ]
        else:
            lines.append(f'        {name}) COMPREPLY=($(compgen -W "{words}" -- "$cur")) ;;')
    lines += ["    esac", "}", "complete -F _lvsd lvsd"]
    return "\n".join(lines) + "\n"


ROOT = Path(__file__).resolve().parent.parent
#: Each generated file, by its path in the source tree.
OUTPUTS = {"docs/lvsd.8": man_page, "etc/bash-completion/lvsd": bash_completion}


def main() -> int:
    """Write the generated files into the source tree."""
    for name, render in OUTPUTS.items():
        path = ROOT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render())
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
