"""IPVS connection timeouts: the [ipvs] section, its wire form, and drift repair."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from lvsd.config import load
from lvsd.config.model import IpvsTimeouts
from lvsd.daemon.admin import status_reply
from lvsd.engine.timeouts import wanted
from lvsd.errors import ConfigError
from lvsd.ipvs.base import Timeouts
from lvsd.ipvs.decode import RawReply, timeouts_from_reply
from lvsd.ipvs.encode import timeout_attrs
from lvsd.ipvs.memory import MemoryBackend
from tests.engine.helpers import config_text, started, write

DEFAULTS = Timeouts(tcp=900, tcp_fin=120, udp=300)


def with_ipvs(section: str) -> str:
    return f"[ipvs]\n{section}\n" + config_text()


def test_the_ipvs_section_sets_only_what_it_names(tmp_path: Path) -> None:
    """``[ipvs]`` keys become the configured timeouts; those left out stay None."""
    config = load(write(tmp_path, with_ipvs("tcp = 3600\nudp = 60")))
    assert IpvsTimeouts(tcp=3600, udp=60) == config.ipvs
    assert Timeouts(tcp=3600, tcp_fin=120, udp=60) == wanted(config.ipvs, DEFAULTS)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("tcp = 0", "ipvs.tcp"),
        ("udp = 2147484", "ipvs.udp"),
        ("tcpfin = 10", "unknown key in [ipvs]"),
    ],
)
def test_bad_timeouts_are_refused_with_their_key(
    tmp_path: Path, section: str, message: str
) -> None:
    """A timeout of 0, one above the kernel's bound, or an unknown key is refused."""
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, with_ipvs(section)))
    assert message in str(caught.value)


def test_ini_has_the_same_ipvs_section(tmp_path: Path) -> None:
    """INI's ``[ipvs]`` gives the same timeouts."""
    ini = tmp_path / "lvsd.ini"
    ini.write_text("[ipvs]\ntcp = 3600\ntcp_fin = 30\n")
    assert IpvsTimeouts(tcp=3600, tcp_fin=30) == load(str(ini)).ipvs


def test_the_set_request_carries_three_u32_attributes() -> None:
    """SET_CONFIG carries attributes 4, 5, 6; 0 (the kernel's 'leave alone') is refused."""
    assert [(4, 3600), (5, 30), (6, 60)] == timeout_attrs(Timeouts(tcp=3600, tcp_fin=30, udp=60))
    with pytest.raises(ValueError, match="out of range"):
        timeout_attrs(Timeouts(tcp=0, tcp_fin=30, udp=60))


def test_a_get_config_reply_decodes_to_the_timeouts() -> None:
    """A GET_CONFIG reply as the kernel writes it (three u32 attributes) decodes."""
    attrs = b"".join(
        struct.pack("=HHI", 8, kind, value) for kind, value in ((4, 7), (5, 8), (6, 9))
    )
    body = struct.pack("=BBH", 13, 1, 0) + attrs
    data = struct.pack("=IHHII", 16 + len(body), 30, 0, 1, 0) + body
    reply = RawReply(data=data, offset=0)
    reply.decode()
    assert Timeouts(tcp=7, tcp_fin=8, udp=9) == timeouts_from_reply(reply)


async def test_start_sets_the_configured_timeouts(tmp_path: Path) -> None:
    """At start the configured timeouts are written, the others kept."""
    engine, backend, _ = await started(tmp_path, with_ipvs("tcp = 3600"))
    assert Timeouts(tcp=3600, tcp_fin=120, udp=300) == backend.timeouts == engine.timeouts


async def test_without_an_ipvs_section_nothing_is_written(tmp_path: Path) -> None:
    """No ``[ipvs]``: the timeouts are read (for status), never set."""
    engine, backend, _ = await started(tmp_path, config_text())
    await engine.repair()
    assert (0, DEFAULTS) == (backend.timeout_sets, engine.timeouts)


async def test_drift_repair_puts_changed_timeouts_back(tmp_path: Path) -> None:
    """Timeouts changed behind lvsd's back are set again by drift repair, logged as
    ``drift.repaired``; a repair that finds them right writes nothing."""
    engine, backend, _ = await started(tmp_path, with_ipvs("tcp = 3600\nudp = 60"))
    backend.timeouts = Timeouts(tcp=10, tcp_fin=11, udp=12)
    with capture_logs() as logs:
        await engine.repair()
    assert Timeouts(tcp=3600, tcp_fin=11, udp=60) == backend.timeouts
    repaired = [e["op"] for e in logs if e["event"] == "drift.repaired"]
    assert ["set-timeouts tcp 3600 tcpfin 11 udp 60 (was tcp 10 tcpfin 11 udp 12)"] == repaired
    sets = backend.timeout_sets
    await engine.repair()
    assert sets == backend.timeout_sets


async def test_a_reload_applies_new_timeouts(tmp_path: Path) -> None:
    """A reload with another [ipvs] section sets its timeouts."""
    engine, backend, _ = await started(tmp_path, with_ipvs("tcp = 3600"))
    path = write(tmp_path, with_ipvs("tcp = 1800"))
    result = await engine.reload(lambda: load(path))
    assert result.ok
    assert 1800 == backend.timeouts.tcp


async def test_status_shows_the_timeouts(tmp_path: Path) -> None:
    """``lvsd status`` shows the timeouts as ipvsadm does, and in its JSON."""
    engine, _, clock = await started(tmp_path, with_ipvs("tcp = 3600"))
    reply = status_reply(engine, clock())
    assert reply["text"].endswith("Timeout (tcp tcpfin udp): 3600 120 300")
    assert {"tcp": 3600, "tcp_fin": 120, "udp": 300} == reply["status"]["timeouts"]


async def test_a_backend_without_timeouts_is_left_alone(tmp_path: Path) -> None:
    """A table stand-in that cannot read timeouts leaves them unknown (no status line)."""

    class Plain(MemoryBackend):
        get_timeouts = None  # type: ignore[assignment]

    engine, _, clock = await started(tmp_path, with_ipvs("tcp = 3600"), backend=Plain())
    assert engine.timeouts is None
    assert "timeouts" not in status_reply(engine, clock())["status"]
