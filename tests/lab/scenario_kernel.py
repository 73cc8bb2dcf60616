"""The configs and the one-boot scenario behind tests/lab/test_kernel.py."""

from __future__ import annotations

import json
from pathlib import Path

from lab.harness import Scenario

HERE = Path(__file__).resolve().parent

NAT = """
[defaults]
scheduler = "wrr"
forward = "nat"

[services.web]
address = "192.168.3.108"
port = 80

[[services.web.real_servers]]
address = "10.0.0.2"
port = 80
weight = {w2}

[[services.web.real_servers]]
address = "10.0.0.3"
port = 80
weight = {w3}
"""

NAT_REMOVED = """
[services.web]
address = "192.168.3.108"
port = 80
scheduler = "wrr"
forward = "nat"

[[services.web.real_servers]]
address = "10.0.0.3"
port = 80
weight = 5
"""

KINDS = """
[services.v6]
address = "2001:db8::108"
port = 443
scheduler = "sh"
flags = ["sh-fallback", "sh-port"]
persistence = 600
persistence_netmask = 64

[[services.v6.real_servers]]
address = "2001:db8:1::2"
port = 443
weight = 2
forward = "dr"

[[services.v6.real_servers]]
address = "2001:db8:1::3"
port = 443
forward = "tun"

[services.dns]
address = "192.168.3.108"
port = 53
protocol = "udp"
scheduler = "rr"
one_packet = true

[[services.dns.real_servers]]
address = "10.0.0.2"
port = 53
upper_threshold = 100
lower_threshold = 50

[[services.dns.real_servers]]
address = "10.0.0.3"
port = 53

[services.sig]
address = "192.168.3.108"
port = 2905
protocol = "sctp"
scheduler = "wlc"
persistence = 300
persistence_netmask = 24

[[services.sig.real_servers]]
address = "10.0.0.2"
port = 2905

[services.mark1]
fwmark = 1
scheduler = "mh"
flags = ["mh-port"]

[[services.mark1.real_servers]]
address = "10.0.0.2"
port = 0
forward = "dr"

[[services.mark1.real_servers]]
address = "10.0.0.4"
port = 0
forward = "tun"
tunnel = "gue"
tunnel_port = 6080

[services.mark2]
fwmark = 2
family = "inet6"
scheduler = "lc"

[[services.mark2.real_servers]]
address = "2001:db8:1::2"
port = 0
forward = "dr"

[services.gre]
address = "192.168.3.108"
port = 8080
scheduler = "nq"

[[services.gre.real_servers]]
address = "10.0.0.5"
port = 8080
forward = "tun"
tunnel = "gre"
"""

SCHEDULERS = (
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
)  # fmt: skip


def schedulers_config() -> str:
    return "".join(
        f'\n[services.{s}]\naddress = "10.10.0.{n}"\nport = 80\nscheduler = "{s}"\n'
        f'[[services.{s}.real_servers]]\naddress = "10.0.0.2"\nport = 80\n'
        for n, s in enumerate(SCHEDULERS, start=1)
    )


CONFIGS = {
    "nat": NAT.format(w2=1, w3=1),
    "nat_weight": NAT.format(w2=1, w3=5),
    "nat_removed": NAT_REMOVED,
    "kinds": KINDS,
    "schedulers": schedulers_config(),
}

