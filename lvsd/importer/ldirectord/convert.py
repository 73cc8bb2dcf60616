"""ldirectord.cf -> lvsd TOML.

:func:`~lvsd.importer.ldirectord.parse.read` gives the global settings and virtual
blocks; :class:`_Converter` writes a service per virtual, a real server per address of
each real= line, and (:mod:`~lvsd.importer.ldirectord.checks`) its check. Defaults are
ldirectord's code defaults (``set_defaults`` and the per-virtual defaults in ldirectord
itself), not its man page: quiescent ``no``, checkinterval 10 s, checktimeout 5 s,
negotiatetimeout 30 s, failurecount 1, scheduler wrr.
"""

from __future__ import annotations

import os
import re

from lvsd.config.values import MAX_U32
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
from lvsd.importer.ldirectord.checks import SERVICE_PORTS, Probe, write_check
from lvsd.importer.ldirectord.parse import (
    FORWARD,
    NUMBERS,
    Setting,
    Settings,
    Virtual,
    hostport,
    read,
    real,
    whole,
)
from lvsd.model import Scheduler

PORT_SERVICES = {port: name for name, port in SERVICE_PORTS.items()}
#: Global keys that only configure ldirectord itself (logging, process) or mail.
GLOBAL_ADVICE = {
    "emailalert": "lvsd sends no mail: alert on its logs or Prometheus metrics",
    "emailalertfreq": "lvsd sends no mail: alert on its logs or Prometheus metrics",
    "emailalertstatus": "lvsd sends no mail: alert on its logs or Prometheus metrics",
    "emailalertfrom": "lvsd sends no mail: alert on its logs or Prometheus metrics",
    "smtp": "lvsd sends no mail: alert on its logs or Prometheus metrics",
    "callback": "ldirectord's callback runs when the config file changes, not on a real "
    "server's change; lvsd has none (reload it with `lvsd reload`); for state changes "
    "see notify up/down",
    "fallbackcommand": "lvsd has no fallback command; use quorum up_command/down_command",
    "maintenancedir": "use `lvsd drain SERVICE ADDRESS:PORT` (and `lvsd undrain`) for maintenance",
    "readdquiescent": "lvsd keeps quiesced real servers in the table already",
    "checkcount": "deprecated in ldirectord; use failurecount (lvsd's fall)",
}
#: Global keys with nothing to convert (lvsd has its own process handling).
GLOBAL_IGNORED = {
    "autoreload",
    "logfile",
    "supervised",
    "fork",
    "cleanstop",
    "execute",
    "checkinterval",
}
#: Global keys the conversion reads (as defaults of every virtual).
GLOBAL_KEYS = {
    "checktimeout", "negotiatetimeout", "checkinterval", "failurecount", "quiescent",
    "fallback", "fallback6",
}  # fmt: skip
VIRTUAL_KEYS = {
    "checktype", "service", "request", "receive", "virtualhost", "checkport", "checkinterval",
    "checktimeout", "negotiatetimeout", "failurecount", "quiescent", "fallback", "fallback6",
    "httpmethod", "scheduler", "persistent", "netmask", "protocol", "ops", "schedflags",
    "servicename", "comment", "checkcommand", "cleanstop", "login", "passwd", "database",
    "secret", "emailalert", "emailalertfreq", "emailalertstatus", "smtp", "fallbackcommand",
    "monitorfile", "checkcount",
}  # fmt: skip
VIRTUAL_ADVICE = {
    **GLOBAL_ADVICE,
    "monitorfile": "lvsd reports state on /status and /metrics",
}
UNKNOWN = "unknown ldirectord setting; not converted"


