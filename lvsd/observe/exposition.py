"""The Prometheus text format (and OpenMetrics) of metric families the caller fills,
rendered in steps and much faster than prometheus_client would. Generic: it knows no
metric name.

A :class:`MetricFamily` is a name, a type (gauge or counter), a help text and samples:
a list of :class:`LabelSet` and an array of values. :class:`StateCollector` holds the
latest families on a prometheus_client registry, and :func:`render_parts` writes the
registry's other metrics as prometheus_client renders them, then these families.

The text parses to what prometheus_client's ``generate_latest`` gives of the same
registry, and is that text byte for byte but for two spellings (checked in
``tests/observe/test_exposition.py``): labels come in the order given (prometheus_client
sorts them by name), and a value that is a float of 1e6 or more below 1e16, or an
integer of 1e6 or more below 1e15, is written in full (``1500000.0`` where
prometheus_client writes ``1.5e+06``). A ``"`` in a help text is not escaped in
OpenMetrics (prometheus_client escapes it).

What holds still between scrapes is kept: label lists (:func:`reuse_labels`) and the
rendered lines of a family whose samples did not change (:func:`reuse_text`).
"""

from __future__ import annotations

from array import array
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

#: Lines :meth:`MetricFamily.render` writes between two yields.
TEXT_CHUNK: Final = 800

_LABEL_ESCAPES = str.maketrans({"\\": r"\\", "\n": r"\n", '"': r"\""})

#: Integers below this print exactly as ``N.0`` (what :func:`_float` gives them).
_EXACT: Final = 10**15
_INF: Final = float("inf")


def escape_label_value(value: str) -> str:
    """A label value as it stands between the quotes of ``name="value"``."""
    return value.translate(_LABEL_ESCAPES)


def _float(value: float) -> str:
    """A sample value as prometheus_client writes it (``10.0``, ``1e+20``, ``+Inf``)."""
    if -_EXACT < value < _EXACT and value == int(value):
        return f"{int(value)}.0"
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]  # untyped upstream


class LabelSet:
    """One label set: its names and values in order, and its rendered text
    ``{a="x",b="y"}`` (given, or rendered here)."""

    __slots__ = ("names", "text", "values")

    def __init__(self, names: Sequence[str], values: Sequence[str], text: str = "") -> None:
        self.names = names
        self.values = values
        self.text = text or (
            "{"
            + ",".join(
                f'{n}="{v.translate(_LABEL_ESCAPES)}"' for n, v in zip(names, values, strict=True)
            )
            + "}"
        )


class MetricFamily:
    """One metric family being filled: a name, a type, and samples as a list of label
    sets and an array of values (typecode ``code``: "Q" for counts, "d" for floats).

    No tuple per sample, and the values in an array, which the garbage collector does
    not track: lists of values would be references for the first young collection
    after a scrape to walk, with probes waiting. The label lists are kept from one
    scrape to the next while they stay the same (:func:`reuse_labels`), so they age
    out of the young generation once. A family whose samples are the same as the
    previous scrape's keeps its rendered lines (``lines``) for the next one
    (:func:`reuse_text`)."""

    __slots__ = (
        "documentation",
        "labels",
        "lines",
        "name",
        "sample_name",
        "still",
        "typ",
        "values",
    )

    def __init__(self, name: str, typ: str, documentation: str, code: str = "Q") -> None:
        self.name = name
        self.typ = typ
        self.documentation = documentation
        self.sample_name = name + "_total" if typ == "counter" else name
        self.labels: list[LabelSet] = []
        self.values: array[Any] = array(code)
        self.still = False  # the same samples as the previous scrape's family
        self.lines: list[bytes] | None = None  # rendered sample lines, when still

    def add(self, labels: LabelSet, value: float) -> None:
        self.labels.append(labels)
        self.values.append(value)

    def metric(self) -> Metric:
        """The family as a prometheus_client metric (for its own renderers)."""
        metric = Metric(self.name, self.documentation, self.typ)
        name = self.sample_name
        metric.samples = [
            Sample(name, dict(zip(lab.names, lab.values, strict=True)), float(value), None, None)
            for lab, value in zip(self.labels, self.values, strict=True)
        ]
        return metric

    def render(
        self, out: list[bytes], openmetrics: bool, chunk: int = TEXT_CHUNK
    ) -> Generator[None, None, None]:
        """Appends the family's text to ``out``, encoded, yielding before every
        ``chunk`` samples."""
        if not self.values:
            return
        head = self.name if openmetrics or self.typ != "counter" else self.sample_name
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {head} {doc}\n# TYPE {head} {self.typ}\n".encode())
        if self.lines is not None:
            out.extend(self.lines)
            return
        kept: list[bytes] | None = [] if self.still else None
        name = self.sample_name
        labels = self.labels
        values = self.values
        floats = values.typecode == "d"
        for start in range(0, len(values), chunk):
            yield
            end = start + chunk
            pairs = zip(labels[start:end], values[start:end], strict=True)
            # One join over "name{labels} value" lines. An integer below 1e15 (every
            # kernel counter in practice) is written "N.0" inline, a finite float as
            # repr writes it ("0.5", "3.0", "1e+16"); only the rest take a call.
            if floats:
                lines = [
                    f"{name}{lab.text} {v!r}\n"
                    if -_INF < v < _INF
                    else f"{name}{lab.text} {_float(v)}\n"
                    for lab, v in pairs
                ]
            else:
                lines = [
                    f"{name}{lab.text} {v}.0\n" if v < _EXACT else f"{name}{lab.text} {_float(v)}\n"
                    for lab, v in pairs
                ]
            part = "".join(lines).encode()
            out.append(part)
            if kept is not None:
                kept.append(part)
        self.lines = kept


