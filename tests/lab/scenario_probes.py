"""Guest-side driver of tests/lab/test_probes_lab.py: every probe kind against real
servers in their own namespaces, each taken out and back.

One NAT director ``dir`` (client side ``192.168.3.108``, real servers on bridge ``br0``,
``10.0.0.1/24``) runs one ``lvsd run`` with a service per kind (interval 1 s, timeout
0.9 s, fall 3, rise 1; icmp and udp, whose failures are timeouts, 0.5 s, so a failing
run ends before the next is due; exec and https every 2 s within 1.5 s: a process,
or a TLS handshake, is slow in the guest); a namespace ``rs-KIND`` per kind holds its
real servers, served by one ``lab.protocols`` process (``setns`` per listener). The
kinds:

* ``tcp``, ``https``: HTTP (over TLS for https) on two real servers, the first one
  (the victim) taken out by closing its listener, under traffic. https verifies a
  chain (root CA -> intermediate -> leaf naming the real server's IP, made here with
  the openssl CLI in tmpfs); two more https real servers, one self-signed and one
  signed by another CA, must stay down with reason ``tls``;
* ``agent``, ``exec``: HTTP on two real servers under traffic, the victim's weight set
  by its agent (``50%``, ``drain``, ``down``, ``up``) or by its weight server, whose
  number an exec check (bash ``/dev/tcp``) turns into its exit code (dynamic weight:
  12 -> 10, 7 -> 5, 1 -> down);
* ``dns``, ``smtp``, ``udp``, ``imap``, ``pop3``, ``ftp``, ``mysql``, ``pgsql``, ``ldap``,
  ``sip``, ``radius``: one real server each, taken out by a broken answer (SERVFAIL, a
  554 banner, a wrong reply, ``* BYE``, ``-ERR``, 421, a MySQL error packet, a
  PostgreSQL ErrorResponse, LDAP result 53, SIP 503, Access-Reject);
* ``icmp``: one real server, taken out with ``net.ipv4.icmp_echo_ignore_all=1`` in its
  namespace (the director's ``net.ipv4.ping_group_range`` lets lvsd's ping sockets in).

Steps, each for every kind at once, timed with ``ipvsadm -Ln`` in ``dir``: ``weight``
(agent 50 %, exec weight 5), ``out``, ``down`` (the drained agent now says down),
``back``. Everything measured goes to ``$LAB_RESULTS/probes.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.protocols import RADIUS_SECRET, Control
from lab.stall import StallMeter
from lab.traffic import launch, load, summarize
from lvsd.control import request_sync
from tests.lab.scenario_forwarding import ipvsadm, ns, terminate, weights

RESULTS = Path(os.environ.get("LAB_RESULTS", "/tmp"))
PYTHON = sys.executable
RUN = Path("/run/lvsd-probes")
PKI = RUN / "pki"
CONTROL = RUN / "protocols.sock"
INTERVAL, TIMEOUT, FALL, RISE = 1.0, 0.9, 3, 1
WEIGHT = 10
VIP = "192.168.3.108"
#: Seconds between readings of ipvsadm (each one a process: not free in the guest).
POLL = 0.3
#: What a step waits for: a predicate on the kernel's weights (``ADDRESS:PORT`` -> weight).
Goal = Callable[[dict[str, int]], bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class Kind:
    """One probe kind's service: its real servers (the victim first), the servers
    that answer for them (``lab.protocols`` specs by name), its check."""

    name: str
    protocol: str
    vport: int
    rport: int
    addresses: tuple[str, ...]
    servers: tuple[str, ...]  # lab.protocols KIND@... without the name, per address
    check: str  # TOML lines of the check table (without kind)
    url: str = ""  # traffic through the VIP, if this kind carries any
    bad: tuple[str, ...] = ()  # https real servers that must never come up
    interval: float = INTERVAL
    timeout: float = TIMEOUT

    @property
    def victim(self) -> str:
        return f"{self.addresses[0]}:{self.rport}"

    @property
    def partner(self) -> str | None:
        return f"{self.addresses[1]}:{self.rport}" if len(self.addresses) > 1 else None


def _single(
    name: str, number: int, protocol: str, port: int, check: str = "", timeout: float = TIMEOUT
) -> Kind:
    server = "" if name == "icmp" else f"{name}@rs-{name}/10.0.0.{number}:{port}"
    return Kind(
        name=name,
        protocol=protocol,
        vport=port,
        rport=port,
        addresses=(f"10.0.0.{number}",),
        servers=(server,) if server else (),
        check=check,
        timeout=timeout,
    )


def _pki_spec(number: int) -> str:
    return f",cert={PKI}/{number}.chain,key={PKI}/{number}.key"


HTTPS_CHECK = f'ca_file = "{PKI}/root.pem"\npath = "/"'
EXEC_CHECK = (
    'command = ["/bin/bash", "-c", '
    '\'exec 3<>/dev/tcp/$0/$1 && read -r code <&3 && exit $code\', "{rip}", "{rport}"]\n'
    "dynamic = true\nport = 8042"
)
KINDS = (
    Kind(
        name="tcp", protocol="tcp", vport=80, rport=80, addresses=("10.0.0.11", "10.0.0.12"),
        servers=("http@rs-tcp/10.0.0.11:80", "http@rs-tcp/10.0.0.12:80"), check="",
        url=f"http://{VIP}:80/",
    ),
    Kind(
        name="https", protocol="tcp", vport=443, rport=443,
        addresses=("10.0.0.21", "10.0.0.22", "10.0.0.23", "10.0.0.24"),
        servers=tuple(f"https@rs-https/10.0.0.{n}:443{_pki_spec(n)}" for n in (21, 22, 23, 24)),
        check=HTTPS_CHECK, url=f"https://{VIP}:443/", bad=("10.0.0.23:443", "10.0.0.24:443"),
        interval=2.0, timeout=1.5,
    ),
    Kind(
        name="agent", protocol="tcp", vport=81, rport=80, addresses=("10.0.0.31", "10.0.0.32"),
        servers=("http@rs-agent/10.0.0.31:80", "http@rs-agent/10.0.0.32:80",
                 "agent@rs-agent/10.0.0.31:9999", "agent@rs-agent/10.0.0.32:9999"),
        check="port = 9999", url=f"http://{VIP}:81/",
    ),
    Kind(
        name="exec", protocol="tcp", vport=82, rport=80, addresses=("10.0.0.41", "10.0.0.42"),
        servers=("http@rs-exec/10.0.0.41:80", "http@rs-exec/10.0.0.42:80",
                 "weight@rs-exec/10.0.0.41:8042", "weight@rs-exec/10.0.0.42:8042"),
        check=EXEC_CHECK, url=f"http://{VIP}:82/", interval=2.0, timeout=1.5,
    ),
    _single("dns", 51, "udp", 53, 'name = "www.lab"\nexpect = ["10.0.0.51"]'),
    _single("smtp", 52, "tcp", 25, 'helo = "director"'),
    _single("udp", 53, "udp", 7, 'send = "PING"\nexpect = "PONG"', timeout=0.5),
    _single("icmp", 54, "tcp", 9, timeout=0.5),
    _single("imap", 61, "tcp", 143),
    _single("pop3", 62, "tcp", 110),
    _single("ftp", 63, "tcp", 21),
    _single("mysql", 64, "tcp", 3306),
    _single("pgsql", 65, "tcp", 5432),
    _single("ldap", 66, "tcp", 389),
    _single("sip", 67, "udp", 5060),
    _single("radius", 68, "udp", 1812, f'secret = "{RADIUS_SECRET.decode()}"'),
)  # fmt: skip

CONFIG = f"""
[daemon]
state_dir = "{RUN}/state"
control_socket = "{RUN}/control.sock"
metrics_listen = ""

