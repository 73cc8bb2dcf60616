"""Fault injection for the lab's e2e scenarios (runs in the guest, as root).

A real server here is ``FaultServer``: an HTTP server in a real server's namespace
that answers its name, and whose behaviour a *mode file* switches at run time
(read on every connection, so the switch is immediate)::

    ok     200 with the server's name (the default, also when the file is missing)
    500    ``HTTP/1.0 500`` (TCP still connects: only an http check sees it)
    hang   accept the connection and never answer
    close  accept and close at once without a byte

With ``name = "@addr"`` one process serves many addresses (the 200-server scenario)
and answers with the local address; the mode file is then per address.

The injectors: ``set_mode``, ``kill``/``start`` (a real server's process), ``link``
(the director's veth end down/up), ``run`` (a shell command, checked).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MODES = ("ok", "500", "hang", "close")

#: The real servers and the client stand for other machines, so in the guest (one CPU,
#: shared with lvsd and the scenario's driver) they run at this higher priority: lvsd
#: starting (seconds of imports) or probing must not slow them down, as it could not
#: on separate hosts, and what the client sees is the director's doing.
PEER_NICE = -10


def mode_file(mode_dir: Path, name: str) -> Path:
    return mode_dir / f"{name}.mode"


def current_mode(mode_dir: Path, name: str) -> str:
    try:
        mode = mode_file(mode_dir, name).read_text().strip()
    except OSError:
        return "ok"
    return mode if mode in MODES else "ok"


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str, mode_dir: Path
) -> None:
    if name == "@addr":
        name = str(writer.get_extra_info("sockname")[0])
    mode = current_mode(mode_dir, name)
    try:
        if mode == "close":
            return
        if mode == "hang":
            await reader.read()  # until the client gives up
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await reader.readuntil(b"\r\n\r\n")
        status = "200 OK" if mode == "ok" else "500 Internal Server Error"
        body = f"{name}\n".encode()
        writer.write(
            f"HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def serve(name: str, port: int, mode_dir: Path, host: str = "0.0.0.0") -> None:
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, name, mode_dir), host, port, backlog=256, reuse_address=True
    )
    async with server:
        await server.serve_forever()


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultServer:
    """A fault server of real server ``name`` in namespace ``netns``."""

    netns: str
    name: str
    port: int = 80
    mode_dir: Path = Path("/run/lab-modes")

    def argv(self) -> list[str]:
        return [
            "ip",
            "netns",
            "exec",
            self.netns,
            sys.executable,
            "-m",
            "lab.faults",
            "serve",
            self.name,
            str(self.port),
            "--mode-dir",
            str(self.mode_dir),
        ]

    def pidfile(self) -> Path:
        return self.mode_dir / f"{self.netns}-{self.port}.pid"


def start(server: FaultServer, *, log: Path | None = None, wait: float = 30.0) -> int:
    """Start ``server`` in the background; returns its pid once it listens."""
    server.mode_dir.mkdir(parents=True, exist_ok=True)
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(server.argv(), stdout=out, stderr=subprocess.STDOUT)
    os.setpriority(os.PRIO_PROCESS, proc.pid, PEER_NICE)  # ip netns exec execs: same pid
    server.pidfile().write_text(str(proc.pid))
    deadline = time.monotonic() + wait
    while not listening(server.netns, server.port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"fault server {server.name} did not start")
        time.sleep(0.2)  # each check is two execs, costly in the guest
    return proc.pid


def listening(netns: str, port: int) -> bool:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "ss", "-Hltn", f"sport = :{port}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return bool(out.strip())


def kill(server: FaultServer, sig: int = signal.SIGKILL) -> None:
    """Kill the server's process (``ip netns exec`` execs, so the pid is the server)."""
    pid = int(server.pidfile().read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def set_mode(mode_dir: Path, name: str, mode: str) -> None:
    """Switch real server ``name`` (or address) to ``mode``, atomically."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    mode_dir.mkdir(parents=True, exist_ok=True)
    tmp = mode_dir / f".{name}.tmp"
    tmp.write_text(mode)
    tmp.rename(mode_file(mode_dir, name))


def link(netns: str, up: bool) -> None:
    """Set the director's end of real server ``netns``'s veth down or up."""
    run(["ip", "link", "set", f"dir-{netns}", "up" if up else "down"])


def run(argv: Sequence[str]) -> str:
    """Run a command; its output, or RuntimeError with its stderr."""
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.faults")
    sub = parser.add_subparsers(dest="command", required=True)
    srv = sub.add_parser("serve", help="an HTTP real server whose mode file sets its faults")
    srv.add_argument("name", help='its name in answers, or "@addr" for the local address')
    srv.add_argument("port", type=int)
    srv.add_argument("--mode-dir", type=Path, default=Path("/run/lab-modes"))
    mode = sub.add_parser("mode", help="switch a server's mode")
    mode.add_argument("name")
    mode.add_argument("mode", choices=MODES)
    mode.add_argument("--mode-dir", type=Path, default=Path("/run/lab-modes"))
    args = parser.parse_args(argv)
    if args.command == "mode":
        set_mode(args.mode_dir, args.name, args.mode)
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.name, args.port, args.mode_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = [
    "MODES",
    "PEER_NICE",
    "FaultServer",
    "current_mode",
    "kill",
    "link",
    "listening",
    "main",
    "run",
    "serve",
    "set_mode",
    "start",
]
