"""ldirectord.cf's syntax: global ``key=value`` lines, then ``virtual=`` (or
``virtual6=``) lines each followed by an indented block of settings and ``real=``
lines; and the values in them (numbers, ``ADDRESS[:PORT]``, real server lines).
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from lvsd.config.values import MAX_PORT, MAX_U32
from lvsd.importer.common import Where, expand_range, fail

#: ldirectord's forwarding words: lvsd's forward and tunnel.
FORWARD = {"gate": ("dr", None), "masq": ("nat", None), "ipip": ("tun", "ipip")}

#: A setting's value and where it was written.
Setting = tuple[str, Where]
Settings = dict[str, Setting]


@dataclass(slots=True)
class Virtual:
    """A ``virtual=`` line and its indented block."""

    where: Where
    family: int  # 4 or 6
    head: str  # the text after virtual= / virtual6=
    settings: Settings = field(default_factory=dict)
    reals: list[Setting] = field(default_factory=list)  # the text after real= / real6=


def seconds(setting: Setting, key: str) -> float:
    """A time setting (``checktimeout=5``): a finite number > 0, else an error."""
    text, where = setting
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise fail(where, f"{key}: expected a number of seconds > 0, got {text!r}")
    return value


def whole(setting: Setting, key: str, low: int, high: int | None = None) -> int:
    """An integer setting (``failurecount=3``) within ``low``..``high``, else an error."""
    text, where = setting
    digits = re.fullmatch(r"[0-9]+", text.strip()) is not None
    if not digits or int(text) < low or (high is not None and int(text) > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise fail(where, f"{key}: expected an integer {bound}, got {text!r}")
    return int(text)


#: The numeric settings, global or per virtual: each is checked wherever it is written,
#: even where the conversion does not use it (ldirectord refuses such a file too).
NUMBERS: dict[str, Callable[[Setting], float | int]] = {
    "checkinterval": lambda s: seconds(s, "checkinterval"),
    "checktimeout": lambda s: seconds(s, "checktimeout"),
    "negotiatetimeout": lambda s: seconds(s, "negotiatetimeout"),
    "failurecount": lambda s: whole(s, "failurecount", 1),
    "checkport": lambda s: whole(s, "checkport", 1, MAX_PORT),
    "persistent": lambda s: whole(s, "persistent", 0, MAX_U32),
}


def unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def read(path: str) -> tuple[Settings, list[Virtual]]:
    """The global settings and virtual blocks of ``path`` (ImportConfigError if it
    cannot be read or a line is not ``key=value``)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise fail(Where(path, 0), f"cannot read: {reason}") from exc
    globals_: Settings = {}
    virtuals: list[Virtual] = []
    current: Virtual | None = None
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
                current.reals.append((value, where))
            else:
                current.settings[key] = (value, where)
            continue
        current = None
        if key in ("virtual", "virtual6"):
            current = Virtual(where, 6 if key == "virtual6" else 4, value)
            virtuals.append(current)
        else:
            globals_[key] = (value, where)
    return globals_, virtuals


_HOSTPORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\s\[\]]+))(?::(?P<port>[\w-]+))?"
)


def hostport(text: str, where: Where, protocol: str) -> tuple[str, int | None]:
    """``ADDRESS[:PORT]`` (``[V6]:PORT`` for IPv6; the port may be a service name)."""
    match = _HOSTPORT.fullmatch(text.strip())
    if match is None:
        raise fail(where, f"expected ADDRESS[:PORT], got {text!r}")
    host = match.group("v6") or match.group("host")
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise fail(
            where,
            f"{host!r} is not an IP address: write the address (lvsd does not resolve host names)",
        ) from None
    return address, port(match.group("port"), where, protocol)


def port(text: str | None, where: Where, protocol: str) -> int | None:
    """A port number or a name from /etc/services (None when there is no port)."""
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


@dataclass(frozen=True, slots=True)
class Real:
    """A ``real=`` line: ``ADDRESS[->LAST][:PORT] METHOD [WEIGHT] ["REQUEST", "RECEIVE"]
    [l:LOWER] [u:UPPER]``."""

    addresses: list[str]
    port: int | None
    method: str  # a key of FORWARD
    weight: int
    request: str | None
    receive: str | None
    lower: int | None
    upper: int | None


def real(text: str, where: Where, protocol: str) -> Real:
    """The real server line ``text`` (after ``real=``)."""
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
    real_port = port(match.group("port"), where, protocol)
    rest = match.group("rest")
    flags = re.fullmatch(
        r"(?P<method>\w+)(?:\s+(?P<weight>\d+))?"
        r'(?:\s+"(?P<request>[^"]*)"[, ]\s*"(?P<receive>[^"]*)")?'
        r"(?:\s+l:(?P<lower>\d+))?(?:\s+u:(?P<upper>\d+))?\s*",
        rest,
    )
    if flags is None or flags.group("method") not in FORWARD:
        raise fail(where, f'expected gate|masq|ipip [WEIGHT] ["REQUEST", "RECEIVE"], got {rest!r}')
    lower, upper = flags.group("lower"), flags.group("upper")
    return Real(
        addresses=addresses,
        port=real_port,
        method=flags.group("method"),
        weight=int(flags.group("weight") or 1),
        request=flags.group("request"),
        receive=flags.group("receive"),
        lower=int(lower) if lower else None,
        upper=int(upper) if upper else None,
    )
