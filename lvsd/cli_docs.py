"""The man pages and shell completions, rendered so they cannot drift (a test compares
the committed files with this output): lvsd(8) (docs/lvsd.8) and the bash and zsh
completions (etc/bash-completion/lvsd, etc/zsh-completion/_lvsd) from the command
line's parser; lvsd.toml(5) (docs/lvsd.toml.5) from the config schema's keys, with the
meaning of each taken from docs/configuration.md (a key missing there, or documented
there but unknown to the schema, stops the generator). Regenerate with
``python -m lvsd.cli_docs``."""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from lvsd.cli import DEFAULT_CONFIG, DEFAULT_SOCKET, EXIT_CODES, build_parser
from lvsd.config.model import CHECK_KINDS, DaemonConfig
from lvsd.config.schema import (
    CHECK_COMMON_KEYS,
    CHECK_TIMING_KEYS,
    DEFAULTS_KEYS,
    IPVS_KEYS,
    NOTIFY_KEYS,
    PANIC_KEYS,
    QUORUM_KEYS,
    REAL_SERVER_KEYS,
    SERVICE_KEYS,
    SORRY_KEYS,
    TOP_KEYS,
)

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


# --- zsh completion ------------------------------------------------------------------


def _zsh_text(text: str) -> str:
    """``text`` inside a single-quoted ``_arguments`` spec: quotes, brackets and colons
    escaped."""
    return re.sub(r"([\[\]:\\])", r"\\\1", text).replace("'", "'\\''")


def _zsh_value(action: argparse.Action) -> str:
    """The ``:message:action`` part of a spec: choices, file names, or free text."""
    name = _zsh_text(action.dest.replace("_", " "))
    if action.choices is not None:
        return f":{name}:({' '.join(map(str, action.choices))})"
    if action.dest in PATH_OPTIONS:
        return f":{name}:_files"
    return f":{name}: "


def zsh_specs(parser: argparse.ArgumentParser) -> list[str]:
    """The ``_arguments`` specs of ``parser``'s options and positionals."""
    specs = []
    for action in options(parser):
        names = action.option_strings
        help_text = f"[{_zsh_text(str(action.help))}]"
        value = "" if action.nargs == 0 else _zsh_value(action)
        if len(names) == 1:
            specs.append(f"'{names[0]}{help_text}{value}'")
        else:
            specs.append(f"'({' '.join(names)})'{{{','.join(names)}}}'{help_text}{value}'")
    words = [a for a in positionals(parser) if not isinstance(a, argparse._SubParsersAction)]
    for index, action in enumerate(words, 1):
        specs.append(f"'{index}{_zsh_value(action)}'")
    return specs


def zsh_completion() -> str:
    """A zsh completion function for lvsd (``#compdef``, for a directory on $fpath)."""
    parser = build_parser()
    subs = subparsers(parser)
    glue = " \\\n        "
    lines = [
        "#compdef lvsd",
        "# zsh completion for lvsd, generated from its parser by `python -m lvsd.cli_docs`.",
        "# Install as _lvsd in a directory on $fpath (Debian: /usr/share/zsh/vendor-completions).",
        "",
        "_lvsd() {",
        "    local curcontext=$curcontext state line ret=1",
        "    typeset -A opt_args",
        f"    _arguments -C{glue}{glue.join(zsh_specs(parser))}{glue}"
        f"'1:command:->command'{glue}'*::argument:->argument' && ret=0",
        "    case $state in",
        "    command)",
        "        local -a commands=(",
        *(f"            '{name}:{_zsh_text(str(sub.description))}'" for name, sub in subs.items()),
        "        )",
        "        _describe -t commands 'lvsd command' commands && ret=0 ;;",
        "    argument)",
        "        curcontext=${curcontext%:*:*}:lvsd-$line[1]:",
        "        case $line[1] in",
    ]
    for name, sub in subs.items():
        lines.append(f"        {name}) _arguments{glue}    {(glue + '    ').join(zsh_specs(sub))}")
        lines[-1] += " && ret=0 ;;"
    lines += ["        esac ;;", "    esac", "    return ret", "}", "", '_lvsd "$@"']
    return "\n".join(lines) + "\n"


