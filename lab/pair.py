"""The HA pair's topology (etc/examples/ha/, docs/ha.md), built inside one lab guest::

    bridge pub:  client eth0 192.168.3.50/24, dira eth0 192.168.3.11/24, dirb eth0 192.168.3.12/24
    bridge priv: dira eth1 10.0.0.11/24, dirb eth1 10.0.0.12/24,
                 rs1 eth0 10.0.0.2/24, rs2 eth0 10.0.0.3/24 (default route via 10.0.0.1)

Every host is a network namespace (its own IPVS table, its own loopback); the
bridges live in the guest's root namespace. Both directors forward. The VIPs
(192.168.3.108 on eth0, 10.0.0.1 on eth1) are not set here: keepalived moves them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Namespace -> [(interface, bridge, address/prefix)].
LINKS: dict[str, list[tuple[str, str, str]]] = {
    "client": [("eth0", "pub", "192.168.3.50/24")],
    "dira": [("eth0", "pub", "192.168.3.11/24"), ("eth1", "priv", "10.0.0.11/24")],
    "dirb": [("eth0", "pub", "192.168.3.12/24"), ("eth1", "priv", "10.0.0.12/24")],
    "rs1": [("eth0", "priv", "10.0.0.2/24")],
    "rs2": [("eth0", "priv", "10.0.0.3/24")],
}
DIRECTORS = ("dira", "dirb")
REAL_SERVERS = {"rs1": "10.0.0.2", "rs2": "10.0.0.3"}
VIP = "192.168.3.108"
GATEWAY = "10.0.0.1"


@dataclass(frozen=True, slots=True)
class PairTopology:
    """The topology above (``lab.harness.Topology``)."""

    def shell(self) -> str:
        lines = ["ip link set lo up"]
        for bridge in ("pub", "priv"):
            lines += [f"ip link add {bridge} type bridge", f"ip link set {bridge} up"]
        for ns, links in LINKS.items():
            lines += [f"ip netns add {ns}", f"ip -n {ns} link set lo up"]
            for ifname, bridge, address in links:
                outer = f"{ns}-{ifname}"  # e.g. dira-eth1, in the root namespace
                lines += [
                    f"ip link add {outer} type veth peer name {ifname} netns {ns}",
                    f"ip link set {outer} master {bridge}",
                    f"ip link set {outer} up",
                    f"ip -n {ns} addr add {address} dev {ifname}",
                    f"ip -n {ns} link set {ifname} up",
                ]
        for ns in REAL_SERVERS:
            lines.append(f"ip -n {ns} route add default via {GATEWAY}")
        for ns in DIRECTORS:
            lines.append(f"ip netns exec {ns} sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'")
        return "\n".join(lines) + "\n"


__all__ = ["DIRECTORS", "GATEWAY", "LINKS", "REAL_SERVERS", "VIP", "PairTopology"]
