"""The control socket: how ``lvsd drain``, ``lvsd status`` and friends talk to the daemon.

Transport only; the commands are the daemon's business. A client connects to a unix
stream socket, writes one JSON object on one line, and reads one JSON object on one line
back; then the connection is closed. Every answer is an envelope::

    {"ok": true, "error": "", ...the handler's fields...}
    {"ok": false, "error": "no service named 'web'"}

Access is controlled by the file's permissions: ``0600`` (the daemon's user only), or
``0660`` with the group set to ``daemon.control_group``. The socket is bound under a
temporary name, given its mode and group, then renamed into place, so it is never
reachable with looser permissions than configured.

Errors a client can meet (daemon not running, stale socket, permission denied, timeout,
a refused request) are :class:`~lvsd.errors.ControlError` with a message for people.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from lvsd.config.values import MAX_SOCKET_PATH
from lvsd.errors import ControlError, LvsdError

#: What the daemon supplies: a request in, the fields of the answer out. Raising
#: :class:`LvsdError` answers ``{"ok": false, "error": str(exc)}``.
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

#: Clients the server accepts at once (the listen backlog).
BACKLOG = 100
#: Largest request line the server reads, in bytes.
REQUEST_LIMIT = 1 << 20
#: Largest answer line a client reads (a status dump of a big table), in bytes.
RESPONSE_LIMIT = 64 << 20

log = structlog.get_logger(__name__)


def encode(message: dict[str, Any]) -> bytes:
    """One JSON line. Values JSON does not know are rendered with ``str()``."""
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


# --- server ------------------------------------------------------------------------


async def serve(
    path: str,
    handler: Handler,
    *,
    group: str | None,
    read_timeout: float = 10.0,
) -> Server:
    """Listen on ``path`` and answer each request with ``handler``.

    Creates the parent directory (mode 0755) if needed, replaces a stale socket, and
    refuses to start when another process answers on ``path`` or ``path`` is not a
    socket. The socket's mode is 0600, or 0660 with group ``group``. A client that
    sends nothing for ``read_timeout`` seconds is disconnected. The caller closes the
    server and then calls :func:`remove_socket`.
    """
    target = Path(path)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:  # room for the temporary name's suffix
        raise ControlError(f"control socket path too long (max {MAX_SOCKET_PATH} bytes): {path}")
    gid = _group_id(group)
    mode = 0o660 if gid is not None else 0o600
    try:
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise ControlError(f"cannot create {target.parent}: {exc.strerror or exc}") from exc
    _check_stale(target)

    sock = _bind(target, mode, gid)
    try:
        sock.listen(BACKLOG)
        server = Server(sock, handler, read_timeout)
    except BaseException:
        sock.close()
        raise
    log.info("control.listening", path=path, mode=f"{mode:04o}", group=group)
    return server


class Server:
    """The listening socket. Its reader callback accepts every waiting client and
    starts the client's task there and then, which answers in its first step when the
    request is already in: few turns of a loop busy with probes stand between a client
    and its answer (docs/performance.md). :meth:`close` stops listening and cancels
    unanswered clients."""

    def __init__(self, sock: socket.socket, handler: Handler, read_timeout: float) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._handler = handler
        self._read_timeout = read_timeout
        self._loop = asyncio.get_running_loop()
        self._clients: set[asyncio.Task[None]] = set()
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(BACKLOG):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: the client waits its turn
                log.warning("control.accept_failed", error=str(exc))
                return
            conn.setblocking(False)
            task = self._loop.create_task(
                _serve_client(conn, self._handler, self._read_timeout), name="control-client"
            )
            self._clients.add(task)
            task.add_done_callback(self._clients.discard)

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        for task in self._clients:
            task.cancel()

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._clients, return_exceptions=True)


def remove_socket(path: str) -> None:
    """Remove the socket file at ``path`` (after the server is closed); anything that
    is not a socket is left alone."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)


def _group_id(group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ControlError(f"control socket group {group!r} does not exist") from None


def _check_stale(target: Path) -> None:
    try:
        st = target.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{target} exists and is not a socket; refusing to replace it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(target))
        except OSError:
            return  # refused: a stale socket from a previous run, replaced below
    raise ControlError(f"another process (lvsd already running?) listens on {target}")


def _bind(target: Path, mode: int, gid: int | None) -> socket.socket:
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        sock.bind(str(temporary))
        os.chmod(temporary, mode)
        if gid is not None:
            os.chown(temporary, -1, gid)
        os.replace(temporary, target)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise ControlError(f"cannot listen on {target}: {exc.strerror or exc}") from exc
    return sock


