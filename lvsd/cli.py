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
    if not args.host:
        return EXIT_OK
    from lvsd.preflight import Severity, audit, format_findings, worst

    findings = audit(config)
    print(format_findings(findings))
    return EXIT_FAILED if worst(findings) is Severity.ERROR else EXIT_OK


def _cmd_apply(args: argparse.Namespace) -> int:
    from lvsd.apply import main as apply_main

    return apply_main(args.config, args.dry_run)


def _cmd_import(args: argparse.Namespace) -> int:
    from lvsd.importer import main as import_main

    return import_main(args.kind, args.file, args.output)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})"
    )


def build_parser() -> argparse.ArgumentParser:
    from lvsd.log import LEVELS

    parser = argparse.ArgumentParser(
        prog="lvsd", description="Health-checking director daemon for Linux IPVS."
    )
    parser.add_argument("--version", action="version", version=f"lvsd {__version__}")
    parser.add_argument("--log-level", choices=LEVELS, default="info", help="log threshold")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate a config and print a summary")
    _config_arg(check)
    check.add_argument(
        "--host", action="store_true", help="also audit this host's kernel settings for the config"
    )
    check.set_defaults(func=_cmd_check)

    apply = sub.add_parser(
        "apply", help="make the kernel IPVS table match the config once (all real servers up)"
    )
    _config_arg(apply)
    apply.add_argument("--dry-run", action="store_true", help="print the ops, change nothing")
    apply.set_defaults(func=_cmd_apply)

    imp = sub.add_parser(
        "import", help="convert a keepalived.conf or ldirectord.cf to an lvsd TOML config"
    )
    imp.add_argument("kind", choices=["keepalived", "ldirectord"])
    imp.add_argument("file", help="the keepalived.conf or ldirectord.cf to convert")
    imp.add_argument("-o", "--output", default=None, help="write the TOML here instead of stdout")
    imp.set_defaults(func=_cmd_import)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from lvsd.log import configure

    configure(args.log_level, json=None, stream=sys.stderr)
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
