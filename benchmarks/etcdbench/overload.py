"""The figures and verdicts of ``benchmarks/overload.py``, apart from any process.

``overload.lua`` (wrk) counts answers by class and keeps a histogram of the
latencies of admitted (2xx) answers in log buckets (``BUCKETS_PER_DECADE``
per decade of microseconds). This module parses its line, merges the lines
of several wrk processes, reads percentiles off the histogram, reads a
process's resident set from ``/proc``, and judges a run by the criteria of
issue 15 (overload).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

BUCKETS_PER_DECADE = 50
MARK = "OVERLOAD_RESULT "


def parse_result(text: str) -> dict[str, Any]:
    """The ``OVERLOAD_RESULT`` line of a wrk run of overload.lua."""
    for line in text.splitlines():
        if line.startswith(MARK):
            result: dict[str, Any] = json.loads(line[len(MARK) :])
            result["hist"] = {int(b): int(n) for b, n in result["hist"]}
            return result
    raise ValueError(f"no {MARK.strip()} line in wrk's output:\n{text[-2000:]}")


def merge(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several wrk processes run at once as one: counts add up, histograms
    merge, the duration is the longest."""
    out: dict[str, Any] = {"ok": 0, "refused": 0, "other": 0, "no_retry_after": 0, "backoffs": 0, "requests": 0}
    errors: dict[str, int] = {}
    hist: dict[int, int] = {}
    duration = 0
    for r in results:
        for name in out:
            out[name] += r.get(name, 0)
        for name, n in r["errors"].items():
            errors[name] = errors.get(name, 0) + n
        for b, n in r["hist"].items():
            hist[b] = hist.get(b, 0) + n
        duration = max(duration, r["duration_us"])
    out.update(errors=errors, hist=hist, duration_us=duration)
    return out


def percentile_ms(hist: Mapping[int, int], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) of a latency histogram, in ms: the upper
    edge of the bucket it falls in (an overestimate of at most ~4.7 %);
    None if the histogram is empty."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = math.ceil(q * total)
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return 10 ** ((b + 1) / BUCKETS_PER_DECADE) / 1000.0
    raise AssertionError("unreachable")


def rss_bytes(pid: int) -> int | None:
    """VmRSS of process pid, in bytes; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def verdicts(
    *,
    peak_rss: Mapping[str, int],
    rss_bound: int,
    p99_unloaded_ms: float | None,
    p99_admitted_ms: float | None,
    sustainable_rate: float,
    admitted_rate: float,
    p99_factor: float = 2.0,
    throughput_floor: float = 0.8,
    peak_rss_anon: Mapping[str, int] | None = None,
    rss_anon_bound: int | None = None,
    db_bytes: Mapping[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """PASS / FAIL for each criterion, with the figures it compares; with
    peak_rss_anon and rss_anon_bound, also ``rss_anon``: the anonymous part
    of RSS (heap, stacks) of every node under its bound. With db_bytes
    (node -> its db file's size), a node's VmRSS bound is rss_bound plus
    its db file: LMDB maps the db, so the pages of it the node touched are
    resident (file-backed, reclaimable), at most the whole file, which the
    space quota bounds."""

    def verdict(ok: bool, **figures: Any) -> dict[str, Any]:
        return {"verdict": "PASS" if ok else "FAIL", **figures}

    p99_ok = (
        p99_unloaded_ms is not None
        and p99_admitted_ms is not None
        and (p99_admitted_ms <= p99_factor * p99_unloaded_ms)
    )
    bounds = {n: rss_bound + (db_bytes or {}).get(n, 0) for n in peak_rss}
    return {
        "rss": verdict(
            bool(peak_rss) and all(v < bounds[n] for n, v in peak_rss.items()),
            peak_mib={n: round(v / 2**20, 1) for n, v in peak_rss.items()},
            bound_mib=(
                round(rss_bound / 2**20, 1)
                if db_bytes is None
                else {n: round(b / 2**20, 1) for n, b in bounds.items()}
            ),
        ),
        "p99": verdict(
            p99_ok,
            admitted_ms=p99_admitted_ms,
            unloaded_ms=p99_unloaded_ms,
            limit_ms=(None if p99_unloaded_ms is None else round(p99_factor * p99_unloaded_ms, 2)),
        ),
        "throughput": verdict(
            sustainable_rate > 0 and admitted_rate >= throughput_floor * sustainable_rate,
            admitted_per_s=round(admitted_rate, 1),
            sustainable_per_s=round(sustainable_rate, 1),
            ratio=round(admitted_rate / sustainable_rate, 3) if sustainable_rate > 0 else None,
        ),
    } | (
        {}
        if peak_rss_anon is None or rss_anon_bound is None
        else {
            "rss_anon": verdict(
                bool(peak_rss_anon) and all(v < rss_anon_bound for v in peak_rss_anon.values()),
                peak_mib={n: round(v / 2**20, 1) for n, v in peak_rss_anon.items()},
                bound_mib=round(rss_anon_bound / 2**20, 1),
            )
        }
    )
