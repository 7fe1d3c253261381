"""benchmarks/overload.py's arithmetic without a cluster: the wrk script's
result line, merging wrk processes, percentiles off the log histogram, RSS
from /proc, and the verdicts of issue 15's overload criteria."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the scripts' package, etcdbench

from etcdbench.overload import BUCKETS_PER_DECADE, merge, parse_result, percentile_ms, rss_bytes, verdicts  # noqa: E402

LINE = (
    'OVERLOAD_RESULT {"ok":3,"refused":5,"other":1,"no_retry_after":0,"requests":9,"duration_us":2000000,'
    '"errors":{"connect":0,"read":1,"write":0,"timeout":0},"hist":[[150,2],[200,1]]}'
)


def test_the_result_line_is_found_among_wrks_output() -> None:
    result = parse_result("Running 2s test\n" + LINE + "\nRequests/sec: 4.5\n")
    assert (result["ok"], result["refused"], result["other"]) == (3, 5, 1)
    assert result["hist"] == {150: 2, 200: 1}
    with pytest.raises(ValueError):
        parse_result("no line here")


def test_merged_runs_add_up() -> None:
    a, b = parse_result(LINE), parse_result(LINE.replace("2000000", "3000000"))
    both = merge([a, b])
    assert (both["ok"], both["refused"], both["requests"]) == (6, 10, 18)
    assert both["errors"]["read"] == 2 and both["hist"] == {150: 4, 200: 2}
    assert both["duration_us"] == 3_000_000
    assert both["backoffs"] == 0  # a line without the field (an older script) counts none
    waited = merge([parse_result(LINE.replace('"no_retry_after":0,', '"no_retry_after":0,"backoffs":4,')), a])
    assert waited["backoffs"] == 4


def test_percentiles_are_the_upper_edge_of_their_bucket() -> None:
    # Bucket 150 holds [1000, 1047) us; bucket 200 holds [10000, 10471) us.
    hist = {150: 99, 200: 1}
    assert percentile_ms(hist, 0.5) == pytest.approx(10 ** (151 / BUCKETS_PER_DECADE) / 1000)
    assert percentile_ms(hist, 0.99) == pytest.approx(1.047, rel=1e-3)
    assert percentile_ms(hist, 1.0) == pytest.approx(10.47, rel=1e-3)
    assert percentile_ms({}, 0.99) is None


def test_rss_of_this_process_and_of_none() -> None:
    mine = rss_bytes(os.getpid())
    assert mine is not None and mine > 1 << 20
    assert rss_bytes(2**22 + 12345) is None


def test_the_anonymous_rss_is_judged_when_its_bound_is_given() -> None:
    common = dict(rss_bound=512 << 20, p99_unloaded_ms=10.0, p99_admitted_ms=19.0, sustainable_rate=100.0,
                  admitted_rate=90.0)  # fmt: skip
    assert "rss_anon" not in verdicts(peak_rss={"a": 100 << 20}, **common)  # type: ignore[arg-type]
    judged = verdicts(
        peak_rss={"a": 600 << 20, "b": 100 << 20},
        peak_rss_anon={"a": 90 << 20, "b": 300 << 20},
        rss_anon_bound=256 << 20,
        **common,  # type: ignore[arg-type]
    )
    assert judged["rss"]["verdict"] == "FAIL"
    assert judged["rss_anon"] == {"verdict": "FAIL", "peak_mib": {"a": 90.0, "b": 300.0}, "bound_mib": 256.0}


def test_the_vmrss_bound_of_a_node_grows_by_its_db_file() -> None:
    """LMDB's map of the db is resident once touched: a node's VmRSS bound
    is the fixed bound plus its own db file's size."""
    judged = verdicts(
        peak_rss={"a": 700 << 20, "b": 700 << 20}, rss_bound=512 << 20, db_bytes={"a": 300 << 20, "b": 100 << 20},
        p99_unloaded_ms=10.0, p99_admitted_ms=19.0, sustainable_rate=100.0, admitted_rate=90.0,
    )  # fmt: skip
    assert judged["rss"]["verdict"] == "FAIL"
    assert judged["rss"]["bound_mib"] == {"a": 812.0, "b": 612.0}
    assert verdicts(
        peak_rss={"a": 700 << 20}, rss_bound=512 << 20, db_bytes={"a": 300 << 20},
        p99_unloaded_ms=10.0, p99_admitted_ms=19.0, sustainable_rate=100.0, admitted_rate=90.0,
    )["rss"]["verdict"] == "PASS"  # fmt: skip


def test_verdicts() -> None:
    good = verdicts(peak_rss={"a": 100 << 20}, rss_bound=512 << 20, p99_unloaded_ms=10.0, p99_admitted_ms=19.0,
                    sustainable_rate=1000.0, admitted_rate=850.0)  # fmt: skip
    assert {name: v["verdict"] for name, v in good.items()} == {"rss": "PASS", "p99": "PASS", "throughput": "PASS"}
    bad = verdicts(peak_rss={"a": 600 << 20}, rss_bound=512 << 20, p99_unloaded_ms=10.0, p99_admitted_ms=21.0,
                   sustainable_rate=1000.0, admitted_rate=700.0)  # fmt: skip
    assert {name: v["verdict"] for name, v in bad.items()} == {"rss": "FAIL", "p99": "FAIL", "throughput": "FAIL"}
    assert bad["throughput"]["ratio"] == 0.7
