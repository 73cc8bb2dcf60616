"""The process ExaBGP runs for lvsd (its ``process`` API): follows lvsd's routes file
(``lvsd.engine.routes``) and prints ExaBGP's announce and withdraw commands.

``python -m lvsd.engine.exabgp ROUTES_FILE [--med N]``. It decides nothing: it reads
the file every 0.2 s and prints the commands that bring ExaBGP's announcements to
what the file says; a missing file announces nothing. It ends when ExaBGP closes its
stdin (ExaBGP stops); should it die, ExaBGP starts it again (its ``respawn``), and it
reads the file afresh, so nothing lvsd decided is lost.
"""

from __future__ import annotations

import argparse
import contextlib
import select
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from lvsd.engine.routes import Route, parse

#: The GRACEFUL_SHUTDOWN well-known community (RFC 8326).
GRACEFUL_SHUTDOWN = "65535:0"
#: Seconds between two reads of the file.
POLL = 0.2


def command(prefix: str, route: Route, med: int) -> str:
    """ExaBGP's text API line for ``prefix``'s route."""
    if route is Route.WITHDRAW:
        return f"withdraw route {prefix} next-hop self"
    if route is Route.DEPREF:
        return f"announce route {prefix} next-hop self med {med} community [{GRACEFUL_SHUTDOWN}]"
    return f"announce route {prefix} next-hop self"


def commands(sent: dict[str, Route], wanted: dict[str, Route], med: int) -> list[str]:
    """What turns ``sent`` into ``wanted``: a VIP no longer in the file is withdrawn."""
    lines = []
    for prefix in sorted(sent.keys() | wanted.keys()):
        old, new = sent.get(prefix, Route.WITHDRAW), wanted.get(prefix, Route.WITHDRAW)
        if old != new:
            lines.append(command(prefix, new, med))
    return lines


def read(path: Path) -> dict[str, Route]:
    try:
        return parse(path.read_text())
    except OSError:  # not written yet, or gone: nothing to announce
        return {}


def follow(
    path: Path, med: int, out: TextIO, wait: Callable[[float], bool], poll: float = POLL
) -> None:
    """Print the commands each change of ``path`` needs, until ``wait(poll)`` (which
    waits up to ``poll`` seconds) returns False. The first read sends every VIP's
    state, a withdrawal too: a helper started again does not know what ExaBGP still
    announces from before."""
    sent: dict[str, Route] | None = None
    while True:
        wanted = read(path)
        if sent is None:
            lines = [command(prefix, route, med) for prefix, route in sorted(wanted.items())]
        else:
            lines = commands(sent, wanted, med)
        for line in lines:
            out.write(line + "\n")
        out.flush()
        sent = wanted
        if not wait(poll):
            return


def _stdin_open(timeout: float) -> bool:
    """Wait up to ``timeout`` for ExaBGP's stdin; read its acks; False at its end."""
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    return not ready or sys.stdin.readline() != ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lvsd.engine.exabgp")
    parser.add_argument("routes_file", type=Path)
    parser.add_argument("--med", type=int, default=1000, help="the MED of a depref route")
    args = parser.parse_args(argv)
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        follow(args.routes_file, args.med, sys.stdout, _stdin_open)
    return 0


if __name__ == "__main__":
    sys.exit(main())
