"""The limits of the HTTP port (``lvsd.observe.limits``), through ``start`` on loopback:
the connection cap, the header, keep-alive and answer deadlines, quiet bad requests."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import sys
from collections.abc import Callable, Generator

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from lvsd.observe import limits
from lvsd.observe.api import bound_port, start
from lvsd.observe.metrics import Metrics
from tests.observe.test_api import FakeSource, get


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait (generously: the host may be loaded) until ``condition()`` holds."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 -- the state polled is the server's, not ours
            await asyncio.sleep(0.01)


async def read_until_closed(reader: asyncio.StreamReader, within: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts)."""
    data = b""
    async with asyncio.timeout(within):
        try:
            while chunk := await reader.read(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data


def test_connection_limit_follows_the_descriptor_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """At most an eighth of the soft descriptor limit, MAX_CONNECTIONS, at least 4."""
    caps = []
    for soft in (resource.RLIM_INFINITY, 65536, 128, 8):
        monkeypatch.setattr(resource, "getrlimit", lambda _, soft=soft: (soft, soft))
        caps.append(limits.connection_limit())
    assert [limits.MAX_CONNECTIONS, limits.MAX_CONNECTIONS, 16, 4] == caps


async def raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_connections_past_the_cap_are_closed_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the cap's worth of connections open, one more is closed at once (a warning
    logged); once one of them goes, a new client is served."""
    monkeypatch.setattr(limits, "MAX_CONNECTIONS", 4)
    runner = await start("127.0.0.1:0", FakeSource(), Metrics(CollectorRegistry()))
    port = bound_port(runner)
    held = [await raw(port) for _ in range(4)]
    try:
        with capture_logs() as logs:
            reader, writer = await raw(port)
            refused = await read_until_closed(reader)
            writer.close()
        held.pop()[1].close()
        statuses: list[int] = []

        async def served() -> None:
            try:
                statuses.append((await get(f"http://127.0.0.1:{port}/healthz"))[0])
            except aiohttp.ClientError:
                statuses.append(0)

        while 200 not in statuses:  # the freed place is the server's to see
            await asyncio.wait_for(served(), 10)
    finally:
        for _, w in held:
            w.close()
        await runner.cleanup()
    assert (b"", [4]) == (refused, [e["limit"] for e in logs if e["event"] == "http.refused"])


async def test_trickled_headers_are_cut_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client sending its headers a byte at a time (slowloris) is disconnected once
    HEADER_TIMEOUT has passed since it connected, without an answer."""
    monkeypatch.setattr(limits, "HEADER_TIMEOUT", 0.2)
    runner = await start("127.0.0.1:0", FakeSource(), Metrics(CollectorRegistry()))
    reader, writer = await raw(bound_port(runner))
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\n")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                while True:  # cancelled once the server hangs up
                    writer.write(b"X")
                    await writer.drain()
                    await asyncio.sleep(0.02)

        trickling = asyncio.create_task(trickle())
        answer = await read_until_closed(reader)
        trickling.cancel()
    finally:
        writer.close()
        await runner.cleanup()
    assert b"" == answer


async def test_an_idle_keepalive_connection_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """After an answer, a kept-alive connection with no next request is closed after
    KEEPALIVE_TIMEOUT."""
    monkeypatch.setattr(limits, "KEEPALIVE_TIMEOUT", 0.2)
    runner = await start("127.0.0.1:0", FakeSource(), Metrics(CollectorRegistry()))
    reader, writer = await raw(bound_port(runner))
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await read_until_closed(reader)
    finally:
        writer.close()
        await runner.cleanup()
    assert (True, True) == (answer.startswith(b"HTTP/1.1 200 OK"), answer.endswith(b"ok\n"))


class HugeMetrics(Metrics):
    """Metrics whose exposition is far larger than the sockets' buffers."""

    size = 64 << 20

    def exposition_parts(self, openmetrics: bool = False) -> Generator[None, None, list[bytes]]:
        yield
        return [b"x" * (1 << 20)] * (self.size >> 20)


