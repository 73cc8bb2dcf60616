"""The destructive-reload guard: a reload that would take out too much at once (an
emptied or truncated file) is refused unless forced. Pure: two configs in, a reason out."""

from __future__ import annotations

from lvsd.config.model import Config


def too_destructive(old: Config, new: Config, max_removed: float) -> str | None:
    """Why moving from ``old`` to ``new`` removes too much (None: it doesn't): every
    service, more than ``max_removed`` of all real servers, or more than that share of
    a service's real servers."""
    if max_removed >= 1.0 or not old.services:
        return None
    if not new.services:
        return f"it removes every service ({len(old.services)})"
    kept = {s.key: s for s in new.services}
    removed_total = 0
    for service in old.services:
        before = {r.key for r in service.real_servers}
        after = kept.get(service.key)
        gone = len(before - {r.key for r in after.real_servers}) if after else len(before)
        removed_total += gone
        if after is not None and before and gone / len(before) > max_removed:
            return (
                f"it removes {gone} of the {len(before)} real servers of service "
                f"{service.name} (more than {max_removed:.0%})"
            )
    total = old.real_server_count
    if total and removed_total / total > max_removed:
        return f"it removes {removed_total} of {total} real servers (more than {max_removed:.0%})"
    return None
