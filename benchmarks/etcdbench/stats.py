# test-case-name: tests.test_bench_scripts
"""Latencies gathered in several threads or processes and merged: a
histogram of logarithmic buckets (1% wide, so a percentile is exact to
within 1%), and the markdown table the gRPC benchmarks print."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: Each bucket is this much wider than the one below it.
_GROWTH = 1.01
_LOG_GROWTH = math.log(_GROWTH)


class Histogram:
    """Counts of values (µs, anything >= 0) in buckets ``[1.01**i,
    1.01**(i+1))``; values below 1 share bucket 0. ``as_dict`` and
    ``from_dict`` carry it between processes; ``merge`` adds another."""

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.max = 0.0

    def add(self, value: float) -> None:
        i = int(math.log(value) / _LOG_GROWTH) + 1 if value >= 1.0 else 0
        self.buckets[i] = self.buckets.get(i, 0) + 1
        self.count += 1
        if value > self.max:
            self.max = value

    def merge(self, other: Histogram) -> None:
        for i, n in other.buckets.items():
            self.buckets[i] = self.buckets.get(i, 0) + n
        self.count += other.count
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> float | None:
        """The value below which p percent of the values lie (the upper
        edge of its bucket, at most the largest value); None when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * p / 100.0))
        seen = 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen >= rank:
                return min(_GROWTH**i if i else 1.0, self.max)
        return self.max

    def as_dict(self) -> dict[str, Any]:
        return {"buckets": dict(self.buckets), "count": self.count, "max": self.max}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Histogram:
        h = cls()
        h.buckets = {int(i): int(n) for i, n in d["buckets"].items()}
        h.count, h.max = int(d["count"]), float(d["max"])
        return h


def fmt_ms(us: float | None) -> str:
    """µs as milliseconds for a table cell: 0.42, 3.1, 250; '-' for None."""
    if us is None:
        return "-"
    ms = us / 1000.0
    return f"{ms:.2f}" if ms < 1 else f"{ms:.1f}" if ms < 100 else f"{ms:,.0f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool] = ()) -> str:
    """A markdown table; the columns right[i] is true for are right-aligned."""
    align = [("---:" if i < len(right) and right[i] else "---") for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
