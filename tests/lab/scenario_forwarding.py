"""Guest-side driver of tests/lab/test_forwarding_lab.py: every forwarding method under traffic.

Each case builds its own namespaces (a client, a director ``dir``, real servers ``rs1``
and ``rs2`` running ``lab.httpd``), runs ``lvsd run`` in ``dir`` with http checks
(interval 1 s, timeout 0.9 s, fall 2, rise 1), sends a stream of requests through the
VIP from ``client``, kills one real server's HTTP server mid-stream and counts the
requests that failed and over how long, then tears everything down:

* ``dr``, ``dr6``: one L2 segment; the real servers hold the VIP on ``lo``
  (``arp_ignore=1``, ``arp_announce=2`` for IPv4) and answer the client directly;
* ``tun-ipip``, ``tun-gue``: the same segment, the VIP on the real servers' ``tunl0``,
  the director encapsulating (GUE: UDP port 6080, ``ip fou``);
* ``nat6``: the classic NAT director over IPv6;
* ``fwmark``: NAT, one firewall-mark service (iptables marks ports 80 and 8080), real
  servers at port 0 (each packet keeps its port);
* ``persistent``: NAT with ``persistence = 60`` and ``expire_quiescent_template``: one
  client sticks to one real server; when that one dies it moves to the other.

Everything measured goes to ``$LAB_RESULTS/forwarding.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lab.stall import StallMeter
from lab.traffic import launch, load, summarize

RESULTS = Path(os.environ.get("LAB_RESULTS", "/tmp"))
PYTHON = sys.executable
RUN = Path("/run/lvsd-fwd")
INTERVAL, TIMEOUT, FALL = 1.0, 0.9, 2
GUE_PORT = 6080


def sh(*lines: str) -> None:
    for line in lines:
        subprocess.run(line, shell=True, check=True)


def ns(name: str, *lines: str) -> None:
    sh(*(f"ip netns exec {name} sh -c '{line}'" for line in lines))


def ipvsadm(*args: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", "dir", "ipvsadm", "-Ln", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def weights() -> dict[str, int]:
    """Real server (``ADDR:PORT`` as ipvsadm prints it) -> weight, across services."""
    found: dict[str, int] = {}
    for line in ipvsadm().splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "->" and fields[1] != "RemoteAddress:Port":
            found[fields[1]] = int(fields[3])
    return found


def wait_for(predicate: Any, limit: float = 60.0) -> float:
    start = time.monotonic()
    while not predicate(weights()):
        if time.monotonic() - start > limit:
            raise RuntimeError(f"condition not met within {limit} s:\n{ipvsadm()}")
        time.sleep(0.05)
    return time.monotonic() - start


def httpd(name: str, port: int = 80) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", name, PYTHON, "-m", "lab.httpd", name, str(port), "0", "::"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while (
        f":{port} ".encode()
        not in subprocess.run(
            ["ip", "netns", "exec", name, "ss", "-ltn"], capture_output=True, check=False
        ).stdout
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: http server on {port} did not start")
        time.sleep(0.05)
    return proc


# --- topologies -----------------------------------------------------------------------


def host(name: str, bridge: str, master_ns: str | None = None) -> None:
    """Namespace ``name`` with ``eth0`` on ``bridge`` (in ``master_ns`` or the root)."""
    inner = f"ip -n {master_ns} " if master_ns else "ip "
    sh(f"ip netns add {name}")
    if master_ns:
        sh(f"ip -n {master_ns} link add v-{name} type veth peer name eth0 netns {name}")
    else:
        sh(f"ip link add v-{name} type veth peer name eth0 netns {name}")
    sh(
        f"{inner}link set v-{name} master {bridge}",
        f"{inner}link set v-{name} up",
        f"ip -n {name} link set lo up",
        f"ip -n {name} link set eth0 up",
    )
    ns(name, "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.eth0.accept_dad=0")


def segment(vip4: str, vip6: str, how: str) -> None:
    """One L2 segment (bridge ``lan``): client .50, director .10 with the VIPs, real
    servers .21 and .22 holding the VIPs as ``how`` says (``lo`` or ``tunl0``)."""
    sh("ip link add lan type bridge", "ip link set lan up")
    for name, n in (("client", 50), ("dir", 10), ("rs1", 21), ("rs2", 22)):
        host(name, "lan")
        sh(
            f"ip -n {name} addr add 192.168.3.{n}/24 dev eth0",
            f"ip -n {name} addr add fd00:3::{n}/64 dev eth0 nodad",
        )
    # the VIP must not become the source of the director's own connections (the checks):
    # a real server holding it on lo would answer itself. IPv6 picks the newest address,
    # so the VIP is deprecated there (preferred_lft 0): received, never chosen as source.
    sh(
        f"ip -n dir addr add {vip4}/24 dev eth0",
        f"ip -n dir addr add {vip6}/64 dev eth0 nodad preferred_lft 0",
    )
    for rs in ("rs1", "rs2"):
        if how == "lo":
            ns(
                rs,
                "sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2",
                "sysctl -qw net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2",
            )
            sh(f"ip -n {rs} addr add {vip4}/32 dev lo", f"ip -n {rs} addr add {vip6}/128 dev lo")
        else:
            sh(f"ip -n {rs} link set tunl0 up", f"ip -n {rs} addr add {vip4}/32 dev tunl0")
            ns(
                rs,
                "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.tunl0.rp_filter=0",
                "sysctl -qw net.ipv4.conf.eth0.rp_filter=0",
                "sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2",
            )
            if how == "gue":
                sh(f"ip -n {rs} fou add port {GUE_PORT} gue")


def nat(family: int) -> None:
    """The classic NAT director in namespace ``dir``: client side on ``eth0``, real
    servers on bridge ``br0`` with their default route via the director."""
    if family == 4:
        public, vip, client, private, gw, servers = (
            "192.168.3.0/24", "192.168.3.108", "192.168.3.50", "10.0.0.0/24", "10.0.0.1",
            ("10.0.0.2", "10.0.0.3"),
        )  # fmt: skip
        plen, ppriv = 24, 24
    else:
        public, vip, client, private, gw, servers = (
            "fd00:3::/64", "fd00:3::108", "fd00:3::50", "fd00::/64", "fd00::1",
            ("fd00::2", "fd00::3"),
        )  # fmt: skip
        plen, ppriv = 64, 64
    del public
    sh("ip netns add dir", "ip -n dir link set lo up")
    ns("dir", "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1")
    sh(
        "ip netns add client",
        "ip -n dir link add eth0 type veth peer name eth0 netns client",
        "ip -n client link set lo up",
    )
    for name, address in (("dir", vip), ("client", client)):
        ns(name, "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.eth0.accept_dad=0")
        sh(
            f"ip -n {name} addr add {address}/{plen} dev eth0 nodad",
            f"ip -n {name} link set eth0 up",
        )
    sh(f"ip -n client route add {private} via {vip}")
    sh("ip -n dir link add br0 type bridge", f"ip -n dir addr add {gw}/{ppriv} dev br0 nodad")
    sh("ip -n dir link set br0 up")
    for name, address in zip(("rs1", "rs2"), servers, strict=True):
        host(name, "br0", master_ns="dir")
        sh(
            f"ip -n {name} addr add {address}/{ppriv} dev eth0 nodad",
            f"ip -n {name} route add default via {gw}",
        )


def teardown() -> None:
    subprocess.run("ip -all netns delete", shell=True, check=False)
    subprocess.run("ip link del lan", shell=True, check=False, stderr=subprocess.DEVNULL)


# --- cases ----------------------------------------------------------------------------

CONFIG = """
[daemon]
state_dir = "{run}/state"
control_socket = "{run}/control.sock"
metrics_listen = ""
remove_on_stop = true

