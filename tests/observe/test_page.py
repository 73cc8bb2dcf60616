"""The status page: the report and the recent transitions as escaped HTML, each real
server's row classed (and so coloured) by its state."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

from dataclasses import replace
from html.parser import HTMLParser

from lvsd.health.state import Transition
from lvsd.model import DestKey
from lvsd.observe.page import render
from tests.observe.test_status import world


class Rows(HTMLParser):
    """The page's table rows as (class, cell texts), and its meta refresh."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[str]]] = []
        self.refresh: str | None = None
        self.scripts = 0
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "tr":
            self.rows.append((attr.get("class") or "", []))
        elif tag == "td":
            self._cell = []
        elif tag == "meta" and attr.get("http-equiv") == "refresh":
            self.refresh = attr.get("content")
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1][1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_rows_carry_state_and_weights() -> None:
    """Each real server is one row classed by its state, with kernel, configured and
    effective weights; the sorry server has its own row; no script; refresh 5 s."""
    page = Rows(render(world().report()))
    servers = {cells[0]: (cls, cells[2:6]) for cls, cells in page.rows if cells}
    assert ("up", ["up", "3", "3", "3 = configured 3"]) == servers["10.0.1.1:80"]
    assert ("down", ["down", "0", "1", "1 = configured 1"]) == servers["10.0.1.2:80"]
    assert ("drained", ["drained", "0", "1", "0 (drained)"]) == servers["10.0.1.3:80"]
    assert ("sorry", ["sorry (idle)", "-", "1", ""]) == servers["10.0.9.9:80"]
    assert ("5", 0) == (page.refresh, page.scripts)


def test_values_are_escaped_and_transitions_listed() -> None:
    """A detail with markup arrives as text, not as a tag; transitions are listed
    newest first with their age, coloured by the new state."""
    w = world()
    report = w.report()
    web = report.services[0]
    evil = web.real_servers[1]._replace(detail="<script>alert(1)</script>")
    report = replace(report, services=(replace(web, real_servers=(evil, *web.real_servers[2:])),))
    t = Transition(
        service="web",
        realserver=DestKey.of("10.0.1.2", 80),
        old=True,
        new=False,
        reason="refused",
        detail="connect <10.0.1.2>:80: refused",
        at=20.0,
    )
    text = render(report, [(80.0, t)])
    page = Rows(text)
    assert 0 == page.scripts
    assert "&lt;script&gt;" in text
    assert (
        "down",
        ["80s", "web", "10.0.1.2:80", "realserver.down", "refused", t.detail],
    ) == page.rows[-1]


def test_service_flags_in_its_title() -> None:
    """A service in panic and out of the kernel says so beside its name, in red."""
    report = world().report()
    web = replace(report.services[0], panic=True, in_kernel=False)
    text = render(replace(report, services=(web,)))
    assert (
        '<h2>web: tcp 10.0.0.1:80 wrr <span class="flag">not in kernel, panic</span></h2>' in text
    )
