"""The active-active tier's topology (etc/examples/bgp/, docs/ha.md), inside one lab guest::

    bridge edge: client eth0 192.168.3.50/24 (default via 192.168.3.1), router eth0 192.168.3.1/24
    bridge tier: router eth1 10.0.0.1/24, dira/dirb/dirc eth0 10.0.0.11-13/24,
                 rs1 eth0 10.0.0.2/24, rs2 eth0 10.0.0.3/24 (default route via 10.0.0.1)

Every host is a network namespace; the bridges live in the guest's root namespace.
The router forwards and hashes multipath flows by address and port; each director
and real server has the VIP on its loopback (the real servers do not answer ARP for
it: direct routing); the directors' IPVS takes a flow over mid-stream
(``sloppy_tcp``), which it needs when the router moves a flow to it. The routes to
the VIP come from BGP (BIRD in ``router``, ExaBGP in each director), not from here.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Namespace -> [(interface, bridge, address/prefix)].
LINKS: dict[str, list[tuple[str, str, str]]] = {
    "client": [("eth0", "edge", "192.168.3.50/24")],
    "router": [("eth0", "edge", "192.168.3.1/24"), ("eth1", "tier", "10.0.0.1/24")],
    "dira": [("eth0", "tier", "10.0.0.11/24")],
    "dirb": [("eth0", "tier", "10.0.0.12/24")],
    "dirc": [("eth0", "tier", "10.0.0.13/24")],
    "rs1": [("eth0", "tier", "10.0.0.2/24")],
    "rs2": [("eth0", "tier", "10.0.0.3/24")],
}
DIRECTORS = {"dira": "10.0.0.11", "dirb": "10.0.0.12", "dirc": "10.0.0.13"}
REAL_SERVERS = {"rs1": "10.0.0.2", "rs2": "10.0.0.3"}
VIP = "198.51.100.10"
ROUTER = "10.0.0.1"


def _sysctl(ns: str, key: str, value: str) -> str:
    return f"ip netns exec {ns} sh -c 'echo {value} > /proc/sys/{key.replace('.', '/')}'"


@dataclass(frozen=True, slots=True)
class TierTopology:
    """The topology above (``lab.harness.Topology``)."""

    def shell(self) -> str:
        lines = ["ip link set lo up"]
        for bridge in ("edge", "tier"):
            lines += [f"ip link add {bridge} type bridge", f"ip link set {bridge} up"]
        for ns, links in LINKS.items():
            lines += [f"ip netns add {ns}", f"ip -n {ns} link set lo up"]
            for ifname, bridge, address in links:
                outer = f"{ns}-{ifname}"
                lines += [
                    f"ip link add {outer} type veth peer name {ifname} netns {ns}",
                    f"ip link set {outer} master {bridge}",
                    f"ip link set {outer} up",
                    f"ip -n {ns} addr add {address} dev {ifname}",
                    f"ip -n {ns} link set {ifname} up",
                ]
        lines.append("ip -n client route add default via 192.168.3.1")
        lines.append(_sysctl("router", "net.ipv4.ip_forward", "1"))
        lines.append(_sysctl("router", "net.ipv4.fib_multipath_hash_policy", "1"))
        for ns in DIRECTORS:
            lines.append(f"ip -n {ns} addr add {VIP}/32 dev lo")
            lines.append(f"ip -n {ns} route add default via {ROUTER}")
            lines.append(_sysctl(ns, "net.ipv4.vs.sloppy_tcp", "1"))
        for ns in REAL_SERVERS:
            lines.append(f"ip -n {ns} addr add {VIP}/32 dev lo")
            lines.append(f"ip -n {ns} route add default via {ROUTER}")
            for conf in ("all", "eth0"):
                lines.append(_sysctl(ns, f"net.ipv4.conf.{conf}.arp_ignore", "1"))
                lines.append(_sysctl(ns, f"net.ipv4.conf.{conf}.arp_announce", "2"))
        return "\n".join(lines) + "\n"


__all__ = ["DIRECTORS", "LINKS", "REAL_SERVERS", "ROUTER", "VIP", "TierTopology"]
