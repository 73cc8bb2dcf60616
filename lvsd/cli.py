"""Command line: argument parsing and exit codes only. Every command's work lives in
its own module; this file maps an ``LvsdError`` to a message and a status."""

from __future__ import annotations

import argparse
import json
import os
import re
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
EXIT_INTERRUPTED = 130

#: The exit statuses, as every ``--help`` and docs/operations.md list them.
EXIT_CODES = f"""exit status:
  {EXIT_OK}    success
  {EXIT_FAILED}    the command ran and failed: a config with problems, ops that failed,
       the daemon refused (reload, drain), lvsd not running, drain --wait timed
       out, apply not confirmed
  {EXIT_USAGE}    usage error: no or an unknown command, a bad option
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
"""

#: What ``lvsd apply`` says before it changes the kernel table.
APPLY_WARNING = (
    "lvsd apply: every configured real server goes in at its full weight, with no "
    "health checks; use `lvsd run` (the daemon) to keep dead servers out"
)


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

    if not args.dry_run:
        complain(APPLY_WARNING, WARNING)
        if not args.yes and _interactive() and not _confirm("apply? [y/N] "):
            complain("lvsd apply: nothing changed")
            return EXIT_FAILED
    return apply_main(args.config, args.dry_run)


def _interactive() -> bool:
    """A person at a terminal (stdin and stderr are TTYs): scripts are never asked."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def _confirm(prompt: str) -> bool:
    print(prompt, end="", file=sys.stderr, flush=True)
    try:
        return input().strip().lower() in ("y", "yes")
    except EOFError:
        return False


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
        return control_socket(args.config) or DEFAULT_SOCKET
    return DEFAULT_SOCKET


#: ``control_socket = "/run/x.sock"`` (TOML) or ``control_socket = /run/x.sock`` (INI).
_SOCKET_LINE = re.compile(r"^\s*control_socket\s*=\s*(?P<value>[^#\n]*?)\s*(?:#.*)?$", re.M)


def control_socket(config_path: str) -> str | None:
    """``daemon.control_socket`` of ``config_path`` and its includes, read leniently for
    the client commands: nothing else is checked (a typo elsewhere must not stop
    ``lvsd status``, and ``lvsd reload`` must reach the daemon to hear what is wrong);
    a file that does not parse is searched line by line. None: the config leaves it
    unset. ``LvsdError`` when the file cannot be read."""
    from lvsd.config.loader import read_tree

    tree = read_tree(config_path)
    if tree is not None:
        daemon = tree.get("daemon")
        value = daemon.get("control_socket") if isinstance(daemon, dict) else None
        return str(value) if isinstance(value, str) and value else None
    try:
        with open(config_path, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except OSError as exc:
        raise LvsdError(f"cannot read {config_path}: {exc.strerror or exc}") from exc
    found = [m["value"].strip("'\"") for m in _SOCKET_LINE.finditer(text)]
    return found[0] if found and found[0] else None


#: syslog priorities of what :func:`complain` writes (sd-daemon(3)).
ERROR, WARNING = 3, 4


def complain(text: str, priority: int = ERROR) -> None:
    """``text`` on stderr, each line with its syslog priority when stderr is the
    journal (``lvsd check`` as ExecStartPre, ``lvsd reload`` as ExecReload), so
    ``journalctl -p warning`` shows why a start or reload failed."""
    from lvsd.log import to_journal

    prefix = f"<{priority}>" if to_journal(sys.stderr) else ""
    for line in text.splitlines() or [""]:
        print(prefix + line, file=sys.stderr)


def plural(n: int, noun: str) -> str:
    """``1 service``, ``2 services``."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


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
        complain(f"failed: {failed}")
    for linger in answer.get("lingering", []):
        print(f"draining: {linger}")
    for key in answer.get("restart_needed", []):
        print(f"restart needed: {key} changed; it takes effect when lvsd restarts")
    print(f"reloaded: {plural(len(ops), 'op')}")
    return EXIT_FAILED if answer.get("failed") else EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"command": "status"}
    if not args.json and _colour(args.color):
        request["color"] = True
    answer = _request(args, request)
    if args.json:
        print(json.dumps(answer.get("status", {}), indent=2, sort_keys=True))
    else:
        print(answer.get("text", ""))
    return EXIT_OK


def _colour(choice: str) -> bool:
    """``--color``: always, never, or auto (a terminal, unless NO_COLOR is set or TERM
    is dumb; https://no-color.org)."""
    if choice != "auto":
        return choice == "always"
    from lvsd.log import _colors

    return os.environ.get("TERM") != "dumb" and _colors(sys.stdout)


