"""Real servers for the lab benches: N listening ports on 127.0.0.1 in one cheap process.

One epoll selector over plain sockets (no asyncio), so the server side costs little and
its CPU is easy to leave out of a daemon's. ``tcp``: accept and close. ``http``: accept,
read the request, send a fixed 200 answer, close. Driven over a pipe: ``("count",)``
answers the connections accepted so far (the checks that reached a server);
``("stop", ports)`` closes those listeners (connects are refused), ``("start", ports)``
opens them again on the same ports; ``("quit",)`` returns.
"""

from __future__ import annotations

import resource
import selectors
import socket
from multiprocessing.connection import Connection

LOOPBACK = "127.0.0.1"
HTTP_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def raise_nofile() -> None:
    """The soft limit on open files up to the hard one (N listeners and their clients)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _listen(sel: selectors.BaseSelector, port: int) -> socket.socket:
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((LOOPBACK, port))
    lsock.listen(256)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ, True)
    return lsock


def serve(count: int, kind: str, conn: Connection) -> None:
    """Serve ``count`` ports; send their numbers on ``conn``, then obey it (see module)."""
    raise_nofile()
    sel = selectors.DefaultSelector()
    listeners = {}
    for _ in range(count):
        lsock = _listen(sel, 0)
        listeners[lsock.getsockname()[1]] = lsock
    conn.send(sorted(listeners))
    sel.register(conn.fileno(), selectors.EVENT_READ, None)
    http = kind == "http"
    accepted = 0
    while True:
        for key, _ in sel.select():
            data = key.data
            if data is None:
                command, *rest = conn.recv()
                if command == "count":
                    conn.send(accepted)
                elif command == "stop":
                    for port in rest[0]:
                        sel.unregister(listeners[port])
                        listeners.pop(port).close()
                    conn.send(len(rest[0]))
                elif command == "start":
                    for port in rest[0]:
                        listeners[port] = _listen(sel, port)
                    conn.send(len(rest[0]))
                else:
                    return
                continue
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if data is True:
                while True:
                    try:
                        client, _addr = sock.accept()
                    except (BlockingIOError, ConnectionAbortedError):
                        break
                    accepted += 1
                    if http:
                        client.setblocking(False)
                        sel.register(client, selectors.EVENT_READ, False)
                    else:
                        client.close()
                continue
            try:
                if sock.recv(4096):
                    sock.send(HTTP_REPLY)
            except OSError:
                pass
            sel.unregister(sock)
            sock.close()
