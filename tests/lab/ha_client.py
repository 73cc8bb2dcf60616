"""Runs INSIDE the lab guest's client namespace: holds ONE TCP connection to the VIP
and sends a request on it every ``interval`` seconds until ``duration`` has passed or
the connection breaks (it is never opened again: the point is whether it survives).

Usage: ``ip netns exec client $LAB_PYTHON ha_client.py HOST PORT DURATION OUT.json READY``.
Each request is recorded as ``[wall time, ok, server or error]``; ``READY`` is
written once the first answer came back: the connection's local port.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path


def hold(
    host: str, port: int, duration: float, ready: Path, interval: float = 0.1
) -> list[list[object]]:
    record: list[list[object]] = []
    end = time.monotonic() + duration
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.settimeout(10)  # a failover takes a few seconds: a request may wait that long
        reader = conn.makefile("rb")
        while time.monotonic() < end:
            started = time.time()
            try:
                conn.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                status = reader.readline()
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = reader.read(length).decode().strip()
                if not status.startswith(b"HTTP/1.1 200"):
                    raise OSError(f"status line {status!r}")
                record.append([started, True, body])
            except OSError as exc:
                record.append([started, False, str(exc) or type(exc).__name__])
                break
            if len(record) == 1:
                ready.write_text(str(conn.getsockname()[1]))  # the port, to find its entry
            time.sleep(interval)
    return record


if __name__ == "__main__":
    out = Path(sys.argv[4])
    try:
        result = hold(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[5]))
    except OSError as exc:
        result = [[time.time(), False, f"connect: {exc}"]]
    out.write_text(json.dumps(result))
