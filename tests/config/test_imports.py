"""The config package stays pure: loading every shipped config pulls in nothing of
lvsd's probes, kernel side or event loop (STYLE.md's import rules)."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import subprocess
import sys

from tests.config.helpers import REPO

PROGRAM = """
import sys
from lvsd.config import load
for path in ("etc/lvsd.toml", "etc/lvsd.ini", "etc/examples/dr-ipv6-fwmark.toml"):
    load(path)
forbidden = ("lvsd.checks", "lvsd.ipvs", "lvsd.daemon", "lvsd.api")
forbidden += ("asyncio", "pyroute2", "aiohttp")
print(sorted(m for m in sys.modules if m.startswith(forbidden)))
"""


def test_loading_imports_no_checks_ipvs_or_asyncio() -> None:
    """A fresh interpreter that loads the shipped configs has imported none of them."""
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "[]\n" == done.stdout
