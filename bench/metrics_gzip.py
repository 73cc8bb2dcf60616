"""Benchmark: gzip of a /metrics answer as ``lvsd.observe.api`` sends it, part by part.

Builds the scrape bench's synthetic table (``--services`` x ``--dests``), renders the
text exposition into its parts, and compresses them the way the handler does (one
``compressobj`` at ``GZIP_LEVEL``, a part at a time). Prints the sizes, the total time
and the longest stretch between two of the handler's yields (every ``SEND_STEP``
bytes of exposition): the time a probe due meanwhile could wait. Best of ``--rounds``.

    .venv/bin/python bench/metrics_gzip.py [--services 100] [--dests 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

from prometheus_client import CollectorRegistry

from lvsd.observe.api import GZIP_LEVEL, SEND_STEP
from lvsd.observe.metrics import Metrics
from lvsd.observe.status import build
from lvsd.observe.steps import finish

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scrape_bench import synthetic  # the same world as scrape_bench


def compress(parts: list[bytes], level: int) -> tuple[int, float, float]:
    """Compressed size, total seconds, longest seconds between two yields."""
    gzip = zlib.compressobj(level, zlib.DEFLATED, 31)
    size = sent = 0
    longest = 0.0
    start = stretch = time.perf_counter()
    for part in parts:
        size += len(gzip.compress(part))
        sent += len(part)
        if sent >= SEND_STEP:
            now = time.perf_counter()
            longest, stretch, sent = max(longest, now - stretch), now, 0
    size += len(gzip.flush())
    end = time.perf_counter()
    return size, end - start, max(longest, end - stretch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for option, default in (("--services", 100), ("--dests", 100), ("--rounds", 5)):
        parser.add_argument(option, type=int, default=default)
    args = parser.parse_args()
    config, health, snapshot = synthetic(args.services, args.dests)
    metrics = Metrics(CollectorRegistry())
    metrics.update(snapshot, build(config, health, snapshot.table, frozenset(), 2.0))
    parts = finish(metrics.exposition_parts())
    plain = sum(len(part) for part in parts)
    print(f"{args.services * args.dests} destinations, {plain} bytes of text, {len(parts)} parts")
    for level in sorted({GZIP_LEVEL, 6}):
        size, total, longest = min(compress(parts, level) for _ in range(args.rounds))
        print(
            f"  level {level}: {size} bytes ({plain / size:.0f}x), {total * 1000:.1f} ms in all, "
            f"longest between yields {longest * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
