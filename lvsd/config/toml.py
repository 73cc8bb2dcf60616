"""Read a TOML config file into a :class:`~lvsd.config.document.Document`."""

from __future__ import annotations

import re
import tomllib

from lvsd.config.document import Document
from lvsd.config.locate import KeyPath, LineMap, toml_lines
from lvsd.errors import ConfigError, Problem

_AT_LINE = re.compile(r"\s*\(at line (\d+), column \d+\)$|\s*\(at end of document\)$")


def parse_toml(file: str, text: str) -> Document:
    """Parse ``text`` (the content of ``file``); a syntax error becomes a
    :class:`ConfigError` naming the line."""
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _AT_LINE.search(message)
        line: int | None = None
        if match is not None:
            line = int(match.group(1)) if match.group(1) else text.count("\n") + 1
            message = message[: match.start()]
        raise ConfigError([Problem(file, "", f"TOML syntax error: {message}", line)]) from exc
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
