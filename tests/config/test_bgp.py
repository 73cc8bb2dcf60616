"""``[bgp]``: the routes file lvsd writes for its BGP speaker, in TOML and INI, and
its mistakes reported with file, key and line."""

from __future__ import annotations

from pathlib import Path

from lvsd.config import load
from lvsd.config.model import BgpConfig, RouteDown
from tests.config.helpers import REPO, SERVICE, load_text, problems, write


def test_a_config_without_bgp_announces_nothing(tmp_path: Path) -> None:
    assert None is load_text(tmp_path, "a.toml", SERVICE).bgp


def test_every_key_in_toml_and_the_same_in_ini(tmp_path: Path) -> None:
    toml = load_text(
        tmp_path,
        "a.toml",
        SERVICE
        + """
        [bgp]
        routes_file = "/run/lvsd/routes"
        on_down = "depref"
        stop_quiet = 1.5
        stop_deadline = 20
        """,
    )
    ini = load_text(
        tmp_path,
        "a.ini",
        """
        [service web]
        address = 192.168.3.108
        port = 80

        [bgp]
        routes_file = /run/lvsd/routes
        on_down = depref
        stop_quiet = 1.5
        stop_deadline = 20
        """,
    )
    expected = BgpConfig(
        routes_file="/run/lvsd/routes", on_down=RouteDown.DEPREF, stop_quiet=1.5, stop_deadline=20.0
    )
    assert expected == toml.bgp
    assert expected == ini.bgp


def test_mistakes_with_their_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.toml",
        SERVICE + '\n[bgp]\non_down = "sometimes"\nstop_quiet = -1\nspeaker = "bird"\n',
    )
    assert [
        ("bgp", 5, 'missing "routes_file" (the file lvsd writes the VIPs\' routes to)'),
        ("bgp.on_down", 6, 'unknown bgp on_down "sometimes"; expected one of withdraw, depref'),
        ("bgp.stop_quiet", 7, "-1 is out of range (expected >= 0)"),
        ("bgp.speaker", 8, "unknown key in [bgp]"),
    ] == [(key, line, message) for _, key, line, message in problems(path)]


def test_the_tiers_examples_load_and_differ_only_in_their_paths() -> None:
    """etc/examples/bgp/: the same service on every director (mh needs it), each with
    its own routes file, which its ExaBGP's process follows."""
    folder = REPO / "etc" / "examples" / "bgp"
    configs = {side: load(str(folder / f"lvsd-{side}.toml")) for side in "abc"}
    for side, config in configs.items():
        assert config.bgp is not None
        assert f"/run/lvsd-{side}/routes" == config.bgp.routes_file
        exabgp = (folder / f"exabgp-{side}.conf").read_text()
        assert f"run python3 -m lvsd.engine.exabgp {config.bgp.routes_file};" in exabgp
    assert configs["a"].services == configs["b"].services == configs["c"].services
