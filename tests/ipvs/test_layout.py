"""Table tests of ``lvsd.ipvs.layout``: learn a reply's shape once, read its likes whole."""

from __future__ import annotations

import struct

import pytest

from lvsd.ipvs.layout import Field, learn


def nla(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def reply(weight: int, conns: int, *, name: bytes = b"abcd") -> bytes:
    """Attribute 1: bytes; 2: u32; 3: nested (1: u64, 2: u64); 4: u16, never read."""
    nested = nla(1, struct.pack("=Q", conns)) + nla(2, struct.pack("=Q", conns * 2))
    return nla(1, name) + nla(2, struct.pack("=I", weight)) + nla(3, nested) + nla(4, b"\1\0")


#: ``reply(3, 7)`` with its first two attributes swapped.
MOVED = reply(3, 7)[8:16] + reply(3, 7)[:8] + reply(3, 7)[16:]

FIELDS: tuple[Field, ...] = ((1, None, "s"), (2, None, "I"), (3, 1, "Q"), (3, 2, "Q"))


def test_a_learned_layout_reads_replies_of_the_same_shape() -> None:
    layout = learn(reply(3, 7), FIELDS)
    assert layout is not None
    assert (b"abcd", 3, 7, 14) == layout.read(reply(3, 7))
    assert (b"wxyz", 2**32 - 1, 2**40, 2**41) == layout.read(reply(2**32 - 1, 2**40, name=b"wxyz"))


def test_a_missing_field_reads_as_zero() -> None:
    layout = learn(reply(3, 7), (*FIELDS, (9, None, "I"), (3, 9, "Q")))
    assert layout is not None
    assert (b"abcd", 3, 7, 14, 0, 0) == layout.read(reply(3, 7))


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(reply(3, 7, name=b"abcdefgh"), id="longer"),
        pytest.param(MOVED, id="same length, attributes moved"),
        pytest.param(reply(3, 7)[:-8] + nla(5, b"\1\0"), id="same length, another type"),
    ],
)
def test_a_reply_of_another_shape_is_not_read(other: bytes) -> None:
    layout = learn(reply(3, 7), FIELDS)
    assert layout is not None
    assert None is layout.read(other)


@pytest.mark.parametrize(
    ("payload", "fields", "required"),
    [
        pytest.param(reply(3, 7)[:-3], FIELDS, (), id="last attribute cut short"),
        pytest.param(nla(1, b"ab") + nla(2, b"\1\2"), FIELDS, (), id="u32 in 2 bytes"),
        pytest.param(reply(3, 7), FIELDS, (5,), id="required type missing"),
        pytest.param(struct.pack("=HH", 2, 1) + b"\0" * 8, FIELDS, (), id="length below 4"),
    ],
)
def test_an_irregular_reply_has_no_layout(
    payload: bytes, fields: tuple[Field, ...], required: tuple[int, ...]
) -> None:
    assert None is learn(payload, fields, required)


def test_a_repeated_type_reads_its_last_one_as_a_walk_does() -> None:
    payload = reply(3, 7) + nla(2, struct.pack("=I", 9))
    layout = learn(payload, FIELDS)
    assert layout is not None
    assert (b"abcd", 9, 7, 14) == layout.read(payload)


def test_one_field_is_refused() -> None:
    with pytest.raises(ValueError, match="at least two"):
        learn(reply(3, 7), FIELDS[:1])
