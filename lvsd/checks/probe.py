"""The generic probe base: what every kind's constructor does with ``(spec, target)``.

A kind subclasses ``ProbeBase[ItsOptions]`` and names ``options_type``; built from a
spec with another kind's options it raises ``TypeError`` (a bug in the caller). The
base keeps the spec, its options (typed), the target and the port to probe; a kind's
own ``__init__`` adds only what it derives from them. ``close`` keeps nothing by
default: a kind that holds something between probes overrides it.
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from lvsd.checks.base import Target
from lvsd.config.model import CheckOptions, CheckSpec

OptionsT = TypeVar("OptionsT", bound=CheckOptions)


def probe_port(spec: CheckSpec, target: Target) -> int:
    """The port to probe: the spec's own port, else the real server's."""
    return target.port if spec.port is None else spec.port


class ProbeBase(Generic[OptionsT]):
    """A probe of one kind, built once per (spec, target)."""

    __slots__ = ("_options", "_port", "_spec", "_target")

    #: The options type of the kind.
    options_type: type[OptionsT]
    #: The kind named in the error about a wrong options type (None: the spec's kind,
    #: for a class that serves two kinds).
    kind: ClassVar[str | None] = None

    def __init__(self, spec: CheckSpec, target: Target) -> None:
        options = spec.options
        if not isinstance(options, self.options_type):
            kind = self.kind or spec.kind
            raise TypeError(
                f"{kind} probe needs {self.options_type.__name__}, got {type(options).__name__}"
            )
        self._spec = spec
        self._options: OptionsT = options
        self._target = target
        self._port = probe_port(spec, target)

    async def close(self) -> None:
        """Nothing is kept between probes."""
