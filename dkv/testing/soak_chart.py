# test-case-name: tests.test_soak
"""The soak's chart: RSS (solid; its anonymous part dashed) and open fds per node, throughput and p99 over
time, one PNG. matplotlib (the ``bench`` extra) is imported only here, and
only when drawing; without it the chart is skipped with a reason."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dkv.testing.soak_sampler import Tick

__all__ = ["write_chart"]


def write_chart(path: Path, ticks: Sequence[Tick], t0: float) -> str:
    """RSS, fds, throughput and p99 over time as a PNG; what was written, or
    why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "not drawn: matplotlib is missing (pip install -e '.[bench]')"
    if not ticks:
        return "not drawn: no samples"
    minutes = [(t.time - t0) / 60 for t in ticks]
    nodes = sorted({n.node for t in ticks for n in t.nodes})
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    for node in nodes:
        rss = [next((n.rss_kib / 1024 for n in t.nodes if n.node == node and n.rss_kib), None) for t in ticks]
        fds = [next((n.fds for n in t.nodes if n.node == node and n.fds is not None), None) for t in ticks]
        anon = [
            next((n.rss_anon_kib / 1024 for n in t.nodes if n.node == node and n.rss_anon_kib), None) for t in ticks
        ]
        (line,) = axes[0].plot(minutes, [float("nan") if v is None else v for v in rss], label=node)
        if any(v is not None for v in anon):
            axes[0].plot(
                minutes,
                [float("nan") if v is None else v for v in anon],
                linestyle="--",
                color=line.get_color(),
                label=f"{node} anon",
            )
        axes[1].plot(minutes, [float("nan") if v is None else v for v in fds], label=node)
    axes[2].plot(minutes, [t.throughput for t in ticks])
    axes[3].plot(minutes, [float("nan") if t.p99_ms is None else t.p99_ms for t in ticks])
    for ax, label in zip(axes, ("RSS, anon dashed (MiB)", "open fds", "ok ops/s", "p99 latency (ms)"), strict=True):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left")
    axes[1].legend(loc="upper left")
    axes[3].set_xlabel("minutes")
    fig.suptitle("dkv soak")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return str(path)
