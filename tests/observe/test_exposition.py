"""The fast renderer: the text of metric families agreeing with prometheus_client's;
the label lists and rendered lines kept between scrapes."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import math
import re
from dataclasses import replace

from prometheus_client import CollectorRegistry, generate_latest

from lvsd.observe.metrics import Metrics
from tests.observe.test_metrics import Samples, samples, scraped
from tests.observe.test_status import WEB, A, world


def test_fast_renderer_matches_prometheus_client() -> None:
    """The hand-rendered scrape side parses to exactly what prometheus_client
    renders from the same collector, in both formats."""
    metrics, fast = scraped()
    slow = samples(generate_latest(metrics.registry).decode())
    assert slow == fast
    _, fast_om = scraped(openmetrics=True)
    assert {k: v for k, v in slow.items() if not k[0].endswith("_created")} == {
        k: v for k, v in fast_om.items() if not k[0].endswith("_created")
    }


def test_large_counters_render_like_prometheus_client() -> None:
    """Counters at and beyond 1e15 (written as floats, 1e+16) and just below it
    (written exactly, where prometheus_client writes 9.99999999999999e+14) have the
    values prometheus_client gives them."""
    w = world()
    huge = {
        key: ds._replace(stats=ds.stats._replace(bytes_in=10**16, bytes_out=10**15 - 1))
        for key, ds in w.snapshot.dest_stats.items()
    }
    metrics = Metrics(CollectorRegistry())
    metrics.update(replace(w.snapshot, dest_stats=huge), w.report())
    fast = metrics.exposition().decode()
    slow = generate_latest(metrics.registry).decode()

    def values(text: str, name: str) -> list[float]:
        return sorted(
            float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(name + "{")
        )

    for name in (
        "lvsd_ipvs_backend_incoming_bytes_total",
        "lvsd_ipvs_backend_outgoing_bytes_total",
    ):
        assert values(slow, name) == values(fast, name)
    assert samples(slow) == samples(fast)
    assert (True, True) == ("1e+16" in fast, "999999999999999.0" in fast)


def test_label_lists_are_kept_between_scrapes_of_the_same_table() -> None:
    """A second scrape of the same table gives each family the label list of the
    first (one list for every family of the same destinations), and a table that
    lost a destination gets new ones."""
    w = world()
    metrics = Metrics(CollectorRegistry())
    metrics.update(w.snapshot, w.report())
    first = {f.name: f.labels for f in metrics.state.families() if f.labels}
    metrics.update(w.snapshot, w.report())
    again = {f.name: f.labels for f in metrics.state.families() if f.labels}
    assert first.keys() == again.keys()
    assert all(first[name] is again[name] for name in first)
    backend = "lvsd_ipvs_backend_weight"
    active = again["lvsd_ipvs_backend_connections_active"]
    assert active is again["lvsd_ipvs_backend_incoming_bytes"]
    table = dict(w.snapshot.table)
    table[WEB] = replace(
        table[WEB], destinations={k: d for k, d in table[WEB].destinations.items() if k != A}
    )
    metrics.update(replace(w.snapshot, table=table), w.report())
    fewer = {f.name: f.labels for f in metrics.state.families() if f.labels}
    assert fewer[backend] is not again[backend]
    assert len(fewer[backend]) == len(again[backend]) - 1


def test_families_that_hold_still_are_rendered_once_and_stay_right() -> None:
    """Scraped three times, a family whose samples hold still keeps its rendered
    lines and serves them the third time, while the families that moved are rendered
    anew; each scrape's text is what a fresh Metrics renders of the same inputs."""
    w = world()
    moved = {
        key: ds._replace(stats=ds.stats._replace(bytes_in=ds.stats.bytes_in + 777))
        for key, ds in w.snapshot.dest_stats.items()
    }
    rounds = [w.snapshot, replace(w.snapshot, dest_stats=moved), w.snapshot]
    report = w.report()
    metrics = Metrics(CollectorRegistry())
    texts: list[str] = []

    def scraped_samples(m: Metrics, openmetrics: bool) -> Samples:
        text = m.exposition(openmetrics=openmetrics).decode()
        if m is metrics:
            texts.append(text)
        got = samples(text, openmetrics=openmetrics)
        return {k: v for k, v in got.items() if not k[0].endswith("_created")}

    for n, snapshot in enumerate(rounds):
        metrics.update(snapshot, report)
        fresh = Metrics(CollectorRegistry())
        fresh.update(snapshot, report)
        openmetrics = n == 2  # the kept lines serve either format
        assert scraped_samples(fresh, openmetrics) == scraped_samples(metrics, openmetrics)
    families = {f.name: f for f in metrics.state.families()}
    weight = families["lvsd_real_server_configured_weight"]
    incoming = families["lvsd_ipvs_backend_incoming_bytes"]
    assert (True, True) == (weight.still, weight.lines is not None)
    assert (False, None) == (incoming.still, incoming.lines)  # moved back: rendered anew
    assert " 777.0\n" in texts[1]
    assert " 777.0\n" not in texts[2]


def test_float_values_render_as_prometheus_client_reads_them() -> None:
    """Float families render finite values with repr and the rest as Prometheus
    writes them; integer families write "N.0"."""
    metrics = Metrics(CollectorRegistry())
    w = world()
    metrics.update(w.snapshot, w.report())
    family = next(f for f in metrics.state.families() if f.name.endswith("_factor"))
    assert "d" == family.values.typecode
    family.values[0] = math.inf
    family.values[1] = 0.25
    family.values[2] = 1e20
    text = metrics.exposition().decode()
    values = [
        line.rsplit(" ", 1)[1]
        for line in text.splitlines()
        if line.startswith("lvsd_real_server_weight_factor{")
    ]
    assert ["+Inf", "0.25", "1e+20"] == values[:3]
    assert "lvsd_ipvs_backend_connections_active{" in text
    assert re.search(r"^lvsd_ipvs_backend_weight\{[^}]*\} \d+\.0$", text, re.M)


def test_openmetrics_ends_with_one_eof() -> None:
    """OpenMetrics output has exactly one # EOF, at the end."""
    w = world()
    metrics = Metrics(CollectorRegistry())
    metrics.update(w.snapshot, w.report())
    text = metrics.exposition(openmetrics=True).decode()
    assert (1, True) == (text.count("# EOF"), text.endswith("# EOF\n"))
