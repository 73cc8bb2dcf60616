"""Tests of the control socket transport: real unix sockets in a temporary directory."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from lvsd import control
from lvsd.errors import ControlError, LvsdError


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory (socket paths are limited to 107 bytes), traversable by all."""
    path = Path(tempfile.mkdtemp(prefix="lvsd-ctl-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def echo(request: dict[str, Any]) -> dict[str, Any]:
    """A handler answering with what it was asked, or failing on demand."""
    if request.get("command") == "fail":
        raise LvsdError("no service named 'web'")
    if request.get("command") == "bug":
        raise RuntimeError("oops")
    if request.get("command") == "refuse":
        return {"ok": False, "error": "not now"}
    return {"echo": request}


@pytest.fixture
async def server(sock_dir: Path) -> AsyncIterator[str]:
    path = str(sock_dir / "run" / "control.sock")
    srv = await control.serve(path, echo, group=None)
    yield path
    srv.close()
    await srv.wait_closed()
    control.remove_socket(path)


async def test_round_trip(server: str) -> None:
    """A request comes back inside the ok envelope."""
    answer = await control.request(server, {"command": "status", "verbose": True}, timeout=2)

    assert {
        "ok": True,
        "error": "",
        "echo": {"command": "status", "verbose": True},
    } == answer


async def test_sync_client_round_trip(server: str) -> None:
    """The synchronous client (for the CLI) gets the same answer."""
    answer = await asyncio.to_thread(control.request_sync, server, {"command": "status"}, 2.0)

    assert {"ok": True, "error": "", "echo": {"command": "status"}} == answer


async def test_handler_lvsd_error_becomes_failure(server: str) -> None:
    """An LvsdError from the handler is an ok=false answer; the client raises it."""
    with pytest.raises(ControlError, match="no service named 'web'"):
        await control.request(server, {"command": "fail"}, timeout=2)

    answer = await control.request(server, {"command": "fail"}, timeout=2, check=False)
    assert {"ok": False, "error": "no service named 'web'"} == answer


async def test_handler_may_refuse_itself(server: str) -> None:
    """A handler can answer ok=false with its own error."""
    answer = await control.request(server, {"command": "refuse"}, timeout=2, check=False)

    assert {"ok": False, "error": "not now"} == answer


async def test_handler_bug_is_reported_not_fatal(server: str) -> None:
    """An unexpected exception answers 'internal error' and the server keeps serving."""
    with pytest.raises(ControlError, match="internal error: RuntimeError: oops"):
        await control.request(server, {"command": "bug"}, timeout=2)

    assert True is (await control.request(server, {"command": "ping"}, timeout=2))["ok"]


async def raw_exchange(path: str, data: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(data)
    await writer.drain()
    line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return line


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"{nope\n", "bad request: not JSON"),
        (b"[1, 2]\n", "bad request: expected a JSON object"),
    ],
)
async def test_bad_requests_get_an_error_answer(server: str, data: bytes, error: str) -> None:
    """Malformed requests are answered with ok=false, not dropped."""
    answer = json.loads(await raw_exchange(server, data))

    assert False is answer["ok"]
    assert answer["error"].startswith(error)


async def test_oversized_request_is_refused(server: str) -> None:
    """A request longer than the limit gets an error instead of exhausting memory."""
    data = b'{"x": "' + b"a" * (control.REQUEST_LIMIT + 10) + b'"}\n'

    answer = json.loads(await raw_exchange(server, data))

    assert {"ok": False, "error": f"request longer than {control.REQUEST_LIMIT} bytes"} == answer


async def test_silent_client_is_disconnected(sock_dir: Path) -> None:
    """A client that never sends a line is answered with a timeout error and closed."""
    path = str(sock_dir / "c.sock")
    srv = await control.serve(path, echo, group=None, read_timeout=0.05)
    try:
        reader, writer = await asyncio.open_unix_connection(path)
        line = await asyncio.wait_for(reader.readline(), 2)
        writer.close()
        await writer.wait_closed()
    finally:
        srv.close()
        await srv.wait_closed()

    assert {"ok": False, "error": "no request within 0.05s"} == json.loads(line)


