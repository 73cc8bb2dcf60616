"""``python -m lab demo``: the classic NAT director, for real, in one boot.

Boots the lab with a client, a director holding the VIP 192.168.3.108 and N real
servers (10.0.0.2, 10.0.0.3, ...) each running a tiny HTTP server that answers its
own name; runs ``lvsd apply`` with ``etc/lvsd.toml`` (or an equivalent config when
that file is absent or N differs from it), prints ``ipvsadm -Ln``, then sends
requests from the client to the VIP and shows which real server answered each.

Then the daemon: ``lvsd run`` adopts that table (no op), checks every real server
over HTTP every 0.5 s; rs1's server is stopped (its weight drops to 0 and the
requests all go elsewhere), then started again (its weight comes back).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

from lab.harness import REPO, LabResult, Scenario, run
from lab.topology import NatTopology


def demo_config(topology: NatTopology) -> str:
    """A config equivalent to etc/lvsd.toml for ``topology`` (real servers all up)."""
    servers = "".join(
        f'\n[[services.web.real_servers]]\naddress = "{topology.real_server(n)}"\n'
        "port = 80\nweight = 1\n"
        for n in range(1, topology.real_servers + 1)
    )
    return (
        "# Written by `python -m lab demo`: the classic NAT director.\n"
        '[defaults]\nscheduler = "wrr"\nforward = "nat"\n\n'
        f'[services.web]\naddress = "{topology.vip}"\nport = 80\nprotocol = "tcp"\n\n'
        '[[services.web.checks]]\nkind = "http"\npath = "/"\n' + servers
    )


#: Where the daemon keeps its socket and state inside the guest (tmpfs).
DAEMON_RUN = "/run/lvsd-demo"


def daemon_config(topology: NatTopology) -> str:
    """The demo service with fast http checks, for ``lvsd run``."""
    servers = "".join(
        f'\n[[services.web.real_servers]]\naddress = "{topology.real_server(n)}"\n'
        "port = 80\nweight = 1\n"
        for n in range(1, topology.real_servers + 1)
    )
    return (
        "# Written by `python -m lab demo`: lvsd run with fast checks.\n"
        f'[daemon]\nstate_dir = "{DAEMON_RUN}/state"\n'
        f'control_socket = "{DAEMON_RUN}/control.sock"\nmetrics_listen = ""\n\n'
        '[defaults]\nscheduler = "wrr"\nforward = "nat"\n\n'
        f'[services.web]\naddress = "{topology.vip}"\nport = 80\nprotocol = "tcp"\n\n'
        '[[services.web.checks]]\nkind = "http"\npath = "/"\n'
        "interval = 0.5\ntimeout = 0.3\nrise = 2\nfall = 2\n" + servers
    )


def _requests(vip: str, count: int, file: str) -> str:
    return f"""
