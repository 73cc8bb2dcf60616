"""keepalived tokenizer and parser: words, quotes, comments, braces, includes, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.errors import ImportConfigError
from lvsd.importer.common import Where
from lvsd.importer.keepalived.parse import parse, split_line


def test_split_line_words_quotes_braces_comments() -> None:
    """Quoted strings are one word, braces stand alone, # and ! start comments."""
    tokens = split_line('misc_path "/bin/x a"{b} ! comment # more', Where("f", 1))
    assert [t.text for t in tokens] == ["misc_path", "/bin/x a", "{", "b", "}"]
    assert [t.quoted for t in tokens] == [False, True, False, False, False]


def test_unterminated_quote_is_an_error() -> None:
    """An unclosed quote names file and line."""
    with pytest.raises(ImportConfigError, match=r"^f:7: unterminated"):
        split_line('x "abc', Where("f", 7))


def _write(tmp_path: Path, text: str, name: str = "keepalived.conf") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_nodes_carry_file_and_line(tmp_path: Path) -> None:
    """Blocks nest, a brace on the next line opens the block, lines are kept."""
    path = _write(tmp_path, "a 1 {\n  b 2\n  c\n  {\n    d\n  }\n}\ne { f }\n")
    nodes, notes = parse(path)
    assert notes == []
    assert [n.keyword for n in nodes] == ["a", "e"]
    a = nodes[0]
    assert a.words() == ["1"]
    assert [(n.keyword, n.where.line) for n in a.children or []] == [("b", 2), ("c", 3)]
    c = a.children[1] if a.children else None
    assert c is not None
    assert [n.keyword for n in c.children or []] == ["d"]
    assert [n.keyword for n in nodes[1].children or []] == ["f"]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a {\n b\n", 1, "never closed"),
        ("a\n}\n", 2, "without a matching"),
        ("{ a }\n", 1, "no keyword"),
    ],
)
def test_unbalanced_braces(tmp_path: Path, text: str, line: int, message: str) -> None:
    """Unbalanced braces are an ImportConfigError naming file and line."""
    path = _write(tmp_path, text)
    with pytest.raises(ImportConfigError, match=rf"keepalived.conf:{line}: .*{message}"):
        parse(path)


def test_include_glob_relative_to_the_file(tmp_path: Path) -> None:
    """include follows globs relative to the including file, in sorted order, with
    the included file's own name and lines on its nodes."""
    (tmp_path / "d").mkdir()
    _write(tmp_path, "b 1\n", "d/2.conf")
    _write(tmp_path, "\na 1\n", "d/1.conf")
    path = _write(tmp_path, "include d/*.conf\nz 1\n")
    nodes, _ = parse(path)
    assert [n.keyword for n in nodes] == ["a", "b", "z"]
    assert (str(tmp_path / "d" / "1.conf"), 2) == (nodes[0].where.file, nodes[0].where.line)


def test_missing_include_is_an_error(tmp_path: Path) -> None:
    """An include that matches nothing names the including file and line."""
    path = _write(tmp_path, "\ninclude nothing/*.conf\n")
    with pytest.raises(ImportConfigError, match=r"keepalived.conf:2: include 'nothing/\*.conf'"):
        parse(path)


def test_self_include_is_an_error(tmp_path: Path) -> None:
    """A file including itself is reported, not followed forever."""
    path = _write(tmp_path, "include keepalived.conf\n")
    with pytest.raises(ImportConfigError, match="includes itself"):
        parse(path)


def test_variables_and_conditionals(tmp_path: Path) -> None:
    """$NAME=value is substituted; @conditional lines are skipped and reported."""
    path = _write(tmp_path, "$PORT=8080\nx ${PORT} $PORT\n@low y 1\n")
    nodes, notes = parse(path)
    assert [n.words() for n in nodes] == [["8080", "8080"]]
    assert [(u.where.line, u.keyword) for u in notes] == [(3, "@low")]


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    """A file that does not exist is an ImportConfigError, not a traceback."""
    with pytest.raises(ImportConfigError, match="cannot read"):
        parse(str(tmp_path / "nope.conf"))