async def test_socket_mode_is_0600_without_group(server: str) -> None:
    """Without a group only the daemon's user may connect."""
    assert 0o600 == stat.S_IMODE(os.stat(server).st_mode)
    assert 0o755 == stat.S_IMODE(os.stat(Path(server).parent).st_mode)


async def test_socket_mode_is_0660_with_group(sock_dir: Path) -> None:
    """With a group the socket is 0660 and belongs to that group."""
    group = grp.getgrgid(os.getgid())
    path = str(sock_dir / "g.sock")
    srv = await control.serve(path, echo, group=group.gr_name)
    try:
        st = os.stat(path)
    finally:
        srv.close()
        await srv.wait_closed()

    assert (0o660, group.gr_gid) == (stat.S_IMODE(st.st_mode), st.st_gid)


async def test_unknown_group_is_refused(sock_dir: Path) -> None:
    """A control group that does not exist is a clear error, and nothing is created."""
    path = sock_dir / "x.sock"

    with pytest.raises(ControlError, match="group 'no-such-group-lvsd' does not exist"):
        await control.serve(str(path), echo, group="no-such-group-lvsd")
    assert False is path.exists()


async def test_no_temporary_name_left_behind(server: str) -> None:
    """Only the socket remains in its directory after start-up."""
    assert ["control.sock"] == os.listdir(Path(server).parent)