def _cmd_drain(args: argparse.Namespace) -> int:
    target = {"service": args.service, "realserver": args.realserver}
    on = args.command == "drain"
    answer = _request(args, {"command": args.command, **target})
    for op in answer.get("ops", []):
        print(op)
    server = f"{args.service} {answer.get('realserver')}"
    was = answer.get("was_drained")  # None from a daemon that does not say
    if on:
        print(f"{server} was already drained" if was is True else f"drained {server}")
    else:
        print(f"{server} was not drained" if was is False else f"undrained {server}")
    if not on or not args.wait:
        return EXIT_OK
    deadline = time.monotonic() + args.timeout
    while True:
        active = int(_request(args, {"command": "connections", **target}).get("active", 0))
        if active == 0:
            print("no active connections left")
            return EXIT_OK
        if time.monotonic() >= deadline:
            left = plural(active, "active connection")
            complain(f"lvsd: {left} left after {args.timeout:g} s")
            return EXIT_FAILED
        time.sleep(min(args.interval, max(0.0, deadline - time.monotonic())))


def _client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        default=None,
        help="read only the control socket's path from this config (the rest is not checked)",
    )
    parser.add_argument(
        "--socket", default=None, help=f"control socket (default: from -c, else {DEFAULT_SOCKET})"
    )


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})"
    )


#: Every subcommand and its one line, in the order ``lvsd --help`` lists them.
COMMANDS = {
    "check": "validate a config and print a summary",
    "run": "run the daemon: health checks keep the kernel table right",
    "status": "show services, real servers, health, weights",
    "reload": "make the running daemon re-read its config (exit 1 if it refuses it)",
    "drain": "give a real server weight 0 (kept across reloads and restarts)",
    "undrain": "end a drain: the real server's health decides again",
    "apply": "make the kernel IPVS table match the config once (all real servers up)",
    "import": "convert a keepalived.conf or ldirectord.cf to an lvsd TOML config",
}


def build_parser() -> argparse.ArgumentParser:
    from lvsd.log import LEVELS

    parser = argparse.ArgumentParser(
        prog="lvsd",
        description="Health-checking director daemon for Linux IPVS.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lvsd {__version__}")
    parser.add_argument("--log-level", choices=LEVELS, default="info", help="log threshold")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def command(name: str) -> argparse.ArgumentParser:
        text = COMMANDS[name]
        return sub.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}.",
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    check = command("check")
    _config_arg(check)
    check.add_argument(
        "--host", action="store_true", help="also audit this host's kernel settings for the config"
    )
    check.set_defaults(func=_cmd_check)

    run = command("run")
    _config_arg(run)
    run.add_argument(
        "--dry-run", action="store_true", help="an in-memory table instead of the kernel's"
    )
    run.add_argument(
        "--log-level", choices=LEVELS, default=argparse.SUPPRESS, help="log threshold (info)"
    )
    run.set_defaults(func=_cmd_run)

    status = command("status")
    _client_args(status)
    status.add_argument("--json", action="store_true", help="JSON instead of a table")
    status.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the states: auto (default) on a terminal unless NO_COLOR is set",
    )
    status.set_defaults(func=_cmd_status)

    reload = command("reload")
    _client_args(reload)
    reload.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (60)")
    reload.add_argument(
        "--force", action="store_true", help="apply even what the reload guard refuses"
    )
    reload.set_defaults(func=_cmd_reload)

    for name in ("drain", "undrain"):
        cmd = command(name)
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

    apply = command("apply")
    _config_arg(apply)
    apply.add_argument("--dry-run", action="store_true", help="print the ops, change nothing")
    apply.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do not ask on a terminal (scripts without a terminal are never asked)",
    )
    apply.set_defaults(func=_cmd_apply)

    imp = command("import")
    imp.add_argument("kind", choices=["keepalived", "ldirectord"])
    imp.add_argument("file", help="the keepalived.conf or ldirectord.cf to convert")
    imp.add_argument("-o", "--output", default=None, help="write the TOML here instead of stdout")
    imp.set_defaults(func=_cmd_import)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # like git: bare `lvsd` shows the help and fails
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from lvsd.log import configure

    configure(args.log_level, json=None, stream=sys.stderr)
    try:
        status: int = args.func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            complain(str(problem))
        complain(f"{plural(len(exc.problems), 'problem')} found")
        return EXIT_FAILED
    except LvsdError as exc:
        complain(f"lvsd: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return status


if __name__ == "__main__":
    sys.exit(main())
