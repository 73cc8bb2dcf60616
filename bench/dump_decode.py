"""Benchmark: decoding a dump of 10,000 destinations, without the kernel.

Builds the replies a kernel sends for ``--services`` x ``--dests`` destinations (each
with STATS and STATS64, the counters above 2**32) with pyroute2's encoder, one
receive buffer per service, and times per round, in this process's CPU time:

* frame: pyroute2's marshal splitting the buffers into ``RawReply`` objects (what the
  socket does before lvsd sees a reply);
* pyroute2-frame: the same with pyroute2's own message class for the family, as the
  socket framed replies until lvsd registered ``RawReply``;
* old: frame + pyroute2's message class and its lazy attribute decoding + ``plain()``
  and the ``*_from_attrs`` converters (lvsd's conversion until it decoded replies
  itself, kept as the oracle in tests/ipvs/replies.py);
* new: frame + ``reply_attr`` + ``dest_from_nla`` (``lvsd.ipvs.decode``).

Prints the median and minimum of ``--rounds`` rounds, in ms per 10,000 destinations
and in µs per destination, then each decoder's share (its median minus frame's), and
checks that both give the same destinations and counters. It
measures the decoding only: the kernel dump itself (netlink round trips, the kernel's
work) is measured in the lab by bench/ipvs_bench.py.

    .venv/bin/python bench/dump_decode.py [--services 100] [--dests 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# the reply builders and the old conversion (the oracle) live in the tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyroute2.netlink.generic import ipvs as genl
from pyroute2.netlink.marshal import Marshal

from lvsd.ipvs.decode import dest_from_nla, reply_attr
from lvsd.ipvs.uapi import IPVS_CMD_ATTR_DEST
from lvsd.model import Destination, DestStats, Family, Stats
from tests.ipvs.replies import (
    DEST,
    GENL_ID,
    SEQ,
    dest_attrs,
    encode_reply,
    frame,
    legacy_dest,
)

Decoded = list[tuple[Destination, DestStats]]


def replies(services: int, dests: int) -> list[bytes]:
    """One receive buffer per service: its destinations' replies, back to back."""
    buffers = []
    for s in range(services):
        chunk = []
        for d in range(dests):
            n = s * dests + d
            counters = Stats(connections=2**32 + n, packets_in=n * 10, packets_out=n * 9,
                             bytes_in=2**40 + n * 1500, bytes_out=n * 900)  # fmt: skip
            attrs = dest_attrs(
                f"10.{s // 250}.{s % 250}.{d % 250 + 1}",
                80 + d // 250,
                fwd=3 if d % 2 else 0,
                weight=1 + d % 5,
                conns=(n % 7, n % 11, 0),
                counters=counters,
            )
            chunk.append(encode_reply(DEST, attrs))
        buffers.append(b"".join(chunk))
    return buffers


def frame_only(buffers: list[bytes]) -> Decoded:
    for buffer in buffers:
        frame(buffer)
    return []


def pyroute2_frame(buffers: list[bytes]) -> Decoded:
    marshal = Marshal()
    marshal.msg_map[GENL_ID] = genl.ipvsmsg
    for buffer in buffers:
        list(marshal.parse(buffer, SEQ))
    return []


def old(buffers: list[bytes]) -> Decoded:
    return [legacy_dest(msg) for buffer in buffers for msg in frame(buffer)]


def new(buffers: list[bytes]) -> Decoded:
    return [
        dest_from_nla(reply_attr(msg, IPVS_CMD_ATTR_DEST), Family.INET)
        for buffer in buffers
        for msg in frame(buffer)
    ]


def timed(fn: Callable[[list[bytes]], Decoded], buffers: list[bytes]) -> tuple[float, Any]:
    # pyroute2's messages hold reference cycles: a round starts without the last one's
    gc.collect()
    start = time.process_time()
    result = fn(buffers)
    return time.process_time() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--dests", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    buffers = replies(args.services, args.dests)
    count = args.services * args.dests
    print(f"{count} destination replies, {sum(map(len, buffers)) / count:.0f} bytes each")
    results: dict[str, Decoded] = {}
    medians: dict[str, float] = {}
    steps = (("frame", frame_only), ("pyroute2-frame", pyroute2_frame), ("old", old), ("new", new))
    for name, fn in steps:
        times = []
        for _ in range(args.rounds):
            results.pop(name, None)
            seconds, results[name] = timed(fn, buffers)
            times.append(seconds)
        median, best = statistics.median(times), min(times)
        medians[name] = median
        print(
            f"{name:>14}: median {median * 1e3 * 10_000 / count:8.1f} ms per 10,000"
            f" ({median * 1e6 / count:6.1f} µs per destination), min"
            f" {best * 1e3 * 10_000 / count:8.1f} ms"
        )
    for name in ("old", "new"):
        decode = medians[name] - medians["frame"]
        print(
            f"{name:>14}: decoding alone (median - frame) {decode * 1e3 * 10_000 / count:8.1f} ms"
            f" per 10,000 ({decode * 1e6 / count:6.1f} µs per destination)"
        )
    if results["old"] != results["new"]:
        raise SystemExit("the two decoders disagree")
    print("old and new decode the same destinations and counters")


if __name__ == "__main__":
    main()
