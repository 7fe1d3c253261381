# test-case-name: tests.test_scaling_script
"""How a cost grows with its parameter, in words: the least-squares slope
of log(cost) against log(parameter) (a power law cost ~ parameter**slope),
named "flat", "sub-linear", "linear", "super-linear" or "falling".
Pure functions, for the scaling picture (``scaling``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

#: |slope| below this is "flat"; within this of 1 is "linear".
FLAT, LINEAR_BAND = 0.15, 0.15


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """The least-squares slope of log(y) on log(x) over the points where
    both are positive; None with fewer than two such points or one x."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y is not None and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def name_slope(slope: float | None) -> str:
    """A slope in words: flat (|s| < 0.15), linear (0.85..1.15), sub-linear
    (between), super-linear (above), falling (below -0.15); "unknown" for None."""
    if slope is None:
        return "unknown"
    if abs(slope) < FLAT:
        return "flat"
    if slope < 0:
        return "falling"
    if abs(slope - 1) <= LINEAR_BAND:
        return "linear"
    return "sub-linear" if slope < 1 else "super-linear"


def describe(what: str, xs: Sequence[float], ys: Sequence[float]) -> str:
    """'WHAT: linear (slope 0.98)', the growth of ys over xs in a few words."""
    slope = loglog_slope(xs, ys)
    if slope is None:
        return f"{what}: unknown (too few points)"
    return f"{what}: {name_slope(slope)} (log-log slope {slope:.2f})"


def saturation(xs: Sequence[float], throughputs: Sequence[float], within: float = 0.1) -> float | None:
    """The smallest x whose throughput is within ``within`` (10%) of the
    highest one: where adding load stops adding throughput. None if empty."""
    pts = [(x, t) for x, t in zip(xs, throughputs, strict=True) if t is not None]
    if not pts:
        return None
    best = max(t for _, t in pts)
    return min(x for x, t in pts if t >= (1 - within) * best)
