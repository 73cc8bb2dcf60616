"""Tests of the control socket transport: real unix sockets in a temporary directory."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import asyncio
import grp
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

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
