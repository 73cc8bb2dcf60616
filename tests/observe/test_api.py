"""The HTTP endpoint: /metrics (text and OpenMetrics), /status, /healthz, /readyz,
served by ``start`` on loopback (IPv4 and IPv6, port 0)."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import asyncio
import gzip
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from lvsd.errors import IpvsError
from lvsd.model import Snapshot, Table
from lvsd.observe import api
from lvsd.observe.api import bound_port, parse_listen, report, start, wants_openmetrics
from lvsd.observe.metrics import Metrics
from lvsd.observe.status import StatusReport, build_steps
from lvsd.observe.steps import finish
from tests.observe.test_status import World, world


@dataclass
class FakeSource:
    """A daemon stand-in: counts dumps, can fail them, says ready or not."""

    w: World = field(default_factory=world)
    ready: bool = True
    fail: bool = False
    dumps: int = 0
    tables: list[Table | None] = field(default_factory=list)

    async def snapshot(self) -> Snapshot:
        self.dumps += 1
        if self.fail:
            raise IpvsError("dump", "netlink socket closed")
        return self.w.snapshot

    def report(self, table: Table | None) -> StatusReport:
        self.tables.append(table)
        return self.w.report(with_table=table is not None)


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeSource, str]]:
    source = FakeSource()
    runner = await start("127.0.0.1:0", source, Metrics(CollectorRegistry()))
    try:
        yield source, f"http://127.0.0.1:{bound_port(runner)}"
    finally:
        await runner.cleanup()


async def get(url: str, **headers: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def test_parse_listen() -> None:
    """IPv4 and bracketed IPv6 parse, as the config accepts them; a bare port, an
    unbracketed IPv6 or a bracketed IPv4 does not."""
    assert ("127.0.0.1", 9475) == parse_listen("127.0.0.1:9475")
    assert ("::1", 9475) == parse_listen("[::1]:9475")
    for bad in (":9475", "::1:9475", "[127.0.0.1]:9475", "127.0.0.1", "127.0.0.1:99999", "[zz]:1"):
        with pytest.raises(ValueError, match="metrics_listen"):
            parse_listen(bad)


def test_wants_openmetrics() -> None:
    """Prometheus' own Accept header asks for OpenMetrics; curl's does not."""
    prometheus = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    assert (True, False) == (wants_openmetrics(prometheus), wants_openmetrics("*/*"))


async def test_metrics_text_one_dump_per_scrape(served: tuple[FakeSource, str]) -> None:
    """A scrape makes one dump, reports from that table, and serves the text format."""
    source, base = served
    status, ctype, body = await get(base + "/metrics")
    assert (200, "text/plain; version=0.0.4; charset=utf-8") == (status, ctype)
    assert (1, [source.w.snapshot.table]) == (source.dumps, source.tables)
    names = {f.name for f in text_string_to_metric_families(body)}
    assert {"lvsd_ipvs_backend_weight", "lvsd_real_server_health", "lvsd_build_info"} <= names


async def test_metrics_body_is_the_exposition_and_leaves_the_snapshot_whole() -> None:
    """The answer is the exposition byte for byte, and freeing the scrape's counters
    in steps leaves the source's snapshot as it was."""
    source = FakeSource()
    stats = dict(source.w.snapshot.dest_stats)
    metrics = Metrics(CollectorRegistry())
    runner = await start("127.0.0.1:0", source, metrics)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{bound_port(runner)}/metrics") as resp,
        ):
            body = await resp.read()
    finally:
        await runner.cleanup()
    assert metrics.exposition() == body
    assert stats == source.w.snapshot.dest_stats
    assert len(stats) > 1