[defaults.check]
interval = {interval}
timeout = {timeout}
rise = 1
fall = {fall}
"""


def service(name: str, head: str, servers: list[str], port: int, extra: str = "") -> str:
    text = f'\n[services.{name}]\n{head}\nscheduler = "rr"\n{extra}\n'
    text += f'\n[[services.{name}.checks]]\nkind = "http"\npath = "/"\n'
    if port == 0:  # real servers at port 0: the check names its port
        text += "port = 80\n"
    for address in servers:
        text += f'\n[[services.{name}.real_servers]]\naddress = "{address}"\nport = {port}\n'
    return text


#: case -> (topology, services config, VIP URLs for traffic, real server keys as
#: ipvsadm prints them: (rs1, rs2))
V4, V6 = "192.168.3.108", "fd00:3::108"
L2 = ["192.168.3.21", "192.168.3.22"]
L2_6 = ["fd00:3::21", "fd00:3::22"]
NAT4 = ["10.0.0.2", "10.0.0.3"]
NAT6 = ["fd00::2", "fd00::3"]


def case_config(case: str) -> tuple[str, list[str], tuple[str, str]]:
    # DR and tunnels: a dead real server is removed, not quiesced. The director sees
    # only the client's half of each connection, so the entries of SYNs the dead server
    # refused stay "active", and a client reusing such a source port (Linux often picks
    # the same one again after a refused connect) would be sent to it again; removed
    # (with expire_nodest_conn), those entries go.
    gone = 'on_failure = "remove"\n' if case.startswith(("dr", "tun")) else ""
    vip4 = f'{gone}address = "{V4}"\nport = 80\nprotocol = "tcp"'
    vip6 = f'{gone}address = "{V6}"\nport = 80\nprotocol = "tcp"'
    if case == "dr":
        return service("web", vip4 + '\nforward = "dr"', L2, 80), [f"http://{V4}/"], (
            "192.168.3.21:80", "192.168.3.22:80",
        )  # fmt: skip
    if case == "dr6":
        return service("web", vip6 + '\nforward = "dr"', L2_6, 80), [f"http://[{V6}]/"], (
            "[fd00:3::21]:80", "[fd00:3::22]:80",
        )  # fmt: skip
    if case == "tun-ipip":
        head = vip4 + '\nforward = "tun"\ntunnel = "ipip"'
        return service("web", head, L2, 80), [f"http://{V4}/"], (
            "192.168.3.21:80", "192.168.3.22:80",
        )  # fmt: skip
    if case == "tun-gue":
        head = vip4 + f'\nforward = "tun"\ntunnel = "gue"\ntunnel_port = {GUE_PORT}'
        return service("web", head, L2, 80), [f"http://{V4}/"], (
            "192.168.3.21:80", "192.168.3.22:80",
        )  # fmt: skip
    if case == "nat6":
        return service("web", vip6, NAT6, 80), [f"http://[{V6}]/"], (
            "[fd00::2]:80", "[fd00::3]:80",
        )  # fmt: skip
    if case == "fwmark":
        return service("web", 'fwmark = 1\nforward = "nat"', NAT4, 0), [
            f"http://{V4}/", f"http://{V4}:8080/",
        ], ("10.0.0.2:0", "10.0.0.3:0")  # fmt: skip
    if case == "persistent":
        return service("web", vip4, NAT4, 80, "persistence = 60"), [f"http://{V4}/"], (
            "10.0.0.2:80", "10.0.0.3:80",
        )  # fmt: skip
    raise ValueError(case)


def build(case: str) -> None:
    if case in ("dr", "dr6"):
        segment(V4, V6, "lo")
    elif case == "tun-ipip":
        segment(V4, V6, "tunl0")
    elif case == "tun-gue":
        segment(V4, V6, "gue")
    elif case == "nat6":
        nat(6)
    else:
        nat(4)
    if case == "fwmark":
        ns(
            "dir",
            f"iptables-legacy -t mangle -A PREROUTING -d {V4} -p tcp -m multiport"
            " --dports 80,8080 -j MARK --set-mark 1",
        )
    if case == "persistent":
        ns("dir", "sysctl -qw net.ipv4.vs.expire_quiescent_template=1")
    if case.startswith(("dr", "tun")):
        ns("dir", "sysctl -qw net.ipv4.vs.expire_nodest_conn=1")


def traffic(url: str, out: Path, duration: float) -> subprocess.Popen[bytes]:
    return launch(url, out, rate=40, duration=duration, timeout=3)


def run_case(case: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    build(case)
    services, urls, (rs1, rs2) = case_config(case)
    run = RUN / case
    run.mkdir(parents=True, exist_ok=True)
    config = run / "lvsd.toml"
    config.write_text(
        CONFIG.format(run=run, interval=INTERVAL, timeout=TIMEOUT, fall=FALL) + services
    )
    ports = (80, 8080) if case == "fwmark" else (80,)
    servers = {(n, p): httpd(n, p) for n in ("rs1", "rs2") for p in ports}
    log = (RESULTS / f"lvsd-{case}.log").open("w")
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", "dir", PYTHON, "-m", "lvsd", "--log-level", "info", "run",
         "-c", str(config)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # generous: a starved guest has taken over a minute to start Python and lvsd
        out["start_s"] = wait_for(lambda w: w.get(rs1, 0) > 0 and w.get(rs2, 0) > 0, 180.0)
        out["table"] = ipvsadm()
        streams = [traffic(url, RESULTS / f"{case}-{i}.json", 12.0) for i, url in enumerate(urls)]
        time.sleep(3.0)
        with StallMeter() as stalls:
            victim = rs1
            if case == "persistent":  # the one the client sticks to
                out["connections_before"] = ipvsadm("-c")
                out["templates"] = templates()
                if len(out["templates"]) != 1:
                    raise RuntimeError(f"one template expected:\n{out['connections_before']}")
                victim = out["templates"][0]
            name = "rs1" if victim == rs1 else "rs2"
            killed = time.time()
            for (n, _p), proc in servers.items():
                if n == name:
                    proc.kill()
                    proc.wait()
            out["down_s"] = wait_for(lambda w: w.get(victim, 0) == 0)  # quiesced or removed
            out["down_stalled_s"] = stalls.between(killed, time.time())
            out["victim"] = name
            out["down_table"] = ipvsadm()
            if case == "persistent":
                out["connections"] = ipvsadm("-c")
            for proc in streams:
                proc.wait(timeout=120)
        out["killed_at"] = killed
        out["traffic"] = []
        for i in range(len(urls)):
            records = load(RESULTS / f"{case}-{i}.json")
            out["traffic"].append(
                {
                    "url": urls[i],
                    # done before the kill: started a second or more before it
                    "before": summarize(records, before=killed - 1.0),
                    "after": summarize(records, after=killed),
                    # started once the server was out (as ipvsadm showed it), plus 1 s
                    "late": summarize(records, after=killed + out["down_s"] + 1.0),
                }
            )
    finally:
        out["exit_status"] = terminate(daemon)
        out["after_stop_table"] = ipvsadm()
        for proc in servers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        teardown()
    return out


def terminate(daemon: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL after 60 s; the exit status."""
    daemon.send_signal(signal.SIGTERM)
    try:
        return daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.kill()
        return daemon.wait()


def templates() -> list[str]:
    """Real servers of the persistence templates (``ipvsadm -Lnc``: client port 0)."""
    rows = [line.split() for line in ipvsadm("-c").splitlines()]
    return [f[5] for f in rows if len(f) >= 6 and f[0] == "TCP" and f[3].endswith(":0")]


def main() -> int:
    cases = sys.argv[1:] or ["dr", "dr6", "tun-ipip", "tun-gue", "nat6", "fwmark", "persistent"]
    found: dict[str, Any] = {}
    try:
        for case in cases:
            try:
                found[case] = run_case(case)
            except Exception as exc:  # one broken case must not hide the others
                found[case] = {"error": f"{type(exc).__name__}: {exc}"}
                teardown()
    finally:
        (RESULTS / "forwarding.json").write_text(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
