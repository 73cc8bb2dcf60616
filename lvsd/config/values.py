"""The scalar values of a config tree, converted to typed values, and the wording of
problems about them.

Each converter takes a value as read (TOML's own types, or INI text wrapped as
:class:`~lvsd.config.document.IniText`, which may be coerced: ``"5"`` -> 5) and returns
the typed value or raises :class:`Invalid`, whose message says what was expected. A
TOML value is never coerced: ``port = "80"`` is an error. :mod:`lvsd.config.schema`
decides which key takes which converter and reports the problem at its key.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import shlex
import types
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, TypeVar, Union, get_args, get_origin

from lvsd.config.document import IniText
from lvsd.config.model import StatusRange
from lvsd.config.options import regex_problem
from lvsd.model import IPAddress, parse_hostport

MAX_PORT = 65535
#: The largest value of a kernel u32 field (fwmark, persistence timeout, thresholds).
MAX_U32 = 2**32 - 1
MAX_FWMARK = MAX_U32
#: The shortest check or drift-repair interval: shorter ones would only spin the loop.
MIN_INTERVAL = 0.01
#: The longest control socket path: AF_UNIX holds 107 bytes, and the daemon binds a
#: temporary name beside it first (".NAME.PID": room for 12 bytes more).
MAX_SOCKET_PATH = 107 - 12
#: The longest duration any setting takes (30 days): finite, and far above any real use.
MAX_SECONDS = 30 * 86400.0

#: Options that take a command line (a list, or a string split like a shell does).
_COMMAND_OPTIONS = frozenset({"command"})
#: Text options that are wire data: INI values take backslash escapes (agent ``send``).
_ESCAPED_OPTIONS = frozenset({"send"})

_SPLIT = re.compile(r"[,\s]+")
_INI_TRUE = frozenset({"true", "yes", "on", "1"})
_INI_FALSE = frozenset({"false", "no", "off", "0"})
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.)")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\", '"': '"', "'": "'"}

_E = TypeVar("_E", bound=StrEnum)


class Invalid(Exception):
    """A value is wrong; the message says what was expected."""


def show(value: object) -> str:
    """A value as the user wrote it: strings quoted, booleans in lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, int) and not -(10**30) < value < 10**30:
        return "an integer of more than 30 digits"
    return str(value)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean "x"?)`` for the choice closest to ``word``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {show(close[0])}?)" if close else ""


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("x") and len(code) == 3:
            return chr(int(code[1:], 16))
        return _ESCAPES.get(code, match.group(0))

    return _ESCAPE.sub(one, text)


