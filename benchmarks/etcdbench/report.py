# test-case-name: tests.test_vs_etcd_script
"""The comparison's results: per run and system the median over rounds, the
dkv/etcd ratios, an aligned text table and a chart (matplotlib, optional)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from etcdbench.load import run_has_errors
from etcdbench.runs import SYSTEMS, RunSpec

CHART_HINT = "pip install '.[bench]'"


def summarize(
    results: Sequence[dict[str, Any]], runs: Sequence[RunSpec], skipped: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """Per run and system: the median over rounds of throughput, p50, p99
    (and for CAS runs of succeeded and failed CAS per second), their min and
    max, and the spread (max - min) / median; the median CPU-seconds of all
    members per 10,000 requests (``cpu_s_per_10k``, None when not measured)
    and the median of the cores they kept busy (``cores``: throughput times
    CPU per request, CPU-seconds a second; None when not measured);
    plus the dkv/etcd ratios of the medians (throughput, p99, CPU). A
    system that skipped a run has None, and the reason in the row's
    ``skipped``."""
    rows = []
    for spec in runs:
        row: dict[str, Any] = {"run": spec.name, "describe": spec.describe(), "op": spec.op, "skipped": {}}
        for system in SYSTEMS:
            mine = [r for r in results if r["run"] == spec.name and r["system"] == system]
            if not mine:
                row[system] = None
                why = [s["reason"] for s in skipped if s["run"] == spec.name and s["system"] == system]
                if why:
                    row["skipped"][system] = why[0]
                continue
            agg: dict[str, Any] = {"rounds": len(mine), "errors": sum(run_has_errors(r) for r in mine)}
            fields = ["throughput", "p50_ms", "p99_ms"]
            if spec.op == "cas":
                fields += ["cas_succeeded_per_s", "cas_failed_per_s"]
            for field in fields:
                values = [r[field] for r in mine]
                med = statistics.median(values)
                agg[field] = med
                agg[f"{field}_min"] = min(values)
                agg[f"{field}_max"] = max(values)
                agg[f"{field}_spread"] = (max(values) - min(values)) / med if med else 0.0
            costed = [r for r in mine if r.get("cpu_s_per_10k") is not None]
            agg["cpu_s_per_10k"] = statistics.median(r["cpu_s_per_10k"] for r in costed) if costed else None
            cores = (r["throughput"] * r["cpu_s_per_10k"] / 10_000 for r in costed)
            agg["cores"] = statistics.median(cores) if costed else None
            row[system] = agg
        d, e = row["dkv"], row["etcd"]
        row["throughput_ratio"] = ratio(d and d["throughput"], e and e["throughput"])
        row["p99_ratio"] = ratio(d and d["p99_ms"], e and e["p99_ms"])
        row["cpu_ratio"] = ratio(d and d["cpu_s_per_10k"], e and e["cpu_s_per_10k"])
        rows.append(row)
    return rows


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r: float | None) -> str:
    """A ratio as '0.12x' (two significant figures for small ones)."""
    if r is None:
        return "n/a"
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.3f}x"


def fmt_rate(agg: dict[str, Any] | None, skipped: bool = False) -> str:
    """Median throughput with its spread over rounds, e.g. '1,234 ±3%'."""
    if agg is None:
        return "skipped" if skipped else "-"
    text = f"{agg['throughput']:,.0f}"
    if agg["rounds"] > 1:
        text += f" ±{agg['throughput_spread'] * 50:.0f}%"
    return text


def fmt_ms(value: float | None) -> str:
    """Milliseconds with a precision that suits the size."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def fmt_cpu(agg: dict[str, Any] | None, field: str = "cpu_s_per_10k") -> str:
    """A CPU figure of agg with two decimals, e.g. '3.21': by default the
    CPU-seconds per 10,000 requests (``cores``: the cores kept busy); '-'
    when not measured."""
    if agg is None or agg.get(field) is None:
        return "-"
    return f"{agg[field]:.2f}"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as an aligned text table."""
    header = [
        "run",
        "",
        "dkv req/s",
        "etcd req/s",
        "dkv/etcd",
        "dkv p50",
        "etcd p50",
        "dkv p99",
        "etcd p99",
        "p99 dkv/etcd",
        "dkv CPU",
        "etcd CPU",
        "CPU dkv/etcd",
        "dkv cores",
        "etcd cores",
    ]
    lines = [header]
    for row in rows:
        d, e = row["dkv"], row["etcd"]
        flag = "ERRORS" if (d and d["errors"]) or (e and e["errors"]) else ""
        lines.append(
            [
                row["run"],
                row["describe"],
                fmt_rate(d, "dkv" in row["skipped"]),
                fmt_rate(e, "etcd" in row["skipped"]),
                fmt_ratio(row["throughput_ratio"]),
                fmt_ms(d and d["p50_ms"]),
                fmt_ms(e and e["p50_ms"]),
                fmt_ms(d and d["p99_ms"]),
                fmt_ms(e and e["p99_ms"]),
                fmt_ratio(row["p99_ratio"]),
                fmt_cpu(d),
                fmt_cpu(e),
                fmt_ratio(row.get("cpu_ratio")),
                fmt_cpu(d, "cores"),
                fmt_cpu(e, "cores") + (f"  {flag}" if flag else ""),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append("req/s: median over rounds, ± half the range; latencies in ms (median over rounds of wrk's p50/p99);")
    out.append("CPU: CPU-seconds of all members per 10,000 requests (median over rounds).")
    out.append(
        "cores: CPU-seconds a second of all members, req/s x CPU per request (median over rounds); "
        "where they are CPU-bound, req/s = cores / CPU per request."
    )
    out.append("write-64-all: 3 wrk processes, throughputs summed, latency = worst of the three.")
    if any(row["run"].startswith("v3-") for row in rows):
        out.append("v3-*: both systems through etcd's gateway paths, the same requests; the others: dkv through /v0.")
    cas = [row for row in rows if row["op"] == "cas" and (row["dkv"] or row["etcd"])]
    if cas:
        out.append("CAS txns (req/s counts both outcomes; a failed CAS is an answer, not an error):")
        for row in cas:
            parts = [
                f"{system} {agg['cas_succeeded_per_s']:,.0f} succeeded/s, {agg['cas_failed_per_s']:,.0f} failed/s"
                for system in SYSTEMS
                if (agg := row[system]) is not None
            ]
            out.append(f"  {row['run']}: " + "; ".join(parts))
    for system, why in sorted({(s, w) for row in rows for s, w in row["skipped"].items()}):
        out.append(f"skipped by {system}: {why}")
    return "\n".join(out)


def format_result(r: dict[str, Any]) -> str:
    """One measured run on one line: req/s, p50, p99, CAS outcomes, errors."""
    text = f"{r['throughput']:>9,.0f} req/s  p50 {fmt_ms(r['p50_ms']):>6} ms  p99 {fmt_ms(r['p99_ms']):>6} ms"
    if r["cas_succeeded"] or r["cas_failed"]:
        text += f"  CAS {r['cas_succeeded']:,} succeeded, {r['cas_failed']:,} failed"
    if run_has_errors(r):
        text += (
            f"  ERRORS: {r['non2xx']} non-2xx, {r['socket_errors']} socket, "
            f"{r['misses']} wrong reads {r['error_sample'][:120]}"
        )
    return text


def write_chart(rows: Sequence[dict[str, Any]], path: Path) -> bool:
    """Grouped bars of throughput and p99 per run (whiskers: min..max over
    rounds). False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    names = [r["run"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.38
    for ax, field, title in (
        (axes[0], "throughput", "throughput (req/s, higher is better)"),
        (axes[1], "p99_ms", "p99 latency (ms, lower is better)"),
    ):
        for k, (system, color) in enumerate((("dkv", "#3b7dd8"), ("etcd", "#e0892b"))):
            xs, ys, lo, hi = [], [], [], []
            for i, row in enumerate(rows):
                agg = row[system]
                if agg is None:
                    continue
                xs.append(i + (k - 0.5) * width)
                ys.append(agg[field])
                lo.append(agg[field] - agg[f"{field}_min"])
                hi.append(agg[f"{field}_max"] - agg[field])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=system, color=color)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    axes[1].set_yscale("log")
    axes[1].yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes[1].yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axes[1].yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.suptitle("dkv vs etcd, 3 nodes on one machine (median over rounds, whiskers min..max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def have_matplotlib() -> bool:
    """Whether the chart can be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