async def test_metrics_answer_yields_every_send_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sending the answer yields to the loop after every ``SEND_STEP`` bytes (here one
    part), and the answer is still the exposition byte for byte; a small answer under
    the default step is sent without yielding. The handler's own yields are counted,
    not loop turns (which a slow host adds while the bytes travel)."""
    metrics = Metrics(CollectorRegistry())
    runner = await start("127.0.0.1:0", FakeSource(), metrics)
    yields = 0

    class Counted:
        """``asyncio`` for the api module, with its ``sleep`` counted."""

        def __getattr__(self, name: str) -> object:
            return getattr(asyncio, name)

        @staticmethod
        async def sleep(delay: float) -> None:
            nonlocal yields
            yields += 1
            await asyncio.sleep(delay)

    monkeypatch.setattr(api, "asyncio", Counted())

    async def scrape() -> tuple[int, bytes]:
        before = yields
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{bound_port(runner)}/metrics") as resp,
        ):
            body = await resp.read()
        return yields - before, body

    try:
        default_yields, default_body = await scrape()
        monkeypatch.setattr(api, "SEND_STEP", 1)
        stepped_yields, stepped_body = await scrape()
    finally:
        await runner.cleanup()
    parts = len(finish(metrics.exposition_parts()))
    assert metrics.exposition() == default_body == stepped_body
    assert parts > 20
    assert (0, True) == (default_yields, stepped_yields >= parts - 1)


async def test_metrics_openmetrics(served: tuple[FakeSource, str]) -> None:
    """With Prometheus' Accept header the answer is OpenMetrics, ending in # EOF."""
    _, base = served
    status, ctype, body = await get(
        base + "/metrics", Accept="application/openmetrics-text; version=1.0.0"
    )
    assert (200, "application/openmetrics-text; version=1.0.0; charset=utf-8") == (status, ctype)
    assert body.endswith("# EOF\n")


async def test_metrics_when_the_dump_fails(served: tuple[FakeSource, str]) -> None:
    """A failed dump gives 503 with the reason (Prometheus then marks up=0)."""
    source, base = served
    source.fail = True
    status, _, body = await get(base + "/metrics")
    assert (503, "kernel table unreadable: dump: netlink socket closed\n") == (status, body)


async def test_status_json_agrees_with_metrics(served: tuple[FakeSource, str]) -> None:
    """/status lists the same health states as lvsd_real_server_health."""
    _, base = served
    _, _, metrics_body = await get(base + "/metrics")
    async with aiohttp.ClientSession() as session, session.get(base + "/status") as resp:
        assert 200 == resp.status
        data = await resp.json()
    codes = {"down": 0.0, "up": 1.0, "held": 2.0, "drained": 3.0}
    from_status = {
        (s["name"], r["address"], str(r["port"])): codes[r["state"]]
        for s in data["services"]
        for r in s["real_servers"]
    }
    from_metrics = {
        (s.labels["service"], s.labels["remote_address"], s.labels["remote_port"]): s.value
        for f in text_string_to_metric_families(metrics_body)
        if f.name == "lvsd_real_server_health"
        for s in f.samples
    }
    assert from_status == from_metrics
    assert 5 == len(from_status)


async def test_status_without_a_table(served: tuple[FakeSource, str]) -> None:
    """When the dump fails, /status still answers, with table_read false."""
    source, base = served
    source.fail = True
    async with aiohttp.ClientSession() as session, session.get(base + "/status") as resp:
        data = await resp.json()
    assert (200, False, [None]) == (resp.status, data["table_read"], source.tables)


async def test_page_at_root_and_by_accept(served: tuple[FakeSource, str]) -> None:
    """``/`` is the HTML page; ``/status`` is the page for a browser's Accept and JSON
    for curl's, or for a text/html refused with q=0."""
    _, base = served
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    root = await get(base + "/")
    by_accept = await get(base + "/status", Accept=browser)
    curl = await get(base + "/status", Accept="*/*")
    refused = await get(base + "/status", Accept="text/html;q=0, application/json")
    assert [200, 200] == [root[0], by_accept[0]]
    assert ["text/html; charset=utf-8"] * 2 == [root[1], by_accept[1]]
    assert "<title>lvsd status</title>" in root[2]
    assert "10.0.1.2:80" in by_accept[2]
    assert ["application/json; charset=utf-8"] * 2 == [curl[1], refused[1]]


async def test_healthz_and_readyz(served: tuple[FakeSource, str]) -> None:
    """healthz is always 200; readyz is 503 until every check ran, then 200."""
    source, base = served
    source.ready = False
    assert (200, "ok\n") == (await get(base + "/healthz"))[::2]
    assert 503 == (await get(base + "/readyz"))[0]
    source.ready = True
    assert (200, "ready\n") == (await get(base + "/readyz"))[::2]


