"""benchmarks/vs_etcd.py, benchmarks/write_cost.py and their package,
etcdbench, without etcd or a dkv cluster: parsing wrk's Lua output,
combining parallel results, the summary and table, the run selection, the
command lines, the cost figures' arithmetic and table, and (when wrk is
installed) the Lua script against stub servers for about a second a run."""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPT = BENCHMARKS / "vs_etcd.py"
COST_SCRIPT = BENCHMARKS / "write_cost.py"
sys.path.insert(0, str(BENCHMARKS))  # the script's package, etcdbench

import lmdb  # noqa: E402
from etcdbench import cli, cost, load, procstat, report, runs, scale, targets  # noqa: E402
from etcdbench.runs import RunSpec  # noqa: E402

SAMPLE = """Running 10s test @ http://127.0.0.1:4001
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    30.12ms   10.01ms 150.00ms   70.00%
  16000 requests in 10.00s, 2.00MB read
Requests/sec:   1600.00
Transfer/sec:    204.80KB
VS_ETCD_RESULT {"requests":16000,"ok":15990,"non2xx":10,"misses":0,"cas_succeeded":0,"cas_failed":0,\
"duration_us":10000000,\
"errors":{"connect":0,"read":1,"write":0,"status":10,"timeout":2},\
"latency_us":{"p50":28500,"p90":41000,"p99":97250,"p999":140000,"mean":30120.5,"max":150000},\
"threads":2,"error_sample":"503 {\\"error\\": \\"no leader\\", \\"code\\": 14}"}
"""


def result(**over: Any) -> dict[str, Any]:
    line = json.dumps(
        {
            "requests": 1000,
            "ok": 1000,
            "non2xx": 0,
            "misses": 0,
            "cas_succeeded": 0,
            "cas_failed": 0,
            "duration_us": 10_000_000,
            "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0},
            "latency_us": {
                "p50": 10_000,
                "p90": 20_000,
                "p99": 40_000,
                "p999": 50_000,
                "mean": 12_000.0,
                "max": 60_000,
            },
            "threads": 2,
            "error_sample": "",
        }
        | over
    )
    return load.parse_wrk_output(load.RESULT_MARK + line)


def test_parse_wrk_output() -> None:
    r = load.parse_wrk_output(SAMPLE)
    assert r["requests"] == 16000 and r["ok"] == 15990 and r["non2xx"] == 10 and r["rejected"] == 0
    assert r["socket_errors"] == 3  # read + timeout; status errors are counted as non-2xx
    assert r["duration_s"] == 10.0
    assert r["throughput"] == pytest.approx(1599.0)  # 2xx answers per second
    assert r["p50_ms"] == 28.5 and r["p99_ms"] == 97.25
    assert r["error_sample"] == '503 {"error": "no leader", "code": 14}'
    assert load.run_has_errors(r)


def test_parse_wrk_output_without_result() -> None:
    with pytest.raises(ValueError, match="VS_ETCD_RESULT"):
        load.parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_combine_sums_counts_and_takes_worst_latency() -> None:
    parts = [
        result(
            requests=1000, ok=1000, latency_us={"p50": 10_000, "p90": 0, "p99": 30_000, "p999": 0, "mean": 0, "max": 0}
        ),
        result(
            requests=3000, ok=3000, latency_us={"p50": 20_000, "p90": 0, "p99": 50_000, "p999": 0, "mean": 0, "max": 0}
        ),
    ]
    c = load.combine(parts)
    assert c["requests"] == 4000 and c["throughput"] == pytest.approx(400.0)
    assert c["p50_ms"] == 20.0 and c["p99_ms"] == 50.0
    assert c["p50_ms_weighted"] == pytest.approx(17.5) and c["p99_ms_weighted"] == pytest.approx(45.0)
    assert not load.run_has_errors(c)


def test_split_connections() -> None:
    assert load.split_connections(64, 3) == [22, 21, 21]
    assert load.split_connections(64, 1) == [64]


def test_key_layout() -> None:
    assert load.key_bytes(0, 0, 999, 8) == b"\x00\x00\x00\x00\x00\x00\x03\xe7"
    assert len(load.key_bytes(5, 1, 2**32, 8)) == 8


