"""Guest-side helpers: shell, the kernel table, health against kernel, CPU, metrics, journal."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lab.e2e.settings import ANSWER_WITHIN, SETTLE


def sh(*argv: str, check: bool = True) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout + (done.stderr if not check else "")


def ipvsadm() -> str:
    return sh("ipvsadm", "-Ln")


def unit_property(name: str) -> str:
    return sh("systemctl", "show", "lvsd", "-p", name, "--value").strip()


def table_shape(text: str) -> list[str]:
    """``ipvsadm -Ln`` without the connection counters (what a change would change)."""
    shape = []
    for line in text.splitlines():
        fields = line.split()
        if line.startswith("  ->") and len(fields) >= 6 and fields[1] != "RemoteAddress:Port":
            shape.append(" ".join(fields[:4]))
        elif line.startswith(("TCP", "UDP", "SCTP", "FWM")):
            shape.append(" ".join(fields))
    return shape


def weights(text: str) -> dict[str, int]:
    """Real server address -> weight in an ``ipvsadm -Ln`` listing (the waits poll
    :func:`polled` instead)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"\s+->\s+([\d.]+):\d+\s+\w+\s+(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


#: The kernel's listing of the table: what the waits poll. ``ipvsadm -Ln`` costs about
#: 60 ms of the guest's one CPU (a fork and an exec, trapped), so polling it every
#: 0.05 s took half the CPU that lvsd, the real servers and the client share; every
#: listing the scenarios record or judge is still ``ipvsadm -Ln``'s.
PROC_IP_VS = Path("/proc/net/ip_vs")


def polled(text: str | None = None) -> dict[str, int]:
    """Real server address -> weight from ``/proc/net/ip_vs`` (IPv4, addresses in hex:
    ``  -> 0A000002:0050      Masq    5      0          0``)."""
    out: dict[str, int] = {}
    for line in (text if text is not None else PROC_IP_VS.read_text()).splitlines():
        m = re.match(r"\s+->\s+([0-9A-F]{8}):[0-9A-F]{4}\s+\w+\s+(\d+)", line)
        if m:
            out[str(ipaddress.IPv4Address(int(m.group(1), 16)))] = int(m.group(2))
    return out


def agrees_with_ipvsadm(tries: int = 10) -> bool:
    """Whether :func:`polled` and ``ipvsadm -Ln`` give the same weights, judged on a
    listing made while ``/proc/net/ip_vs`` read the same before and after it (lvsd may
    be changing weights meanwhile: two reads at different moments can differ)."""
    for _ in range(tries):
        before = polled()
        listed = weights(ipvsadm())
        if polled() == before:
            return listed == before
        time.sleep(0.2)
    return False


def kernel_table(text: str) -> dict[str, dict[str, int]]:
    """``ipvsadm -Ln`` as service -> destination -> weight: ``"TCP 192.168.3.108:80"``
    (``"FWM 42"``) -> ``"10.0.0.2:80"`` -> 5."""
    out: dict[str, dict[str, int]] = {}
    dests: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if line.startswith(("TCP", "UDP", "SCTP", "FWM")) and len(fields) >= 2:
            dests = out.setdefault(f"{fields[0]} {fields[1]}", {})
        elif line.startswith("  ->") and len(fields) >= 4 and fields[1] != "RemoteAddress:Port":
            dests[fields[1]] = int(fields[3])
    return out


def expected_weight(rs: dict[str, Any], on_failure: str = "quiesce") -> int | None:
    """The kernel weight a real server's reported health (one entry of ``/status``'s
    ``real_servers``) implies: its effective weight when up (held by the panic guard
    counts as up), 0 when drained or down, None (absent) when down and the failure
    action is ``remove``."""
    if rs["state"] in ("up", "held"):
        return int(rs["weight"]["effective"])
    if rs["state"] == "down" and on_failure == "remove":
        return None
    return 0


def _service_key(svc: dict[str, Any]) -> str:
    if svc.get("fwmark"):
        return f"FWM {svc['fwmark']}"
    return f"{str(svc['protocol']).upper()} {svc['address']}:{svc['port']}"


