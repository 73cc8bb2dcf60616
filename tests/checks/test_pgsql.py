"""The pgsql probe against scripted loopback servers answering an SSLRequest."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lvsd.checks.pgsql import SSL_REQUEST, PgsqlProbe
from lvsd.config.model import HandshakeOptions
from tests.checks.conftest import Loopback, make_spec
from tests.checks.handshakes import heard_by_now, run, scripted


async def test_ssl_answers_are_up(net: Loopback) -> None:
    """'N' and 'S' both prove a live postmaster; the probe sent an SSLRequest."""
    heard: list[bytes] = []
    assert ("pgsql: SSLRequest answered 'N'", "ok", True) == await run(
        net, "pgsql", scripted(b"N", heard, first=8)
    )
    assert SSL_REQUEST == await heard_by_now(heard)
    assert ("pgsql: SSLRequest answered 'S'", "ok", True) == await run(
        net, "pgsql", scripted(b"S", first=8)
    )


async def test_error_response_is_down(net: Loopback) -> None:
    """An ErrorResponse is down with its message field."""
    fields = b"SFATAL\x00C57P03\x00Mthe database system is shutting down\x00\x00"
    says = b"E" + struct.pack("!I", 4 + len(fields)) + fields
    assert ("pgsql: error: the database system is shutting down", "status", False) == await run(
        net, "pgsql", scripted(says, first=8)
    )


async def test_not_pgsql(net: Loopback) -> None:
    """Any other first byte (an HTTP server's answer) is garbage."""
    assert ("pgsql: answer: garbage 'H'", "protocol", False) == await run(
        net, "pgsql", scripted(b"HTTP/1.1 400 Bad Request\r\n\r\n", first=8)
    )


def _as_nobody(*command: str | Path) -> list[str]:
    """``command`` run as nobody (PostgreSQL refuses to run as root)."""
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *map(str, command)]


@pytest.fixture
def postmaster() -> Iterator[int]:
    """A real PostgreSQL server on 127.0.0.1 (its port), run as nobody in a temporary
    directory of its own (pytest's tmp_path is closed to other users)."""
    bindir = Path("/usr/lib/postgresql/15/bin")
    if os.geteuid() != 0 or shutil.which("setpriv") is None or not (bindir / "initdb").exists():
        pytest.skip("needs root, setpriv and PostgreSQL's initdb/postgres")
    with tempfile.TemporaryDirectory(prefix="lvsd-pgsql-") as name:
        yield from _postmaster(bindir, Path(name))


def _postmaster(bindir: Path, tmp_path: Path) -> Iterator[int]:
    data, sockets = tmp_path / "data", tmp_path / "sockets"
    sockets.mkdir()
    for path in (tmp_path, sockets):
        shutil.chown(path, "nobody", "nogroup")
    subprocess.run(
        _as_nobody(bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres"),
        check=True, capture_output=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    with socket.socket() as probe_port:
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
    server = subprocess.Popen(
        _as_nobody(bindir / "postgres", "-D", data, "-k", sockets, "-p", str(port),
                   "-h", "127.0.0.1", "-c", "ssl=off"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (data / "postmaster.pid").exists() or not _listening(port):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"postgres did not start (exit {server.returncode})")
            time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=60)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_real_postmaster(postmaster: int) -> None:
    """A real PostgreSQL 15 (ssl off) answers the SSLRequest with 'N'."""
    spec = make_spec("pgsql", HandshakeOptions(), timeout=5.0)
    result = await PgsqlProbe(spec, Loopback("127.0.0.1").target(postmaster)).probe()
    assert (True, "pgsql: SSLRequest answered 'N'") == (result.ok, result.detail)
