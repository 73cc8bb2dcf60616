"""The ``udp`` kind: send a datagram from a connected UDP socket.

* with ``expect``: up when a reply containing it arrives within the timeout;
* without: up on any reply, down when an ICMP port unreachable comes back
  (``refused``); silence until the timeout counts as up unless ``require_reply``.

Details: ``"udp 10.0.0.2:53: refused"``, ``"udp 10.0.0.2:53: timeout after 1.0s"``,
``"udp 10.0.0.2:53: reply does not contain 'pong' (got 'nope')"``,
``"udp 10.0.0.2:53: no reply, no ICMP unreachable"``.
"""

from __future__ import annotations

from lvsd.checks.base import ProbeResult
from lvsd.checks.datagram import connected_udp, receive
from lvsd.checks.net import Progress, Verdict, echo, hostport, run_timed
from lvsd.checks.probe import ProbeBase
from lvsd.config.model import UdpOptions


class UdpProbe(ProbeBase[UdpOptions]):
    """Send a datagram to the target and listen for what comes back."""

    __slots__ = ()
    options_type = UdpOptions
    kind = "udp"

    async def probe(self) -> ProbeResult:
        where = f"udp {hostport(self._target.address, self._port)}"
        progress = Progress(where)
        return await run_timed(self._spec.timeout, progress, lambda: self._run(progress, where))

    async def _run(self, progress: Progress, where: str) -> Verdict:
        async with connected_udp(self._spec, self._target.address, self._port) as (
            transport,
            protocol,
        ):
            transport.sendto(self._options.send)
            expect = self._options.expect
            if expect is None and not self._options.require_reply:
                progress.on_timeout = Verdict(
                    ok=True, detail=f"{where}: no reply, no ICMP unreachable"
                )
            while True:
                item = await receive(protocol)  # an ICMP error fails the step (where)
                if expect is None or expect in item:
                    return Verdict(ok=True, detail=f"{where}: reply {echo(item)}")
                # A wrong reply: keep listening, but a timeout now means "wrong answer".
                wrong = f"reply does not contain {echo(expect)} (got {echo(item)})"
                progress.on_timeout = Verdict.fail(f"{where}: {wrong}", "body")
