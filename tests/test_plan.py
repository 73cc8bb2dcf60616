"""The planner: fewest ops, kernel-valid order, unmanaged services untouched; and
``apply_ops``, which plays ops as the kernel would."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import errno
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsd.errors import IpvsError
from lvsd.model import (
    Destination,
    DestKey,
    Forward,
    Op,
    OpKind,
    Protocol,
    SchedFlag,
    Scheduler,
    Service,
    ServiceKey,
    Table,
    TunnelType,
    VirtualService,
)
from lvsd.plan import apply_ops, destination_fields, plan, service_fields, service_order
from tests import strategies

WEB = ServiceKey.inet(Protocol.TCP, "192.168.3.108", 80)
DNS = ServiceKey.inet(Protocol.UDP, "192.168.3.108", 53)
MARK = ServiceKey.mark(7)
KUBE = ServiceKey.inet(Protocol.TCP, "10.96.0.1", 443)


def svc(key: ServiceKey = WEB, **fields: Any) -> Service:
    return Service(key=key, **fields)


def dest(address: str, port: int = 80, weight: int = 1, **fields: Any) -> Destination:
    return Destination(address=address, port=port, weight=weight, **fields)


def vs(service: Service, *dests: Destination) -> VirtualService:
    return VirtualService(service=service, destinations={d.key: d for d in dests})


def table(*entries: VirtualService) -> dict[ServiceKey, VirtualService]:
    return {e.service.key: e for e in entries}


def rendered(ops: list[Op]) -> list[str]:
    return [str(op) for op in ops]


# --- plan: table tests ---------------------------------------------------------------


def test_empty_to_service_adds_service_then_sorted_destinations() -> None:
    """A new service is added before its destinations, which come in key order."""
    desired = table(vs(svc(), dest("10.0.0.3"), dest("10.0.0.2", weight=3)))

    ops = plan({}, desired, managed=())

    expected = [
        "add-service tcp 192.168.3.108:80 wrr",
        "add-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=3 nat",
        "add-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=1 nat",
    ]
    assert expected == rendered(ops)


def test_same_table_needs_no_ops() -> None:
    """A table that already matches gives an empty plan."""
    current = table(vs(svc(), dest("10.0.0.2")), vs(svc(MARK), dest("10.0.0.2", 0)))

    assert [] == plan(current, dict(current), managed=current.keys())


def test_weight_change_is_one_edit_dest() -> None:
    """A changed weight is one edit of that destination and nothing else."""
    current = table(vs(svc(), dest("10.0.0.2"), dest("10.0.0.3")))
    desired = table(vs(svc(), dest("10.0.0.2"), dest("10.0.0.3", weight=0)))

    ops = plan(current, desired, managed=current.keys())

    assert ["edit-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=0 nat"] == rendered(ops)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param({}, {"forward": Forward.DR}, id="forward"),
        pytest.param(
            {"forward": Forward.TUN},
            {"forward": Forward.TUN, "tunnel": TunnelType.GUE, "tunnel_port": 6080},
            id="tunnel",
        ),
        pytest.param(
            {"forward": Forward.TUN, "tunnel": TunnelType.GUE, "tunnel_port": 6080},
            {"forward": Forward.TUN, "tunnel": TunnelType.GUE, "tunnel_port": 6081},
            id="tunnel_port",
        ),
        pytest.param({}, {"upper_threshold": 100}, id="upper_threshold"),
        pytest.param({}, {"lower_threshold": 10}, id="lower_threshold"),
    ],
)
def test_destination_field_change_is_edit_dest(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Every kernel-held destination field, when changed, gives one edit-dest."""
    current = table(vs(svc(), dest("10.0.0.2", **old)))
    desired = table(vs(svc(), dest("10.0.0.2", **new)))

    ops = plan(current, desired, managed=())

    assert [OpKind.EDIT_DEST] == [op.kind for op in ops]
    assert desired[WEB].destinations[DestKey.of("10.0.0.2", 80)] == ops[0].dest


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(
            {"forward": Forward.TUN},
            {"forward": Forward.TUN, "tunnel": TunnelType.IPIP},
            id="ipip-is-default",
        ),
        pytest.param(
            {"forward": Forward.TUN, "tunnel_port": 9},
            {"forward": Forward.TUN},
            id="ipip-has-no-port",
        ),
        pytest.param({"tunnel_port": 6080}, {}, id="nat-has-no-tunnel-port"),
        pytest.param({"tunnel": TunnelType.GUE}, {}, id="dr-has-no-tunnel"),
    ],
)
def test_fields_the_kernel_ignores_need_no_edit(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Differences the kernel does not act on (how a dump may spell a default) plan nothing."""
    current = table(vs(svc(), dest("10.0.0.2", **old)))
    desired = table(vs(svc(), dest("10.0.0.2", **new)))

    assert [] == plan(current, desired, managed=())


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param({}, {"scheduler": Scheduler.RR}, id="scheduler"),
        pytest.param(
            {"scheduler": Scheduler.SH},
            {"scheduler": Scheduler.SH, "flags": frozenset({SchedFlag.PORT})},
            id="flags",
        ),
        pytest.param({}, {"one_packet": True}, id="one_packet"),
        pytest.param({}, {"timeout": 300}, id="timeout"),
        pytest.param({"timeout": 300}, {"timeout": 300, "netmask": 24}, id="netmask"),
    ],
)
def test_service_field_change_is_edit_service(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Every kernel-held service field, when changed, gives one edit-service and
    leaves the destinations alone."""
    current = table(vs(svc(**old), dest("10.0.0.2")))
    desired = table(vs(svc(**new), dest("10.0.0.2")))

    ops = plan(current, desired, managed=())

    assert [Op(kind=OpKind.EDIT_SERVICE, service=desired[WEB].service)] == ops


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param({"timeout": 300}, {"timeout": 300, "netmask": 32}, id="host-netmask-is-0"),
        pytest.param({}, {"netmask": 24}, id="netmask-without-persistence"),
        pytest.param({"scheduler": "wrr"}, {"scheduler": Scheduler.WRR}, id="scheduler-text"),
    ],
)
def test_service_spellings_that_mean_the_same_need_no_edit(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    """A host netmask spelled 32 or 0, a netmask without persistence, a scheduler as
    text or enum: the kernel sees no difference, and neither does the plan."""
    assert [] == plan(table(vs(svc(**old))), table(vs(svc(**new))), managed=())


def test_destinations_sort_by_numeric_address() -> None:
    """10.0.0.9 comes before 10.0.0.10, IPv4 before IPv6, so logs read naturally."""
    desired = table(vs(svc(), dest("fd00::1"), dest("10.0.0.10"), dest("10.0.0.9")))

    ops = plan({}, desired, managed=())

    expected = ["10.0.0.9:80 w=1 nat", "10.0.0.10:80 w=1 nat", "[fd00::1]:80 w=1 nat"]
    assert expected == [str(op.dest) for op in ops[1:]]


def test_ipv6_host_netmask_is_128() -> None:
    """For an IPv6 service the host netmask is 128, not 32."""
    key = ServiceKey.inet(Protocol.TCP, "2001:db8::80", 443)

    assert service_fields(svc(key, timeout=60)) == service_fields(svc(key, timeout=60, netmask=128))
    assert service_fields(svc(key, timeout=60)) != service_fields(svc(key, timeout=60, netmask=32))


def test_destination_fields_tell_gue_ports_apart() -> None:
    """gue and gre carry their port; the same port under ipip is no difference."""
    gue = dest("10.0.0.2", forward=Forward.TUN, tunnel=TunnelType.GUE, tunnel_port=6080)

    assert destination_fields(gue) != destination_fields(replace(gue, tunnel_port=6081))
    assert destination_fields(replace(gue, tunnel=None)) == destination_fields(
        replace(gue, tunnel=None, tunnel_port=6081)
    )


def test_removed_service_is_one_delete_when_managed() -> None:
    """A managed service that is no longer desired is deleted with one op (its
    destinations go with it)."""
    current = table(vs(svc(), dest("10.0.0.2"), dest("10.0.0.3")), vs(svc(DNS, scheduler="rr")))
    desired = table(vs(svc(DNS, scheduler="rr")))

    ops = plan(current, desired, managed={WEB, DNS})

    assert ["del-service tcp 192.168.3.108:80 wrr"] == rendered(ops)


def test_unmanaged_services_are_never_touched() -> None:
    """kube-proxy's or hand-made services are neither deleted nor edited."""
    kube = vs(svc(KUBE, scheduler="rr"), dest("10.244.0.5", 6443))
    current = table(kube, vs(svc(), dest("10.0.0.2")))

    ops = plan(current, {}, managed={WEB})

    assert [Op(kind=OpKind.DEL_SERVICE, service=svc())] == ops
    assert {KUBE: kube} == apply_ops(current, ops)


def test_removed_destination_is_deleted_before_any_addition() -> None:
    """Destination deletions come first (all services), then service deletions, then
    additions, so an address freed by a deletion can be taken again. Address services
    sort before fwmark ones."""
    current = table(
        vs(svc(), dest("10.0.0.2"), dest("10.0.0.9")),
        vs(svc(MARK), dest("10.0.0.5", 0)),
        vs(svc(DNS), dest("10.0.0.2", 53)),
    )
    desired = table(
        vs(svc(), dest("10.0.0.2", weight=2), dest("10.0.0.3")),
        vs(svc(MARK), dest("10.0.0.4", 0)),
    )

    ops = plan(current, desired, managed=current.keys())

    expected = [
        "del-dest tcp 192.168.3.108:80 -> 10.0.0.9:80 w=1 nat",
        "del-dest fwm 7 -> 10.0.0.5:0 w=1 nat",
        "del-service udp 192.168.3.108:53 wrr",
        "edit-dest tcp 192.168.3.108:80 -> 10.0.0.2:80 w=2 nat",
        "add-dest tcp 192.168.3.108:80 -> 10.0.0.3:80 w=1 nat",
        "add-dest fwm 7 -> 10.0.0.4:0 w=1 nat",
    ]
    assert expected == rendered(ops)


def test_dest_delete_carries_the_current_service() -> None:
    """A del-dest names the destination as it is in the kernel."""
    old = dest("10.0.0.9", weight=5, forward=Forward.DR)
    current = table(vs(svc(), old))

    ops = plan(current, table(vs(svc())), managed=())

    assert [Op(kind=OpKind.DEL_DEST, service=svc(), dest=old)] == ops


def test_desired_service_is_planned_even_when_not_in_managed() -> None:
    """Being desired is enough to be managed: an existing service is edited."""
    current = table(vs(svc(), dest("10.0.0.2")))
    desired = table(vs(svc(scheduler="rr"), dest("10.0.0.2")))

    ops = plan(current, desired, managed=())

    assert [OpKind.EDIT_SERVICE] == [op.kind for op in ops]


# --- apply_ops -------------------------------------------------------------------


def test_apply_ops_plays_a_plan() -> None:
    """Ops applied to a table give the table they describe, and the input is not changed."""
    current = table(vs(svc(), dest("10.0.0.2")))
    snapshot = dict(current)
    ops = [
        Op(kind=OpKind.ADD_SERVICE, service=svc(MARK)),
        Op(kind=OpKind.ADD_DEST, service=svc(MARK), dest=dest("10.0.0.4", 0)),
        Op(kind=OpKind.EDIT_DEST, service=svc(), dest=dest("10.0.0.2", weight=0)),
        Op(kind=OpKind.EDIT_SERVICE, service=svc(scheduler="lc")),
    ]

    result = apply_ops(current, ops)

    expected = table(
        vs(svc(scheduler="lc"), dest("10.0.0.2", weight=0)),
        vs(svc(MARK), dest("10.0.0.4", 0)),
    )
    assert expected == result
    assert snapshot == current


@pytest.mark.parametrize(
    ("op", "reason", "code"),
    [
        pytest.param(
            Op(kind=OpKind.ADD_SERVICE, service=svc()),
            "exists",
            errno.EEXIST,
            id="add-existing-service",
        ),
        pytest.param(
            Op(kind=OpKind.EDIT_SERVICE, service=svc(DNS)),
            "not found",
            errno.ESRCH,
            id="edit-missing-service",
        ),
        pytest.param(
            Op(kind=OpKind.DEL_SERVICE, service=svc(DNS)),
            "not found",
            errno.ESRCH,
            id="del-missing-service",
        ),
        pytest.param(
            Op(kind=OpKind.ADD_DEST, service=svc(), dest=dest("10.0.0.2")),
            "exists",
            errno.EEXIST,
            id="add-existing-dest",
        ),
        pytest.param(
            Op(kind=OpKind.EDIT_DEST, service=svc(), dest=dest("10.0.0.3")),
            "not found",
            errno.ENOENT,
            id="edit-missing-dest",
        ),
        pytest.param(
            Op(kind=OpKind.DEL_DEST, service=svc(), dest=dest("10.0.0.3")),
            "not found",
            errno.ENOENT,
            id="del-missing-dest",
        ),
        pytest.param(
            Op(kind=OpKind.ADD_DEST, service=svc(DNS), dest=dest("10.0.0.2")),
            "service not found",
            errno.ESRCH,
            id="dest-on-missing-service",
        ),
        pytest.param(
            Op(kind=OpKind.ADD_DEST, service=svc()),
            "no destination given",
            errno.EINVAL,
            id="dest-op-without-dest",
        ),
    ],
)
def test_apply_ops_refuses_like_the_kernel(op: Op, reason: str, code: int) -> None:
    """What the kernel refuses raises IpvsError naming the op and the reason."""
    current = table(vs(svc(), dest("10.0.0.2")))

    with pytest.raises(IpvsError) as caught:
        apply_ops(current, [op])

    assert (str(op), reason, code) == (caught.value.op, caught.value.reason, caught.value.errno)


def test_apply_ops_delete_service_takes_its_destinations() -> None:
    """A deleted and re-added service starts with no destinations."""
    current = table(vs(svc(), dest("10.0.0.2")))
    ops = [Op(kind=OpKind.DEL_SERVICE, service=svc()), Op(kind=OpKind.ADD_SERVICE, service=svc())]

    assert table(vs(svc())) == apply_ops(current, ops)


# --- properties ------------------------------------------------------------------

PROPERTY = settings(max_examples=200, deadline=None)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Table, Table, frozenset[ServiceKey]]:
    """(current, desired, managed): desired a variation of current; managed is the
    desired services plus some of the current ones."""
    current = draw(strategies.tables())
    desired = draw(strategies.variations(current))
    extra = draw(st.sets(st.sampled_from(sorted(current, key=service_order)))) if current else set()
    return current, desired, frozenset(desired) | frozenset(extra)


