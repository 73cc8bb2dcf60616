"""The status report: config + health + kernel table -> per service and real server
state, as values, JSON and ``ipvsadm -Ln``-like text.

The small world built here (:func:`world`) is also used by ``test_metrics`` and
``test_api``.
"""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import json
import pickle
from dataclasses import dataclass

from lvsd.checks.base import ProbeResult
from lvsd.config.model import (
    CheckSpec,
    Config,
    PanicGuard,
    Quorum,
    RealServer,
    SorryServer,
    TcpOptions,
    VirtualServiceConfig,
)
from lvsd.desired import Overrides, desired_table
from lvsd.health.state import HealthState
from lvsd.model import (
    DestKey,
    DestStats,
    Family,
    Forward,
    Protocol,
    RealServerId,
    ServiceKey,
    Snapshot,
    Stats,
    Table,
)
from lvsd.observe.status import (
    HealthCode,
    LoadReport,
    StatusReport,
    SyncLine,
    build,
    build_steps,
)
from lvsd.observe.steps import finish

TCP = CheckSpec(kind="tcp", options=TcpOptions(), interval=2.0, timeout=1.0, rise=1, fall=1)

WEB = ServiceKey.inet(Protocol.TCP, "10.0.0.1", 80)
MARK = ServiceKey.mark(1, Family.INET6)
V6 = ServiceKey.inet(Protocol.TCP, "2001:db8:0:0::1", 443)
A = DestKey.of("10.0.1.1", 80)
B = DestKey.of("10.0.1.2", 80)
C = DestKey.of("10.0.1.3", 80)
SORRY = DestKey.of("10.0.9.9", 80)
M = DestKey.of("2001:db8:0:0:0:0:0:5", 0)
V = DestKey.of("2001:0db8::0010", 443)


def rs(key: DestKey, weight: int = 1, checks: tuple[CheckSpec, ...] = (TCP,)) -> RealServer:
    return RealServer(
        address=ipaddress.ip_address(key.address), port=key.port, weight=weight, checks=checks
    )


def make_config() -> Config:
    """web: three real servers (3, 1, 1), a sorry server, quorum 2; mark: an IPv6
    fwmark service with one real server; v6: one real server with no check."""
    return Config(
        path="/etc/lvsd/lvsd.toml",
        services=(
            VirtualServiceConfig(
                name="web",
                key=WEB,
                real_servers=(rs(A, 3), rs(B), rs(C)),
                sorry_server=SorryServer(address=ipaddress.ip_address(SORRY.address), port=80),
                quorum=Quorum(minimum=2),
            ),
            VirtualServiceConfig(
                name="mark",
                key=MARK,
                real_servers=(rs(M, 2),),
                panic=PanicGuard(threshold=0.5, min_servers=1),
            ),
            VirtualServiceConfig(name="v6", key=V6, real_servers=(rs(V, 5, ()),)),
        ),
    )


def feed(health: HealthState, key: DestKey, result: ProbeResult, now: float) -> None:
    """One probe result for every check aimed at ``key``."""
    ids = [cid for cid in health.check_ids() if cid.address == key.address and cid.port == key.port]
    assert ids, key
    health.round([(cid, result) for cid in ids], now)


OK = ProbeResult(ok=True, detail="connected", duration=0.002)
REFUSED = ProbeResult(
    ok=False, detail="connect 10.0.1.2:80: refused", duration=0.001, reason="refused"
)


@dataclass
class World:
    config: Config
    health: HealthState
    table: Table
    snapshot: Snapshot
    drained: frozenset[RealServerId]
    now: float

    def report(self, *, with_table: bool = True) -> StatusReport:
        table = self.table if with_table else None
        return build(self.config, self.health, table, self.drained, self.now)


