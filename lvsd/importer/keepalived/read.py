"""Reading the parsed nodes: typed values from their words, and keyword tables.

Every reader raises an :class:`~lvsd.errors.ImportConfigError` naming the word's file
and line. :func:`dispatch` walks a block's children through a ``{keyword: handler}``
table and a ``{keyword: advice}`` table of what lvsd cannot express.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, TypeVar

from lvsd.importer.common import Where, fail
from lvsd.importer.emit import Document
from lvsd.importer.keepalived.parse import Node, Token

State = TypeVar("State")


class Sink(Protocol):
    """Where a conversion writes: the document, and the list of what is not converted."""

    @property
    def doc(self) -> Document: ...

    def src(self, where: Where) -> str:
        """The source comment for ``where``: ``from FILE:LINE``."""
        ...

    def skip(self, node: Node, advice: str, keyword: str | None = None) -> None:
        """List ``node`` (or ``keyword``) as not converted, with what to do instead."""
        ...


def dispatch(
    state: State,
    children: Iterable[Node],
    handlers: Mapping[str, Callable[[State, Node], None]],
    advice: Mapping[str, str],
    unknown: str,
    out: Sink,
) -> None:
    """Each child to its handler, or listed with its advice, or listed as ``unknown``
    (formatted with the child's ``keyword``)."""
    for child in children:
        handler = handlers.get(child.keyword)
        if handler is not None:
            handler(state, child)
        elif child.keyword in advice:
            out.skip(child, advice[child.keyword])
        else:
            out.skip(child, unknown.format(keyword=child.keyword))


def arg(node: Node, index: int = 0, what: str = "a value") -> Token:
    """The ``index``-th word after the keyword."""
    if len(node.args) <= index:
        raise fail(node.where, f"{node.keyword} needs {what}")
    return node.args[index]


def to_number(token: Token) -> float:
    try:
        value = float(token.text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise fail(token.where, f"expected a number, got {token.text!r}")
    return value


def to_integer(token: Token) -> int:
    try:
        return int(token.text)
    except ValueError:
        raise fail(token.where, f"expected an integer, got {token.text!r}") from None


def to_ip(token: Token) -> str:
    try:
        return str(ipaddress.ip_address(token.text))
    except ValueError:
        raise fail(token.where, f"expected an IP address, got {token.text!r}") from None


def to_port(token: Token) -> int:
    port = to_integer(token)
    if not 0 <= port <= 65535:
        raise fail(token.where, f"port {port} is out of range")
    return port


def to_bool(node: Node | None) -> bool:
    """A keepalived boolean: present without argument, or with yes/no/on/off/true/false."""
    if node is None:
        return False
    if not node.args:
        return True
    return node.args[0].text.lower() not in ("no", "off", "false", "0")
