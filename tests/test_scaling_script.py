"""benchmarks/scaling.py and its modules (etcdbench.growth, .scaling,
.scaling_cli, .scaling_chart): the growth statements, the points and their
medians, the command line, the charts from fake results, and (a process
test, real dkv nodes and wrk) ``--quick`` on one small section."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPT = BENCHMARKS / "scaling.py"
sys.path.insert(0, str(BENCHMARKS))  # the script's package, etcdbench

from etcdbench import growth, scaling, scaling_chart, scaling_cli  # noqa: E402


def test_loglog_slope_and_names() -> None:
    xs = [1, 10, 100, 1000]
    assert growth.loglog_slope(xs, [5, 5, 5, 5]) == pytest.approx(0.0)
    assert growth.loglog_slope(xs, [2 * x for x in xs]) == pytest.approx(1.0)
    assert growth.loglog_slope(xs, [x**0.5 for x in xs]) == pytest.approx(0.5)
    assert growth.loglog_slope([1], [1]) is None and growth.loglog_slope([3, 3], [1, 2]) is None
    assert growth.loglog_slope([1, 2, 4], [0, 1, 2]) == pytest.approx(1.0)  # a zero cost is left out
    names = {s: growth.name_slope(s) for s in (None, 0.1, -0.1, -0.5, 0.5, 0.9, 1.1, 1.5)}
    assert names == {
        None: "unknown", 0.1: "flat", -0.1: "flat", -0.5: "falling", 0.5: "sub-linear", 0.9: "linear",
        1.1: "linear", 1.5: "super-linear",
    }  # fmt: skip
    assert growth.describe("db size", xs, xs) == "db size: linear (log-log slope 1.00)"
    assert growth.describe("x", [1], [1]) == "x: unknown (too few points)"


def test_saturation_is_the_first_point_near_the_best() -> None:
    assert growth.saturation([1, 4, 16, 64, 256], [100, 380, 900, 1000, 950]) == 16  # 900 >= 0.9 * 1000
    assert growth.saturation([1, 4], [10, 5]) == 1
    assert growth.saturation([], []) is None


def _point(system: str, op: str, conns: int, thr: float, p99: float) -> dict[str, Any]:
    r = {"throughput": thr, "p50_ms": p99 / 2, "p99_ms": p99, "non2xx": 0, "socket_errors": 0, "misses": 0}
    return scaling.point(r, system, "connections", conns, op)


def test_points_medians_and_statements() -> None:
    pts = [
        _point("dkv", "write", c, thr, p99)
        for c, thr, p99 in ((1, 100, 2), (16, 1000, 4), (64, 1100, 16), (256, 1000, 64))
    ] + [_point("etcd", "write", c, 500.0, c * 1.0) for c in (1, 16, 64, 256)]
    text = scaling.conns_statement(pts)
    assert text.startswith("conns: dkv write saturates at 16 conn (1,100 req/s), p99 past it linear (1.00)")
    assert "etcd write saturates at 1 conn (500 req/s), p99 past it linear (1.00)" in text
    pts[3]["rejected"] = 40
    assert "p99 past it linear (1.00), sheds load (429) from 256 conn; etcd" in scaling.conns_statement(pts)
    cost = scaling.cost_statement("conns", pts, "connections", "time per request")
    assert "etcd write flat (0.00)" in cost and "dkv write falling" in cost

    rounds = [_point("dkv", "read", 4, thr, 1.0) for thr in (10, 30, 20)]
    rounds[1]["errors"] = True
    [merged] = scaling.median_points(rounds, "connections")
    assert merged["throughput"] == 20 and merged["rounds"] == 3 and merged["errors"] and merged["connections"] == 4


def test_a_429_is_rejected_not_an_error() -> None:
    base = {"throughput": 1.0, "p50_ms": 1.0, "p99_ms": 2.0, "socket_errors": 0, "misses": 0}
    shed = scaling.point(base | {"non2xx": 5, "rejected": 5}, "dkv", "connections", 1024, "write")
    assert not shed["errors"] and shed["rejected"] == 5
    assert scaling.point(base | {"non2xx": 6, "rejected": 5}, "dkv", "connections", 1024, "write")["errors"]
    assert scaling.point(base | {"non2xx": 0, "misses": 1}, "dkv", "connections", 1, "read")["errors"]


def test_request_limit_and_read_keys() -> None:
    assert scaling.put_body_bytes(1 << 20) < scaling.REQUEST_LIMIT < scaling.put_body_bytes(1200 * 1024)
    args = scaling_cli.parse_args(["--value-read-mib", "64"])
    assert scaling.value_read_keys(args, 256) == 1000 and scaling.value_read_keys(args, 1 << 20) == 64
    assert scaling.value_read_keys(args, 64 << 20) == 16


def test_command_line_defaults_quick_and_errors() -> None:
    full = scaling_cli.parse_args([])
    assert full.sections == list(scaling.SECTIONS) and full.systems == ["dkv", "etcd"]
    assert (full.sizes, full.value_sizes) == ([3, 5, 7], [256, 4096, 65536, 1048576])
    assert full.connections == [1, 4, 16, 64, 256, 1024] and full.key_counts == [10_000, 100_000, 1_000_000]
    assert (full.duration, full.catchup_pause, full.api) == (5, 5.0, "v3")
    quick = scaling_cli.parse_args(["--quick", "--connections", "2,8", "--sections", "conns,size,conns"])
    assert quick.sections == ["conns", "size"] and quick.connections == [2, 8] and quick.duration == 1
    assert quick.key_counts == [2_000, 12_000] and quick.sizes == [3, 5]
    bad_lines = (
        ["--sections", "sizes"], ["--value-sizes", "2000000"], ["--connections", "0"], ["--systems", "zk"],
        ["--conns-ops", "cas"], ["--catchup-pause", "0"], ["--key-counts", "ten"],
    )  # fmt: skip
    for bad in bad_lines:
        with pytest.raises(SystemExit):
            scaling_cli.parse_args(bad)


def test_help_exits_0() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--sections" in out.stdout and "--quick" in out.stdout and "catchup" in out.stdout


def test_charts_from_fake_results(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    pts = [_point(s, op, c, 100.0 * c, 1.0 + c) for s in ("dkv", "etcd") for op in ("write", "read") for c in (1, 16)]
    result = {"points": pts, "statement": "conns: ...", "chart": {"param": "connections", "panels": [
        ("throughput", "req/s", True), ("p99_ms", "p99 ms", True)]}}  # fmt: skip
    assert scaling_chart.write_section_chart("conns", result, tmp_path / "conns.png")
    samples = [
        {"t": t / 5, "leader_commit": 10 * t, "follower_applied": None if 5 <= t < 10 else 10 * t - 3,
         "leader_rss_mb": 50.0 + t, "paused": 5 <= t < 10}
        for t in range(20)
    ]  # fmt: skip
    catchup = {"points": [{"system": "dkv", "samples": samples, "paused_at": 1.0, "resumed_at": 2.0,
                           "caught_up_at": 2.4}], "statement": "", "chart": {}}  # fmt: skip
    assert scaling_chart.write_section_chart("catchup", catchup, tmp_path / "catchup.png")
    assert (tmp_path / "conns.png").stat().st_size > 1000 and (tmp_path / "catchup.png").stat().st_size > 1000


@pytest.mark.process
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_quick_conns_and_catchup_on_dkv(tmp_path: Path) -> None:
    """The smoke version on dkv alone: two 1-second runs, then a follower
    paused for a second; JSON, charts and statements come out, no errors."""
    argv = [
        sys.executable, str(SCRIPT), "--quick", "--systems", "dkv", "--sections", "conns,catchup",
        "--connections", "1,4", "--conns-ops", "write", "--catchup-pause", "1", "--catchup-before", "1",
        "--out", str(tmp_path / "out"), "--tmp-dir", str(tmp_path),
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "scaling.json").read_text())
    conns = report["sections"]["conns"]
    assert [p["connections"] for p in conns["points"]] == [1, 4]
    assert all(p["throughput"] > 0 and not p["errors"] for p in conns["points"])
    [c] = report["sections"]["catchup"]["points"]
    assert c["catch_up_s"] >= 0 and c["paused_s"] >= 1 and c["leader_rss_mb_max"] > 0 and not c["errors"]
    assert "conns: dkv write saturates at" in out.stdout and "catchup: dkv " in out.stdout
    if scaling_chart._pyplot() is not None:
        assert (tmp_path / "out" / "conns.png").exists() and (tmp_path / "out" / "catchup.png").exists()


def test_the_size_and_value_sections_sweep_every_system_value_and_op(monkeypatch) -> None:
    """With measure_runs faked: one point per (system, value, op), the
    median over rounds, and the value section's MiB/s."""
    import argparse

    calls: list[tuple[str, dict[str, Any]]] = []

    def fake(system: str, args: Any, specs: list, **kw: Any) -> list[dict[str, Any]]:
        calls.append((system, kw))
        value = kw.get("size") or kw.get("value_size")
        base = {"p50_ms": 1.0, "p99_ms": 2.0, "non2xx": 0, "socket_errors": 0, "misses": 0}
        return [base | {"throughput": 1000.0 / value + len(calls) % 2} for _ in specs]

    monkeypatch.setattr(scaling, "measure_runs", fake)
    args = argparse.Namespace(
        rounds=2, systems=["dkv", "etcd"], api="v0", sizes=[3, 5], size_connections=64,
        value_sizes=[256, 4096], value_connections=16, read_keys=100, value_read_mib=64,
    )  # fmt: skip
    size = scaling.section_size(args)
    assert len(calls) == 2 * 2 * 2 and {kw["size"] for _, kw in calls} == {3, 5}
    assert sorted((p["system"], p["members"], p["op"]) for p in size["points"]) == sorted(
        (s, n, op) for s in ("dkv", "etcd") for n in (3, 5) for op in ("write", "read")
    )
    assert all(p["rounds"] == 2 for p in size["points"])
    value = scaling.section_value(args)
    four_k = [p for p in value["points"] if p["value_bytes"] == 4096]
    assert len(four_k) == 4 and all(p["mib_per_s"] == pytest.approx(p["throughput"] * 4096 / 2**20) for p in four_k)
