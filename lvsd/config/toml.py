"""Read a TOML config file into a :class:`~lvsd.config.document.Document`."""

from __future__ import annotations

import json
import re
import tomllib

from lvsd.config.document import Document
from lvsd.config.locate import KeyPath, LineMap, toml_lines
from lvsd.errors import ConfigError, Problem

_AT_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$|\s*\(at end of document\)$")
#: What to add to tomllib's message for the mistakes people make most.
_HINTS = {
    "Cannot overwrite a value": "the key is already set above",
    "Expected newline or end of document after a statement": (
        "one key = value per line; text values need quotes"
    ),
}


def parse_toml(file: str, text: str) -> Document:
    """Parse ``text`` (the content of ``file``); a syntax error becomes a
    :class:`ConfigError` naming the line and quoting it."""
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _AT_LINE.search(message)
        line: int | None = None
        if match is not None:
            message = message[: match.start()]
            hint = _HINTS.get(message)
            if hint is not None:
                message += f" ({hint})"
            if match.group(1):
                line = int(match.group(1))
                column = int(match.group(2))
                lines = text.splitlines()
                if 0 < line <= len(lines) and lines[line - 1].strip():  # quoted as written
                    quoted = json.dumps(lines[line - 1].rstrip(), ensure_ascii=False)
                    message += f", column {column} of {quoted}"
            else:
                line = text.count("\n") + 1
                message += ", at the end of the file"
        raise ConfigError([Problem(file, "", f"TOML syntax error: {message}", line)]) from exc
    except ValueError as exc:  # tomllib's own limits, like Python's integer digit limit
        reason = "an integer with too many digits" if "digits" in str(exc) else str(exc)
        raise ConfigError([Problem(file, "", f"TOML value refused: {reason}")]) from exc
    return Document(file=file, tree=tree, lines=_LazyLines(text))


class _LazyLines:
    """Scan the text for line numbers only when a problem needs one: a valid file
    (the common case) never pays for the scan."""

    __slots__ = ("_map", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._map: LineMap | None = None

    def line(self, path: KeyPath) -> int | None:
        if self._map is None:
            self._map = toml_lines(self._text)
            self._text = ""
        return self._map.line(path)
