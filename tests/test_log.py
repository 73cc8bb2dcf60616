"""Tests of the logging set-up: format choice, level filtering, fields, stdlib records."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from lvsd import log


class TtyStream(io.StringIO):
    """A StringIO that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure() changes process-wide state; put it back after every test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_json_event_has_timestamp_level_event_and_keys() -> None:
    """A JSON line carries an ISO UTC timestamp, the level, the event name and the keys."""
    out = io.StringIO()
    log.configure("info", json=True, stream=out, environ={})

    structlog.get_logger().info("realserver.down", service="web", realserver="10.0.0.2:80")

    [event] = lines(out)
    assert ISO_UTC.match(event.pop("timestamp"))
    assert {
        "event": "realserver.down",
        "level": "info",
        "service": "web",
        "realserver": "10.0.0.2:80",
    } == event


def test_level_filters_lower_events() -> None:
    """Events below the configured level are dropped."""
    out = io.StringIO()
    log.configure("warning", json=True, stream=out, environ={})
    logger = structlog.get_logger()

    logger.info("probe.ok")
    logger.warning("realserver.down")
    logger.error("ipvs.apply_failed")

    assert ["realserver.down", "ipvs.apply_failed"] == [e["event"] for e in lines(out)]


def test_debug_level_lets_debug_through() -> None:
    """--log-level debug shows debug events."""
    out = io.StringIO()
    log.configure("DEBUG", json=True, stream=out, environ={})

    structlog.get_logger().debug("probe.ok", detail="connect 10.0.0.2:80: ok")

    assert ["debug"] == [e["level"] for e in lines(out)]


@pytest.mark.parametrize(
    ("environ", "stream", "expected"),
    [
        ({}, TtyStream(), False),
        ({}, io.StringIO(), True),
        ({"JOURNAL_STREAM": "8:12345"}, TtyStream(), True),
        ({"INVOCATION_ID": "abc"}, TtyStream(), True),
    ],
)
def test_want_json(environ: dict[str, str], stream: io.StringIO, expected: bool) -> None:
    """JSON under systemd or without a terminal; the console format on a terminal."""
    assert expected == log.want_json(stream, environ)


def test_auto_format_on_tty_is_readable_text() -> None:
    """On a terminal (and not under systemd) the line is text, not JSON."""
    out = TtyStream()
    log.configure("info", json=None, stream=out, environ={})

    structlog.get_logger().info("realserver.up", service="web")

    text = out.getvalue()
    assert "realserver.up" in text
    assert "service" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_auto_format_under_systemd_is_json_even_on_tty() -> None:
    """Under systemd the journal gets JSON even if stdout looks like a terminal."""
    out = TtyStream()
    log.configure("info", json=None, stream=out, environ={"INVOCATION_ID": "abc"})

    structlog.get_logger().info("daemon.ready")

    assert ["daemon.ready"] == [e["event"] for e in lines(out)]


def test_stdlib_records_use_the_same_format() -> None:
    """A record from the logging module (as aiohttp writes) becomes a JSON line too."""
    out = io.StringIO()
    log.configure("info", json=True, stream=out, environ={})

    logging.getLogger("aiohttp.server").warning("Error handling request")

    [event] = lines(out)
    assert ("Error handling request", "warning", "aiohttp.server") == (
        event["event"],
        event["level"],
        event["logger"],
    )


def test_stdlib_records_respect_level() -> None:
    """Stdlib records below the level are dropped as well."""
    out = io.StringIO()
    log.configure("error", json=True, stream=out, environ={})

    logging.getLogger("asyncio").warning("slow callback")

    assert [] == lines(out)


def test_exception_is_structured_in_json() -> None:
    """log.exception() puts the traceback into the JSON event, not onto extra lines."""
    out = io.StringIO()
    log.configure("info", json=True, stream=out, environ={})

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger().exception("control.failed")

    [event] = lines(out)
    assert "control.failed" == event["event"]
    [exception] = event["exception"]
    assert ("RuntimeError", "boom") == (exception["exc_type"], exception["exc_value"])
    assert all("locals" not in frame for frame in exception["frames"])


def test_configure_twice_does_not_duplicate_lines() -> None:
    """A second configure() replaces the first handler instead of adding one."""
    out = io.StringIO()
    log.configure("info", json=True, stream=out, environ={})
    log.configure("info", json=True, stream=out, environ={})

    logging.getLogger("pyroute2").warning("x")

    assert 1 == len(lines(out))


@pytest.mark.parametrize(
    ("name", "expected"),
    [("info", logging.INFO), ("WARN", logging.WARNING), (" error ", logging.ERROR)],
)
def test_parse_level(name: str, expected: int) -> None:
    """Level names are case-insensitive and 'warn' is accepted."""
    assert expected == log.parse_level(name)


def test_unknown_level_names_the_choices() -> None:
    """An unknown level is rejected with the accepted names in the message."""
    with pytest.raises(ValueError, match="debug, info, warning, error, critical"):
        log.configure("loud", json=True, stream=io.StringIO(), environ={})


def journal_env(path: Path) -> dict[str, str]:
    """``$JOURNAL_STREAM`` as systemd sets it for the file at ``path``."""
    st = os.stat(path)
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


@pytest.mark.parametrize(
    ("method", "priority"),
    [("debug", 7), ("info", 6), ("warning", 4), ("error", 3), ("exception", 3), ("critical", 2)],
)
def test_lines_to_the_journal_carry_the_syslog_priority(
    tmp_path: Path, method: str, priority: int
) -> None:
    """When the stream is the journal, each line starts with ``<N>`` for its level and
    the rest is the usual JSON (journald strips the prefix)."""
    path = tmp_path / "journal"
    with path.open("w") as out:
        log.configure("debug", json=None, stream=out, environ=journal_env(path))
        getattr(structlog.get_logger(), method)("realserver.down", service="web")
    line = path.read_text()

    assert f"<{priority}>" == line[: len(str(priority)) + 2]
    assert "realserver.down" == json.loads(line[len(str(priority)) + 2 :])["event"]


def test_stdlib_records_to_the_journal_carry_the_priority(tmp_path: Path) -> None:
    """aiohttp's warning reaches the journal at priority 4 as well."""
    path = tmp_path / "journal"
    with path.open("w") as out:
        log.configure("info", json=None, stream=out, environ=journal_env(path))
        logging.getLogger("aiohttp.server").warning("Error handling request")

    assert path.read_text().startswith('<4>{"event": "Error handling request"')


@pytest.mark.parametrize(
    "environ",
    [{}, {"JOURNAL_STREAM": "1:2"}, {"JOURNAL_STREAM": "garbage"}, {"INVOCATION_ID": "abc"}],
)
def test_no_priority_prefix_unless_the_stream_is_the_journal(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    """Another file, a redirected stderr (the variable names another inode) or a bad
    variable: plain lines, no ``<N>``."""
    path = tmp_path / "log"
    with path.open("w") as out:
        log.configure("info", json=True, stream=out, environ=environ)
        structlog.get_logger().warning("realserver.down")

    assert "realserver.down" == json.loads(path.read_text())["event"]


def test_a_stream_without_a_file_is_not_the_journal() -> None:
    """A StringIO (tests, no fileno) is never taken for the journal."""
    assert not log.to_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


def test_default_stream_is_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """lvsd logs to stderr (stdout is for command output), as the docs say."""
    log.configure("info", json=True, environ={})
    structlog.get_logger().info("daemon.ready")

    captured = capsys.readouterr()
    assert ("", "daemon.ready") == (captured.out, json.loads(captured.err)["event"])
