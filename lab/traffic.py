"""A bounded HTTP traffic generator for the lab (runs in the guest's client namespace).

Sends ``rate`` requests per second for ``duration`` seconds, each over a fresh TCP
connection, at most ``concurrency`` in flight (a request waits for a slot, and its
lateness shows in its start time). Each request is recorded as a ``Request``: start
time (wall clock, comparable with the scenario's marks), success, which real server
answered (the lab's httpd answers its name), latency and the error. Stops by itself::

    ip netns exec client $LAB_PYTHON -m lab.traffic http://192.168.3.108/ \\
        --rate 100 --duration 10 --out requests.json [--ready started]

``--ready`` names a file created just before the first request, so a caller can wait
for the stream to have begun (Python starts slowly in the lab's guest). SIGTERM ends
the schedule early: requests in flight finish and the records are written. An
``https://`` URL speaks TLS without verifying the certificate (the lab's throwaway
ones name the real servers, not the VIP).

``summarize`` turns the records into the figures the e2e report shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: Hard bounds, whatever the caller asks.
MAX_RATE = 1000.0
MAX_DURATION = 600.0
MAX_CONCURRENCY = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One request: ``t`` its start (wall clock, s), ``latency`` in seconds."""

    t: float
    ok: bool
    server: str
    latency: float
    error: str = ""

    def __str__(self) -> str:
        what = self.server if self.ok else f"FAILED {self.error}"
        return f"{self.t:.3f} {what} {self.latency * 1000:.1f} ms"


async def fetch(
    host: str, port: int, path: str, limit: float, tls: ssl.SSLContext | None = None
) -> Request:
    """One GET over a fresh connection (TLS with ``tls``); failures are values."""
    start = time.time()
    began = time.monotonic()
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(host, port, ssl=tls)
            try:
                writer.write(
                    f"GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
                data = await reader.read()
            finally:
                writer.close()
    except TimeoutError:
        return Request(t=start, ok=False, server="", latency=limit, error="timeout")
    except OSError as exc:  # ssl.SSLError included
        error = exc.strerror or type(exc).__name__
        return Request(t=start, ok=False, server="", latency=time.monotonic() - began, error=error)
    latency = time.monotonic() - began
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    if status != [b"200"]:
        code = status[0].decode(errors="replace") if status else "no status line"
        return Request(t=start, ok=False, server="", latency=latency, error=f"status {code}")
    return Request(t=start, ok=True, server=body.decode(errors="replace").strip(), latency=latency)


async def generate(
    url: str,
    *,
    rate: float,
    duration: float,
    concurrency: int = 50,
    limit: float = 2.0,
    stop: asyncio.Event | None = None,
) -> list[Request]:
    """``rate`` x ``duration`` requests to ``url`` on a fixed schedule, each given
    ``limit`` seconds, fewer if ``stop`` is set first; the records in start order."""
    rate = min(max(rate, 0.1), MAX_RATE)
    duration = min(max(duration, 0.0), MAX_DURATION)
    concurrency = min(max(concurrency, 1), MAX_CONCURRENCY)
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    tls = None
    if parts.scheme == "https":
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    port = parts.port or (443 if tls else 80)
    path = parts.path or "/"
    slots = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()
    begin = loop.time()
    total = int(rate * duration)

    async def one() -> Request:
        try:
            return await fetch(host, port, path, limit, tls)
        finally:
            slots.release()

    tasks: list[asyncio.Task[Request]] = []
    for i in range(total):
        delay = begin + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if stop is not None and stop.is_set():
            break
        await slots.acquire()
        tasks.append(asyncio.create_task(one()))
    return list(await asyncio.gather(*tasks))


def summarize(
    requests: Sequence[Request], *, after: float | None = None, before: float | None = None
) -> dict[str, Any]:
    """Figures for the requests started within [after, before): sent, failed, the
    failure window (first failed start to last failed end, ms), answers per server,
    and latency percentiles (ms)."""
    chosen = [
        r for r in requests if (after is None or r.t >= after) and (before is None or r.t < before)
    ]
    failed = [r for r in chosen if not r.ok]
    window = 0.0
    if failed:
        window = max(r.t + r.latency for r in failed) - min(r.t for r in failed)
    latencies = sorted(r.latency for r in chosen if r.ok)

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1)

    return {
        "sent": len(chosen),
        "failed": len(failed),
        "failure_window_ms": round(window * 1000),
        "servers": dict(sorted(Counter(r.server for r in chosen if r.ok).items())),
        "errors": dict(sorted(Counter(r.error for r in failed).items())),
        "latency_ms_p50": pct(0.5),
        "latency_ms_p99": pct(0.99),
    }


def launch(
    url: str,
    out: Path,
    *,
    rate: float,
    duration: float,
    timeout: float,
    netns: str = "client",
    nice: int = 0,
) -> subprocess.Popen[bytes]:
    """Start ``main`` in namespace ``netns`` (at ``nice``) and wait for its first
    request to be about to go; its records land in ``out``."""
    ready = out.with_suffix(".ready")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, "nice", "-n", str(nice), sys.executable,
         "-m", "lab.traffic", url, "--rate", str(rate), "--duration", str(duration),
         "--timeout", str(timeout), "--out", str(out), "--ready", str(ready)],
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not ready.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"traffic to {url} did not start")
        time.sleep(0.05)
    return proc


def load(path: Path) -> list[Request]:
    """Records written by ``main``."""
    return [Request(**item) for item in json.loads(path.read_text())]


async def _run(args: argparse.Namespace) -> list[Request]:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    return await generate(
        args.url,
        rate=args.rate,
        duration=args.duration,
        concurrency=args.concurrency,
        limit=args.timeout,
        stop=stop,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.traffic")
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=2.0, help="per request, seconds")
    parser.add_argument("--out", type=Path, required=True, help="JSON records")
    parser.add_argument(
        "--ready", type=Path, help="file created when the first request is about to go"
    )
    args = parser.parse_args(argv)
    if args.ready is not None:  # Python has started and imported: the schedule begins
        args.ready.touch()
    records = asyncio.run(_run(args))
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(r) for r in records]))
    tmp.rename(args.out)
    print(json.dumps(summarize(records)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = ["Request", "fetch", "generate", "launch", "load", "main", "summarize"]
