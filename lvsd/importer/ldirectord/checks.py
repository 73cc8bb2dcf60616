"""ldirectord's checks -> lvsd's ``[[services.real_servers.checks]]``.

Two tables: :data:`CHECKTYPES` maps ``checktype=`` to how it converts (a number is a
negotiate check), and :data:`NEGOTIATE` maps ``service=`` to the check a negotiate
check becomes. Defaults are ldirectord's code defaults: checkinterval 10 s,
checktimeout 5 s, negotiatetimeout 30 s, failurecount 1.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from lvsd.config.values import MAX_PORT
from lvsd.importer.common import Where, fail
from lvsd.importer.emit import Document, Table, TomlValue
from lvsd.importer.ldirectord.parse import Setting, Settings, Virtual, seconds, unquote, whole

CHECKINTERVAL = 10.0
CHECKTIMEOUT = 5.0
NEGOTIATETIMEOUT = 30.0
FAILURECOUNT = 1

SERVICE_PORTS = {
    "ftp": 21, "smtp": 25, "dns": 53, "http": 80, "pop": 110, "nntp": 119, "imap": 143,
    "ldap": 389, "https": 443, "submission": 587, "ldaps": 636, "imaps": 993, "pops": 995,
    "oracle": 1521, "radius": 1812, "http_proxy": 3128, "mysql": 3306, "sip": 5060,
    "pgsql": 5432,
}  # fmt: skip
UNSUPPORTED_SERVICES = {
    "imaps", "pops", "nntp", "ldaps", "oracle", "http_proxy",
}  # fmt: skip
#: Services lvsd checks by a login-free handshake: ldirectord's name -> lvsd's kind.
HANDSHAKE_SERVICES = {
    "ftp": "ftp",
    "imap": "imap",
    "pop": "pop3",
    "mysql": "mysql",
    "pgsql": "pgsql",
    "ldap": "ldap",
}


class Sink(Protocol):
    """What the checks read and write: the document, the global settings, the list of
    what is not converted."""

    @property
    def doc(self) -> Document: ...

    @property
    def globals(self) -> Settings: ...

    def src(self, where: Where) -> str:
        """The source comment for ``where``: ``from FILE:LINE``."""
        ...

    def skip(self, where: Where, keyword: str, advice: str) -> None:
        """List ``keyword`` as not converted, with what to do instead."""
        ...

    def setting(self, v: Virtual, key: str) -> Setting | None:
        """The virtual's ``key``, else the global one."""
        ...


@dataclass(frozen=True, slots=True)
class Probe:
    """What the check of one real server is made of."""

    v: Virtual
    server: Table  # the real server's table
    kind: str  # service=
    protocol: str
    port: int  # the real server's port, else the service's (0: a fwmark service)
    request: str | None  # from the real= line
    receive: str | None
    where: Where  # the real= line


def write_check(out: Sink, p: Probe) -> None:
    """The check of ``p``'s real server as its virtual's checktype says."""
    checktype_setting = p.v.settings.get("checktype")
    checktype = checktype_setting[0] if checktype_setting else "negotiate"
    ct_where = checktype_setting[1] if checktype_setting else p.v.where
    handler = CHECKTYPES.get(checktype)
    if handler is None and checktype.isdigit():
        handler = _negotiate_every_time
    if handler is None:
        raise fail(ct_where, f"unknown checktype {checktype!r}")
    handler(out, p, checktype, ct_where)


def _always_in(out: Sink, p: Probe, checktype: str, where: Where) -> None:
    p.server.note("checktype=on: no check, always in the pool")


def _always_out(out: Sink, p: Probe, checktype: str, where: Where) -> None:
    p.server.set("weight", 0, "checktype=off: ldirectord keeps it out of the pool")


def _ping(out: Sink, p: Probe, checktype: str, where: Where) -> None:
    """An icmp check (ldirectord's ping runs under checktimeout)."""
    table = out.doc.table(*p.server.path, "checks", array=True)
    table.note(f"{out.src(where)} (checktype={checktype}: ping)")
    table.set("kind", "icmp")
    _timing(out, p.v, table, False)


def _connect(out: Sink, p: Probe, checktype: str, where: Where) -> None:
    if p.protocol == "udp":  # ldirectord's connect check of a udp service is a ping
        _ping(out, p, checktype, where)
    else:
        _network_check(out, p, checktype, where, negotiate=False)


def _negotiate(out: Sink, p: Probe, checktype: str, where: Where) -> None:
    _network_check(out, p, checktype, where, negotiate=True)


def _negotiate_every_time(out: Sink, p: Probe, checktype: str, where: Where) -> None:
    """checktype=N: N connect checks, then a negotiate check."""
    p.server.note(f"checktype={checktype}: lvsd runs the negotiate check every time")
    _network_check(out, p, checktype, where, negotiate=True)


