"""End-to-end scenarios: lvsd under systemd in the lab, real traffic, injected faults.

One boot (``SystemdBoot``, NAT topology with the real servers rs1, rs2 and rs3 and a
sorry server in its own namespace) runs ``lvsd.service`` (the repo's unit and the lab
drop-in) and this module's guest driver as the test unit. Each scenario starts a
bounded traffic stream from the client namespace (``lab.traffic``), injects a
fault (``lab.faults``), and records:
the requests sent and failed, the failure window, when lvsd took the server out and put
it back (``ipvsadm -Ln`` sampled), what lvsd logged (journal) and exported
(``/metrics``). Results go to ``$LAB_RESULTS/e2e.json``, one record per scenario.

Host side: ``run_boot(work)`` boots and returns the records; ``report(records)``
renders docs/e2e-results.md; ``main`` (``python -m lab e2e``) does both.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lab import faults, traffic
from lab.faults import FaultServer
from lab.stall import StallMeter
from lab.systemd import LVSD
from lab.traffic import Request
from lvsd.errors import ControlError

VIP = "192.168.3.108"
RS = {"rs1": "10.0.0.2", "rs2": "10.0.0.3", "rs3": "10.0.0.4"}
#: The sorry server: its own namespace and address, after the real servers.
SORRY = ("sorry", "10.0.0.5")
MODES = Path("/run/lab-modes")
#: Check timing of the scenarios: a dead server is out within FALL x INTERVAL + TIMEOUT.
#: Checks every 1 s with a 0.9 s timeout (not 0.5 and 0.4) ride out the guest's stalls
#: on a busy host, which failed the probes of all three real servers at once and put the
#: sorry server in.
INTERVAL = 1.0
TIMEOUT = 0.9
FALL = 2
RISE = 2
SLOW_START = 4.0
WEIGHT = 5
#: The reload scenario's new weights: rs1 gets 2 of every 8 connections (25%), rs2 and
#: rs3 together 6 (75%): rs1 against the rest of the pool is 1:3, the issue's split.
RELOAD_WEIGHTS = (2, 3, 3)
BOUND = FALL * INTERVAL + TIMEOUT
#: Client timeout per request (a request sent to a hanging server fails after it). 3 s,
#: not 2: a busy host stalls the guest for seconds at times, and the client must not
#: count the stall as a failure of the director.
CLIENT_TIMEOUT = 3.0
#: How long a fault scenario keeps its fault, and the sorry scenario every server down.
FAULT_HOLD = 9.0
RATE = 50.0

#: The flapping scenario: MANY real servers (addresses of rs1), every FLAP_EVERY-th flaps.
MANY = 200
FLAP_EVERY = 5
FLAP_SECONDS = 60.0
FLAP_PERIOD = 5.0
#: Their http checks' interval: 50 probes a second. At 2 s (100 a second) lvsd alone
#: used half of the guest's one CPU and the guest was busy 95% of the minute, with no
#: room left for a host running at half speed (a CI machine).
MANY_INTERVAL = 4.0
#: The flapping scenario judges a real server's kernel weight against its reported
#: health only when its last transition is this much older (seconds) than the sample:
#: the batch window, the reconcile and its netlink writes happen within it.
SETTLE = 1.0
#: Pause between two samples of the flapping scenario (a sample itself takes ~0.5 s).
SAMPLE_PAUSE = 0.5
#: The flapping scenario's goal for an answer: within this many seconds of lvsd's own
#: time (``own_time``: not counting the guest's stalls, see ``lab.stall``, nor
#: lvsd's waits for the guest's CPU).
ANSWER_WITHIN = 1.0
#: Runs of the flapping scenario at most: one in which the guest's other processes
#: starved lvsd of the CPU is not judged, and the next one is.
FLAP_ATTEMPTS = 3


def excused(elapsed: float, stalled: float) -> bool:
    """Whether a /metrics scrape that failed after ``elapsed`` seconds (the client
    gave up), during which the guest stood still ``stalled`` seconds, is the host's
    doing: the guest ran less than ``ANSWER_WITHIN`` of it, so lvsd never had the time
    its goal gives it. A scrape the guest ran for longer is lvsd's failure."""
    return elapsed - stalled < ANSWER_WITHIN


CONTROL = "/run/lvsd/control.sock"

SCENARIOS = (
    "kill",
    "hang",
    "status500",
    "link",
    "drain",
    "restart",
    "reload_weights",
    "reload_broken",
    "sorry",
    "watchdog",
)
#: Where the lab's drop-ins of lvsd.service are (inside the guest's overlay).
DROPIN_DIR = "/etc/systemd/system/lvsd.service.d"


def config_text(
    weights: tuple[int, ...] = (WEIGHT,) * len(RS), *, broken: bool = False, sorry: bool = True
) -> str:
    """The scenarios' config: one wrr service on the VIP, http checks, slow start."""
    servers = "".join(
        f'\n[[services.web.real_servers]]\naddress = "{addr}"\nport = 80\nweight = {w}\n'
        for addr, w in zip(RS.values(), weights, strict=True)
    )
    sorry_line = f'sorry_server = {{ address = "{SORRY[1]}", port = 80 }}\n' if sorry else ""
    text = (
        "# lvsd e2e scenarios (written by lab.e2e)\n"
        '[daemon]\nmetrics_listen = "127.0.0.1:9475"\nreconcile_interval = 5.0\n\n'
        '[defaults]\nscheduler = "wrr"\nforward = "nat"\n'
        f"slow_start = {SLOW_START}\n\n"
        f"[defaults.check]\ninterval = {INTERVAL}\ntimeout = {TIMEOUT}\n"
        f"rise = {RISE}\nfall = {FALL}\n\n"
        f'[services.web]\naddress = "{VIP}"\nport = 80\nprotocol = "tcp"\n{sorry_line}\n'
        '[[services.web.checks]]\nkind = "http"\npath = "/"\n' + servers
    )
    if broken:
        text += "\n[services.broken]\naddress = 12\n"
    return text