def health_vs_kernel(
    first: dict[str, Any],
    kernel: dict[str, dict[str, int]],
    second: dict[str, Any],
    *,
    elapsed: float,
    settle: float = SETTLE,
    on_failure: str = "quiesce",
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """One sample of "the kernel table matches the reported health": ``first`` and
    ``second`` are status reports (``/status``'s JSON) asked for before and after the
    kernel table was read (``kernel_table``), ``elapsed`` the seconds from asking for
    ``first`` to receiving ``second``.

    A real server is judged when both reports give it the same state and effective
    weight and its last transition (``since`` in ``second``) is older than ``elapsed +
    settle``: its state then held from ``settle`` seconds before the sample began until
    its end, so the kernel, read in between, must show ``expected_weight``. The others
    are skipped (settling). Returns the counts (``compared``, ``skipped``, and
    ``compared_up``/``compared_down``...) and the mismatches."""
    before = {
        (_service_key(svc), f"{rs['address']}:{rs['port']}"): rs
        for svc in first.get("services", [])
        for rs in svc["real_servers"]
    }
    counts: dict[str, int] = {"compared": 0, "skipped": 0}
    mismatches: list[dict[str, Any]] = []
    for svc in second.get("services", []):
        service = _service_key(svc)
        for rs in svc["real_servers"]:
            dest = f"{rs['address']}:{rs['port']}"
            old = before.get((service, dest))
            stable = (
                old is not None
                and old["state"] == rs["state"]
                and old["weight"]["effective"] == rs["weight"]["effective"]
                and float(rs["since"]) >= elapsed + settle
            )
            if not stable:
                counts["skipped"] += 1
                continue
            counts["compared"] += 1
            counts[f"compared_{rs['state']}"] = counts.get(f"compared_{rs['state']}", 0) + 1
            want = expected_weight(rs, on_failure)
            seen = kernel.get(service, {}).get(dest)
            if want != seen:
                mismatches.append(
                    {
                        "service": service,
                        "realserver": dest,
                        "state": rs["state"],
                        "since": round(float(rs["since"]), 2),
                        "expected": want,
                        "kernel": seen,
                    }
                )
    return counts, mismatches


def cpu_times() -> tuple[int, int]:
    """The guest's (busy, total) CPU time in ticks since boot, from ``/proc/stat``."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def process_cpu(pid: int | str) -> float:
    """CPU seconds (user + system) process ``pid`` has used, from ``/proc/PID/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_delay(pid: int | str) -> float:
    """Seconds the main thread of process ``pid`` has spent runnable but waiting for the
    guest's CPU (``/proc/PID/schedstat``, second field, at the guest's tick)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def own_time(elapsed: float, stalled: float, waited: float) -> float:
    """An answer's time that was lvsd's: ``elapsed`` less the longer of the time the
    whole guest stood still (the host's stall) and the time lvsd waited for the guest's
    one CPU (held by the real servers and the client, which stand for other machines,
    or by the test's driver). The two may overlap, so only the longer is taken off."""
    return elapsed - max(stalled, waited)


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The share of the CPU that was busy between two ``cpu_times`` readings."""
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 2) if total > 0 else None


def wait_for(predicate: Callable[[], bool], limit: float, step: float = 0.1) -> float | None:
    """Seconds until ``predicate`` held, or None after ``limit``."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if predicate():
            return round(time.monotonic() - start, 2)
        time.sleep(step)
    return None


def metrics(*prefixes: str) -> list[str]:
    """Lines of lvsd's /metrics starting with one of ``prefixes`` (all without)."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:9475/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        return [f"# /metrics unavailable: {exc}: {exc.read().decode(errors='replace').strip()}"]
    except OSError as exc:
        return [f"# /metrics unavailable: {exc}"]
    return [
        line
        for line in text.splitlines()
        if not line.startswith("#") and (not prefixes or line.startswith(prefixes))
    ]


EVENTS = ("realserver.", "reload.", "daemon.", "kernel.op", "drift.", "drain", "sorry")

#: What lvsd exported, kept with every scenario's record unless it keeps its own.
EXPORTED = (
    "lvsd_real_server_health",
    "lvsd_real_server_effective_weight",
    "lvsd_real_server_transitions",
    "lvsd_config_last_reload_successful",
    "lvsd_drift_repairs",
    "lvsd_netlink_errors",
)
#: The same for the 200 servers of flap200, per service.
EXPORTED_MANY = (
    "lvsd_service_real_servers",
    "lvsd_config_last_reload_successful",
    "lvsd_drift_repairs",
    "lvsd_netlink_operations",
    "lvsd_netlink_errors",
)


def journal(since: float, limit: int = 16, *, last: bool = False) -> list[str]:
    """lvsd's journal since ``since`` (wall clock): the events that matter, compacted."""
    out = sh(
        "journalctl", "-u", "lvsd", "-o", "cat", "--no-pager", f"--since=@{since:.3f}", check=False
    )
    lines = []
    for line in out.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            name = str(event.get("event", ""))
            if name.startswith(EVENTS) or event.get("level") in ("error", "critical"):
                keep = {k: v for k, v in event.items() if k not in ("timestamp", "logger", "level")}
                lines.append(json.dumps(keep, sort_keys=True))
                continue
        if not line.startswith("{") and line.strip():
            lines.append(line.strip())
    return lines[-limit:] if last else lines[:limit]


def events(since: float, until: float, name: str) -> list[dict[str, Any]]:
    """Every ``name`` event in lvsd's journal between ``since`` and ``until`` (wall
    clock), in order."""
    out = sh(
        "journalctl", "-u", "lvsd", "-o", "cat", "--no-pager",
        f"--since=@{since:.3f}", f"--until=@{until:.3f}", check=False,
    )  # fmt: skip
    found = []
    for line in out.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
    return found


def down_events(since: float, until: float) -> list[tuple[str, str]]:
    """(address, detail) of every ``realserver.down`` event in lvsd's journal between
    ``since`` and ``until`` (wall clock), in order."""
    return [
        (str(e.get("realserver", "")).rpartition(":")[0], str(e.get("detail", "")))
        for e in events(since, until, "realserver.down")
    ]


def downs(since: float, until: float, addresses: Sequence[str]) -> list[str]:
    """The real servers among ``addresses`` that lvsd's journal reports going down
    between ``since`` and ``until`` (wall clock)."""
    return sorted({where for where, _ in down_events(since, until) if where in addresses})


#: The director's IPVS settings that docs/operations.md suggests for a NAT director
#: (``/etc/sysctl.d/90-lvsd.conf``) and lvsd's preflight asks for. Without
#: ``expire_nodest_conn``, a new connection from a client port that an old entry of the
#: kernel's connection table still holds goes to that entry's real server, weight 0
#: or not: the client's ports come round every few thousand connections, and entries
#: a hung server left (CLOSE_WAIT, 60 s) sent requests to a quiesced real server whose
#: link was down (a CI run). With the setting, the kernel drops such a first SYN and
#: schedules its retransmission afresh: a 1 s stall, inside the client's timeout.
DIRECTOR_SYSCTLS = {
    "net.ipv4.vs.expire_nodest_conn": "1",
    "net.ipv4.vs.expire_quiescent_template": "1",
}


def tune_director() -> dict[str, str]:
    """Apply DIRECTOR_SYSCTLS (ip_vs is loaded) and return them as read back."""
    got: dict[str, str] = {}
    for name, value in DIRECTOR_SYSCTLS.items():
        path = Path("/proc/sys", *name.split("."))
        path.write_text(value + "\n")
        got[name] = path.read_text().strip()
    return got


def excused(elapsed: float, stalled: float) -> bool:
    """Whether a /metrics scrape that failed after ``elapsed`` seconds (the client
    gave up), during which the guest stood still ``stalled`` seconds, is the host's
    doing: the guest ran less than ``ANSWER_WITHIN`` of it, so lvsd never had the time
    its goal gives it. A scrape the guest ran for longer is lvsd's failure."""
    return elapsed - stalled < ANSWER_WITHIN