def _external(out: Sink, p: Probe, checktype: str, where: Where) -> None:
    command = p.v.settings.get("checkcommand")
    if command is None:
        raise fail(where, f"checktype={checktype} needs checkcommand")
    table = out.doc.table(*p.server.path, "checks", array=True)
    table.note(f"{out.src(where)} (checktype={checktype})")
    table.set("kind", "exec")
    words: list[TomlValue] = ["perl"] if checktype == "external-perl" else []
    words += [unquote(command[0]), "{vip}", "{vport}", "{rip}", "{rport}"]
    table.set("command", words, "ldirectord passes VIP VPORT RIP RPORT")
    # check_external and check_external_perl run under checktimeout (ldirectord's
    # system_timeout / alarm), not negotiatetimeout
    _timing(out, p.v, table, False)


_Checktype = Callable[[Sink, Probe, str, Where], None]
CHECKTYPES: Mapping[str, _Checktype] = {
    "on": _always_in,
    "off": _always_out,
    "ping": _ping,
    "connect": _connect,
    "negotiate": _negotiate,
    "external": _external,
    "external-perl": _external,
}


def _network_check(out: Sink, p: Probe, checktype: str, where: Where, *, negotiate: bool) -> None:
    """A connect check (tcp) or a negotiate check (per service), on the check port."""
    if negotiate and p.kind == "none":
        p.server.note("service=none: ldirectord brings it up without checking; so does lvsd")
        return
    table = out.doc.table(*p.server.path, "checks", array=True)
    table.note(f"{out.src(where)} (checktype={checktype}, service={p.kind})")
    if negotiate:
        _negotiation(out, p, table)
    else:
        table.set("kind", "tcp")
    _timing(out, p.v, table, negotiate)
    checkport = p.v.settings.get("checkport")
    if checkport:
        table.set("port", whole(checkport, "checkport", 1, MAX_PORT))
    elif p.port == 0:
        default = SERVICE_PORTS.get(p.kind)
        if default is None:
            out.skip(
                p.v.where,
                "checkport",
                "a fwmark service needs checkport (or a known "
                "service) so lvsd knows which port to check",
            )
            # by identity: an earlier real server's check may be an equal table
            out.doc.tables[:] = [t for t in out.doc.tables if t is not table]
            return
        table.set("port", default, f"ldirectord's port for service={p.kind}")


def _negotiation(out: Sink, p: Probe, table: Table) -> None:
    """The negotiate check of service ``p.kind``; request and receive from the real=
    line, else the virtual's."""
    s = p.v.settings
    request = p.request if p.request is not None else _unquoted(s, "request")
    receive = p.receive if p.receive is not None else _unquoted(s, "receive")
    handler = NEGOTIATE.get(p.kind)
    if handler is None:
        raise fail(s["service"][1] if "service" in s else p.v.where, f"unknown service {p.kind!r}")
    handler(out, p, table, request, receive)


def _unquoted(settings: Settings, key: str) -> str | None:
    return unquote(settings[key][0]) if key in settings else None


def _http(out: Sink, p: Probe, table: Table, request: str | None, receive: str | None) -> None:
    s = p.v.settings
    table.set("kind", p.kind)
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
        table.set("host", unquote(host[0]))
    if p.kind == "https":
        table.set("verify", False, "ldirectord does not verify certificates")


def _dns(out: Sink, p: Probe, table: Table, request: str | None, receive: str | None) -> None:
    s = p.v.settings
    table.set("kind", "dns")
    if not request:
        raise fail(p.v.where, "service=dns needs request (the name to look up)")
    table.set("name", request.lstrip("/"))
    table.set("type", "A")
    if receive:
        try:
            table.set("expect", [str(ipaddress.ip_address(receive))])
        except ValueError:
            out.skip(
                s["receive"][1] if "receive" in s else p.where,
                "receive",
                "lvsd's dns check matches whole answers, not a regular "
                "expression: set expect to the exact answers",
            )


def _smtp(out: Sink, p: Probe, table: Table, request: str | None, receive: str | None) -> None:
    table.set("kind", "smtp")


def _simpletcp(out: Sink, p: Probe, table: Table, request: str | None, receive: str | None) -> None:
    table.set("kind", "tcp")
    if request:
        table.set("send", request.lstrip("/"))
    if receive:
        table.set(
            "expect",
            receive,
            "ldirectord matched a regular expression; lvsd looks for this text",
        )