async def test_stale_socket_is_replaced(sock_dir: Path) -> None:
    """A socket left by a dead daemon (nobody listening) is replaced."""
    path = str(sock_dir / "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
        old.bind(path)  # bound but not listening: connecting is refused
    srv = await control.serve(path, echo, group=None)
    try:
        answer = await control.request(path, {"command": "ping"}, timeout=2)
    finally:
        srv.close()
        await srv.wait_closed()

    assert True is answer["ok"]


async def test_live_socket_is_not_stolen(server: str) -> None:
    """A second daemon refuses to take over a socket someone answers on."""
    with pytest.raises(ControlError, match="already running"):
        await control.serve(server, echo, group=None)

    assert True is (await control.request(server, {"command": "ping"}, timeout=2))["ok"]


async def test_regular_file_is_not_replaced(sock_dir: Path) -> None:
    """A non-socket at the path is an error, and the file is left alone."""
    path = sock_dir / "f.sock"
    path.write_text("keep me")

    with pytest.raises(ControlError, match="not a socket"):
        await control.serve(str(path), echo, group=None)
    assert "keep me" == path.read_text()


async def test_remove_socket_only_removes_sockets(sock_dir: Path, server: str) -> None:
    """remove_socket deletes the socket but never a regular file; missing is fine."""
    regular = sock_dir / "plain"
    regular.write_text("")

    control.remove_socket(server)
    control.remove_socket(str(regular))
    control.remove_socket(str(sock_dir / "missing"))

    assert ([], True) == (os.listdir(Path(server).parent), regular.exists())


async def test_too_long_path_is_refused(sock_dir: Path) -> None:
    """A path the kernel cannot bind is refused with a clear message."""
    with pytest.raises(ControlError, match="too long"):
        await control.serve(str(sock_dir / ("x" * 120)), echo, group=None)


async def test_client_not_running(sock_dir: Path) -> None:
    """No socket: the client says the daemon is not running (async and sync)."""
    path = str(sock_dir / "none.sock")

    with pytest.raises(ControlError, match="lvsd is not running \\(no control socket"):
        await control.request(path, {}, timeout=1)
    with pytest.raises(ControlError, match="lvsd is not running \\(no control socket"):
        control.request_sync(path, {}, timeout=1)


async def test_client_stale_socket(sock_dir: Path) -> None:
    """A socket nobody listens on: 'not running', with the word stale."""
    path = str(sock_dir / "stale.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
        old.bind(path)

        with pytest.raises(ControlError, match="stale socket"):
            await control.request(path, {}, timeout=1)
        with pytest.raises(ControlError, match="stale socket"):
            control.request_sync(path, {}, timeout=1)


async def test_client_timeout(sock_dir: Path) -> None:
    """A daemon that accepts but never answers makes the client time out."""
    path = str(sock_dir / "slow.sock")
    hang = asyncio.Event()

    async def stuck(request: dict[str, Any]) -> dict[str, Any]:
        await hang.wait()
        return {}

    srv = await control.serve(path, stuck, group=None)
    try:
        with pytest.raises(ControlError, match=r"did not answer within 0\.05s"):
            await control.request(path, {"command": "x"}, timeout=0.05)
        with pytest.raises(ControlError, match=r"did not answer within 0\.05s"):
            await asyncio.to_thread(control.request_sync, path, {"command": "x"}, 0.05)
    finally:
        hang.set()
        srv.close()
        await srv.wait_closed()


async def test_answer_without_ok_is_an_error(sock_dir: Path) -> None:
    """Something that is not lvsd answering on the socket is reported as such."""
    path = str(sock_dir / "odd.sock")

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b'{"hello": 1}\n')
        await writer.drain()
        writer.close()

    srv = await asyncio.start_unix_server(impostor, path)
    try:
        with pytest.raises(ControlError, match="without an 'ok' field"):
            await control.request(path, {}, timeout=2)
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
async def test_permission_denied_for_other_users(server: str) -> None:
    """Another user cannot connect to a 0600 socket and is told why (checked by a child
    process that drops to nobody)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                control.request_sync(server, {"command": "status"}, timeout=1)
                message = "connected"
            except ControlError as exc:
                message = str(exc)
            os.write(write_end, message.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)

    assert 0 == os.waitstatus_to_exitcode(status)
    assert message.startswith(f"permission denied on {server}")


async def test_encode_renders_unknown_values_as_text() -> None:
    """Values JSON does not know (addresses, keys) are sent as their text form."""
    from lvsd.model import DestKey

    assert b'{"rs":"10.0.0.2:80"}\n' == control.encode({"rs": DestKey.of("10.0.0.2", 80)})


async def _turns_to_answer(path: str) -> int:
    """Turns of the event loop from a request written at once to its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(path)
        client.sendall(control.encode({"command": "status"}))
        client.setblocking(False)
        for turns in range(1, 50):
            await asyncio.sleep(0)
            try:
                answer = client.recv(65536)
            except BlockingIOError:
                continue
            assert json.loads(answer)["ok"]
            return turns
    raise AssertionError("no answer within 50 turns")


async def test_a_request_is_answered_in_the_second_turn_of_the_loop(server: str) -> None:
    """The request is read and answered in the turn after the accept: the client reads
    it in the third (asyncio's stream server took six, each behind every other ready
    callback: on a one-CPU host busy with probes, seconds)."""
    assert [3, 3, 3] == [await _turns_to_answer(server) for _ in range(3)]


async def test_close_cancels_a_client_still_waiting_for_its_answer(sock_dir: Path) -> None:
    """close() stops listening and cancels a request whose handler has not answered;
    wait_closed() then returns and the client is told the daemon hung up."""
    asked = asyncio.Event()

    async def hang(request: dict[str, Any]) -> dict[str, Any]:
        asked.set()
        await asyncio.Event().wait()
        return {}

    path = str(sock_dir / "control.sock")
    srv = await control.serve(path, hang, group=None)
    client = asyncio.create_task(control.request(path, {"command": "reload"}, timeout=5))
    await asked.wait()
    srv.close()
    await asyncio.wait_for(srv.wait_closed(), 2)
    with pytest.raises(ControlError):
        await client
    control.remove_socket(path)
    with pytest.raises(ControlError, match="not running"):
        await control.request(path, {"command": "status"}, timeout=1)


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Wait (generously: the host may be loaded) until ``condition()`` holds."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 -- the state polled is the server's, not ours
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\n", "bad request: not JSON"),
        (b"[" * 5000 + b"]" * 5000 + b"\n", "bad request: JSON nested too deeply"),
        (b'{"command": ' + b"7" * 5000 + b"}\n", "bad request: not JSON (Exceeds the limit"),
        (b'"status"\n', "bad request: expected a JSON object"),
        (b"\xff\xfe\n", "bad request: not JSON"),
    ],
    ids=["empty-line", "deep", "5000-digits", "string", "not-utf8"],
)
async def test_hostile_requests_get_an_error_answer(server: str, data: bytes, error: str) -> None:
    """Deeply nested JSON (RecursionError), a 5,000-digit integer (ValueError), an empty
    line or a non-object each get an ok=false answer, and the server keeps serving."""
    answer = json.loads(await asyncio.wait_for(raw_exchange(server, data), 10))

    assert (False, True) == (answer["ok"], answer["error"].startswith(error))
    assert True is (await control.request(server, {"command": "ping"}, timeout=5))["ok"]


