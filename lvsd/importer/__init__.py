"""``lvsd import``: convert a keepalived.conf or ldirectord.cf to an lvsd TOML config.

:func:`convert` returns the :class:`~lvsd.importer.common.Conversion` (the document and
what could not be expressed); :func:`main` is the command: it prints the TOML (or
writes it to ``output``), lists what was not converted on stderr, and returns 0 when
the conversion is complete, 1 when something was left out, 2 when the input could not
be read or parsed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import TextIO

from lvsd.errors import ImportConfigError
from lvsd.importer.common import Conversion, Unconverted
from lvsd.importer.emit import render
from lvsd.importer.keepalived import convert as keepalived
from lvsd.importer.ldirectord import convert as ldirectord

KINDS = ("keepalived", "ldirectord")

EXIT_COMPLETE = 0
EXIT_INCOMPLETE = 1
EXIT_BAD_INPUT = 2


def convert(kind: str, path: str) -> Conversion:
    """Convert the ``kind`` config at ``path``; ImportConfigError when it is malformed."""
    if kind == "keepalived":
        return keepalived.convert(path)
    if kind == "ldirectord":
        return ldirectord.convert(path)
    raise ValueError(f"unknown import kind {kind!r}; expected one of {', '.join(KINDS)}")


def main(
    kind: str,
    path: str,
    output: str | None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``lvsd import KIND PATH [-o OUTPUT]``; the exit status."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        result = convert(kind, path)
    except ImportConfigError as exc:
        print(f"lvsd import: {exc}", file=err)
        return EXIT_BAD_INPUT
    text = render(result.document)
    if output is None or output == "-":
        out.write(text)
    else:
        try:
            _write(output, text)
        except OSError as exc:
            print(f"lvsd import: cannot write {output}: {exc.strerror or exc}", file=err)
            return EXIT_BAD_INPUT
    report(result.unconverted, err)
    return EXIT_COMPLETE if result.complete else EXIT_INCOMPLETE


def report(unconverted: list[Unconverted], err: TextIO) -> None:
    """List what was not converted, one line each, and a count."""
    for item in unconverted:
        print(item, file=err)
    if unconverted:
        n = len(unconverted)
        print(f"{n} keyword{'s' if n != 1 else ''} not converted", file=err)


def _write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file renamed over it)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".lvsd-import-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


__all__ = ["EXIT_BAD_INPUT", "EXIT_COMPLETE", "EXIT_INCOMPLETE", "KINDS", "convert", "main"]
