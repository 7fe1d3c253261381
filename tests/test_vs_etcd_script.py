"""benchmarks/vs_etcd.py and its package, etcdbench, without etcd or a dkv
cluster: parsing wrk's Lua output, combining parallel results, the summary
and table, the command line, and (when wrk is installed) the Lua script
against a stub server for about a second."""

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
sys.path.insert(0, str(BENCHMARKS))  # the script's package, etcdbench

from etcdbench import load, report, scale  # noqa: E402
from etcdbench.runs import RunSpec  # noqa: E402

SAMPLE = """Running 10s test @ http://127.0.0.1:4001
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    30.12ms   10.01ms 150.00ms   70.00%
  16000 requests in 10.00s, 2.00MB read
Requests/sec:   1600.00
Transfer/sec:    204.80KB
VS_ETCD_RESULT {"requests":16000,"ok":15990,"non2xx":10,"misses":0,"duration_us":10000000,\
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
    assert r["requests"] == 16000 and r["ok"] == 15990 and r["non2xx"] == 10
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
    mem = scale.memory_mb(os.getpid())
    assert set(mem) >= {"rss_mb", "rss_anon_mb", "rss_file_mb"} and mem["rss_mb"] > 1
    assert mem["rss_anon_mb"] + mem["rss_file_mb"] <= mem["rss_mb"] + 1
    assert scale.memory_mb(2**22 + 12345) == {}


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=env)


def test_help_exits_0() -> None:
    out = run_script("--help")
    assert out.returncode == 0, out.stderr
    assert "--skip-scale" in out.stdout and "--rounds" in out.stdout


def test_missing_tools_exit_2_with_install_hint(tmp_path: Path) -> None:
    out = run_script("--etcd", str(tmp_path / "no-etcd"), "--wrk", str(tmp_path / "no-wrk"), "--out", str(tmp_path))
    assert out.returncode == 2
    assert "apt-get install etcd-server wrk" in out.stderr
    assert not (tmp_path / "vs_etcd.json").exists()


class _Stub(http.server.BaseHTTPRequestHandler):
    """Answers like etcd's gateway or dkv, and records what it was sent."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, bytes]] = []

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
        self._answer(200, {"kvs": [{}]} if self.path == "/v3/kv/range" else {})

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.seen.append(("GET", self.path, b""))
        self._answer(200, {})


@pytest.fixture
def stub() -> Iterator[str]:
    _Stub.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4))


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
@pytest.mark.parametrize("system", ["dkv", "etcd"])
def test_lua_script_against_stub(stub: str, system: str) -> None:
    """One second of writes then of reads: the requests have the documented
    shape and done() prints a result the driver parses."""
    common = dict(
        url=stub, system=system, connections=2, threads=2, duration=1, timeout=2, key_size=8, value_size=256, nkeys=50
    )
    [w] = load.run_wrk("wrk", [load.WrkJob(op="write", tag=7, **common)])
    assert w["requests"] > 0 and w["ok"] == w["requests"] and not load.run_has_errors(w)
    puts = [s for s in _Stub.seen if s[0] == "POST"]
    assert puts and all(s[1] == ("/v0/kv" if system == "dkv" else "/v3/kv/put") for s in puts)
    keys = set()
    for _, _, body in puts:
        doc = json.loads(body)
        key, value = _b64(doc["key"]), _b64(doc["value"])
        assert len(key) == 8 and key[0] == 7 and key[1] in (0, 1) and len(value) == 256
        keys.add(key)
    assert len(keys) == len(puts)  # unique keys per write

    _Stub.seen.clear()
    [r] = load.run_wrk("wrk", [load.WrkJob(op="read", tag=8, **common)])
    assert r["requests"] > 0 and r["misses"] == 0 and not load.run_has_errors(r)
    for method, path, body in _Stub.seen:
        if system == "dkv":
            assert method == "GET" and path.startswith("/v0/kv/key/")
            key = _b64(path.rsplit("/", 1)[1])
        else:
            assert method == "POST" and path == "/v3/kv/range"
            key = _b64(json.loads(body)["key"])
        assert key[:2] == b"\0\0" and int.from_bytes(key[2:], "big") < 50


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_lua_script_reports_non_2xx_and_empty_reads() -> None:
    """A server that answers 503 to dkv and no kvs to etcd's range."""

    class Failing(_Stub):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self._answer(200, {"header": {}})

        def do_GET(self) -> None:  # noqa: N802
            self._answer(503, {"error": "no leader", "code": 14})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        common = dict(
            url=url,
            op="read",
            connections=1,
            threads=1,
            duration=1,
            timeout=2,
            key_size=8,
            value_size=16,
            nkeys=10,
            tag=1,
        )
        [d] = load.run_wrk("wrk", [load.WrkJob(system="dkv", **common)])
        [e] = load.run_wrk("wrk", [load.WrkJob(system="etcd", **common)])
    finally:
        server.shutdown()
        server.server_close()
    assert d["non2xx"] == d["requests"] > 0 and d["ok"] == 0 and "no leader" in d["error_sample"]
    assert e["misses"] == e["requests"] > 0 and e["non2xx"] == 0
    assert load.run_has_errors(d) and load.run_has_errors(e)
