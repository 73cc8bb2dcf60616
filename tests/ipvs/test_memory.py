"""The in-memory backend: kernel-like refusals, recorded ops, injected failures."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import errno

import pytest

from lvsd.errors import IpvsError
from lvsd.ipvs.memory import MemoryBackend
from lvsd.model import (
    Destination,
    DestKey,
    DestStats,
    Op,
    OpKind,
    Protocol,
    Service,
    ServiceKey,
    Snapshot,
    Stats,
    VirtualService,
)
from lvsd.plan import plan

WEB = ServiceKey.inet(Protocol.TCP, "192.168.3.108", 80)
MARK = ServiceKey.mark(7)
RS2 = DestKey.of("10.0.0.2", 80)


def dest(address: str, port: int = 80, weight: int = 1) -> Destination:
    return Destination(address=address, port=port, weight=weight)


def vs(key: ServiceKey, *dests: Destination, scheduler: str = "wrr") -> VirtualService:
    return VirtualService(
        service=Service(key=key, scheduler=scheduler), destinations={d.key: d for d in dests}
    )


def add_service(key: ServiceKey) -> Op:
    return Op(kind=OpKind.ADD_SERVICE, service=Service(key=key))


def add_dest(key: ServiceKey, address: str, port: int = 80) -> Op:
    return Op(kind=OpKind.ADD_DEST, service=Service(key=key), dest=dest(address, port))


async def test_dump_returns_the_table_with_zero_counters() -> None:
    """A dump holds the table and a counter for every service and destination."""
    backend = MemoryBackend({WEB: vs(WEB, dest("10.0.0.2"))})

    snapshot = await backend.dump()

    expected = Snapshot(
        table={WEB: vs(WEB, dest("10.0.0.2"))},
        service_stats={WEB: Stats()},
        dest_stats={(WEB, RS2): DestStats()},
    )
    assert expected == snapshot


async def test_dump_reports_given_counters() -> None:
    """Counters set on the backend show in the dump; counters of gone entries do not."""
    gone = ServiceKey.inet(Protocol.UDP, "192.168.3.108", 53)
    backend = MemoryBackend(
        {WEB: vs(WEB, dest("10.0.0.2"))},
        service_stats={WEB: Stats(connections=4), gone: Stats(connections=1)},
        dest_stats={(WEB, RS2): DestStats(active_connections=3)},
    )

    snapshot = await backend.dump()

    assert {WEB: Stats(connections=4)} == dict(snapshot.service_stats)
    assert {(WEB, RS2): DestStats(active_connections=3)} == dict(snapshot.dest_stats)


async def test_dump_is_a_copy() -> None:
    """Later applies do not change a snapshot already taken."""
    backend = MemoryBackend({WEB: vs(WEB)})
    snapshot = await backend.dump()

    await backend.apply([add_dest(WEB, "10.0.0.2")])

    assert {} == dict(snapshot.table[WEB].destinations)


async def test_dump_error_is_raised() -> None:
    """A dump_error makes dump raise it, and the attempt is counted."""
    backend = MemoryBackend()
    backend.dump_error = IpvsError("dump", "netlink socket closed")

    with pytest.raises(IpvsError, match="netlink socket closed"):
        await backend.dump()

    assert 1 == backend.dumps


async def test_apply_a_plan_reaches_the_desired_table() -> None:
    """Applying a plan gives the desired table, records every op and reports all applied."""
    backend = MemoryBackend({WEB: vs(WEB, dest("10.0.0.2"))})
    desired = {WEB: vs(WEB, dest("10.0.0.3")), MARK: vs(MARK, dest("10.0.0.4", 0))}
    ops = plan(backend.table, desired, managed={WEB})

    result = await backend.apply(ops)

    assert desired == backend.table
    assert ops == backend.received
    assert (tuple(ops), ()) == (result.applied, result.failed)
    assert result.ok


async def test_refused_op_is_reported_and_the_rest_go_on() -> None:
    """An op the kernel would refuse fails alone; the ops after it are applied (a service
    whose add failed with "exists" is there, so its destinations go in)."""
    backend = MemoryBackend({WEB: vs(WEB)})
    ops = [add_service(WEB), add_dest(WEB, "10.0.0.2")]

    result = await backend.apply(ops)

    assert [ops[1]] == list(result.applied)
    assert [(ops[0], "exists", errno.EEXIST)] == [
        (op, err.reason, err.errno) for op, err in result.failed
    ]
    assert {WEB: vs(WEB, dest("10.0.0.2"))} == backend.table


async def test_ops_on_a_service_whose_add_failed_are_skipped() -> None:
    """When add-service fails, its destination ops fail as skipped; other services go on."""
    refused = IpvsError("add-service", "no memory", errno.ENOMEM)
    backend = MemoryBackend(
        fail=lambda op: (
            refused if op.kind is OpKind.ADD_SERVICE and op.service.key == MARK else None
        )
    )
    ops = [
        add_service(WEB),
        add_dest(WEB, "10.0.0.2"),
        add_service(MARK),
        add_dest(MARK, "10.0.0.4", 0),
        add_dest(MARK, "10.0.0.5", 0),
    ]

    result = await backend.apply(ops)

    assert ops[:2] == list(result.applied)
    reasons = [(op, err.reason) for op, err in result.failed]
    skipped = "skipped: add-service fwm 7 failed"
    assert [(ops[2], "no memory"), (ops[3], skipped), (ops[4], skipped)] == reasons
    assert refused is result.failed[0][1]
    assert {WEB: vs(WEB, dest("10.0.0.2"))} == backend.table
    assert ops == backend.received


async def test_injected_failure_leaves_the_table_unchanged() -> None:
    """An op failed by the hook does not take effect; the hook sees every op."""
    seen: list[Op] = []

    def fail(op: Op) -> IpvsError | None:
        seen.append(op)
        if op.kind is OpKind.EDIT_DEST:
            return IpvsError(str(op), "device busy", errno.EBUSY)
        return None

    backend = MemoryBackend({WEB: vs(WEB, dest("10.0.0.2"))}, fail=fail)
    ops = [
        Op(kind=OpKind.EDIT_DEST, service=Service(key=WEB), dest=dest("10.0.0.2", weight=9)),
        add_dest(WEB, "10.0.0.3"),
    ]

    result = await backend.apply(ops)

    assert ops == seen
    assert [ops[0]] == [op for op, _ in result.failed]
    assert {WEB: vs(WEB, dest("10.0.0.2"), dest("10.0.0.3"))} == backend.table


async def test_received_accumulates_across_applies_and_close_is_recorded() -> None:
    """received lists the ops of every apply in order; close marks the backend closed."""
    backend = MemoryBackend()
    first, second = [add_service(WEB)], [add_dest(WEB, "10.0.0.2")]

    await backend.apply(first)
    await backend.apply(second)
    await backend.close()

    assert first + second == backend.received
    assert backend.closed


def test_table_can_be_replaced_and_is_read_as_a_copy() -> None:
    """Assigning table replaces the contents; mutating what table returns changes nothing."""
    backend = MemoryBackend()
    backend.table = {MARK: vs(MARK)}

    backend.table.clear()

    assert {MARK: vs(MARK)} == backend.table
    assert "<MemoryBackend 1 services, 0 ops received>" == repr(backend)
