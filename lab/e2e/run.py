"""The guest entry (``python -m lab.e2e guest``): set up, run the named scenarios."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

from lab.e2e import failures, flapping, operations
from lab.e2e.guest import Guest
from lab.e2e.settings import SCENARIOS
from lab.e2e.tools import EXPORTED_MANY, journal, metrics, sh, tune_director

#: Each scenario's function, by the name the host passes (``SCENARIOS``, ``flap200``).
SCENARIO_FUNCTIONS: dict[str, Callable[[Guest], None]] = {
    "kill": failures.kill,
    "hang": failures.hang,
    "status500": failures.status500,
    "link": failures.link,
    "drain": operations.drain,
    "restart": operations.restart,
    "reload_weights": operations.reload_weights,
    "reload_broken": operations.reload_broken,
    "sorry": failures.sorry,
    "watchdog": operations.watchdog,
    "flap200": flapping.flap200,
}


def run(g: Guest, names: Sequence[str]) -> int:
    """Run ``names`` in turn (the flapping one alone, in its own boot); 1 if any failed."""
    g.sysctls = tune_director()
    if list(names) == ["flap200"]:
        try:
            flapping.flap200(g)
        except Exception as exc:  # recorded for the host
            g.record(
                "flap200",
                error=f"{type(exc).__name__}: {exc}",
                journal=journal(0, limit=60, last=True),
                metrics=metrics(*EXPORTED_MANY),
                unit=sh("systemctl", "status", "lvsd", "--no-pager", "-n", "0", check=False),
            )
            return 1
        return 0
    g.setup()
    failed = 0
    for name in names:
        g.log("scenario", name)
        try:
            SCENARIO_FUNCTIONS[name](g)
        except Exception as exc:  # recorded; the next scenario runs
            failed += 1
            g.record(name, error=f"{type(exc).__name__}: {exc}")
            g.all_ok()
            with contextlib.suppress(Exception):
                g.all_linked()
                sh("systemctl", "start", "lvsd")
                g.settle()
    return 1 if failed else 0


def guest_main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lab.e2e guest")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("names", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args(argv)
    guest = Guest(args.work, args.results)
    with guest.stalls:
        return run(guest, args.names)
