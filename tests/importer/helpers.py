"""Helpers for the importer tests: convert, render, load back through lvsd's loader."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from lvsd.config import load
from lvsd.config.model import Config
from lvsd.importer import convert
from lvsd.importer.common import Conversion
from lvsd.importer.emit import render

FIXTURES = Path(__file__).parent / "fixtures"
KEEPALIVED_SAMPLES = Path("/usr/share/doc/keepalived/samples")
LDIRECTORD_EXAMPLE = Path("/usr/share/doc/ldirectord/examples/ldirectord.cf")


def converted(kind: str, path: str | os.PathLike[str]) -> tuple[Conversion, dict[str, Any]]:
    """The conversion of ``path`` and its TOML parsed back."""
    result = convert(kind, str(path))
    return result, tomllib.loads(render(result.document))


def loads_back(result: Conversion, tmp_path: Path) -> Config:
    """Write the conversion to a .toml file and load it with lvsd's loader."""
    out = tmp_path / "converted.toml"
    out.write_text(render(result.document), encoding="utf-8")
    return load(str(out))


def keywords(result: Conversion) -> list[tuple[int, str]]:
    """(line, keyword) of every unconverted item."""
    return [(u.where.line, u.keyword) for u in result.unconverted]
