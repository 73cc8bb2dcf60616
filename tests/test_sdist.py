"""The sdist is a complete source release: it holds every file git tracks (the config,
the unit, the docs and man pages, the lab and the tests) and its tests pass from the
unpacked tree, against the code in that tree."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What the issue found missing, named even where git is not there to list it.
REQUIRED = (
    "LICENSE",
    "etc/lvsd.toml",
    "etc/bash-completion/lvsd",
    "etc/zsh-completion/_lvsd",
    "systemd/lvsd.service",
    "docs/lvsd.8",
    "docs/lvsd.toml.5",
    "docs/configuration.md",
    "tests/conftest.py",
    "lab/harness.py",
    "scripts/build-deb",
)
#: Test modules run from the unpacked sdist: they read etc/, systemd/ and docs/.
MODULES = ("tests/test_cli_docs.py", "tests/test_systemd_unit.py", "tests/config/test_shipped.py")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist of this tree, built without isolation (the dev extras hold setuptools
    and build, so nothing is downloaded)."""
    out = tmp_path_factory.mktemp("sdist")
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), "."],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (archive,) = out.glob("lvsd-*.tar.gz")
    return archive


def _members(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


def test_sdist_holds_what_the_tests_and_the_docs_need(sdist: Path) -> None:
    """The config, the unit, the man pages, the completions, the lab and the tests are in,
    with the license; no bytecode."""
    members = _members(sdist)
    assert set(REQUIRED) <= members
    assert not [m for m in members if "__pycache__" in m or m.endswith(".pyc")]


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_sdist_holds_every_file_git_tracks(sdist: Path) -> None:
    """Nothing tracked is left out (``.gitignore`` aside): a new folder needs its line in
    MANIFEST.in."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    missing = sorted(set(tracked) - _members(sdist) - {".gitignore"})
    assert [] == missing


def test_license_metadata_is_mit(sdist: Path) -> None:
    """PKG-INFO carries the SPDX expression and names the license file."""
    with tarfile.open(sdist) as tar:
        member = tar.extractfile(f"{sdist.name.removesuffix('.tar.gz')}/PKG-INFO")
        assert member is not None
        info = member.read().decode()
    assert "License-Expression: Apache-2.0" in info.splitlines()
    assert "License-File: LICENSE" in info.splitlines()


def test_tests_pass_from_the_unpacked_sdist(sdist: Path, tmp_path: Path) -> None:
    """Test modules that read the shipped files pass in the unpacked tree, importing lvsd
    from that tree (not from this checkout)."""
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    (tree,) = tmp_path.glob("lvsd-*")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    where = subprocess.run(
        [sys.executable, "-c", "import lvsd, lab; print(lvsd.__file__, lab.__file__)"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(path).is_relative_to(tree) for path in where), where
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *MODULES],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert 0 == run.returncode, run.stdout[-3000:]
    assert " passed" in run.stdout.splitlines()[-1]