def world() -> World:
    """A started daemon's view at t=100: A up since 10, B refused at 20 (down), C
    drained (up), M up, V has no check (so up)."""
    config = make_config()
    health = HealthState.from_config(config, 0.0)
    feed(health, A, OK, 10.0)
    feed(health, B, OK, 10.0)
    feed(health, C, OK, 10.0)
    feed(health, M, OK, 10.0)
    feed(health, B, REFUSED, 20.0)
    feed(health, A, OK, 98.0)
    feed(health, C, OK, 99.0)
    feed(health, M, OK, 99.5)
    drained: frozenset[RealServerId] = frozenset({("web", C)})
    now = 100.0
    overrides = Overrides(drained=drained, quorum_lost=health.quorum_lost())
    table = desired_table(config, health.server_health(now), overrides)
    dest_stats = {
        (WEB, A): DestStats(
            active_connections=4,
            inactive_connections=7,
            persistent_connections=1,
            stats=Stats(
                connections=120,
                packets_in=1000,
                packets_out=900,
                bytes_in=64000,
                bytes_out=1_500_000,
            ),
        ),
        (MARK, M): DestStats(active_connections=2, stats=Stats(connections=5)),
    }
    service_stats = {
        WEB: Stats(
            connections=130, packets_in=1100, packets_out=990, bytes_in=70000, bytes_out=1_600_000
        )
    }
    snapshot = Snapshot(table=table, service_stats=service_stats, dest_stats=dest_stats)
    return World(config, health, table, snapshot, drained, now)


def servers(report: StatusReport, name: str) -> dict[DestKey, tuple[HealthCode, int | None, int]]:
    svc = next(s for s in report.services if s.name == name)
    return {r.key: (r.state, r.kernel_weight, r.configured_weight) for r in svc.real_servers}


def test_states_and_weights_per_real_server() -> None:
    """Each real server has its state code, its kernel weight and its configured one."""
    w = world()
    report = w.report()
    assert {
        A: (HealthCode.UP, 3, 3),
        B: (HealthCode.DOWN, 0, 1),
        C: (HealthCode.DRAINED, 0, 1),
    } == servers(report, "web")
    assert {M: (HealthCode.UP, 2, 2)} == servers(report, "mark")
    assert {V: (HealthCode.UP, 5, 5)} == servers(report, "v6")  # no check: up


def test_reason_detail_since_and_checks() -> None:
    """A down server carries the failing check's reason word and detail, and the
    seconds since it changed; its checks list their latest result and its age."""
    report = world().report()
    web = report.services[0]
    b = web.real_servers[1]
    assert ("refused", "tcp: connect 10.0.1.2:80: refused", 80.0) == (b.reason, b.detail, b.since)
    assert 1 == len(b.checks)
    check = b.checks[0]
    assert ("tcp", False, False, "refused", 80.0) == (
        check.kind,
        check.up,
        check.last_ok,
        check.reason,
        check.age,
    )
    a = web.real_servers[0]
    assert ("ok", "tcp: connected", 90.0, 2.0) == (a.reason, a.detail, a.since, a.probe_age)
    c = web.real_servers[2]
    assert ("drained", True) == (c.reason, c.drained)


def test_service_flags_quorum_sorry_panic() -> None:
    """web keeps its quorum (live weight 3 >= 2), so its sorry server is idle; mark
    has no quorum; nobody panics."""
    report = world().report()
    web, mark, v6 = report.services
    assert (True, False, False) == (web.quorum, web.sorry_active, web.panic)
    assert (None, False) == (mark.quorum, mark.sorry_active)
    assert ("wrr", True) == (web.scheduler, web.in_kernel)
    assert v6.sorry is None


def test_sorry_active_when_every_server_is_down() -> None:
    """When A also fails, web has no live server: the sorry server is in the kernel
    table and reported active, and the quorum is lost."""
    w = world()
    feed(w.health, A, REFUSED, 100.0)
    overrides = Overrides(drained=w.drained, quorum_lost=w.health.quorum_lost())
    table = desired_table(w.config, w.health.server_health(100.0), overrides)
    web = build(w.config, w.health, table, w.drained, 100.0).services[0]
    assert (True, False, 1) == (
        web.sorry_active,
        web.quorum,
        web.sorry.kernel_weight if web.sorry else None,
    )


def test_without_a_table_sorry_follows_the_desired_rules() -> None:
    """Built with no table (dump failed), kernel weights are None and the sorry
    server is active exactly when the desired table would hold it."""
    w = world()
    report = w.report(with_table=False)
    assert False is report.table_read
    assert {
        A: (HealthCode.UP, None, 3),
        B: (HealthCode.DOWN, None, 1),
        C: (HealthCode.DRAINED, None, 1),
    } == servers(report, "web")
    assert False is report.services[0].sorry_active
    assert False is report.services[0].in_kernel


