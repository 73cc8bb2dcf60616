"""lvsd's own shortage is not a server's failure: probes that cannot be made for want
of descriptors (EMFILE) say ``local``, with the errno, for every kind that opens one;
a source address that cannot be bound stays a failure (it persists)."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import contextlib
import errno
import os
import resource
from collections.abc import Iterator

import pytest

from lvsd.checks.base import Probe, ProbeResult
from lvsd.checks.exec import ExecProbe
from lvsd.checks.http import HttpProbe
from lvsd.checks.net import describe_os_error, local_cause
from lvsd.checks.tcp import tcp_probe
from lvsd.config.model import ExecOptions, HttpOptions, TcpOptions
from lvsd.health.check import LOCAL
from tests.checks.conftest import Loopback, make_spec


@contextlib.contextmanager
def no_free_descriptors() -> Iterator[None]:
    """Every descriptor this process may open is taken (a lowered soft limit, filled
    with /dev/null), until the block ends; then all is given back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 16, hard))
    held: list[int] = []
    try:
        while len(held) < 10_000:
            try:
                held.append(os.open("/dev/null", os.O_RDONLY))
            except OSError as exc:
                if exc.errno != errno.EMFILE:
                    raise
                break
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _starved(probe: Probe) -> ProbeResult:
    with no_free_descriptors():
        return await probe.probe()


def _assert_local(result: ProbeResult) -> None:
    assert not result.ok
    assert (LOCAL, "EMFILE") == (result.reason, result.local), result
    assert "too many open files (lvsd's own error)" in result.detail


async def test_tcp_connect_out_of_descriptors(net4: Loopback) -> None:
    """A plain connect check with no descriptor left: local, EMFILE; then ok again."""
    port = await net4.tcp(net4.hang_handler())
    probe = tcp_probe(make_spec("tcp", TcpOptions()), net4.target(port))
    _assert_local(await _starved(probe))
    assert (await probe.probe()).ok


async def test_tcp_stream_out_of_descriptors(net4: Loopback) -> None:
    """A send/expect check (the stream path through ``run_timed``): local too."""
    port = await net4.tcp(net4.hang_handler())
    probe = tcp_probe(make_spec("tcp", TcpOptions(send=b"x", expect=b"y")), net4.target(port))
    _assert_local(await _starved(probe))


async def test_http_out_of_descriptors(net4: Loopback) -> None:
    """An http check with no descriptor for its socket: local."""
    port = await net4.tcp(net4.hang_handler())
    _assert_local(await _starved(HttpProbe(make_spec("http", HttpOptions()), net4.target(port))))


async def test_exec_spawn_out_of_descriptors(net4: Loopback) -> None:
    """An exec check whose command cannot be started (no descriptor for its pipes):
    local, not the command's exit."""
    spec = make_spec("exec", ExecOptions(command=("/bin/true",)), timeout=10.0)
    result = await _starved(ExecProbe(spec, net4.target(1)))
    assert (LOCAL, "EMFILE") == (result.reason, result.local), result


async def test_source_not_on_this_host_is_still_a_failure(net4: Loopback) -> None:
    """A configured source the host does not have persists: ``error``, never held."""
    port = await net4.tcp(net4.hang_handler())
    spec = make_spec("tcp", TcpOptions(send=b"x", expect=b"y"), source="192.0.2.1")
    result = await tcp_probe(spec, net4.target(port)).probe()
    assert ("error", "") == (result.reason, result.local), result


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        (errno.EMFILE, "EMFILE"),
        (errno.ENFILE, "ENFILE"),
        (errno.ENOBUFS, "ENOBUFS"),
        (errno.ENOMEM, "ENOMEM"),
        (errno.EAGAIN, "EAGAIN"),
        (errno.EADDRNOTAVAIL, "EADDRNOTAVAIL"),  # connect: no local port left
        (errno.ECONNREFUSED, ""),
        (errno.EPERM, ""),  # a local firewall persists: a failure, not held
        (errno.EHOSTUNREACH, ""),
    ],
)
def test_which_errors_are_local(code: int, cause: str) -> None:
    """The errno table: shortages are local, everything else is the server's."""
    exc = OSError(code, os.strerror(code))
    assert cause == local_cause(exc)
    assert (cause != "") == (LOCAL == describe_os_error(exc)[1])


def test_asyncio_bind_failure_is_not_local() -> None:
    """asyncio's own bind error (open_connection with a local address) stays a failure."""
    exc = OSError(errno.EADDRNOTAVAIL, "error while attempting to bind on address ('x', 0)")
    assert "" == local_cause(exc)
    assert "error" == describe_os_error(exc)[1]
