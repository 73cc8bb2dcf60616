"""Scalar values: a wrong value is refused at its key and line, saying what was expected
(TOML values are never coerced)."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.helpers import SERVICE, only_message, problems, write


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('port = "80"', 'expected an integer, got "80"'),
        ("port = 0", "0 is out of range (expected 1..65535)"),
        ("port = 65536", "65536 is out of range (expected 1..65535)"),
        ("port = true", "expected an integer, got true"),
    ],
)
def test_service_port(tmp_path: Path, line: str, message: str) -> None:
    """A service port is an integer 1..65535 (TOML values are never coerced)."""
    path = write(tmp_path, "c.toml", f"[services.web]\naddress = '192.168.3.108'\n{line}\n")
    assert [(path, "services.web.port", 3, message)] == problems(path)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("forward", '"masq"', 'unknown forwarding method "masq"; expected one of nat, dr, tun'),
        ("protocol", '"tcpp"', 'unknown protocol "tcpp" (did you mean "tcp"?); '
         "expected one of tcp, udp, sctp"),
        ("on_failure", '"drop"', 'unknown on_failure action "drop"; expected one of quiesce, '
         "remove"),
        ("address", '"192.168.3.300"', 'expected an IPv4 or IPv6 address, got "192.168.3.300"'),
        ("persistence_netmask", "33", "33 is out of range (expected 0..32)"),
        ("slow_start", "-1", "-1 is out of range (expected >= 0)"),
        ("one_packet", '"yes"', 'expected true or false, got "yes"'),
    ],
)  # fmt: skip
def test_service_values(tmp_path: Path, key: str, value: str, message: str) -> None:
    """Each service key rejects a wrong value and says what it expects."""
    text = f"[services.web]\naddress = '192.168.3.108'\nport = 80\n{key} = {value}\n"
    if key == "address":
        text = f"[services.web]\nport = 80\naddress = {value}\n"
    path = write(tmp_path, "c.toml", text)
    line = 3 if key == "address" else 4
    assert [(path, f"services.web.{key}", line, message)] == problems(path)


def test_unknown_tunnel_type(tmp_path: Path) -> None:
    """An unknown tunnel type lists the known ones."""
    path = write(tmp_path, "c.toml", SERVICE + 'forward = "tun"\ntunnel = "vxlan"\n')
    assert 'unknown tunnel type "vxlan"; expected one of ipip, gue, gre' == only_message(path)


def test_status_out_of_range(tmp_path: Path) -> None:
    """A status range outside 100-599 is refused."""
    path = write(tmp_path, "c.toml", SERVICE + 'check = { kind = "http", status = "200-600" }\n')
    assert '"200-600" is not a status range within 100-599' == only_message(path)
