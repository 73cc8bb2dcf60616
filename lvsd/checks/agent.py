"""The ``agent`` kind: HAProxy's agent-check protocol.

Connect to the agent port (``port`` of the check), send ``options.send`` if any,
read one line and parse its words (separated by commas, spaces or tabs; text after
``#`` is a free description):

* ``up``, ``ready``: up;
* ``drain``: up but asks for no new connections (``drain=True``);
* ``down``, ``fail``, ``stopped``, ``maint``: down;
* ``NN%``: weight as a percentage of the configured weight, reported with any
  state. The result's ``weight`` is the percentage itself: a check shared by
  services gives each real server NN% of its own weight (``lvsd.health.state``).

Unknown words (``maxconn:30``) are ignored; a line with no known word fails.
Details echo the line: ``"agent: down (maint)"``, ``"agent: up (up 75%)"``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from lvsd.checks.handshake import StreamProbe
from lvsd.checks.net import Fail, Progress, Verdict, echo, read_line
from lvsd.config.model import AgentOptions

UP_WORDS = frozenset({"up", "ready"})
DOWN_WORDS = frozenset({"down", "fail", "stopped", "maint"})
DRAIN_WORD = "drain"

_SEPARATORS = re.compile(r"[,\s]+")
_PERCENT = re.compile(r"(\d{1,6})%")


@dataclass(frozen=True, slots=True)
class AgentReply:
    """A parsed agent line: the state it asks for (None: none given) and the weight."""

    state: str | None  # "up", "drain", or the down word ("maint", "down", ...)
    percent: int | None


def parse_agent_reply(line: str) -> AgentReply | None:
    """Parse one agent line; None if it holds no word we know."""
    words = [w.lower() for w in _SEPARATORS.split(line.split("#", 1)[0]) if w]
    down = next((w for w in words if w in DOWN_WORDS), None)
    percent: int | None = None
    for word in words:
        match = _PERCENT.fullmatch(word)
        if match:
            percent = int(match.group(1))
    if down is not None:
        state: str | None = down
    elif DRAIN_WORD in words:
        state = DRAIN_WORD
    elif any(w in UP_WORDS for w in words):
        state = "up"
    else:
        state = None
    if state is None and percent is None:
        return None
    return AgentReply(state=state, percent=percent)


def verdict_of(line: str) -> Verdict:
    """What an agent's line means; its weight is the percentage, if any."""
    reply = parse_agent_reply(line)
    if reply is None:
        return Verdict.fail(f"agent: no state in {echo(line)}", "protocol")
    shown = line.strip()
    if reply.state in DOWN_WORDS:
        return Verdict(
            ok=False, detail=f"agent: down ({shown})", reason="status", weight=reply.percent
        )
    if reply.state == DRAIN_WORD:
        return Verdict(ok=True, detail=f"agent: drain ({shown})", weight=reply.percent, drain=True)
    return Verdict(ok=True, detail=f"agent: up ({shown})", weight=reply.percent)


class AgentProbe(StreamProbe[AgentOptions]):
    """Ask the real server's agent how it is."""

    __slots__ = ()
    options_type = AgentOptions
    kind = "agent"

    async def exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, progress: Progress
    ) -> Verdict:
        if self._options.send:
            progress.step = "agent: send"
            writer.write(self._options.send.encode())
            await writer.drain()
        progress.step = "agent: read"
        raw = await read_line(reader, progress)
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            raise Fail(f"agent: garbage {echo(raw)}", "protocol") from None
        return verdict_of(line)
