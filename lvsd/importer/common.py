"""What both importers share: where a thing came from, what could not be converted,
and small value helpers (netmask to prefix, service names)."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field

from lvsd.errors import ImportConfigError
from lvsd.importer.emit import Document


@dataclass(frozen=True, slots=True)
class Where:
    """A place in an input file."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Unconverted:
    """A keyword lvsd cannot express, and what to do instead."""

    where: Where
    keyword: str
    advice: str

    def __str__(self) -> str:
        return f"{self.where}: {self.keyword}: not converted: {self.advice}"


@dataclass(slots=True)
class Conversion:
    """The result of an import: the TOML document and what was left out."""

    document: Document
    unconverted: list[Unconverted] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unconverted


def fail(where: Where, message: str) -> ImportConfigError:
    """An :class:`ImportConfigError` naming file and line."""
    return ImportConfigError(f"{where}: {message}")


def source_name(file: str, root: str) -> str:
    """``file`` as a source comment shows it: relative to the main file's directory."""
    base = os.path.dirname(os.path.abspath(root))
    rel = os.path.relpath(os.path.abspath(file), base)
    return rel if not rel.startswith("..") else os.path.abspath(file)


def mask_to_prefix(mask: str) -> int:
    """A dotted netmask (``255.255.255.0``) or a prefix length (``24``) as a prefix
    length; ValueError for anything else (a mask with holes included)."""
    text = mask.strip()
    if text.isdigit():
        return int(text)
    return ipaddress.IPv4Network(f"0.0.0.0/{text}").prefixlen


def prefix_for_lvsd(prefix: int, version: int) -> int:
    """lvsd writes a host-granular netmask as 0; keepalived/ldirectord write /32 or /128."""
    full = 32 if version == 4 else 128
    return 0 if prefix == full else prefix


_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def service_name(text: str, taken: set[str]) -> str:
    """A TOML-bare service name from ``text``, unique among ``taken`` (which it joins)."""
    base = _NAME_CHARS.sub("_", text.strip()).strip("_").lower() or "service"
    name = base
    n = 2
    while name in taken:
        name = f"{base}_{n}"
        n += 1
    taken.add(name)
    return name


def address_name(protocol: str, address: str, port: int) -> str:
    """The readable part of a generated service name: ``tcp_10_0_0_1_80``."""
    return f"{protocol}_{address}_{port}"


def expand_range(first: str, last: str) -> list[str]:
    """Every address from ``first`` to ``last`` inclusive (same family, at most 4096)."""
    a = ipaddress.ip_address(first)
    b = ipaddress.ip_address(last)
    if a.version != b.version:
        raise ValueError(f"range {first} to {last} mixes address families")
    if int(b) < int(a):
        raise ValueError(f"range {first} to {last} ends before it starts")
    if int(b) - int(a) >= 4096:  # a typo, not a pool
        raise ValueError(f"range {first} to {last} has more than 4096 addresses")
    cls = type(a)
    return [str(cls(n)) for n in range(int(a), int(b) + 1)]
