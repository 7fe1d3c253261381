# test-case-name: tests.test_scaling_script
"""The scaling picture's charts (matplotlib, optional): for a section, one
panel per figure, a line per system and operation over the parameter; for
the catch-up section, the follower's lag and the leader's RSS over time."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from etcdbench.scaling import series

COLORS = {"dkv": "#3b7dd8", "etcd": "#e0892b"}


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or None when not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def write_section_chart(section: str, result: dict[str, Any], path: Path) -> bool:
    """The section's chart as a PNG at path; False without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    if section == "catchup":
        _catchup(plt, result, path)
        return True
    chart = result["chart"]
    param = chart["param"]
    panels = chart["panels"]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    for ax, (field, label, logy) in zip(axes.flat, panels, strict=False):
        for name, (xs, ys) in series(result["points"], param, field).items():
            system, op = name.split(" ", 1)
            style = {"marker": "o", "linestyle": "-"} if op == "write" else {"marker": "s", "linestyle": "--"}
            ax.plot(xs, ys, color=COLORS.get(system), label=name, **style)
        if param != "members":
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        _plain_ticks(ax, sorted({p[param] for p in result["points"]}), logy)
        ax.set_xlabel(param)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(textwrap.fill(result["statement"], 150), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _plain_ticks(ax: Any, xs: list[float], logy: bool) -> None:
    """Ticks at the measured parameter values (and at 1, 2, 5 x 10^n on a
    log y axis), numbers written plainly (not 10^x)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 10 else f"{v:g}")
    ax.set_xticks(xs)
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(NullFormatter())
    if logy:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(NullFormatter())


def _catchup(plt: Any, result: dict[str, Any], path: Path) -> None:
    fig, (lag_ax, rss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for p in result["points"]:
        color = COLORS.get(p["system"])
        pts = [s for s in p["samples"] if s["leader_commit"] is not None]
        last_applied = None
        xs, lags = [], []
        for s in pts:
            if s["follower_applied"] is not None:
                last_applied = s["follower_applied"]
            if last_applied is not None:
                xs.append(s["t"])
                lags.append(max(0, s["leader_commit"] - last_applied))
        lag_ax.plot(xs, lags, color=color, label=f"{p['system']} follower lag (entries)")
        rss = [(s["t"], s["leader_rss_mb"]) for s in p["samples"] if s["leader_rss_mb"] is not None]
        rss_ax.plot([t for t, _ in rss], [m for _, m in rss], color=color, label=f"{p['system']} leader RSS (MiB)")
        for ax in (lag_ax, rss_ax):
            ax.axvspan(p["paused_at"], p["resumed_at"], color=color, alpha=0.08)
            ax.axvline(p["caught_up_at"], color=color, linestyle=":")
    for ax, title in ((lag_ax, "follower lag (paused: shaded; caught up: dotted)"), (rss_ax, "leader RSS")):
        ax.set_xlabel("s")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