def many_addresses(n: int = MANY) -> list[str]:
    """10.0.0.2, 10.0.0.3, ... (all on rs1's eth0)."""
    return [f"10.0.{(i + 2) // 256}.{(i + 2) % 256}" for i in range(n)]


def many_config_text(n: int = MANY) -> str:
    """``n`` real servers behind the VIP, http checks every MANY_INTERVAL s."""
    servers = "".join(
        f'\n[[services.web.real_servers]]\naddress = "{a}"\nport = 80\nweight = 1\n'
        for a in many_addresses(n)
    )
    return (
        "# lvsd e2e: many real servers, some flapping (written by lab.e2e)\n"
        '[daemon]\nmetrics_listen = "127.0.0.1:9475"\nreconcile_interval = 5.0\n\n'
        '[defaults]\nscheduler = "wrr"\nforward = "nat"\n\n'
        f"[defaults.check]\ninterval = {MANY_INTERVAL}\ntimeout = 1.0\nrise = 1\nfall = 1\n\n"
        f'[services.web]\naddress = "{VIP}"\nport = 80\nprotocol = "tcp"\n\n'
        '[[services.web.checks]]\nkind = "http"\npath = "/"\n' + servers
    )


# --- guest side ------------------------------------------------------------------------


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


class Guest:
    """The driver inside the guest: servers, traffic, lvsd, records."""

    def __init__(self, work: Path, results: Path) -> None:
        self.work = work
        self.results = results
        self.config = work / "lvsd.toml"
        self.servers = {name: FaultServer(netns=name, name=name, mode_dir=MODES) for name in RS}
        self.servers["sorry"] = FaultServer(netns=SORRY[0], name="sorry", mode_dir=MODES)
        self.records: list[dict[str, Any]] = []
        self.n = 0
        self.cpu = cpu_times()
        self.stalls = StallMeter()
        #: DIRECTOR_SYSCTLS as read back once :meth:`run` set them
        self.sysctls: dict[str, str] = {}

    def write_config(self, text: str) -> None:
        # In place: systemd binds this very file (inode) on /etc/lvsd/lvsd.toml.
        with self.config.open("r+" if self.config.exists() else "w") as f:
            f.seek(0)
            f.write(text)
            f.truncate()
        self.config.chmod(0o644)

    def log(self, *what: object) -> None:
        print(f"[{time.strftime('%H:%M:%S')}]", *what, flush=True)

    def setup(self) -> None:
        for server in self.servers.values():
            faults.start(server, log=self.results / f"{server.name}.log")
        self.write_config(config_text())
        started = time.time()
        sh("systemctl", "start", "lvsd")
        took = round(time.time() - started, 2)
        show = sh(
            "systemctl",
            "show",
            "lvsd",
            "-p",
            "ActiveState,SubState,User,StatusText,"
            "ExecMainStartTimestampMonotonic,ActiveEnterTimestampMonotonic",
        )
        props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
        ready_after = (
            int(props["ActiveEnterTimestampMonotonic"])
            - int(props["ExecMainStartTimestampMonotonic"])
        ) / 1e6
        settled = self.settle()
        self.record(
            "start",
            systemctl_start_s=took,
            main_start_to_active_s=round(ready_after, 2),
            state=f"{props['ActiveState']} ({props['SubState']}) as {props['User']}",
            status_at_ready=props["StatusText"],
            director_sysctls=self.sysctls,
            all_up_after_s=settled,
            polled_agrees_with_ipvsadm=agrees_with_ipvsadm(),
            systemctl_status=sh(
                "systemctl", "status", "lvsd", "--no-pager", "-n", "0", check=False
            ),
            journal=journal(started),
        )

    def all_ok(self) -> None:
        for name in RS:
            faults.set_mode(MODES, name, "ok")

    def all_linked(self) -> None:
        for name in RS:
            faults.link(name, True)

    def settle(self, expected: dict[str, int] | None = None) -> float | None:
        """Wait until the table shows every real server at full weight."""
        want = expected or dict.fromkeys(RS.values(), WEIGHT)
        return wait_for(lambda: all(polled().get(a) == w for a, w in want.items()), 30)

    def traffic(self, duration: float, rate: float = RATE) -> tuple[subprocess.Popen[bytes], Path]:
        """Start the traffic stream; return once it sends (its Python may take seconds
        to start in a busy guest, and a fault injected before would meet no request)."""
        self.n += 1
        out = self.results / f"traffic{self.n}.json"
        ready = out.with_suffix(".ready")
        argv = ["ip", "netns", "exec", "client", sys.executable, "-m", "lab.traffic"]
        argv += [f"http://{VIP}/", "--rate", str(rate), "--duration", str(duration)]
        argv += ["--timeout", str(CLIENT_TIMEOUT), "--concurrency", "100", "--out", str(out)]
        argv += ["--ready", str(ready)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        os.setpriority(os.PRIO_PROCESS, proc.pid, faults.PEER_NICE)
        if wait_for(lambda: ready.exists() or proc.poll() is not None, 60, step=0.05) is None:
            proc.kill()
            raise RuntimeError("the traffic generator did not start within 60 s")
        if not ready.exists():
            raise RuntimeError(f"the traffic generator exited with {proc.returncode}")
        return proc, out

    def finish(self, run: tuple[subprocess.Popen[bytes], Path]) -> list[Request]:
        run[0].wait(timeout=600)
        return traffic.load(run[1])

    def record(self, name: str, **fields: Any) -> None:
        """Keep a scenario's record, with what lvsd exported (``EXPORTED``, unless the
        record has its own ``metrics``) and the share of the guest's CPU that was busy
        since the previous one (near 1.0, the guest was saturated: everything in it,
        client and real servers included, waited for the CPU)."""
        now = cpu_times()
        fields.setdefault("metrics", metrics(*EXPORTED))
        fields["name"] = name
        fields["guest_cpu_busy"] = busy_share(self.cpu, now)
        self.cpu = now
        self.records.append(fields)
        (self.results / "e2e.json").write_text(json.dumps(self.records, indent=1))
        self.log(
            name, json.dumps({k: fields[k] for k in ("summary", "guest_cpu_busy") if k in fields})
        )

    def until_weight(self, addr: str, weight: int, limit: float = 20) -> float | None:
        return wait_for(lambda: polled().get(addr) == weight, limit, step=0.05)

    def ramp(self, addr: str, limit: float = 15) -> list[tuple[float, int]]:
        """Weight samples of ``addr`` until it reaches full weight."""
        start = time.monotonic()
        samples: list[tuple[float, int]] = []
        while time.monotonic() - start < limit:
            w = polled().get(addr, -1)
            if not samples or samples[-1][1] != w:
                samples.append((round(time.monotonic() - start, 2), w))
            if w == WEIGHT:
                break
            time.sleep(0.1)
        return samples

    # --- scenarios ------------------------------------------------------------------

    def fault_cycle(
        self,
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
            fields = self._fault_run(server, inject, restore, extra)
            unseen = (
                bool(seen)
                and fields["stalled_s"] > 0
                and not any(seen in detail for detail in fields["fault_down_details"])
            )
            if not (fields["others_down"] or unseen) or attempt:
                self.record(name, attempts=attempt + 1, **fields)
                break
            self.record(f"{name}.disturbed", **fields)
        self.settle()

    def _fault_run(
        self,
        server: str,
        inject: Callable[[], object],
        restore: Callable[[], object],
        extra: Callable[[], dict[str, Any]] | None,
    ) -> dict[str, Any]:
        addr = RS[server]
        others = [name for name in RS if name != server]
        self.settle()
        since = time.time()
        before = ipvsadm()
        proc = self.traffic(FAULT_HOLD + 9)
        time.sleep(1.5)
        fault_at = time.time()
        inject()
        out_after = self.until_weight(addr, 0)
        out_at = time.time()
        during = ipvsadm()
        more = extra() if extra else {}
        time.sleep(max(0.0, fault_at + FAULT_HOLD - time.time()))
        back_at = time.time()
        restore()
        ramp = self.ramp(addr)
        requests = self.finish(proc)
        return dict(
            server=f"{server} {addr}:80",
            others=others,
            others_down=downs(fault_at, back_at, [RS[o] for o in others]),
            fault_down_details=[d for a, d in down_events(fault_at, back_at) if a == addr],
            bound_s=BOUND,
            out_after_s=out_after,
            # the guest stood still (the host's stall) this long until the server was out
            stalled_s=round(self.stalls.between(fault_at, out_at), 3),
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

    def kill(self) -> None:
        rs = self.servers["rs1"]
        self.fault_cycle(
            "kill",
            "rs1",
            lambda: faults.kill(rs),
            lambda: faults.start(rs, log=self.results / "rs1.log"),
        )

    def hang(self) -> None:
        self.fault_cycle(
            "hang",
            "rs2",
            lambda: faults.set_mode(MODES, "rs2", "hang"),
            lambda: faults.set_mode(MODES, "rs2", "ok"),
        )

    def status500(self) -> None:
        def tcp_connects() -> dict[str, Any]:
            connect = f"socket.create_connection(({RS['rs3']!r}, 80), 2).close()"
            probe = sh(
                sys.executable, "-c", f"import socket; {connect}; print('ok')", check=False
            ).strip()
            return {"tcp_connect_while_out": probe}

        self.fault_cycle(
            "status500",
            "rs3",
            lambda: faults.set_mode(MODES, "rs3", "500"),
            lambda: faults.set_mode(MODES, "rs3", "ok"),
            extra=tcp_connects,
            seen="status 500",
        )

    def link(self) -> None:
        # Not rs1: requests cut by the link keep ESTABLISHED entries in the kernel
        # (ActiveConn) for minutes, which the drain of rs1 would wait for.
        self.fault_cycle(
            "link", "rs2", lambda: faults.link("rs2", False), lambda: faults.link("rs2", True)
        )

    def drain(self) -> None:
        since = time.time()
        rs = self.servers["rs1"]
        proc = self.traffic(12)
        time.sleep(1.5)
        started = time.time()
        dest = f"{RS['rs1']}:80"
        out = sh(LVSD, "drain", "web", dest, "--wait", "--timeout", "30", check=False)
        drained_s = round(time.time() - started, 2)
        during = ipvsadm()
        faults.kill(rs)
        time.sleep(1)
        faults.start(rs, log=self.results / "rs1.log")
        undrain = sh(LVSD, "undrain", "web", dest, check=False)
        ramp = self.ramp(RS["rs1"])
        requests = self.finish(proc)
        self.record(
            "drain",
            server=f"rs1 {dest}",
            drain_output=out.strip(),
            drained_after_s=drained_s,
            undrain_output=undrain.strip(),
            back_ramp=ramp,
            summary=traffic.summarize(requests),
            ipvsadm_during=during,
            ipvsadm_after=ipvsadm(),
            journal=journal(since),
        )
        self.settle()

    def sampler(self, before: list[str]) -> tuple[threading.Event, list[list[str]]]:
        """Read ``ipvsadm -Ln`` every 0.5 s in a thread (so also while ``systemctl``
        blocks) and collect every table shape that differs from ``before``, until the
        returned event is set."""
        done = threading.Event()
        changes: list[list[str]] = []

        def loop() -> None:
            while not done.wait(0.5):
                shape = table_shape(ipvsadm())
                if shape != before and shape not in changes:
                    changes.append(shape)

        threading.Thread(target=loop, daemon=True).start()
        return done, changes

    def restart(self) -> None:
        since = time.time()
        before = table_shape(ipvsadm())
        done, changes = self.sampler(before)
        # one stream of traffic for each of the two, so each runs under traffic however
        # long systemctl takes in a slow guest (restart has taken 12 s, start 10 s)
        proc = self.traffic(16)
        time.sleep(1)
        t0 = time.time()
        sh("systemctl", "restart", "lvsd")
        restart_s = round(time.time() - t0, 2)
        requests = self.finish(proc)
        proc = self.traffic(16)
        time.sleep(1)
        pid = unit_property("MainPID")
        sh("kill", "-9", pid)
        t1 = time.time()
        sh("systemctl", "start", "lvsd")
        start_s = round(time.time() - t1, 2)
        requests += self.finish(proc)
        done.set()
        self.record(
            "restart",
            restart_s=restart_s,
            kill9_start_s=start_s,
            table_changes=changes,
            write_ops=[line for line in journal(since, limit=200) if "kernel.op" in line],
            summary=traffic.summarize(requests),
            ipvsadm_after=ipvsadm(),
            journal=journal(since, limit=24),
            nrestarts=unit_property("NRestarts"),
        )

    def reload_weights(self) -> None:
        """The reload happens under traffic (every request counts for ``failed``); the
        split is measured over the requests sent once the new weights are in: rs1
        against rs2 and rs3 together (RELOAD_WEIGHTS: 1:3), and per server. A run in
        which lvsd took a real server out meanwhile (its probes timed out in a guest
        starved by the host) judges nothing about the split: it is recorded as
        ``reload_weights.disturbed`` and runs once more."""
        for attempt in range(2):
            fields = self._reload_weights_run()
            if not fields["downs"] or attempt:
                self.record("reload_weights", attempts=attempt + 1, **fields)
                break
            self.record("reload_weights.disturbed", **fields)

    def _reload_weights_run(self) -> dict[str, Any]:
        since = time.time()
        proc = self.traffic(34, rate=80)  # 2,000 requests after even a slow reload
        time.sleep(1)
        self.write_config(config_text(RELOAD_WEIGHTS))
        sh("systemctl", "reload", "lvsd")
        want = dict(zip(RS.values(), RELOAD_WEIGHTS, strict=True))
        took = wait_for(lambda: polled() == want, 20, step=0.05)
        applied_at = time.time()  # the new weights are in the kernel
        requests = self.finish(proc)
        summary = traffic.summarize(requests)
        split = traffic.summarize(requests, after=applied_at)
        ok = max(1, split["sent"] - split["failed"])
        shares = {k: round(100 * v / ok, 1) for k, v in split["servers"].items()}
        rest = sum(v for k, v in split["servers"].items() if k != "rs1")
        fields = {
            "weights": dict(zip(RS, RELOAD_WEIGHTS, strict=True)),
            "applied_after_s": took,
            "split_requests": split["sent"],
            "split_percent": {
                "rs1": round(100 * split["servers"].get("rs1", 0) / ok, 1),
                "rs2+rs3": round(100 * rest / ok, 1),
            },
            "shares_percent": shares,
            "downs": down_events(since, time.time()),
            "summary": summary,
            "ipvsadm_after": ipvsadm(),
            "journal": journal(since),
            "metrics": metrics("lvsd_config"),
        }
        self.write_config(config_text())
        sh("systemctl", "reload", "lvsd")
        self.settle()
        return fields

    def reload_broken(self) -> None:
        since = time.time()
        before = table_shape(ipvsadm())
        proc = self.traffic(8)
        time.sleep(1)
        self.write_config(config_text(broken=True))
        sh("systemctl", "reload", "lvsd")  # sends SIGHUP and returns
        wait_for(
            lambda: (
                "lvsd_config_last_reload_successful 0.0"
                in metrics("lvsd_config_last_reload_successful")
            ),
            30,
        )
        during = metrics("lvsd_config")
        active = sh("systemctl", "is-active", "lvsd", check=False).strip()
        requests = self.finish(proc)
        after = table_shape(ipvsadm())
        self.write_config(config_text())
        sh("systemctl", "reload", "lvsd")
        time.sleep(2)
        self.record(
            "reload_broken",
            table_unchanged=before == after,
            still_active=active,
            metrics=during,
            metrics_after_fix=metrics("lvsd_config"),
            summary=traffic.summarize(requests),
            journal=journal(since),
        )

    def sorry(self) -> None:
        """The real servers fail one after the other (500): the sorry server stays out
        while one is up, goes in once the last is out; rs1 recovers: it leaves."""
        since = time.time()
        proc = self.traffic(FAULT_HOLD + 20)
        time.sleep(1)
        *first, last = RS
        out_after: dict[str, float | None] = {}
        sorry_while_some_up: dict[str, int | None] = {}
        for name in first:
            faults.set_mode(MODES, name, "500")
            out_after[name] = self.until_weight(RS[name], 0)
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
        requests = self.finish(proc)
        self.all_ok()
        self.record(
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
        self.settle()

    def watchdog(self) -> None:
        """lvsd's loop wedged (SIGSTOP): systemd's watchdog (WatchdogSec=4s in a drop-in)
        kills and restarts it; the kernel table serves throughout and is adopted."""
        Path(DROPIN_DIR, "watchdog.conf").write_text(
            "[Unit]\nStartLimitIntervalSec=0\n[Service]\nWatchdogSec=4s\n"
        )
        sh("systemctl", "daemon-reload")
        sh("systemctl", "restart", "lvsd")
        self.settle()
        before = table_shape(ipvsadm())
        restarts = int(unit_property("NRestarts"))
        pid = unit_property("MainPID")
        proc = self.traffic(25)
        time.sleep(1)
        since = time.time()
        sh("kill", "-STOP", pid)
        back = wait_for(
            lambda: (
                int(unit_property("NRestarts")) > restarts
                and unit_property("MainPID") not in ("0", pid)
                and unit_property("ActiveState") == "active"
            ),
            90,
            step=0.5,
        )
        requests = self.finish(proc)
        self.record(
            "watchdog",
            stopped_pid=pid,
            restarted_after_s=back,
            nrestarts=int(unit_property("NRestarts")) - restarts,
            table_unchanged=before == table_shape(ipvsadm()),
            summary=traffic.summarize(requests),
            ipvsadm_after=ipvsadm(),
            journal=journal(since, limit=40),
        )

    def flap200(self) -> None:
        """MANY real servers (addresses of rs1, one fault server answering each with
        its address); every FLAP_EVERY-th flaps (500 / ok every FLAP_PERIOD s) for
        FLAP_SECONDS. Every sample (about one a second): the status over the control
        socket, ``ipvsadm -Ln``, the status again (``health_vs_kernel`` judges every
        real server whose state held across the sample and SETTLE before it), then a
        /metrics scrape; both answers timed. A run in which lvsd waited a whole
        ANSWER_WITHIN for the guest's CPU during one answer (the real servers and the
        client, which stand for other machines, starved it) judges nothing: it is kept
        as ``flap200.disturbed`` and the scenario runs again, up to FLAP_ATTEMPTS runs
        in all (the last is judged, starved or not)."""
        addrs = many_addresses()
        batch = "".join(f"addr add {a}/24 dev eth0\n" for a in addrs[1:])
        subprocess.run(["ip", "-n", "rs1", "-batch", "-"], input=batch, text=True, check=True)
        server = FaultServer(netns="rs1", name="@addr", mode_dir=MODES)
        faults.start(server, log=self.results / "many.log")
        self.write_config(many_config_text())
        for attempt in range(FLAP_ATTEMPTS):
            fields = self._flap_run(server, addrs)
            last = attempt == FLAP_ATTEMPTS - 1
            if not last and fields["lvsd_cpu_wait_ms_max"] >= ANSWER_WITHIN * 1000:
                self.record("flap200.disturbed", **fields)
                sh("systemctl", "stop", "lvsd")
                continue
            self.record("flap200", attempts=attempt + 1, **fields)
            return

    def _flap_run(self, server: FaultServer, addrs: list[str]) -> dict[str, Any]:
        """One run of ``flap200``, from ``systemctl start lvsd``: its record's fields."""
        from lvsd import control

        t0 = time.time()
        sh("systemctl", "start", "lvsd")
        ready_s = round(time.time() - t0, 2)
        all_up = wait_for(lambda: sum(1 for w in polled().values() if w == 1) == MANY, 90)
        flappers = addrs[::FLAP_EVERY]
        status_ms: list[float] = []
        metrics_ms: list[float] = []
        # each answer's time that was lvsd's own (``own_time``)
        status_ran_ms: list[float] = []
        metrics_ran_ms: list[float] = []
        metrics_errors: list[str] = []
        metrics_stalled: list[float] = []  # seconds the guest stood still, per scrape
        unexcused: list[str] = []
        status_errors: list[str] = []
        status_unexcused: list[str] = []  # as ``unexcused``, for status
        counts: dict[str, int] = {}
        mismatches: list[dict[str, Any]] = []
        samples = 0

        pid = unit_property("MainPID")
        waits: list[float] = []  # seconds lvsd waited for the CPU, per answer

        def status() -> dict[str, Any]:
            """The status report; {} (nothing judged) when lvsd did not answer."""
            t, wall, delay = time.monotonic(), time.time(), run_delay(pid)
            answer: dict[str, Any] = {}
            failed = ""
            try:
                answer = control.request_sync(CONTROL, {"command": "status"}, timeout=10)
            except ControlError as exc:
                failed = str(exc)
            elapsed = time.monotonic() - t
            status_ms.append(round(elapsed * 1000, 1))
            waits.append(run_delay(pid) - delay)
            ran = own_time(elapsed, self.stalls.between(wall, time.time()), waits[-1])
            status_ran_ms.append(round(ran * 1000, 1))
            if failed:
                status_errors.append(failed)
                if ran >= ANSWER_WITHIN:
                    status_unexcused.append(failed)
            report: dict[str, Any] = answer.get("status", {})
            return report

        start = time.monotonic()
        phase = -1
        proc = self.traffic(FLAP_SECONDS, rate=20)
        # Who used the guest's CPU during the flapping minute.
        pids = {"lvsd": pid, "real_servers": server.pidfile().read_text()}
        cpu_before = {name: process_cpu(pid) for name, pid in pids.items()}
        cpu_before["driver"] = time.process_time()
        while time.monotonic() - start < FLAP_SECONDS:
            now_phase = int((time.monotonic() - start) / FLAP_PERIOD)
            if now_phase != phase:
                phase = now_phase
                for a in flappers:
                    faults.set_mode(MODES, a, "500" if phase % 2 == 0 else "ok")
            # The health as reported, the kernel table (ipvsadm), the health again.
            t = time.monotonic()
            first = status()
            table = kernel_table(ipvsadm())
            second = status()
            got, bad = health_vs_kernel(first, table, second, elapsed=time.monotonic() - t)
            for key, n in got.items():
                counts[key] = counts.get(key, 0) + n
            mismatches += bad
            samples += 1
            t, wall, delay = time.monotonic(), time.time(), run_delay(pid)
            lines = metrics("lvsd_service_real_servers_up")
            elapsed = time.monotonic() - t
            stalled = self.stalls.between(wall, time.time())
            waits.append(run_delay(pid) - delay)
            if lines and lines[0].startswith("# /metrics unavailable"):
                metrics_errors.append(lines[0])
                if not excused(elapsed, max(stalled, waits[-1])):
                    unexcused.append(lines[0])
            metrics_ms.append(round(elapsed * 1000, 1))
            metrics_ran_ms.append(round(own_time(elapsed, stalled, waits[-1]) * 1000, 1))
            metrics_stalled.append(round(stalled, 2))
            time.sleep(SAMPLE_PAUSE)
        cpu_s = {name: round(process_cpu(pid) - cpu_before[name], 1) for name, pid in pids.items()}
        cpu_s["driver"] = round(time.process_time() - cpu_before["driver"], 1)
        cpu_s["minute"] = round(time.monotonic() - start, 1)
        for a in flappers:
            faults.set_mode(MODES, a, "ok")
        requests = self.finish(proc)
        settled = wait_for(lambda: sum(1 for w in polled().values() if w == 1) == MANY, 30)
        final = control.request_sync(CONTROL, {"command": "status"}, timeout=10)
        kernel = weights(ipvsadm())
        final_servers = [
            rs for svc in final.get("status", {}).get("services", []) for rs in svc["real_servers"]
        ]
        final_mismatch = [
            rs["address"]
            for rs in final_servers
            if (kernel.get(rs["address"]) == 1) != bool(rs["up"])
        ]
        return {
            "real_servers": MANY,
            "flapping": len(flappers),
            "lvsd_active_after_s": ready_s,
            "all_up_after_s": all_up,
            "samples": samples,
            "cpu_s": cpu_s,
            "settle_s": SETTLE,
            "health_compared": counts.get("compared", 0),
            "health_compared_up": counts.get("compared_up", 0),
            "health_compared_down": counts.get("compared_down", 0),
            "health_skipped_settling": counts.get("skipped", 0),
            "health_mismatches": len(mismatches),
            "health_mismatch_examples": mismatches[:10],
            "status_answers": len(status_ms),
            "status_ms_max": max(status_ms, default=0.0),
            "status_ms_median": sorted(status_ms)[len(status_ms) // 2] if status_ms else 0.0,
            "status_over_1s": sum(1 for ms in status_ms if ms >= 1000),
            "status_errors": sorted(set(status_errors)),
            "status_errors_unexcused": sorted(set(status_unexcused)),
            "status_ran_ms_median": sorted(status_ran_ms)[len(status_ran_ms) // 2]
            if status_ran_ms
            else 0.0,
            # answers that took ANSWER_WITHIN or more of lvsd's own time (``own_time``)
            "status_late": sum(1 for ms in status_ran_ms if ms >= ANSWER_WITHIN * 1000),
            "status_ran_ms_max": max(status_ran_ms, default=0.0),
            "metrics_scrapes": len(metrics_ms),
            "metrics_over_1s": sum(1 for ms in metrics_ms if ms >= 1000),
            "metrics_late": sum(1 for ms in metrics_ran_ms if ms >= ANSWER_WITHIN * 1000),
            "metrics_ran_ms_max": max(metrics_ran_ms, default=0.0),
            "metrics_ran_ms_median": sorted(metrics_ran_ms)[len(metrics_ran_ms) // 2]
            if metrics_ran_ms
            else 0.0,
            "lvsd_cpu_wait_ms_max": round(max(waits, default=0.0) * 1000, 1),
            "metrics_ok": not metrics_errors,
            "metrics_errors": sorted(set(metrics_errors)),
            # errors of scrapes the guest ran for ANSWER_WITHIN or more (lvsd's own)
            "metrics_errors_unexcused": sorted(set(unexcused)),
            "metrics_guest_stalled_s_max": max(metrics_stalled, default=0.0),
            "metrics_ms_max": max(metrics_ms, default=0.0),
            # dumps and applies of a second or more, and how long each waited for a dump
            "slow_kernel_calls": [
                {k: e.get(k) for k in ("timestamp", "call", "seconds", "waited", "ops")}
                for e in events(time.time() - FLAP_SECONDS - 30, time.time(), "kernel.slow")
            ],
            "metrics_ms_median": sorted(metrics_ms)[len(metrics_ms) // 2] if metrics_ms else 0.0,
            "settled_after_s": settled,
            "final_reported": len(final_servers),
            "final_up": sum(1 for rs in final_servers if rs["up"]),
            "final_health_mismatch": final_mismatch,
            "summary": traffic.summarize(requests),
            "journal": journal(time.time() - FLAP_SECONDS - 30, limit=8),
            "metrics": metrics(*EXPORTED_MANY),
        }

    def run(self, names: Sequence[str]) -> int:
        self.sysctls = tune_director()
        if list(names) == ["flap200"]:
            try:
                self.flap200()
            except Exception as exc:  # recorded for the host
                self.record(
                    "flap200",
                    error=f"{type(exc).__name__}: {exc}",
                    journal=journal(0, limit=60, last=True),
                    metrics=metrics(*EXPORTED_MANY),
                    unit=sh("systemctl", "status", "lvsd", "--no-pager", "-n", "0", check=False),
                )
                return 1
            return 0
        self.setup()
        failed = 0
        for name in names:
            self.log("scenario", name)
            try:
                getattr(self, name)()
            except Exception as exc:  # recorded; the next scenario runs
                failed += 1
                self.record(name, error=f"{type(exc).__name__}: {exc}")
                self.all_ok()
                with contextlib.suppress(Exception):
                    self.all_linked()
                    sh("systemctl", "start", "lvsd")
                    self.settle()
        return 1 if failed else 0


def guest_main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lab.e2e guest")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("names", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args(argv)
    guest = Guest(args.work, args.results)
    with guest.stalls:
        return guest.run(args.names)


# --- host side -------------------------------------------------------------------------


def run_boot(work: Path, names: Sequence[str] = SCENARIOS, *, stream: Any = None) -> Any:
    """Boot once in ``work`` and run ``names``; the LabResult."""
    from lab import harness, systemd
    from lab.topology import NatTopology

    many = list(names) == ["flap200"]
    config = work / "lvsd.toml"
    config.write_text(many_config_text() if many else config_text())
    config.chmod(0o644)
    scenario = harness.Scenario(
        shell=f'"$LAB_PYTHON" -m lab.e2e guest --work "$LAB_WORK" '
        f'--results "$LAB_RESULTS" {" ".join(names)}\n'
    )
    boot = systemd.SystemdBoot(units=systemd.lvsd_units(config), timeout=900)
    if many:
        topology = NatTopology(real_servers=1)
    else:
        topology = NatTopology(real_servers=len(RS), extra=(SORRY[0],))
    return harness.run(work, scenario, topology=topology, boot=boot, stream=stream)


#: What each scenario shows and what its figures should be (printed in the report).
NOTES = {
    "start": "`systemctl start lvsd` with the shipped unit and the lab drop-in: active only "
    "after READY=1 (main process start to active), the STATUS line in `systemctl status`.",
    "kill": f"rs1's server killed (SIGKILL), restarted {FAULT_HOLD:.0f} s later. Requests "
    "fail (refused, or "
    f"cut when in flight) only until lvsd sets weight 0 (`out_after_s`, bound {BOUND:.1f} s); "
    "none after (`after_settled`, served by the `others`); after the restart the slow-start "
    f"ramp 1..{WEIGHT} (`back_ramp`: seconds, weight) and no failure (`after_restore`).",
    "hang": "rs2 accepts and never answers: out after the probe timeouts; the requests "
    f"scheduled to it before then fail by the client's {CLIENT_TIMEOUT:.0f} s timeout (hence "
    "the window); rs1 "
    "and rs3 serve the rest.",
    "status500": "rs3 answers 500: out by the http check while a TCP connect to it still "
    "succeeds (`tcp_connect_while_out`); rs1 and rs2 serve the rest.",
    "link": f"the director's veth end of rs2 down, up {FAULT_HOLD:.0f} s later: out like a "
    "hang (packets "
    "vanish), back with the ramp; rs1 and rs3 serve the rest. The requests cut by the link "
    "stay in `ipvsadm -Ln`'s ActiveConn of rs2 (the kernel's ESTABLISHED timeout).",
    "drain": f"`lvsd drain web {RS['rs1']}:80 --wait` under traffic, then rs1 killed and "
    "restarted, `lvsd undrain`: zero failed requests.",
    "restart": "`systemctl restart lvsd`, then `kill -9` of its main process and "
    "`systemctl start`, under traffic: zero failed requests, `ipvsadm -Ln` (without "
    "counters, sampled every 0.5 s in a thread, so also while systemctl runs) never "
    "changed (`table_changes`), and no kernel write in the journal (`write_ops`).",
    "reload_weights": "config rewritten from 5:5:5 to weights rs1:rs2:rs3 = "
    f"{':'.join(map(str, RELOAD_WEIGHTS))}, i.e. rs1 against the rest of the pool 1:3 "
    "(25/75), and `systemctl reload lvsd` under 80 requests/s: zero failures across the "
    "reload, and the split over the `split_requests` sent once the new weights were in: "
    "`split_percent` (rs1 against rs2+rs3, the issue's 25/75) and `shares_percent` per "
    "server (rs2 and rs3 37.5 each). A run in which a real server went down meanwhile "
    "(`downs`) is kept as `reload_weights.disturbed` and runs once more.",
    "reload_broken": "a reload with a broken config: lvsd stays active, the table is "
    "unchanged, zero failures, `lvsd_config_last_reload_successful 0` until a good reload.",
    "sorry": "rs1, rs2, then rs3 answer 500, one after the other: the sorry server "
    "(its own namespace) stays out while one real server is up "
    "(`sorry_weight_while_some_up`: its weight in `ipvsadm -Ln` once rs1, then rs2 was "
    "out; None = absent; `before_last_down` answered by no sorry server), goes in once "
    "rs3 is out too (`all_down`: answered by it, zero failures once it is in); rs1 "
    "recovers: traffic returns to it (`one_back`); the sorry server drops to weight 0 "
    "and is deleted once its connections have ended (`sorry_out_after_s`), so the "
    "requests it was answering finish (`switch_back`: zero failures; when lvsd deleted "
    "it at once, one such request in four runs was lost). Failures happen only while the "
    "servers go down (`before_last_down`).",
    "watchdog": "lvsd's main process stopped with SIGSTOP (a wedged loop) under traffic, "
    "with `WatchdogSec=4s`: systemd's watchdog kills it and `Restart=on-failure` starts it "
    "again (`restarted_after_s`), the table unchanged and serving throughout.",
    "flap200": f"200 real servers (addresses of rs1; http checks every {MANY_INTERVAL:.0f} s, "
    f"rise 1, fall 1), 40 of them answering 500 / 200 in turn every {FLAP_PERIOD:.0f} s for "
    "60 s, 20 requests/s; `cpu_s`: CPU seconds used in that minute. Each sample "
    "(`samples`, about one a second) asks for the status over the control socket, reads "
    "`ipvsadm -Ln`, asks for the status again, then scrapes /metrics (both answers timed; "
    "`status_late` and `metrics_late` count those that took 1 s or more of lvsd's own "
    "time, `_ran_ms_max` the longest such time: the goal is none. lvsd's own time is the "
    "answer's less the longer of the time the whole guest stood still and the time lvsd "
    "waited for the guest's CPU, `lvsd_cpu_wait_ms_max` the longest such wait; a run in "
    "which lvsd waited a whole second for the CPU during one answer, starved by the real "
    "servers and the client, which run at a higher priority, is kept as "
    f"`flap200.disturbed` and runs again, up to {FLAP_ATTEMPTS} runs). "
    "Every real server whose state and effective weight are the same in both reports and "
    f"whose last transition is older than the sample plus {SETTLE:.0f} s (`settle_s`: the "
    "batch window, the reconcile and its netlink writes) is judged: its kernel weight must "
    "be its effective weight when up, 0 when down (quiesce). `health_compared` such "
    "judgements (`_up`, `_down`), `health_mismatches` of them wrong, "
    "`health_skipped_settling` servers in or just after a transition. At the end every "
    "server is up in both. Requests fail while a flapping server answers 500 before it is "
    "detected, over the whole minute. The requests go mostly to the last-added servers "
    "(10.0.0.201, .200, ...): the kernel's wrr starts again from the head of its list "
    "(the newest destination) whenever a destination changes, and here one changes "
    "several times a second.",
}


def report(records: Sequence[dict[str, Any]], *, duration: float | None = None) -> str:
    """docs/e2e-results.md: a table per scenario."""
    lines = [
        "# End-to-end results",
        "",
        "Written by `.venv/bin/python -m lab e2e` (lab/e2e.py): lvsd under systemd",
        "in the lab (user-mode Linux 6.1, one CPU, every syscall trapped: latencies are the",
        f"guest's, far above a real host's), NAT director (VIP {VIP}:80, wrr), real servers",
        ", ".join(f"{name} {addr}" for name, addr in RS.items())
        + f" (weight {WEIGHT} each), sorry server {SORRY[1]} in its own",
        f'namespace `{SORRY[0]}`. The reload "to 1:3" sets rs1:rs2:rs3 = '
        + ":".join(map(str, RELOAD_WEIGHTS))
        + ": rs1 gets 25% and",
        "rs2 and rs3 together 75% (37.5% each), rs1 against the rest of the pool 1:3.",
        f"Http checks every {INTERVAL} s, timeout {TIMEOUT} s, rise {RISE}, fall {FALL} (a dead",
        f"server is out within fall x interval + timeout = {BOUND:.1f} s), slow start",
        f"{SLOW_START:.0f} s. Traffic: {RATE:.0f} requests/s over fresh connections from the",
        f"client namespace, client timeout {CLIENT_TIMEOUT} s. The director sets "
        + ", ".join(f"`{k} = {v}`" for k, v in DIRECTOR_SYSCTLS.items())
        + " (docs/operations.md). The flapping scenario's last",
        "column: samples taken, real servers judged (kernel weight against reported health),",
        "and how many of those judgements did not match. A fault run in which lvsd also",
        "took one of the other real servers out (their probes timed out too: the host",
        "starved the guest), or in which the guest stood still and the check that took the",
        "server out never saw the fault (it timed out before the 500 came), judges nothing",
        "about the fault: it is kept as `NAME.disturbed` and the scenario runs once more",
        "(`attempts`).",
    ]
    if duration is not None:
        lines += ["", f"Both boots (all scenarios) took {duration:.0f} s."]
    lines += [
        "",
        "| scenario | requests sent | failed | failure window (ms) | out after (s) "
        "| kernel vs health: samples / judged / mismatched |",
        "|---|---|---|---|---|---|",
    ]
    for rec in records:
        summary = rec.get("summary")
        if not isinstance(summary, dict):
            continue
        out_after = rec.get("out_after_s", "-")
        figures = [summary.get(k, "-") for k in ("sent", "failed", "failure_window_ms")]
        health = "-"
        if "health_compared" in rec:
            health = f"{rec['samples']} / {rec['health_compared']} / {rec['health_mismatches']}"
        cells = [*figures, out_after, health]
        lines.append(f"| {rec['name']} | " + " | ".join(map(str, cells)) + " |")
    for rec in records:
        lines += ["", f"## {rec['name']}", ""]
        if rec["name"] in NOTES:
            lines += [NOTES[rec["name"]], ""]
        lines += ["| figure | value |", "|---|---|"]
        for key, value in rec.items():
            if key in ("name",) or _is_block(key, value):
                continue
            lines.append(f"| {key} | {_cell(value)} |")
        for key in [k for k, v in rec.items() if _is_block(k, v)]:
            value = rec[key]
            body = value if isinstance(value, str) else "\n".join(map(str, value))
            lines += ["", f"{key}:", "", "```", body.rstrip() or "(none)", "```"]
    return "\n".join(lines) + "\n"


BLOCKS = ("ipvsadm", "journal", "metrics", "systemctl_status")


def _is_block(key: str, value: Any) -> bool:
    return key.startswith(BLOCKS) and isinstance(value, (str, list))


def _cell(value: Any) -> str:
    if isinstance(value, dict) and len(value) > 12:
        return f"{len(value)} entries, {sum(value.values())} in all"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return " ".join(_cell(v) for v in value) or "-"
    if isinstance(value, tuple):
        return "(" + ", ".join(_cell(v) for v in value) + ")"
    return str(value).replace("|", "/").replace("\n", " ")


def main(out: Path | None = None, keep: Path | None = None) -> int:
    """Boot twice (every scenario; then the 200-server flapping), write ``out``
    (docs/e2e-results.md by default); 0 when both boots ran every scenario."""
    import tempfile

    from lab.harness import REPO

    out = out or REPO / "docs" / "e2e-results.md"
    records: list[dict[str, Any]] = []
    duration = 0.0
    status = 0
    with tempfile.TemporaryDirectory(prefix="lvsd-e2e-") as tmp:
        base = keep or Path(tmp)
        for folder, names in (("main", SCENARIOS), ("flap", ("flap200",))):
            work = base / folder
            work.mkdir(parents=True, exist_ok=True)
            result = run_boot(work, names, stream=sys.stdout)
            duration += result.duration
            status = status or int(result.exit_status)
            path = result.results / "e2e.json"
            records += json.loads(path.read_text()) if path.exists() else []
    out.write_text(report(records, duration=duration))
    print(f"lvsd e2e: exit status {status}; wrote {out}")
    return status


if __name__ == "__main__":
    if sys.argv[1:2] == ["guest"]:
        raise SystemExit(guest_main(sys.argv[2:]))
    raise SystemExit(main())

__all__ = [
    "RELOAD_WEIGHTS",
    "RS",
    "SCENARIOS",
    "SORRY",
    "Guest",
    "config_text",
    "expected_weight",
    "health_vs_kernel",
    "kernel_table",
    "main",
    "report",
    "run_boot",
    "table_shape",
]
