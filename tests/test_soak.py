"""The soak (``python -m dkv.torture --soak``): a short run end to end, and
its judgements on made-up samples."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from dkv.testing.nemesis import FaultEvent
from dkv.testing.soak import parse_args, parse_duration
from dkv.testing.soak_criteria import db_criterion, explain, fds_criterion, log_criterion, rss_criterion
from dkv.testing.soak_sampler import LogLine, NodeSample, Tick, p99

MIB = 1024 * 1024


def test_durations() -> None:
    assert [parse_duration(t) for t in ("2h", "30m", "90s", "90", "1.5m")] == [7200, 1800, 90, 90, 90]
    with pytest.raises(ValueError, match="such as 2h"):
        parse_duration("two hours")


def test_the_command_repeats_the_soak(tmp_path: Path) -> None:
    cfg = parse_args(["--soak", "2h", "--fault-every", "30s", "--clients", "6", "--seed", "4", "--out", str(tmp_path)])
    assert (cfg.duration, cfg.fault_every, cfg.rss_warmup, cfg.clients) == (7200, 30, 300, 6)
    assert parse_args(shlex.split(cfg.command())[3:]) == cfg


def test_the_nodes_remember_idempotency_keys_for_less_than_the_warm_up(tmp_path: Path) -> None:
    """Every write carries a fresh key, so the db holds a record per write
    of the window: a window still filling after the warm-up grows the db
    (dkv's default is 10 min), which ``db-size`` would take for a leak."""
    default = parse_args(["--soak", "30m", "--out", str(tmp_path)])
    assert default.idempotency_window + 60 < default.rss_warmup
    cfg = parse_args(["--soak", "30m", "--idempotency-window", "90s", "--out", str(tmp_path)])
    args = cfg.node_args()
    assert args[args.index("--idempotency-window") + 1] == "90"
    assert args[args.index("--auto-compaction-retention") + 1] == "1m"
    assert parse_args(shlex.split(cfg.command())[3:]) == cfg


def test_p99_is_the_nearest_rank() -> None:
    assert p99([]) is None
    assert p99([5.0]) == 5.0
    assert p99([float(n) for n in range(1, 101)]) == 99.0


def _ticks(rss: list[int], fds: list[int], db: list[int], pid: int = 7) -> list[Tick]:
    return [
        Tick(
            time=float(n),
            since=float(n - 1),
            nodes=(NodeSample(node="a", pid=pid, rss_kib=r, fds=f, db_bytes=d),),
            ok_ops=10,
            p99_ms=1.0,
        )
        for n, (r, f, d) in enumerate(zip(rss, fds, db, strict=True))
    ]


def test_anonymous_rss_is_judged_file_pages_are_shown() -> None:
    """The db's pages (RssFile) may grow; what the process holds itself may not."""

    def ticks(anon: list[int], file: list[int]) -> list[Tick]:
        return [
            attrs.evolve(
                t,
                nodes=(attrs.evolve(t.nodes[0], rss_kib=a + f, rss_anon_kib=a, rss_file_kib=f),),
            )
            for t, a, f in zip(_ticks([0] * len(anon), [30] * len(anon), [MIB] * len(anon)), anon, file, strict=True)
        ]

    db_pages = rss_criterion(ticks([50_000] * 6, [30_000, 40_000, 50_000, 60_000, 70_000, 80_000]), 1.0, 0.10)
    assert db_pages.ok is True, db_pages.detail
    row = "a pid 7: anon 48.8 -> 48.8 MiB (+0.0%); VmRSS 87.9 -> 117.2 MiB (+33.3%); file 39.1 -> 68.4 MiB"
    assert row in db_pages.detail
    leak = rss_criterion(ticks([50_000, 50_000, 55_000, 60_000, 65_000, 70_000], [30_000] * 6), 1.0, 0.10)
    assert leak.ok is False, leak.detail


def test_rss_growth_past_the_tolerance_after_the_warm_up_fails() -> None:
    flat = _ticks([50_000, 100_000, 100_000, 104_000, 105_000, 106_000], [30] * 6, [MIB] * 6)
    assert rss_criterion(flat, warmup=1.0, tolerance=0.10).ok is True  # start-up growth is before the reference
    leaking = _ticks([100_000, 100_000, 108_000, 112_000, 116_000, 120_000], [30] * 6, [MIB] * 6)
    assert rss_criterion(leaking, warmup=1.0, tolerance=0.10).ok is False
    young = rss_criterion(flat, warmup=10.0, tolerance=0.10)
    assert young.ok is None and "not judged" in young.detail


def test_fds_must_stay_flat() -> None:
    assert fds_criterion(_ticks([1] * 6, [30, 31, 33, 29, 35, 32], [MIB] * 6), 1.0, slack=8).ok is True
    assert fds_criterion(_ticks([1] * 6, [30, 40, 50, 60, 70, 80], [MIB] * 6), 1.0, slack=8).ok is False


def test_db_size_must_stay_bounded() -> None:
    assert db_criterion(_ticks([1] * 8, [1] * 8, [MIB, 2 * MIB] + [3 * MIB] * 6), after=0.0).ok is True
    growing = [n * 10 * MIB for n in range(1, 9)]
    assert db_criterion(_ticks([1] * 8, [1] * 8, growing), after=0.0).ok is False


def test_a_warning_is_explained_only_within_a_fault_window() -> None:
    events = [
        FaultEvent(time=100.0, action="kill", nodes=("b",)),
        FaultEvent(time=104.0, action="restart", nodes=("b",)),
        FaultEvent(time=160.0, action="transfer", nodes=("a", "c")),
    ]
    lines = [
        LogLine(node="a", since=101.0, time=103.0, text="[dkv#warn] peer b unreachable"),
        LogLine(node="b", since=120.0, time=123.0, text="[dkv#warn] slow catch-up"),  # within the grace
        LogLine(node="c", since=140.0, time=145.0, text="[dkv#error] out of the blue"),
        LogLine(node="c", since=158.0, time=161.0, text="[dkv#warn] leadership moved"),
    ]
    explained = explain(lines, events, grace=20.0)
    assert [None if f is None else f.action for _, f in explained] == ["kill", "kill", None, "transfer"]
    verdict = log_criterion(explained)
    assert verdict.ok is False and "1 unexplained" in verdict.detail and "out of the blue" in verdict.detail
    assert log_criterion(explained[:2]).ok is True


@pytest.mark.process
def test_a_short_soak_passes_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    done = subprocess.run(
        [sys.executable, "-m", "dkv.torture", "--soak", "40s", "--fault-every", "10s", "--rss-warmup", "12s",
         "--sample-every", "2s", "--auto-compaction-retention", "10s", "--seed", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    for name in ("history", "watch", "leases", "rss", "fds", "db-size", "log"):
        assert any(line.startswith(name) for line in done.stdout.splitlines()), report
    summary = json.loads((out / "soak.json").read_text())
    verdicts = {c["name"]: c["verdict"] for c in summary["criteria"]}
    assert set(verdicts.values()) <= {"PASS", "n/a"} and verdicts["history"] == "PASS", verdicts
    assert sum(summary["faults"].values()) >= 2, summary["faults"]
    assert summary["side"]["watch_events"] > 0 and summary["side"]["leases"].get("revoked", 0) >= 1, summary["side"]
    assert len(summary["samples"]) >= 10
    assert all(n["rss_kib"] for n in summary["samples"][0]["nodes"])
    png = out / "soak.png"
    assert summary["chart"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "history.jsonl").exists() and (out / "faults.jsonl").exists()