def test_ratio_formatting() -> None:
    assert report.ratio(50, 100) == 0.5 and report.ratio(1, 0) is None and report.ratio(None, 3) is None
    assert report.fmt_ratio(0.5) == "0.50x" and report.fmt_ratio(0.042) == "0.042x" and report.fmt_ratio(None) == "n/a"
    assert report.fmt_ms(1.234) == "1.23" and report.fmt_ms(12.34) == "12.3" and report.fmt_ms(123.4) == "123"


def test_summary_and_table() -> None:
    runs = [RunSpec("write-1", "write", 1, "leader"), RunSpec("read-64", "read", 64, "leader")]
    results = []
    for rnd, (d_ok, e_ok) in enumerate(((1000, 4000), (1200, 4000)), 1):
        for system, ok in (("dkv", d_ok), ("etcd", e_ok)):
            r = load.combine([result(requests=ok, ok=ok)])
            results.append(r | {"run": "write-1", "system": system, "round": rnd})
    bad = load.combine([result(non2xx=3)])
    results.append(bad | {"run": "read-64", "system": "dkv", "round": 1})
    rows = report.summarize(results, runs)
    w = rows[0]
    assert w["dkv"]["throughput"] == pytest.approx(110.0)  # median of 100 and 120
    assert w["dkv"]["throughput_spread"] == pytest.approx(20 / 110)
    assert w["throughput_ratio"] == pytest.approx(110 / 400)
    assert w["p99_ratio"] == pytest.approx(1.0)
    assert rows[1]["etcd"] is None and rows[1]["dkv"]["errors"] == 1
    table = report.format_table(rows)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["run", "dkv", "req/s"]
    assert "110 ±9%" in lines[2] and "400" in lines[2] and "0.28x" in lines[2] and "1.00x" in lines[2]
    assert "ERRORS" in lines[3] and "n/a" in lines[3]


def test_summary_and_table_of_v3_runs_with_cas_and_a_skipped_system() -> None:
    specs = [r for r in runs.RUNS if r.name in ("v3-write-64", "v3-cas-16")]
    cas = load.combine([result(requests=900, ok=900, cas_succeeded=800, cas_failed=100)])
    results = [cas | {"run": "v3-cas-16", "system": "etcd", "round": 1}]
    why = "POST /v3/kv/range answered 404"
    skipped = [{"run": r.name, "system": "dkv", "round": 1, "reason": why} for r in specs]
    rows = report.summarize(results, specs, skipped)
    assert rows[0]["dkv"] is None and rows[0]["etcd"] is None and rows[0]["skipped"] == {"dkv": why}
    assert rows[1]["etcd"]["cas_succeeded_per_s"] == pytest.approx(80.0)
    assert rows[1]["etcd"]["cas_failed_per_s"] == pytest.approx(10.0)
    assert not rows[1]["etcd"]["errors"]  # a failed CAS is an answer
    table = report.format_table(rows)
    lines = table.splitlines()
    assert lines[2].split()[:2] == ["v3-write-64", "puts"] and "skipped" in lines[2]
    assert "skipped" in lines[3] and "90" in lines[3] and "CAS txns" in lines[3]
    assert "  v3-cas-16: etcd 80 succeeded/s, 10 failed/s" in lines
    assert f"skipped by dkv: {why}" in lines


def test_format_result() -> None:
    r = load.combine([result(requests=1000, ok=1000)])
    assert report.format_result(r) == "      100 req/s  p50   10.0 ms  p99   40.0 ms"
    r = load.combine([result(requests=10, ok=10, cas_succeeded=7, cas_failed=3, misses=1, error_sample="no kvs")])
    text = report.format_result(r)
    assert "CAS 7 succeeded, 3 failed" in text and "ERRORS: 0 non-2xx, 0 socket, 1 wrong reads no kvs" in text