[defaults.check]
interval = {INTERVAL}
timeout = {TIMEOUT}
rise = {RISE}
fall = {FALL}
"""


def config() -> str:
    text = CONFIG
    for kind in KINDS:
        text += (
            f'\n[services.{kind.name}]\naddress = "{VIP}"\nport = {kind.vport}\n'
            f'protocol = "{kind.protocol}"\nscheduler = "wrr"\n'
            f'\n[[services.{kind.name}.checks]]\nkind = "{kind.name}"\n{kind.check}\n'
            f"interval = {kind.interval}\ntimeout = {kind.timeout}\n"
        )
        for address in kind.addresses:
            text += (
                f"\n[[services.{kind.name}.real_servers]]\n"
                f'address = "{address}"\nport = {kind.rport}\nweight = {WEIGHT}\n'
            )
    return text


# --- the lab network and its servers ---------------------------------------------------


def batch(netns: str | None, *commands: str) -> None:
    """``ip`` commands in one ``ip -batch`` (one process: forks are slow in the guest)."""
    where = ["-n", netns] if netns else []
    subprocess.run(["ip", *where, "-batch", "-"], input="\n".join(commands) + "\n",
                   text=True, check=True)  # fmt: skip


def build() -> None:
    """The director ``dir`` (client side on eth0, bridge br0 to the real servers), the
    client, and a namespace ``rs-KIND`` per kind with its addresses."""
    names = [f"rs-{kind.name}" for kind in KINDS]
    batch(None, *(f"netns add {n}" for n in ("dir", "client", *names)))
    batch(
        "dir",
        "link set lo up",
        "link add eth0 type veth peer name eth0 netns client",
        f"addr add {VIP}/24 dev eth0",
        "link set eth0 up",
        "link add br0 type bridge",
        "addr add 10.0.0.1/24 dev br0",
        "link set br0 up",
        *(f"link add v-{n} type veth peer name eth0 netns {n}" for n in names),
        *(f"link set v-{n} master br0" for n in names),
        *(f"link set v-{n} up" for n in names),
    )
    batch("client", "link set lo up", "addr add 192.168.3.50/24 dev eth0", "link set eth0 up")
    for kind in KINDS:
        batch(
            f"rs-{kind.name}",
            "link set lo up",
            "link set eth0 up",
            *(f"addr add {a}/24 dev eth0" for a in kind.addresses),
            "route add default via 10.0.0.1",
        )
    ns(
        "dir",
        "sysctl -qw net.ipv4.ip_forward=1",
        'sysctl -qw net.ipv4.ping_group_range="0 2147483647"',
        "sysctl -qw net.ipv4.vs.expire_nodest_conn=1",  # as lvsd's preflight asks
    )


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], cwd=PKI, check=True, capture_output=True, timeout=120)


EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
CA_EXT = "basicConstraints=critical,CA:TRUE,pathlen:1\nkeyUsage=critical,keyCertSign,cRLSign\n"


def ca(name: str) -> None:
    openssl(
        "req", "-x509", *EC, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN=lab {name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def signed(name: str, issuer: str, extensions: str) -> None:
    """``name``.key/.pem, signed by ``issuer``'s key."""
    (PKI / f"{name}.ext").write_text(extensions)
    openssl("req", "-new", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=lab {name}")  # fmt: skip
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey",
            f"{issuer}.key", "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
            "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext")  # fmt: skip


