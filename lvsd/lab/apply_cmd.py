"""``lvsd apply`` as the lab runs it: ``python -m lvsd.lab.apply_cmd -c FILE [--dry-run]``.

Goes through ``lvsd.cli`` when it has the ``apply`` command, so the lab exercises the
real command line; until then it calls ``lvsd.apply.main`` with the same error
handling (problems on stderr, exit status 1).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from collections.abc import Sequence


def _cli_has_apply() -> bool:
    from lvsd import cli

    with contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.build_parser().parse_args(["apply", "-c", "x"])
        except SystemExit:
            return False
    return True


def main(argv: Sequence[str]) -> int:
    if _cli_has_apply():
        from lvsd import cli

        return cli.main(["apply", *argv])
    from lvsd.apply import main as apply_main
    from lvsd.errors import ConfigError, LvsdError

    parser = argparse.ArgumentParser(prog="lvsd apply")
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    try:
        return apply_main(args.config, args.dry_run)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except LvsdError as exc:
        print(f"lvsd: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
