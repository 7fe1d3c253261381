# test-case-name: tests.test_soak
"""The soak's judgements (``dkv.testing.soak``), each a ``Criterion``:
PASS, FAIL, or n/a when there was nothing to judge. The module docstring of
``dkv.testing.soak`` states each rule; they work on the sampler's ticks and
log lines (``dkv.testing.soak_sampler``) and the nemesis's events."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import attrs

from dkv.testing.nemesis import FAULT_ACTIONS, FaultEvent
from dkv.testing.soak_sampler import LogLine, Tick
from dkv.testing.torture import TortureResult

__all__ = [
    "Criterion",
    "db_criterion",
    "explain",
    "fault_windows",
    "fds_criterion",
    "counts_text",
    "history_criterion",
    "log_criterion",
    "rss_criterion",
    "side_criterion",
]

MIB = 1024 * 1024


@attrs.frozen(kw_only=True)
class Criterion:
    name: str
    ok: bool | None  # None: could not be judged (not a failure)
    detail: str

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.ok]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict, "detail": self.detail}


def counts_text(counts: Any) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing done"


def history_criterion(torture: TortureResult) -> Criterion:
    failed = [c for c in torture.checks if not c.passed]
    verdict = torture.verdict
    lin = (
        "linearizable"
        if verdict is not None and verdict.ok
        else "linearizability: "
        + ("not checked" if verdict is None else "timed out" if verdict.timed_out else "VIOLATED")
    )
    if failed or torture.errors:
        detail = "; ".join([*(f"{c.name}: {c.detail}" for c in failed), *torture.errors])
        return Criterion(name="history", ok=False, detail=detail)
    ok: bool | None = True if torture.exit_status == 0 else None
    return Criterion(
        name="history",
        ok=ok,
        detail=f"{len(torture.checks)} checks passed ({', '.join(c.name for c in torture.checks)}); {lin}",
    )


def side_criterion(name: str, violations: Sequence[str], counts: str) -> Criterion:
    if violations:
        shown = "\n".join(violations[:10]) + (f"\n... {len(violations) - 10} more" if len(violations) > 10 else "")
        return Criterion(name=name, ok=False, detail=f"{len(violations)} violations ({counts}):\n{shown}")
    return Criterion(name=name, ok=True, detail=counts)


# -- resources ------------------------------------------------------------------------


#: The fields ``_judged`` can judge, in the order ``_processes`` gives them.
_RSS, _FDS, _ANON, _FILE = range(4)


#: (time, rss KiB, fds, anon rss KiB, file rss KiB)
_Sample = tuple[float, int | None, int | None, int | None, int | None]


def _processes(ticks: Sequence[Tick]) -> dict[tuple[str, int], list[_Sample]]:
    """(node, pid) -> [(time, rss KiB, fds, anon rss KiB, file rss KiB)] in time order."""
    out: dict[tuple[str, int], list[_Sample]] = {}
    for tick in ticks:
        for n in tick.nodes:
            if n.pid is not None:
                out.setdefault((n.node, n.pid), []).append(
                    (tick.time, n.rss_kib, n.fds, n.rss_anon_kib, n.rss_file_kib)
                )
    return out


def _judged(ticks: Sequence[Tick], warmup: float, field: int) -> tuple[list[tuple[str, int, int, int]], list[str]]:
    """Per process that lived past warmup (and two samples more): (node, pid,
    value after the warm-up, value at the end: the median of the last three
    samples); and the processes too short-lived to judge."""
    judged: list[tuple[str, int, int, int]] = []
    young: list[str] = []
    for (node, pid), samples in sorted(_processes(ticks).items()):
        first = samples[0][0]
        after = [(t, v) for t, v in ((s[0], s[1 + field]) for s in samples) if v is not None and t >= first + warmup]
        if len(after) < 3:
            young.append(f"{node} (pid {pid}, {samples[-1][0] - first:.0f}s)")
            continue
        end = int(statistics.median(v for _, v in after[-3:]))
        judged.append((node, pid, int(after[0][1]), end))
    return judged, young


def _change(ref: int, end: int) -> str:
    return f"{ref / 1024:.1f} -> {end / 1024:.1f} MiB ({(end / max(1, ref) - 1) * 100:+.1f}%)"


def rss_criterion(ticks: Sequence[Tick], warmup: float, tolerance: float) -> Criterion:
    """Each process's anonymous RSS (``RssAnon``: heap, stacks, what the
    process holds itself) at the end is at most tolerance above its value
    after the warm-up. ``VmRSS`` is that plus ``RssFile``, file pages
    mapped in: the libraries, and the LMDB db's pages, which stay resident
    as the db is read and written (a soak's db file grows to tens of MiB
    before compaction frees enough of it) but are clean page cache that the
    kernel drops under pressure; the db's growth is the ``db-size``
    criterion's. Both are shown. Samples without ``RssAnon`` (an old
    ``soak.json``) are judged by ``VmRSS``."""
    anon = any(n.rss_anon_kib is not None for t in ticks for n in t.nodes)
    field, label = (_ANON, "anon") if anon else (_RSS, "VmRSS")
    judged, young = _judged(ticks, warmup, field)
    shown = [("VmRSS", _RSS), ("file", _FILE)] if anon else []
    parts = {
        name: {(node, pid): (ref, end) for node, pid, ref, end in _judged(ticks, warmup, f)[0]} for name, f in shown
    }
    rows = [
        f"{node} pid {pid}: {label} {_change(ref, end)}"
        + "".join(
            f"; {name} {_change(*values[(node, pid)])}" for name, values in parts.items() if (node, pid) in values
        )
        for node, pid, ref, end in judged
    ]
    bad = [(node, pid) for node, pid, ref, end in judged if end > ref * (1 + tolerance)]
    note = [f"not judged (restarted, lived < warm-up {warmup:g}s + 3 samples): {', '.join(young)}"] if young else []
    if not judged:
        return Criterion(name="rss", ok=None, detail="\n".join(["no node process lived past the warm-up", *note]))
    head = f"{label} RSS at most {tolerance * 100:g}% above its value after the warm-up"
    return Criterion(name="rss", ok=not bad, detail="\n".join([head, *rows, *note]))


def fds_criterion(ticks: Sequence[Tick], warmup: float, slack: int) -> Criterion:
    judged, young = _judged(ticks, warmup, 1)
    rows = [f"{node} pid {pid}: {ref} after warm-up -> {end}" for node, pid, ref, end in judged]
    bad = [(node, pid) for node, pid, ref, end in judged if end > ref + max(slack, ref // 10)]
    if not judged:
        return Criterion(name="fds", ok=None, detail="no node process lived past the warm-up")
    note = [f"not judged: {', '.join(young)}"] if young else []
    return Criterion(
        name="fds", ok=not bad, detail="\n".join([f"flat: at most +{slack} or +10% at the end", *rows, *note])
    )


def db_criterion(ticks: Sequence[Tick], after: float) -> Criterion:
    late_ticks = [t for t in ticks if t.time >= after]
    if len(late_ticks) < 4:
        return Criterion(name="db-size", ok=None, detail="too few samples after the warm-up")
    half = len(late_ticks) // 2
    rows, bad = [], []
    for node in sorted({n.node for t in late_ticks for n in t.nodes}):

        def largest(part: Sequence[Tick], node: str = node) -> int:
            return max((n.db_bytes or 0 for t in part for n in t.nodes if n.node == node), default=0)

        early, late = largest(late_ticks[:half]), largest(late_ticks[half:])
        rows.append(f"{node}: {early / MIB:.2f} MiB in the first half -> {late / MIB:.2f} MiB in the second")
        if late > max(early * 1.25, early + 4 * MIB):
            bad.append(node)
    return Criterion(name="db-size", ok=not bad, detail="\n".join(["bounded: at most +25% or +4 MiB", *rows]))


# -- log lines ------------------------------------------------------------------------

#: Actions that end a fault (or a step of one).
_UNDO = frozenset({"restart", "resume", "heal", "rejoin", "clock-reset"})


def fault_windows(events: Sequence[FaultEvent], grace: float) -> list[tuple[float, float, FaultEvent]]:
    """(from, to, fault) for each injected fault: from a second before it
    until grace seconds after it was undone (its undos are the ones before
    the next fault: a restart, resume, heal, rejoin or clock reset; a fault
    with none, a leadership transfer, ends when it is made)."""
    windows = []
    for n, event in enumerate(events):
        if event.action not in FAULT_ACTIONS:
            continue
        end = event.time
        for later in events[n + 1 :]:
            if later.action in FAULT_ACTIONS:
                break
            if later.action in _UNDO:
                end = later.time
        windows.append((event.time - 1.0, end + grace, event))
    return windows


def explain(
    lines: Sequence[LogLine], events: Sequence[FaultEvent], grace: float
) -> list[tuple[LogLine, FaultEvent | None]]:
    """Each line with the fault whose window overlaps when it was seen
    (the latest such), or None: unexplained."""
    windows = fault_windows(events, grace)
    out = []
    for line in lines:
        matches = [fault for start, end, fault in windows if start <= line.time and line.since <= end]
        out.append((line, matches[-1] if matches else None))
    return out


def log_criterion(explained: Sequence[tuple[LogLine, FaultEvent | None]]) -> Criterion:
    unexplained = [line for line, fault in explained if fault is None]
    kinds: dict[str, int] = {}
    for _, fault in explained:
        if fault is not None:
            kinds[fault.action] = kinds.get(fault.action, 0) + 1
    summary = f"{len(explained)} warning-level lines, {len(explained) - len(unexplained)} within a fault's window" + (
        " (" + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + ")" if kinds else ""
    )
    if unexplained:
        shown = [f"{line.node}: {line.text[:160]}" for line in unexplained[:10]]
        return Criterion(name="log", ok=False, detail="\n".join([summary, f"{len(unexplained)} unexplained:", *shown]))
    return Criterion(name="log", ok=True, detail=summary)
