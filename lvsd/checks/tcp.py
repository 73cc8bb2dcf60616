"""The ``tcp`` kind: connect; optionally send bytes, then read until ``expect`` is seen.

Details: ``"connect 10.0.0.2:80: refused"``, ``"connect 10.0.0.2:80: timeout after 1.0s"``,
``"read 10.0.0.2:80: closed before 'OK' was seen (got 'ERR')"``.
"""

from __future__ import annotations

from lvsd.checks._net import (
    Fail,
    Progress,
    Verdict,
    close_stream,
    echo,
    hostport,
    open_stream,
    probe_port,
    run_timed,
)
from lvsd.checks.base import ProbeResult, Target
from lvsd.config.model import CheckSpec, TcpOptions

#: Bytes of the answer kept while looking for ``expect``.
READ_LIMIT = 65536


class TcpProbe:
    """Connect to the target (and talk a little, if the options say so)."""

    __slots__ = ("_options", "_port", "_spec", "_target")

    def __init__(self, spec: CheckSpec, target: Target) -> None:
        if not isinstance(spec.options, TcpOptions):
            raise TypeError(f"tcp probe needs TcpOptions, got {type(spec.options).__name__}")
        self._spec = spec
        self._options = spec.options
        self._target = target
        self._port = probe_port(spec, target)

    async def probe(self) -> ProbeResult:
        where = hostport(self._target.address, self._port)
        progress = Progress(f"connect {where}")
        return await run_timed(self._spec.timeout, progress, lambda: self._run(progress, where))

    async def _run(self, progress: Progress, where: str) -> Verdict:
        reader, writer = await open_stream(self._spec, self._target.address, self._port)
        try:
            if self._options.send:
                progress.step = f"send {where}"
                writer.write(self._options.send)
                await writer.drain()
            expect = self._options.expect
            if not expect:
                return Verdict(ok=True, detail=f"connect {where}: ok")
            progress.step = f"read {where}"
            seen = b""
            while expect not in seen:
                chunk = await reader.read(READ_LIMIT)
                if not chunk:
                    raise Fail(
                        f"read {where}: closed before {echo(expect)} was seen (got {echo(seen)})",
                        "body",
                    )
                seen = (seen + chunk)[-READ_LIMIT:]
            return Verdict(ok=True, detail=f"read {where}: {echo(expect)} seen")
        finally:
            close_stream(writer)

    async def close(self) -> None:
        """Nothing is kept between probes."""
