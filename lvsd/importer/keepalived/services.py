"""The keywords of keepalived's ``virtual_server`` and ``real_server`` blocks.

Each block has a ``{keyword: handler}`` table of what converts and a
``{keyword: advice}`` table of what lvsd cannot express (the advice is what the user
reads, word for word); any other keyword is listed as unknown. The timing keywords
are only read by the checkers (:class:`~lvsd.importer.keepalived.checks.Timing`).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lvsd.importer.common import fail, mask_to_prefix, prefix_for_lvsd
from lvsd.importer.emit import Table, TomlValue
from lvsd.importer.keepalived.checks import CHECKERS, TIMING_KEYS, Timing
from lvsd.importer.keepalived.parse import Node
from lvsd.importer.keepalived.read import Sink, arg, to_bool, to_integer, to_ip, to_port
from lvsd.model import Scheduler

#: keepalived's ``persistence_timeout`` with no value, and for a port-0 service.
PERSISTENCE_TIMEOUT = 360
SCHED_FLAG_WORDS = {"sh-fallback", "sh-port", "mh-fallback", "mh-port"}
MAIL_ADVICE = "lvsd sends no mail: alert on its logs or Prometheus metrics"
OMEGA_QUORUM_ADVICE = (
    "omega: lvsd runs the real servers' notify down commands when it stops "
    "(notify.on_stop, written), not the quorum down_command"
)


@dataclass(slots=True)
class Member:
    """One lvs service key of a virtual_server: the TOML keys and a name."""

    entries: dict[str, TomlValue]
    label: str
    family: int  # 4 or 6; fwmark: 4 unless ip_family inet6
    grouped: bool = False  # a member of a virtual_server_group


def forwarding(out: Sink, node: Node, table: Table) -> None:
    """``lb_kind``/``lvs_method`` ``NAT|DR|TUN [type ipip|gue port N|gre]`` into
    ``table``'s forward, tunnel and tunnel_port."""
    words = [w.lower() for w in node.words()]
    if not words:
        raise fail(node.where, f"{node.keyword} needs NAT, DR or TUN")
    kinds = {"nat": "nat", "dr": "dr", "tun": "tun"}
    if words[0] not in kinds:
        raise fail(node.args[0].where, f"unknown forwarding method {node.args[0].text!r}")
    table.set("forward", kinds[words[0]])
    rest = words[1:]
    if words[0] != "tun" or not rest:
        return
    if rest[0] != "type" or len(rest) < 2:
        raise fail(node.where, "expected: TUN type ipip|gue port N|gre")
    tunnel = rest[1]
    if tunnel not in ("ipip", "gue", "gre"):
        raise fail(node.where, f"unknown tunnel type {tunnel!r}")
    table.set("tunnel", tunnel)
    rest = rest[2:]
    if tunnel == "gue":
        if len(rest) < 2 or rest[0] != "port":
            raise fail(node.where, "tunnel type gue needs: port N")
        port_token = node.args[4]  # TUN type gue port N
        tunnel_port = to_port(port_token)
        if tunnel_port == 0:
            raise fail(port_token.where, "tunnel port 0 is out of range (expected 1..65535)")
        table.set("tunnel_port", tunnel_port)
        rest = rest[2:]
    if rest:
        out.skip(
            node,
            f"tunnel checksum options ({' '.join(rest)}) are not supported by "
            "lvsd; the kernel default applies",
            f"{node.keyword} {' '.join(rest)}",
        )


