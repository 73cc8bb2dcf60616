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
import errno
import grp
import json
import os
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
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
#: Clients served at once; one more is answered "busy" and closed.
MAX_CLIENTS = 64
#: Largest request line the server reads, in bytes (memory: MAX_CLIENTS times this).
REQUEST_LIMIT = 64 << 10
#: Seconds a client has to send its request, and to take its answer.
READ_TIMEOUT = 10.0
SEND_TIMEOUT = 10.0
#: Pauses of the accept loop when the process is out of descriptors or memory: the
#: first, doubling up to the last, in seconds.
ACCEPT_BACKOFF = (0.1, 1.0)
#: What accept may fail with that waiting can cure (the process's or host's resources).
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Seconds between two log lines of one streak of failed accepts or refused clients.
LOG_EVERY = 60.0
#: Largest answer line a client reads (a status dump of a big table), in bytes.
RESPONSE_LIMIT = 64 << 20
#: Seconds a client keeps trying to connect while the daemon's backlog is full.
CONNECT_RETRY = 3.0

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
    read_timeout: float = READ_TIMEOUT,
    send_timeout: float = SEND_TIMEOUT,
) -> Server:
    """Listen on ``path`` and answer each request with ``handler``.

    Creates the parent directory (mode 0755) if needed, replaces a stale socket, and
    refuses to start when another process answers on ``path`` or ``path`` is not a
    socket. The socket's mode is 0600, or 0660 with group ``group``. A client whose
    request is not in within ``read_timeout`` seconds is answered with an error; one
    that does not take its answer within ``send_timeout`` is dropped. The caller
    closes the server and then calls :func:`remove_socket`.
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
        server = Server(sock, handler, read_timeout, send_timeout)
    except BaseException:
        sock.close()
        raise
    log.info("control.listening", path=path, mode=f"{mode:04o}", group=group)
    return server


class Server:
    """The listening socket. Its reader callback accepts every waiting client and
    starts the client's task there and then, which answers in its first step when the
    request is already in: few turns of a loop busy with probes stand between a client
    and its answer (docs/performance.md). Past MAX_CLIENTS a client is told "busy";
    when accept runs out of descriptors the reader pauses (ACCEPT_BACKOFF) instead of
    spinning. :meth:`close` stops listening and cancels unanswered clients."""

    def __init__(
        self, sock: socket.socket, handler: Handler, read_timeout: float, send_timeout: float
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._handler = handler
        self._read_timeout = read_timeout
        self._send_timeout = send_timeout
        self._loop = asyncio.get_running_loop()
        self._clients: set[asyncio.Task[None]] = set()
        self._delay = ACCEPT_BACKOFF[0]
        self._retry: asyncio.TimerHandle | None = None
        self._failed = Streak("control.accept_failed", "control.accept_resumed")
        self._busy = Streak("control.busy", "control.not_busy")
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(BACKLOG):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in RESOURCE_ERRNOS:
                    self._back_off(exc)
                    return
                log.debug("control.accept_error", error=str(exc))  # the client left first
                continue
            self._admit(conn)
        self._delay = ACCEPT_BACKOFF[0]
        self._failed.end(self._loop.time())

    def _admit(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        now = self._loop.time()
        if len(self._clients) >= MAX_CLIENTS:
            self._busy.note(now, limit=MAX_CLIENTS)
            with conn, contextlib.suppress(OSError):  # an empty buffer takes one line
                conn.send(encode(_failure(f"lvsd is busy ({MAX_CLIENTS} clients); try again")))
            return
        self._busy.end(now)
        task = self._loop.create_task(
            _serve_client(conn, self._handler, self._read_timeout, self._send_timeout),
            name="control-client",
        )
        self._clients.add(task)
        task.add_done_callback(self._clients.discard)

    def _back_off(self, exc: OSError) -> None:
        """Stop reading the socket for a while: the waiting clients stay queued."""
        self._failed.note(self._loop.time(), error=str(exc), retry_in=self._delay)
        self._loop.remove_reader(self._sock.fileno())
        self._retry = self._loop.call_later(self._delay, self._resume)
        self._delay = min(self._delay * 2, ACCEPT_BACKOFF[1])

    def _resume(self) -> None:
        self._retry = None
        if self._sock.fileno() >= 0:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        for task in self._clients:
            task.cancel()

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._clients, return_exceptions=True)


class Streak:
    """A run of the same trouble, logged as a warning when it starts, then at most
    every LOG_EVERY seconds (with the count so far), and once when it ends."""

    def __init__(self, event: str, ended: str) -> None:
        self._event = event
        self._ended = ended
        self.count = 0
        self._logged = 0.0

    def note(self, now: float, **fields: object) -> None:
        self.count += 1
        if self.count == 1 or now - self._logged >= LOG_EVERY:
            log.warning(self._event, count=self.count, **fields)
            self._logged = now

    def end(self, now: float) -> None:
        if self.count:
            log.info(self._ended, count=self.count)
            self.count = 0


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


async def _serve_client(
    conn: socket.socket, handler: Handler, read_timeout: float, send_timeout: float
) -> None:
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
                if not line:
                    return  # the client left without asking
                response = await _answer(line, handler, _peer(conn))
            async with asyncio.timeout(send_timeout):
                await loop.sock_sendall(conn, _encode_answer(response))
        except TimeoutError:
            log.debug("control.send_timeout", timeout=send_timeout)  # the client does not read
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
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, int digit limit
        return _failure(f"bad request: not JSON ({exc})")
    except RecursionError:
        return _failure("bad request: JSON nested too deeply")
    if not isinstance(request, dict):
        return _failure("bad request: expected a JSON object")
    command = request.get("command")
    log.info("control.request", command=printable(command), **peer)
    try:
        result = await handler(request)
    except LvsdError as exc:
        return _failure(str(exc))
    except Exception as exc:
        log.exception("control.failed", command=printable(command), error=str(exc))
        return _failure(f"internal error: {type(exc).__name__}: {exc}")
    return {"ok": True, "error": "", **result}


def printable(value: object, limit: int = 64) -> str:
    """A request's value for a log line or an error: a string cut to ``limit``
    characters, anything else by its JSON type (a client's 5,000-digit number or
    deeply nested list is never rendered)."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "..."
    kinds = {dict: "object", list: "array", bool: "boolean", str: "string"}
    return "a JSON " + kinds.get(type(value), "null" if value is None else "number")


