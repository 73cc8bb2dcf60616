"""keepalived.conf -> lvsd TOML: :class:`_Converter` maps the ``virtual_server`` blocks
that :func:`~lvsd.importer.keepalived.parse.parse` read onto lvsd services and lists
what it cannot express.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from dataclasses import dataclass

from lvsd.importer.common import (
    Conversion,
    Unconverted,
    Where,
    address_name,
    fail,
    mask_to_prefix,
    prefix_for_lvsd,
    service_name,
    source_name,
)
from lvsd.importer.emit import Document, Table, TomlValue
from lvsd.importer.keepalived.checks import CHECKERS, TIMING_KEYS, Timing, convert_checker
from lvsd.importer.keepalived.parse import Node, parse
from lvsd.importer.keepalived.read import arg, to_bool, to_integer, to_ip, to_port
from lvsd.model import Scheduler

#: keepalived's defaults where they differ from lvsd's.
PERSISTENCE_TIMEOUT = 360  # "persistence_timeout" with no value, or a port-0 service
#: Without ``protocol`` keepalived asks the kernel for UDP (check_data.c:
#: "no protocol set - defaulting to UDP"); checked in the lab.
DEFAULT_PROTOCOL = "udp"

VRRP_ADVICE = "VRRP is not part of lvsd: keep keepalived running for VRRP only"
TOP_LEVEL_ADVICE: dict[str, str] = {
    "global_defs": "global settings (router_id, notification email, SMTP alerts) have no "
    "lvsd equivalent: lvsd logs events and exports Prometheus metrics instead",
    "static_ipaddress": "configure these addresses with the system's network configuration",
    "static_routes": "configure these routes with the system's network configuration",
    "static_rules": "configure these rules with the system's network configuration",
    "linkbeat_interfaces": VRRP_ADVICE,
    "net_namespace": "run lvsd inside the namespace instead (ip netns exec, or systemd's "
    "NetworkNamespacePath=)",
    "net_namespace_ipvs": "run lvsd inside the namespace instead",
    "instance": "run one lvsd per instance, each with its own config",
    "use_pid_dir": "lvsd runs under systemd; no pid file setting",
    "bfd_instance": "BFD is not part of lvsd: keep keepalived running for BFD",
    "track_file": "file tracking is not part of lvsd; use an exec check that reads the file",
    "garp_group": VRRP_ADVICE,
}
SCHED_FLAG_WORDS = {"sh-fallback", "sh-port", "mh-fallback", "mh-port"}
NOTIFY_ADVICE = (
    "lvsd has no per-server hooks: it logs realserver.up / realserver.down events and "
    "exports lvsd_realserver_up; act on those, or use quorum up_command/down_command"
)


@dataclass(slots=True)
class _Member:
    """One lvs service key of a virtual_server: the TOML keys and a name."""

    entries: dict[str, TomlValue]
    label: str
    family: int  # 4 or 6; fwmark: 4 unless ip_family inet6
    grouped: bool = False  # a member of a virtual_server_group


class _Converter:
    def __init__(self, path: str) -> None:
        self.path = path
        self.doc = Document()
        self.unconverted: list[Unconverted] = []
        self.groups: dict[str, Node] = {}
        self.names: set[str] = set()

    def src(self, where: Where) -> str:
        return f"from {source_name(where.file, self.path)}:{where.line}"

    def skip(self, node: Node, advice: str, keyword: str | None = None) -> None:
        self.unconverted.append(Unconverted(node.where, keyword or node.keyword, advice))

    def run(self, nodes: list[Node]) -> Conversion:
        name = os.path.basename(self.path)
        self.doc.header = [
            f"lvsd config converted from {name} by `lvsd import keepalived`.",
            "Comments say where each part came from and where keepalived's behaviour differs",
            "from lvsd's defaults. Check it with: lvsd check -c THIS_FILE",
        ]
        for node in nodes:
            if node.keyword == "virtual_server_group":
                self.groups[arg(node, 0, "a name").text] = node
        for node in nodes:
            self.top(node)
        if not any(t.path[:1] == ("services",) for t in self.doc.tables):
            self.doc.header.append("No virtual_server was found: no service was written.")
        return Conversion(self.doc, self.unconverted)

    def top(self, node: Node) -> None:
        keyword = node.keyword
        if keyword == "virtual_server":
            self.virtual_server(node)
        elif keyword == "virtual_server_group":
            return
        elif keyword.startswith("vrrp_"):
            self.skip(node, VRRP_ADVICE)
        elif keyword in TOP_LEVEL_ADVICE:
            self.skip(node, TOP_LEVEL_ADVICE[keyword])
        else:
            raise fail(node.where, f"unknown top-level keyword {keyword!r}")

    # -- virtual servers

    def members(self, node: Node) -> list[_Member]:
        args = node.args
        if not args:
            raise fail(
                node.where, "virtual_server needs an address and port, fwmark N or group NAME"
            )
        family6 = (f := node.find("ip_family")) is not None and f.words()[:1] == ["inet6"]
        head = args[0].text
        if head == "group":
            name = arg(node, 1, "a group name").text
            group = self.groups.get(name)
            if group is None:
                raise fail(args[1].where, f"virtual_server_group {name!r} is not defined")
            result = []
            for line in group.children or ():
                result.extend(self.group_line(line, family6))
            if not result:
                raise fail(group.where, f"virtual_server_group {name!r} has no members")
            for member in result:
                member.grouped = True
            return result
        if head == "fwmark":
            mark = to_integer(arg(node, 1, "a firewall mark"))
            return [self.fwmark_member(mark, family6)]
        address = to_ip(args[0])
        port = to_port(arg(node, 1, "a port"))
        return [self.address_member(address, port)]

    def fwmark_member(self, mark: int, family6: bool) -> _Member:
        entries: dict[str, TomlValue] = {"fwmark": mark}
        if family6:
            entries["family"] = "inet6"
        return _Member(entries, f"fwmark_{mark}", 6 if family6 else 4)

    def address_member(self, address: str, port: int) -> _Member:
        version = ipaddress.ip_address(address).version
        return _Member({"address": address, "port": port}, f"{address}_{port}", version)

    def group_line(self, line: Node, family6: bool) -> list[_Member]:
        words = [line.keyword, *line.words()]
        if words[0] == "fwmark":
            if len(words) < 2:
                raise fail(line.where, "fwmark needs a mark")
            return [self.fwmark_member(to_integer(line.args[0]), family6)]
        if len(words) < 2:
            raise fail(line.where, "a group member needs an address and a port")
        port = to_port(line.args[0])
        text = words[0]
        first, dash, end = text.rpartition("-") if "-" in text else (text, "", "")
        try:
            start = ipaddress.ip_address(first if dash else text)
        except ValueError:
            raise fail(line.where, f"expected an address or a range, got {text!r}") from None
        if not dash:
            return [self.address_member(str(start), port)]
        # a range replaces the last byte (IPv4) or the last 16-bit group (IPv6, hex)
        try:
            last = int(end, 16 if start.version == 6 else 10)
        except ValueError:
            raise fail(line.where, f"bad range end in {text!r}") from None
        width = 0xFFFF if start.version == 6 else 0xFF
        low = int(start) & width
        if not low <= last <= width:
            raise fail(line.where, f"range {text!r} ends before it starts")
        base = int(start) - low
        cls = type(start)
        return [self.address_member(str(cls(base + n)), port) for n in range(low, last + 1)]

    def virtual_server(self, node: Node) -> None:
        children = node.children or []
        members = self.members(node)
        # keepalived makes a service with port 0 persistent (360 s) when it is not;
        # for a group, one member with port 0 makes the whole group persistent.
        zero_port = any(m.entries.get("port") == 0 for m in members)
        before = len(self.doc.tables)
        for member in members:
            self.service(node, children, member, zero_port=zero_port)
        if not any(child.keyword == "real_server" for child in children):
            # converted (so errors are reported) but dropped, as keepalived drops it
            del self.doc.tables[before:]
            self.doc.header.append(
                f"virtual_server {' '.join(node.words())} ({self.src(node.where)}) has no "
                "real_server: keepalived ignores it, so it was not written."
            )

    def service(
        self, node: Node, children: list[Node], member: _Member, *, zero_port: bool = False
    ) -> None:
        if member.entries.get("port") == 0:
            self.skip(
                node,
                f"{member.entries['address']} port 0 (a persistent all-ports service): "
                "lvsd's config needs a port from 1 to 65535; mark the traffic with a "
                "firewall mark and use a fwmark service",
                "port 0",
            )
            return
        protocol = DEFAULT_PROTOCOL
        proto = node.find("protocol")
        if proto is not None:
            protocol = arg(proto, 0, "TCP, UDP or SCTP").text.lower()
            if protocol not in ("tcp", "udp", "sctp"):
                raise fail(proto.where, f"unknown protocol {protocol!r}")
        label = member.label if "fwmark" in member.entries else f"{protocol}_{member.label}"
        if "address" in member.entries:
            label = address_name(
                protocol, str(member.entries["address"]), int(str(member.entries["port"]))
            )
        name = service_name(label, self.names)
        table = self.doc.table("services", name)
        table.note(f"{self.src(node.where)} (virtual_server {' '.join(node.words())})")
        for key, value in member.entries.items():
            table.set(key, value)
        if "address" in member.entries:
            table.set(
                "protocol",
                protocol,
                None
                if proto
                else "keepalived's default without protocol is UDP (it logs "
                "'no protocol set - defaulting to UDP')",
            )
        timing = Timing().child(node)
        flags: list[str] = []
        sorry: dict[str, TomlValue] = {}
        quorum: dict[str, TomlValue] = {}
        servers: list[Node] = []
        scheduler_set = False
        for child in children:
            k = child.keyword
            if k in ("lb_algo", "lvs_sched"):
                scheduler = arg(child, 0, "a scheduler").text.lower()
                if scheduler not in {s.value for s in Scheduler}:
                    self.skip(
                        child,
                        f"scheduler {scheduler!r} is not known to lvsd; pick one of "
                        + ", ".join(s.value for s in Scheduler),
                    )
                    continue
                table.set("scheduler", scheduler)
                scheduler_set = True
            elif k in ("lb_kind", "lvs_method"):
                self.method(child, table, table)
            elif k == "persistence_timeout":
                seconds = to_integer(child.args[0]) if child.args else PERSISTENCE_TIMEOUT
                table.set(
                    "persistence",
                    seconds,
                    None if child.args else "keepalived's default for a bare persistence_timeout",
                )
            elif k == "persistence_granularity":
                token = arg(child, 0, "a netmask")
                try:
                    prefix = mask_to_prefix(token.text)
                except ValueError:
                    raise fail(token.where, f"bad netmask {token.text!r}") from None
                table.set(
                    "persistence_netmask", prefix_for_lvsd(prefix, member.family), f"{token.text}"
                )
            elif k in ("protocol", "ip_family", "real_server") or k in TIMING_KEYS:
                if k == "real_server":
                    servers.append(child)
            elif k == "ops":
                if "address" in member.entries and protocol != "udp":
                    table.note(
                        f"ops ignored: keepalived drops one-packet scheduling for {protocol}"
                    )
                else:
                    table.set("one_packet", True)
            elif k in SCHED_FLAG_WORDS:
                flags.append(k)
            elif k in ("lvs_flags", "flag-1", "flag-2", "flag-3"):
                words = child.words() if k == "lvs_flags" else [k]
                for word in words:
                    if word in SCHED_FLAG_WORDS:
                        flags.append(word)
                    else:
                        self.skip(
                            child,
                            f"scheduler flag {word!r} has no lvsd equivalent "
                            "(lvsd knows sh-fallback, sh-port, mh-fallback, mh-port)",
                        )
            elif k == "quorum":
                quorum["minimum"] = to_integer(arg(child))
            elif k == "hysteresis":
                quorum["hysteresis"] = to_integer(arg(child))
            elif k in ("quorum_up", "quorum_down"):
                script = arg(child, 0, "a script")
                try:
                    command: list[TomlValue] = list(shlex.split(script.text))
                except ValueError as exc:
                    raise fail(script.where, f"cannot split the command: {exc}") from None
                quorum["up_command" if k == "quorum_up" else "down_command"] = command
                if len(child.args) > 1:
                    self.skip(
                        child,
                        "lvsd runs quorum commands as its own user; wrap the "
                        "command in runuser/setpriv to change user",
                        f"{k} user",
                    )
            elif k == "sorry_server":
                sorry["address"] = to_ip(arg(child, 0, "an address"))
                if len(child.args) > 1:
                    sorry["port"] = to_port(child.args[1])
            elif k == "sorry_server_lvs_method":
                holder = Table(path=())
                self.method(child, holder, table)
                forward = holder.get("forward")
                if forward is not None:
                    sorry["forward"] = forward
            elif k == "sorry_server_inhibit":
                # keepalived then keeps an unneeded sorry server at weight 0 instead of
                # deleting it; lvsd deletes it. Neither sends it new connections while
                # a real server is up, and the kernel keeps serving the connections it
                # has either way (expire_nodest_conn=0), so this is only a comment.
                table.note(
                    "sorry_server_inhibit: lvsd removes the sorry server when a real "
                    "server is up (keepalived keeps it at weight 0); no new connection "
                    "goes to it either way"
                )
            elif k == "omega":
                self.skip(child, "lvsd does not run quorum down_command when it stops")
            elif k == "ha_suspend":
                self.skip(child, "lvsd always checks, whether or not the VIP is configured")
            elif k == "smtp_alert":
                self.skip(child, "lvsd sends no mail: alert on its logs or Prometheus metrics")
            elif k == "snmp_name":
                self.skip(child, "lvsd has no SNMP agent: the service name is its TOML table name")
            elif k == "persistence_engine":
                self.skip(child, "persistence engines (sip) are not supported by lvsd")
            else:
                self.skip(child, "unknown virtual_server keyword; not converted")
        if not scheduler_set:
            table.set("scheduler", "wlc", "keepalived's default (lvsd's is wrr)")
        if zero_port and "address" in member.entries and table.get("persistence") is None:
            table.set(
                "persistence",
                PERSISTENCE_TIMEOUT,
                "keepalived makes a port-0 service persistent (360 s)",
            )
        if flags:
            table.set("flags", list(dict.fromkeys(flags)))
        if table.get("forward") is None:
            table.set("forward", "nat", "keepalived's default")
        self.service_states(table, node, servers, timing)
        if "address" in sorry:
            self.sorry_port(sorry, table, member)
            table.set("sorry_server", sorry)
        if quorum:
            self.clamp_quorum(quorum, servers)
            table.set("quorum", quorum)
        for server in servers:
            self.real_server(server, member, timing, table)

    def sorry_port(self, sorry: dict[str, TomlValue], table: Table, member: _Member) -> None:
        """The sorry server's port as keepalived gives it to the kernel: like a real
        server's with DR/TUN (the service's port, 0 for a firewall mark); with NAT the
        port written, and without one keepalived gives port 0 (checked in the lab),
        where lvsd uses the service's port."""
        forward = sorry.get("forward") or table.get("forward")
        if forward != "nat":
            if "port" in sorry and sorry["port"] != member.entries.get("port", 0):
                table.note(
                    f"sorry_server port {sorry['port']} not written: keepalived gives "
                    "the kernel the service's port unless forwarding is NAT"
                )
            sorry.pop("port", None)
        elif "port" not in sorry and "address" in member.entries:
            table.note(
                "sorry_server without a port: keepalived gives the kernel port 0, which "
                "cannot serve NAT traffic; lvsd uses the service's port"
            )

    def clamp_quorum(self, quorum: dict[str, TomlValue], servers: list[Node]) -> None:
        """keepalived lowers a quorum above the real servers' total weight to that
        total, and a hysteresis >= quorum to quorum - 1 (check_data.c)."""
        total = 0
        for server in servers:
            weight = server.find("weight")
            total += to_integer(arg(weight)) if weight is not None else 1
        minimum = quorum.get("minimum")
        if isinstance(minimum, int) and minimum > total:
            quorum["minimum"] = minimum = total
        hysteresis = quorum.get("hysteresis")
        if isinstance(minimum, int) and isinstance(hysteresis, int) and hysteresis >= minimum:
            quorum["hysteresis"] = max(minimum - 1, 0)

    def service_states(self, table: Table, node: Node, servers: list[Node], timing: Timing) -> None:
        """initial_state and on_failure: per service in lvsd, per real server in keepalived."""
        alphas = set()
        inhibits = set()
        for server in servers:
            inherited = timing.child(server)
            alphas.add(to_bool(inherited.nodes.get("alpha")))
            inhibits.add(to_bool(inherited.nodes.get("inhibit_on_failure")))
            for checker in server.children or ():
                if checker.keyword in CHECKERS:
                    alphas.add(to_bool(inherited.child(checker).nodes.get("alpha")))
        alpha = True in alphas
        inhibit = True in inhibits
        if alpha:
            table.set("initial_state", "down", "alpha")
        else:
            table.set(
                "initial_state", "up", "keepalived starts real servers up unless alpha is set"
            )
        if len(alphas) > 1:
            self.skip(
                node,
                "alpha is set on some real servers or checkers only; lvsd sets "
                "initial_state per service (written: down)",
                "alpha",
            )
        if inhibit:
            table.set("on_failure", "quiesce", "inhibit_on_failure")
        else:
            table.set(
                "on_failure",
                "remove",
                "keepalived removes failed real servers unless inhibit_on_failure",
            )
        if len(inhibits) > 1:
            self.skip(
                node,
                "inhibit_on_failure is set on some real servers only; lvsd sets "
                "on_failure per service (written: quiesce)",
                "inhibit_on_failure",
            )

    def method(self, node: Node, table: Table, service: Table) -> None:
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
            self.skip(
                node,
                f"tunnel checksum options ({' '.join(rest)}) are not supported by "
                "lvsd; the kernel default applies",
                f"{node.keyword} {' '.join(rest)}",
            )

    # -- real servers

    def real_server(self, node: Node, member: _Member, parent: Timing, service: Table) -> None:
        address = to_ip(arg(node, 0, "an address"))
        given = to_port(node.args[1]) if len(node.args) > 1 else None
        name = service.path[-1]
        table = self.doc.table("services", name, "real_servers", array=True)
        table.note(f"{self.src(node.where)} (real_server {' '.join(node.words())})")
        table.set("address", address)
        port = self.kernel_port(node, given, member, service)
        if port is not None:
            table.set("port", port)
        if port != given and given is not None:
            table.note(
                f"port {given} not written: keepalived gives the kernel the service's port "
                f"(0 for a firewall mark) unless forwarding is NAT; checks use port {given}"
            )
        timing = parent.child(node)
        checks: list[Node] = []
        for child in node.children or ():
            k = child.keyword
            if k == "weight":
                table.set("weight", to_integer(arg(child)))
            elif k == "uthreshold":
                table.set("upper_threshold", to_integer(arg(child)))
            elif k == "lthreshold":
                table.set("lower_threshold", to_integer(arg(child)))
            elif k == "lvs_method":  # keepalived 2.2.7 rejects lb_kind here (lab)
                self.method(child, table, service)
            elif k in ("notify_up", "notify_down"):
                self.skip(child, NOTIFY_ADVICE)
            elif k == "smtp_alert":
                self.skip(child, "lvsd sends no mail: alert on its logs or Prometheus metrics")
            elif k in CHECKERS:
                checks.append(child)
            elif k in TIMING_KEYS:
                continue
            else:
                self.skip(child, "unknown real_server keyword; not converted")
        if not checks:
            table.note("no checker: keepalived keeps this real server in the pool; so does lvsd")
        check_port = given if given is not None else int(str(member.entries.get("port", 0)))
        for checker in checks:
            convert_checker(
                self,
                checker,
                timing.child(checker),
                name,
                check_port,
                explicit=port != given and given is not None,
            )

    def kernel_port(
        self, node: Node, given: int | None, member: _Member, service: Table
    ) -> int | None:
        """The real server's port as keepalived gives it to the kernel (None: the
        service's port, lvsd's default). Except with NAT, keepalived sets it to the
        service's port, or to 0 for a firewall-mark service (check_data.c); groups
        keep what is written."""
        method = node.find("lvs_method")
        forward = arg(method).text.lower() if method is not None else str(service.get("forward"))
        if forward == "nat" or member.grouped:
            return given
        if "fwmark" in member.entries:
            return None
        return None if given is None else int(str(member.entries["port"]))


def convert(path: str) -> Conversion:
    """Convert the keepalived config at ``path``; ImportConfigError if it is malformed."""
    nodes, notes = parse(path)
    converter = _Converter(path)
    converter.unconverted.extend(notes)
    result = converter.run(nodes)
    result.unconverted.sort(key=lambda u: (u.where.file != path, u.where.file, u.where.line))
    return result
