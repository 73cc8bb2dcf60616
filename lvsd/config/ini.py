"""Read an INI config file into the same tree a TOML file gives.

Sections map onto the TOML layout::

    [include]                               files = conf.d/*.ini    -> include
    [daemon], [defaults], [ipvs]                                    -> daemon, defaults, ipvs
    [service NAME]                                                  -> services.NAME
    [service NAME check]                                            -> services.NAME.check
    [service NAME check CHECK]              (several, in order)     -> services.NAME.checks[i]
    [service NAME realserver RS]            (several, in order)     -> services.NAME.real_servers[i]
    [service NAME realserver RS check]                              -> ....real_servers[i].check
    [service NAME realserver RS check CHECK]                        -> ....real_servers[i].checks[j]

Dotted keys (``check.interval = 2``, ``sorry_server.address = 10.0.0.9``) make nested
tables. Values stay text (:class:`IniText`); the validator coerces them by the type each
key expects, so lists are written comma or space separated.
"""

from __future__ import annotations

import ast
import configparser
import difflib

from lvsd.config.document import Document, IniText, Tree
from lvsd.config.locate import IniLines, KeyPath, LineMap, ini_lines, render_path
from lvsd.errors import ConfigError, Problem

_NO_DEFAULT_SECTION = "\x00lvsd: no default section"
_SECTION_WORDS = ("include", "daemon", "defaults", "ipvs", "service")
#: Tables written as dotted keys in INI, with an example of each.
_INLINE_TABLES = {
    "quorum": "quorum.minimum = 2",
    "panic": "panic.threshold = 0.5",
    "notify": "notify.down = /usr/local/bin/page-me",
    "sorry_server": "sorry_server.address = 10.0.0.9",
    "headers": "headers.X-Probe = lvsd",
}


