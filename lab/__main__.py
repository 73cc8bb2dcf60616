"""``python -m lab``: the lab from the command line.

::

    python -m lab demo [--real-servers N] [--requests N] [--keep DIR]
    python -m lab run [--nat N] [--no-modules] [--keep DIR] (--shell CMD | --script FILE)
    python -m lab check        # says whether the lab can boot here
    python -m lab e2e [--out FILE] [--keep DIR]   # writes docs/e2e-results.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from lab.harness import LabError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="boot the NAT director and send traffic through it")
    demo.add_argument("--real-servers", type=int, default=2)
    demo.add_argument("--requests", type=int, default=10)
    demo.add_argument("--keep", type=Path, help="work in DIR and keep it (logs, results)")
    runp = sub.add_parser("run", help="boot once and run a shell snippet or a Python script")
    runp.add_argument("--nat", type=int, metavar="N", help="build the NAT topology with N servers")
    runp.add_argument("--no-modules", action="store_true", help="load no kernel module")
    runp.add_argument("--keep", type=Path, help="work in DIR and keep it")
    what = runp.add_mutually_exclusive_group(required=True)
    what.add_argument("--shell", help="shell snippet to run in the guest")
    what.add_argument("--script", type=Path, help="Python script run with the venv's python")
    sub.add_parser("check", help="say whether the lab can boot on this machine")
    e2ep = sub.add_parser("e2e", help="lvsd under systemd with traffic and faults; the report")
    e2ep.add_argument("--out", type=Path, help="report file (default docs/e2e-results.md)")
    e2ep.add_argument("--keep", type=Path, help="work in DIR and keep it")
    args = parser.parse_args(argv)

    from lab import harness

    try:
        if args.command == "check":
            reason = harness.unavailable_reason()
            print(f"lab unavailable: {reason}" if reason else "lab available")
            return 1 if reason else 0
        if args.command == "demo":
            from lab.demo import main as demo_main

            return demo_main(args.real_servers, args.requests, args.keep)
        if args.command == "e2e":
            from lab.e2e.host import main as e2e_main

            return e2e_main(args.out, args.keep)
        return _run(args)
    except LabError as exc:
        print(f"lvsd lab: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from lab import harness
    from lab.topology import NatTopology

    if args.shell is not None:
        scenario = harness.Scenario(shell=args.shell)
    else:
        scenario = harness.Scenario.python(args.script.resolve())
    boot = harness.Boot(modules=()) if args.no_modules else harness.Boot()
    topology = NatTopology(real_servers=args.nat) if args.nat else None
    with tempfile.TemporaryDirectory(prefix="lvsd-lab-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = harness.run(work, scenario, topology=topology, boot=boot, stream=sys.stdout)
    print(f"lvsd lab: exit status {result.exit_status} after {result.duration:.1f} s")
    return result.exit_status


if __name__ == "__main__":
    sys.exit(main())
