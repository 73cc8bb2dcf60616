"""The guest context every scenario shares: servers, traffic, lvsd's config, records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lab import faults, traffic
from lab.e2e.settings import CLIENT_TIMEOUT, MODES, RATE, RS, SORRY, VIP, WEIGHT, config_text
from lab.e2e.tools import (
    EXPORTED,
    agrees_with_ipvsadm,
    busy_share,
    cpu_times,
    ipvsadm,
    journal,
    metrics,
    polled,
    sh,
    table_shape,
    wait_for,
)
from lab.faults import FaultServer
from lab.stall import StallMeter
from lab.traffic import Request


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
