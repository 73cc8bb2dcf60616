"""``lvsd apply``: make the kernel table match a config once, with every real server up.

No health checks run: every configured real server counts as up at its configured
weight. The live table is dumped, ``lvsd.plan.plan`` computes the fewest ops for the
configured services (services nobody configured are left alone), each op is printed
on its own line, then applied, as are the ``[ipvs]`` connection timeouts that differ.
``--dry-run`` plays the ops on an in-memory copy of
the live table (or an empty one, when the live table cannot be read) and changes
nothing in the kernel.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from lvsd.config.model import Config
from lvsd.desired import Overrides, ServerHealth, desired_table
from lvsd.errors import IpvsError
from lvsd.ipvs.base import Backend, TimeoutControl
from lvsd.ipvs.memory import MemoryBackend
from lvsd.model import ApplyResult, RealServerId, Table
from lvsd.plan import plan

#: Where ``apply_once`` reports what it does (one line per call).
Report = Callable[[str], None]


def all_up(config: Config) -> dict[RealServerId, ServerHealth]:
    """Health that says every configured real server is up at its configured weight."""
    return {
        (svc.name, rs.key): ServerHealth(up=True, weight=rs.weight)
        for svc in config.services
        for rs in svc.real_servers
    }


async def apply_once(
    config: Config,
    backend: Backend,
    *,
    dry_run: bool,
    report: Report | None = None,
) -> ApplyResult:
    """Bring ``backend``'s table in line with ``config`` (all real servers up).

    With ``dry_run`` the ops go to a ``MemoryBackend`` seeded with the live table (an
    empty one when it cannot be read) and ``backend`` is not changed. ``report``
    receives each planned op, rendered, before anything is applied. Raises
    ``IpvsError`` when the live table cannot be read and this is no dry run.
    """
    say: Report = report or (lambda _line: None)
    current: Table
    try:
        current = (await backend.dump()).table
    except IpvsError as exc:
        if not dry_run:
            raise
        say(f"# live table unreadable ({exc.reason}); planning against an empty table")
        current = {}
    desired = desired_table(config, all_up(config), Overrides())
    ops = plan(current, desired, managed=desired.keys())
    for op in ops:
        say(str(op))
    await _timeouts(config, backend, dry_run=dry_run, say=say)
    target: Backend = MemoryBackend(table=current) if dry_run else backend
    return await target.apply(ops)


async def _timeouts(config: Config, backend: Backend, *, dry_run: bool, say: Report) -> None:
    """Set the ``[ipvs]`` connection timeouts that differ (reported as one line)."""
    ipvs = config.ipvs
    if not ipvs or not isinstance(backend, TimeoutControl):
        return
    try:
        current = await backend.get_timeouts()
        want = current.but(tcp=ipvs.tcp, tcp_fin=ipvs.tcp_fin, udp=ipvs.udp)
        if want == current:
            return
        say(f"set-timeouts {want} (was {current})")
        if not dry_run:
            await backend.set_timeouts(want)
    except IpvsError as exc:
        say(f"# connection timeouts not set: {exc.reason}")


def summary(result: ApplyResult, *, dry_run: bool) -> str:
    """One line saying what happened."""
    total = len(result.applied) + len(result.failed)
    if total == 0:
        return "nothing to do: the kernel table already matches the config"
    ops = f"{total} op{'s' if total != 1 else ''}"
    if dry_run:
        return f"dry run: {ops} would be applied ({len(result.failed)} would fail); nothing changed"
    return f"{ops}: {len(result.applied)} applied, {len(result.failed)} failed"


def main(config_path: str, dry_run: bool) -> int:
    """``lvsd apply -c FILE [--dry-run]``: 0 when every op applied, 1 otherwise.

    Raises ``ConfigError`` for a bad config and ``IpvsError`` when the live table
    cannot be read (``cli.py`` turns both into messages and exit status 1).
    """
    from lvsd.config import load
    from lvsd.ipvs.netlink import NetlinkBackend

    config = load(config_path)

    async def run() -> ApplyResult:
        backend = NetlinkBackend()
        try:
            return await apply_once(config, backend, dry_run=dry_run, report=print)
        finally:
            await backend.close()

    result = asyncio.run(run())
    for _op, error in result.failed:
        print(f"lvsd: {error}", file=sys.stderr)
    print(summary(result, dry_run=dry_run))
    return 0 if result.ok else 1


__all__ = ["Report", "all_up", "apply_once", "main", "summary"]