@dataclass(slots=True)
class Service:
    """One lvsd service of a virtual_server (one per group member): what its keywords
    set, and the defaults keepalived applies after them (:meth:`finish`)."""

    out: Sink
    table: Table
    member: Member
    protocol: str
    flags: list[str] = field(default_factory=list)
    sorry: dict[str, TomlValue] = field(default_factory=dict)
    quorum: dict[str, TomlValue] = field(default_factory=dict)
    servers: list[Node] = field(default_factory=list)
    scheduler_set: bool = False
    omega: Node | None = None  # keepalived's omega: run the down notifiers on stop

    def ignore(self, node: Node) -> None:
        """Read elsewhere: protocol and ip_family before, timing keywords by the checks."""

    def real_server(self, node: Node) -> None:
        self.servers.append(node)

    def set_omega(self, node: Node) -> None:
        self.omega = node

    def scheduler(self, node: Node) -> None:
        scheduler = arg(node, 0, "a scheduler").text.lower()
        if scheduler not in {s.value for s in Scheduler}:
            self.out.skip(
                node,
                f"scheduler {scheduler!r} is not known to lvsd; pick one of "
                + ", ".join(s.value for s in Scheduler),
            )
            return
        self.table.set("scheduler", scheduler)
        self.scheduler_set = True

    def forward(self, node: Node) -> None:
        forwarding(self.out, node, self.table)

    def persistence_timeout(self, node: Node) -> None:
        seconds = to_integer(node.args[0]) if node.args else PERSISTENCE_TIMEOUT
        self.table.set(
            "persistence",
            seconds,
            None if node.args else "keepalived's default for a bare persistence_timeout",
        )

    def persistence_granularity(self, node: Node) -> None:
        token = arg(node, 0, "a netmask")
        try:
            prefix = mask_to_prefix(token.text)
        except ValueError:
            raise fail(token.where, f"bad netmask {token.text!r}") from None
        self.table.set(
            "persistence_netmask", prefix_for_lvsd(prefix, self.member.family), f"{token.text}"
        )

    def ops(self, node: Node) -> None:
        if "address" in self.member.entries and self.protocol != "udp":
            self.table.note(
                f"ops ignored: keepalived drops one-packet scheduling for {self.protocol}"
            )
        else:
            self.table.set("one_packet", True)

    def sched_flag(self, node: Node) -> None:
        self.flags.append(node.keyword)

    def lvs_flags(self, node: Node) -> None:
        """``lvs_flags WORD...`` and keepalived's ``flag-1``..``flag-3``."""
        words = node.words() if node.keyword == "lvs_flags" else [node.keyword]
        for word in words:
            if word in SCHED_FLAG_WORDS:
                self.flags.append(word)
            else:
                self.out.skip(
                    node,
                    f"scheduler flag {word!r} has no lvsd equivalent "
                    "(lvsd knows sh-fallback, sh-port, mh-fallback, mh-port)",
                )

    def quorum_minimum(self, node: Node) -> None:
        self.quorum["minimum"] = to_integer(arg(node))

    def hysteresis(self, node: Node) -> None:
        self.quorum["hysteresis"] = to_integer(arg(node))

    def quorum_command(self, node: Node) -> None:
        """``quorum_up``/``quorum_down SCRIPT [USER]``."""
        k = node.keyword
        self.quorum["up_command" if k == "quorum_up" else "down_command"] = command_of(node)
        if len(node.args) > 1:
            self.out.skip(
                node,
                "lvsd runs quorum commands as its own user; wrap the "
                "command in runuser/setpriv to change user",
                f"{k} user",
            )

    def sorry_server(self, node: Node) -> None:
        self.sorry["address"] = to_ip(arg(node, 0, "an address"))
        if len(node.args) > 1:
            self.sorry["port"] = to_port(node.args[1])

    def sorry_server_method(self, node: Node) -> None:
        holder = Table(path=())
        forwarding(self.out, node, holder)
        forward = holder.get("forward")
        if forward is not None:
            self.sorry["forward"] = forward

    def sorry_server_inhibit(self, node: Node) -> None:
        # keepalived then keeps an unneeded sorry server at weight 0 instead of
        # deleting it; lvsd deletes it. Neither sends it new connections while
        # a real server is up, and the kernel keeps serving the connections it
        # has either way (expire_nodest_conn=0), so this is only a comment.
        self.table.note(
            "sorry_server_inhibit: lvsd removes the sorry server when a real "
            "server is up (keepalived keeps it at weight 0); no new connection "
            "goes to it either way"
        )

    # -- after the keywords

    def finish(self, node: Node, timing: Timing, *, zero_port: bool) -> None:
        """keepalived's defaults, the states, sorry server and quorum; ``zero_port``:
        a member of the group has port 0, which makes the service persistent."""
        table = self.table
        if not self.scheduler_set:
            table.set("scheduler", "wlc", "keepalived's default (lvsd's is wrr)")
        if zero_port and "address" in self.member.entries and table.get("persistence") is None:
            table.set(
                "persistence",
                PERSISTENCE_TIMEOUT,
                "keepalived makes a port-0 service persistent (360 s)",
            )
        if self.flags:
            table.set("flags", list(dict.fromkeys(self.flags)))
        if table.get("forward") is None:
            table.set("forward", "nat", "keepalived's default")
        self.states(node, timing)
        if "address" in self.sorry:
            self.sorry_port()
            table.set("sorry_server", self.sorry)
        if self.quorum:
            self.clamp_quorum()
            table.set("quorum", self.quorum)
        if self.omega is not None and "down_command" in self.quorum:
            self.out.skip(self.omega, OMEGA_QUORUM_ADVICE)

    def sorry_port(self) -> None:
        """The sorry server's port as keepalived gives it to the kernel: like a real
        server's with DR/TUN (the service's port, 0 for a firewall mark); with NAT the
        port written, and without one keepalived gives port 0 (checked in the lab),
        where lvsd uses the service's port."""
        sorry, table = self.sorry, self.table
        forward = sorry.get("forward") or table.get("forward")
        if forward != "nat":
            if "port" in sorry and sorry["port"] != self.member.entries.get("port", 0):
                table.note(
                    f"sorry_server port {sorry['port']} not written: keepalived gives "
                    "the kernel the service's port unless forwarding is NAT"
                )
            sorry.pop("port", None)
        elif "port" not in sorry and "address" in self.member.entries:
            table.note(
                "sorry_server without a port: keepalived gives the kernel port 0, which "
                "cannot serve NAT traffic; lvsd uses the service's port"
            )

    def clamp_quorum(self) -> None:
        """keepalived lowers a quorum above the real servers' total weight to that
        total, and a hysteresis >= quorum to quorum - 1 (check_data.c)."""
        total = 0
        for server in self.servers:
            weight = server.find("weight")
            total += to_integer(arg(weight)) if weight is not None else 1
        quorum = self.quorum
        minimum = quorum.get("minimum")
        if isinstance(minimum, int) and minimum > total:
            quorum["minimum"] = minimum = total
        hysteresis = quorum.get("hysteresis")
        if isinstance(minimum, int) and isinstance(hysteresis, int) and hysteresis >= minimum:
            quorum["hysteresis"] = max(minimum - 1, 0)

    def states(self, node: Node, timing: Timing) -> None:
        """initial_state and on_failure: per service in lvsd, per real server in keepalived."""
        alphas = set()
        inhibits = set()
        for server in self.servers:
            inherited = timing.child(server)
            alphas.add(to_bool(inherited.nodes.get("alpha")))
            inhibits.add(to_bool(inherited.nodes.get("inhibit_on_failure")))
            for checker in server.children or ():
                if checker.keyword in CHECKERS:
                    alphas.add(to_bool(inherited.child(checker).nodes.get("alpha")))
        table = self.table
        if True in alphas:
            table.set("initial_state", "down", "alpha")
        else:
            table.set(
                "initial_state", "up", "keepalived starts real servers up unless alpha is set"
            )
        if len(alphas) > 1:
            self.out.skip(
                node,
                "alpha is set on some real servers or checkers only; lvsd sets "
                "initial_state per service (written: down)",
                "alpha",
            )
        if True in inhibits:
            table.set("on_failure", "quiesce", "inhibit_on_failure")
        else:
            table.set(
                "on_failure",
                "remove",
                "keepalived removes failed real servers unless inhibit_on_failure",
            )
        if len(inhibits) > 1:
            self.out.skip(
                node,
                "inhibit_on_failure is set on some real servers only; lvsd sets "
                "on_failure per service (written: quiesce)",
                "inhibit_on_failure",
            )


