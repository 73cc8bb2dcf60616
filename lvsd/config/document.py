"""One parsed config file: its tree of plain values and where each key was written.

Both readers (TOML, INI) produce a :class:`Document`; the loader merges the documents of
a file and its includes into one tree and one validator turns that into the model.
INI values stay text, wrapped as :class:`IniText` so the validator knows it may coerce
them to the type a key expects (TOML values must already have the right type).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from lvsd.config.locate import KeyPath
from lvsd.errors import Problem

#: A table of the tree: key -> str | int | float | bool | list | Tree | datetime.
Tree = dict[str, object]


class IniText(str):
    """A value read from an INI file: text the validator may coerce (``"80"`` -> 80)."""

    __slots__ = ()


class Lines(Protocol):
    """Where each key path of a file was written (a :class:`~lvsd.config.locate.LineMap`,
    or anything that finds lines on demand)."""

    def line(self, path: KeyPath) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed file: ``file`` as named to the user, its ``tree``, its ``lines`` and the
    ``problems`` that did not stop the reading."""

    file: str
    tree: Tree
    lines: Lines
    #: Problems found while reading that leave the rest of the tree worth validating
    #: (an unknown INI section is dropped and reported; its neighbours are still checked).
    problems: tuple[Problem, ...] = ()

    def line(self, path: KeyPath) -> int | None:
        return self.lines.line(path)