class _Converter:
    """Writes the document and the list of what is left out."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.doc = Document()
        self.unconverted: list[Unconverted] = []
        self.names: set[str] = set()
        self.globals: Settings = {}

    def src(self, where: Where) -> str:
        return f"from {source_name(where.file, self.path)}:{where.line}"

    def skip(self, where: Where, keyword: str, advice: str) -> None:
        self.unconverted.append(Unconverted(where, keyword, advice))

    def setting(self, v: Virtual, key: str) -> Setting | None:
        return v.settings.get(key) or self.globals.get(key)

    def run(self) -> Conversion:
        self.globals, virtuals = read(self.path)
        self.doc.header = [
            f"lvsd config converted from {os.path.basename(self.path)} "
            "by `lvsd import ldirectord`.",
            "Comments say where each part came from and where ldirectord's behaviour differs",
            "from lvsd's defaults. Check it with: lvsd check -c THIS_FILE",
        ]
        for settings in [self.globals, *(v.settings for v in virtuals)]:
            for key, setting in settings.items():
                if key in NUMBERS:
                    NUMBERS[key](setting)
        for key, (_, where) in self.globals.items():
            if key in GLOBAL_ADVICE:
                self.skip(where, key, GLOBAL_ADVICE[key])
            elif key not in GLOBAL_KEYS and key not in GLOBAL_IGNORED:
                self.skip(where, key, UNKNOWN)
        for v in virtuals:
            self.virtual(v)
        if not virtuals:
            self.doc.header.append("No virtual service was found: no service was written.")
        self.unconverted.sort(key=lambda u: u.where.line)
        return Conversion(self.doc, self.unconverted)

    # -- virtual services

    def virtual(self, v: Virtual) -> None:
        s = v.settings
        fwmark: int | None = None
        head = v.head.strip()
        protocol_setting = s.get("protocol")
        protocol = protocol_setting[0].lower() if protocol_setting else None
        if re.fullmatch(r"[0-9]+", head):
            fwmark = whole((head, v.where), "firewall mark", 1, MAX_U32)
            address, port = None, 0
        else:
            address, vport = hostport(head, v.where, protocol or "tcp")
            if vport is None:
                raise fail(v.where, "a virtual service needs ADDRESS:PORT or a firewall mark")
            port = vport
        if protocol is None:
            protocol = "fwm" if fwmark is not None else ("udp" if port == 53 else "tcp")
        if fwmark is None and protocol not in ("tcp", "udp"):
            raise fail(
                protocol_setting[1] if protocol_setting else v.where,
                "protocol must be tcp or udp for an address service",
            )
        table = self.doc.table("services", self.name(v, fwmark, protocol, address, port))
        table.note(f"{self.src(v.where)} (virtual{'6' if v.family == 6 else ''}={head})")
        comment = s.get("comment")
        if comment:
            table.note(f"comment: {comment[0]}")
        if fwmark is not None:
            table.set("fwmark", fwmark)
            if v.family == 6:
                table.set("family", "inet6")
        else:
            assert address is not None
            table.set("address", address)
            table.set("port", port)
            table.set("protocol", protocol, None if protocol_setting else "ldirectord's default")
        self.service_settings(v, table)
        service = self.service_kind(v, port, protocol)
        for text, where in v.reals:
            self.real(v, text, where, table, service, protocol, port)

    def name(
        self, v: Virtual, fwmark: int | None, protocol: str, address: str | None, port: int
    ) -> str:
        """The service's table name: servicename=, else from the mark or address."""
        name_setting = v.settings.get("servicename")
        if name_setting:
            label = name_setting[0]
        elif fwmark is not None:
            label = f"fwmark_{fwmark}"
        else:
            assert address is not None
            label = address_name(protocol, address, port)
        return service_name(label, self.names)

    def service_settings(self, v: Virtual, table: Table) -> None:
        s = v.settings
        scheduler = s.get("scheduler")
        if scheduler:
            if scheduler[0] not in {x.value for x in Scheduler}:
                self.skip(scheduler[1], "scheduler", f"{scheduler[0]!r} is not known to lvsd")
            else:
                table.set("scheduler", scheduler[0])
        else:
            table.set("scheduler", "wrr", "ldirectord's default")
        flags = s.get("schedflags")
        if flags:
            table.set("flags", [f for f in re.split(r"[,\s]+", flags[0]) if f])
        self.persistence(v, table)
        ops = s.get("ops")
        if ops and ops[0] == "yes":
            table.set("one_packet", True)
        quiescent = self.setting(v, "quiescent")
        if quiescent and quiescent[0] == "yes":
            table.set("on_failure", "quiesce", "quiescent=yes")
        else:
            table.set("on_failure", "remove", "ldirectord's default is quiescent=no")
        table.set(
            "initial_state", "down", "ldirectord adds a real server after its first good check"
        )
        fallback = s.get("fallback6" if v.family == 6 else "fallback") or self.globals.get(
            "fallback6" if v.family == 6 else "fallback"
        )
        if fallback:
            self.fallback(fallback, table)
        for key, (_, where) in s.items():
            if key in VIRTUAL_ADVICE:
                self.skip(where, key, VIRTUAL_ADVICE[key])
            elif key not in VIRTUAL_KEYS:
                self.skip(where, key, UNKNOWN)

    def persistence(self, v: Virtual, table: Table) -> None:
        """persistent= and its netmask=."""
        persistent = v.settings.get("persistent")
        if persistent:
            table.set("persistence", whole(persistent, "persistent", 0, MAX_U32))
            netmask = v.settings.get("netmask")
            if netmask:
                try:
                    prefix = mask_to_prefix(netmask[0])
                except ValueError:
                    raise fail(netmask[1], f"bad netmask {netmask[0]!r}") from None
                table.set("persistence_netmask", prefix_for_lvsd(prefix, v.family), netmask[0])

    def fallback(self, fallback: Setting, table: Table) -> None:
        words = fallback[0].split()
        address, port = hostport(words[0], fallback[1], "tcp")
        sorry: dict[str, TomlValue] = {"address": address}
        if port is not None:
            sorry["port"] = port
        if len(words) > 1:
            method = FORWARD.get(words[1])
            if method is None:
                raise fail(fallback[1], "fallback forward method must be gate, masq or ipip")
            sorry["forward"] = method[0]
        table.set("sorry_server", sorry)

    def service_kind(self, v: Virtual, port: int, protocol: str) -> str:
        service = v.settings.get("service")
        if service:
            return service[0]
        if protocol == "fwm":
            return "none"
        return PORT_SERVICES.get(port, "none")

    # -- real servers

    def real(
        self,
        v: Virtual,
        text: str,
        where: Where,
        service: Table,
        kind: str,
        protocol: str,
        vport: int,
    ) -> None:
        line = real(text, where, protocol)
        forward, tunnel = FORWARD[line.method]
        for address in line.addresses:
            table = self.doc.table(*service.path, "real_servers", array=True)
            table.note(f"{self.src(where)} (real={text.strip()})")
            table.set("address", address)
            if line.port is not None and line.port != 0:
                table.set("port", line.port)
            elif forward == "nat" and service.get("fwmark") is None:
                table.note(
                    "no port: ldirectord gives the kernel port 0 for a masq real server "
                    "(checked in the lab), which cannot serve; lvsd uses the service's port"
                )
            table.set("weight", line.weight)
            table.set("forward", forward)
            if tunnel:
                table.set("tunnel", tunnel)
            if line.lower is not None:
                table.set("lower_threshold", line.lower)
            if line.upper is not None:
                table.set("upper_threshold", line.upper)
            probe = Probe(
                v, table, kind, protocol, line.port or vport, line.request, line.receive, where
            )
            write_check(self, probe)


def convert(path: str) -> Conversion:
    """Convert the ldirectord config at ``path``; ImportConfigError if it is malformed."""
    return _Converter(path).run()
