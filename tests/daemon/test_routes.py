"""``[bgp]``: lvsd writes which VIPs this director announces (``lvsd.engine.routes``),
and de-prefers then withdraws them when it stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.engine.routes import Route, RoutesFile, parse, quiesce, render
from tests.daemon.helpers import config_text, eventually, running

VIP = "192.168.3.108/32"


def _config(folder: Path, *, quorum: int | None = None, on_down: str = "withdraw") -> str:
    text = config_text(folder)
    text += (
        f'\n[bgp]\nroutes_file = "{folder}/routes"\non_down = "{on_down}"\n'
        "stop_quiet = 0.0\nstop_deadline = 5.0\n"
    )
    if quorum is not None:
        text = text.replace(
            'initial_state = "up"\n', f'initial_state = "up"\nquorum.minimum = {quorum}\n'
        )
    return text


async def test_the_vip_is_announced_while_its_service_is_above_quorum(short_dir: Path) -> None:
    """quorum.minimum = 2: one real server down withdraws the VIP, its return announces
    it again; the stop withdraws it."""
    routes = short_dir / "routes"
    async with running(short_dir, _config(short_dir, quorum=2)) as r:
        assert f"{VIP} announce\n" == routes.read_text()
        r.probes.down.add("10.0.0.2")
        await eventually(lambda: routes.read_text() == f"{VIP} withdraw\n")
        r.probes.down.discard("10.0.0.2")
        await eventually(lambda: routes.read_text() == f"{VIP} announce\n")
    assert f"{VIP} withdraw\n" == routes.read_text()


async def test_on_down_depref_keeps_a_worse_route(short_dir: Path) -> None:
    """No real server up: the VIP stays announced, de-preferred."""
    routes = short_dir / "routes"
    async with running(short_dir, _config(short_dir, on_down="depref")) as r:
        r.probes.down |= {"10.0.0.2", "10.0.0.3"}
        await eventually(lambda: routes.read_text() == f"{VIP} depref\n")


async def test_a_reload_without_the_section_withdraws_first(short_dir: Path) -> None:
    """The section gone: its file's VIPs are withdrawn, then lvsd writes it no more."""
    routes = short_dir / "routes"
    async with running(short_dir, _config(short_dir)) as r:
        assert f"{VIP} announce\n" == routes.read_text()
        (short_dir / "lvsd.toml").write_text(config_text(short_dir))
        assert (await r.daemon.reload()).ok
        assert f"{VIP} withdraw\n" == routes.read_text()
        assert r.daemon.routes is None


async def test_without_the_section_no_file_is_written(short_dir: Path) -> None:
    async with running(short_dir, config_text(short_dir)) as r:
        assert r.daemon.routes is None
    assert not (short_dir / "routes").exists()


def test_the_file_round_trips_and_is_written_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "run" / "routes"
    file = RoutesFile(str(path))
    routes = {"198.51.100.10/32": Route.ANNOUNCE, "2001:db8::10/128": Route.DEPREF}
    file.set(routes)
    assert "198.51.100.10/32 announce\n2001:db8::10/128 depref\n" == path.read_text()
    assert routes == parse(path.read_text())
    inode = path.stat().st_ino
    file.set(dict(routes))
    assert inode == path.stat().st_ino
    assert {} == parse("garbage\n198.51.100.10/32 maybe\n")
    assert "" == render({})


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([5, 6, 7, 7, 7, 7, 7, 7, 7], True),  # quiet for 1 s after the third read
        (list(range(100)), False),  # new connections until the deadline
    ],
)
async def test_quiesce_waits_for_the_connections_to_stop(counts: list[int], expected: bool) -> None:
    clock = _Clock()
    reads = iter(counts)

    async def connections() -> int:
        return next(reads)

    quiet = await quiesce(connections, quiet=1.0, deadline=5.0, clock=clock, sleep=clock.sleep)
    assert expected == quiet
    assert clock.now <= 5.0
