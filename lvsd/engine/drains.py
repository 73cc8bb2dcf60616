"""Operator overrides that survive a restart: drained real servers.

A drain (``lvsd drain web 10.0.0.2:80``) sets a real server's weight to 0 whatever its
health says, until it is undrained. Drains live in ``<state_dir>/drains.json``::

    {"version": 1,
     "drains": [{"service": "web", "address": "10.0.0.2", "port": 80}]}

Writes are atomic (a temporary file in the same directory, fsync, ``os.replace``, fsync
of the directory), so a crash leaves the old file or the new one, never half of one.
A file that cannot be read is an :class:`~lvsd.errors.LvsdError` naming it from
:meth:`DrainStore.load`; the daemon starts through :meth:`DrainStore.recover` instead,
which sets a corrupt file aside (renamed, logged) and keeps the entries it could read:
a bad state file never stops health checking.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from lvsd.errors import LvsdError
from lvsd.model import DestKey, RealServerId

#: The format version written; files with a higher one are refused.
VERSION = 1

#: The file name under ``DaemonConfig.state_dir``.
DRAINS_FILE = "drains.json"


log = structlog.get_logger(__name__)


class DrainStore:
    """The set of drained (service, real server) pairs, kept in one JSON file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._drains: frozenset[RealServerId] = frozenset()
        self._loaded = False
        #: Where :meth:`recover` moved a corrupt file (None: nothing set aside).
        self.set_aside: Path | None = None

    @classmethod
    def in_dir(cls, state_dir: str | os.PathLike[str]) -> DrainStore:
        """The store at its usual place under ``DaemonConfig.state_dir``."""
        return cls(Path(state_dir) / DRAINS_FILE)

    def load(self) -> frozenset[RealServerId]:
        """Read the file (a missing file means no drains) and return the drains.

        Raises :class:`LvsdError` naming the file when it is unreadable, not JSON,
        of an unknown version, or holds a malformed entry.
        """
        self._loaded = False
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._drains = frozenset()
            self._loaded = True
            return self._drains
        except (OSError, UnicodeDecodeError) as exc:
            raise LvsdError(f"{self.path}: cannot read drain state: {exc}") from exc
        self._drains = _parse(self.path, text)
        self._loaded = True
        return self._drains

    def recover(self) -> frozenset[RealServerId]:
        """:meth:`load`, but a corrupt or unreadable file is set aside, never fatal.

        The file is renamed to ``drains.json.corrupt-<UTC time>`` and the entries that
        could be read are kept (and written back), so the daemon health-checks with the
        drains it can trust. When even the rename fails, the store starts empty and
        refuses to write (each drain command says why) rather than replace the file.
        """
        try:
            return self.load()
        except LvsdError as exc:
            problem = str(exc)
        kept = _salvage(self.path)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            log.error("state.unusable", path=str(self.path), problem=problem, error=str(exc))
            return frozenset()
        self.set_aside = aside
        log.error(
            "state.set_aside",
            path=str(self.path),
            moved_to=str(aside),
            problem=problem,
            drains_kept=len(kept),
        )
        self._drains, self._loaded = frozenset(), True
        if kept:
            self._write(kept)
        return self._drains

    def drained(self) -> frozenset[RealServerId]:
        """The drains as last loaded or written (loads on first use)."""
        if not self._loaded:
            self.load()
        return self._drains

    def is_drained(self, service: str, realserver: DestKey) -> bool:
        return (service, realserver) in self.drained()

    def drain(self, service: str, realserver: DestKey) -> bool:
        """Add a drain and persist it; False when it was already drained."""
        current = self.drained()
        if (service, realserver) in current:
            return False
        self._write(current | {(service, realserver)})
        return True

    def undrain(self, service: str, realserver: DestKey) -> bool:
        """Remove a drain and persist; False when it was not drained."""
        current = self.drained()
        if (service, realserver) not in current:
            return False
        self._write(current - {(service, realserver)})
        return True

    def _write(self, drains: frozenset[RealServerId]) -> None:
        document = {
            "version": VERSION,
            "drains": [
                {"service": service, "address": rs.address, "port": rs.port}
                for service, rs in sorted(drains)
            ],
        }
        data = (json.dumps(document, indent=2) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.path, data)
        except OSError as exc:
            raise LvsdError(f"{self.path}: cannot save drain state: {exc}") from exc
        self._drains = drains
        log.info("state.saved", path=str(self.path), drains=len(drains))

    def __repr__(self) -> str:
        return f"DrainStore({str(self.path)!r})"


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _salvage(path: Path) -> frozenset[RealServerId]:
    """The well-formed entries of a corrupt file (none when it is not a JSON object)."""
    try:
        document: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return frozenset()
    entries = document.get("drains") if isinstance(document, dict) else None
    kept: set[RealServerId] = set()
    for entry in entries if isinstance(entries, list) else ():
        try:
            kept |= _parse(path, json.dumps({"version": VERSION, "drains": [entry]}))
        except (LvsdError, ValueError, RecursionError):
            continue
    return frozenset(kept)


def _parse(path: Path, text: str) -> frozenset[RealServerId]:
    def bad(message: str) -> LvsdError:
        return LvsdError(
            f"{path}: corrupt drain state: {message}; fix or remove the file "
            "(removing it undrains every real server)"
        )

    try:
        document: Any = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or nested too deep
        raise bad(f"not JSON ({exc or 'nested too deep'})") from exc
    if not isinstance(document, dict):
        raise bad("expected a JSON object")
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise bad("no integer 'version'")
    if version > VERSION:
        raise LvsdError(
            f"{path}: drain state version {version} was written by a newer lvsd "
            f"(this one reads version {VERSION})"
        )
    entries = document.get("drains")
    if not isinstance(entries, list):
        raise bad("'drains' must be a list")
    drains: set[RealServerId] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise bad(f"drains[{index}] is not an object")
        service, address, port = entry.get("service"), entry.get("address"), entry.get("port")
        if not isinstance(service, str) or not service:
            raise bad(f"drains[{index}].service must be a non-empty string")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise bad(f"drains[{index}].port must be an integer 0..65535")
        try:
            key = DestKey.of(str(address), port)
        except ValueError as exc:
            raise bad(f"drains[{index}].address {address!r} is not an IP address") from exc
        drains.add((service, key))
    return frozenset(drains)


__all__ = ["DRAINS_FILE", "VERSION", "DrainStore", "RealServerId"]
