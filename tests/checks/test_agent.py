"""The agent probe: HAProxy agent-check replies, parsed and against loopback agents."""

from __future__ import annotations

import asyncio

import pytest

from lvsd.checks.agent import AgentProbe, AgentReply, parse_agent_reply
from lvsd.checks.scheduler import checks_from_config
from lvsd.config.model import (
    AgentOptions,
    Config,
    InitialState,
    RealServer,
    VirtualServiceConfig,
)
from lvsd.health.state import HealthState
from lvsd.model import Protocol, ServiceKey
from tests.checks.conftest import TIMEOUT, Loopback, StreamHandler, make_spec


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("up", AgentReply(state="up", percent=None)),
        ("ready", AgentReply(state="up", percent=None)),
        ("up 75%", AgentReply(state="up", percent=75)),
        ("75%", AgentReply(state=None, percent=75)),
        ("drain", AgentReply(state="drain", percent=None)),
        ("DRAIN,50%", AgentReply(state="drain", percent=50)),
        ("maint", AgentReply(state="maint", percent=None)),
        ("down#disk full", AgentReply(state="down", percent=None)),
        ("fail", AgentReply(state="fail", percent=None)),
        ("stopped", AgentReply(state="stopped", percent=None)),
        ("up, drain", AgentReply(state="drain", percent=None)),
        ("ready maint", AgentReply(state="maint", percent=None)),
        ("maxconn:30 up\t10%", AgentReply(state="up", percent=10)),
        ("hello", None),
        ("", None),
        ("# up", None),
    ],
)
def test_parse(line: str, expected: AgentReply | None) -> None:
    """Words in any case and separator; down words win over drain, drain over up."""
    assert expected == parse_agent_reply(line)


def _agent(net: Loopback, reply: bytes, heard: list[bytes] | None = None) -> StreamHandler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if heard is not None:
            heard.append(await reader.readline())
        writer.write(reply)
        await writer.drain()

    return handler


@pytest.mark.parametrize(
    ("reply", "ok", "detail", "reason", "weight", "drain"),
    [
        (b"up\n", True, "agent: up (up)", "ok", None, False),
        (b"ready\r\n", True, "agent: up (ready)", "ok", None, False),
        (b"up 75%\n", True, "agent: up (up 75%)", "ok", 75, False),
        (b"50%\n", True, "agent: up (50%)", "ok", 50, False),
        (b"drain\n", True, "agent: drain (drain)", "ok", None, True),
        (b"maint\n", False, "agent: down (maint)", "status", None, False),
        (b"down#db gone\n", False, "agent: down (down#db gone)", "status", None, False),
        (b"fail\n", False, "agent: down (fail)", "status", None, False),
        (b"stopped", False, "agent: down (stopped)", "status", None, False),
        (b"0%\n", True, "agent: up (0%)", "ok", 0, False),
        (b"banana\n", False, "agent: no state in 'banana'", "protocol", None, False),
        (b"\xff\xfe\n", False, "agent: garbage '\ufffd\ufffd'", "protocol", None, False),
        (b"", False, "agent: read: connection closed without a reply", "protocol", None, False),
    ],
)
async def test_agent_states(
    net: Loopback,
    reply: bytes,
    ok: bool,
    detail: str,
    reason: str,
    weight: int | None,
    drain: bool,
) -> None:
    """Each agent state becomes the right result; the detail echoes the line and the
    weight is the percentage (the health state applies it to each real server)."""
    port = await net.tcp(_agent(net, reply))
    spec = make_spec("agent", AgentOptions(), port=port)
    result = await AgentProbe(spec, net.target(net.free_port(), weight=8)).probe()
    assert (ok, detail, reason, weight, drain) == (
        result.ok,
        result.detail,
        result.reason,
        result.weight,
        result.drain,
    )


async def test_shared_agent_check_weighs_each_real_server(net4: Loopback) -> None:
    """One agent check shared by two services whose real server has weights 10 and
    100: the agent's ``50%`` gives each real server half of its own weight."""
    port = await net4.tcp(_agent(net4, b"up 50%\n"))
    spec = make_spec("agent", AgentOptions(), port=port)

    def service(name: str, vip: str, weight: int) -> VirtualServiceConfig:
        server = RealServer(address=net4.address, port=80, weight=weight, checks=(spec,))
        return VirtualServiceConfig(
            name=name,
            key=ServiceKey.inet(Protocol.TCP, vip, 80),
            initial_state=InitialState.UP,
            real_servers=(server,),
        )

    config = Config(
        path="x", services=(service("small", "192.0.2.1", 10), service("big", "192.0.2.2", 100))
    )
    [(check, (got_spec, target))] = checks_from_config(config).items()
    state = HealthState.from_config(config, 0.0)
    state.observe(check, await AgentProbe(got_spec, target).probe(), 1.0)
    health = state.server_health(1.0)
    assert {"small": 5, "big": 50} == {name: h.weight for (name, _), h in health.items()}


async def test_agent_send(net: Loopback) -> None:
    """`send` is written to the agent before its reply is read."""
    heard: list[bytes] = []
    port = await net.tcp(_agent(net, b"up\n", heard))
    spec = make_spec("agent", AgentOptions(send="hello lvsd\n"), port=port)
    result = await AgentProbe(spec, net.target(80)).probe()
    assert result.ok, result.detail
    assert [b"hello lvsd\n"] == heard


async def test_agent_refused(net: Loopback) -> None:
    """No agent listening: refused, naming the agent port."""
    port = net.free_port()
    result = await AgentProbe(make_spec("agent", AgentOptions(), port=port), net.target(80)).probe()
    assert not result.ok
    assert "refused" == result.reason
    assert result.detail.startswith("agent: connect ")
    assert result.detail.endswith(f":{port}: refused")


async def test_agent_silent(net: Loopback) -> None:
    """An agent that accepts and never answers times out in the read step."""
    port = await net.tcp(net.hang_handler())
    result = await AgentProbe(make_spec("agent", AgentOptions(), port=port), net.target(80)).probe()
    assert not result.ok
    assert f"agent: read: timeout after {TIMEOUT}s" == result.detail
    assert "timeout" == result.reason


async def test_agent_line_too_long(net: Loopback) -> None:
    """An endless line is a protocol error, not unbounded memory."""
    port = await net.tcp(_agent(net, b"u" * 10000 + b"\n"))
    result = await AgentProbe(make_spec("agent", AgentOptions(), port=port), net.target(80)).probe()
    assert not result.ok
    assert "protocol" == result.reason
    assert result.detail.startswith("agent: read: line too long")
