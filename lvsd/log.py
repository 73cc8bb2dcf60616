"""Logging set-up, in one place: :func:`configure`.

lvsd logs events, not sentences: ``log.info("realserver.down", service="web",
realserver="10.0.0.2:80", detail="connect: refused")``. Event names are stable (alerts
and dashboards match on them), written ``<subject>.<what happened>`` in lower case;
keys are snake_case. Every line carries ``timestamp`` (ISO 8601, UTC), ``level`` and
``event``.

Output goes to stdout, one event per line:

* JSON when stdout is not a terminal or when running under systemd (``$JOURNAL_STREAM``
  or ``$INVOCATION_ID`` set), so the journal and log shippers get structured fields;
* a readable, aligned console format on a terminal.

Records from the standard library's :mod:`logging` (asyncio, aiohttp, pyroute2) go
through the same renderer, so one process writes one format.

Event names used by the lifecycle modules (others are documented beside their code):

=====================  ==============================================================
``control.listening``  the control socket is ready (``path``, ``mode``, ``group``)
``control.request``    a control request arrived (``command``, ``uid``, ``pid``)
``control.failed``     a control handler raised (``command``, ``error``)
``state.saved``        the drain file was written (``path``, ``drains``)
=====================  ==============================================================
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

import structlog
from structlog.typing import Processor

#: Accepted ``--log-level`` values, quietest last.
LEVELS = ("debug", "info", "warning", "error", "critical")

_ALIASES = {"warn": "warning", "fatal": "critical"}


def parse_level(level: str) -> int:
    """The :mod:`logging` number of a level name (case-insensitive; ``warn`` works)."""
    name = level.strip().lower()
    name = _ALIASES.get(name, name)
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    number: int = getattr(logging, name.upper())
    return number


def under_systemd(environ: Mapping[str, str] | None = None) -> bool:
    """True when systemd started us (its journal is our stdout, or it set an invocation)."""
    env = os.environ if environ is None else environ
    return bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))


def want_json(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """JSON unless a person is watching: under systemd, or when ``stream`` is no TTY."""
    if under_systemd(environ):
        return True
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # closed or file-less streams
        return True


def configure(
    level: str = "info",
    json: bool | None = None,
    *,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Set up structlog and the standard library's logging for the whole process.

    ``level`` is one of :data:`LEVELS` (``--log-level``); events below it are dropped
    cheaply. ``json`` forces the format; None chooses with :func:`want_json`.
    ``stream`` defaults to ``sys.stdout``; ``environ`` to ``os.environ``.
    Calling it again replaces the previous set-up.
    """
    number = parse_level(level)
    out = sys.stdout if stream is None else stream
    as_json = want_json(out, environ) if json is None else json

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if as_json:
        shared += [
            structlog.processors.StackInfoRenderer(),
            # Tracebacks as data, without local variables (they may hold secrets).
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
        ]
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_colors(out))

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )

    # The standard library's records (asyncio, aiohttp, pyroute2) in the same format.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.set_name("lvsd")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "lvsd"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)


def _colors(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
