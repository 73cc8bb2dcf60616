"""The error tree of lvsd.

::

    LvsdError
    ├── ConfigError      one or more problems in a config file (carries every Problem)
    ├── IpvsError        a kernel-table operation failed (names the op and the reason)
    ├── ControlError     the control socket could not be reached or answered an error
    └── ImportConfigError  a keepalived/ldirectord file could not be read

Lower-level errors (OSError, pyroute2's NetlinkError, aiohttp's ClientError) are
translated at the boundary with ``raise X(...) from exc``. Only ``cli.py`` turns
an ``LvsdError`` into an exit status.
"""

from __future__ import annotations

from dataclasses import dataclass


class LvsdError(Exception):
    """Base of every error lvsd raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config: where it is and what is expected."""

    file: str
    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


class ConfigError(LvsdError):
    """A config could not be loaded; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class IpvsError(LvsdError):
    """A kernel IPVS operation failed.

    ``op`` is the rendered operation (for example ``add-dest tcp 192.168.3.108:80 ->
    10.0.0.2:80``), ``reason`` the kernel's answer in words, ``errno`` its number.
    """

    def __init__(self, op: str, reason: str, errno: int | None = None) -> None:
        self.op = op
        self.reason = reason
        self.errno = errno
        super().__init__(f"{op}: {reason}")


class ControlError(LvsdError):
    """The daemon's control socket could not be reached or reported a failure."""


class ImportConfigError(LvsdError):
    """A keepalived.conf or ldirectord.cf could not be parsed (names file and line)."""