# --- lvsd.toml(5) ---------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
#: The configuration reference whose tables give each key's type, default and meaning.
REFERENCE = ROOT / "docs" / "configuration.md"

#: The reference's non-ASCII characters, as roff writes them (groff -ww accepts ASCII).
_GLYPHS = {
    "\u2265": "\\(>=",  # greater-than or equal
    "\u2264": "\\(<=",
    "\u2192": "\\(->",
    "\u2026": "...",
    "\u2212": "\\-",  # minus sign
    "\u00d7": "\\(mu",  # multiplication sign
    "\u00b1": "\\(+-",
}

#: (page section, reference heading, the keys the schema accepts there).
KEY_SECTIONS = (
    ("[daemon]", "[daemon]", tuple(f.name for f in dataclasses.fields(DaemonConfig))),
    ("[ipvs]", "[ipvs]", IPVS_KEYS),
    ("[services.NAME]", "[services.NAME]", SERVICE_KEYS),
    ("[[services.NAME.real_servers]]", "[[services.NAME.real_servers]]", REAL_SERVER_KEYS),
    ("CHECKS", "Checks", CHECK_COMMON_KEYS),
)
#: A service's sub-tables and the keys each takes (the reference lists them in prose).
SUB_TABLES = {"sorry_server": SORRY_KEYS, "quorum": QUORUM_KEYS, "panic": PANIC_KEYS}
SUB_TABLES |= {"notify": NOTIFY_KEYS}


class ReferenceDrift(ValueError):
    """docs/configuration.md and the schema disagree on the keys."""


