"""The status page: the status report and the recent transitions as one HTML page.

Pure: :func:`render` turns values into text, every value escaped. Server-rendered,
no script, refreshed by ``<meta http-equiv="refresh">``; a real server's row is
coloured by its state the way HAProxy's stats page colours it (green up, red down,
blue drained, orange held by the panic guard).
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from lvsd.health.state import Transition
from lvsd.observe.status import HealthCode, RealServerReport, ServiceReport, StatusReport, _weight
from lvsd.observe.status import _duration as _ago

#: Seconds between two reloads of the page by the browser.
REFRESH = 5

#: A row's background by state (HAProxy's stats page: UP, DOWN, MAINT, going down).
COLOURS = {
    HealthCode.UP: "#c0ffc0",
    HealthCode.DOWN: "#ff9090",
    HealthCode.DRAINED: "#a0c8ff",
    HealthCode.HELD: "#ffd020",
}

_STYLE = """
body{font:13px sans-serif;margin:1em;background:#fff;color:#000}
h1{font-size:16px}h2{font-size:14px;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin-bottom:.5em}
th,td{border:1px solid #999;padding:2px 6px;text-align:left;white-space:nowrap}
th{background:#20377f;color:#fff}
tr.sorry td{background:#e0e0e0}.flag{color:#b00000;font-weight:bold}
.legend span{padding:1px 6px;margin-right:4px;border:1px solid #999}
""" + "".join(
    f"tr.{code} td,span.{code}{{background:{colour}}}" for code, colour in COLOURS.items()
)


def render(
    report: StatusReport,
    recent: Sequence[tuple[float, Transition]] = (),
    *,
    refresh: int = REFRESH,
) -> str:
    """The page of ``report``; ``recent`` holds (seconds ago, transition), newest first."""
    servers = [rs for svc in report.services for rs in svc.real_servers]
    counts = {code: sum(1 for rs in servers if rs.state is code) for code in HealthCode}
    summary = ", ".join(f"{counts[code]} {code}" for code in HealthCode)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{int(refresh)}">',
        "<title>lvsd status</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>lvsd status</h1>",
        f"<p>config {escape(report.config_path)}; {len(report.services)} "
        f"{'service' if len(report.services) == 1 else 'services'}, {len(servers)} "
        f"real servers: {escape(summary)}. Refreshes every {int(refresh)} s.</p>",
        '<p class="legend">'
        + "".join(f'<span class="{c}">{c}</span>' for c in HealthCode)
        + "</p>",
    ]
    if not report.table_read:
        out.append('<p class="flag">kernel table not read: kernel weights unknown</p>')
    for svc in report.services:
        out.extend(_service(svc))
    out.append("<h2>Recent transitions</h2>")
    if recent:
        out.append(
            "<table><tr><th>Ago</th><th>Service</th><th>Real server</th><th>Change</th>"
            "<th>Reason</th><th>Detail</th></tr>"
        )
        for ago, t in recent:
            state = "up" if t.new else "down"
            out.append(
                f'<tr class="{state}">'
                + _cells(_ago(ago), t.service, str(t.realserver), t.event, t.reason, t.detail)
                + "</tr>"
            )
        out.append("</table>")
    else:
        out.append("<p>none since the daemon started</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _service(svc: ServiceReport) -> list[str]:
    title = f"{escape(svc.name)}: {escape(str(svc.key))} {escape(svc.scheduler)}"
    if svc.flags:
        title += f' <span class="flag">{escape(", ".join(svc.flags))}</span>'
    out = [
        f"<h2>{title}</h2>",
        "<table><tr><th>Real server</th><th>Forward</th><th>State</th><th>Kernel</th>"
        "<th>Configured</th><th>Effective</th><th>Since</th><th>Why</th><th>Checks</th></tr>",
    ]
    out.extend(_real_server(rs) for rs in svc.real_servers)
    if svc.sorry is not None:
        sorry = svc.sorry
        out.append(
            '<tr class="sorry">'
            + _cells(
                str(sorry.key),
                str(sorry.forward),
                "sorry" if sorry.active else "sorry (idle)",
                _weight(sorry.kernel_weight),
                str(sorry.configured_weight),
                "",
                "",
                "",
                "",
            )
            + "</tr>"
        )
    out.append("</table>")
    return out


def _real_server(rs: RealServerReport) -> str:
    why = rs.reason if not rs.detail else f"{rs.reason}: {rs.detail}"
    checks = ", ".join(
        f"{c.kind}{'' if c.port is None else f':{c.port}'} {'up' if c.up else 'down'}"
        for c in rs.checks
    )
    return (
        f'<tr class="{rs.state}">'
        + _cells(
            str(rs.key),
            str(rs.forward),
            str(rs.state),
            _weight(rs.kernel_weight),
            str(rs.configured_weight),
            "0 (drained)" if rs.drained else str(rs.factors),  # the operator's drain is no factor
            _ago(rs.since),
            why,
            checks or "none",
        )
        + "</tr>"
    )


def _cells(*values: str) -> str:
    return "".join(f"<td>{escape(v)}</td>" for v in values)


__all__ = ["COLOURS", "REFRESH", "render"]
