"""keepalived.conf -> lvsd TOML: :class:`_Converter` maps the ``virtual_server`` blocks
that :func:`~lvsd.importer.keepalived.parse.parse` read onto lvsd services and lists
what it cannot express.
"""

from __future__ import annotations

import ipaddress
import os

from lvsd.importer.common import (
    Conversion,
    Unconverted,
    Where,
    address_name,
    fail,
    service_name,
    source_name,
)
from lvsd.importer.emit import Document, Table, TomlValue
from lvsd.importer.keepalived.checks import Timing, convert_checker
from lvsd.importer.keepalived.parse import Node, parse
from lvsd.importer.keepalived.read import arg, dispatch, to_integer, to_ip, to_port
from lvsd.importer.keepalived.services import (
    REAL_SERVER_ADVICE,
    REAL_SERVER_KEYWORDS,
    REAL_SERVER_UNKNOWN,
    SERVICE_ADVICE,
    SERVICE_KEYWORDS,
    SERVICE_UNKNOWN,
    Member,
    RealServer,
    Service,
)

#: Without ``protocol`` keepalived asks the kernel for UDP (check_data.c:
#: "no protocol set - defaulting to UDP"); checked in the lab.
DEFAULT_PROTOCOL = "udp"

#: keepalived's lvs_timeouts words -> lvsd's [ipvs] keys.
LVS_TIMEOUT_KEYS = {"tcp": "tcp", "tcpfin": "tcp_fin", "udp": "udp"}

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