def reference_tables(markdown: str) -> dict[str, dict[str, list[str]]]:
    """The reference's table rows by heading: each key (a cell naming several keys gives
    each its own entry) -> the row's other cells."""
    sections: dict[str, dict[str, list[str]]] = {}
    heading = ""
    for line in markdown.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip().strip("`")
        elif line.startswith("| ") and not line.startswith("|--"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[:2] in (["key", "type"], ["kind", "options (default)"]):
                continue  # a header row
            for key in re.split(r"\s*[,/]\s*", cells[0]):
                sections.setdefault(heading, {})[key] = cells[1:]
    return sections


def _md(text: str) -> str:
    """A reference cell in roff: code in bold, links as their text, ASCII glyphs."""
    text = re.sub(r"\[([^]]+)\]\([^)]*\)", r"\1", text)
    text = _roff(text)
    for glyph, roff in _GLYPHS.items():
        text = text.replace(glyph, roff)
    return re.sub(r"`([^`]*)`", r"\\fB\1\\fR", text)


def _rows(tables: dict[str, dict[str, list[str]]], heading: str, keys: Iterable[str]) -> list[str]:
    """The page's entries for ``keys``, the reference's rows under ``heading``."""
    rows = {k: v for k, v in tables.get(heading, {}).items() if len(v) == 3}
    keys = list(keys)
    missing = [k for k in keys if k not in rows]
    unknown = [k for k in rows if k not in keys]
    if missing or unknown:
        raise ReferenceDrift(
            f"{REFERENCE.name} section {heading!r}: keys the schema accepts but the "
            f"reference lacks: {missing}; keys the reference has but the schema does "
            f"not accept: {unknown}"
        )
    lines = []
    for key in keys:
        kind, default, meaning = rows[key]
        if key == "kind":  # the kinds themselves come from the schema
            kind = " ".join(f"`{k}`" for k in CHECK_KINDS)
        facts = "; ".join(
            part for part in (_md(kind), f"default: {_md(default)}" if default else "") if part
        )
        lines += [".TP", f"\\fB{_roff(key)}\\fR ({facts})" if facts else f"\\fB{key}\\fR"]
        lines.append(_md(meaning) if meaning else "")
        if key in SUB_TABLES and heading == "[services.NAME]":
            absent = [k for k in SUB_TABLES[key] if f"`{k}`" not in meaning]
            if absent:
                raise ReferenceDrift(f"{REFERENCE.name}: {key} does not mention {absent}")
    return [line for line in lines if line]


def _kind_rows(tables: dict[str, dict[str, list[str]]]) -> list[str]:
    """One entry per check kind, with the options its dataclass takes."""
    kinds = {k: v for k, v in tables.get("Checks", {}).items() if len(v) == 1}
    lines = []
    for kind, options_type in CHECK_KINDS.items():
        if kind not in kinds:
            raise ReferenceDrift(f"{REFERENCE.name}: check kind {kind!r} has no row")
        names = [f.name for f in dataclasses.fields(options_type) if f.name != "tls"]
        text = kinds[kind][0]
        absent = [n for n in names if f"`{n}`" not in text]
        if absent:
            raise ReferenceDrift(f"{REFERENCE.name}: check kind {kind!r} lacks {absent}")
        lines += [".TP", f'\\fBkind = "{kind}"\\fR', _md(text)]
    unknown = [k for k in kinds if k not in CHECK_KINDS]
    if unknown:
        raise ReferenceDrift(f"{REFERENCE.name}: unknown check kinds {unknown}")
    return lines


def config_page(reference: str | None = None) -> str:
    """lvsd.toml(5) in roff, from the schema's keys and the reference's tables."""
    tables = reference_tables(REFERENCE.read_text() if reference is None else reference)
    keys = ", ".join(f"\\fB{k}\\fR" for k in DEFAULTS_KEYS[:-1])
    timing = ", ".join(f"\\fB{k}\\fR" for k in CHECK_TIMING_KEYS)
    top = ", ".join(f"\\fB{k}\\fR" for k in TOP_KEYS)
    lines = [
        '.TH LVSD.TOML 5 "" "lvsd" "File Formats"',
        ".SH NAME",
        "lvsd.toml \\- configuration of the lvsd IPVS director",
        ".SH SYNOPSIS",
        f"\\fI{_roff(DEFAULT_CONFIG)}\\fR",
        ".SH DESCRIPTION",
        "lvsd reads one TOML file (or INI, by the extension \\fB.ini\\fR, \\fB.conf\\fR or",
        "\\fB.cf\\fR) plus the files it includes. The top level takes",
        f"{top}: \\fBinclude\\fR is a list of globs",
        "relative to the file, each matching at least one file; each service is a",
        "\\fB[services.NAME]\\fR table with its \\fB[[services.NAME.real_servers]]\\fR;",
        "the others are the tables below.",
        "Validate a file with \\fBlvsd check \\-c FILE\\fR: it prints every problem as",
        "FILE:LINE: KEY.PATH: message.",
    ]
    for title, heading, section_keys in KEY_SECTIONS[:2]:
        lines += [f".SH {_roff(title)}", *_rows(tables, heading, section_keys)]
    lines += [
        ".SH [defaults]",
        f"{keys}: the default of every service that does not set the key, with the same",
        f"meaning as on a service. \\fB[defaults.check]\\fR takes {timing}: the",
        "default timing of every check.",
    ]
    for title, heading, section_keys in KEY_SECTIONS[2:]:
        lines += [f".SH {_roff(title)}", *_rows(tables, heading, section_keys)]
    lines += [
        ".PP",
        "The other keys of a check depend on its kind:",
        *_kind_rows(tables),
        ".SH EXAMPLE",
        ".nf",
        *_roff(EXAMPLE).splitlines(),
        ".fi",
        ".SH SEE ALSO",
        "\\fBlvsd\\fR(8), \\fBipvsadm\\fR(8); docs/configuration.md in lvsd's sources",
        "(/usr/share/doc/lvsd/docs/configuration.md in the Debian package).",
    ]
    return "\n".join(lines) + "\n"


#: The page's example: a NAT service with two real servers and an http check.
EXAMPLE = """[daemon]
metrics_listen = "127.0.0.1:9475"

[services.web]
address = "192.168.3.108"
port = 80
scheduler = "wrr"
forward = "nat"
check = { kind = "http", path = "/health", interval = 2.0 }

[[services.web.real_servers]]
address = "10.0.0.2"
weight = 3

[[services.web.real_servers]]
address = "10.0.0.3"
"""


#: Each generated file, by its path in the source tree.
OUTPUTS = {
    "docs/lvsd.8": man_page,
    "docs/lvsd.toml.5": config_page,
    "etc/bash-completion/lvsd": bash_completion,
    "etc/zsh-completion/_lvsd": zsh_completion,
}


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