async def test_no_operator_actions(served: tuple[FakeSource, str]) -> None:
    """Nothing but GET is served: a POST is refused."""
    _, base = served
    async with aiohttp.ClientSession() as session, session.post(base + "/status") as resp:
        assert 405 == resp.status


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
async def test_ipv6_listen() -> None:
    """start() listens on [::1]."""
    runner = await start("[::1]:0", FakeSource(), Metrics(CollectorRegistry()))
    try:
        status, _, _ = await get(f"http://[::1]:{bound_port(runner)}/healthz")
        assert 200 == status
    finally:
        await runner.cleanup()


async def test_port_in_use() -> None:
    """A port already bound is an OSError, and nothing is left listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(OSError):
            await start(f"127.0.0.1:{port}", FakeSource(), Metrics(CollectorRegistry()))


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt prometheus)"
)
async def test_promtool_checks_a_real_scrape(served: tuple[FakeSource, str]) -> None:
    """promtool check metrics accepts what the app serves."""
    _, base = served
    _, _, body = await get(base + "/metrics")
    out = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=body.encode(),
        capture_output=True,
        check=False,
    )
    assert (0, b"") == (out.returncode, out.stdout + out.stderr)


@dataclass
class SteppedFakeSource(FakeSource):
    """A FakeSource that also builds its report in steps (of one real server), and
    can find the health state out of step with the config (a reload meanwhile)."""

    stepped: int = 0
    stale: bool = False

    def report_steps(self, table: Table | None) -> Generator[None, None, StatusReport]:
        self.stepped += 1
        if self.stale:
            raise ValueError("service web: the health state does not match the config")
        w = self.w
        return build_steps(w.config, w.health, table, w.drained, w.now, chunk=1)


async def test_stepped_report_equals_the_report_in_one_go() -> None:
    """A source with report_steps gives, through report(), what build gives at once."""
    source = SteppedFakeSource()
    table = source.w.snapshot.table
    assert source.w.report() == await report(source, table)
    assert (1, []) == (source.stepped, source.tables)


async def test_stepped_report_out_of_step_falls_back_to_one_go() -> None:
    """When the steps find the health state out of step with the config, the report
    is built again in one go with report()."""
    source = SteppedFakeSource(stale=True)
    table = source.w.snapshot.table
    assert source.w.report() == await report(source, table)
    assert (1, [table]) == (source.stepped, source.tables)


async def test_stepped_scrape_matches_a_plain_one() -> None:
    """/metrics of a stepped source has the samples of a plain source's scrape."""
    bodies = []
    for source in (FakeSource(), SteppedFakeSource()):
        runner = await start("127.0.0.1:0", source, Metrics(CollectorRegistry()))
        try:
            _, _, body = await get(f"http://127.0.0.1:{bound_port(runner)}/metrics")
        finally:
            await runner.cleanup()
        bodies.append(
            {
                (s.name, frozenset(s.labels.items())): s.value
                for f in text_string_to_metric_families(body)
                for s in f.samples
                if not s.name.endswith("_created")
            }
        )
    plain, stepped = bodies
    assert plain == stepped
    assert any(name == "lvsd_real_server_health" for name, _ in stepped)


async def test_wants_gzip() -> None:
    """gzip (or x-gzip) with a q above 0 is taken; q=0, identity or nothing is not."""
    cases = {
        "gzip": True,
        "deflate, gzip;q=0.5": True,
        "X-GZIP": True,
        "br;q=1.0, gzip; q=0": False,
        "gzip;q=nope": False,
        "identity": False,
        "": False,
    }
    assert cases == {header: api.wants_gzip(header) for header in cases}


async def test_metrics_gzip_when_asked(served: tuple[FakeSource, str]) -> None:
    """Accept-Encoding: gzip gets the exposition gzip-compressed (Prometheus asks so);
    without it the answer is plain with its length."""
    _, base = served
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(base + "/metrics", headers={"Accept-Encoding": "gzip"}) as resp:
            zipped, zipped_headers = await resp.read(), resp.headers
        async with session.get(base + "/metrics", headers={"Accept-Encoding": "identity"}) as resp:
            plain, plain_headers = await resp.read(), resp.headers
    assert ("gzip", None) == (
        zipped_headers.get("Content-Encoding"),
        plain_headers.get("Content-Encoding"),
    )
    assert str(len(plain)) == plain_headers["Content-Length"]
    assert len(zipped) * 3 < len(plain)
    assert (
        plain.split(b"\nlvsd_build_info")[0]
        == gzip.decompress(zipped).split(b"\nlvsd_build_info")[0]
    )