: > "$LAB_RESULTS/{file}"
n=1
while [ $n -le {count} ]; do
    answer=$(ip netns exec client curl -s --max-time 5 http://{vip}/ || echo "(no answer)")
    echo "   request $n answered by: $answer"
    echo "$answer" >> "$LAB_RESULTS/{file}"
    n=$((n+1))
done
"""


def _until(condition: str, what: str) -> str:
    """Shell: poll ``condition`` every 0.1 s for at most 30 s."""
    return (
        f"i=0; until {condition}; do i=$((i+1)); "
        f'[ $i -lt 300 ] || {{ echo "{what}: timed out"; exit 1; }}; sleep 0.1; done'
    )


def _weight_is(address: str, test: str) -> str:
    return f"ipvsadm -Ln | awk '$2 == \"{address}:80\" {{ w = $4 }} END {{ exit !(w {test}) }}'"


def daemon_part(dconfig: Path, topology: NatTopology, requests: int) -> str:
    """Shell: lvsd run, rs1 fails and recovers."""
    vip = topology.vip
    rs1 = topology.real_server(1)
    sock = f"{DAEMON_RUN}/control.sock"
    status = f'"$LAB_PYTHON" -m lvsd status --socket {sock}'

    def events(name: str) -> str:
        """Shell: print the daemon's ``name`` log events (JSON lines) readably."""
        script = (
            "import json,sys\n"
            "for l in sys.stdin:\n"
            " e=json.loads(l)\n"
            f" if e['event']=='{name}':"
            " print('  ', e['event'], e['realserver'], e.get('detail',''))"
        )
        return f'"$LAB_PYTHON" -c "{script}" < "$LAB_RESULTS/lvsd.log"'

    return f"""
echo
echo "== Now the daemon: health checks over HTTP every 0.5 s (fall 2, rise 2)"
echo "\\$ lvsd run -c {dconfig.name} &   (it adopts the table above: no op)"
mkdir -p {DAEMON_RUN}
"$LAB_PYTHON" -m lvsd run -c {dconfig} > "$LAB_RESULTS/lvsd.log" 2>&1 &
LVSD=$!
{_until(f"{status} > /dev/null 2>&1", "lvsd start")}
echo "\\$ lvsd status"
{status}
{events("realserver.adopted")}
echo
echo "== Stopping rs1's HTTP server: watch lvsd take it out"
kill $PID_rs1
T0=$(date +%s.%N)
{_until(_weight_is(rs1, "== 0"), "rs1 down")}
echo "   rs1 quiesced after $(echo "$(date +%s.%N) - $T0" | bc 2>/dev/null || echo '?') s"
{events("realserver.down")}
echo "\\$ ipvsadm -Ln"
ipvsadm -Ln
echo "== {requests} requests while rs1 is down"
{_requests(vip, requests, "answers_down.txt")}
echo
echo "== Starting rs1's HTTP server again"
ip netns exec rs1 "$LAB_PYTHON" -m lab.httpd rs1 80 > "$LAB_RESULTS/rs1.log" 2>&1 &
{_until(_weight_is(rs1, "> 0"), "rs1 up")}
{events("realserver.up")}
echo "\\$ ipvsadm -Ln"
ipvsadm -Ln
echo "== {requests} requests after the recovery"
{_requests(vip, requests, "answers_up.txt")}
kill -TERM $LVSD; wait $LVSD
echo "   lvsd stopped (exit status $?); the table stays as it is"
"""


def demo_scenario(
    config: Path, topology: NatTopology, requests: int, dconfig: Path | None = None
) -> Scenario:
    servers = "\n".join(
        f'ip netns exec {name} "$LAB_PYTHON" -m lab.httpd {name} 80 '
        f'> "$LAB_RESULTS/{name}.log" 2>&1 &\nPID_{name}=$!'
        for name in topology.names
    )
    waits = "\n".join(
        f"i=0; until ip netns exec {name} ss -ltn | grep -q ':80 '; do "
        f'i=$((i+1)); [ $i -lt 300 ] || {{ echo "{name} did not start"; exit 1; }}; sleep 0.1; done'
        for name in topology.names
    )
    vip = topology.vip
    names = " ".join(topology.names)
    return Scenario(
        shell=f"""
echo
echo "== The lab is up: a real Linux $(uname -r) kernel with IPVS, as a process."
echo "   client {topology.client} -> director (VIP {vip}) -> {names} on 10.0.0.0/24"
echo
echo "== Starting an HTTP server in each real server's namespace (answers its own name)"
{servers}
{waits}
echo
echo "\\$ lvsd apply -c {config.name}"
"$LAB_PYTHON" -m lvsd apply -c {config}
echo
echo "\\$ ipvsadm -Ln"
ipvsadm -Ln
echo
echo "== {requests} requests from the client to http://{vip}/"
: > "$LAB_RESULTS/answers.txt"
n=1
while [ $n -le {requests} ]; do
    answer=$(ip netns exec client curl -s --max-time 5 http://{vip}/ || echo "(no answer)")
    echo "   request $n answered by: $answer"
    echo "$answer" >> "$LAB_RESULTS/answers.txt"
    n=$((n+1))
done
echo
echo "\\$ ipvsadm -Ln --stats"
ipvsadm -Ln --stats
"""
        + (daemon_part(dconfig, topology, requests) if dconfig is not None else "")
    )


def main(
    real_servers: int = 2, requests: int = 10, work: Path | None = None, out: IO[str] = sys.stdout
) -> int:
    """Run the demo in ``work`` (a temporary folder when None); 0 when every real
    server answered and no request went unanswered."""
    import tempfile

    topology = NatTopology(real_servers=real_servers)
    with tempfile.TemporaryDirectory(prefix="lvsd-demo-") as tmp:
        folder = work or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        shipped = REPO / "etc" / "lvsd.toml"
        if shipped.exists() and real_servers == 2:
            config = shipped
        else:
            config = folder / "lvsd.toml"
            config.write_text(demo_config(topology))
        dconfig = folder / "lvsd-run.toml"
        dconfig.write_text(daemon_config(topology))
        print(f"lvsd demo: booting the lab (user-mode Linux) in {folder} ...", file=out)
        result = run(
            folder,
            demo_scenario(config, topology, requests, dconfig),
            topology=topology,
            stream=out,
        )
        return _verdict(result, topology, requests, out)


def _verdict(result: LabResult, topology: NatTopology, requests: int, out: IO[str]) -> int:
    answers_path = result.results / "answers.txt"
    answers = answers_path.read_text().split() if answers_path.exists() else []
    print("", file=out)
    if not result.ok:
        print(f"lvsd demo: FAILED (scenario exit status {result.exit_status})", file=out)
        return 1
    seen = sorted(set(answers) & set(topology.names))
    if len([a for a in answers if a in topology.names]) != requests or seen != topology.names:
        print(f"lvsd demo: FAILED: answers were {answers}", file=out)
        return 1
    counts = ", ".join(f"{name} {answers.count(name)}" for name in topology.names)
    down = _answers(result, "answers_down.txt")
    up = _answers(result, "answers_up.txt")
    others = set(topology.names[1:])
    if len(down) != requests or not set(down) <= others:
        print(f"lvsd demo: FAILED: while rs1 was down, answers were {down}", file=out)
        return 1
    if len(up) != requests or not set(up) <= set(topology.names) or "rs1" not in up:
        print(f"lvsd demo: FAILED: after rs1 recovered, answers were {up}", file=out)
        return 1
    print(
        f"lvsd demo: OK in {result.duration:.1f} s: {requests} requests through the VIP, "
        f"answered by {counts}; with rs1 down lvsd sent every request elsewhere, and "
        f"rs1 got requests again after its recovery.",
        file=out,
    )
    return 0


def _answers(result: LabResult, name: str) -> list[str]:
    path = result.results / name
    return path.read_text().split() if path.exists() else []
