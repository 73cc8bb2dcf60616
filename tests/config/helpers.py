"""Helpers shared by the config tests: write a file, load it, list its problems."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lvsd.config import load
from lvsd.config.model import Config
from lvsd.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(directory: Path, name: str, text: str) -> str:
    """Write ``text`` (dedented) to ``directory/name`` and return the path as a string."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


def load_text(directory: Path, name: str, text: str) -> Config:
    return load(write(directory, name, text))


def problems(path: str) -> list[tuple[str, str, int | None, str]]:
    """Every problem of the config at ``path`` as (file, key, line, message)."""
    with pytest.raises(ConfigError) as caught:
        load(path)
    return [(p.file, p.key, p.line, p.message) for p in caught.value.problems]


def where(path: str) -> list[tuple[str, int | None]]:
    """Every problem of the config at ``path`` as (key, line)."""
    return [(key, line) for _, key, line, _ in problems(path)]


def only_message(path: str) -> str:
    """The message of the single problem of the config at ``path``."""
    found = problems(path)
    assert 1 == len(found), found
    return found[0][3]


SERVICE = """
[services.web]
address = "192.168.3.108"
port = 80
"""