class _Converter:
    """Walks the top-level nodes; writes the document and the list of what is left out."""

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
        elif keyword == "global_defs":
            self.global_defs(node)
        elif keyword == "virtual_server_group":
            return
        elif keyword.startswith("vrrp_"):
            self.skip(node, VRRP_ADVICE)
        elif keyword in TOP_LEVEL_ADVICE:
            self.skip(node, TOP_LEVEL_ADVICE[keyword])
        else:
            raise fail(node.where, f"unknown top-level keyword {keyword!r}")

    def global_defs(self, node: Node) -> None:
        """``lvs_timeouts [tcp S] [tcpfin S] [udp S]`` -> ``[ipvs]``; the rest of the
        block is listed once, as not converted."""
        rest = False
        for child in node.children or ():
            if child.keyword != "lvs_timeouts":
                rest = True
                continue
            table = self.doc.table("ipvs")
            table.note(f"{self.src(child.where)} (lvs_timeouts)")
            words = child.args
            for i in range(0, len(words), 2):
                name = words[i].text.lower()
                if name not in LVS_TIMEOUT_KEYS or i + 1 >= len(words):
                    raise fail(
                        words[i].where, f"expected tcp, tcpfin or udp and seconds, got {name!r}"
                    )
                table.set(LVS_TIMEOUT_KEYS[name], to_integer(words[i + 1]))
        if rest or not node.children:
            self.skip(node, TOP_LEVEL_ADVICE["global_defs"])

    # -- virtual servers

    def virtual_server(self, node: Node) -> None:
        children = node.children or []
        members = _members(node, self.groups)
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
        self, node: Node, children: list[Node], member: Member, *, zero_port: bool = False
    ) -> None:
        """The lvsd service of one member of ``node``, and its real servers."""
        if member.entries.get("port") == 0:
            self.skip(
                node,
                f"{member.entries['address']} port 0 (a persistent all-ports service): "
                "lvsd's config needs a port from 1 to 65535; mark the traffic with a "
                "firewall mark and use a fwmark service",
                "port 0",
            )
            return
        protocol = _protocol(node)
        service = Service(self, self.service_table(node, member, protocol), member, protocol)
        dispatch(service, children, SERVICE_KEYWORDS, SERVICE_ADVICE, SERVICE_UNKNOWN, self)
        timing = Timing().child(node)
        service.finish(node, timing, zero_port=zero_port)
        for server in service.servers:
            self.real_server(server, member, timing, service.table, omega=bool(service.omega))

    def service_table(self, node: Node, member: Member, protocol: str) -> Table:
        """``[services.NAME]`` with the member's keys and the protocol."""
        if "address" in member.entries:
            address, port = str(member.entries["address"]), int(str(member.entries["port"]))
            label = address_name(protocol, address, port)
        else:
            label = member.label
        table = self.doc.table("services", service_name(label, self.names))
        table.note(f"{self.src(node.where)} (virtual_server {' '.join(node.words())})")
        for key, value in member.entries.items():
            table.set(key, value)
        if "address" in member.entries:
            table.set(
                "protocol",
                protocol,
                None
                if node.find("protocol") is not None
                else "keepalived's default without protocol is UDP (it logs "
                "'no protocol set - defaulting to UDP')",
            )
        return table

    # -- real servers

    def real_server(
        self, node: Node, member: Member, parent: Timing, service: Table, *, omega: bool = False
    ) -> None:
        """``[[services.NAME.real_servers]]`` and its checks; ``omega``: its notify
        down command also runs when lvsd stops."""
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
        server = RealServer(self, table)
        keywords, advice = REAL_SERVER_KEYWORDS, REAL_SERVER_ADVICE
        dispatch(server, node.children or (), keywords, advice, REAL_SERVER_UNKNOWN, self)
        server.finish(omega)
        if not server.checks:
            table.note("no checker: keepalived keeps this real server in the pool; so does lvsd")
        check_port = given if given is not None else int(str(member.entries.get("port", 0)))
        for checker in server.checks:
            convert_checker(
                self,
                checker,
                timing.child(checker),
                name,
                check_port,
                explicit=port != given and given is not None,
            )

    def kernel_port(
        self, node: Node, given: int | None, member: Member, service: Table
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


def _members(node: Node, groups: dict[str, Node]) -> list[Member]:
    """The lvs services ``virtual_server ADDRESS PORT|fwmark N|group NAME`` names."""
    args = node.args
    if not args:
        raise fail(node.where, "virtual_server needs an address and port, fwmark N or group NAME")
    family6 = (f := node.find("ip_family")) is not None and f.words()[:1] == ["inet6"]
    head = args[0].text
    if head == "group":
        name = arg(node, 1, "a group name").text
        group = groups.get(name)
        if group is None:
            raise fail(args[1].where, f"virtual_server_group {name!r} is not defined")
        result: list[Member] = []
        for line in group.children or ():
            result.extend(_group_line(line, family6))
        if not result:
            raise fail(group.where, f"virtual_server_group {name!r} has no members")
        for member in result:
            member.grouped = True
        return result
    if head == "fwmark":
        mark = to_integer(arg(node, 1, "a firewall mark"))
        return [_fwmark_member(mark, family6)]
    address = to_ip(args[0])
    port = to_port(arg(node, 1, "a port"))
    return [_address_member(address, port)]


def _fwmark_member(mark: int, family6: bool) -> Member:
    entries: dict[str, TomlValue] = {"fwmark": mark}
    if family6:
        entries["family"] = "inet6"
    return Member(entries, f"fwmark_{mark}", 6 if family6 else 4)


def _address_member(address: str, port: int) -> Member:
    version = ipaddress.ip_address(address).version
    return Member({"address": address, "port": port}, f"{address}_{port}", version)


def _group_line(line: Node, family6: bool) -> list[Member]:
    """The services of one virtual_server_group line: ``ADDRESS[-LAST] PORT`` or ``fwmark N``."""
    words = [line.keyword, *line.words()]
    if words[0] == "fwmark":
        if len(words) < 2:
            raise fail(line.where, "fwmark needs a mark")
        return [_fwmark_member(to_integer(line.args[0]), family6)]
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
        return [_address_member(str(start), port)]
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
    return [_address_member(str(cls(base + n)), port) for n in range(low, last + 1)]


def _protocol(node: Node) -> str:
    """The virtual_server's protocol: tcp, udp or sctp (keepalived's default: udp)."""
    proto = node.find("protocol")
    if proto is None:
        return DEFAULT_PROTOCOL
    protocol = arg(proto, 0, "TCP, UDP or SCTP").text.lower()
    if protocol not in ("tcp", "udp", "sctp"):
        raise fail(proto.where, f"unknown protocol {protocol!r}")
    return protocol


def convert(path: str) -> Conversion:
    """Convert the keepalived config at ``path``; ImportConfigError if it is malformed."""
    nodes, notes = parse(path)
    converter = _Converter(path)
    converter.unconverted.extend(notes)
    result = converter.run(nodes)
    result.unconverted.sort(key=lambda u: (u.where.file != path, u.where.file, u.where.line))
    return result
