"""A small TOML writer for the importers: tables in order, each entry with an optional
trailing comment, each table with the comments (sources, differences) above it.

Only what lvsd's config needs: strings, integers, floats, booleans, lists of those and
inline tables. The output is plain TOML that ``tomllib`` (and so ``lvsd.config.load``)
reads back.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

TomlValue = str | int | float | bool | list["TomlValue"] | dict[str, "TomlValue"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(slots=True)
class Entry:
    key: str
    value: TomlValue
    comment: str | None = None


@dataclass(slots=True)
class Table:
    """``[a.b]`` (or ``[[a.b]]`` when ``array``), its comment lines and its entries."""

    path: tuple[str, ...]
    array: bool = False
    comments: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)

    def set(self, key: str, value: TomlValue, comment: str | None = None) -> None:
        """Set ``key`` (replacing an earlier value of the same key in place)."""
        for entry in self.entries:
            if entry.key == key:
                entry.value = value
                entry.comment = comment
                return
        self.entries.append(Entry(key, value, comment))

    def get(self, key: str) -> TomlValue | None:
        for entry in self.entries:
            if entry.key == key:
                return entry.value
        return None

    def remove(self, key: str) -> None:
        self.entries = [e for e in self.entries if e.key != key]

    def note(self, text: str) -> None:
        """Add a comment line above the table."""
        self.comments.append(text)


@dataclass(slots=True)
class Document:
    header: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)

    def table(self, *path: str, array: bool = False) -> Table:
        """Append a new table and return it."""
        table = Table(path=path, array=array)
        self.tables.append(table)
        return table


def key(text: str) -> str:
    return text if _BARE_KEY.fullmatch(text) else string(text)


def string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def value(item: TomlValue) -> str:
    """``item`` in TOML syntax."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        if not math.isfinite(item):
            raise ValueError(f"TOML cannot hold {item}")
        text = repr(item)
        return text if ("." in text or "e" in text) else text + ".0"
    if isinstance(item, str):
        return string(item)
    if isinstance(item, list):
        return "[" + ", ".join(value(v) for v in item) + "]"
    inner = ", ".join(f"{key(k)} = {value(v)}" for k, v in item.items())
    return "{ " + inner + " }" if inner else "{}"


def _comment_lines(text: str) -> list[str]:
    return [f"# {line}".rstrip() for line in text.splitlines() or [""]]


def render(document: Document) -> str:
    """The document as TOML text."""
    lines: list[str] = []
    for text in document.header:
        lines.extend(_comment_lines(text))
    for table in document.tables:
        if lines:
            lines.append("")
        for text in table.comments:
            lines.extend(_comment_lines(text))
        name = ".".join(key(part) for part in table.path)
        lines.append(f"[[{name}]]" if table.array else f"[{name}]")
        for entry in table.entries:
            line = f"{key(entry.key)} = {value(entry.value)}"
            if entry.comment:
                line += f"  # {entry.comment}"
            lines.append(line)
    return "\n".join(lines) + "\n"