def leaf_ext(address: str) -> str:
    return f"subjectAltName=IP:{address}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"


def pki() -> None:
    """A root CA, an intermediate and leaves for .21 and .22 (chain: leaf +
    intermediate); a self-signed leaf for .23; a leaf for .24 from another CA."""
    PKI.mkdir(parents=True)
    ca("root")
    signed("inter", "root", CA_EXT.replace("pathlen:1", "pathlen:0"))
    for n in (21, 22):
        signed(str(n), "inter", leaf_ext(f"10.0.0.{n}"))
        chain = (PKI / f"{n}.pem").read_text() + (PKI / "inter.pem").read_text()
        (PKI / f"{n}.chain").write_text(chain)
    openssl(
        "req", "-x509", *EC, "-keyout", "23.key", "-out", "23.chain", "-days", "2",
        "-subj", "/CN=10.0.0.23", "-addext", "subjectAltName=IP:10.0.0.23",
    )  # fmt: skip
    ca("rogue")
    signed("24", "rogue", leaf_ext("10.0.0.24"))
    (PKI / "24.chain").write_text((PKI / "24.pem").read_text())


def server_names(kind: Kind) -> list[tuple[str, str]]:
    """(name, spec) of the kind's protocol servers: ``KIND-ADDRESS-PORT``."""
    named = []
    for spec in kind.servers:
        where = spec.split("/", 1)[1].split(",")[0]
        named.append((f"{spec.split('@')[0]}-{where}", spec))
    return named


