"""Scripted loopback servers for the handshake kinds: each says its lines, records what
the probe sent, and hangs up when the probe does."""

from __future__ import annotations

import asyncio

from lvsd.checks.registry import make_probe
from lvsd.config.model import CHECK_KINDS, CheckOptions
from tests.checks.conftest import Loopback, StreamHandler, make_spec


def scripted(
    says: bytes, heard: list[bytes] | None = None, *, first: int = 0, hang_up: bool = False
) -> StreamHandler:
    """A server that reads ``first`` bytes (the client's hello), says ``says`` and then
    keeps what it hears in ``heard`` until the client closes (or, with ``hang_up``,
    closes at once)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if first:
            got = await reader.readexactly(first)
            if heard is not None:
                heard.append(got)
        writer.write(says)
        await writer.drain()
        while not hang_up and (data := await reader.read(1024)):
            if heard is not None:
                heard.append(data)

    return handler


async def run(
    net: Loopback, kind: str, handler: StreamHandler, options: CheckOptions | None = None
) -> tuple[str, str, bool]:
    """(detail, reason, ok) of one ``kind`` probe (default options) against a server
    running ``handler``."""
    port = await net.tcp(handler)
    options = CHECK_KINDS[kind]() if options is None else options  # type: ignore[call-arg]
    probe = make_probe(make_spec(kind, options), net.target(port))
    result = await probe.probe()
    await probe.close()
    return result.detail, result.reason, result.ok


async def heard_by_now(heard: list[bytes], want: int = 1) -> bytes:
    """What the server heard, once it heard ``want`` chunks (or after a while)."""
    for _ in range(200):
        if len(heard) >= want:
            break
        await asyncio.sleep(0.01)
    return b"".join(heard)
