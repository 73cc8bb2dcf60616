"""A tiny HTTP server for lab real servers: answers every request with its name.

Kept to the socket and threading modules so it starts fast in the (slow) guest. Each
connection has its own thread, so a client holding a connection open (up to 30 s)
does not hold up the health checks::

    ip netns exec rs1 $LAB_PYTHON -m lab.httpd rs1 80 &          # IPv4
    ip netns exec rs1 $LAB_PYTHON -m lab.httpd rs1 80 0 :: &     # IPv6 and IPv4

The third argument makes it answer each request that many seconds late (a slow but
healthy server); the fourth is the address to listen on.
"""

from __future__ import annotations

import socket
import sys
import threading
import time


def serve(name: str, port: int, host: str = "0.0.0.0", delay: float = 0.0) -> None:
    body = f"{name}\n".encode()
    head = (
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # "::" serves IPv4 too
            srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        srv.bind((host, port))
        srv.listen(64)
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=_answer, args=(conn, head + body, delay), daemon=True).start()


def _answer(conn: socket.socket, answer: bytes, delay: float) -> None:
    with conn:
        conn.settimeout(30)
        try:
            conn.recv(4096)
            time.sleep(delay)
            conn.sendall(answer)
        except OSError:
            pass


if __name__ == "__main__":
    serve(
        sys.argv[1],
        int(sys.argv[2]) if len(sys.argv) > 2 else 80,
        delay=float(sys.argv[3]) if len(sys.argv) > 3 else 0.0,
        host=sys.argv[4] if len(sys.argv) > 4 else "0.0.0.0",
    )
