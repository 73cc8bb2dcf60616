"""The LD_PRELOAD shim that lets Debian's linux.uml 6.1 boot on hosts with a large XSAVE
area (AMX): ``lab/uml_xstate.c``, built once with the host's cc into the virtualenv."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("uml_xstate.c")


def shim() -> Path:
    """The built shim, rebuilt when its source is newer; raises OSError naming the cause."""
    built = Path(sys.prefix) / "lib" / "lvsd-lab-uml_xstate.so"
    if built.exists() and built.stat().st_mtime >= SOURCE.stat().st_mtime:
        return built
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise OSError("no C compiler to build lab/uml_xstate.c (scripts/setup installs gcc)")
    partial = built.with_suffix(".tmp")
    done = subprocess.run(
        [cc, "-O2", "-shared", "-fPIC", "-o", str(partial), str(SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise OSError(f"building {SOURCE} failed: {done.stderr.strip()}")
    partial.replace(built)
    return built