async def test_clients_past_the_cap_are_told_busy(sock_dir: Path) -> None:
    """With MAX_CLIENTS requests being handled, one more client gets a one-line busy
    error at once (not silence), logged once for two; after they finish it is served."""
    path = str(sock_dir / "busy.sock")
    release = asyncio.Event()
    handling = 0

    async def slow(request: dict[str, Any]) -> dict[str, Any]:
        nonlocal handling
        handling += 1
        await release.wait()
        return {}

    srv = await control.serve(path, slow, group=None)
    try:
        held = [
            asyncio.create_task(control.request(path, {"command": "x"}, timeout=30))
            for _ in range(control.MAX_CLIENTS)
        ]
        await eventually(lambda: handling == control.MAX_CLIENTS)
        with capture_logs() as logs:
            refused = [
                await control.request(path, {"command": "x"}, timeout=10, check=False),
                await asyncio.to_thread(control.request_sync, path, {}, 10, check=False),
            ]
        release.set()
        answers = await asyncio.gather(*held)
        after = await control.request(path, {"command": "x"}, timeout=10)
    finally:
        srv.close()
        await srv.wait_closed()

    busy = {"ok": False, "error": f"lvsd is busy ({control.MAX_CLIENTS} clients); try again"}
    assert [busy, busy] == refused
    assert [1] == [e["count"] for e in logs if e["event"] == "control.busy"]
    assert {True} == {a["ok"] for a in answers} == {after["ok"]}


async def test_a_client_that_does_not_read_is_dropped(sock_dir: Path) -> None:
    """An answer the client does not take within the send deadline is dropped and the
    connection closed: the client finds a cut answer, then the end."""
    path = str(sock_dir / "big.sock")
    size = 16 << 20  # far more than a unix socket's buffers hold

    async def big(request: dict[str, Any]) -> dict[str, Any]:
        return {"blob": "x" * size}

    srv = await control.serve(path, big, group=None, send_timeout=0.1)
    try:
        with capture_logs() as logs, socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            client.sendall(b'{"command": "status"}\n')
            await eventually(lambda: any(e["event"] == "control.send_timeout" for e in logs))
            client.settimeout(10)
            received = 0
            while chunk := client.recv(1 << 20):
                received += len(chunk)
        await asyncio.wait_for(srv.wait_closed(), 10)  # no client task left
    finally:
        srv.close()

    assert 0 < received < size


