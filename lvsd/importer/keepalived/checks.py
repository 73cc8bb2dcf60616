"""keepalived checkers -> lvsd's ``[[services.real_servers.checks]]``.

:data:`KINDS` says per checker what lvsd calls it, which keywords it converts
(``{keyword: handler}``), which it cannot (``{keyword: advice}``, word for word what
the user reads) and how any other keyword is listed. The timing keywords are
inherited virtual_server -> real_server -> checker (:class:`Timing`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lvsd.importer.common import fail
from lvsd.importer.emit import Table, TomlValue
from lvsd.importer.keepalived.parse import Node
from lvsd.importer.keepalived.read import (
    Sink,
    arg,
    dispatch,
    to_integer,
    to_ip,
    to_number,
    to_port,
)

#: keepalived's defaults where they differ from lvsd's.
DELAY_LOOP = 60.0
CONNECT_TIMEOUT = 5.0
RETRY_DEFAULTS = {"DNS_CHECK": 3, "MISC_CHECK": 0}
RETRY_DEFAULT = 1

TIMING_KEYS = (
    "delay_loop",
    "connect_timeout",
    "retry",
    "nb_get_retry",
    "delay_before_retry",
    "warmup",
    "alpha",
    "inhibit_on_failure",
    "virtualhost",
    "log_all_failures",
)


@dataclass(slots=True)
class Timing:
    """Checker settings inherited virtual_server -> real_server -> checker."""

    nodes: dict[str, Node] = field(default_factory=dict)

    def child(self, node: Node) -> Timing:
        nodes = dict(self.nodes)
        for item in node.children or ():
            if item.keyword in TIMING_KEYS:
                nodes["retry" if item.keyword == "nb_get_retry" else item.keyword] = item
        return Timing(nodes)


@dataclass(slots=True)
class _Check:
    """What one checker's keywords set, before its tables are written."""

    out: Sink
    common: dict[str, TomlValue] = field(default_factory=dict)  # port, source, source_port
    options: dict[str, TomlValue] = field(default_factory=dict)  # the kind's own keys
    urls: list[dict[str, TomlValue]] = field(default_factory=list)  # one check per url
    comments: list[str] = field(default_factory=list)
    timeout: float | None = None  # MISC_CHECK's misc_timeout
    smtp_host_seen: bool = False

    def ignore(self, node: Node) -> None:
        """Nothing to write: a timing keyword (read through :class:`Timing`), or the
        connect_ip of SMTP_CHECK's host (the real server's own address)."""

    def connect_port(self, node: Node) -> None:
        self.common["port"] = to_port(arg(node))

    def bind_to(self, node: Node) -> None:
        self.common["source"] = to_ip(arg(node))

    def bind_port(self, node: Node) -> None:
        self.common["source_port"] = to_port(arg(node))

    # -- HTTP_GET, SSL_GET

    def url(self, node: Node) -> None:
        url: dict[str, TomlValue] = {}
        for child in node.children or ():
            if child.keyword == "regex_no_match":  # the regex must not match
                url["no_match"] = True
                continue
            option = URL_KEYS.get(child.keyword)
            if option is None:
                self.out.skip(child, f"url option {child.keyword!r} is not supported by lvsd")
                continue
            key, read = option
            url[key] = read(child)
        if url.pop("no_match", False) and "body_regex" in url:
            url["body_not_regex"] = url.pop("body_regex")
        if "status" not in url:
            url["status"] = ["200-299"]
        self.urls.append(url)

    def http_protocol(self, node: Node) -> None:
        self.comments.append(f"http_protocol {arg(node).text}: lvsd speaks HTTP/1.1")

    def fast_recovery(self, node: Node) -> None:
        self.comments.append("fast_recovery: lvsd probes every URL at each interval anyway")

    def enable_sni(self, node: Node) -> None:
        self.comments.append("enable_sni: lvsd sends SNI (the host, or set sni = ...)")

    def unverified(self, node: Node) -> None:
        self.options["verify"] = False
        self.comments.append("verify = false: keepalived's SSL_GET does not verify certificates")

    # -- MISC_CHECK

    def misc_path(self, node: Node) -> None:
        text = arg(node, 0, "a command").text
        try:
            self.options["command"] = list(shlex.split(text))
        except ValueError as exc:
            raise fail(node.where, f"cannot split the command: {exc}") from None

    def misc_timeout(self, node: Node) -> None:
        self.timeout = to_number(arg(node))

    def misc_dynamic(self, node: Node) -> None:
        self.options["dynamic"] = True

    def user(self, node: Node) -> None:
        self.options["user"] = arg(node).text
        if len(node.args) > 1:
            self.out.skip(node, "lvsd runs the command with the user's own group", "user GROUP")

    def needs_command(self, node: Node) -> None:
        if "command" not in self.options:
            raise fail(node.where, "MISC_CHECK needs misc_path")

    # -- DNS_CHECK, SMTP_CHECK

    def dns_type(self, node: Node) -> None:
        self.options["type"] = arg(node).text.upper()

    def dns_name(self, node: Node) -> None:
        self.options["name"] = arg(node).text

    def dns_defaults(self, node: Node) -> None:
        self.options.setdefault("type", "SOA")
        self.options.setdefault("name", ".")

    def helo_name(self, node: Node) -> None:
        self.options["helo"] = arg(node).text

    def smtp_host(self, node: Node) -> None:
        """keepalived's old multi-host SMTP_CHECK: the first host block is the real
        server; more hosts cannot be expressed."""
        if self.smtp_host_seen:
            self.out.skip(
                node,
                "lvsd checks only the real server itself; check other hosts with an exec check",
            )
            return
        self.smtp_host_seen = True
        unknown = "host keyword {keyword!r} is not supported"
        dispatch(self, node.children or (), SMTP_HOST_KEYS, {}, unknown, self.out)

    # -- UDP_CHECK

    def udp_data(self, node: Node) -> None:
        """payload and require_reply: keepalived's hex, as text lvsd sends or expects."""
        k = node.keyword
        if k == "require_reply":
            self.options["require_reply"] = True
        hexstr = "".join(node.words())
        if not hexstr:
            return
        if "x" in hexstr.lower() and k == "require_reply":
            self.out.skip(node, "lvsd cannot ignore nibbles (X) in the expected reply")
            return
        data = _hex(hexstr)
        if data is None or any(b >= 0x80 for b in data):
            self.out.skip(
                node,
                "lvsd's TOML takes text, not arbitrary bytes: write the payload as "
                "an ASCII string, or use an exec check",
            )
            return
        self.options["send" if k == "payload" else "expect"] = data.decode("ascii")


