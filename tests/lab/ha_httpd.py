"""Runs INSIDE the lab guest: an HTTP server for the HA pair's real servers that
answers every request with its name and keeps a connection open between requests
(HTTP/1.1 without ``Connection: close``), so a client can hold one through a failover.

Usage: ``ip netns exec rs1 $LAB_PYTHON ha_httpd.py rs1 80 &``
"""

from __future__ import annotations

import socket
import sys
import threading


def serve(name: str, port: int) -> None:
    body = f"{name}\n".encode()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", port))
        srv.listen(64)
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=_talk, args=(conn, body), daemon=True).start()


def _talk(conn: socket.socket, body: bytes) -> None:
    """Answer requests on ``conn`` until the client closes, asks to, or is idle 60 s."""
    buffer = b""
    with conn:
        conn.settimeout(60)
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.lower().split(b"\r\n")
                keep = lines[0].endswith(b"http/1.1") and b"connection: close" not in lines
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(body)}\r\n".encode()
                    + (b"\r\n" if keep else b"Connection: close\r\n\r\n")
                    + body
                )
                if not keep:
                    return
        except OSError:
            return


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
