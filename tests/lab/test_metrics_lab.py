"""A real Prometheus scrapes ``lvsd run`` in the lab and evaluates every expression
of the dashboard, the alert rules and docs/metrics.md through its HTTP API.

One boot. This file is also the guest-side driver (run as a script in the guest): it
starts HTTP servers in rs1 and rs2, ``lvsd run`` with the endpoint on
127.0.0.1:9475 (a NAT service with http checks and a sorry server, and a fwmark
service), sends requests from the client namespace, stops rs1's server, starts
``prometheus`` (scrapes every 2 s with a 2 s timeout, so a second's stall of the guest
fails none; rule evaluation every second; the repository's rules loaded), then
records the answers of the HTTP API next to ``ipvsadm -Ln``, ``ipvsadm -Ln --stats``
and ``/status``, and last waits (at most ALERT_LIMIT s) until the shipped "real server
down" rule, ``for: 1m`` unchanged, fires for rs1. The tests read that record.
"""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = Path("/run/lvsd-metrics-lab")
VIP = "192.168.3.108"

pytestmark = pytest.mark.lab

CONFIG = """
[daemon]
state_dir = "{run}/state"
control_socket = "{run}/control.sock"
metrics_listen = "127.0.0.1:9475"
reconcile_interval = 30.0

[services.web]
address = "192.168.3.108"
port = 80
protocol = "tcp"
scheduler = "rr"
forward = "nat"
initial_state = "down"
quorum = {{ minimum = 1 }}

[services.web.sorry_server]
address = "10.0.0.100"
port = 80

[[services.web.checks]]
kind = "http"
path = "/"
interval = 1.0
timeout = 0.9
rise = 1
fall = 2

[[services.web.real_servers]]
address = "10.0.0.2"
port = 80
weight = 3

[[services.web.real_servers]]
address = "10.0.0.3"
port = 80
weight = 2

[services.marked]
fwmark = 42
scheduler = "wrr"
forward = "nat"
initial_state = "down"

[[services.marked.checks]]
kind = "tcp"
interval = 1.0
timeout = 0.9
rise = 1
fall = 2

[[services.marked.real_servers]]
address = "10.0.0.3"
port = 80
weight = 4
"""

PROMETHEUS = """
global:
  scrape_interval: 2s
  scrape_timeout: 2s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: lvsd
    static_configs:
      - targets: ["127.0.0.1:9475"]
"""