def test_panic_guard_shows_held() -> None:
    """mark's only server fails with the panic guard on: it is held (state 2), the
    service panics, and the reason says panic."""
    w = world()
    feed(w.health, M, REFUSED, 100.0)
    report = w.report()
    mark = report.services[1]
    m = mark.real_servers[0]
    assert (True, HealthCode.HELD, True, "panic") == (mark.panic, m.state, m.up, m.reason)


def test_to_json_is_json_safe() -> None:
    """The JSON form survives json.dumps and keeps the addresses compressed."""
    report = world().report()
    data = json.loads(json.dumps(report.to_json()))
    mark = data["services"][1]
    assert {
        "key": "fwm 1 inet6",
        "fwmark": 1,
        "address": None,
        "protocol": None,
        "quorum": None,
        "panic": False,
        "sorry_active": False,
    } == {
        k: mark[k]
        for k in ("key", "fwmark", "address", "protocol", "quorum", "panic", "sorry_active")
    }
    m = mark["real_servers"][0]
    assert ("2001:db8::5", 0, "up", 2, 2, "2 = configured 2") == (
        m["address"],
        m["port"],
        m["state"],
        m["kernel_weight"],
        m["weight"]["effective"],
        m["weight"]["explained"],
    )
    assert "2001:db8::10" == data["services"][2]["real_servers"][0]["address"]
    assert "down" == data["services"][0]["real_servers"][1]["state"]
    assert "2001:db8::1" == data["services"][2]["address"]


def test_render_like_ipvsadm() -> None:
    """The text is ipvsadm -Ln's layout with health columns."""
    text = world().report().render()
    expected = (
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port Forward Weight Conf State        Since Why\n"
        "TCP  10.0.0.1:80 wrr  [web]\n"
        "  -> 10.0.1.1:80        Masq    3      3    up           90s   ok: tcp: connected\n"
        "  -> 10.0.1.2:80        Masq    0      1    down         80s   "
        "refused: tcp: connect 10.0.1.2:80: refused\n"
        "  -> 10.0.1.3:80        Masq    0      1    drained      90s   drained: tcp: connected\n"
        "  -> 10.0.9.9:80        Masq    -      1    sorry (idle)\n"
        "FWM  1 IPv6 wrr  [mark]\n"
        "  -> [2001:db8::5]:0    Masq    2      2    up           90s   ok: tcp: connected\n"
        "TCP  [2001:db8::1]:443 wrr  [v6]\n"
        "  -> [2001:db8::10]:443 Masq    5      5    up           100s  ok: no checks\n"
    )
    assert expected == text


def test_render_in_colour() -> None:
    """In colour each state is wrapped in its ANSI colour and the columns stay where
    they are: without the escapes it is the plain text."""
    import re

    report = world().report()
    text = report.render(colour=True)
    assert "  -> 10.0.1.2:80        Masq    0      1    \033[1;31mdown\033[0m         80s" in text
    assert "\033[32mup\033[0m" in text
    assert "\033[34mdrained\033[0m" in text
    assert report.render() == re.sub("\033\\[[0-9;]*m", "", text)


def all_probed(report: StatusReport) -> bool:
    """Every check of every real server of ``report`` has reported at least once."""
    return all(
        c.last_ok is not None for s in report.services for r in s.real_servers for c in r.checks
    )


def check_count(report: StatusReport) -> int:
    """The checks of every real server of ``report``."""
    return sum(len(r.checks) for s in report.services for r in s.real_servers)


def test_all_probed() -> None:
    """all_probed is False while a check has never reported, True once all did."""
    config = make_config()
    health = HealthState.from_config(config, 0.0)
    assert False is all_probed(build(config, health, None, frozenset(), 0.0))
    for key in (A, B, C, M):
        feed(health, key, OK, 1.0)
    assert True is all_probed(build(config, health, None, frozenset(), 1.0))


def test_forward_and_check_count() -> None:
    """The forward method comes from the config; check_count counts every check."""
    report = world().report()
    assert Forward.NAT == report.services[0].real_servers[0].forward
    assert 4 == check_count(report)