def to_int(value: object, low: int, high: int | None) -> int:
    if isinstance(value, IniText):
        try:
            value = int(value.strip())
        except ValueError:
            raise Invalid(f"expected an integer, got {show(value)}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"expected an integer, got {show(value)}")
    if value < low or value > (MAX_U32 if high is None else high):
        if high is not None:
            bound = f"{low}..{high}"
        else:
            bound = f">= {low}" if value < low else f"at most {MAX_U32}"
        raise Invalid(f"{show(value)} is out of range (expected {bound})")
    return value


def to_float(
    value: object, low: float, *, strict: bool = False, high: float | None = None
) -> float:
    if isinstance(value, IniText):
        try:
            value = float(value.strip())
        except ValueError:
            raise Invalid(f"expected a number, got {show(value)}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"expected a number, got {show(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise Invalid(f"expected a finite number, got {show(value)}")
    too_low = number <= low if strict else number < low
    if too_low or (high is not None and number > high):
        low_text = f"> {low:g}" if strict else f">= {low:g}"
        bound = f"{low_text} and <= {high:g}" if high is not None else low_text
        raise Invalid(f"{show(value)} is out of range (expected {bound})")
    if number > MAX_SECONDS:  # every other float is a duration
        raise Invalid(
            f"{show(value)} is out of range (expected at most {MAX_SECONDS:.0f}, 30 days)"
        )
    return number


def to_bool(value: object) -> bool:
    if isinstance(value, IniText):
        word = value.strip().lower()
        if word in _INI_TRUE:
            return True
        if word in _INI_FALSE:
            return False
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {show(value)}")
    return value


def to_str(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {show(value)}")
    return str(value)


def to_escaped_str(value: object) -> str:
    text = to_str(value)
    return _unescape(text) if isinstance(value, IniText) else text


def to_bytes(value: object) -> bytes:
    text = to_str(value)
    if isinstance(value, IniText):
        text = _unescape(text)
    return text.encode()


def to_regex(value: object, name: str = "body_regex") -> str:
    pattern = to_str(value)
    reason = regex_problem(pattern)
    if reason is not None:
        raise Invalid(
            f"{name} {show(pattern)} does not compile ({reason}); "
            "expected a Python regular expression"
        )
    return pattern


def to_str_list(value: object) -> tuple[str, ...]:
    if isinstance(value, IniText):
        return tuple(word for word in _SPLIT.split(value.strip()) if word)
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Invalid(f"expected a list of strings, got {show(value)}")
    return tuple(value)


def to_command(value: object) -> tuple[str, ...]:
    want = "expected a command (a list of strings, or a string)"
    if isinstance(value, str):
        try:
            words = tuple(shlex.split(value))
        except ValueError as exc:
            raise Invalid(
                f"cannot split {show(value)} into words ({exc}); "
                "expected a command line with balanced quotes"
            ) from None
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        words = tuple(value)
    else:
        raise Invalid(f"{want}, got {show(value)}")
    if not words:
        raise Invalid(f"{want}, got an empty one: {_show_command(value)}")
    if not words[0].strip():
        raise Invalid(
            f"expected a program to run first, got an empty program name: {_show_command(value)}"
        )
    return words


def _show_command(value: object) -> str:
    """A command as written: a string quoted, a list in TOML's form."""
    if isinstance(value, list):
        return "[" + ", ".join(show(item) for item in value) + "]"
    return show(value)


def to_status(value: object) -> tuple[StatusRange, ...]:
    if isinstance(value, IniText):
        items: list[object] = [IniText(w) for w in _SPLIT.split(value.strip()) if w]
    elif isinstance(value, list):
        items = list(value)
    elif isinstance(value, str | int) and not isinstance(value, bool):
        items = [value]
    else:
        items = [value]
    want = 'expected status codes like 200, "200" or "200-299"'
    ranges = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            low = high = item
        elif isinstance(item, str) and re.fullmatch(r"\s*\d{3}\s*(-\s*\d{3}\s*)?", item):
            low_text, _, high_text = item.partition("-")
            low, high = int(low_text), int(high_text or low_text)
        else:
            raise Invalid(f"{want}, got {show(item)}")
        if not (100 <= low <= high <= 599):
            raise Invalid(f"{show(item)} is not a status range within 100-599")
        ranges.append(StatusRange(low=low, high=high))
    if not ranges:
        raise Invalid(f"{want}, got none")
    return tuple(ranges)


def to_headers(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise Invalid(f"expected a table of header names to strings, got {show(value)}")
    return tuple((str(k), str(v)) for k, v in value.items())


def to_ip(value: object) -> IPAddress:
    text = to_str(value)
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise Invalid(f"expected an IPv4 or IPv6 address, got {show(value)}") from None


def to_multicast(value: object) -> str:
    """A multicast group (224.0.0.0/4 or ff00::/8), in compressed text form."""
    address = to_ip(value)
    if not address.is_multicast:
        raise Invalid(f"{show(value)} is not a multicast address (224.0.0.0/4 or ff00::/8)")
    return str(address)


def to_interface(value: object) -> str:
    """A network interface name as the kernel takes it: 1 to 15 bytes, no "/",
    ":" or white space."""
    text = to_str(value)
    if not 1 <= len(text.encode()) <= 15 or any(c in text for c in "/: \t\n\0"):
        raise Invalid(f"{show(value)} is not an interface name (1 to 15 bytes, no / : or spaces)")
    return text


def to_enum(value: object, enum: type[_E], what: str) -> _E:
    text = to_str(value).strip().lower()
    try:
        return enum(text)
    except ValueError:
        names = [member.value for member in enum]
        hint = did_you_mean(text, names)
        raise Invalid(
            f"unknown {what} {show(value)}{hint}; expected one of {', '.join(names)}"
        ) from None


def by_type(hint: object, name: str) -> Callable[[object], Any]:
    """The converter for a dataclass field's type."""
    if get_origin(hint) in (Union, types.UnionType):
        arms = [arm for arm in get_args(hint) if arm is not type(None)]
        hint = arms[0]
    if hint is bool:
        return to_bool
    if hint is int:
        return lambda v: to_int(v, 0, None)
    if hint is float:
        return lambda v: to_float(v, 0.0)
    if hint is str:
        if name in ("body_regex", "body_not_regex"):
            return lambda v: to_regex(v, name)
        return to_escaped_str if name in _ESCAPED_OPTIONS else to_str
    if hint is bytes:
        return to_bytes
    if get_origin(hint) is tuple:
        element = get_args(hint)[0]
        if element is str:
            return to_command if name in _COMMAND_OPTIONS else to_str_list
        if element is StatusRange:
            return to_status
        if get_origin(element) is tuple:
            return to_headers
    raise TypeError(f"no converter for field {name}: {hint}")  # a bug in the model


def to_socket_path(value: object) -> str:
    text = to_str(value)
    size = len(os.fsencode(text))
    if not os.path.isabs(text) or size > MAX_SOCKET_PATH:
        raise Invalid(
            f"expected an absolute path of at most {MAX_SOCKET_PATH} bytes, got {show(value)}"
        )
    return text


def to_abs_path(value: object) -> str:
    text = to_str(value)
    if not os.path.isabs(text) or "\0" in text:
        raise Invalid(f"expected an absolute path, got {show(value)}")
    return text


def to_listen(value: object) -> str:
    text = to_str(value).strip()
    if not text:
        return ""
    try:
        _, port = parse_hostport(text)
        if port < 1:
            raise ValueError(text)
    except ValueError:
        raise Invalid(
            f'expected "ADDRESS:PORT" (like "127.0.0.1:9475" or "[::1]:9475") '
            f'or "" to disable, got {show(value)}'
        ) from None
    return text
