"""keepalived.conf's syntax: words, quoted strings, blocks, includes and ``$NAME`` definitions.

:func:`parse` turns the brace syntax into :class:`Node` trees (every word carries its
file and line; ``include`` is followed with globs relative to the including file;
``$NAME=value`` definitions are substituted).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from lvsd.importer.common import Unconverted, Where, fail


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    where: Where
    quoted: bool = False

    @property
    def brace(self) -> bool:
        return not self.quoted and self.text in ("{", "}")


@dataclass(slots=True)
class Node:
    """``keyword args... [{ children }]``; ``children`` is None when there is no block."""

    keyword: str
    args: list[Token]
    where: Where
    children: list[Node] | None = None

    def words(self) -> list[str]:
        return [t.text for t in self.args]

    def find(self, keyword: str) -> Node | None:
        for child in self.children or ():
            if child.keyword == keyword:
                return child
        return None


_VARIABLE_DEF = re.compile(r"\$(\w+)\s*=(.*)")
_VARIABLE_USE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
MAX_INCLUDE_DEPTH = 8


@dataclass(slots=True)
class _Lexer:
    """Reads files into lines of tokens, following includes."""

    notes: list[Unconverted] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)

    def read(
        self, path: str, stack: tuple[str, ...] = (), at: Where | None = None
    ) -> list[list[Token]]:
        real = os.path.realpath(path)
        if real in stack:
            raise fail(at or Where(path, 0), f"include {path} includes itself")
        if len(stack) > MAX_INCLUDE_DEPTH:
            raise fail(at or Where(path, 0), f"includes nested more than {MAX_INCLUDE_DEPTH} deep")
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            where = f"{at}: " if at else ""
            raise fail(Where(path, 0), f"{where}cannot read: {reason}") from exc
        return list(self.lines(path, text, (*stack, real)))

    def lines(self, path: str, text: str, stack: tuple[str, ...]) -> Iterator[list[Token]]:
        for number, raw in enumerate(text.splitlines(), start=1):
            where = Where(path, number)
            stripped = raw.strip()
            if stripped.startswith("@"):
                word = stripped.split()[0]
                self.notes.append(
                    Unconverted(
                        where,
                        word,
                        "conditional line (keepalived -i) skipped: write the lines "
                        "for the instance you run without the @ prefix",
                    )
                )
                continue
            definition = _VARIABLE_DEF.fullmatch(stripped)
            if definition:
                self.variables[definition.group(1)] = definition.group(2).strip()
                continue
            if "$" in raw:
                raw = _VARIABLE_USE.sub(self._substitute, raw)
            tokens = split_line(raw, where)
            if tokens and tokens[0].text == "include" and not tokens[0].quoted:
                yield from self.include(tokens, where, stack)
                continue
            if tokens:
                yield tokens

    def _substitute(self, match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return self.variables.get(name, match.group(0))

    def include(
        self, tokens: list[Token], where: Where, stack: tuple[str, ...]
    ) -> Iterator[list[Token]]:
        if len(tokens) < 2:
            raise fail(where, "include needs a file name or glob")
        base = os.path.dirname(where.file)
        for token in tokens[1:]:
            pattern = os.path.join(base, os.path.expanduser(token.text))
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise fail(where, f"include {token.text!r} matches no file")
            for match in matches:
                yield from self.read(match, stack, where)


def split_line(raw: str, where: Where) -> list[Token]:
    """The words of one line: quoted strings are one word, ``{``/``}`` are words of
    their own, ``#`` or ``!`` at the start of a word begins a comment."""
    tokens: list[Token] = []
    i, n = 0, len(raw)
    while i < n:
        char = raw[i]
        if char.isspace():
            i += 1
        elif char in "#!":
            break
        elif char in "{}":
            tokens.append(Token(char, where))
            i += 1
        elif char == '"':
            end = raw.find('"', i + 1)
            if end < 0:
                raise fail(where, "unterminated quoted string")
            tokens.append(Token(raw[i + 1 : end], where, quoted=True))
            i = end + 1
        else:
            start = i
            while i < n and not raw[i].isspace() and raw[i] not in '{}"':
                i += 1
            tokens.append(Token(raw[start:i], where))
    return tokens


def parse_lines(lines: list[list[Token]]) -> list[Node]:
    """Nodes from lines of tokens; ImportConfigError on unbalanced braces."""
    stream: list[Token | None] = []  # None marks the end of a line
    for line in lines:
        stream.extend(line)
        stream.append(None)
    nodes, _ = _block(stream, 0, None)
    return nodes


def _block(stream: list[Token | None], pos: int, opened: Token | None) -> tuple[list[Node], int]:
    nodes: list[Node] = []
    while pos < len(stream):
        token = stream[pos]
        if token is None:
            pos += 1
            continue
        if token.brace and token.text == "}":
            if opened is None:
                raise fail(token.where, "'}' without a matching '{'")
            return nodes, pos + 1
        if token.brace:
            raise fail(token.where, "'{' opens a block with no keyword before it")
        words: list[Token] = []
        while pos < len(stream):
            t = stream[pos]
            if t is None or t.brace:
                break
            words.append(t)
            pos += 1
        look = pos
        while look < len(stream) and stream[look] is None:
            look += 1
        children = None
        nxt = stream[look] if look < len(stream) else None
        if nxt is not None and nxt.brace and nxt.text == "{":
            children, pos = _block(stream, look + 1, nxt)
        head = words[0]
        nodes.append(Node(head.text, words[1:], head.where, children))
    if opened is not None:
        raise fail(opened.where, "'{' is never closed (missing '}')")
    return nodes, pos


def parse(path: str) -> tuple[list[Node], list[Unconverted]]:
    """The top-level nodes of the keepalived config at ``path`` (includes expanded),
    and the lines skipped while reading it."""
    lexer = _Lexer()
    lines = lexer.read(path)
    return parse_lines(lines), lexer.notes