def test_build_steps_gives_the_report_of_build() -> None:
    """build_steps in steps of one real server yields between them and returns what
    build returns at once; finish() runs it through."""
    w = world()
    steps = build_steps(w.config, w.health, w.table, w.drained, w.now, chunk=1)
    yielded = 0
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            stepped = stop.value
            break
        yielded += 1
    servers = sum(len(s.real_servers) for s in w.config.services)
    assert (servers - 1, w.report()) == (yielded, stepped)
    assert w.report() == finish(build_steps(w.config, w.health, w.table, w.drained, w.now))


def test_build_steps_reads_each_server_as_its_step_runs() -> None:
    """Results arriving between two steps show in the real servers of later steps
    (B comes up), not in those already reported (A still up)."""
    w = world()
    steps = build_steps(w.config, w.health, w.table, w.drained, w.now, chunk=1)
    next(steps)  # A reported
    feed(w.health, A, REFUSED, w.now)
    feed(w.health, B, OK, w.now)

    def states(report: StatusReport) -> list[str]:
        return [str(r.state) for r in report.services[0].real_servers[:2]]

    assert ["up", "up"] == states(finish(steps))
    assert ["down", "up"] == states(w.report())


def test_health_rows_are_status_as_tuples() -> None:
    """HealthState.rows gives status()'s fields in order; service_rows slices one
    service's real servers (none for an unknown service)."""
    w = world()
    expected = [
        (s.service, s.realserver, s.up, s.since, s.held, s.factors, s.checks)
        for s in w.health.status(w.now)
    ]
    assert expected == w.health.rows(w.now)
    web = [row for row in expected if row[0] == "web"]
    assert web[1:3] == w.health.service_rows("web", w.now, 1, 3)
    assert [] == w.health.service_rows("nope", w.now)


def test_health_check_keys_copy_and_compare_like_tuples() -> None:
    """The check keys the health state keeps (hashed once) survive copy and pickle,
    and a plain tuple finds the same status."""
    w = world()
    key = w.health._services["web"].servers[A].checks[0]  # the kept key itself
    plain = ("web", A, TCP)
    assert w.health.check_status(plain) == w.health.check_status(key)
    assert (plain, hash(plain)) == (key, hash(key))
    assert (plain, plain) == (copy.copy(key), pickle.loads(pickle.dumps(key)))


def test_sync_daemons_follow_the_table() -> None:
    """Each sync daemon of [sync] is a line after the table, and an entry in the JSON."""
    lines = (
        SyncLine("master", True, "master eth1 syncid=7 port=8848: running"),
        SyncLine("backup", False, "backup eth1 syncid=7: down (no such interface)"),
    )
    report = dataclasses.replace(world().report(), sync=lines)
    assert report.render().endswith(
        "Sync daemon master eth1 syncid=7 port=8848: running\n"
        "Sync daemon backup eth1 syncid=7: down (no such interface)\n"
    )
    assert [
        {"state": "master", "up": True, "text": "master eth1 syncid=7 port=8848: running"},
        {"state": "backup", "up": False, "text": "backup eth1 syncid=7: down (no such interface)"},
    ] == report.to_json()["sync"]
    assert [] == world().report().to_json()["sync"]


def test_the_schedulers_lag_is_reported() -> None:
    """With the scheduler's load, the JSON has a ``scheduler`` object and the text a
    last line saying how late the checks run; without it, neither."""
    w = world()
    load = LoadReport(late_max=2.345, lagged=12.5, stretched=3000, skipped=7, overruns=0)
    report = build(w.config, w.health, w.table, w.drained, w.now, load=load)
    assert {
        "late_max_s": 2.345,
        "lagged_s": 12.5,
        "stretched": 3000,
        "skipped": 7,
        "overruns": 0,
    } == report.to_json()["scheduler"]
    assert (
        "Checks: late by at most 2.35 s lately, 12.5 s behind in all,"
        " 3000 late runs spread out, 7 skipped, 0 overran"
    ) == report.render().splitlines()[-1]
    plain = w.report()
    assert "scheduler" not in plain.to_json()
    assert "Checks:" not in plain.render()