async def test_a_client_that_does_not_read_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer the client does not take within ANSWER_TIMEOUT is cut off: the
    connection is aborted and the handler holds nothing any more."""
    monkeypatch.setattr(limits, "ANSWER_TIMEOUT", 0.3)
    runner = await start("127.0.0.1:0", FakeSource(), HugeMetrics(CollectorRegistry()))
    with socket.create_connection(("127.0.0.1", bound_port(runner))) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            with capture_logs() as logs:
                client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                await eventually(lambda: any(e["event"] == "http.answer_timeout" for e in logs))
            client.settimeout(10)
            received = 0
            with contextlib.suppress(ConnectionResetError):
                while chunk := await asyncio.to_thread(client.recv, 1 << 20):
                    received += len(chunk)
        finally:
            await runner.cleanup()
    assert 0 < received < HugeMetrics.size


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 10_000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(40)) + b"\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
    ],
    ids=["long-header", "bad-length", "40-headers", "tls-hello"],
)
async def test_bad_requests_are_answered_and_logged_quietly(
    caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    """A malformed request gets a 400 and a debug line, not an error with a traceback."""
    runner = await start("127.0.0.1:0", FakeSource(), Metrics(CollectorRegistry()))
    try:
        with caplog.at_level(logging.DEBUG), capture_logs() as logs:
            reader, writer = await raw(bound_port(runner))
            writer.write(request_bytes)
            answer = await read_until_closed(reader)
            writer.close()
    finally:
        await runner.cleanup()
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    loud += [e["event"] for e in logs if e["log_level"] not in ("debug", "info")]
    assert (True, []) == (answer.startswith(b"HTTP/1.0 400 Bad Request"), loud)


#: Run in a child process at 128 descriptors: the HTTP port (port 0, no header deadline
#: within the test) of a FakeSource; prints the port, waits for a line on stdin, then
#: opens 64 sockets (as probes would) and prints how many it got.
AT_128_FDS = """
import asyncio, resource, socket, sys
from prometheus_client import CollectorRegistry
from lvsd.observe import limits
from lvsd.observe.api import bound_port, start
from lvsd.observe.metrics import Metrics
from tests.observe.test_api import FakeSource

async def main():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
    limits.HEADER_TIMEOUT = 600.0
    runner = await start("127.0.0.1:0", FakeSource(), Metrics(CollectorRegistry()))
    print("port", bound_port(runner), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    probes = []
    try:
        for _ in range(64):
            probes.append(socket.socket())
    except OSError:
        pass
    print("sockets", len(probes), flush=True)
    await runner.cleanup()

asyncio.run(main())
"""


async def said(stdout: asyncio.StreamReader, word: str) -> int:
    """The number after ``word`` on the child's next line that starts with it."""
    async with asyncio.timeout(30):
        while not (line := (await stdout.readline()).decode()).startswith(word):
            assert line, f"the child ended before saying {word!r}"
    return int(line.split()[1])


async def test_idle_connections_leave_descriptors_for_the_probes() -> None:
    """At 128 descriptors, 150 idle connections to the port (the issue's case) get 16
    places; the others are closed at once, and the process can still open 64 sockets
    for its probes (without the cap the connections took every descriptor)."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        AT_128_FDS,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    clients: list[asyncio.StreamWriter] = []
    readers: list[asyncio.Task[bytes]] = []
    try:
        port = await said(child.stdout, "port")
        for _ in range(150):
            reader, writer = await raw(port)
            readers.append(asyncio.create_task(reader.read(1)))
            clients.append(writer)
        await eventually(lambda: sum(task.done() for task in readers) >= 150 - 16, within=30)
        await asyncio.sleep(0.1)  # one more would show up here
        closed = sum(task.done() for task in readers)
        child.stdin.write(b"go\n")
        sockets = await said(child.stdout, "sockets")
    finally:
        for task in readers:
            task.cancel()
        for writer in clients:
            writer.close()
        if child.returncode is None:
            child.kill()
        await child.wait()
    assert (150 - 16, 64) == (closed, sockets)