SERVICE_KEYWORDS: Mapping[str, Callable[[Service, Node], None]] = {
    **dict.fromkeys(("protocol", "ip_family", *TIMING_KEYS), Service.ignore),
    "real_server": Service.real_server,
    "lb_algo": Service.scheduler,
    "lvs_sched": Service.scheduler,
    "lb_kind": Service.forward,
    "lvs_method": Service.forward,
    "persistence_timeout": Service.persistence_timeout,
    "persistence_granularity": Service.persistence_granularity,
    "ops": Service.ops,
    **dict.fromkeys(SCHED_FLAG_WORDS, Service.sched_flag),
    **dict.fromkeys(("lvs_flags", "flag-1", "flag-2", "flag-3"), Service.lvs_flags),
    "quorum": Service.quorum_minimum,
    "hysteresis": Service.hysteresis,
    "quorum_up": Service.quorum_command,
    "quorum_down": Service.quorum_command,
    "sorry_server": Service.sorry_server,
    "sorry_server_lvs_method": Service.sorry_server_method,
    "sorry_server_inhibit": Service.sorry_server_inhibit,
    "omega": Service.set_omega,
}
SERVICE_ADVICE = {
    "ha_suspend": "lvsd always checks, whether or not the VIP is configured",
    "smtp_alert": MAIL_ADVICE,
    "snmp_name": "lvsd has no SNMP agent: the service name is its TOML table name",
    "persistence_engine": "persistence engines (sip) are not supported by lvsd",
}
SERVICE_UNKNOWN = "unknown virtual_server keyword; not converted"


