"""A real server's weight and why: configured x dynamic x slow-start ramp x drain
(:class:`WeightFactors`, :func:`effective_weight`).

Pure: no I/O, no clock reads; time comes in as ``now`` (monotonic seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lvsd.model import MAX_WEIGHT


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightFactors:
    """Why a real server has the weight it has: ``effective`` is the product of the
    factors, rounded, at least 1 while up and neither drained nor configured 0, at
    most MAX_WEIGHT.

    ``dynamic`` is the dynamic weight over the configured one (1.0 without an
    opinion); ``ramp`` is the slow-start factor (1.0 outside slow start); ``drain`` is
    0.0 when drained (agent ``drain`` or a dynamic weight of 0), else 1.0.
    """

    configured: int
    dynamic: float = 1.0
    ramp: float = 1.0
    drain: float = 1.0
    effective: int

    def __str__(self) -> str:
        parts = [f"configured {self.configured}"]
        if self.dynamic != 1.0:
            parts.append(f"dynamic x{self.dynamic:.3g}")
        if self.ramp != 1.0:
            parts.append(f"slow start x{self.ramp:.3g}")
        if self.drain != 1.0:
            parts.append("drained x0")
        return f"{self.effective} = " + " ".join(parts)


def ramp_factor(target: float, up_since: float | None, slow_start: float, now: float) -> float:
    """Slow start as a factor of ``target``: the weight goes linearly from 1 at
    ``up_since`` to ``target`` at ``up_since + slow_start``. 1.0 when there is no
    ramp (``up_since`` None, ``slow_start`` 0, or the ramp is over)."""
    if up_since is None or slow_start <= 0 or target <= 1:
        return 1.0
    elapsed = now - up_since
    if elapsed >= slow_start:
        return 1.0
    share = max(0.0, elapsed) / slow_start
    return (1.0 + (target - 1.0) * share) / target


def percent_weight(percent: int, weight: int) -> int:
    """``percent`` of ``weight``, rounded; at least 1 unless ``percent`` is 0."""
    if percent == 0:
        return 0
    return min(MAX_WEIGHT, max(1, round(weight * percent / 100)))


def _round(value: float) -> int:
    return math.floor(value + 0.5)


def effective_weight(
    configured: int,
    *,
    dynamic: int | None = None,
    max_dynamic: int | None = None,
    up_since: float | None = None,
    slow_start: float = 0.0,
    drain: bool = False,
    now: float = 0.0,
) -> WeightFactors:
    """The weight of an up real server, with its factors.

    ``dynamic`` is the latest weight reported by an exec check (or an agent's
    percentage of ``configured``), bounded to ``0..max_dynamic`` (default: the
    configured weight).
    """
    if configured <= 0:
        return WeightFactors(configured=configured, effective=0)
    dynamic_factor = 1.0
    drain_factor = 0.0 if drain else 1.0
    if dynamic is not None:
        bound = max_dynamic if max_dynamic is not None else configured
        bounded = min(max(dynamic, 0), bound, MAX_WEIGHT)
        if bounded == 0:
            drain_factor = 0.0
        else:
            dynamic_factor = bounded / configured
    target = configured * dynamic_factor
    ramp = ramp_factor(target, up_since, slow_start, now)
    product = target * ramp * drain_factor
    if drain_factor == 0.0:
        effective = 0
    else:
        effective = min(MAX_WEIGHT, max(1, _round(product)))
    return WeightFactors(
        configured=configured,
        dynamic=dynamic_factor,
        ramp=ramp,
        drain=drain_factor,
        effective=effective,
    )


_PLAIN_FACTORS: dict[int, WeightFactors] = {}


def plain_factors(configured: int) -> WeightFactors:
    """``effective_weight(configured)``, one shared value per weight (they are frozen):
    what every real server without a dynamic weight, drain or ramp has, so a status of
    many real servers does not build one object each."""
    factors = _PLAIN_FACTORS.get(configured)
    if factors is None:
        factors = _PLAIN_FACTORS[configured] = effective_weight(configured)
    return factors