async def _serve_client(conn: socket.socket, handler: Handler, read_timeout: float) -> None:
    loop = asyncio.get_running_loop()
    with conn:
        try:
            try:
                async with asyncio.timeout(read_timeout):
                    line = await _read_line(loop, conn)
            except TimeoutError:
                response = _failure(f"no request within {read_timeout:g}s")
            except ValueError:  # the line is longer than REQUEST_LIMIT
                response = _failure(f"request longer than {REQUEST_LIMIT} bytes")
            else:
                if not line.strip():
                    return  # the client left without asking
                response = await _answer(line, handler, _peer(conn))
            await loop.sock_sendall(conn, encode(response))
        except ConnectionError:
            pass  # the client went away; nobody to answer


async def _read_line(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    """Bytes up to and with the first newline, or all until the client's EOF; raises
    ValueError past REQUEST_LIMIT bytes. A request already in takes no wait."""
    data = bytearray()
    while True:
        chunk = await loop.sock_recv(conn, 65536)
        if not chunk:
            return bytes(data)
        data += chunk
        end = data.find(b"\n", len(data) - len(chunk))
        if end >= 0 and end < REQUEST_LIMIT:
            return bytes(data[: end + 1])
        if len(data) > REQUEST_LIMIT:
            raise ValueError("request too long")


async def _answer(line: bytes, handler: Handler, peer: dict[str, int]) -> dict[str, Any]:
    try:
        request: Any = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _failure(f"bad request: not JSON ({exc})")
    if not isinstance(request, dict):
        return _failure("bad request: expected a JSON object")
    command = request.get("command")
    log.info("control.request", command=command, **peer)
    try:
        result = await handler(request)
    except LvsdError as exc:
        return _failure(str(exc))
    except Exception as exc:
        log.exception("control.failed", command=command, error=str(exc))
        return _failure(f"internal error: {type(exc).__name__}: {exc}")
    return {"ok": True, "error": "", **result}


def _failure(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}


def _peer(sock: socket.socket) -> dict[str, int]:
    """The client's pid/uid/gid (SO_PEERCRED), for the log."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return {}
    pid, uid, gid = struct.unpack("3i", raw)
    return {"pid": pid, "uid": uid, "gid": gid}


# --- client ------------------------------------------------------------------------


async def request(
    path: str,
    payload: dict[str, Any],
    timeout: float = 5.0,  # noqa: ASYNC109 -- one deadline for connect+send+answer, like the sync client
    *,
    check: bool = True,
) -> dict[str, Any]:
    """Send ``payload`` to the daemon at ``path`` and return its answer.

    Raises :class:`ControlError` when the daemon cannot be reached or does not answer
    within ``timeout`` seconds, and (with ``check``) when it answers ``ok: false``.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path, limit=RESPONSE_LIMIT)
            try:
                writer.write(encode(payload))
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError as exc:
        raise _timed_out(path, timeout) from exc
    except OSError as exc:
        raise _unreachable(path, exc) from exc
    except ValueError as exc:
        raise ControlError(f"answer from lvsd longer than {RESPONSE_LIMIT} bytes") from exc
    return _decode(line, check)


def request_sync(
    path: str, payload: dict[str, Any], timeout: float = 5.0, *, check: bool = True
) -> dict[str, Any]:
    """:func:`request` for synchronous callers (the command line), without an event loop."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(encode(payload))
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if b"\n" in chunk:
                    break
                if size > RESPONSE_LIMIT:
                    raise ControlError(f"answer from lvsd longer than {RESPONSE_LIMIT} bytes")
    except TimeoutError as exc:
        raise _timed_out(path, timeout) from exc
    except OSError as exc:
        raise _unreachable(path, exc) from exc
    line = b"".join(chunks).split(b"\n", 1)[0]
    return _decode(line, check)


def _decode(line: bytes, check: bool) -> dict[str, Any]:
    if not line.strip():
        raise ControlError("lvsd closed the connection without answering")
    try:
        answer: Any = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ControlError(f"lvsd sent an unreadable answer: {exc}") from exc
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        raise ControlError("lvsd sent an answer without an 'ok' field")
    if check and not answer["ok"]:
        raise ControlError(str(answer.get("error") or "request failed"))
    return answer


def _timed_out(path: str, timeout: float) -> ControlError:
    return ControlError(f"lvsd did not answer within {timeout:g}s on {path}")


def _unreachable(path: str, exc: OSError) -> ControlError:
    if isinstance(exc, FileNotFoundError):
        return ControlError(f"lvsd is not running (no control socket at {path})")
    if isinstance(exc, ConnectionRefusedError):
        return ControlError(f"lvsd is not running ({path} is a stale socket nobody listens on)")
    if isinstance(exc, PermissionError):
        return ControlError(
            f"permission denied on {path}: run as root, as lvsd's user, "
            "or as a member of daemon.control_group"
        )
    return ControlError(f"cannot talk to lvsd on {path}: {exc.strerror or exc}")


__all__ = [
    "REQUEST_LIMIT",
    "RESPONSE_LIMIT",
    "Handler",
    "encode",
    "remove_socket",
    "request",
    "request_sync",
    "serve",
]