def test_run_selection() -> None:
    names = [r.name for r in runs.select_runs("all")]
    assert names == [r.name for r in runs.RUNS] and len(set(names)) == len(names)
    v0 = runs.select_runs("v0")
    assert [r.name for r in v0] == ["write-1", "write-16", "write-64", "read-1", "read-16", "read-64", "write-64-all"]
    v3 = runs.select_runs("v3")
    assert all(r.name.startswith("v3-") and r.api == "v3" for r in v3)
    by_op: dict[str, set[int]] = {}
    for r in v3:
        by_op.setdefault(r.op, set()).add(r.connections)
    assert by_op["write"] >= {1, 16, 64} and by_op["read"] >= {1, 16, 64}
    assert by_op["range"] >= {16, 64} and by_op["cas"] >= {16, 64}
    assert [r.name for r in runs.select_runs("v3-cas-16, write-1,")] == ["write-1", "v3-cas-16"]
    with pytest.raises(ValueError, match="nope"):
        runs.select_runs("v3,nope")
    with pytest.raises(ValueError, match="no run"):
        runs.select_runs(",")
    assert runs.needs_v3(v3) and not runs.needs_v3(v0)
    targets = [r.name for r in runs.select_runs("targets")]
    assert sorted(targets) == sorted(runs.TARGET_RUNS) and len(targets) == 12
    assert {r.connections for r in runs.select_runs("targets")} == {1, 16, 64}


def test_wire_api_and_requests() -> None:
    """v0 runs speak each system's own API; v3 runs etcd's to both, the same
    bytes."""
    v0, v3 = runs.select_runs("write-1")[0], runs.select_runs("v3-write-1")[0]
    assert (v0.wire_api("v0"), v0.wire_api("v3"), v3.wire_api("v0"), v3.wire_api("v3")) == ("v0", "v3", "v3", "v3")
    method, path, body = load.put_request("v3", b"k", b"v")
    assert (method, path, json.loads(body)) == ("POST", "/v3/kv/put", {"key": "aw==", "value": "dg=="})
    assert load.put_request("v0", b"k", b"v") == ("POST", "/v0/kv", body)
    method, path, body = load.range_keys_request(258, 8, b"x")
    puts = [op["request_put"] for op in json.loads(body)["success"]]
    assert (method, path, len(puts)) == ("POST", "/v3/kv/txn", runs.RANGE_KEYS)
    keys = [_b64(put["key"]) for put in puts]
    assert keys[0] == b"\x00\x01\x00\x00\x00\x01\x02\x00" and keys[-1][-1] == runs.RANGE_KEYS - 1
    assert all(k[:-1] == load.range_prefix(258, 8) and len(k) == 8 for k in keys)


def test_command_line_runs_and_range_prefixes() -> None:
    assert [r.name for r in cli.parse_args(["--runs", "v3"]).run_specs] == [r.name for r in runs.select_runs("v3")]
    assert len(cli.parse_args(["--runs", "all"]).run_specs) == len(runs.RUNS)
    default = cli.parse_args([])
    assert [r.name for r in default.run_specs] == [r.name for r in runs.select_runs("targets")]
    assert (default.rounds, default.duration, default.warmup, default.scale) == (3, 3, 1, 0)
    assert default.range_prefixes == 100
    assert cli.parse_args(["--scale", "1000"]).scale == 1000
    assert cli.parse_args(["--scale", "1000", "--skip-scale"]).scale == 0
    bad_lines = (
        ["--runs", "v4"], ["--range-prefixes", "0"], ["--key-size", "6", "--range-prefixes", str(256**3 + 1)],
        ["--skip-compare"], ["--scale", "-1"],
    )  # fmt: skip
    for bad in bad_lines:
        with pytest.raises(SystemExit):
            cli.parse_args(bad)


def test_the_scale_runs_quota_holds_its_keys() -> None:
    """5 million 256-byte values need about 3.6 GiB of db: more than the
    default 2 GiB quota, which stopped such a load with NOSPACE halfway."""
    gib = 1 << 30
    assert scale.quota_bytes_for(10_000, 8, 256) == 2 * gib  # never below the default
    assert scale.quota_bytes_for(1_000_000, 8, 256) == 2 * gib
    assert scale.quota_bytes_for(5_000_000, 8, 256) == 5 * gib
    assert scale.quota_bytes_for(5_000_000, 8, 256) > 5_000_000 * 760  # the measured db bytes per key