@dataclass(slots=True)
class RealServer:
    """One ``[[services.NAME.real_servers]]`` table and the checkers its block names."""

    out: Sink
    table: Table
    checks: list[Node] = field(default_factory=list)
    notify: dict[str, TomlValue] = field(default_factory=dict)

    def ignore(self, node: Node) -> None:
        """A timing keyword: read by the checks."""

    def checker(self, node: Node) -> None:
        self.checks.append(node)

    def weight(self, node: Node) -> None:
        self.table.set("weight", to_integer(arg(node)))

    def uthreshold(self, node: Node) -> None:
        self.table.set("upper_threshold", to_integer(arg(node)))

    def lthreshold(self, node: Node) -> None:
        self.table.set("lower_threshold", to_integer(arg(node)))

    def forward(self, node: Node) -> None:
        forwarding(self.out, node, self.table)

    def notify_command(self, node: Node) -> None:
        """``notify_up``/``notify_down SCRIPT [USER [GROUP]]`` -> ``notify.up``/``.down``
        (one user and group per notify table: the first given)."""
        self.notify["up" if node.keyword == "notify_up" else "down"] = command_of(node)
        for index, key in ((1, "user"), (2, "group")):
            if len(node.args) <= index:
                continue
            name = node.args[index].text
            if self.notify.setdefault(key, name) != name:
                self.out.skip(
                    node,
                    f"lvsd runs both notify commands as one {key} "
                    f"({self.notify[key]}, written); wrap this one in runuser/setpriv",
                    f"{node.keyword} {key}",
                )

    def finish(self, omega: bool) -> None:
        """The notify table, with ``on_stop`` when the service has omega."""
        if not self.notify:
            return
        if omega:
            self.notify["on_stop"] = True
        self.table.set(
            "notify",
            self.notify,
            "keepalived runs notify scripts as root (or script_user); lvsd runs them "
            "without capabilities, with the change in LVSD_* variables",
        )


def command_of(node: Node) -> list[TomlValue]:
    """The command of ``KEYWORD SCRIPT ...``: the script split into words."""
    script = arg(node, 0, "a script")
    try:
        return list(shlex.split(script.text))
    except ValueError as exc:
        raise fail(script.where, f"cannot split the command: {exc}") from None


REAL_SERVER_KEYWORDS: Mapping[str, Callable[[RealServer, Node], None]] = {
    **dict.fromkeys(TIMING_KEYS, RealServer.ignore),
    **dict.fromkeys(CHECKERS, RealServer.checker),
    "weight": RealServer.weight,
    "uthreshold": RealServer.uthreshold,
    "lthreshold": RealServer.lthreshold,
    "lvs_method": RealServer.forward,  # keepalived 2.2.7 rejects lb_kind here (lab)
    "notify_up": RealServer.notify_command,
    "notify_down": RealServer.notify_command,
}
REAL_SERVER_ADVICE = {
    "smtp_alert": MAIL_ADVICE,
}
REAL_SERVER_UNKNOWN = "unknown real_server keyword; not converted"
