"""The config package stays pure: loading every shipped config pulls in nothing of
lvsd's probes, kernel side or event loop (STYLE.md's import rules), and leaves the
process as it found it."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from lvsd.config import load
from lvsd.errors import ConfigError
from tests.config.helpers import REPO, SERVICE, write

PROGRAM = """
import sys
from lvsd.config import load
for path in ("etc/lvsd.toml", "etc/lvsd.ini", "etc/examples/dr-ipv6-fwmark.toml"):
    load(path)
forbidden = ("lvsd.checks", "lvsd.ipvs", "lvsd.daemon.lifecycle", "lvsd.observe.api")
forbidden += ("asyncio", "pyroute2", "aiohttp")
print(sorted(m for m in sys.modules if m.startswith(forbidden)))
"""


def test_loading_imports_no_checks_ipvs_or_asyncio() -> None:
    """A fresh interpreter that loads the shipped configs has imported none of them."""
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "[]\n" == done.stdout


def test_load_leaves_the_collector_as_it_found_it(tmp_path: Path) -> None:
    """load() pauses the cyclic collector while it works and restores its state, on
    success and on failure, enabled or not."""
    good = write(tmp_path, "good.toml", SERVICE)
    bad = write(tmp_path, "bad.toml", SERVICE + "port = 0\n")
    states = []
    try:
        for enabled in (True, False):
            gc.enable() if enabled else gc.disable()
            load(good)
            with pytest.raises(ConfigError):
                load(bad)
            states.append(gc.isenabled())
    finally:
        gc.enable()
    assert [True, False] == states
