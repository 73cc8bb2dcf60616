"""Scenarios that fail real servers under traffic: kill, hang, 500, link, all down (sorry)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from lab import faults, traffic
from lab.e2e.guest import Guest
from lab.e2e.settings import BOUND, CLIENT_TIMEOUT, FAULT_HOLD, MODES, RS, SORRY
from lab.e2e.tools import down_events, downs, ipvsadm, journal, metrics, polled, sh, wait_for


def fault_cycle(
    g: Guest,
    name: str,
    server: str,
    inject: Callable[[], object],
    restore: Callable[[], object],
    *,
    extra: Callable[[], dict[str, Any]] | None = None,
    seen: str = "",
) -> None:
    """Inject a fault into ``server`` under traffic, restore it, record it. A run in
    which lvsd also took one of the other real servers out (its probes timed out in
    a guest starved by the host, so the sorry server came in) judges nothing about
    the fault: it is recorded as ``NAME.disturbed`` and the scenario runs once more.
    So is a run in which the guest stood still and ``server`` was taken out by a
    check that never saw the fault (no down detail with ``seen`` in it: its probes
    timed out before they could)."""
    for attempt in range(2):
        fields = _fault_run(g, server, inject, restore, extra)
        unseen = (
            bool(seen)
            and fields["stalled_s"] > 0
            and not any(seen in detail for detail in fields["fault_down_details"])
        )
        if not (fields["others_down"] or unseen) or attempt:
            g.record(name, attempts=attempt + 1, **fields)
            break
        g.record(f"{name}.disturbed", **fields)
    g.settle()


def _fault_run(
    g: Guest,
    server: str,
    inject: Callable[[], object],
    restore: Callable[[], object],
    extra: Callable[[], dict[str, Any]] | None,
) -> dict[str, Any]:
    addr = RS[server]
    others = [name for name in RS if name != server]
    g.settle()
    since = time.time()
    before = ipvsadm()
    proc = g.traffic(FAULT_HOLD + 9)
    time.sleep(1.5)
    fault_at = time.time()
    inject()
    out_after = g.until_weight(addr, 0)
    out_at = time.time()
    during = ipvsadm()
    more = extra() if extra else {}
    time.sleep(max(0.0, fault_at + FAULT_HOLD - time.time()))
    back_at = time.time()
    restore()
    ramp = g.ramp(addr)
    requests = g.finish(proc)
    return dict(
        server=f"{server} {addr}:80",
        others=others,
        others_down=downs(fault_at, back_at, [RS[o] for o in others]),
        fault_down_details=[d for a, d in down_events(fault_at, back_at) if a == addr],
        bound_s=BOUND,
        out_after_s=out_after,
        # the guest stood still (the host's stall) this long until the server was out
        stalled_s=round(g.stalls.between(fault_at, out_at), 3),
        back_ramp=ramp,
        summary=traffic.summarize(requests),
        before_fault=traffic.summarize(requests, before=fault_at),
        fault=traffic.summarize(requests, after=fault_at, before=back_at),
        after_settled=traffic.summarize(
            requests,
            after=max(fault_at + BOUND, out_at) + CLIENT_TIMEOUT + 0.5,
            before=back_at,
        ),
        after_restore=traffic.summarize(requests, after=back_at),
        ipvsadm_before=before,
        ipvsadm_during=during,
        ipvsadm_after=ipvsadm(),
        journal=journal(since),
        metrics=metrics("lvsd_real_server_health", "lvsd_real_server_effective_weight"),
        **more,
    )


def kill(g: Guest) -> None:
    rs = g.servers["rs1"]
    fault_cycle(
        g,
        "kill",
        "rs1",
        lambda: faults.kill(rs),
        lambda: faults.start(rs, log=g.results / "rs1.log"),
    )


def hang(g: Guest) -> None:
    fault_cycle(
        g,
        "hang",
        "rs2",
        lambda: faults.set_mode(MODES, "rs2", "hang"),
        lambda: faults.set_mode(MODES, "rs2", "ok"),
    )


def status500(g: Guest) -> None:
    def tcp_connects() -> dict[str, Any]:
        connect = f"socket.create_connection(({RS['rs3']!r}, 80), 2).close()"
        probe = sh(
            sys.executable, "-c", f"import socket; {connect}; print('ok')", check=False
        ).strip()
        return {"tcp_connect_while_out": probe}

    fault_cycle(
        g,
        "status500",
        "rs3",
        lambda: faults.set_mode(MODES, "rs3", "500"),
        lambda: faults.set_mode(MODES, "rs3", "ok"),
        extra=tcp_connects,
        seen="status 500",
    )


def link(g: Guest) -> None:
    # Not rs1: requests cut by the link keep ESTABLISHED entries in the kernel
    # (ActiveConn) for minutes, which the drain of rs1 would wait for.
    fault_cycle(
        g, "link", "rs2", lambda: faults.link("rs2", False), lambda: faults.link("rs2", True)
    )


def sorry(g: Guest) -> None:
    """The real servers fail one after the other (500): the sorry server stays out
    while one is up, goes in once the last is out; rs1 recovers: it leaves."""
    since = time.time()
    proc = g.traffic(FAULT_HOLD + 20)
    time.sleep(1)
    *first, last = RS
    out_after: dict[str, float | None] = {}
    sorry_while_some_up: dict[str, int | None] = {}
    for name in first:
        faults.set_mode(MODES, name, "500")
        out_after[name] = g.until_weight(RS[name], 0)
        sorry_while_some_up[f"{name} out"] = polled().get(SORRY[1])
    t_last = time.time()
    faults.set_mode(MODES, last, "500")
    sorry_after = wait_for(lambda: polled().get(SORRY[1], 0) > 0, 20, step=0.05)
    sorry_in_at = time.time()
    during = ipvsadm()
    time.sleep(max(0.0, t_last + FAULT_HOLD - time.time()))
    t1 = time.time()
    faults.set_mode(MODES, "rs1", "ok")
    back_after = wait_for(lambda: polled().get(RS["rs1"], 0) > 0, 20, step=0.05)
    sorry_gone = wait_for(lambda: SORRY[1] not in polled(), 20, step=0.05)
    gone_at = time.time()
    requests = g.finish(proc)
    g.all_ok()
    g.record(
        "sorry",
        out_after_s_each=out_after,
        sorry_weight_while_some_up=sorry_while_some_up,
        sorry_in_after_s=sorry_after,
        rs1_back_after_s=back_after,
        sorry_out_after_s=sorry_gone,
        summary=traffic.summarize(requests),
        before_last_down=traffic.summarize(requests, before=t_last),
        # the windows start once lvsd had acted (and, at the latest, its bound had
        # passed): on a stalled host it acts later, and the bounds are tested apart
        all_down=traffic.summarize(
            requests, after=max(t_last + BOUND, sorry_in_at) + CLIENT_TIMEOUT + 1, before=t1
        ),
        switch_back=traffic.summarize(requests, after=t1, before=t1 + BOUND + 2),
        one_back=traffic.summarize(requests, after=max(t1 + BOUND + 2, gone_at + 0.5)),
        ipvsadm_during=during,
        ipvsadm_after=ipvsadm(),
        journal=journal(since),
        metrics=metrics("lvsd_service_sorry_active"),
    )
    g.settle()
