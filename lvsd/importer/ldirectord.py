"""ldirectord.cf -> lvsd TOML.

ldirectord's format: global ``key=value`` lines, then ``virtual=`` (or ``virtual6=``)
lines each followed by an indented block of settings and ``real=`` lines. Defaults
are ldirectord's code defaults (``set_defaults`` and the per-virtual defaults in
ldirectord itself), not its man page: quiescent ``no``, checkinterval 10 s,
checktimeout 5 s, negotiatetimeout 30 s, failurecount 1, scheduler wrr.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from lvsd.config.values import MAX_PORT, MAX_U32
from lvsd.importer.common import (
    Conversion,
    Unconverted,
    Where,
    address_name,
    expand_range,
    fail,
    mask_to_prefix,
    prefix_for_lvsd,
    service_name,
    source_name,
)
from lvsd.importer.emit import Document, Table, TomlValue
from lvsd.model import Scheduler

CHECKINTERVAL = 10.0
CHECKTIMEOUT = 5.0
NEGOTIATETIMEOUT = 30.0
FAILURECOUNT = 1

FORWARD = {"gate": ("dr", None), "masq": ("nat", None), "ipip": ("tun", "ipip")}
SERVICE_PORTS = {
    "ftp": 21, "smtp": 25, "dns": 53, "http": 80, "pop": 110, "nntp": 119, "imap": 143,
    "ldap": 389, "https": 443, "submission": 587, "ldaps": 636, "imaps": 993, "pops": 995,
    "oracle": 1521, "radius": 1812, "http_proxy": 3128, "mysql": 3306, "sip": 5060,
    "pgsql": 5432,
}  # fmt: skip
PORT_SERVICES = {port: name for name, port in SERVICE_PORTS.items()}
UNSUPPORTED_SERVICES = {
    "ftp", "imap", "imaps", "pop", "pops", "nntp", "ldap", "ldaps", "mysql", "pgsql",
    "oracle", "radius", "sip", "http_proxy",
}  # fmt: skip
#: Global keys that only configure ldirectord itself (logging, process) or mail.
GLOBAL_ADVICE = {
    "emailalert": "lvsd sends no mail: alert on its logs or Prometheus metrics",
    "emailalertfreq": "lvsd sends no mail: alert on its logs or Prometheus metrics",
    "emailalertstatus": "lvsd sends no mail: alert on its logs or Prometheus metrics",
    "emailalertfrom": "lvsd sends no mail: alert on its logs or Prometheus metrics",
    "smtp": "lvsd sends no mail: alert on its logs or Prometheus metrics",
    "callback": "lvsd has no callback; watch its realserver.up/down log events",
    "fallbackcommand": "lvsd has no fallback command; use quorum up_command/down_command",
    "maintenancedir": "use `lvsd ctl drain` / `lvsd ctl disable` for maintenance",
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


@dataclass(slots=True)
class _Virtual:
    where: Where
    family: int  # 4 or 6
    head: str  # the text after virtual= / virtual6=
    settings: dict[str, tuple[str, Where]] = field(default_factory=dict)
    reals: list[tuple[str, Where, bool]] = field(default_factory=list)  # text, where, v6


def _seconds(setting: tuple[str, Where], key: str) -> float:
    """A time setting (``checktimeout=5``): a finite number > 0, else an error."""
    text, where = setting
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise fail(where, f"{key}: expected a number of seconds > 0, got {text!r}")
    return value


def _whole(setting: tuple[str, Where], key: str, low: int, high: int | None = None) -> int:
    """An integer setting (``failurecount=3``) within ``low``..``high``, else an error."""
    text, where = setting
    digits = re.fullmatch(r"[0-9]+", text.strip()) is not None
    if not digits or int(text) < low or (high is not None and int(text) > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise fail(where, f"{key}: expected an integer {bound}, got {text!r}")
    return int(text)


#: The numeric settings, global or per virtual: each is checked wherever it is written,
#: even where the conversion does not use it (ldirectord refuses such a file too).
NUMBERS: dict[str, Callable[[tuple[str, Where]], float | int]] = {
    "checkinterval": lambda s: _seconds(s, "checkinterval"),
    "checktimeout": lambda s: _seconds(s, "checktimeout"),
    "negotiatetimeout": lambda s: _seconds(s, "negotiatetimeout"),
    "failurecount": lambda s: _whole(s, "failurecount", 1),
    "checkport": lambda s: _whole(s, "checkport", 1, MAX_PORT),
    "persistent": lambda s: _whole(s, "persistent", 0, MAX_U32),
}


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def read(path: str) -> tuple[dict[str, tuple[str, Where]], list[_Virtual]]:
    """The global settings and virtual blocks of ``path`` (ImportConfigError if it
    cannot be read or a line is not ``key=value``)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise fail(Where(path, 0), f"cannot read: {reason}") from exc
    globals_: dict[str, tuple[str, Where]] = {}
    virtuals: list[_Virtual] = []
    current: _Virtual | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        where = Where(path, number)
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        line = re.sub(r"\s+#.*", "", raw).rstrip()
        indented = line[:1].isspace()
        key, sep, value = line.strip().partition("=")
        key = key.strip().lower()
        if not sep:
            raise fail(where, f"expected key=value, got {line.strip()!r}")
        value = value.strip()
        if indented:
            if current is None:
                raise fail(where, f"indented {key!r} outside a virtual block")
            if key in ("real", "real6"):
                current.reals.append((value, where, key == "real6"))
            else:
                current.settings[key] = (value, where)
            continue
        current = None
        if key in ("virtual", "virtual6"):
            current = _Virtual(where, 6 if key == "virtual6" else 4, value)
            virtuals.append(current)
        else:
            globals_[key] = (value, where)
    return globals_, virtuals


_HOSTPORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\s\[\]]+))(?::(?P<port>[\w-]+))?"
)


class _Converter:
    def __init__(self, path: str) -> None:
        self.path = path
        self.doc = Document()
        self.unconverted: list[Unconverted] = []
        self.names: set[str] = set()
        self.globals: dict[str, tuple[str, Where]] = {}

    def src(self, where: Where) -> str:
        return f"from {source_name(where.file, self.path)}:{where.line}"

    def skip(self, where: Where, keyword: str, advice: str) -> None:
        self.unconverted.append(Unconverted(where, keyword, advice))

    def setting(self, v: _Virtual, key: str) -> tuple[str, Where] | None:
        return v.settings.get(key) or self.globals.get(key)

    def run(self) -> Conversion:
        self.globals, virtuals = read(self.path)
        self.doc.header = [
            f"lvsd config converted from {os.path.basename(self.path)} "
            "by `lvsd import ldirectord`.",
            "Comments say where each part came from and where ldirectord's behaviour differs",
            "from lvsd's defaults. Check it with: lvsd check -c THIS_FILE",
        ]
        known_global = {
            "checktimeout", "negotiatetimeout", "checkinterval", "failurecount", "quiescent",
            "fallback", "fallback6",
        }  # fmt: skip
        for settings in [self.globals, *(v.settings for v in virtuals)]:
            for key, setting in settings.items():
                if key in NUMBERS:
                    NUMBERS[key](setting)
        for key, (_, where) in self.globals.items():
            if key in GLOBAL_ADVICE:
                self.skip(where, key, GLOBAL_ADVICE[key])
            elif key not in known_global and key not in GLOBAL_IGNORED:
                self.skip(where, key, "unknown ldirectord setting; not converted")
        for v in virtuals:
            self.virtual(v)
        if not virtuals:
            self.doc.header.append("No virtual service was found: no service was written.")
        self.unconverted.sort(key=lambda u: u.where.line)
        return Conversion(self.doc, self.unconverted)

    # -- addresses

    def hostport(self, text: str, where: Where, protocol: str) -> tuple[str, int | None]:
        match = _HOSTPORT.fullmatch(text.strip())
        if match is None:
            raise fail(where, f"expected ADDRESS[:PORT], got {text!r}")
        host = match.group("v6") or match.group("host")
        try:
            address = str(ipaddress.ip_address(host))
        except ValueError:
            raise fail(
                where,
                f"{host!r} is not an IP address: write the address "
                "(lvsd does not resolve host names)",
            ) from None
        return address, self.port(match.group("port"), where, protocol)

    def port(self, text: str | None, where: Where, protocol: str) -> int | None:
        if text is None:
            return None
        if re.fullmatch(r"[0-9]+", text):
            if int(text) > MAX_PORT:
                raise fail(where, f"port {text} is out of range (expected 0..{MAX_PORT})")
            return int(text)
        try:
            return socket.getservbyname(text, "udp" if protocol == "udp" else "tcp")
        except OSError:
            raise fail(where, f"unknown port name {text!r}") from None

    # -- virtual services

    def virtual(self, v: _Virtual) -> None:
        s = v.settings
        fwmark: int | None = None
        head = v.head.strip()
        protocol_setting = s.get("protocol")
        protocol = protocol_setting[0].lower() if protocol_setting else None
        if re.fullmatch(r"[0-9]+", head):
            fwmark = _whole((head, v.where), "firewall mark", 1, MAX_U32)
            address, port = None, 0
        else:
            address, vport = self.hostport(head, v.where, protocol or "tcp")
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
        name_setting = s.get("servicename")
        if name_setting:
            label = name_setting[0]
        elif fwmark is not None:
            label = f"fwmark_{fwmark}"
        else:
            assert address is not None
            label = address_name(protocol, address, port)
        name = service_name(label, self.names)
        table = self.doc.table("services", name)
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
        self.service_settings(v, table, fwmark is not None)
        service = self.service_kind(v, port, protocol)
        for text, where, _v6 in v.reals:
            self.real(v, text, where, table, service, protocol, port)

    def service_settings(self, v: _Virtual, table: Table, is_fwmark: bool) -> None:
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
        persistent = s.get("persistent")
        if persistent:
            table.set("persistence", _whole(persistent, "persistent", 0, MAX_U32))
            netmask = s.get("netmask")
            if netmask:
                try:
                    prefix = mask_to_prefix(netmask[0])
                except ValueError:
                    raise fail(netmask[1], f"bad netmask {netmask[0]!r}") from None
                table.set("persistence_netmask", prefix_for_lvsd(prefix, v.family), netmask[0])
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
            self.fallback(fallback, table, v)
        for key, (_, where) in s.items():
            if key in GLOBAL_ADVICE:
                self.skip(where, key, GLOBAL_ADVICE[key])
            elif key in ("monitorfile",):
                self.skip(where, key, "lvsd reports state on /status and /metrics")
            elif key not in VIRTUAL_KEYS:
                self.skip(where, key, "unknown ldirectord setting; not converted")

    def fallback(self, fallback: tuple[str, Where], table: Table, v: _Virtual) -> None:
        words = fallback[0].split()
        address, port = self.hostport(words[0], fallback[1], "tcp")
        sorry: dict[str, TomlValue] = {"address": address}
        if port is not None:
            sorry["port"] = port
        if len(words) > 1:
            method = FORWARD.get(words[1])
            if method is None:
                raise fail(fallback[1], "fallback forward method must be gate, masq or ipip")
            sorry["forward"] = method[0]
        table.set("sorry_server", sorry)

    def service_kind(self, v: _Virtual, port: int, protocol: str) -> str:
        service = v.settings.get("service")
        if service:
            return service[0]
        if protocol == "fwm":
            return "none"
        return PORT_SERVICES.get(port, "none")

    # -- real servers

    def real(
        self,
        v: _Virtual,
        text: str,
        where: Where,
        service: Table,
        kind: str,
        protocol: str,
        vport: int,
    ) -> None:
        match = re.fullmatch(
            r"(?P<first>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]>-]+(?:\.[^\s:>-]+)*)"
            r"(?:->(?P<last>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+?))?"
            r"(?::(?P<port>[\w-]+))?\s+(?P<rest>.*)",
            text.strip(),
        )
        if match is None:
            raise fail(where, f"expected ADDRESS[->ADDRESS][:PORT] METHOD [WEIGHT], got {text!r}")
        first = match.group("first").strip("[]")
        last = (match.group("last") or "").strip("[]")
        try:
            addresses = expand_range(first, last) if last else [str(ipaddress.ip_address(first))]
        except ValueError as exc:
            raise fail(where, f"{exc}; lvsd does not resolve host names") from None
        port = self.port(match.group("port"), where, protocol)
        rest = match.group("rest")
        flags = re.fullmatch(
            r"(?P<method>\w+)(?:\s+(?P<weight>\d+))?"
            r'(?:\s+"(?P<request>[^"]*)"[, ]\s*"(?P<receive>[^"]*)")?'
            r"(?:\s+l:(?P<lower>\d+))?(?:\s+u:(?P<upper>\d+))?\s*",
            rest,
        )
        if flags is None or flags.group("method") not in FORWARD:
            raise fail(
                where, f'expected gate|masq|ipip [WEIGHT] ["REQUEST", "RECEIVE"], got {rest!r}'
            )
        forward, tunnel = FORWARD[flags.group("method")]
        for address in addresses:
            table = self.doc.table(*service.path, "real_servers", array=True)
            table.note(f"{self.src(where)} (real={text.strip()})")
            table.set("address", address)
            if port is not None and port != 0:
                table.set("port", port)
            elif forward == "nat" and service.get("fwmark") is None:
                table.note(
                    "no port: ldirectord gives the kernel port 0 for a masq real server "
                    "(checked in the lab), which cannot serve; lvsd uses the service's port"
                )
            table.set("weight", int(flags.group("weight") or 1))
            table.set("forward", forward)
            if tunnel:
                table.set("tunnel", tunnel)
            if flags.group("lower"):
                table.set("lower_threshold", int(flags.group("lower")))
            if flags.group("upper"):
                table.set("upper_threshold", int(flags.group("upper")))
            request = flags.group("request")
            receive = flags.group("receive")
            self.check(v, table, kind, protocol, port or vport, request, receive, where)

    # -- checks

    def check(
        self, v: _Virtual, server: Table, kind: str, protocol: str, port: int,
        request: str | None, receive: str | None, where: Where,
    ) -> None:  # fmt: skip
        checktype_setting = v.settings.get("checktype")
        checktype = checktype_setting[0] if checktype_setting else "negotiate"
        ct_where = checktype_setting[1] if checktype_setting else v.where
        if checktype == "on":
            server.note("checktype=on: no check, always in the pool")
            return
        if checktype == "off":
            server.set("weight", 0, "checktype=off: ldirectord keeps it out of the pool")
            return
        if checktype == "ping" or (checktype == "connect" and protocol == "udp"):
            self.skip(
                ct_where,
                "checktype",
                "lvsd has no ICMP (ping) check; use a udp check with "
                "an expected reply, or a tcp check",
            )
            return
        if checktype in ("external", "external-perl"):
            self.external(v, server, checktype, ct_where)
            return
        negotiate = checktype == "negotiate" or checktype.isdigit()
        if checktype.isdigit():
            server.note(f"checktype={checktype}: lvsd runs the negotiate check every time")
        elif checktype not in ("connect", "negotiate"):
            raise fail(ct_where, f"unknown checktype {checktype!r}")
        table = self.doc.table(*server.path, "checks", array=True)
        table.note(f"{self.src(ct_where)} (checktype={checktype}, service={kind})")
        if not negotiate or kind == "none":
            if kind == "none" and negotiate:
                self.doc.tables.remove(table)
                server.note("service=none: ldirectord brings it up without checking; so does lvsd")
                return
            table.set("kind", "tcp")
        else:
            self.negotiate(v, table, kind, request, receive, where)
        self.timing(v, table, negotiate)
        checkport = v.settings.get("checkport")
        if checkport:
            table.set("port", _whole(checkport, "checkport", 1, MAX_PORT))
        elif port == 0:
            default = SERVICE_PORTS.get(kind)
            if default is None:
                self.skip(
                    v.where,
                    "checkport",
                    "a fwmark service needs checkport (or a known "
                    "service) so lvsd knows which port to check",
                )
                self.doc.tables.remove(table)
                return
            table.set("port", default, f"ldirectord's port for service={kind}")

    def negotiate(
        self,
        v: _Virtual,
        table: Table,
        kind: str,
        request: str | None,
        receive: str | None,
        where: Where,
    ) -> None:
        s = v.settings
        request = (
            request
            if request is not None
            else _unquote(s["request"][0])
            if "request" in s
            else None
        )
        receive = (
            receive
            if receive is not None
            else _unquote(s["receive"][0])
            if "receive" in s
            else None
        )
        if kind in ("http", "https"):
            table.set("kind", kind)
            path = request or "/"
            table.set("path", path if path.startswith("/") else "/" + path)
            method = s.get("httpmethod")
            if method:
                table.set("method", method[0].upper())
            table.set("status", ["200-299"], "ldirectord accepts any 2xx")
            if receive:
                table.set("body_regex", receive, "ldirectord's receive is a regular expression")
            host = s.get("virtualhost")
            if host:
                table.set("host", _unquote(host[0]))
            if kind == "https":
                table.set("verify", False, "ldirectord does not verify certificates")
        elif kind == "dns":
            table.set("kind", "dns")
            if not request:
                raise fail(v.where, "service=dns needs request (the name to look up)")
            table.set("name", request.lstrip("/"))
            table.set("type", "A")
            if receive:
                try:
                    table.set("expect", [str(ipaddress.ip_address(receive))])
                except ValueError:
                    self.skip(
                        s["receive"][1] if "receive" in s else where,
                        "receive",
                        "lvsd's dns check matches whole answers, not a regular "
                        "expression: set expect to the exact answers",
                    )
        elif kind in ("smtp", "submission"):
            table.set("kind", "smtp")
        elif kind == "simpletcp":
            table.set("kind", "tcp")
            if request:
                table.set("send", request.lstrip("/"))
            if receive:
                table.set(
                    "expect",
                    receive,
                    "ldirectord matched a regular expression; lvsd looks for this text",
                )
        elif kind in UNSUPPORTED_SERVICES:
            table.set("kind", "tcp", f"was service={kind}: only a connect check")
            where_ = s["service"][1] if "service" in s else v.where
            self.skip(
                where_,
                f"service={kind}",
                "lvsd has no such protocol check: a tcp "
                "connect check was written; use an exec check with your own probe "
                "for a real login/query",
            )
        else:
            raise fail(s["service"][1] if "service" in s else v.where, f"unknown service {kind!r}")

    def external(self, v: _Virtual, server: Table, checktype: str, where: Where) -> None:
        command = v.settings.get("checkcommand")
        if command is None:
            raise fail(where, f"checktype={checktype} needs checkcommand")
        table = self.doc.table(*server.path, "checks", array=True)
        table.note(f"{self.src(where)} (checktype={checktype})")
        table.set("kind", "exec")
        words: list[TomlValue] = ["perl"] if checktype == "external-perl" else []
        words += [_unquote(command[0]), "{vip}", "{vport}", "{rip}", "{rport}"]
        table.set("command", words, "ldirectord passes VIP VPORT RIP RPORT")
        # check_external and check_external_perl run under checktimeout (ldirectord's
        # system_timeout / alarm), not negotiatetimeout
        self.timing(v, table, False)

    def timing(self, v: _Virtual, table: Table, negotiate: bool) -> None:
        # ldirectord ignores a virtual's checkinterval unless fork=yes (it warns)
        forking = self.globals.get("fork", ("no", v.where))[0].strip().lower() == "yes"
        interval_setting = (
            self.setting(v, "checkinterval") if forking else self.globals.get("checkinterval")
        )
        interval = (
            _seconds(interval_setting, "checkinterval") if interval_setting else CHECKINTERVAL
        )
        interval_comment = None if interval_setting else "ldirectord's default checkinterval"
        if not forking and "checkinterval" in v.settings:
            table.note(
                "the virtual's checkinterval is ignored by ldirectord without fork=yes; "
                "the global one is used"
            )
        chain = (
            ["negotiatetimeout", "checktimeout"]
            if negotiate
            else ["checktimeout", "negotiatetimeout"]
        )
        timeout: float | None = None
        source = ""
        for key in chain:
            value = v.settings.get(key)
            if value:
                timeout, source = _seconds(value, key), key
                break
        if timeout is None:
            for key in chain:
                value = self.globals.get(key)
                if value:
                    timeout, source = _seconds(value, key), f"global {key}"
                    break
        if timeout is None:
            timeout = NEGOTIATETIMEOUT if negotiate else CHECKTIMEOUT
            source = "ldirectord's default " + ("negotiatetimeout" if negotiate else "checktimeout")
        if timeout >= interval:
            interval = interval + timeout
            interval_comment = (
                "checkinterval + timeout: ldirectord sleeps checkinterval after "
                "a round; lvsd needs timeout < interval"
            )
        failures = self.setting(v, "failurecount")
        table.set("interval", interval, interval_comment)
        table.set("timeout", timeout, source)
        table.set("rise", 1, "ldirectord adds a real server back on its first good check")
        table.set(
            "fall",
            _whole(failures, "failurecount", 1) if failures else FAILURECOUNT,
            None if failures else "ldirectord's default failurecount",
        )


VIRTUAL_KEYS = {
    "checktype", "service", "request", "receive", "virtualhost", "checkport", "checkinterval",
    "checktimeout", "negotiatetimeout", "failurecount", "quiescent", "fallback", "fallback6",
    "httpmethod", "scheduler", "persistent", "netmask", "protocol", "ops", "schedflags",
    "servicename", "comment", "checkcommand", "cleanstop", "login", "passwd", "database",
    "secret", "emailalert", "emailalertfreq", "emailalertstatus", "smtp", "fallbackcommand",
    "monitorfile", "checkcount",
}  # fmt: skip


def convert(path: str) -> Conversion:
    """Convert the ldirectord config at ``path``; ImportConfigError if it is malformed."""
    return _Converter(path).run()