def parse_ini(file: str, text: str) -> Document:
    """Parse ``text`` (the content of ``file``). A syntax error raises a
    :class:`ConfigError`; unknown sections and clashing keys are left out of the tree
    and listed in the document's ``problems``, so the rest is still validated."""
    parser = configparser.ConfigParser(
        interpolation=None,
        default_section=_NO_DEFAULT_SECTION,
        inline_comment_prefixes=("#",),
        empty_lines_in_values=False,
        strict=True,
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep keys' case
    try:
        parser.read_string(text, source=file)
    except configparser.Error as exc:
        raise ConfigError(_syntax_problems(file, exc, text)) from exc
    builder = _Builder(file, ini_lines(text))
    for section in parser.sections():
        builder.section(section, dict(parser.items(section)))
    return Document(
        file=file, tree=builder.tree, lines=builder.lines, problems=tuple(builder.problems)
    )


def _syntax_problems(file: str, exc: configparser.Error, text: str) -> list[Problem]:
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return [
            Problem(
                file,
                "",
                f"INI syntax error: a key before any [section]: {str(exc.line).strip()!r} "
                "(expected a [section] header first)",
                exc.lineno,
            )
        ]
    if isinstance(exc, configparser.ParsingError):
        return [
            Problem(file, "", f"INI syntax error: cannot parse {_unrepr(line)!r}", number)
            for number, line in exc.errors
        ]
    if isinstance(exc, configparser.DuplicateOptionError):
        first = ini_lines(text).keys.get((exc.section, exc.option))
        at = f" (first at line {first})" if first is not None and first != exc.lineno else ""
        return [
            Problem(
                file,
                f"[{exc.section}] {exc.option}",
                f"key appears twice in [{exc.section}]{at}",
                exc.lineno,
            )
        ]
    if isinstance(exc, configparser.DuplicateSectionError):
        first = ini_lines(text).sections.get(exc.section)
        at = f" (first at line {first})" if first is not None and first != exc.lineno else ""
        return [Problem(file, "", f"section [{exc.section}] appears twice{at}", exc.lineno)]
    return [Problem(file, "", f"INI syntax error: {exc}")]


def _unrepr(text: str) -> str:
    """configparser keeps the repr() of a line it could not parse; undo that."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text.strip()
    return value.strip() if isinstance(value, str) else text.strip()


class _Builder:
    def __init__(self, file: str, where: IniLines) -> None:
        self.file = file
        self.where = where
        self.tree: Tree = {}
        self.lines = LineMap()
        self.problems: list[Problem] = []
        # index of each named element of an array, per array path, in order of appearance
        self.indexes: dict[KeyPath, dict[str, int]] = {}

    def section(self, name: str, items: dict[str, str]) -> None:
        header = self.where.sections.get(name)
        if name.split() == ["include"]:
            for key, value in items.items():
                line = self.where.keys.get((name, key))
                if key != "files":
                    self.problems.append(
                        Problem(self.file, f"[include] {key}", "unknown key (expected files)", line)
                    )
                    continue
                self.tree["include"] = IniText(value)
                if line is not None:
                    self.lines.add(("include",), line)
            return
        path = self._path(name.split())
        if path is None:
            self.problems.append(Problem(self.file, f"[{name}]", _unknown_section(name), header))
            return
        if header is not None:
            self.lines.add(path, header)
        table = self._table(path)
        if table is None:
            self._clash(path, header)
            return
        for key, value in items.items():
            keypath = path + tuple(part.strip() for part in key.split("."))
            line = self.where.keys.get((name, key))
            if line is not None:
                self.lines.add(keypath, line)
            self._put(table, keypath[len(path) :], IniText(value), keypath, line)

    def _path(self, words: list[str]) -> KeyPath | None:
        match words:
            case ["daemon"] | ["defaults"] | ["ipvs"]:
                return (words[0],)
            case ["service", service, *rest]:
                base: KeyPath = ("services", service)
                if rest[:1] == ["realserver"] and len(rest) >= 2:
                    base = self._element((*base, "real_servers"), rest[1])
                    rest = rest[2:]
                match rest:
                    case []:
                        return base
                    case ["check"]:
                        return (*base, "check")
                    case ["check", check]:
                        return self._element((*base, "checks"), check)
        return None

    def _element(self, array: KeyPath, name: str) -> KeyPath:
        names = self.indexes.setdefault(array, {})
        return (*array, names.setdefault(name, len(names)))

    def _table(self, path: KeyPath) -> Tree | None:
        node: object = self.tree
        for position, part in enumerate(path):
            if not isinstance(node, dict):
                return None
            if isinstance(part, int):
                continue
            following = path[position + 1] if position + 1 < len(path) else None
            if isinstance(following, int):
                array = node.setdefault(part, [])
                if not isinstance(array, list):
                    return None
                while len(array) <= following:
                    array.append({})
                node = array[following]
            else:
                node = node.setdefault(part, {})
        return node if isinstance(node, dict) else None

    def _put(
        self, table: Tree, rest: KeyPath, value: IniText, keypath: KeyPath, line: int | None
    ) -> None:
        node = table
        for part in rest[:-1]:
            assert isinstance(part, str)
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                self._clash(keypath, line)
                return
            node = child
        last = rest[-1]
        assert isinstance(last, str)
        if last in node:
            self._clash(keypath, line)
            return
        node[last] = value

    def _clash(self, keypath: KeyPath, line: int | None) -> None:
        self.problems.append(
            Problem(
                self.file,
                render_path(keypath),
                "clashes with another key (a value and dotted keys below it)",
                line,
            )
        )


def _unknown_section(name: str) -> str:
    message = (
        "unknown section (expected [include], [daemon], [defaults], [ipvs], [service NAME], "
        "[service NAME check [CHECK]], [service NAME realserver RS [check [CHECK]]])"
    )
    words = name.split()
    if words[:1] == ["service"] and words[-1:] and words[-1] in _INLINE_TABLES:
        table = words[-1]
        return (
            f"unknown section: {table} is not a section of its own; write its keys in "
            f"[{' '.join(words[:-1])}] as dotted keys, like {_INLINE_TABLES[table]}"
        )
    first = words[0] if words else name
    close = difflib.get_close_matches(first, _SECTION_WORDS, n=1)
    if close and close[0] != first:
        message += f"; did you mean [{' '.join([close[0], *name.split()[1:]])}]?"
    return message