# --- guest side ------------------------------------------------------------------------


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _http(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _wait(what: str, predicate: Any, limit: float = 60.0) -> Any:
    deadline = time.monotonic() + limit
    while True:
        try:
            value = predicate()
        except (OSError, ValueError):  # not listening yet, or not ready (503, not JSON)
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {limit} s")
        time.sleep(0.2)


def _query(expr: str) -> dict[str, Any]:
    url = "http://127.0.0.1:9090/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        answer: dict[str, Any] = _http(url)
    except urllib.error.HTTPError as exc:  # 400 for a bad expression: keep its body
        answer = json.loads(exc.read())
    return answer


#: How long the guest waits for LvsdRealServerDown to fire once Prometheus started: the
#: shipped rule's ``for: 1m``, Prometheus's start-up and first scrapes in the slow
#: guest, and room for a stall.
ALERT_LIMIT = 150.0


def _wait_firing(name: str, started: float, limit: float) -> dict[str, Any]:
    """Poll Prometheus's /api/v1/alerts (every second, until ``limit`` seconds after
    ``started``) until alert ``name`` fires; what was seen last: its state ("firing",
    else the last state seen or "inactive"), the seconds from Prometheus's start, and
    the alerts of that name as the API gave them."""
    alerts: list[dict[str, Any]] = []
    while True:
        try:
            answer = _http("http://127.0.0.1:9090/api/v1/alerts")
            alerts = [a for a in answer["data"]["alerts"] if a["labels"]["alertname"] == name]
        except (OSError, ValueError, KeyError):
            pass
        states = {a["state"] for a in alerts}
        elapsed = round(time.monotonic() - started, 1)
        if "firing" in states or elapsed > limit:
            state = "firing" if "firing" in states else (min(states) if states else "inactive")
            return {"state": state, "after_s": elapsed, "alerts": alerts}
        time.sleep(1.0)


def _exprs() -> dict[str, list[str]]:
    from tests.observe.test_metrics import dashboard_exprs, docs_exprs, rule_exprs

    return {"dashboard": dashboard_exprs(), "rules": rule_exprs(), "docs": docs_exprs()}


def guest_main(results: Path) -> int:
    python = sys.executable
    RUN.mkdir(parents=True, exist_ok=True)
    config = RUN / "lvsd.toml"
    config.write_text(CONFIG.format(run=RUN))
    out: dict[str, Any] = {}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    log = (results / "lvsd.log").open("w")
    try:
        for name in ("rs1", "rs2"):
            procs[name] = subprocess.Popen(
                ["ip", "netns", "exec", name, python, "-m", "lab.httpd", name, "80"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        procs["lvsd"] = subprocess.Popen(
            [python, "-m", "lvsd", "--log-level", "info", "run", "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        ready = "http://127.0.0.1:9475/readyz"
        _wait("lvsd ready", lambda: urllib.request.urlopen(ready, timeout=2).status == 200)
        _wait(
            "both up", lambda: " 3 " in _run("ipvsadm", "-Ln") and " 2 " in _run("ipvsadm", "-Ln")
        )
        for _ in range(12):
            subprocess.run(
                ["ip", "netns", "exec", "client", "curl", "-s", "-m", "2", f"http://{VIP}/"],
                capture_output=True,
                check=False,
            )
        procs.pop("rs1").kill()
        _wait("rs1 down", lambda: re.search(r"10\.0\.0\.2:80\s+Masq\s+0\s", _run("ipvsadm", "-Ln")))
        time.sleep(2.2)  # one estimator tick: the kernel's counters include the requests

        prom = RUN / "prometheus.yml"
        prom.write_text(PROMETHEUS.format(rules=ROOT / "etc" / "prometheus" / "lvsd-rules.yml"))
        started = time.monotonic()
        procs["prometheus"] = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={prom}",
                f"--storage.tsdb.path={RUN / 'tsdb'}",
                "--web.listen-address=127.0.0.1:9090",
            ],
            stdout=(results / "prometheus.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        # Three scrapes at least, so rate() over 1m has two points.
        _wait(
            "three scrapes",
            lambda: _query("count_over_time(up[1m]) >= 3")["data"]["result"],
            limit=120,
        )
        out["up"] = _query("up")["data"]["result"]
        out["status"] = _http("http://127.0.0.1:9475/status")
        out["ipvsadm"] = _run("ipvsadm", "-Ln")
        out["stats"] = _run("ipvsadm", "-Ln", "--stats")
        out["queries"] = {
            source: [{"expr": e, "answer": _query(e)} for e in exprs]
            for source, exprs in _exprs().items()
        }
        for name in (
            "lvsd_real_server_health",
            "lvsd_ipvs_backend_weight",
            "lvsd_ipvs_service_connections_total",
            "lvsd_ipvs_backend_connections_total",
            "lvsd_ipvs_backend_connections_inactive",
            "lvsd_service_sorry_active",
        ):
            out[name] = _query(name)["data"]["result"]
        out["rules"] = _http("http://127.0.0.1:9090/api/v1/rules")["data"]
        out["scrape_format"] = _http("http://127.0.0.1:9090/api/v1/targets")["data"]
        out["alert"] = _wait_firing("LvsdRealServerDown", started, ALERT_LIMIT)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        (results / "metrics.json").write_text(json.dumps(out, indent=1))
    return 0


# --- host side ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def record(module_lab: Any) -> dict[str, Any]:
    """The one boot's record (``metrics.json``)."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed (apt prometheus)")
    from lab import harness
    from lab.harness import Scenario
    from lab.topology import NatTopology

    work = module_lab.work / "metrics"
    work.mkdir()
    # The boot's bound leaves room for ALERT_LIMIT on top of the start-up waits.
    boot = harness.Boot(timeout=420.0)
    result = harness.run(work, Scenario.python(Path(__file__)), topology=NatTopology(), boot=boot)
    logs = "".join(
        f"\n--- {name}\n" + (result.results / name).read_text()
        for name in ("lvsd.log", "prometheus.log")
        if (result.results / name).exists()
    )
    assert result.ok, result.log() + logs
    data: dict[str, Any] = result.json("metrics.json")
    return data


def _labels(sample: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in sample["metric"].items() if k not in ("__name__", "instance", "job")}


def test_prometheus_scrapes_lvsd(record: dict[str, Any]) -> None:
    """The target is up."""
    assert ["1"] == [s["value"][1] for s in record["up"]]


@pytest.mark.parametrize("source", ["dashboard", "rules", "docs"])
def test_every_expression_evaluates(record: dict[str, Any], source: str) -> None:
    """Every expression of the dashboard, the rules and the docs evaluates without
    an error in a real Prometheus fed by lvsd."""
    failed = [
        (q["expr"], q["answer"])
        for q in record["queries"][source]
        if q["answer"]["status"] != "success"
    ]
    assert [] == failed
    assert len(record["queries"][source]) > 0


def test_dashboard_panels_have_data(record: dict[str, Any]) -> None:
    """Every dashboard query returns series, but the reload annotation (no reload
    happened), netlink errors (none happened) and weight factors below 1 (no server is
    ramping, drained or weighed down by an agent)."""
    empty = [q["expr"] for q in record["queries"]["dashboard"] if not q["answer"]["data"]["result"]]
    quiet = ("changes(", "errors", "weight_factor")
    assert [] == [e for e in empty if not any(word in e for word in quiet)]


def test_rules_evaluate_healthy(record: dict[str, Any]) -> None:
    """Every alert rule of the repository was loaded and evaluates with health ok."""
    rules = [r for g in record["rules"]["groups"] for r in g["rules"]]
    assert 12 == len(rules)
    assert [] == [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    pending = {r["name"] for r in rules if r["state"] in ("pending", "firing")}
    assert "LvsdRealServerDown" in pending  # rs1 is down (for: 1m: pending at first)


def test_real_server_down_alert_fires(record: dict[str, Any]) -> None:
    """Stopping rs1's server makes LvsdRealServerDown fire (the shipped rule, for: 1m,
    seen through Prometheus's /api/v1/alerts), for rs1 of web only: rs2 is up."""
    alert = record["alert"]
    assert "firing" == alert["state"], alert
    firing = [a for a in alert["alerts"] if a["state"] == "firing"]
    keys = ("service", "remote_address", "remote_port", "severity")
    assert [("web", "10.0.0.2", "80", "warning")] == [
        tuple(a["labels"][k] for k in keys) for a in firing
    ]
    assert alert["after_s"] >= 60  # the rule's for: 1m was honoured


def test_kernel_weights_match_ipvsadm(record: dict[str, Any]) -> None:
    """lvsd_ipvs_backend_weight has one series per ``ipvsadm -Ln`` destination, with
    node_exporter's labels and the same weight (fwmark 42 as local_mark 0000002A)."""
    from_ipvsadm: dict[tuple[str, str, str], str] = {}
    service = ""
    for line in record["ipvsadm"].splitlines():
        if line.startswith(("TCP", "UDP", "SCTP", "FWM")):
            service = " ".join(line.split()[:2])
        elif line.strip().startswith("->") and "RemoteAddress" not in line:
            cells = line.split()
            from_ipvsadm[(service, cells[1], cells[3])] = cells[3]
    from_prom: dict[tuple[str, str, str], str] = {}
    for s in record["lvsd_ipvs_backend_weight"]:
        lab = _labels(s)
        if lab["proto"] == "FWM":
            svc = f"FWM {int(lab['local_mark'], 16)}"
        else:
            svc = f"{lab['proto']} {lab['local_address']}:{lab['local_port']}"
        from_prom[(svc, f"{lab['remote_address']}:{lab['remote_port']}", s["value"][1])] = s[
            "value"
        ][1]
    assert from_ipvsadm == from_prom
    marks = {_labels(s).get("local_mark") for s in record["lvsd_ipvs_backend_weight"]}
    assert {None, "0000002A"} == marks  # Prometheus drops empty labels


def test_connection_counters_match_ipvsadm_stats(record: dict[str, Any]) -> None:
    """The web service's connection counter equals ``ipvsadm -Ln --stats``'s Conns."""
    (line,) = [ln for ln in record["stats"].splitlines() if ln.startswith(f"TCP  {VIP}:80")]
    conns = line.split()[2]
    (sample,) = [
        s for s in record["lvsd_ipvs_service_connections_total"] if _labels(s)["service"] == "web"
    ]
    assert conns == sample["value"][1]
    assert int(conns) >= 12


def test_inactive_connections_match_ipvsadm(record: dict[str, Any]) -> None:
    """lvsd_ipvs_backend_connections_inactive equals ipvsadm -Ln's InActConn for
    each destination of web (the curl connections wait in TIME_WAIT)."""
    from_ipvsadm = {
        cells[1].split(":")[0]: cells[5]
        for cells in (ln.split() for ln in record["ipvsadm"].split("FWM")[0].splitlines())
        if cells and cells[0] == "->" and cells[1] != "RemoteAddress:Port"
    }
    from_prom = {
        _labels(s)["remote_address"]: s["value"][1]
        for s in record["lvsd_ipvs_backend_connections_inactive"]
        if _labels(s)["service"] == "web"
    }
    assert from_ipvsadm == from_prom
    assert sum(int(v) for v in from_prom.values()) > 0


def test_status_and_metrics_agree(record: dict[str, Any]) -> None:
    """/status and lvsd_real_server_health give every real server the same state:
    rs1 down in web, rs2 up in web and in marked."""
    codes = {"0": "down", "1": "up", "2": "held", "3": "drained"}
    from_metrics = {
        (_labels(s)["service"], _labels(s)["remote_address"]): codes[s["value"][1]]
        for s in record["lvsd_real_server_health"]
    }
    from_status = {
        (svc["name"], rs["address"]): rs["state"]
        for svc in record["status"]["services"]
        for rs in svc["real_servers"]
    }
    expected = {
        ("web", "10.0.0.2"): "down",
        ("web", "10.0.0.3"): "up",
        ("marked", "10.0.0.3"): "up",
    }
    assert expected == from_status == from_metrics


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(guest_main(Path(os.environ.get("LAB_RESULTS", "/tmp"))))
