"""The TOML writer: values, keys, comments, and that tomllib reads it back."""

from __future__ import annotations

import tomllib

import pytest

from lvsd.importer.emit import Document, render, string, value


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (True, "true"),
        (3, "3"),
        (2.0, "2.0"),
        (0.5, "0.5"),
        ('a"b\\c\n', '"a\\"b\\\\c\\n"'),
        (["x", 1], '["x", 1]'),
        ({"address": "10.0.0.1", "port": 80}, '{ address = "10.0.0.1", port = 80 }'),
    ],
)
def test_value(item: object, expected: str) -> None:
    """Each value kind renders in TOML syntax."""
    assert expected == value(item)  # type: ignore[arg-type]


def test_control_characters_escaped() -> None:
    """Control characters become \\u escapes that tomllib decodes back."""
    text = "a\x01b\x7f"
    assert text == tomllib.loads(f"k = {string(text)}")["k"]


def test_render_round_trip_with_comments() -> None:
    """Tables, arrays of tables, comments and quoted keys survive a tomllib round trip."""
    doc = Document(header=["head"])
    service = doc.table("services", "web")
    service.note("from x.conf:3")
    service.set("port", 80, "a comment")
    service.set("port", 81)
    server = doc.table("services", "web", "real_servers", array=True)
    server.set("address", "10.0.0.2")
    server.set("odd key", 1)
    text = render(doc)
    assert text.startswith("# head\n")
    assert "# from x.conf:3\n[services.web]\nport = 81\n" in text
    expected = {
        "services": {"web": {"port": 81, "real_servers": [{"address": "10.0.0.2", "odd key": 1}]}}
    }
    assert expected == tomllib.loads(text)