def test_format_scale() -> None:
    figures = {
        "connections": 64,
        "load": {"keys_written": 200_010, "seconds": 80.0, "keys_per_s": 2500.1},
        "nodes": {
            "a": {"role": "leader", "rss_mb": 300.4, "rss_anon_mb": 90.2, "rss_file_mb": 210.2, "db_file_mb": 120.0},
            "b": {"role": "follower", "rss_mb": 280.0, "db_file_mb": 120.0},
        },
        "follower_restart": {"signal": "SIGKILL", "status_answers_s": 1.5, "caught_up_s": 1.6},
        "new_node": {"caught_up_s": 9.25, "status_answers_s": 1.2, "snapshot_index": 200_050},
    }
    text = scale.format_scale(figures)
    assert "200,010 keys loaded" in text and "9.25s" in text
    assert "node a (leader): RSS 300 MiB (90 anon, 210 file-mapped), db file 120 MiB" in text
    assert "node b (follower): RSS 280 MiB, db file 120 MiB" in text


def test_memory_mb_reads_proc() -> None:
    """RSS and its parts for a live process (this one); nothing for a gone one."""
    mem = procstat.memory_mb(os.getpid())
    assert set(mem) >= {"rss_mb", "rss_anon_mb", "rss_file_mb"} and mem["rss_mb"] > 1
    assert mem["rss_anon_mb"] + mem["rss_file_mb"] <= mem["rss_mb"] + 1
    assert procstat.memory_mb(2**22 + 12345) == {}


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=env)


def test_help_exits_0() -> None:
    out = run_script("--help")
    assert out.returncode == 0, out.stderr
    assert "--skip-scale" in out.stdout and "--rounds" in out.stdout
    assert "v3-cas-16" in out.stdout and "--range-prefixes" in out.stdout