class StateCollector(Collector):
    """Yields the families set by the latest :meth:`set` (nothing before the first).

    :func:`render_parts` renders these families itself, much faster than
    prometheus_client would; meanwhile :meth:`hidden` keeps the registry from
    rendering them a second time."""

    def __init__(self) -> None:
        self._families: list[MetricFamily] = []
        self._hidden = False

    def set(self, families: list[MetricFamily]) -> None:
        self._families = families

    def families(self) -> list[MetricFamily]:
        return self._families

    @contextmanager
    def hidden(self) -> Iterator[None]:
        self._hidden = True
        try:
            yield
        finally:
            self._hidden = False

    def collect(self) -> Iterable[Metric]:
        if self._hidden:
            return []
        return [f.metric() for f in self._families if f.values]

    def describe(self) -> Iterable[Metric]:
        return []  # registered without names: the families vary


def render_parts(
    registry: CollectorRegistry, state: StateCollector, openmetrics: bool = False
) -> Generator[None, None, list[bytes]]:
    """The whole of ``registry`` in the Prometheus text format (or OpenMetrics), what
    ``generate_latest(registry)`` gives when ``state`` is the last collector registered:
    its other collectors as prometheus_client renders them, then the families of
    ``state`` rendered here, yielding every :data:`TEXT_CHUNK` lines. Returns the text
    as consecutive parts (for a streamed answer, without copying it whole)."""
    with state.hidden():
        if openmetrics:
            events: bytes = om_exposition.generate_latest(registry)  # type: ignore[no-untyped-call]  # untyped upstream
        else:
            events = generate_latest(registry)
    eof = b"# EOF\n"
    if openmetrics:
        assert events.endswith(eof)
        events = events[: -len(eof)]
    out: list[bytes] = [events]
    for family in state.families():
        yield from family.render(out, openmetrics)
    if openmetrics:
        out.append(eof)
    return out


def reuse_labels(families: Sequence[MetricFamily], previous: Sequence[MetricFamily]) -> None:
    """Gives each family a label list of ``previous`` (or of a family before it) that
    holds the same label sets in the same order, in place of its own: the same list
    then serves scrape after scrape (and all the families of the same label sets)."""
    kept: dict[tuple[int, int, int], list[LabelSet]] = {}

    def shape(labels: list[LabelSet]) -> tuple[int, int, int]:
        return (len(labels), id(labels[0]), id(labels[-1]))

    for old in previous:
        if old.labels:
            kept.setdefault(shape(old.labels), old.labels)
    for family in families:
        labels = family.labels
        if not labels:
            continue
        same = kept.setdefault(shape(labels), labels)
        if same is not labels and same == labels:
            family.labels = same


def reuse_text(families: Sequence[MetricFamily], previous: Sequence[MetricFamily]) -> None:
    """Marks each family whose samples are those of the previous scrape's family of
    the same name (the same label list, as :func:`reuse_labels` left it, and the same
    values) as still, with that family's rendered lines if it kept them: a family that
    holds still is rendered once more, then its lines serve every scrape until it
    moves."""
    before = {f.name: f for f in previous}
    for family in families:
        old = before.get(family.name)
        if (
            old is not None
            and old.labels is family.labels
            and old.values.typecode == family.values.typecode
            and old.values.tobytes() == family.values.tobytes()  # floats too, bit for bit
        ):
            family.still = True
            family.lines = old.lines


__all__ = [
    "TEXT_CHUNK",
    "LabelSet",
    "MetricFamily",
    "StateCollector",
    "escape_label_value",
    "render_parts",
    "reuse_labels",
    "reuse_text",
]