async def test_accept_out_of_descriptors_backs_off(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """accept failing with EMFILE pauses the listening socket (0.1 s, doubling) instead
    of being called again on every turn of the loop, logs one warning for the streak,
    and the waiting client is served once descriptors are back."""
    calls = 0
    real_accept = socket.socket.accept

    def out_of_fds(self: socket.socket) -> tuple[socket.socket, Any]:
        nonlocal calls
        calls += 1
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(socket.socket, "accept", out_of_fds)
    with capture_logs() as logs:
        client = asyncio.create_task(control.request(server, {"command": "ping"}, timeout=30))
        await eventually(lambda: calls >= 3)  # 0.1 s and 0.2 s apart
        before = calls
        for _ in range(200):
            await asyncio.sleep(0)  # a spinning accept would be called on each turn
        spun = calls - before
        monkeypatch.setattr(socket.socket, "accept", real_accept)
        answer = await client

    warned = [e for e in logs if e["event"] == "control.accept_failed"]
    resumed = [e["count"] for e in logs if e["event"] == "control.accept_resumed"]
    assert (True, 1, [0.1]) == (spun <= 2, len(warned), [e["retry_in"] for e in warned])
    assert ([calls], True) == (resumed, answer["ok"])


class Door:
    """A listening socket with a full backlog (the client's connect says EAGAIN) that
    opens on the client's first pause: then every waiting connection is answered."""

    def __init__(self, path: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(0)
        self.fillers: list[socket.socket] = []
        while True:
            filler = socket.socket(socket.AF_UNIX)
            filler.setblocking(False)
            try:
                filler.connect(path)
            except BlockingIOError:
                filler.close()
                break
            self.fillers.append(filler)
        self.pauses = 0
        self.thread = threading.Thread(target=self._answer, daemon=True)

    def pauses_of(self, original: Callable[[float], Iterator[float]]) -> Any:
        def pauses(window: float) -> Iterator[float]:
            for pause in original(window):
                self.pauses += 1
                if self.pauses == 1:  # the fillers leave, and the daemon catches up
                    for filler in self.fillers:
                        filler.close()
                    self.thread.start()
                yield pause

        return pauses

    def _answer(self) -> None:
        with self.listener:
            for _ in range(len(self.fillers) + 1):
                conn, _ = self.listener.accept()
                with conn:
                    conn.settimeout(10)
                    with contextlib.suppress(OSError):
                        if conn.recv(65536):
                            conn.sendall(b'{"ok": true, "error": ""}\n')

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.listener.close()


@pytest.mark.parametrize("client", ["sync", "async"])
async def test_client_waits_for_a_full_backlog(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch, client: str
) -> None:
    """A full accept backlog (EAGAIN on connect) makes the client try again for a
    while instead of failing at once; it gets its answer when the daemon catches up."""
    path = str(sock_dir / "full.sock")
    door = Door(path)
    monkeypatch.setattr(control, "_pauses", door.pauses_of(control._pauses))
    try:
        if client == "sync":
            answer = await asyncio.to_thread(control.request_sync, path, {"command": "x"}, 20.0)
        else:
            answer = await control.request(path, {"command": "x"}, timeout=20)
    finally:
        door.close()

    assert ({"ok": True, "error": ""}, True) == (answer, door.pauses >= 1)


async def test_client_gives_up_on_a_backlog_that_stays_full(sock_dir: Path) -> None:
    """A backlog full for the whole retry window is one clear error (sync and async)."""
    path = str(sock_dir / "shut.sock")
    door = Door(path)
    try:
        with pytest.raises(ControlError, match="too busy to take a connection"):
            await control.request(path, {"command": "x"}, timeout=0.3)
        with pytest.raises(ControlError, match="too busy to take a connection"):
            await asyncio.to_thread(control.request_sync, path, {"command": "x"}, 0.3)
    finally:
        door.close()


#: Run in a child process: a control server whose process is out of descriptors until
#: a second after its first failed accept; prints the log events as JSON lines.
OUT_OF_FDS = """
import asyncio, json, os, resource, sys
from structlog.testing import capture_logs
from lvsd import control

async def ping(request):
    return {}

async def main(path):
    with capture_logs() as logs:
        srv = await control.serve(path, ping, group=None)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        spare = []
        try:
            while True:
                spare.append(os.dup(0))
        except OSError:
            pass
        print("ready", flush=True)
        async with asyncio.timeout(30):
            while not any(e["event"] == "control.accept_failed" for e in logs):
                await asyncio.sleep(0.01)
            await asyncio.sleep(1.0)
            for fd in spare:
                os.close(fd)
            while not any(e["event"] == "control.accept_resumed" for e in logs):
                await asyncio.sleep(0.01)
        srv.close()
        await srv.wait_closed()
    for event in logs:
        print(json.dumps(event, default=str))

asyncio.run(main(sys.argv[1]))
"""


async def test_a_real_fd_exhaustion_backs_off(sock_dir: Path) -> None:
    """A server process at its descriptor limit (RLIMIT_NOFILE, real EMFILE) tries to
    accept a few times a second, not on every turn of its loop; it logs one warning,
    and the waiting client is answered once descriptors are free again."""
    path = str(sock_dir / "fd.sock")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", OUT_OF_FDS, path, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        assert b"ready\n" == await asyncio.wait_for(child.stdout.readline(), 30)
        answer = await control.request(path, {"command": "ping"}, timeout=30)
        out, _ = await asyncio.wait_for(child.communicate(), 30)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    events = [json.loads(line) for line in out.splitlines()]
    warned = [e for e in events if e["event"] == "control.accept_failed"]
    resumed = [e["count"] for e in events if e["event"] == "control.accept_resumed"]
    assert (0, True, 1, "Too many open files") == (
        child.returncode,
        answer["ok"],
        len(warned),
        warned[0]["error"].split("] ")[-1],
    )
    assert 2 <= resumed[0] <= 10  # in about a second: 0.1 s, 0.2 s, 0.4 s... apart
