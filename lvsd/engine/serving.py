"""Whether this director can serve, as a file keepalived's ``track_file`` reads:
``0`` while it can, ``1`` when not, so that a director that cannot serve gives up
VRRP mastership to one that can (docs/ha.md).

A director can serve while lvsd runs (ready, not stopping) and every service is
above its quorum: the ``quorum`` it configures, else one real server up (or held up
by the panic guard). The file is written when the answer changes (a new file renamed
over the old one: never read half written), at start, after a reload, and ``1``
first thing when lvsd stops. Should lvsd die, the file keeps its last value and the
kernel keeps forwarding with the table lvsd left; systemd restarts lvsd.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from lvsd.config.model import Config
from lvsd.health.state import HealthState

log = structlog.get_logger(__name__)


def cannot_serve(config: Config, health: HealthState, now: float) -> list[str]:
    """Why this director cannot serve (empty: it can), one reason per service."""
    lost = health.quorum_lost()
    live: set[str] = set()
    for row in health.status(now):
        if row.up or row.held:
            live.add(row.service)
    reasons = []
    for svc in config.services:
        if svc.name in lost:
            reasons.append(f"{svc.name}: quorum lost")
        elif svc.quorum is None and svc.name not in live:
            reasons.append(f"{svc.name}: no real server up")
    return reasons


class ServingFile:
    """Writes ``0`` or ``1`` to ``path`` when the answer changes."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.serving: bool | None = None  # as last written; None: not yet

    def set(self, reasons: list[str]) -> None:
        """Write the answer ``reasons`` give, if it changed; log the change."""
        serving = not reasons
        if serving == self.serving:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            fresh.write_text("0\n" if serving else "1\n")
            fresh.replace(self.path)
        except OSError as exc:
            log.error("serving.write_failed", path=str(self.path), error=str(exc))
            return
        self.serving = serving
        log.info("serving.changed", serving=serving, reasons=reasons, path=str(self.path))


__all__ = ["ServingFile", "cannot_serve"]
