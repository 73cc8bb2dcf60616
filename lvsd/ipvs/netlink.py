"""The kernel IPVS table over generic netlink (pyroute2's ``AsyncIPVS``).

The only module of lvsd with a netlink socket: ``NetlinkBackend`` does ``dump()``
and ``apply(ops)`` on one socket (pyroute2 sends the requests and frames the replies,
as ``lvsd.ipvs.decode.RawReply`` objects), translating ``NetlinkError`` (and a request
that cannot be encoded, or a reply that cannot be decoded) into ``IpvsError`` with the
op and the reason in words. The requests' fields come from ``lvsd.ipvs.encode``, the
replies are read by ``lvsd.ipvs.decode``.
"""

from __future__ import annotations

import asyncio
import errno as errno_mod
import os
import socket
import struct
import time
from collections.abc import Awaitable, Collection, Sequence
from typing import Any, TypeVar

import structlog
from pyroute2.ipvs import AsyncIPVS, IPVSDest, IPVSService
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, genlmsg
from pyroute2.netlink.exceptions import NetlinkError

from lvsd.errors import IpvsError
from lvsd.ipvs.base import Timeouts
from lvsd.ipvs.decode import (
    RawReply,
    dest_from_reply,
    reply_attr,
    service_from_nla,
    timeouts_from_reply,
)
from lvsd.ipvs.encode import request_for, service_key_fields, timeout_attrs
from lvsd.ipvs.uapi import IPVS_CMD_ATTR_SERVICE, IPVS_CMD_GET_CONFIG, IPVS_CMD_SET_CONFIG
from lvsd.model import (
    ApplyResult,
    Destination,
    DestKey,
    DestStats,
    Op,
    OpKind,
    ServiceKey,
    Snapshot,
    Stats,
    VirtualService,
)

# --- errors ------------------------------------------------------------------------------

NOT_LOADED = "ip_vs not loaded (modprobe ip_vs)"


def reason_for(op: Op | None, code: int) -> str:
    """The kernel's answer ``code`` (an errno) to ``op`` in words."""
    if code == errno_mod.EEXIST:
        return "already exists"
    if code == errno_mod.EPERM:
        return "needs CAP_NET_ADMIN"
    if code in (errno_mod.ENOENT, errno_mod.ESRCH):
        if (
            op is not None
            and code == errno_mod.ENOENT
            and op.kind in (OpKind.ADD_SERVICE, OpKind.EDIT_SERVICE)
        ):
            return f"scheduler module ip_vs_{op.service.scheduler} not available"
        if op is not None and op.dest is not None and code == errno_mod.ESRCH:
            return "service not found"
        return "not found"
    return f"{errno_mod.errorcode.get(code, str(code))}: {os.strerror(code)}"


def error_for(op: Op, exc: NetlinkError) -> IpvsError:
    return IpvsError(str(op), reason_for(op, exc.code), exc.code)


# --- the backend -------------------------------------------------------------------------

T = TypeVar("T")

log = structlog.get_logger("lvsd.ipvs")

#: A dump or apply that takes this many seconds or more is logged as ``kernel.slow``.
SLOW_CALL = 1.0

#: Seconds a dump, or a window of requests, may wait for the kernel's answer. The
#: kernel answers at once; a reply lost (a full receive buffer drops it) would
#: otherwise hold the engine's lock, and every health change behind it, forever.
REPLY_TIMEOUT = 30.0

#: Destinations of one service decoded (and put in order) between two yields to the
#: event loop, so that a big service does not hold the loop for its whole dump.
DECODE_STEP = 128

#: Bytes of replies read at once, beyond the datagram the loop's transport hands over:
#: every ack of a window, or a few parts (~32 KiB each) of a dump, a turn.
DRAIN_BYTES = 256 * 1024
#: Largest datagram read (as asyncio's datagram transport reads).
RECV_SIZE = 256 * 1024


class DrainingIPVS(AsyncIPVS):  # type: ignore[misc]  # pyroute2 is untyped
    """pyroute2's ``AsyncIPVS``, taking the replies already queued in one turn of the
    event loop.

    The loop's datagram transport reads one datagram a turn, and the kernel answers
    each request with a datagram of its own, so an apply of n ops took n + 4 turns
    and a dump a turn per part, and on a busy loop (hundreds of probes, a scrape) a
    turn is long. The kernel has answered a request by the time ``send`` returns, so
    the replies are there to read.
    """

    def enqueue(self, data: bytes, addr: Any) -> None:
        super().enqueue(data, addr)
        left = DRAIN_BYTES
        try:
            sock = self.socket  # raises the error the transport reported, if any
            while left > 0:
                more = sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
                super().enqueue(more, None)
                left -= len(more)
        except BlockingIOError:
            pass
        except OSError as exc:  # ENOBUFS: reported as the transport would
            self.local.protocol.error_received(exc)


def _note_slow(call: str, started: float, **fields: int | float) -> None:
    seconds = time.monotonic() - started
    if seconds >= SLOW_CALL:
        log.warning("kernel.slow", call=call, seconds=round(seconds, 3), **fields)