@PROPERTY
@given(scenarios())
def test_plan_reaches_desired_and_leaves_unmanaged_alone(
    scenario: tuple[Table, Table, frozenset[ServiceKey]],
) -> None:
    """Playing the plan on current gives desired for managed services and leaves every
    other service exactly as it was; the order is always one the kernel accepts."""
    current, desired, managed = scenario

    result = apply_ops(current, plan(current, desired, managed))

    unmanaged = {k: v for k, v in current.items() if k not in managed}
    assert {**unmanaged, **desired} == result


@PROPERTY
@given(strategies.tables())
def test_plan_of_a_table_against_itself_is_empty(desired: Table) -> None:
    """Nothing to do when the kernel already holds the desired table."""
    assert [] == plan(desired, desired, managed=desired.keys())


@PROPERTY
@given(scenarios())
def test_plan_is_minimal_and_never_repeats_work(
    scenario: tuple[Table, Table, frozenset[ServiceKey]],
) -> None:
    """Re-planning after applying a plan gives nothing; no op names the same thing twice;
    an unmanaged, undesired service appears in no op."""
    current, desired, managed = scenario

    ops = plan(current, desired, managed)

    after = apply_ops(current, ops)
    assert [] == plan(after, desired, managed)
    targets = [(op.service.key, op.dest.key if op.dest else None) for op in ops]
    assert len(set(targets)) == len(targets)
    untouchable = {k for k in current if k not in managed and k not in desired}
    assert set() == {op.service.key for op in ops} & untouchable


