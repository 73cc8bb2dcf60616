"""A probe's timeout measures the real server, not lvsd's loop: a deadline that fires
late gives the time back (:class:`~lvsd.checks.net.Deadline`, driven here by a fake
loop), an answer that had arrived while the loop stood still is still a result, and a
server that really does not answer still times out (real loopback servers, the loop
blocked on purpose)."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

from lvsd.checks.base import Probe, ProbeResult
from lvsd.checks.http import HttpProbe
from lvsd.checks.net import LAG, LATE, Deadline, timed_out
from lvsd.checks.tcp import tcp_probe
from lvsd.config.model import HttpOptions, TcpOptions
from lvsd.health.check import LOCAL
from tests.checks.conftest import Loopback, make_spec


class Handle:
    def __init__(self, when: float, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """``time``, ``call_at`` and ``call_soon`` by hand: :meth:`run_until` moves the
    clock and runs what fell due (what is due now runs at once)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., None], *args: Any) -> Handle:
        handle = Handle(when, callback, args)
        self.handles.append(handle)
        return handle

    def call_soon(self, callback: Callable[..., None], *args: Any) -> Handle:
        return self.call_at(self.now, callback, *args)

    def run_until(self, now: float) -> None:
        """The loop wakes at ``now`` (late, if it stood still) and runs what is due."""
        self.now = now
        while due := [h for h in self.handles if h.when <= self.now and not h.cancelled]:
            for handle in due:
                self.handles.remove(handle)
                handle.callback(*handle.args)


def deadline(loop: FakeLoop, timeout: float = 1.0) -> list[float]:
    """A deadline of ``timeout`` from 0; returns the list its expiries are put in."""
    expired: list[float] = []
    Deadline(cast(asyncio.AbstractEventLoop, loop), timeout, timeout, expired.append)
    return expired


def test_on_time_deadline_expires_one_turn_later() -> None:
    """A deadline the loop reaches in time expires (lateness ~0)."""
    loop = FakeLoop()
    expired = deadline(loop)
    loop.run_until(0.99)
    assert [] == expired
    loop.run_until(1.0 + LATE / 2)
    assert [LATE / 2] == [round(x, 6) for x in expired]


def test_late_deadline_gives_the_time_back() -> None:
    """Reached 0.5 s late (the loop stood still), the deadline moves on by 0.5 s: the
    probe gets the server's full timeout of time the loop was there."""
    loop = FakeLoop()
    expired = deadline(loop)
    loop.run_until(1.5)
    assert [] == expired
    loop.run_until(1.99)
    assert [] == expired
    loop.run_until(2.0)
    assert [0.0] == expired


def test_the_time_given_back_is_bounded_by_the_timeout() -> None:
    """A loop late at every firing gets at most one timeout more, then expires: a dead
    server is still found under steady lag."""
    loop = FakeLoop()
    expired = deadline(loop)
    loop.run_until(1.3)  # +0.3
    loop.run_until(1.9)  # +0.3
    loop.run_until(2.5)  # +0.3
    assert [] == expired
    loop.run_until(3.1)  # budget left 0.1: +0.1
    assert [] == expired
    loop.run_until(3.5)
    assert [0.3] == [round(x, 6) for x in expired]


def test_timed_out_is_the_servers_unless_the_loop_stood_still_past_the_timeout() -> None:
    """The verdict of an expiry: a plain timeout, or ``local``/LAG (held) when the
    loop stood still for longer than the whole timeout at the end."""
    plain = timed_out("GET /", 1.0, 0.3)
    assert ("GET /: timeout after 1.0s", "timeout", "") == (plain.detail, plain.reason, plain.local)
    held = timed_out("GET /", 1.0, 2.5)
    assert (LOCAL, LAG) == (held.reason, held.local)
    assert "GET /: timeout after 1.0s, lvsd's loop 2.5s late (held)" == held.detail


# --- real probes, the loop blocked on purpose -----------------------------------------

#: Probe timeout and the stall (longer) that follows each probe's start.
TIMEOUT = 0.5
STALL = 1.2


async def _stalled(probe: Probe) -> ProbeResult:
    """Run ``probe`` with the loop standing still for STALL seconds right after the
    probe began (its connect under way): lvsd late, the server not."""
    asyncio.get_running_loop().call_soon(time.sleep, STALL)
    try:
        return await probe.probe()
    finally:
        await probe.close()


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    await writer.drain()


async def test_http_answer_after_a_stall_is_a_result(net4: Loopback) -> None:
    """The loop stood still past the timeout while the connect completed: the request
    still goes out and the answer counts (before: a timeout)."""
    port = await net4.tcp(_answer)
    result = await _stalled(
        HttpProbe(make_spec("http", HttpOptions(), timeout=TIMEOUT), net4.target(port))
    )
    assert (True, "GET /: status 200") == (result.ok, result.detail), result


async def test_http_dead_server_after_a_stall_still_times_out(net4: Loopback) -> None:
    """A server that never answers times out all the same, after the time given back."""
    port = await net4.tcp(net4.hang_handler())
    result = await _stalled(
        HttpProbe(make_spec("http", HttpOptions(), timeout=TIMEOUT), net4.target(port))
    )
    assert (False, "timeout") == (result.ok, result.reason), result


async def test_tcp_expect_after_a_stall_is_a_result(net4: Loopback) -> None:
    """The stream path of tcp (send/expect) through run_timed: the same."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(4))
        await writer.drain()

    port = await net4.tcp(echo)
    spec = make_spec("tcp", TcpOptions(send=b"ping", expect=b"ping"), timeout=TIMEOUT)
    result = await _stalled(tcp_probe(spec, net4.target(port)))
    assert result.ok, result


async def test_connect_after_a_stall_is_a_result(net4: Loopback) -> None:
    """A plain connect check whose connect completed during the stall: ok."""
    port = await net4.tcp(net4.hang_handler())
    result = await _stalled(
        tcp_probe(make_spec("tcp", TcpOptions(), timeout=TIMEOUT), net4.target(port))
    )
    assert result.ok, result
