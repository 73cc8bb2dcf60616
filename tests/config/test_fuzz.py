"""A seeded mutator over the shipped configs: every mutant either loads or raises a
ConfigError naming a file; none raises anything else, hangs, or loads with [daemon]
settings the daemon's start-up would refuse (issue 18)."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import grp
import os
import random
import shutil
import signal
from collections import Counter
from pathlib import Path
from types import FrameType

from lvsd.config import load
from lvsd.config.model import Config
from lvsd.config.values import MAX_SOCKET_PATH
from lvsd.errors import ConfigError
from lvsd.observe.api import parse_listen
from tests.config.helpers import REPO

SHIPPED = sorted(
    p for p in (REPO / "etc").rglob("*") if p.suffix in (".toml", ".ini") and p.is_file()
)
CASES = 2_000
#: Seconds one load may take before it counts as a hang.
BOUND = 5.0
NASTY = ["nan", "inf", "-inf", "1e-300", "1e300", "-1", "0", "99999999999999999999",
         '""', '"\\r\\n"', "[" * 300 + "]" * 300, "{a = {b = {c = 1}}}", "true", "'x'"]  # fmt: skip


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Hang


def mutate(text: str, rng: random.Random) -> str:
    """One to three random edits of ``text``'s lines."""
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        if not lines:
            break
        i = rng.randrange(len(lines))
        edit = rng.randrange(6)
        if edit == 0:
            del lines[i]
        elif edit == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif edit == 2 and "=" in lines[i]:
            lines[i] = lines[i].split("=", 1)[0] + "= " + rng.choice(NASTY)
        elif edit == 3:
            cut = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:cut]
        elif edit == 4:
            lines[i] = lines[i].lstrip("# ")  # uncomment an example
        else:
            lines[i] += rng.choice(["[", "]", '"', "=", ".", "\\", "\x00"])
    return "\n".join(lines) + "\n"


def run_refuses(config: Config) -> str | None:
    """What the daemon's start-up would refuse in ``config``'s [daemon] (the rules of
    lvsd.observe.api and lvsd.control), else None."""
    daemon = config.daemon
    try:
        if daemon.metrics_listen:
            parse_listen(daemon.metrics_listen)
    except ValueError as exc:
        return str(exc)
    if not daemon.control_socket:
        return "empty control socket"
    if len(os.fsencode(daemon.control_socket)) > MAX_SOCKET_PATH:
        return "control socket path too long"
    if daemon.control_group is not None:
        try:
            grp.getgrnam(daemon.control_group)
        except KeyError:
            return "no such group"
    return None


def test_mutated_shipped_configs_load_or_fail_cleanly(tmp_path: Path) -> None:
    """2,000 seeded mutants: counts of outcomes; tracebacks, hangs, unnamed files and
    accepted-but-refused-by-run all zero."""
    rng = random.Random(18)
    shutil.copytree(REPO / "etc", tmp_path / "etc")
    counts: Counter[str] = Counter()
    bad: list[str] = []
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for case in range(CASES):
            source = rng.choice(SHIPPED)
            target = tmp_path / "etc" / source.relative_to(REPO / "etc")
            original = source.read_text(encoding="utf-8")
            target.write_text(mutate(original, rng), encoding="utf-8")
            signal.setitimer(signal.ITIMER_REAL, BOUND)
            try:
                config = load(str(target))
            except ConfigError as exc:
                counts["refused"] += 1
                files = {str(p.file) for p in exc.problems}
                if not exc.problems or not all(f for f in files):
                    counts["unnamed"] += 1
                    bad.append(f"{case}: {exc}")
            except _Hang:
                counts["hangs"] += 1
                bad.append(f"{case}: hang")
            except Exception as exc:  # the thing counted
                counts["tracebacks"] += 1
                bad.append(f"{case}: {type(exc).__name__}: {exc}")
            else:
                counts["accepted"] += 1
                refused = run_refuses(config)
                if refused is not None:
                    counts["accepted_but_refused_by_run"] += 1
                    bad.append(f"{case}: {refused}")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                target.write_text(original, encoding="utf-8")
    finally:
        signal.signal(signal.SIGALRM, previous)
    counts["tried"] = CASES
    print(f"config fuzz: {dict(counts)}")
    assert [] == bad[:20]
    assert CASES == counts["accepted"] + counts["refused"]