class NetlinkBackend:
    """``lvsd.ipvs.base.Backend`` over the kernel's IPVS generic netlink family.

    One socket, opened on first use, and again after a call the kernel left
    unanswered (``REPLY_TIMEOUT``). Use one instance per event loop.
    """

    def __init__(self, *, window: int = 64) -> None:
        self._ipvs: AsyncIPVS | None = None
        # One dump at a time: the kernel answers EBUSY to a dump asked on a netlink
        # socket whose previous dump has not ended (a scrape's beside a reconcile's).
        self._dumping = asyncio.Lock()
        #: How many requests may be in flight at once (1: strictly one at a time).
        self.window = max(1, window)

    def __repr__(self) -> str:
        return f"<NetlinkBackend {'open' if self._ipvs is not None else 'closed'}>"

    async def _socket(self, what: str) -> AsyncIPVS:
        if self._ipvs is not None:
            return self._ipvs
        ipvs = DrainingIPVS()
        try:
            await ipvs.setup_endpoint()
        except NetlinkError as exc:
            ipvs.close()
            if exc.code == errno_mod.ENOENT:
                raise IpvsError(what, NOT_LOADED, exc.code) from exc
            raise IpvsError(what, reason_for(None, exc.code), exc.code) from exc
        except OSError as exc:
            ipvs.close()
            raise IpvsError(what, f"netlink socket: {exc.strerror or exc}", exc.errno) from exc
        # dump replies stay bytes until lvsd decodes them (``RawReply``)
        ipvs.marshal.msg_map[ipvs.prid] = RawReply
        self._ipvs = ipvs
        return ipvs

    async def dump(self) -> Snapshot:
        """Every service, then every service's destinations, with STATS64 counters."""
        return await self._dump(None)

    async def dump_services(self, keys: Collection[ServiceKey]) -> Snapshot:
        """The destinations of the services in ``keys`` only (one ``IPVS_CMD_GET_DEST``
        dump each), for a reload that changes a few services of a big table.

        Every service of the kernel is still read (one small message each): all of
        them are in ``service_stats``, so a caller can check which services exist;
        ``table`` and ``dest_stats`` hold only the services in ``keys`` that exist.
        """
        return await self._dump(frozenset(keys))

    async def _dump(self, keys: frozenset[ServiceKey] | None) -> Snapshot:
        started = time.monotonic()
        async with self._dumping:
            waited = time.monotonic() - started  # behind another dump
            snapshot = await self._answered("dump", self._dump_now(keys))
        _note_slow("dump", started, waited=round(waited, 3), destinations=len(snapshot.dest_stats))
        return snapshot

    async def _dump_now(self, keys: frozenset[ServiceKey] | None) -> Snapshot:
        ipvs = await self._socket("dump")
        table: dict[ServiceKey, VirtualService] = {}
        service_stats: dict[ServiceKey, Stats] = {}
        dest_stats: dict[tuple[ServiceKey, DestKey], DestStats] = {}
        try:
            services = [
                service_from_nla(reply_attr(msg, IPVS_CMD_ATTR_SERVICE))
                for msg in await ipvs.service("dump")
            ]
            for service, stats in services:
                service_stats[service.key] = stats
                if keys is not None and service.key not in keys:
                    continue
                request = IPVSService(**service_key_fields(service.key))
                dests: dict[DestKey, Destination] = {}
                family = service.key.family
                for n, msg in enumerate(await ipvs.dest("dump", service=request), 1):
                    dest, counters = dest_from_reply(msg, family)
                    dkey = dest.key
                    dests[dkey] = dest
                    dest_stats[(service.key, dkey)] = counters
                    if n % DECODE_STEP == 0:
                        await asyncio.sleep(0)  # a big service is decoded in steps
                # by sort key: tuples compared in C, not DestKey.__lt__ 10,000 times
                order = sorted(dests, key=DestKey.sort_key)
                ordered: dict[DestKey, Destination] = {}
                for start in range(0, len(order), DECODE_STEP):
                    if start:
                        await asyncio.sleep(0)  # and put in order in steps
                    ordered.update({k: dests[k] for k in order[start : start + DECODE_STEP]})
                table[service.key] = VirtualService(service=service, destinations=ordered)
        except NetlinkError as exc:
            raise IpvsError("dump", reason_for(None, exc.code), exc.code) from exc
        return Snapshot(table=table, service_stats=service_stats, dest_stats=dest_stats)

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        """One request per op, sent in order. A failed op is recorded and the rest go
        on, except the ops on a service whose ``add-service`` failed in this call
        (skipped, never sent). Up to ``window`` requests are in flight at once; an
        ``add-service`` waits for what is in flight and is answered before anything
        after it is sent."""
        if not ops:
            return ApplyResult()
        try:
            ipvs = await self._socket(str(ops[0]))
        except IpvsError as exc:
            return ApplyResult(
                failed=tuple((op, IpvsError(str(op), exc.reason, exc.errno)) for op in ops)
            )
        started = time.monotonic()
        outcome: list[IpvsError | None] = []
        lost: set[ServiceKey] = set()
        window: list[Op] = []
        silent: IpvsError | None = None  # the kernel's reply timed out: send no more

        async def flush() -> None:
            # Requests in a window are all sent before any ack is awaited (the kernel
            # handles them in the order sent), which saves a round trip per op.
            nonlocal silent
            if not window:
                return
            if silent is None:
                sent = asyncio.gather(*(_attempt(ipvs, op) for op in window))
                try:
                    outcome.extend(await self._answered(str(window[0]), sent))
                except IpvsError as exc:
                    silent = exc
            if silent is not None:
                outcome.extend(IpvsError(str(op), silent.reason) for op in window)
            window.clear()

        for op in ops:
            key = op.service.key
            if key in lost:
                await flush()
                outcome.append(IpvsError(str(op), f"skipped: add-service {key} failed"))
                continue
            if op.kind is OpKind.ADD_SERVICE:
                # its dest ops depend on its outcome: send it alone, after the window
                await flush()
                window.append(op)
                await flush()
                if outcome[-1] is not None:
                    lost.add(key)
                continue
            window.append(op)
            if len(window) >= self.window:
                await flush()
        await flush()
        _note_slow("apply", started, ops=len(ops))
        applied = tuple(op for op, err in zip(ops, outcome, strict=True) if err is None)
        failed = tuple((op, err) for op, err in zip(ops, outcome, strict=True) if err is not None)
        return ApplyResult(applied=applied, failed=failed)

    async def _answered(self, what: str, call: Awaitable[T]) -> T:
        """``call``'s result, or ``IpvsError(what)`` when the kernel has not answered
        within ``REPLY_TIMEOUT``. The socket is then closed (a late reply would go to a
        request forgotten) and the next call opens another."""
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                return await call
        except TimeoutError:
            await self.close()
            reason = f"no answer from the kernel within {REPLY_TIMEOUT:g}s"
            raise IpvsError(what, reason) from None

    async def get_timeouts(self) -> Timeouts:
        """The kernel's connection timeouts (``ipvsadm -L --timeout``)."""
        replies = await self._config("get-timeouts", IPVS_CMD_GET_CONFIG, [])
        ipvs = await self._socket("get-timeouts")
        found = [m for m in replies if m["header"]["type"] == ipvs.prid]
        if not found:
            raise IpvsError("get-timeouts", "no reply from the kernel")
        return timeouts_from_reply(found[0])

    async def set_timeouts(self, timeouts: Timeouts) -> None:
        """Set the kernel's connection timeouts (``ipvsadm --set``)."""
        attrs = [
            (_ConfigMsg.nla_map[kind][0], seconds) for kind, seconds in timeout_attrs(timeouts)
        ]
        await self._config(f"set-timeouts {timeouts}", IPVS_CMD_SET_CONFIG, attrs)

    async def _config(self, what: str, cmd: int, attrs: list[tuple[str, int]]) -> list[Any]:
        ipvs = await self._socket(what)
        msg = _ConfigMsg()
        msg["cmd"] = cmd
        msg["version"] = 1
        msg["attrs"] = attrs
        try:
            request = ipvs._do_request(msg, msg_flags=NLM_F_REQUEST | NLM_F_ACK)
            replies: list[Any] = await self._answered(what, request)
        except NetlinkError as exc:
            raise IpvsError(what, reason_for(None, exc.code), exc.code) from exc
        return replies

    async def close(self) -> None:
        if self._ipvs is not None:
            self._ipvs.close()
            self._ipvs = None


