"""Command line: argument parsing and exit codes only. Every command's work lives in
its own module; this file maps an ``LvsdError`` to a message and a status."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from lvsd import __version__
from lvsd.errors import ConfigError, LvsdError

DEFAULT_CONFIG = "/etc/lvsd/lvsd.toml"
DEFAULT_SOCKET = "/run/lvsd/control.sock"

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


def _cmd_run(args: argparse.Namespace) -> int:
    # A SIGHUP before the loop's handler is in (while the daemon's modules import)
    # would kill the process: until then it is moot, as the config is not read yet.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from lvsd.daemon.lifecycle import run

    return run(args.config, dry_run=args.dry_run)


def _socket(args: argparse.Namespace) -> str:
    """``--socket``, else the config's control socket (``-c``), else the default."""
    if args.socket:
        return str(args.socket)
    if args.config:
        from lvsd.config import load

        return load(args.config).daemon.control_socket
    return DEFAULT_SOCKET


def _request(args: argparse.Namespace, payload: dict[str, Any], timeout: float = 30.0) -> Any:
    from lvsd.control import request_sync

    return request_sync(_socket(args), payload, timeout)


def _cmd_reload(args: argparse.Namespace) -> int:
    request = {"command": "reload", "force": True} if args.force else {"command": "reload"}
    answer = _request(args, request, timeout=args.timeout)
    ops = answer.get("ops", [])
    for op in ops:
        print(op)
    for failed in answer.get("failed", []):
        print(f"failed: {failed}", file=sys.stderr)
    for linger in answer.get("lingering", []):
        print(f"draining: {linger}")
    for key in answer.get("restart_needed", []):
        print(f"restart needed: {key} changed; it takes effect when lvsd restarts")
    print(f"reloaded: {len(ops)} op{'s' if len(ops) != 1 else ''}")
    return EXIT_FAILED if answer.get("failed") else EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    answer = _request(args, {"command": "status"})
    if args.json:
        print(json.dumps(answer.get("status", {}), indent=2, sort_keys=True))
    else:
        print(answer.get("text", ""))
    return EXIT_OK


def _cmd_drain(args: argparse.Namespace) -> int:
    target = {"service": args.service, "realserver": args.realserver}
    on = args.command == "drain"
    answer = _request(args, {"command": args.command, **target})
    for op in answer.get("ops", []):
        print(op)
    print(f"{'drained' if on else 'undrained'} {args.service} {answer.get('realserver')}")
    if not on or not args.wait:
        return EXIT_OK
    deadline = time.monotonic() + args.timeout
    while True:
        active = int(_request(args, {"command": "connections", **target}).get("active", 0))
        if active == 0:
            print("no active connections left")
            return EXIT_OK
        if time.monotonic() >= deadline:
            print(
                f"lvsd: {active} active connections left after {args.timeout:g} s", file=sys.stderr
            )
            return EXIT_FAILED
        time.sleep(min(args.interval, max(0.0, deadline - time.monotonic())))


def _client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=None, help="take the control socket from this config"
    )
    parser.add_argument(
        "--socket", default=None, help=f"control socket (default: from -c, else {DEFAULT_SOCKET})"
    )


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

    run = sub.add_parser("run", help="run the daemon: health checks keep the kernel table right")
    _config_arg(run)
    run.add_argument(
        "--dry-run", action="store_true", help="an in-memory table instead of the kernel's"
    )
    run.add_argument(
        "--log-level", choices=LEVELS, default=argparse.SUPPRESS, help="log threshold (info)"
    )
    run.set_defaults(func=_cmd_run)

    reload = sub.add_parser("reload", help="make the running daemon re-read its config")
    _client_args(reload)
    reload.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (60)")
    reload.add_argument(
        "--force", action="store_true", help="apply even what the reload guard refuses"
    )
    reload.set_defaults(func=_cmd_reload)

    status = sub.add_parser("status", help="show services, real servers, health, weights")
    _client_args(status)
    status.add_argument("--json", action="store_true", help="JSON instead of a table")
    status.set_defaults(func=_cmd_status)

    for name, text in (
        ("drain", "give a real server weight 0 (kept across reloads and restarts)"),
        ("undrain", "end a drain: the real server's health decides again"),
    ):
        cmd = sub.add_parser(name, help=text)
        _client_args(cmd)
        cmd.add_argument("service", help="service name in the config")
        cmd.add_argument("realserver", help="ADDRESS:PORT, like 10.0.0.2:80 or [2001:db8::2]:80")
        if name == "drain":
            cmd.add_argument(
                "--wait", action="store_true", help="wait until no active connections are left"
            )
            cmd.add_argument(
                "--timeout", type=float, default=300.0, help="seconds --wait waits (300)"
            )
            cmd.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
        cmd.set_defaults(func=_cmd_drain)

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