def _handshake(out: Sink, p: Probe, table: Table, request: str | None, receive: str | None) -> None:
    """A service lvsd checks by its greeting or handshake, without ldirectord's login
    (login, passwd) or query (request, receive)."""
    table.set("kind", HANDSHAKE_SERVICES[p.kind])
    login = _unquoted(p.v.settings, "login")
    if p.kind == "mysql" and login and not _unquoted(p.v.settings, "passwd"):
        table.set("user", login, "ldirectord's login (no password): lvsd logs in as it")
    if p.kind == "ldap":
        note = "ldirectord binds and searches for request/receive; lvsd binds anonymously"
    else:
        note = (
            f"ldirectord's service={p.kind} logs in (login/passwd) and may run request; "
            "lvsd checks the server's handshake without logging in"
        )
    table.note(note)


def _sip(out: Sink, p: Probe, table: Table, request: str | None, receive: str | None) -> None:
    """ldirectord sends OPTIONS over the virtual's protocol and wants a 200."""
    table.set("kind", "sip")
    if p.protocol == "tcp":
        table.set("tcp", True, "ldirectord asks over the virtual's protocol")
    table.set("status", ["200"], "ldirectord wants 200 OK")


def _radius(out: Sink, p: Probe, table: Table, request: str | None, receive: str | None) -> None:
    """A Status-Server signed with ldirectord's secret; without one, a listed tcp check."""
    secret = p.v.settings.get("secret")
    if not secret:
        _connect_only(out, p, table, request, receive)
        return
    table.set("kind", "radius")
    table.set("secret", unquote(secret[0]))
    table.note(
        "ldirectord sends an Access-Request with login/passwd; lvsd sends a "
        "Status-Server (RFC 5997), which the server must allow for this client"
    )


def _connect_only(
    out: Sink, p: Probe, table: Table, request: str | None, receive: str | None
) -> None:
    """A service lvsd has no protocol check for: a tcp connect check, listed."""
    s = p.v.settings
    table.set("kind", "tcp", f"was service={p.kind}: only a connect check")
    out.skip(
        s["service"][1] if "service" in s else p.v.where,
        f"service={p.kind}",
        "lvsd has no such protocol check: a tcp "
        "connect check was written; use an exec check with your own probe "
        "for a real login/query",
    )


_Negotiate = Callable[[Sink, Probe, Table, str | None, str | None], None]
NEGOTIATE: Mapping[str, _Negotiate] = {
    "http": _http,
    "https": _http,
    "dns": _dns,
    "smtp": _smtp,
    "submission": _smtp,
    "simpletcp": _simpletcp,
    "sip": _sip,
    "radius": _radius,
    **dict.fromkeys(HANDSHAKE_SERVICES, _handshake),
    **dict.fromkeys(UNSUPPORTED_SERVICES, _connect_only),
}


def _timing(out: Sink, v: Virtual, table: Table, negotiate: bool) -> None:
    """interval, timeout, rise and fall; ``negotiate`` picks which timeout comes first."""
    interval, interval_comment = _interval(out, v, table)
    timeout, source = _timeout(out, v, negotiate)
    if timeout >= interval:
        interval = interval + timeout
        interval_comment = (
            "checkinterval + timeout: ldirectord sleeps checkinterval after "
            "a round; lvsd needs timeout < interval"
        )
    failures = out.setting(v, "failurecount")
    table.set("interval", interval, interval_comment)
    table.set("timeout", timeout, source)
    table.set("rise", 1, "ldirectord adds a real server back on its first good check")
    table.set(
        "fall",
        whole(failures, "failurecount", 1) if failures else FAILURECOUNT,
        None if failures else "ldirectord's default failurecount",
    )


def _interval(out: Sink, v: Virtual, table: Table) -> tuple[float, str | None]:
    """checkinterval and its comment: ldirectord ignores a virtual's checkinterval
    unless fork=yes (it warns)."""
    forking = out.globals.get("fork", ("no", v.where))[0].strip().lower() == "yes"
    interval_setting = (
        out.setting(v, "checkinterval") if forking else out.globals.get("checkinterval")
    )
    interval = seconds(interval_setting, "checkinterval") if interval_setting else CHECKINTERVAL
    interval_comment = None if interval_setting else "ldirectord's default checkinterval"
    if not forking and "checkinterval" in v.settings:
        table.note(
            "the virtual's checkinterval is ignored by ldirectord without fork=yes; "
            "the global one is used"
        )
    return interval, interval_comment


def _timeout(out: Sink, v: Virtual, negotiate: bool) -> tuple[float, str]:
    """The timeout and where it came from: the virtual's, the global, the default."""
    chain = (
        ["negotiatetimeout", "checktimeout"] if negotiate else ["checktimeout", "negotiatetimeout"]
    )
    for key in chain:
        value = v.settings.get(key)
        if value:
            return seconds(value, key), key
    for key in chain:
        value = out.globals.get(key)
        if value:
            return seconds(value, key), f"global {key}"
    if negotiate:
        return NEGOTIATETIMEOUT, "ldirectord's default negotiatetimeout"
    return CHECKTIMEOUT, "ldirectord's default checktimeout"