def protocols() -> subprocess.Popen[bytes]:
    specs = [f"{name}={spec}" for kind in KINDS for name, spec in server_names(kind)]
    log = (RESULTS / "protocols.log").open("w")
    proc = subprocess.Popen(
        [PYTHON, "-m", "lab.protocols", str(CONTROL), *specs],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not CONTROL.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("lab.protocols did not start")
        time.sleep(0.05)
    return proc


def traffic(kind: Kind, duration: float) -> subprocess.Popen[bytes]:
    # the guest's one CPU also runs lvsd and every server: traffic runs at a lower
    # priority, slowly (TLS handshakes cost the most), and waits up to 5 s for an answer
    # (a refused connect to a dead server fails at once)
    rate = 1.5 if kind.name == "https" else 3.0
    out = RESULTS / f"traffic-{kind.name}.json"
    return launch(kind.url, out, rate=rate, duration=duration, timeout=5, nice=10)


# --- steps ------------------------------------------------------------------------------


def status() -> dict[str, dict[str, Any]]:
    """``ADDRESS:PORT`` -> lvsd's status of that real server (reason, detail, ...)."""
    answer = request_sync(str(RUN / "control.sock"), {"command": "status"}, 30.0)
    found: dict[str, dict[str, Any]] = {}
    for service in answer["status"]["services"]:
        for rs in service["real_servers"]:
            found[f"{rs['address']}:{rs['port']}"] = rs
    return found


def wait_all(
    goals: dict[str, Goal], started: dict[str, float], limit: float = 60.0
) -> dict[str, float]:
    """Poll ``ipvsadm -Ln`` until every goal (kind -> predicate on weights) has held;
    kind -> seconds from its ``started`` mark to the first reading where it held."""
    taken: dict[str, float] = {}
    begin = time.monotonic()
    while len(taken) < len(goals):
        seen = weights()
        now = time.time()
        for name, goal in goals.items():
            if name not in taken and goal(seen):
                taken[name] = round(now - started[name], 3)
        if time.monotonic() - begin > limit:
            missing = sorted(set(goals) - set(taken))
            raise RuntimeError(f"{missing} not reached within {limit} s:\n{ipvsadm()}")
        time.sleep(POLL)
    return taken


def weight_is(address: str, weight: int) -> Goal:
    """A goal: ``address`` has ``weight`` in the kernel (absent counts as 0)."""
    return lambda seen: seen.get(address, 0) == weight


def icmp(ignore: int) -> None:
    ns("rs-icmp", f"sysctl -qw net.ipv4.icmp_echo_ignore_all={ignore}")


def step(
    name: str, control: Control, modes: dict[str, tuple[str, str, int]], stalls: StallMeter
) -> dict[str, Any]:
    """Set each kind's victim to a mode (kind -> (server name, mode, expected weight)),
    all at once, and time each kind's victim reaching its weight."""
    started: dict[str, float] = {}
    for kind, (server, mode, _) in modes.items():
        if kind == "icmp":
            icmp(1 if mode == "off" else 0)
        else:
            control.set(server, mode)
        started[kind] = time.time()
    victims = {k.name: k.victim for k in KINDS}
    goals = {kind: weight_is(victims[kind], w) for kind, (_, _, w) in modes.items()}
    taken = wait_all(goals, started)
    end = time.time()
    return {
        "step": name,
        "at": min(started.values()),
        "started": started,
        "taken_s": taken,
        "stalled_s": {
            k: round(stalls.between(started[k], started[k] + t), 3) for k, t in taken.items()
        },
        "table": ipvsadm(),
        "end": end,
    }


def victim_server(kind: Kind) -> str:
    """The protocol server whose mode takes ``kind``'s victim out."""
    names = [name for name, _ in server_names(kind)]
    wanted = {"agent": "agent-", "exec": "weight-"}.get(kind.name, "")
    return (
        next(n for n in names if n.startswith(wanted) and f"-{kind.addresses[0]}:" in n)
        if names
        else ""
    )


def out_mode(kind: Kind) -> str:
    if kind.name in ("tcp", "https", "icmp"):
        return "off"
    return {"agent": "drain", "exec": "1"}.get(kind.name, "bad")


def back_mode(kind: Kind) -> str:
    # an agent's percentage stays until it says another (HAProxy's rule): "up" alone
    # would keep the 50 %
    return {"agent": "up 100%", "exec": "12"}.get(kind.name, "up")


def agent_down(control: Control, agent: Kind) -> dict[str, Any]:
    """The drained agent says ``down``: time until lvsd has it down (fall answers), and
    the victim's kernel weights seen meanwhile."""
    control.set(victim_server(agent), "down")
    at = time.time()
    seen = []
    while (found := status()[agent.victim])["up"]:
        seen.append(weights().get(agent.victim, 0))
        if time.time() - at > 30:
            raise RuntimeError(f"agent never went down: {found}")
        time.sleep(POLL)
    return {
        "at": at,
        "taken_s": round(time.time() - at, 3),
        "weights_seen": seen,
        "status": found,
        "table": ipvsadm(),
    }


def run(out: dict[str, Any]) -> None:
    """The whole scenario, its measurements into ``out`` as they come."""
    begin = time.monotonic()
    RUN.mkdir(parents=True, exist_ok=True)
    build()
    out["network_s"] = round(time.monotonic() - begin, 1)
    pki()
    out["setup_s"] = round(time.monotonic() - begin, 1)
    (RUN / "lvsd.toml").write_text(config())
    servers = protocols()
    try:
        control = Control(str(CONTROL))
        measure(out, control)
    finally:
        servers.kill()
        servers.wait()
    out["elapsed_s"] = round(time.monotonic() - begin, 1)


def measure(out: dict[str, Any], control: Control) -> None:
    for kind in KINDS:  # the exec victims start at weight 10 (exit 12)
        for name, _ in server_names(kind):
            if name.startswith("weight-"):
                control.set(name, "12")
    log = (RESULTS / "lvsd.log").open("w")
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", "dir", PYTHON, "-m", "lvsd", "--log-level", "info", "run",
         "-c", str(RUN / "lvsd.toml")],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    streams: dict[str, subprocess.Popen[bytes]] = {}
    try:
        everyone = [a for k in KINDS for a in (k.victim, k.partner) if a]
        start = time.time()
        wait_all({a: weight_is(a, WEIGHT) for a in everyone}, dict.fromkeys(everyone, start), 120)
        out["start_s"] = round(time.time() - start, 1)
        out["start_table"] = ipvsadm()
        out["start_status"] = status()
        streams = {k.name: traffic(k, 120.0) for k in KINDS if k.url}
        time.sleep(2.0)
        steps = []
        with StallMeter() as stalls:
            out["stalls"] = stalls.stalls  # the same list: filled as they come
            agent, exec_ = (next(k for k in KINDS if k.name == n) for n in ("agent", "exec"))
            steps.append(step("weight", control, {
                "agent": (victim_server(agent), "50%", WEIGHT // 2),
                "exec": (victim_server(exec_), "7", 5),
            }, stalls))  # fmt: skip
            time.sleep(1.0)
            steps.append(
                step("out", control,
                     {k.name: (victim_server(k), out_mode(k), 0) for k in KINDS}, stalls)
            )  # fmt: skip
            out["out_status"] = status()
            time.sleep(3.0)  # traffic only to the partners meanwhile
            out["agent_down"] = agent_down(control, agent)
            steps.append(
                step("back", control,
                     {k.name: (victim_server(k), back_mode(k), WEIGHT) for k in KINDS}, stalls)
            )  # fmt: skip
            time.sleep(3.0)  # traffic to both again
        out["steps"] = steps
        out["end_status"] = status()
        out["end_table"] = ipvsadm()
        for proc in streams.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in streams.items():
            proc.wait(timeout=120)
            out["kinds"][name]["traffic"] = load(RESULTS / f"traffic-{name}.json")
    finally:
        for proc in streams.values():
            if proc.poll() is None:
                proc.kill()
        out["exit_status"] = terminate(daemon)
        control.close()


def windows(out: dict[str, Any]) -> None:
    """Replace each stream's records by figures per phase (``lab.traffic.summarize``)."""
    steps = {s["step"]: s for s in out.get("steps", [])}
    for name, kind in out["kinds"].items():
        records = kind.pop("traffic", None)
        if records is None or not steps:
            continue
        t_out = steps["out"]["started"][name]
        t_back = steps["back"]["started"][name]
        # the agent's victim is drained until it says down, then out: "late" ends there
        until = out["agent_down"]["at"] if name == "agent" else t_back
        seen_out = t_out + steps["out"]["taken_s"][name]
        seen_back = t_back + steps["back"]["taken_s"][name]
        kind["traffic"] = {
            "all": summarize(records),
            "before": summarize(records, before=t_out - 1.0),
            "out": summarize(records, after=t_out, before=t_back),
            # started half a second after ipvsadm showed the victim out, before it came back
            "late": summarize(records, after=seen_out + 0.5, before=until),
            "back": summarize(records, after=seen_back + 0.5),
        }


def main() -> int:
    found: dict[str, Any] = {
        "kinds": {k.name: {"victim": k.victim, "partner": k.partner, "bad": list(k.bad),
                           "interval": k.interval, "timeout": k.timeout} for k in KINDS}
    }  # fmt: skip
    try:
        run(found)
        windows(found)
    except Exception as exc:  # the record says what broke; the test shows it
        found["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        (RESULTS / "probes.json").write_text(json.dumps(found, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
