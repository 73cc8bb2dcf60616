"""``python -m lvsd.lab demo``: the classic NAT director, for real, in one boot.

Boots the lab with a client, a director holding the VIP 192.168.3.108 and N real
servers (10.0.0.2, 10.0.0.3, ...) each running a tiny HTTP server that answers its
own name; runs ``lvsd apply`` with ``etc/lvsd.toml`` (or an equivalent config when
that file is absent or N differs from it), prints ``ipvsadm -Ln``, then sends
requests from the client to the VIP and shows which real server answered each.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

from lvsd.lab.harness import REPO, LabResult, Scenario, run
from lvsd.lab.topology import NatTopology


def demo_config(topology: NatTopology) -> str:
    """A config equivalent to etc/lvsd.toml for ``topology`` (real servers all up)."""
    servers = "".join(
        f'\n[[services.web.real_servers]]\naddress = "{topology.real_server(n)}"\n'
        "port = 80\nweight = 1\n"
        for n in range(1, topology.real_servers + 1)
    )
    return (
        "# Written by `python -m lvsd.lab demo`: the classic NAT director.\n"
        '[defaults]\nscheduler = "wrr"\nforward = "nat"\n\n'
        f'[services.web]\naddress = "{topology.vip}"\nport = 80\nprotocol = "tcp"\n\n'
        '[[services.web.checks]]\nkind = "http"\npath = "/"\n' + servers
    )


def demo_scenario(config: Path, topology: NatTopology, requests: int) -> Scenario:
    servers = "\n".join(
        f'ip netns exec {name} "$LAB_PYTHON" -m lvsd.lab.httpd {name} 80 '
        f'> "$LAB_RESULTS/{name}.log" 2>&1 &'
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
"$LAB_PYTHON" -m lvsd.lab.apply_cmd -c {config}
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
        print(f"lvsd demo: booting the lab (user-mode Linux) in {folder} ...", file=out)
        result = run(
            folder, demo_scenario(config, topology, requests), topology=topology, stream=out
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
    print(
        f"lvsd demo: OK in {result.duration:.1f} s: {requests} requests through the VIP, "
        f"answered by {counts}.",
        file=out,
    )
    return 0
