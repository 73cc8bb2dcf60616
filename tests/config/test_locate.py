"""The line locators: key paths to lines for TOML and INI text."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import pytest

from lvsd.config.locate import KeyPath, ini_lines, render_path, toml_lines

TOML = """\
[services.web]
address = "1.2.3.4"
sorry_server = { address = "10.0.0.9" }
notes = '''
weight = 3
'''
[[services.web.real_servers]]
address = "10.0.0.2"
[[services.web.real_servers.checks]]
kind = "tcp"
[[services.web.real_servers]]
address = "10.0.0.3"
[[services.web.real_servers.checks]]
kind = "http"
[[services.web.real_servers.checks]]
  "kind" = "https"
[services."odd name".check]
check.interval = 2
"""


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("services", "web"), 1),
        (("services", "web", "address"), 2),
        (("services", "web", "sorry_server", "address"), 3),
        (("services", "web", "real_servers", 0), 7),
        (("services", "web", "real_servers", 0, "checks", 0, "kind"), 10),
        (("services", "web", "real_servers", 1, "address"), 12),
        (("services", "web", "real_servers", 1, "checks", 0, "kind"), 14),
        (("services", "web", "real_servers", 1, "checks", 1, "kind"), 16),
        (("services", "odd name", "check", "check", "interval"), 18),
        (("services", "web", "real_servers", 5), 7),  # unknown element: the array's start
        (("daemon",), None),
    ],
)
def test_toml_lines(path: KeyPath, line: int | None) -> None:
    """Headers, arrays of tables (nested ones counted per parent element), quoted and
    dotted keys map to their lines; a key inside a multi-line string is not a key."""
    assert line == toml_lines(TOML).line(path)


def test_toml_multiline_string_is_skipped() -> None:
    """``weight = 3`` inside a multi-line string is not recorded as a key."""
    assert None is toml_lines(TOML).lines.get(("services", "web", "weight"))


def test_ini_lines() -> None:
    """Section headers and keys (``=`` or ``:``) map to lines; comments and
    continuation lines do not."""
    found = ini_lines("# c\n[daemon]\nstate_dir = /a\n  continued = no\n; x = 1\nb: 2\n")
    assert {"daemon": 2} == found.sections
    assert {("daemon", "state_dir"): 3, ("daemon", "b"): 6} == found.keys


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), ""),
        (("services", "web", "real_servers", 1, "weight"), "services.web.real_servers[1].weight"),
        (("services", "odd name"), 'services."odd name"'),
    ],
)
def test_render_path(path: KeyPath, text: str) -> None:
    """Key paths render as dotted keys with [index] for list elements."""
    assert text == render_path(path)
