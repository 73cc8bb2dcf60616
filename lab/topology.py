"""Network topologies built inside the lab guest (shell run by the init script).

``NatTopology`` is the classic LVS-NAT director::

    client ns 192.168.3.50/24 --veth-- director (guest root ns) 192.168.3.108/24
                                        br0 10.0.0.1/24
                                  +---------+---------+
                            rs1 10.0.0.2/24      rs2 10.0.0.3/24 ...

Every real server has its default route via the director (10.0.0.1), the client
reaches 10.0.0.0/24 through the director too, and the director forwards
(``ip_forward=1``). ``extra`` names further hosts built the same way after the real
servers (``extra=("sorry",)`` with three real servers: namespace ``sorry``,
10.0.0.5), for a sorry server that is not one of the real servers. These addresses
exist only inside the guest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class NatTopology:
    """The classic NAT director with ``real_servers`` real servers (rs1, rs2, ...) and
    the ``extra`` hosts (namespaces of those names) after them on the same bridge."""

    real_servers: int = 2
    extra: tuple[str, ...] = ()
    client: str = "192.168.3.50"
    vip: str = "192.168.3.108"
    gateway: str = "10.0.0.1"

    def __post_init__(self) -> None:
        if not 1 <= self.real_servers <= 250:
            raise ValueError(f"real_servers must be within 1..250, got {self.real_servers}")
        if self.real_servers + len(self.extra) > 250:
            raise ValueError(f"{self.real_servers} real servers and {len(self.extra)} more")
        clash = set(self.extra) & {*self.names, "client"}
        if clash or len(set(self.extra)) != len(self.extra):
            raise ValueError(f"extra host names must be new and distinct: {self.extra}")
        if any(not 1 <= len(name) <= 11 for name in self.extra):  # dir-NAME: 15 at most
            raise ValueError(f"extra host names must have 1..11 characters: {self.extra}")

    def real_server(self, n: int) -> str:
        """Address of real server ``n`` (1-based): 10.0.0.2, 10.0.0.3, ..."""
        return f"10.0.0.{n + 1}"

    @property
    def names(self) -> list[str]:
        """Namespace names of the real servers."""
        return [f"rs{n}" for n in range(1, self.real_servers + 1)]

    def hosts(self) -> dict[str, str]:
        """Every host behind the director, namespace name -> address: the real
        servers, then the extra hosts."""
        names = [*self.names, *self.extra]
        return {name: self.real_server(n) for n, name in enumerate(names, start=1)}

    def shell(self) -> str:
        lines = [
            "ip link set lo up",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
            "ip netns add client",
            "ip link add dir-client type veth peer name eth0 netns client",
            f"ip addr add {self.vip}/24 dev dir-client",
            "ip link set dir-client up",
            "ip -n client link set lo up",
            f"ip -n client addr add {self.client}/24 dev eth0",
            "ip -n client link set eth0 up",
            f"ip -n client route add 10.0.0.0/24 via {self.vip}",
            "ip link add br0 type bridge",
            f"ip addr add {self.gateway}/24 dev br0",
            "ip link set br0 up",
        ]
        for name, address in self.hosts().items():
            lines += [
                f"ip netns add {name}",
                f"ip link add dir-{name} type veth peer name eth0 netns {name}",
                f"ip link set dir-{name} master br0",
                f"ip link set dir-{name} up",
                f"ip -n {name} link set lo up",
                f"ip -n {name} addr add {address}/24 dev eth0",
                f"ip -n {name} link set eth0 up",
                f"ip -n {name} route add default via {self.gateway}",
            ]
        return "\n".join(lines) + "\n"


__all__ = ["NatTopology"]
