"""The status page of a running daemon, opened in a real headless browser (Debian's
chromium, installed by scripts/setup): its text as the browser built the DOM, and a
screenshot whose size and colours say the rows are coloured by state.

``LVSD_SCREENSHOT=docs/images/status-page.png`` keeps the screenshot (the docs' image
is made so).
"""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import zlib
from collections import Counter
from pathlib import Path

import pytest

from lvsd import control
from lvsd.observe.page import COLOURS
from lvsd.observe.status import HealthCode
from tests.daemon.helpers import config_text, eventually, running

CHROMIUM = shutil.which("chromium")
WIDTH, HEIGHT = 1000, 560

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium not installed (apt chromium, scripts/setup)",
)


async def browser(folder: Path, url: str, *args: str) -> bytes:
    """Run headless chromium on ``url`` with ``args``; its standard output."""
    assert CHROMIUM is not None, "chromium not installed (apt chromium, scripts/setup)"
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # as root in a container: no user namespace for the sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={folder / 'chromium'}",
        f"--window-size={WIDTH},{HEIGHT}",
        *args,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(120):  # a cold start on a loaded host is slow
        out, _ = await process.communicate()
    assert 0 == process.returncode
    return out


def pixels(png: bytes) -> tuple[int, int, Counter[tuple[int, int, int]]]:
    """Width, height and a count of the colours of an 8-bit RGB(A) PNG (what chromium
    writes): enough of a decoder to look at a screenshot without a library."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pos, data, header = 8, b"", b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            data += body
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (8, 0) == (depth, interlace)
    bpp = {2: 3, 6: 4}[colour_type]
    raw = zlib.decompress(data)
    stride = width * bpp
    previous = bytearray(stride)
    counts: Counter[tuple[int, int, int]] = Counter()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            corner = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        counts.update((line[i], line[i + 1], line[i + 2]) for i in range(0, stride, bpp))
        previous = line
    return width, height, counts


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


async def test_browser_shows_the_daemons_page(short_dir: Path) -> None:
    """A daemon with one real server up, one down (a transition) and one drained: the
    browser's DOM lists all three with their states and the transition, and its
    screenshot has rows in the up, down and drained colours."""
    with socket.socket() as probe:  # a free port (the config refuses port 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    servers = (("10.0.0.2", 3), ("10.0.0.3", 1), ("10.0.0.4", 1))
    text = config_text(short_dir, servers, metrics_listen=f"127.0.0.1:{port}")
    async with running(short_dir, text) as r:
        r.probes.down.add("10.0.0.3")
        engine = r.daemon.engine
        assert engine is not None
        await eventually(lambda: any(not t.new for t in engine.recent))
        await control.request(
            r.socket, {"command": "drain", "service": "web", "realserver": "10.0.0.4:80"}
        )
        url = f"http://127.0.0.1:{r.daemon.api_port}/"
        dom = (await browser(short_dir, url, "--dump-dom")).decode()
        shot = short_dir / "status-page.png"
        await browser(short_dir, url, f"--screenshot={shot}")
    for expected in (
        "<title>lvsd status</title>",
        "web: tcp 192.168.3.108:80 wrr",
        '<tr class="up"><td>10.0.0.2:80</td>',
        '<tr class="down"><td>10.0.0.3:80</td>',
        '<tr class="drained"><td>10.0.0.4:80</td>',
        "<td>realserver.down</td><td>refused</td><td>tcp: connect: refused</td>",
    ):
        assert expected in dom
    width, height, counts = look(shot)
    assert (WIDTH, HEIGHT) == (width, height)
    # each state's rows fill many pixels with exactly its colour (a row is ~20 px high)
    for code in (HealthCode.UP, HealthCode.DOWN, HealthCode.DRAINED):
        assert counts[rgb(COLOURS[code])] > 2000, code


def look(shot: Path) -> tuple[int, int, Counter[tuple[int, int, int]]]:
    """:func:`pixels` of the screenshot, kept where ``LVSD_SCREENSHOT`` says."""
    png = shot.read_bytes()
    keep = os.environ.get("LVSD_SCREENSHOT")
    if keep:
        Path(keep).write_bytes(png)
    return pixels(png)