def _hex(text: str) -> bytes | None:
    """keepalived's free-form hex: each run of digits is split into bytes, an odd
    run's first digit standing alone (``Ab12f`` -> AB 12 0F)."""
    out = bytearray()
    for run in text.split():
        if not re.fullmatch(r"[0-9A-Fa-f]+", run):
            return None
        if len(run) % 2:
            run = "0" + run[-1] if len(run) == 1 else run[:-1] + "0" + run[-1]
        out.extend(bytes.fromhex(run))
    return bytes(out)


_Handlers = Mapping[str, Callable[[_Check, Node], None]]

#: url { ... } of HTTP_GET and SSL_GET: keyword -> (lvsd key, value).
URL_KEYS: dict[str, tuple[str, Callable[[Node], TomlValue]]] = {
    "path": ("path", lambda node: arg(node).text),
    "digest": ("body_digest", lambda node: arg(node).text.lower()),
    "status_code": ("status", lambda node: list(node.words())),
    "virtualhost": ("host", lambda node: arg(node).text),
    "regex": ("body_regex", lambda node: arg(node).text),
}
#: host { ... } of SMTP_CHECK (the first one: the real server).
SMTP_HOST_KEYS: _Handlers = {
    "connect_port": _Check.connect_port,
    "bindto": _Check.bind_to,
    "bind_to": _Check.bind_to,
    "connect_ip": _Check.ignore,  # the real server's own address
}
#: What every checker converts.
COMMON_KEYS: _Handlers = {
    **dict.fromkeys(TIMING_KEYS, _Check.ignore),
    "connect_port": _Check.connect_port,
    "bindto": _Check.bind_to,
    "bind_to": _Check.bind_to,
    "bind_port": _Check.bind_port,
}
COMMON_ADVICE = {
    "connect_ip": "lvsd checks the real server's own address; check another "
    "address with an exec check",
}


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one keepalived checker converts."""

    lvsd: str  # lvsd's check kind
    handlers: _Handlers
    unknown: str  # the advice for any other keyword ({keyword}: the keyword)
    advice: Mapping[str, str] = field(default_factory=dict)
    finish: Callable[[_Check, Node], None] = _Check.ignore  # after the keywords


_HTTP_KEYS: _Handlers = {
    "url": _Check.url,
    "http_protocol": _Check.http_protocol,
    "fast_recovery": _Check.fast_recovery,
    "enable_sni": _Check.enable_sni,
}
_HTTP_UNKNOWN = "unknown {keyword} keyword in HTTP_GET/SSL_GET; not converted"

KINDS: dict[str, _Kind] = {
    "TCP_CHECK": _Kind("tcp", {}, "unknown TCP_CHECK keyword; not converted"),
    "HTTP_GET": _Kind("http", _HTTP_KEYS, _HTTP_UNKNOWN),
    "SSL_GET": _Kind("https", _HTTP_KEYS, _HTTP_UNKNOWN, finish=_Check.unverified),
    "MISC_CHECK": _Kind(
        "exec",
        {
            "misc_path": _Check.misc_path,
            "misc_timeout": _Check.misc_timeout,
            "misc_dynamic": _Check.misc_dynamic,
            "user": _Check.user,
        },
        "unknown MISC_CHECK keyword {keyword!r}; not converted",
        finish=_Check.needs_command,
    ),
    "DNS_CHECK": _Kind(
        "dns",
        {"type": _Check.dns_type, "name": _Check.dns_name},
        "unknown DNS_CHECK keyword; not converted",
        finish=_Check.dns_defaults,
    ),
    "SMTP_CHECK": _Kind(
        "smtp",
        {"host": _Check.smtp_host, "helo_name": _Check.helo_name},
        "unknown SMTP_CHECK keyword; not converted",
    ),
    "PING_CHECK": _Kind("icmp", {}, "unknown PING_CHECK keyword; not converted"),
    "UDP_CHECK": _Kind(
        "udp",
        {"payload": _Check.udp_data, "require_reply": _Check.udp_data},
        "unknown UDP_CHECK keyword; not converted",
        advice={
            "min_reply_length": "lvsd does not check the reply length",
            "max_reply_length": "lvsd does not check the reply length",
        },
    ),
}
#: Checkers lvsd has no counterpart for.
CHECKER_ADVICE = {
    "BFD_CHECK": "BFD is not part of lvsd; use a tcp check",
    "FILE_CHECK": "lvsd has no file check; use an exec check that reads the file",
}
CHECKERS = frozenset(KINDS) | frozenset(CHECKER_ADVICE)


def convert_checker(
    out: Sink,
    node: Node,
    timing: Timing,
    service: str,
    rs_port: int,
    *,
    explicit: bool = False,
) -> None:
    """Write the checks of checker ``node`` of a real server of ``service`` (one per
    url for HTTP_GET/SSL_GET); ``explicit``: the port the real server names."""
    kind = node.keyword
    if kind in CHECKER_ADVICE:
        out.skip(node, CHECKER_ADVICE[kind])
        return
    spec = KINDS[kind]
    check = _Check(out)
    handlers = {**spec.handlers, **COMMON_KEYS}
    advice = {**spec.advice, **COMMON_ADVICE}
    dispatch(check, node.children or (), handlers, advice, spec.unknown, out)
    spec.finish(check, node)
    portless = spec.lvsd == "icmp"  # a ping has no port
    if rs_port == 0 and "port" not in check.common and not portless:
        out.skip(
            node,
            "the real server has no port (fwmark service): give the checker "
            "a connect_port; check not converted",
        )
        return
    if explicit and not portless:
        check.common.setdefault("port", rs_port)
    host = timing.nodes.get("virtualhost")
    if spec.lvsd in ("http", "https") and host is not None:
        check.options.setdefault("host", arg(host).text)
    for url in check.urls or [{}]:
        table = out.doc.table("services", service, "real_servers", "checks", array=True)
        table.note(f"{out.src(node.where)} ({kind})")
        for text in check.comments:
            table.note(text)
        table.set("kind", spec.lvsd)
        _timing(table, kind, timing, check.timeout)
        for key, value in check.common.items():
            table.set(key, value)
        for key, value in {**check.options, **url}.items():
            table.set(key, value)


def _timing(table: Table, kind: str, timing: Timing, misc_timeout: float | None) -> None:
    """interval, timeout, rise and fall from keepalived's (inherited) timing keywords,
    and a comment for each one lvsd does differently."""
    nodes = timing.nodes
    loop = nodes.get("delay_loop")
    interval = to_number(arg(loop)) if loop else DELAY_LOOP
    if kind == "MISC_CHECK":
        timeout = misc_timeout if misc_timeout is not None else interval
        timeout_comment = (
            None if misc_timeout is not None else "keepalived's misc_timeout default is delay_loop"
        )
    else:
        ct = nodes.get("connect_timeout")
        timeout = to_number(arg(ct)) if ct else CONNECT_TIMEOUT
        timeout_comment = None if ct else "keepalived's default connect_timeout"
    interval_comment = None if loop else "keepalived's default delay_loop (lvsd's is 2)"
    if timeout >= interval:
        interval = interval + timeout
        interval_comment = (
            "delay_loop + timeout: keepalived waits delay_loop after a check "
            "ends; lvsd needs timeout < interval"
        )
    retry_node = nodes.get("retry")
    retry = to_integer(arg(retry_node)) if retry_node else RETRY_DEFAULTS.get(kind, RETRY_DEFAULT)
    table.set("interval", interval, interval_comment)
    table.set("timeout", timeout, timeout_comment)
    table.set("rise", 1, "keepalived brings a real server up on its first success")
    table.set(
        "fall",
        retry + 1,
        f"retry {retry}{'' if retry_node else ' (default)'} + the first failure",
    )
    _timing_notes(table, nodes)


def _timing_notes(table: Table, nodes: dict[str, Node]) -> None:
    """Comments for the timing keywords lvsd has no setting for."""
    delay = nodes.get("delay_before_retry")
    if delay is not None:
        table.note(f"delay_before_retry {arg(delay).text}: lvsd retries at the interval")
    warmup = nodes.get("warmup")
    if warmup is not None:
        table.note(f"warmup {arg(warmup).text}: lvsd spreads first probes itself")
    log_all = nodes.get("log_all_failures")
    if log_all is not None:
        table.note(
            f"{' '.join(['log_all_failures', *log_all.words()])}: lvsd logs state changes "
            "(realserver.up/down); every failed probe counts in "
            'lvsd_probe_results_total{outcome="fail"}'
        )