class _ConfigMsg(genlmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """An IPVS_CMD_SET_CONFIG/GET_CONFIG request: the timeouts as u32 attributes
    (pyroute2's own ``ipvsmsg`` declares them as opaque ``hex``)."""

    nla_map = (
        ("IPVS_CMD_ATTR_UNSPEC", "none"),
        ("IPVS_CMD_ATTR_SERVICE", "none"),
        ("IPVS_CMD_ATTR_DEST", "none"),
        ("IPVS_CMD_ATTR_DAEMON", "none"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_UDP", "uint32"),
    )


async def _attempt(ipvs: AsyncIPVS, op: Op) -> IpvsError | None:
    """Send ``op``; its error, or None when the kernel accepted it.

    A value the request cannot hold (pyroute2 raises struct.error, ValueError or
    TypeError while building or encoding it) fails this op only, like a kernel error.
    """
    try:
        await _request(ipvs, op)
    except NetlinkError as exc:
        return error_for(op, exc)
    except (struct.error, ValueError, TypeError) as exc:
        return IpvsError(str(op), f"cannot encode the request: {exc}")
    return None


async def _request(ipvs: AsyncIPVS, op: Op) -> None:
    command, svc, dest = request_for(op)
    if dest is None:
        await ipvs.service(command, service=IPVSService(**svc))
    else:
        await ipvs.dest(command, service=IPVSService(**svc), dest=IPVSDest(**dest))


__all__ = ["NOT_LOADED", "NetlinkBackend", "reason_for"]