HAND_MADE = (
    "ipvsadm -A -t 192.168.3.200:8080 -s rr && "
    "ipvsadm -a -t 192.168.3.200:8080 -r 10.0.0.9:8080 -m -w 4"
)
NAT_BY_HAND = (
    "ipvsadm -D -t 192.168.3.108:80 && ipvsadm -A -t 192.168.3.108:80 -s wrr && "
    "ipvsadm -a -t 192.168.3.108:80 -r 10.0.0.2:80 -m -w 1 && "
    "ipvsadm -a -t 192.168.3.108:80 -r 10.0.0.3:80 -m -w 1"
)
TRAFFIC = (
    "ipvsadm -C && "
    'for rs in rs1 rs2; do ip netns exec $rs "$LAB_PYTHON" -m lab.httpd $rs 80 '
    '> "$LAB_RESULTS/$rs.log" 2>&1 & done; '
    "for rs in rs1 rs2; do i=0; until ip netns exec $rs ss -ltn | grep -q ':80 '; do "
    "i=$((i+1)); [ $i -lt 300 ] || exit 1; sleep 0.1; done; done"
)
REQUESTS = 10
CURL = (
    f"n=0; while [ $n -lt {REQUESTS} ]; do "
    "ip netns exec client curl -s --max-time 5 http://192.168.3.108/ || exit 1; n=$((n+1)); done; "
    # the kernel folds per-CPU counters into what it reports every 2 s: let it
    "sleep 4"
)

#: A service of BIG_DESTS destinations: its dump spans many netlink messages, so
#: dumps asked at once overlap (``ipvsadm -R``: one process for them all).
BIG_DESTS = 2000
BIG = (
    '{ echo "-A -t 192.168.3.201:80 -s rr"; '
    f"for i in $(seq 0 {BIG_DESTS - 1}); do "
    'echo "-a -t 192.168.3.201:80 -r 10.1.$((i / 250)).$((i % 250 + 1)):80 -m -w 1"; '
    "done; } | ipvsadm -R"
)

STEPS = [
    f"sh:{HAND_MADE}",
    "apply:nat",
    "apply:nat",
    "errors",
    "apply:nat_weight",
    "apply:nat_removed",
    f"sh:{NAT_BY_HAND}",
    "apply:nat",
    "apply:kinds",
    "apply:kinds",
    "dump:kinds",
    "sh:ipvsadm -Ln --tun-info",
    "apply:schedulers",
    f"sh:{TRAFFIC}",
    "apply:nat",
    f"sh:{CURL}",
    "stats",
    f"sh:{BIG}",
    "dumps:3",
    "turns",
    "sh:ipvsadm -D -t 192.168.3.201:80",
]


def scenario(work: Path) -> Scenario:
    """Write the configs into ``work/configs`` and return the scenario."""
    configs = work / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    for name, text in CONFIGS.items():
        (configs / f"{name}.toml").write_text(text)
    (work / "steps.json").write_text(json.dumps(STEPS))
    apply_cmd = '"$LAB_PYTHON" -m lvsd apply -c'
    return Scenario(
        shell=f"""
"$LAB_PYTHON" {HERE / "guest_table.py"} "$LAB_WORK/configs" "$LAB_WORK/steps.json" \\
    "$LAB_RESULTS/table.json"
set +e
ipvsadm -C
{apply_cmd} "$LAB_WORK/configs/nat.toml" --dry-run > "$LAB_RESULTS/dry.out" 2>&1
echo $? > "$LAB_RESULTS/dry.status"
ipvsadm -Ln > "$LAB_RESULTS/dry.ipvsadm" 2>&1
{apply_cmd} "$LAB_WORK/configs/nat.toml" > "$LAB_RESULTS/cli.out" 2>&1
echo $? > "$LAB_RESULTS/cli.status"
{apply_cmd} "$LAB_WORK/configs/schedulers.toml" \\
    > "$LAB_RESULTS/cli_fail.out" 2> "$LAB_RESULTS/cli_fail.err"
echo $? > "$LAB_RESULTS/cli_fail.status"
setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all \\
    "$LAB_PYTHON" {HERE / "guest_errors.py"} > "$LAB_RESULTS/nocap.json" 2>&1
ipvsadm -C
for m in $(lsmod | awk '/^ip_vs_/ {{print $1}}'); do rmmod $m; done
rmmod ip_vs; echo $? > "$LAB_RESULTS/rmmod.status"
# the kernel would load ip_vs again on the first request (its generic netlink family
# alias): forbid module loading, as on a host without the module
echo /bin/false > /proc/sys/kernel/modprobe
"$LAB_PYTHON" {HERE / "guest_errors.py"} > "$LAB_RESULTS/notloaded.json" 2>&1
exit 0
"""
    )