def test_cost_help_and_bad_arguments() -> None:
    out = subprocess.run([sys.executable, str(COST_SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--api {v0,v3}" in out.stdout and "--writes" in out.stdout
    args = cost.parse_args([])
    assert (args.api, args.writes, args.connections, args.key_size, args.value_size) == ("v0", 5000, 16, 8, 256)
    assert cost.parse_args(["--api", "v3", "--warmup", "0"]).api == "v3"
    for bad in (["--api", "v1"], ["--writes", "0"], ["--connections", "0"], ["--key-size", "5"], ["--idle", "-1"]):
        with pytest.raises(SystemExit):
            cost.parse_args(bad)


def test_cost_default_out() -> None:
    out = cost.default_out("v3", "0123456789abcdef", True)
    assert out.name == "write_cost-v3-0123456789-modified.json" and out.parent.name == "results"
    assert cost.default_out("v0", "", False).name == "write_cost-v0-unknown.json"


def test_cpu_seconds_of_this_process() -> None:
    before = cost.cpu_seconds(os.getpid())
    sum(i * i for i in range(300_000))
    assert cost.cpu_seconds(os.getpid()) >= before > 0


def test_group_cpu_seconds_leaves_out_gone_processes() -> None:
    before = procstat.group_cpu_seconds({"me": os.getpid(), "gone": 2**22 + 12345})
    assert set(before) == {"me"}
    sum(i * i for i in range(300_000))
    after = procstat.group_cpu_seconds({"me": os.getpid()})
    assert procstat.cpu_used(before, after) >= 0
    assert procstat.cpu_used({"a": 1.0, "b": 2.0}, {"a": 1.5, "c": 9.0}) == pytest.approx(0.5)


def _agg(throughput: float, p99: float, cpu: float | None, errors: int = 0) -> dict[str, Any]:
    return {"rounds": 3, "errors": errors, "throughput": throughput, "p99_ms": p99, "cpu_s_per_10k": cpu}


def _row(run: str, d: dict[str, Any] | None, e: dict[str, Any] | None) -> dict[str, Any]:
    def r(field: str) -> float | None:
        return report.ratio(d and d[field], e and e[field])

    return {"run": run, "dkv": d, "etcd": e, "throughput_ratio": r("throughput"), "p99_ratio": r("p99_ms"),
            "cpu_ratio": r("cpu_s_per_10k")}  # fmt: skip


def test_targets_on_a_fake_summary() -> None:
    """Each target judges its ratio on its runs: bounds are inclusive, a run
    not measured (or with errors) is n/a, the table shows every verdict."""
    rows = [_row(name, _agg(1000, 10, 2.0), _agg(1000, 10, 2.0)) for name in runs.TARGET_RUNS]
    by = {row["run"]: row for row in rows}
    by["write-64"].update(_row("write-64", _agg(1500, 5, 3.0), _agg(1000, 10, 2.0)))  # exactly 1.5x, CPU 1.5x
    by["v3-read-64"].update(_row("v3-read-64", _agg(1999, 10.5, 3.1), _agg(1000, 10, 2.0)))  # < 2x, p99 and CPU over
    by["read-1"].update(_row("read-1", _agg(990, 1, 1.0), None))  # etcd not measured
    by["v3-write-16"].update(_row("v3-write-16", _agg(2000, 1, 1.0, errors=1), _agg(1000, 10, 2.0)))
    verdicts = targets.evaluate(rows)
    got = {(v["target"], v["run"]): v["verdict"] for v in verdicts}
    assert len(verdicts) == 12 + 2 + 2 + 8 + 12
    assert got[("throughput >= etcd's", "write-1")] == "PASS"  # 1.0x counts
    assert got[("writes >= 1.5x at 64 conn", "write-64")] == "PASS"
    assert got[("writes >= 1.5x at 64 conn", "v3-write-64")] == "FAIL"
    assert got[("lin. reads >= 2x at 64 conn", "v3-read-64")] == "FAIL"
    assert got[("p99 <= etcd's", "v3-read-64")] == "FAIL" and got[("p99 <= etcd's", "write-64")] == "PASS"
    assert got[("CPU per op <= 1.5x etcd's", "write-64")] == "PASS"
    assert got[("CPU per op <= 1.5x etcd's", "v3-read-64")] == "FAIL"
    assert got[("throughput >= etcd's", "read-1")] == "n/a"
    assert got[("throughput >= etcd's", "v3-write-16")] == "n/a"
    assert ("p99 <= etcd's", "write-1") not in got  # p99 only at 16 and 64 connections
    assert got[("lin. reads >= 2x at 64 conn", "read-64")] == "FAIL"  # 1.0x
    # n/a: read-1 (throughput, CPU), v3-write-16 (throughput, p99, CPU)
    assert targets.counts(verdicts) == {"PASS": 26, "FAIL": 5, "n/a": 5}
    text = targets.format_targets(verdicts, rounds=3)
    lines = text.splitlines()
    assert lines[0].startswith("TARGET TABLE") and "3 rounds" in lines[0]
    line = next(x for x in lines if x.startswith("writes >= 1.5x") and " write-64 " in x)
    assert "1,500 req/s" in line and "1.50x" in line and ">= 1.5x" in line and line.endswith("PASS")
    assert any("read-1" in x and "n/a (not measured)" in x for x in lines)
    assert any("v3-write-16" in x and "n/a (errors in a round)" in x for x in lines)
    assert lines[-1].startswith("targets: 26 PASS, 5 FAIL, 5 n/a") and "exit status" in lines[-1]


def test_summary_carries_cpu_per_request() -> None:
    spec = [RunSpec("write-16", "write", 16, "leader")]
    results = []
    for rnd, (d, e) in enumerate(((4.0, 2.0), (6.0, 2.0), (5.0, None)), 1):
        for system, cpu in (("dkv", d), ("etcd", e)):
            extra = {"run": "write-16", "system": system, "round": rnd, "cpu_s_per_10k": cpu}
            results.append(load.combine([result()]) | extra)
    [row] = report.summarize(results, spec)
    assert row["dkv"]["cpu_s_per_10k"] == 5.0 and row["etcd"]["cpu_s_per_10k"] == 2.0
    assert row["cpu_ratio"] == pytest.approx(2.5)
    throughput = row["dkv"]["throughput"]
    # Cores: the median over rounds of req/s x CPU per request (the round without a CPU figure left out).
    assert row["dkv"]["cores"] == pytest.approx(throughput * 5.0 / 10_000)
    assert row["etcd"]["cores"] == pytest.approx(throughput * 2.0 / 10_000)
    table = report.format_table([row])
    assert "5.00" in table and "2.50x" in table
    assert f"{throughput * 5.0 / 10_000:.2f}" in table and "cores" in table.splitlines()[0]


def test_lmdb_usage_counts_pages_of_named_dbs(tmp_path: Path) -> None:
    """Pages in use grow with the entries of a named db; a db that appears
    counts from zero; the file's sparse size is not what is counted."""
    path = tmp_path / "x.db"
    with lmdb.open(str(path), subdir=False, max_dbs=4, map_size=1 << 26) as env:
        a = env.open_db(b"a")
        with env.begin(write=True) as txn:
            txn.put(b"k", b"v", db=a)
    before = cost.lmdb_usage(path)  # (LMDB refuses a second open of an env in one process)
    with lmdb.open(str(path), subdir=False, max_dbs=4, map_size=1 << 26) as env:
        b = env.open_db(b"b")
        with env.begin(write=True) as txn:
            for i in range(1000):
                txn.put(b"%08d" % i, b"x" * 256, db=b)
    after = cost.lmdb_usage(path)
    assert before["dbs"] == {"a": {"pages": 1, "entries": 1}}
    assert before["used_pages"] == 2 + 1 + 1  # meta pages, the main db's one leaf, a's leaf
    assert after["dbs"]["b"]["entries"] == 1000 and after["dbs"]["b"]["pages"] > 60
    assert after["used_pages"] == 2 + 1 + 1 + after["dbs"]["b"]["pages"]
    g = cost.growth_per_write(before, after, 1000)
    assert g["dbs"]["a"] == {"bytes": 0.0, "entries": 0.0} and g["dbs"]["b"]["entries"] == 1.0
    assert 264 < g["dbs"]["b"]["bytes"] < 600  # 256-byte values and 8-byte keys on 4 KiB pages
    assert g["used"] == pytest.approx(g["dbs"]["b"]["bytes"])
    assert g["high_water"] >= g["used"]


def test_format_cost() -> None:
    per = {"used": 780.4, "high_water": 790.0, "dbs": {"kv.0": {"bytes": 460.1, "entries": 1.0}}}
    figures = {
        "writes": 5000, "path": "/v0/kv", "connections": 16, "key_size": 8, "value_size": 256, "leader": "a",
        "nodes": ["a", "b"], "writes_per_s": 1500.4, "leader_cpu_us_per_write": 380.25,
        "all_cpu_us_per_write": 700.5, "cpu_us_per_write": {"a": 380.25, "b": 320.25}, "idle_us_per_write": 12.0,
        "bytes_per_write": {"a": per, "b": per | {"dbs": {}}}, "log_compacted": True, "leader_changed": False,
    }  # fmt: skip
    text = cost.format_cost(figures)
    assert "5,000 writes through POST /v0/kv, 16 connections" in text and "1,500 writes/s" in text
    assert "leader 380.2 µs, all members 700.5 µs (a 380.2, b 320.2; of it idle about 12.0)" in text
    row = next(line for line in text.splitlines() if "db kv.0" in line)
    assert row.split()[2:] == ["460.1", "B", "(1.00", "entries)", "-"]
    assert "780.4 B" in text and "790.0 B" in text and "a (leader)" in text
    assert "the log was compacted" in text and "leader changed" not in text


def test_missing_tools_exit_2_with_install_hint(tmp_path: Path) -> None:
    out = run_script("--etcd", str(tmp_path / "no-etcd"), "--wrk", str(tmp_path / "no-wrk"), "--out", str(tmp_path))
    assert out.returncode == 2
    assert "apt-get install etcd-server wrk" in out.stderr
    assert not (tmp_path / "vs_etcd.json").exists()


class _Stub(http.server.BaseHTTPRequestHandler):
    """Answers like dkv's /v0 or etcd's gateway, and records what it was
    sent: every read finds a value; a range finds RANGE_KEYS keys; a txn
    is judged by a small model of etcd's store (``keys``: key -> its
    mod_revision), with ``stale_every`` > 0 making every such txn compare
    fail as if another client had written the key."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, bytes]] = []
    keys: dict[str, int] = {}
    revision = 1
    stale_every = 0
    lock = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(("POST", self.path, body))
        doc = json.loads(body)
        if self.path == "/v3/kv/txn":
            with self.lock:
                self._answer(200, self._txn(doc))
        elif self.path == "/v3/kv/range" and "range_end" in doc:
            self._answer(200, {"kvs": [{}] * runs.RANGE_KEYS, "count": str(runs.RANGE_KEYS)})
        else:
            self._answer(200, {"kvs": [{}]} if self.path == "/v3/kv/range" else {})

    def _txn(self, doc: dict[str, Any]) -> dict[str, Any]:
        [cmp] = doc["compare"]
        assert (cmp["target"], cmp["result"]) == ("MOD", "EQUAL")
        key = cmp["key"]
        stale = type(self).stale_every and len(self.seen) % type(self).stale_every == 0
        ok = not stale and self.keys.get(key, 0) == int(cmp["mod_revision"])
        if ok:
            type(self).revision += 1
            self.keys[key] = self.revision
        answers = []
        for op in doc["success" if ok else "failure"]:
            if "request_put" in op:
                answers.append({"response_put": {"header": {"revision": str(self.revision)}}})
            else:
                kv = {"key": op["request_range"]["key"], "mod_revision": str(self.keys.get(key, 0))}
                answers.append({"response_range": {"kvs": [kv], "count": "1"}})
        return {"header": {"revision": str(self.revision)}, "responses": answers} | ({"succeeded": True} if ok else {})

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.seen.append(("GET", self.path, b""))
        self._answer(200, {})


class _StubServer(http.server.ThreadingHTTPServer):
    """Says nothing of a client that hangs up on it (wrk closes its
    connections at the end of each run, answers in flight); any other
    error in a handler is printed as the standard server does."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = _StubServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def stub() -> Iterator[str]:
    _Stub.seen, _Stub.keys, _Stub.revision, _Stub.stale_every = [], {}, 1, 0
    server, url = _serve(_Stub)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4))


def _job(url: str, api: str, op: str, **over: Any) -> load.WrkJob:
    settings: dict[str, Any] = dict(
        url=url, system="stub", api=api, op=op, connections=2, threads=2, duration=1, timeout=2, key_size=8,
        value_size=256, nkeys=50, tag=7,
    )  # fmt: skip
    return load.WrkJob(**(settings | over))


needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


@needs_wrk
@pytest.mark.parametrize("api", ["v0", "v3"])
def test_lua_script_against_stub(stub: str, api: str) -> None:
    """One second of writes then of reads: the requests have the documented
    shape and done() prints a result the driver parses."""
    [w] = load.run_wrk("wrk", [_job(stub, api, "write")])
    assert w["requests"] > 0 and w["ok"] == w["requests"] and not load.run_has_errors(w)
    puts = [s for s in _Stub.seen if s[0] == "POST"]
    assert puts and all(s[1] == ("/v0/kv" if api == "v0" else "/v3/kv/put") for s in puts)
    keys = set()
    for _, _, body in puts:
        doc = json.loads(body)
        key, value = _b64(doc["key"]), _b64(doc["value"])
        assert len(key) == 8 and key[0] == 7 and key[1] in (0, 1) and len(value) == 256
        keys.add(key)
    assert len(keys) == len(puts)  # unique keys per write

    _Stub.seen.clear()
    [r] = load.run_wrk("wrk", [_job(stub, api, "read", tag=8)])
    assert r["requests"] > 0 and r["misses"] == 0 and not load.run_has_errors(r)
    for method, path, body in _Stub.seen:
        if api == "v0":
            assert method == "GET" and path.startswith("/v0/kv/key/")
            key = _b64(path.rsplit("/", 1)[1])
        else:
            assert method == "POST" and path == "/v3/kv/range" and set(json.loads(body)) == {"key"}
            key = _b64(json.loads(body)["key"])
        assert key[:2] == b"\0\0" and int.from_bytes(key[2:], "big") < 50


@needs_wrk
def test_lua_range_requests_cover_one_prefix(stub: str) -> None:
    [r] = load.run_wrk("wrk", [_job(stub, "v3", "range", nkeys=300)])
    assert r["requests"] > 0 and not load.run_has_errors(r)
    prefixes = set()
    for _, path, body in _Stub.seen:
        doc = json.loads(body)
        start, end = _b64(doc["key"]), _b64(doc["range_end"])
        assert path == "/v3/kv/range" and set(doc) == {"key", "range_end"}
        p = int.from_bytes(start[2:], "big")
        assert start == load.range_prefix(p, 8) and p < 300
        assert end == (load.range_prefix(p + 1, 8))  # the prefix plus one
        prefixes.add(p)
    assert len(prefixes) > 1


@needs_wrk
@pytest.mark.parametrize("stale_every", [0, 3])
def test_lua_cas_keeps_its_keys_and_counts_outcomes(stub: str, stale_every: int) -> None:
    """Against the model: with no other writer every CAS succeeds (the
    first on a key compares mod_revision 0, a key not yet written); when
    every third txn fails, the failures are counted as answers and the
    next attempt on the key succeeds again."""
    _Stub.stale_every = stale_every
    [r] = load.run_wrk("wrk", [_job(stub, "v3", "cas", connections=4)])
    assert r["requests"] > 0 and r["ok"] == r["cas_succeeded"] + r["cas_failed"] and not load.run_has_errors(r)
    if stale_every:
        assert r["cas_failed"] > 0 and r["cas_succeeded"] > r["cas_failed"]
    else:
        assert r["cas_failed"] == 0 and r["cas_succeeded"] > 0
    assert r["cas_succeeded_per_s"] == pytest.approx(r["cas_succeeded"] / r["duration_s"])
    txns = [json.loads(body) for _, path, body in _Stub.seen if path == "/v3/kv/txn"]
    keys = {t["compare"][0]["key"] for t in txns}
    # A key per connection; wrk also calls request() once, unanswered, to check the script.
    assert len(keys) <= 4 + 1
    for t in txns:
        key = t["compare"][0]["key"]
        put = t["success"][0]["request_put"]
        assert put["key"] == key and len(_b64(put["value"])) == 256
        assert t["success"][1] == t["failure"][0] == {"request_range": {"key": key, "keys_only": True}}


@needs_wrk
def test_lua_script_reports_non_2xx_and_wrong_answers() -> None:
    """A server that answers 503 to /v0, no kvs to a v3 read, too few keys to
    a range and a txn answer without our key."""

    class Failing(_Stub):
        def do_POST(self) -> None:  # noqa: N802
            doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self._answer(200, {"header": {}, "count": "99"} if "range_end" in doc else {"header": {}})

        def do_GET(self) -> None:  # noqa: N802
            self._answer(503, {"error": "no leader", "code": 14})

    server, url = _serve(Failing)
    try:
        common = dict(connections=1, threads=1, value_size=16, nkeys=10, tag=1)
        [d] = load.run_wrk("wrk", [_job(url, "v0", "read", **common)])
        [e] = load.run_wrk("wrk", [_job(url, "v3", "read", **common)])
        [g] = load.run_wrk("wrk", [_job(url, "v3", "range", **common)])
        [c] = load.run_wrk("wrk", [_job(url, "v3", "cas", **common)])
    finally:
        server.shutdown()
        server.server_close()
    assert d["non2xx"] == d["requests"] > 0 and d["ok"] == 0 and "no leader" in d["error_sample"]
    assert d["rejected"] == 0  # a 503 is not a 429
    assert e["misses"] == e["requests"] > 0 and e["non2xx"] == 0
    assert g["misses"] == g["requests"] > 0 and g["error_sample"].startswith("count is not 100")
    assert c["misses"] == c["requests"] > 0 and c["cas_succeeded"] == c["cas_failed"] == 0
    assert all(load.run_has_errors(x) for x in (d, e, g, c))


def test_v3_probe() -> None:
    class NoV3(_Stub):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self._answer(404, {"error": "no route /v3/kv/range", "code": 5})

    ok, ok_url = _serve(_Stub)
    missing, missing_url = _serve(NoV3)
    try:
        assert load.v3_probe(ok_url) is None
        why = load.v3_probe(missing_url)
        assert why is not None and why.startswith("POST /v3/kv/range answered 404") and "no route" in why
    finally:
        for server in (ok, missing):
            server.shutdown()
            server.server_close()
    assert (why := load.v3_probe(missing_url)) is not None and "failed" in why  # nothing listens now


@needs_wrk
def test_lua_script_counts_429_as_rejected() -> None:
    """A 429 (load shed) is a non-2xx answer, and counted apart as rejected."""

    class Shedding(_Stub):
        def do_GET(self) -> None:  # noqa: N802
            self._answer(429, {"error": "etcdserver: too many requests", "code": 8})

    server, url = _serve(Shedding)
    try:
        [r] = load.run_wrk("wrk", [_job(url, "v0", "read", connections=1, threads=1, nkeys=10, tag=1)])
    finally:
        server.shutdown()
        server.server_close()
    assert r["rejected"] == r["non2xx"] == r["requests"] > 0 and load.run_has_errors(r)
    assert load.combine([r, r])["rejected"] == 2 * r["rejected"]