@PROPERTY
@given(strategies.tables(), st.data())
def test_one_weight_change_is_exactly_one_op(desired: Table, data: st.DataObject) -> None:
    """Changing one destination's weight plans exactly that one edit-dest."""
    candidates = [(k, d) for k, v in desired.items() for d in v.destinations]
    if not candidates:
        return
    key, dkey = data.draw(st.sampled_from(candidates))
    old = desired[key].destinations[dkey]
    weight = data.draw(strategies.weights.filter(lambda w: w != old.weight))
    changed = dict(desired)
    changed[key] = VirtualService(
        service=desired[key].service,
        destinations={**desired[key].destinations, dkey: replace(old, weight=weight)},
    )

    ops = plan(desired, changed, managed=desired.keys())

    new = replace(old, weight=weight)
    assert [Op(kind=OpKind.EDIT_DEST, service=desired[key].service, dest=new)] == ops


@PROPERTY
@given(scenarios())
def test_plan_order_is_deterministic(
    scenario: tuple[Table, Table, frozenset[ServiceKey]],
) -> None:
    """The same tables in another insertion order give the very same ops."""
    current, desired, managed = scenario
    reordered_current = dict(reversed(list(current.items())))
    reordered_desired = {
        k: VirtualService(v.service, dict(reversed(list(v.destinations.items()))))
        for k, v in reversed(list(desired.items()))
    }

    assert plan(current, desired, managed) == plan(reordered_current, reordered_desired, managed)


@PROPERTY
@given(scenarios())
def test_every_deletion_comes_before_every_addition_or_edit(
    scenario: tuple[Table, Table, frozenset[ServiceKey]],
) -> None:
    """All deletions lead the plan (destinations, then services), so whatever they free
    is free before anything is added; each service op precedes its destination ops."""
    current, desired, managed = scenario
    deletions = {OpKind.DEL_DEST: 0, OpKind.DEL_SERVICE: 1}

    ops = plan(current, desired, managed)

    phases = [deletions.get(op.kind, 2) for op in ops]
    assert sorted(phases) == phases
    first_seen: dict[ServiceKey, OpKind] = {}
    for op in ops:
        if deletions.get(op.kind, 2) == 2:
            first_seen.setdefault(op.service.key, op.kind)
    added = {k for k in desired if k not in current}
    assert dict.fromkeys(added, OpKind.ADD_SERVICE) == {
        k: kind for k, kind in first_seen.items() if k in added
    }
