"""The agent probe: HAProxy agent-check replies, parsed and against loopback agents."""

from __future__ import annotations

import asyncio

import pytest

from lvsd.checks.agent import AgentProbe, AgentReply, parse_agent_reply, percent_weight
from lvsd.config.model import AgentOptions
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


@pytest.mark.parametrize(
    ("percent", "weight", "expected"),
    [(75, 4, 3), (50, 3, 2), (1, 10, 1), (0, 10, 0), (100, 7, 7), (200, 7, 14), (10, 1, 1)],
)
def test_percent_weight(percent: int, weight: int, expected: int) -> None:
    """A percentage of the configured weight, rounded, at least 1 unless 0%."""
    assert expected == percent_weight(percent, weight)


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
        (b"up 75%\n", True, "agent: up (up 75%)", "ok", 6, False),
        (b"50%\n", True, "agent: up (50%)", "ok", 4, False),
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
    """Each agent state becomes the right result; the detail echoes the line."""
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