def _encode_answer(response: dict[str, Any]) -> bytes:
    """The answer's line; a handler's answer JSON cannot hold is an error answer."""
    try:
        return encode(response)
    except (ValueError, TypeError, RecursionError) as exc:
        log.error("control.unencodable", error=str(exc))
        return encode(_failure(f"internal error: answer not encodable: {exc}"))


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
    loop = asyncio.get_running_loop()
    answer = _AnswerBuffer()
    try:
        async with asyncio.timeout(timeout):
            with await _connect(path, min(timeout / 2, CONNECT_RETRY)) as sock:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    await loop.sock_sendall(sock, encode(payload))  # it may have answered first
                while not answer.add(await loop.sock_recv(sock, 65536)):
                    pass
    except TimeoutError as exc:
        raise _timed_out(path, timeout) from exc
    except OSError as exc:
        raise _unreachable(path, exc) from exc
    return _decode(answer.line(), check)


def request_sync(
    path: str, payload: dict[str, Any], timeout: float = 5.0, *, check: bool = True
) -> dict[str, Any]:
    """:func:`request` for synchronous callers (the command line), without an event loop."""
    deadline = time.monotonic() + timeout
    answer = _AnswerBuffer()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            _connect_sync(sock, path, min(timeout / 2, CONNECT_RETRY))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(encode(payload))  # a busy daemon answers before it reads
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                if answer.add(sock.recv(65536)):
                    break
    except TimeoutError as exc:
        raise _timed_out(path, timeout) from exc
    except OSError as exc:
        raise _unreachable(path, exc) from exc
    return _decode(answer.line(), check)


class _AnswerBuffer:
    """An answer's bytes as they arrive, up to its first newline or the end."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, chunk: bytes) -> bool:
        """Take the next chunk (``b""`` at the end); True once the line is complete."""
        if not chunk:
            return True
        self._chunks.append(chunk)
        self._size += len(chunk)
        if b"\n" in chunk:
            return True
        if self._size > RESPONSE_LIMIT:
            raise ControlError(f"answer from lvsd longer than {RESPONSE_LIMIT} bytes")
        return False

    def line(self) -> bytes:
        return b"".join(self._chunks).split(b"\n", 1)[0]


def _pauses(window: float) -> Iterator[float]:
    """Pauses between connect attempts while the daemon's backlog is full (it answers
    EAGAIN): 10 ms doubling to 0.2 s, for ``window`` seconds in all."""
    deadline = time.monotonic() + window
    pause = 0.01
    while (left := deadline - time.monotonic()) > 0:
        yield min(pause, left)
        pause = min(pause * 2, 0.2)


async def _connect(path: str, window: float) -> socket.socket:
    """A unix socket connected to ``path``, trying again for ``window`` seconds while
    the backlog is full (asyncio's own connect takes EAGAIN for a connection)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    pauses = _pauses(window)
    try:
        while True:
            try:
                sock.connect(path)  # a unix socket connects at once or not at all
                return sock
            except BlockingIOError:
                pause = next(pauses, None)
                if pause is None:
                    raise
                await asyncio.sleep(pause)
    except BaseException:
        sock.close()
        raise


def _connect_sync(sock: socket.socket, path: str, window: float) -> None:
    """:func:`_connect` for the synchronous client, on its socket."""
    pauses = _pauses(window)
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            pause = next(pauses, None)
            if pause is None:
                raise
            time.sleep(pause)


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
    if isinstance(exc, BlockingIOError):
        return ControlError(f"lvsd is too busy to take a connection on {path}; try again")
    if isinstance(exc, PermissionError):
        return ControlError(
            f"permission denied on {path}: run as root, as lvsd's user, "
            "or as a member of daemon.control_group"
        )
    return ControlError(f"cannot talk to lvsd on {path}: {exc.strerror or exc}")


__all__ = [
    "MAX_CLIENTS",
    "REQUEST_LIMIT",
    "RESPONSE_LIMIT",
    "Handler",
    "encode",
    "printable",
    "remove_socket",
    "request",
    "request_sync",
    "serve",
]
