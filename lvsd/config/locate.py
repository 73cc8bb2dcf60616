"""Key paths and the lines they come from.

A *key path* names one value in the config tree: ``("services", "web", "real_servers",
1, "weight")``, rendered ``services.web.real_servers[1].weight``. Neither tomllib nor
configparser reports where a key was written, so each reader builds a :class:`LineMap`
(path -> line) while scanning the file's text. Lookups are best effort: an unknown path
falls back to its longest known prefix (the enclosing table's header), else None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PathPart = str | int
KeyPath = tuple[PathPart, ...]
#: Key path parts a line lookup looks at (the loader refuses deeper trees anyway).
MAX_PARTS = 40

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def render_path(path: KeyPath) -> str:
    """``("services", "web", "real_servers", 1, "weight")`` renders as
    ``services.web.real_servers[1].weight``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _BARE_KEY.match(part):
            text += f".{part}" if text else part
        else:
            quoted = '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'
            text += f".{quoted}" if text else quoted
    return text


@dataclass(slots=True)
class LineMap:
    """Where each key path was written (1-based line numbers)."""

    lines: dict[KeyPath, int] = field(default_factory=dict)

    def add(self, path: KeyPath, line: int) -> None:
        """Record ``path`` (and every prefix not yet known) at ``line``; first one wins.
        Only the first :data:`MAX_PARTS` parts count, so a long key costs linear time."""
        path = path[:MAX_PARTS]
        for end in range(1, len(path) + 1):
            self.lines.setdefault(path[:end], line)

    def line(self, path: KeyPath) -> int | None:
        path = path[:MAX_PARTS]
        for end in range(len(path), 0, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return None


# --- TOML ----------------------------------------------------------------------------

_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED_KEY = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_ARRAY_HEADER = re.compile(rf"^\s*\[\[\s*({_DOTTED_KEY})\s*\]\]\s*(?:#.*)?$")
_TABLE_HEADER = re.compile(rf"^\s*\[\s*({_DOTTED_KEY})\s*\]\s*(?:#.*)?$")
_KEY_LINE = re.compile(rf"^\s*({_DOTTED_KEY})\s*=")
_PART = re.compile(_KEY_PART)


def _split_key(text: str) -> list[str]:
    parts = []
    for match in _PART.finditer(text):
        token = match.group(0)
        if token.startswith('"'):
            token = token[1:-1].encode().decode("unicode_escape")
        elif token.startswith("'"):
            token = token[1:-1]
        parts.append(token)
    return parts


def toml_lines(text: str) -> LineMap:
    """Map the key paths of a TOML document to lines: table headers (``[a.b]``),
    arrays of tables (``[[a.b]]``, counted so each element gets its index, nested
    arrays included) and ``key =`` lines (dotted keys too)."""
    result = LineMap()
    arrays: dict[KeyPath, int] = {}  # resolved path of an array of tables -> elements so far
    current: KeyPath = ()
    in_multiline: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline is not None:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        header = _ARRAY_HEADER.match(line)
        is_array = header is not None
        if header is None:
            header = _TABLE_HEADER.match(line)
        if header is not None:
            current = _resolve(_split_key(header.group(1)), arrays, is_array)
            result.add(current, number)
            continue
        key = _KEY_LINE.match(line)
        if key is not None:
            result.add(current + tuple(_split_key(key.group(1))), number)
            rest = line[key.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_multiline = quote
    return result


def _resolve(parts: list[str], arrays: dict[KeyPath, int], is_array: bool) -> KeyPath:
    resolved: list[PathPart] = []
    for position, part in enumerate(parts):
        resolved.append(part)
        last = position == len(parts) - 1
        if last and is_array:
            count = arrays.get(tuple(resolved), 0) + 1
            arrays[tuple(resolved)] = count
            resolved.append(count - 1)
        elif tuple(resolved) in arrays:
            resolved.append(arrays[tuple(resolved)] - 1)
    return tuple(resolved)


# --- INI -----------------------------------------------------------------------------

_INI_SECTION = re.compile(r"^\[(?P<name>.+)\]")
_INI_KEY = re.compile(r"^(?P<key>[^=:\s][^=:]*?)\s*[=:]")


@dataclass(slots=True)
class IniLines:
    """Where each section header and each key of an INI file was written."""

    sections: dict[str, int] = field(default_factory=dict)
    keys: dict[tuple[str, str], int] = field(default_factory=dict)


def ini_lines(text: str) -> IniLines:
    """Scan an INI file the way configparser reads it (``#``/``;`` comments, indented
    continuation lines) and note the line of every section header and key."""
    result = IniLines()
    section: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if raw[0].isspace():
            continue  # continuation of the previous value
        match = _INI_SECTION.match(stripped)
        if match is not None:
            section = match.group("name")
            result.sections.setdefault(section, number)
            continue
        key = _INI_KEY.match(stripped)
        if key is not None and section is not None:
            result.keys.setdefault((section, key.group("key").strip()), number)
    return result
