"""Logging set-up, in one place: :func:`configure`.

lvsd logs events, not sentences: ``log.warning("realserver.down", service="web",
realserver="10.0.0.2:80", detail="connect: refused")``. Event names are stable (alerts
and dashboards match on them), written ``<subject>.<what happened>`` in lower case;
keys are snake_case. Every line carries ``timestamp`` (ISO 8601, UTC), ``level`` and
``event``. ``service`` is always the service's name in the config; events that know
only the virtual service's key carry it as ``vip`` (``tcp 192.168.3.108:80``).

Output goes to stderr (the command line passes it), one event per line:

* JSON when stderr is not a terminal or when running under systemd (``$JOURNAL_STREAM``
  or ``$INVOCATION_ID`` set), so the journal and log shippers get structured fields;
* a readable, aligned console format on a terminal.

When stderr *is* the journal (``$JOURNAL_STREAM`` names its device and inode), each
line starts with its syslog priority, ``<4>`` for warning and so on (sd-daemon(3)):
journald strips it and files the line at that priority, so ``journalctl -p warning``
works.

Records from the standard library's :mod:`logging` (asyncio, aiohttp, pyroute2) go
through the same renderer, so one process writes one format.

Levels say what an operator must do: ``error`` (act now) for lvsd's own failures (a
kernel write or dump failed, a reload failed or was refused, a quorum command failed,
the watchdog withheld) and for a whole service in trouble (``quorum.down``,
``service.panic``); ``warning`` (look soon) for one real server down
(``realserver.down``), ``drift.repaired``, ``kernel.slow``; ``info`` for the rest,
among them every recovery (``realserver.up``, ``quorum.up``, ``service.panic_over``).

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

#: syslog priority of each level (sd-daemon(3)'s ``<N>`` prefixes).
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}


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


def to_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal: ``$JOURNAL_STREAM`` is its ``DEVICE:INODE``
    (systemd sets it for the stream it connects; a redirected stderr no longer matches)."""
    env = os.environ if environ is None else environ
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (int(device), int(inode)) == (st.st_dev, st.st_ino)
    except (AttributeError, ValueError, OSError):  # no file behind it, or a bad variable
        return False


def with_priority(renderer: Processor) -> Processor:
    """``renderer``'s line prefixed with the event's syslog priority (``<4>{...}``)."""

    def render(logger: object, name: str, event: structlog.typing.EventDict) -> str:
        priority = PRIORITIES.get(str(event.get("level", "")), 6)
        line = renderer(logger, name, event)
        text = line.decode() if isinstance(line, bytes) else str(line)
        return f"<{priority}>{text}"

    return render


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
    ``stream`` defaults to ``sys.stderr``; ``environ`` to ``os.environ``.
    Calling it again replaces the previous set-up.
    """
    number = parse_level(level)
    out = sys.stderr if stream is None else stream
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
    if to_journal(out, environ):
        renderer = with_priority(renderer)

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
