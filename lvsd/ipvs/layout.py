"""Reading many netlink replies that share one attribute layout with two ``struct`` calls.

The kernel writes the attributes of every destination in a dump in the same order and
sizes, so after one reply has been walked attribute by attribute (:func:`learn`), the
next one of the same length is checked and read whole (:meth:`Layout.read`): one
``unpack_from`` of every attribute's header word, compared with those of the reply the
layout was learned from, and one ``unpack_from`` of the wanted values. Equal header
words at equal offsets mean the same attributes at the same places, so the values are
the ones a walk would read. A reply that differs in any header is not read
(``read`` gives None) and is walked instead.

Pure: no I/O, no IPVS knowledge (``lvsd.ipvs.netlink`` says which attributes it wants).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

_NLA_HEADER = struct.Struct("=HH")  # length (header included), type
_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

#: A wanted value: (attribute type, type inside it or None, struct code). ``(12, 1,
#: "Q")`` is the u64 in attribute 1 nested in attribute 12; ``(2, None, "H")`` a u16;
#: the code ``"s"`` reads the attribute's whole payload as bytes.
Field = tuple[int, int | None, str]


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the wanted values of replies of one shape are (see the module's doc)."""

    length: int
    headers: struct.Struct
    expected: tuple[int, ...]
    values: struct.Struct
    pick: Callable[[tuple[Any, ...]], tuple[Any, ...]]

    def read(self, payload: bytes) -> tuple[Any, ...] | None:
        """The wanted values of ``payload`` in the order asked (0 for an attribute the
        layout lacks), or None when ``payload`` has another shape."""
        if len(payload) != self.length:
            return None
        return self.read_at(payload, 0)

    def read_at(self, data: bytes | bytearray, offset: int) -> tuple[Any, ...] | None:
        """:meth:`read` of the ``length`` bytes at ``offset`` in ``data`` (a receive
        buffer), which the caller has checked are there and are one payload."""
        if self.headers.unpack_from(data, offset) != self.expected:
            return None
        return self.pick((*self.values.unpack_from(data, offset), 0))


def _walk(payload: bytes, start: int, end: int) -> list[tuple[int, int, int]] | None:
    """(offset, length, type) of each attribute in ``payload[start:end]``; None if one
    is malformed (the walk decides those replies)."""
    found: list[tuple[int, int, int]] = []
    offset = start
    while offset + 4 <= end:
        length, kind = _NLA_HEADER.unpack_from(payload, offset)
        kind &= _TYPE_MASK
        if length < 4 or offset + length > end:
            return None
        found.append((offset, length, kind))
        offset = (offset + length + 3) & ~3
    return found


def learn(payload: bytes, fields: Sequence[Field], required: Sequence[int] = ()) -> Layout | None:
    """The layout of ``payload`` for reading ``fields``; None when ``payload`` is not
    regular (a malformed attribute, a wanted one too short for its code, a
    ``required`` top-level type missing): such a reply is always walked. At least two
    fields (``read`` gives a tuple)."""
    if len(fields) < 2:
        raise ValueError("a layout reads at least two fields")
    top = _walk(payload, 0, len(payload))
    if top is None:
        return None
    parents = {parent for parent, child, _ in fields if child is not None}
    headers: list[int] = []  # offsets of every header word checked
    # field -> (payload offset, size); a repeated type: the last one, as a walk reads
    where: dict[tuple[int, int | None], tuple[int, int]] = {}
    for offset, length, kind in top:
        headers.append(offset)
        where[(kind, None)] = (offset + 4, length - 4)
        if kind in parents:
            inner = _walk(payload, offset + 4, offset + length)
            if inner is None:
                return None
            for child_offset, child_length, child in inner:
                headers.append(child_offset)
                where[(kind, child)] = (child_offset + 4, child_length - 4)
    if any((kind, None) not in where for kind in required):
        return None
    placed: list[tuple[int, str, int]] = []  # (offset, code, index in fields)
    for index, (parent, nested, code) in enumerate(fields):
        spot = where.get((parent, nested))
        if spot is None:
            continue
        if code == "s":
            code = f"{spot[1]}s"  # the whole payload
        elif spot[1] < struct.calcsize("=" + code):
            return None
        placed.append((spot[0], code, index))
    placed.sort()
    value_format, cursor = "=", 0
    for offset, code, _ in placed:
        value_format += f"{offset - cursor}x{code}" if offset > cursor else code
        cursor = offset + struct.calcsize("=" + code)
    header_format, cursor = "=", 0
    for offset in headers:
        header_format += f"{offset - cursor}xI" if offset > cursor else "I"
        cursor = offset + 4
    position = {index: n for n, (_, _, index) in enumerate(placed)}
    absent = len(placed)  # read() appends a 0 there
    header_struct = struct.Struct(header_format)
    return Layout(
        length=len(payload),
        headers=header_struct,
        expected=header_struct.unpack_from(payload),
        values=struct.Struct(value_format),
        pick=itemgetter(*(position.get(i, absent) for i in range(len(fields)))),
    )
