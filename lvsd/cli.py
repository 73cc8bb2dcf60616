"""Command line: argument parsing and exit codes only. Every command's work lives in
its own module; this file maps an ``LvsdError`` to a message and a status."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lvsd import __version__
from lvsd.errors import ConfigError, LvsdError

DEFAULT_CONFIG = "/etc/lvsd/lvsd.toml"

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and says no (bad config, failed ops)
EXIT_USAGE = 2


def _cmd_check(args: argparse.Namespace) -> int:
    from lvsd.config import load

    config = load(args.config)
    print(config.summary())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lvsd", description="Health-checking director daemon for Linux IPVS."
    )
    parser.add_argument("--version", action="version", version=f"lvsd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate a config and print a summary")
    check.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file")
    check.set_defaults(func=_cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        n = len(exc.problems)
        print(f"{n} problem{'s' if n != 1 else ''} found", file=sys.stderr)
        return EXIT_FAILED
    except LvsdError as exc:
        print(f"lvsd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
