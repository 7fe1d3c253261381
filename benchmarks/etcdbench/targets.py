# test-case-name: tests.test_vs_etcd_script
"""Issue 16's targets, judged on the comparison's summary: every target is
a bound on one dkv/etcd ratio of the medians over rounds (throughput, p99 or
CPU per request) for some runs, and each (target, run) gets PASS, FAIL, or
n/a when a system did not measure the run. Pure functions: the summary in,
verdicts and their table out. A FAILed target does not change the script's
exit status (errors do)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from etcdbench.report import fmt_ratio

PASS, FAIL, MISSING = "PASS", "FAIL", "n/a"

_CONNS = (1, 16, 64)
_OPS = ("write", "read")
_APIS = ("", "v3-")  # v0 runs (each system's own API), then v3 runs (etcd's paths on both)


def _runs(ops: Sequence[str], conns: Sequence[int]) -> tuple[str, ...]:
    return tuple(f"{api}{op}-{c}" for api in _APIS for op in ops for c in conns)


@attrs.frozen
class Target:
    """dkv/etcd ``field`` (a summary row's ratio) must be at least (or, with
    ``at_least`` False, at most) ``bound`` on each of ``runs``; ``value``
    names the per-system figure the ratio is made of."""

    name: str
    field: str
    value: str
    bound: float
    at_least: bool
    runs: tuple[str, ...]

    def holds(self, ratio: float) -> bool:
        return ratio >= self.bound if self.at_least else ratio <= self.bound

    def describe_bound(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.bound:.1f}x"


#: The targets of issue 16, item 3, in the order the table shows them.
TARGETS: tuple[Target, ...] = (
    Target("throughput >= etcd's", "throughput_ratio", "throughput", 1.0, True, _runs(_OPS, _CONNS)),
    Target("writes >= 1.5x at 64 conn", "throughput_ratio", "throughput", 1.5, True, _runs(("write",), (64,))),
    Target("lin. reads >= 2x at 64 conn", "throughput_ratio", "throughput", 2.0, True, _runs(("read",), (64,))),
    Target("p99 <= etcd's", "p99_ratio", "p99_ms", 1.0, False, _runs(_OPS, (16, 64))),
    Target("CPU per op <= 1.5x etcd's", "cpu_ratio", "cpu_s_per_10k", 1.5, False, _runs(_OPS, _CONNS)),
)


def evaluate(rows: Sequence[Mapping[str, Any]], targets: Sequence[Target] = TARGETS) -> list[dict[str, Any]]:
    """One verdict per target and run, in ``targets`` order: ``target``,
    ``run``, ``bound`` (text), ``dkv`` and ``etcd`` (the medians the ratio
    comes from, or None), ``ratio`` (or None) and ``verdict`` (PASS, FAIL, or
    n/a when the run was not measured on both systems or its rounds had
    errors)."""
    by_run = {row["run"]: row for row in rows}
    out = []
    for target in targets:
        for run in target.runs:
            row = by_run.get(run)
            d = row.get("dkv") if row else None
            e = row.get("etcd") if row else None
            ratio = row.get(target.field) if row else None
            errors = bool((d and d.get("errors")) or (e and e.get("errors")))
            if ratio is None or errors:
                verdict = MISSING
            else:
                verdict = PASS if target.holds(ratio) else FAIL
            out.append(
                {
                    "target": target.name,
                    "run": run,
                    "bound": target.describe_bound(),
                    "dkv": d.get(target.value) if d else None,
                    "etcd": e.get(target.value) if e else None,
                    "ratio": ratio,
                    "verdict": verdict,
                    "why_na": "errors in a round" if errors else ("not measured" if ratio is None else None),
                }
            )
    return out


def counts(verdicts: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many verdicts are PASS, FAIL and n/a."""
    return {v: sum(1 for x in verdicts if x["verdict"] == v) for v in (PASS, FAIL, MISSING)}


def _fmt_value(field: str, value: float | None) -> str:
    if value is None:
        return "-"
    if field == "throughput":
        return f"{value:,.0f} req/s"
    if field == "p99_ms":
        return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"
    return f"{value:.2f} CPU-s"


def format_targets(verdicts: Sequence[Mapping[str, Any]], rounds: int | None = None) -> str:
    """The TARGET TABLE: one line per target and run, then the counts."""
    fields = {t.name: t.value for t in TARGETS}
    header = ["target", "run", "dkv", "etcd", "dkv/etcd", "bound", "verdict"]
    lines = [header]
    for v in verdicts:
        field = fields.get(v["target"], "")
        lines.append(
            [
                v["target"],
                v["run"],
                _fmt_value(field, v["dkv"]),
                _fmt_value(field, v["etcd"]),
                fmt_ratio(v["ratio"]),
                v["bound"],
                v["verdict"] + (f" ({v['why_na']})" if v["verdict"] == MISSING and v.get("why_na") else ""),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    over = f" over {rounds} round{'s' if rounds != 1 else ''}" if rounds else ""
    title = f"TARGET TABLE (issue 16; dkv/etcd of the medians{over})"
    out = [title]
    for n, line in enumerate(lines):
        cells = [c.rjust(w) if 2 <= i <= 4 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    c = counts(verdicts)
    out.append(
        f"targets: {c[PASS]} PASS, {c[FAIL]} FAIL, {c[MISSING]} n/a. CPU: CPU-seconds of all members per 10,000 "
        "requests. A FAIL does not change the exit status; errors do."
    )
    return "\n".join(out)
