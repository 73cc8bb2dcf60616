"""``lvsd.importer.main``: output, stderr listing and exit statuses 0, 1, 2."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

from lvsd.importer import EXIT_BAD_INPUT, EXIT_COMPLETE, EXIT_INCOMPLETE, main
from tests.importer.helpers import FIXTURES


def test_complete_conversion_to_stdout() -> None:
    """A complete conversion prints TOML on stdout, nothing on stderr, and exits 0."""
    out, err = io.StringIO(), io.StringIO()
    status = main("keepalived", str(FIXTURES / "full.conf"), None, stdout=out, stderr=err)
    assert status == EXIT_COMPLETE
    assert err.getvalue() == ""
    assert "fwmark_7" in tomllib.loads(out.getvalue())["services"]


def test_incomplete_conversion_written_to_file(tmp_path: Path) -> None:
    """Unconverted keywords are listed on stderr with file:line; exit 1; -o written."""
    target = tmp_path / "out.toml"
    out, err = io.StringIO(), io.StringIO()
    path = str(FIXTURES / "full.cf")
    status = main("ldirectord", path, str(target), stdout=out, stderr=err)
    assert status == EXIT_INCOMPLETE
    assert out.getvalue() == ""
    expected = f"{path}:4: emailalert: not converted: "
    assert err.getvalue().startswith(expected)
    assert err.getvalue().endswith("1 keyword not converted\n")
    assert "tcp_192_0_2_20_443" in tomllib.loads(target.read_text())["services"]


def test_malformed_input_exits_2(tmp_path: Path) -> None:
    """Malformed input: one line on stderr with file:line, nothing on stdout, exit 2."""
    bad = tmp_path / "keepalived.conf"
    bad.write_text("virtual_server 10.0.0.1 80 {\n")
    out, err = io.StringIO(), io.StringIO()
    status = main("keepalived", str(bad), None, stdout=out, stderr=err)
    assert status == EXIT_BAD_INPUT
    assert out.getvalue() == ""
    assert f"lvsd import: {bad}:1: '{{' is never closed (missing '}}')\n" == err.getvalue()


def test_malformed_number_exits_2_without_a_traceback(tmp_path: Path) -> None:
    """A setting that is not a number (ldirectord checktimeout=abc) is exit 2 with
    FILE:LINE on stderr, like any malformed input, and nothing on stdout."""
    bad = tmp_path / "ldirectord.cf"
    bad.write_text("checktimeout=abc\nvirtual=10.0.0.1:80\n\treal=10.0.1.1:80 gate\n")
    out, err = io.StringIO(), io.StringIO()
    status = main("ldirectord", str(bad), None, stdout=out, stderr=err)
    expected = (
        EXIT_BAD_INPUT,
        "",
        f"lvsd import: {bad}:1: checktimeout: expected a number of seconds > 0, got 'abc'\n",
    )
    assert expected == (status, out.getvalue(), err.getvalue())


def test_missing_file_exits_2(tmp_path: Path) -> None:
    """A file that does not exist is exit 2 with a message, not a traceback."""
    err = io.StringIO()
    status = main("ldirectord", str(tmp_path / "nope.cf"), None, stdout=io.StringIO(), stderr=err)
    assert status == EXIT_BAD_INPUT
    assert "cannot read" in err.getvalue()
