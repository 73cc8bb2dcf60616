"""``lvsd.engine.exabgp``: the process ExaBGP runs, printing the commands that follow
lvsd's routes file."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

from lvsd.engine.exabgp import commands, follow
from lvsd.engine.routes import Route

P = "198.51.100.10/32"


def test_each_change_is_one_command() -> None:
    assert [f"announce route {P} next-hop self"] == commands({}, {P: Route.ANNOUNCE}, 1000)
    assert [] == commands({P: Route.ANNOUNCE}, {P: Route.ANNOUNCE}, 1000)
    assert [f"announce route {P} next-hop self med 1000 community [65535:0]"] == commands(
        {P: Route.ANNOUNCE}, {P: Route.DEPREF}, 1000
    )
    assert [f"withdraw route {P} next-hop self"] == commands(
        {P: Route.DEPREF}, {P: Route.WITHDRAW}, 1000
    )
    # a VIP gone from the file is withdrawn; one never announced is not
    assert [f"withdraw route {P} next-hop self"] == commands({P: Route.ANNOUNCE}, {}, 1000)
    assert [] == commands({}, {P: Route.WITHDRAW}, 1000)


def test_a_helper_started_again_sends_every_state_first(tmp_path: Path) -> None:
    """ExaBGP may still announce what an earlier helper sent: a withdrawal is sent
    too."""
    path = tmp_path / "routes"
    path.write_text(f"{P} withdraw\n")
    out = io.StringIO()
    follow(path, 500, out, lambda timeout: False)
    assert [f"withdraw route {P} next-hop self"] == out.getvalue().splitlines()


def test_follow_prints_what_the_file_says_as_it_changes(tmp_path: Path) -> None:
    """A missing file announces nothing; then each change once; stdin's end stops it."""
    path = tmp_path / "routes"
    out = io.StringIO()
    steps: Iterator[Callable[[], object]] = iter(
        [
            lambda: path.write_text(f"{P} announce\n"),
            lambda: None,
            lambda: path.write_text(f"{P} withdraw\n"),
        ]
    )

    def wait(timeout: float) -> bool:
        step = next(steps, None)
        if step is None:
            return False
        step()
        return True

    follow(path, 500, out, wait)
    expected = [f"announce route {P} next-hop self", f"withdraw route {P} next-hop self"]
    assert expected == out.getvalue().splitlines()
