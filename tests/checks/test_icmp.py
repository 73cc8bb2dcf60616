"""The icmp probe: echo replies on loopback, in a network namespace of its own where
the test may allow ping sockets (root and unshare needed), and on the host when its
net.ipv4.ping_group_range allows them; the clear failure where it does not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lvsd.checks.icmp import PING_GROUP_RANGE, IcmpProbe, denied_text
from lvsd.config.model import IcmpOptions
from tests.checks.conftest import Loopback, make_spec

#: Probes the addresses given as arguments and prints their results as JSON.
_PROBE_SCRIPT = """
import asyncio, ipaddress, json, sys
from lvsd.checks.base import Target
from lvsd.checks.icmp import IcmpProbe
from lvsd.config.model import CheckSpec, IcmpOptions

async def main():
    out = []
    for address in sys.argv[1:]:
        spec = CheckSpec(kind="icmp", options=IcmpOptions(), timeout=2.0)
        target = Target(address=ipaddress.ip_address(address), port=0)
        result = await IcmpProbe(spec, target).probe()
        out.append([result.ok, result.detail, result.reason])
    print(json.dumps(out))

asyncio.run(main())
"""


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    done = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=30)
    return done.returncode == 0


def _in_netns(ping_range: str, *addresses: str) -> list[list[object]]:
    """Probe ``addresses`` from a fresh network namespace (its own loopback, its own
    ping_group_range set to ``ping_range``; the host's is not touched)."""
    shell = (
        'ip link set lo up && echo "$1" > /proc/sys/net/ipv4/ping_group_range && shift && exec "$@"'
    )
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", shell, "sh", ping_range, sys.executable, "-c",
         _PROBE_SCRIPT, *addresses],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    result: list[list[object]] = json.loads(done.stdout)
    return result


def _host_allows_ping() -> bool:
    try:
        low, high = map(int, PING_GROUP_RANGE.read_text().split())
    except (OSError, ValueError):
        return False
    return any(low <= group <= high for group in {os.getegid(), *os.getgroups()})


netns = pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare --net")


@netns
def test_echo_reply_v4_and_v6_in_a_namespace() -> None:
    """Where ping sockets are allowed, loopback answers on IPv4 and IPv6; an address
    with no route fails with the kernel's reason."""
    assert [
        [True, "icmp 127.0.0.1: echo reply", "ok"],
        [True, "icmp ::1: echo reply", "ok"],
        [False, "icmp 192.0.2.1: network is unreachable", "error"],
    ] == _in_netns("0 2147483647", "127.0.0.1", "::1", "192.0.2.1")


@netns
def test_denied_in_a_namespace_says_why() -> None:
    """Where ping_group_range leaves us out, the probe fails saying so, with the
    sysctl's value, on IPv4 and IPv6 alike."""
    want = "ping sockets not permitted for this process's groups "
    want += "(net.ipv4.ping_group_range = '1 0'); see lvsd check --host"
    assert [
        [False, f"icmp 127.0.0.1: {want}", "error"],
        [False, f"icmp ::1: {want}", "error"],
    ] == _in_netns("1 0", "127.0.0.1", "::1")


@pytest.mark.skipif(
    not _host_allows_ping(),
    reason=f"{PING_GROUP_RANGE} does not include this process's groups",
)
async def test_echo_reply_on_the_host(net: Loopback) -> None:
    """On a host that allows ping sockets, loopback answers (v4 and v6)."""
    result = await IcmpProbe(make_spec("icmp", IcmpOptions()), net.target(0)).probe()
    assert (True, f"icmp {net.address}: echo reply") == (result.ok, result.detail)


@pytest.mark.skipif(_host_allows_ping(), reason="this host allows ping sockets")
async def test_denied_on_the_host(net: Loopback) -> None:
    """On a host whose ping_group_range leaves us out, the failure says why."""
    result = await IcmpProbe(make_spec("icmp", IcmpOptions()), net.target(0)).probe()
    assert (False, "error", f"icmp {net.address}: {denied_text()}") == (
        result.ok,
        result.reason,
        result.detail,
    )


def test_denied_text_shows_the_value(tmp_path: Path) -> None:
    """The detail quotes the sysctl as found, or says it is unreadable."""
    path = tmp_path / "ping_group_range"
    path.write_text("1\t0\n")
    assert "(net.ipv4.ping_group_range = '1 0');" in denied_text(path)
    assert "(net.ipv4.ping_group_range = unreadable);" in denied_text(tmp_path / "absent")
