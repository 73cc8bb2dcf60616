"""The fast renderer: the text of metric families, checked byte for byte against
prometheus_client's ``generate_latest`` (text and OpenMetrics), with the two spellings
where they differ; the label lists and rendered lines kept between scrapes."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.utils import floatToGoString

from lvsd.observe.exposition import LabelSet, MetricFamily, StateCollector, render_parts
from lvsd.observe.metrics import Metrics
from lvsd.observe.steps import finish
from tests.observe.test_metrics import Samples, samples, scraped
from tests.observe.test_status import WEB, A, world

#: Label names in the order prometheus_client writes them (sorted).
NAMES = ("a_label", "b_label")


def registry_with(families: list[MetricFamily]) -> tuple[CollectorRegistry, StateCollector]:
    """A registry with a gauge, a histogram and a counter of prometheus_client's own,
    and last the collector of ``families``."""
    registry = CollectorRegistry()
    Gauge("app_info", "a gauge of the registry's own", ["version"], registry=registry).labels(
        "1.0"
    ).set(1)
    histogram = Histogram(
        "app_duration_seconds", "a histogram", ["kind"], buckets=(0.1, 1.0), registry=registry
    )
    histogram.labels("tcp").observe(0.05)
    histogram.labels("tcp").observe(3.0)
    Counter("app_events", "a counter", registry=registry).inc(2)
    state = StateCollector()
    registry.register(state)
    state.set(families)
    return registry, state


def family(name: str, typ: str, values: list[float], code: str = "Q") -> MetricFamily:
    """A family with one sample per value, each with its own label set (the first
    with every character that needs escaping)."""
    made = MetricFamily(name, typ, f"{typ} {name}: a back\\slash\nand a new line", code)
    for i, value in enumerate(values):
        first = 'back\\slash "quoted"\nnew line ünï' if i == 0 else f"value {i}"
        made.add(LabelSet(NAMES, (first, str(i))), value)
    return made


def fast_and_slow(
    registry: CollectorRegistry, state: StateCollector, openmetrics: bool
) -> tuple[bytes, bytes]:
    """The registry's text from ``render_parts`` and from prometheus_client."""
    fast = b"".join(finish(render_parts(registry, state, openmetrics)))
    if openmetrics:
        slow: bytes = om_exposition.generate_latest(registry)  # type: ignore[no-untyped-call]
    else:
        slow = generate_latest(registry)
    return fast, slow


@pytest.mark.parametrize("openmetrics", [False, True])
def test_the_text_is_prometheus_clients_byte_for_byte(openmetrics: bool) -> None:
    """Gauges and counters of counts and of floats, with labels to escape, values
    from 0 to 2**64 - 1, fractions, negatives, infinities and NaN, an empty family
    (not written) and the registry's own gauge, histogram and counter: the bytes are
    prometheus_client's."""
    families = [
        family("test_counts", "gauge", [0, 7, 999_999, 10**15, 10**16 + 1, 2**64 - 1]),
        family(
            "test_floats",
            "gauge",
            [0.25, 1 / 3, 3.0, -2.5, -1234567.5, 1e-7, 1e20, math.inf, -math.inf, math.nan],
            "d",
        ),
        family("test_events", "counter", [0, 12, 10**17]),
        family("test_empty", "gauge", []),
    ]
    registry, state = registry_with(families)
    fast, slow = fast_and_slow(registry, state, openmetrics)
    assert slow == fast
    for word in (b"+Inf", b"-Inf", b"NaN", b"1e+20", b'\\"quoted\\"\\n', b"app_duration"):
        assert word in fast
    assert b"test_empty" not in fast


def prometheus_clients_way(text: str) -> str:
    """``text`` with every sample's labels sorted by name and its value spelt by
    prometheus_client."""
    sample = re.compile(r"^(\w+)\{(.*)\} (\S+)$", re.MULTILINE)
    pair = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

    def respell(match: re.Match[str]) -> str:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(pair.findall(match.group(2))))
        value = floatToGoString(float(match.group(3)))  # type: ignore[no-untyped-call]
        return f"{match.group(1)}{{{labels}}} {value}"

    return sample.sub(respell, text)


@pytest.mark.parametrize("openmetrics", [False, True])
def test_labels_in_their_order_and_large_values_in_full(openmetrics: bool) -> None:
    """Where the text differs from prometheus_client's: labels come in the order
    given (it sorts them), and integers from 1e6 below 1e15 and floats from 1e6 below
    1e16 are written in full (it writes an exponent). Put its way, the bytes are its."""
    names = ("z_label", "a_label")
    counts = MetricFamily("test_big_counts", "counter", "large counts")
    counts.add(LabelSet(names, ("last", "first")), 1_500_000)
    counts.add(LabelSet(names, ("b", "a")), 10**15 - 1)
    floats = MetricFamily("test_big_floats", "gauge", "large floats", "d")
    floats.add(LabelSet(names, ("last", "first")), 1234567.125)
    floats.add(LabelSet(names, ("b", "a")), 1e15)
    registry, state = registry_with([counts, floats])
    fast, slow = (text.decode() for text in fast_and_slow(registry, state, openmetrics))
    expected = [
        'test_big_counts_total{z_label="last",a_label="first"} 1500000.0',
        'test_big_counts_total{z_label="b",a_label="a"} 999999999999999.0',
        'test_big_floats{z_label="last",a_label="first"} 1234567.125',
        'test_big_floats{z_label="b",a_label="a"} 1000000000000000.0',
    ]
    assert expected == [line for line in fast.splitlines() if line.startswith("test_big")]
    assert 'test_big_counts_total{a_label="first",z_label="last"} 1.5e+06' in slow
    assert slow == prometheus_clients_way(fast)


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
