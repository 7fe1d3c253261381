"""benchmarks/watch_fanout.py, benchmarks/lease_keepalive.py and
write_cost.py --idempotency (issue 13's speed figures): their command
lines, arithmetic and tables without any cluster; the gRPC stream helpers
against in-process gRPC servers (one that serves nothing, one fake Lease
service); and one small real run of each gRPC script against etcd
(process tests, about 10 s together; the lease run
also starts dkv, which is skipped while it does not serve Lease)."""

from __future__ import annotations

import http.server
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from dkv.pb import etcd_kv_pb2 as mvccpb
from dkv.pb import etcd_rpc_pb2 as rpc
from dkv.pb import etcd_rpc_pb2_grpc as rpc_grpc
from dkv.testing.etcd_cluster import etcd_binary
from dkv.testing.launcher import child_env
from dkv.testing.process import run_to_exit

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the scripts' package, etcdbench

from etcdbench import cost, fanout, keepalive, load, sides  # noqa: E402
from etcdbench.grpc_streams import NotServed, open_channel, prefix_end, probe_lease, probe_watch  # noqa: E402
from etcdbench.stats import Histogram, fmt_ms, markdown_table  # noqa: E402

# -- the shared parts ------------------------------------------------------------------


def test_histogram_percentiles_within_one_percent() -> None:
    h = Histogram()
    for v in range(1, 10_001):  # 1 .. 10,000 µs
        h.add(float(v))
    assert h.count == 10_000 and h.max == 10_000.0
    assert h.percentile(50) == pytest.approx(5000, rel=0.011)
    assert h.percentile(99) == pytest.approx(9900, rel=0.011)
    assert h.percentile(100) == 10_000.0
    assert Histogram().percentile(99) is None


def test_histogram_merges_and_travels_as_a_dict() -> None:
    a, b = Histogram(), Histogram()
    for _ in range(99):
        a.add(0.5)  # below 1: bucket 0
    b.add(2000.0)
    c = Histogram.from_dict(json.loads(json.dumps(b.as_dict())))  # through a pipe or a JSON file
    a.merge(c)
    assert a.count == 100 and a.max == 2000.0
    assert a.percentile(99) == 1.0 and a.percentile(100) == 2000.0


def test_fmt_ms_and_markdown_table() -> None:
    assert [fmt_ms(x) for x in (None, 420.0, 3100.0, 250_400.0, 1_234_000.0)] == ["-", "0.42", "3.1", "250", "1,234"]
    table = markdown_table(["system", "n"], [["etcd", "1"], ["dkv", "22"]], right=[False, True])
    assert table.splitlines() == ["| system | n |", "| --- | ---: |", "| etcd | 1 |", "| dkv | 22 |"]


def test_prefix_end_as_etcd() -> None:
    assert prefix_end(b"a/") == b"a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


def test_parse_systems() -> None:
    assert sides.parse_systems("dkv,etcd") == ["dkv", "etcd"]
    assert sides.parse_systems(" etcd ,etcd") == ["etcd"]
    for bad in ("", "consul", "etcd,zk"):
        with pytest.raises(ValueError):
            sides.parse_systems(bad)


class _FakeCluster:
    system = "x"
    own_api = "v3"
    closed = 0

    def __enter__(self) -> _FakeCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        _FakeCluster.closed += 1

    def start(self, timeout: float = 60.0) -> None:
        pass


def test_each_system_skips_a_system_that_does_not_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each system on a cluster of its own, closed after; NotServed makes a
    skipped row and a line, and the next system runs all the same."""
    monkeypatch.setattr(sides, "open_cluster", lambda system, args: _FakeCluster())
    _FakeCluster.closed = 0

    def measure(cluster: Any, system: str, args: Any) -> list[dict[str, Any]]:
        if system == "dkv":
            raise NotServed("dkv does not serve Watch yet (Method not found!)")
        return [{"system": system, "n": 1}, {"system": system, "n": 2}]

    args = fanout.parse_args(["--systems", "dkv,etcd"])
    rows = sides.each_system(args, measure)
    assert rows == [
        {"system": "dkv", "skipped": "dkv does not serve Watch yet (Method not found!)"},
        {"system": "etcd", "n": 1},
        {"system": "etcd", "n": 2},
    ]
    assert _FakeCluster.closed == 2


@pytest.fixture
def grpc_server() -> Iterator[tuple[grpc.Server, str]]:
    """An in-process gRPC server on a free port, no service yet; started by the test."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    port = server.add_insecure_port("127.0.0.1:0")
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def test_probes_say_not_served_on_unimplemented(grpc_server: tuple[grpc.Server, str]) -> None:
    server, address = grpc_server
    server.start()
    channel = open_channel(address)
    try:
        with pytest.raises(NotServed, match="^dkv does not serve Watch yet"):
            probe_watch(channel, "dkv")
        with pytest.raises(NotServed, match="^dkv does not serve Lease yet"):
            probe_lease(channel, "dkv")
    finally:
        channel.close()


class FakeLease(rpc_grpc.LeaseServicer):
    """Grants IDs 1, 2, ...; answers each keep-alive in order with TTL 60,
    but TTL 0 for ID 13 (a lease it forgot)."""

    def __init__(self) -> None:
        self.next_id = 0
        self.lock = threading.Lock()
        self.revoked: list[int] = []

    def LeaseGrant(self, request: Any, context: Any) -> rpc.LeaseGrantResponse:  # noqa: N802 - gRPC's name
        with self.lock:
            self.next_id += 1
            return rpc.LeaseGrantResponse(ID=self.next_id, TTL=request.TTL)

    def LeaseRevoke(self, request: Any, context: Any) -> rpc.LeaseRevokeResponse:  # noqa: N802
        self.revoked.append(request.ID)
        return rpc.LeaseRevokeResponse()

    def LeaseKeepAlive(self, request_iterator: Any, context: Any) -> Iterator[rpc.LeaseKeepAliveResponse]:  # noqa: N802
        for req in request_iterator:
            yield rpc.LeaseKeepAliveResponse(ID=req.ID, TTL=0 if req.ID == 13 else 60)


def test_grant_and_keep_alive_against_a_fake_lease_service(grpc_server: tuple[grpc.Server, str]) -> None:
    server, address = grpc_server
    fake = FakeLease()
    rpc_grpc.add_LeaseServicer_to_server(fake, server)
    server.start()
    channel = open_channel(address)
    try:
        probe_lease(channel, "fake")
        assert fake.revoked == [1]  # the probe cleans up after itself
        stub = rpc_grpc.LeaseStub(channel)
        ids, granted = keepalive.grant_all(stub, 50, ttl=60, concurrency=8)
        kept = keepalive.keep_alive(stub, ids, streams=3, window=4, duration=0.5)
    finally:
        channel.close()
    assert sorted(ids) == list(range(2, 52)) and granted["grants"] == 50 and granted["grants_per_s"] > 0
    assert granted["grant_p99_us"] >= granted["grant_p50_us"] > 0
    assert kept["keepalives"] > 50 and kept["mismatched_answers"] == 0 and kept["stream_errors"] == []
    assert kept["renewals_per_lease"] == pytest.approx(kept["keepalives"] / 50)
    assert 0 < kept["expired_answers"] < kept["keepalives"]  # ID 13 answered TTL 0
    assert kept["keepalive_p99_us"] >= kept["keepalive_p50_us"] > 0 and kept["client_cpu_fraction"] > 0


# -- watch_fanout ----------------------------------------------------------------------


def test_fanout_arguments() -> None:
    args = fanout.parse_args([])
    assert args.watcher_counts == [1, 100, 1000] and args.rate == 1000 and args.systems == ["dkv", "etcd"]
    assert (args.per_stream, args.procs, args.target) == (100, 2, "leader")
    args = fanout.parse_args(["--watchers", "10,100", "--systems", "etcd", "--target", "follower"])
    assert args.watcher_counts == [10, 100] and args.systems == ["etcd"] and args.target == "follower"
    for bad in (["--watchers", "x"], ["--watchers", "0"], ["--rate", "0"], ["--value-size", "7"],
                ["--systems", "zk"], ["--target", "all"], ["--drain", "-1"]):  # fmt: skip
        with pytest.raises(SystemExit):
            fanout.parse_args(bad)


def test_plan_streams_shares_streams_over_processes() -> None:
    assert fanout.plan_streams(1, 100, 2) == [[1]]
    assert fanout.plan_streams(100, 100, 2) == [[100]]
    assert fanout.plan_streams(1000, 100, 2) == [[100] * 5, [100] * 5]
    assert fanout.plan_streams(250, 100, 4) == [[100], [100], [50]]


def _event(rev: int, sent_ns: int) -> mvccpb.Event:
    return mvccpb.Event(kv=mvccpb.KeyValue(key=b"k%d" % rev, mod_revision=rev, value=sent_ns.to_bytes(8, "big") + b"x"))


def test_stream_tally_counts_latency_and_order() -> None:
    t = fanout._StreamTally()
    t.take(rpc.WatchResponse(watch_id=0, created=True), 0)
    t.take(rpc.WatchResponse(watch_id=1, created=True), 0)
    t.take(rpc.WatchResponse(watch_id=0, events=[_event(5, 1_000_000), _event(6, 2_000_000)]), 3_000_000)
    t.take(rpc.WatchResponse(watch_id=1, events=[_event(5, 1_000_000)]), 4_000_000)
    t.take(rpc.WatchResponse(watch_id=1, events=[_event(5, 1_000_000)]), 5_000_000)  # a repeat
    assert t.created == 2 and t.events == 4 and t.out_of_order == 1
    assert t.watchers == {0: [2, 6], 1: [2, 5]}
    assert (t.first_ns, t.last_ns) == (3_000_000, 5_000_000)
    assert t.latency.percentile(50) == pytest.approx(2000, rel=0.011)  # µs: 3 ms - 1 ms
    summed = fanout.summed_tallies([t, fanout._StreamTally()])
    assert summed["events"] == 4 and summed["per_watcher"] == [2, 2] and summed["first_ns"] == 3_000_000


def _written(acked: int) -> dict[str, Any]:
    put = Histogram()
    put.add(1500.0)
    return {
        "puts": acked, "acked": acked, "put_error_count": 0, "put_errors": [], "writes_per_s": 990.0,
        "start_ns": 0, "last_ack_ns": 2_000_000_000, "put_latency": put.as_dict(),
    }  # fmt: skip


def test_fanout_figures() -> None:
    lat = Histogram()
    for _ in range(10):
        lat.add(3000.0)
    part = {
        "events": 20, "latency": lat.as_dict(), "first_ns": 1, "last_ns": 4_000_000_000, "per_watcher": [10, 10],
        "out_of_order": 0, "created": 2, "canceled": 0, "errors": [],
    }  # fmt: skip
    r = fanout.fanout_figures(4, [[2], [2]], _written(10), [part, part | {"events": 10, "per_watcher": [10, 0]}])
    assert (r["watchers"], r["streams"], r["procs"], r["events"], r["expected_events"]) == (4, 2, 2, 30, 40)
    assert r["delivered_fraction"] == 0.75 and r["events_per_s"] == pytest.approx(7.5)
    assert r["watchers_complete"] == 3 and r["drain_s"] == pytest.approx(2.0)
    assert r["latency_p99_us"] == pytest.approx(3000, rel=0.011) and r["put_p99_us"] == pytest.approx(1500, rel=0.011)


def test_fanout_table_shows_skips_and_problems() -> None:
    row = {
        "system": "etcd", "watchers": 1000, "streams": 10, "procs": 2, "target": "follower", "writes_per_s": 998.4,
        "events_per_s": 123456.0, "delivered_fraction": 0.5, "latency_p50_us": 900.0, "latency_p99_us": 25000.0,
        "put_p99_us": 4000.0, "drain_s": -0.01, "put_error_count": 0, "put_errors": [], "out_of_order": 2,
        "canceled": 0, "stream_errors": [], "watchers_complete": 990, "receiver_cpu_fraction": [0.954, 0.5],
    }  # fmt: skip
    text = fanout.format_table([{"system": "dkv", "skipped": "dkv does not serve Watch yet (x)"}, row])
    lines = text.splitlines()
    assert lines[0].startswith("| system | watchers | streams/procs | on | writes/s | events/s |")
    assert lines[2] == "| dkv | - | - | - | - | skipped | - | - | - | - | - | - |"
    assert lines[3] == "| etcd | 1,000 | 10/2 | follower | 998 | 123,456 | 50.0% | 0.90 | 25.0 | 4.0 | 0.0 | 95% 50% |"
    assert "- dkv: dkv does not serve Watch yet (x)" in lines
    assert "- etcd 1000 watchers: 2 events out of revision order" in lines
    assert "- etcd 1000 watchers: 10 watchers missed events within the drain time" in lines


# -- lease_keepalive -------------------------------------------------------------------


def test_keepalive_arguments() -> None:
    args = keepalive.parse_args([])
    assert (args.leases, args.streams, args.window, args.ttl, args.duration) == (10_000, 4, 64, 120, 10.0)
    assert keepalive.parse_args(["--leases", "100", "--streams", "2"]).streams == 2
    for bad in (["--leases", "0"], ["--streams", "5", "--leases", "4"], ["--window", "0"], ["--systems", ""]):
        with pytest.raises(SystemExit):
            keepalive.parse_args(bad)


def test_keepalive_table() -> None:
    row = {
        "system": "etcd", "leases": 10_000, "streams": 4, "target": "leader", "grants_per_s": 3000.4,
        "grant_p99_us": 51_800.0, "keepalives_per_s": 6898.0, "keepalive_p50_us": 29_700.0,
        "keepalive_p99_us": 72_700.0, "renewals_per_lease": 6.94, "expired_answers": 3, "mismatched_answers": 0,
        "stream_errors": [], "client_cpu_fraction": 0.87,
    }  # fmt: skip
    text = keepalive.format_table([{"system": "dkv", "skipped": "dkv does not serve Lease yet (x)"}, row])
    lines = text.splitlines()
    assert lines[2] == "| dkv | - | - | - | skipped | - | - | - | - | - | - |"
    assert lines[3] == "| etcd | 10,000 | 4 | leader | 3,000 | 51.8 | 6,898 | 29.7 | 72.7 | 6.9 | 87% |"
    assert "- etcd: 3 keep-alives answered TTL <= 0 (lease not found)" in lines


# -- write_cost --idempotency ----------------------------------------------------------


def test_cost_idempotency_arguments_and_out() -> None:
    args = cost.parse_args(["--idempotency", "--rounds", "3"])
    assert args.idempotency and args.rounds == 3
    assert not cost.parse_args([]).idempotency and cost.parse_args([]).rounds == 1
    with pytest.raises(SystemExit):
        cost.parse_args(["--rounds", "0"])
    assert cost.default_out("v0", "0123456789ab", False, True).name == "write_cost-v0-0123456789-idempotency.json"
    keys = {cost.idempotency_key()["Idempotency-Key"] for _ in range(3)}
    assert len(keys) == 3 and all(len(k) == 36 for k in keys)  # a fresh uuid each


def _cost(leader: str, cpu: float, used: float, kv: float) -> dict[str, Any]:
    per = {"used": used, "high_water": used + 10, "dbs": {"kv.0": {"bytes": kv, "entries": 1.0}}}
    other = {"used": 0.0, "high_water": 0.0, "dbs": {}}
    return {
        "leader": leader, "leader_cpu_us_per_write": cpu, "all_cpu_us_per_write": 2 * cpu,
        "bytes_per_write": {leader: per, "z": other},
    }  # fmt: skip


def test_idempotency_difference_is_taken_on_each_runs_leader() -> None:
    with_key = _cost("b", 330.0, 900.0, 500.0)
    with_key["bytes_per_write"]["b"]["dbs"]["idem"] = {"bytes": 80.0, "entries": 1.0}
    d = cost.idempotency_difference(_cost("a", 300.0, 800.0, 480.0), with_key)
    assert d["leader_cpu_us_per_write"] == 30.0 and d["all_cpu_us_per_write"] == 60.0
    assert d["leader_used_bytes_per_write"] == 100.0 and d["leader_high_water_bytes_per_write"] == 100.0
    assert d["leader_db_bytes_per_write"] == {"idem": 80.0, "kv.0": 20.0}
    text = cost.format_difference(d)
    assert "CPU: leader +30.0 µs, all members +60.0 µs" in text
    assert "pages in use +100.0 B, high-water +100.0 B (idem +80.0 B, kv.0 +20.0 B)" in text


def test_median_difference_over_rounds() -> None:
    diffs = [
        cost.idempotency_difference(_cost("a", 300.0, 800.0, 480.0), _cost("a", 300.0 + x, 820.0, 500.0))
        for x in (10.0, -40.0, 25.0)
    ]
    m = cost.median_difference(diffs)
    assert (
        m["rounds"] == 3
        and m["leader_cpu_us_per_write"] == 10.0
        and m["range"]["leader_cpu_us_per_write"]
        == (
            -40.0,
            25.0,
        )
    )
    assert m["leader_db_bytes_per_write"] == {"kv.0": 20.0}
    text = cost.format_difference(m)
    assert "(median of 3 rounds, with minus without)" in text and "leader +10.0 µs (-40.0 to +25.0)" in text


def test_send_all_sends_fresh_headers_per_request() -> None:
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers.get("Idempotency-Key"))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        reqs = [load.put_request("v0", b"k%d" % i, b"v") for i in range(6)]
        load.send_all(url, reqs, "keyed", workers=2, more_headers=cost.idempotency_key)
        load.send_all(url, reqs[:2], "plain", workers=1)
    finally:
        server.shutdown()
        server.server_close()
    assert len(seen) == 8 and len(set(seen[:6])) == 6 and None not in seen[:6] and seen[6:] == [None, None]


# -- one small real run against etcd ---------------------------------------------------

needs_etcd = pytest.mark.skipif(etcd_binary() is None, reason="etcd is not installed")


def _kill_leftovers(tmp_path: Path) -> list[int]:
    """SIGKILL any process whose command line names tmp_path (an etcd member
    the script started and, killed itself, could not stop); their pids."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(tmp_path).encode() in cmdline:
            found.append(int(entry.name))
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
    return found


def _run_script(tmp_path: Path, script: str, *args: str) -> tuple[str, dict[str, Any]]:
    out = tmp_path / "result.json"
    argv = [sys.executable, str(BENCHMARKS / script), "--tmp-dir", str(tmp_path), "--out", str(out), *args]
    try:
        done = run_to_exit(argv, env=child_env(), timeout=60)
    finally:
        leftovers = _kill_leftovers(tmp_path)
    assert done.returncode == 0, done.stderr + done.stdout
    assert leftovers == []  # the script stopped its cluster itself
    return done.stdout, json.loads(out.read_text())


@pytest.mark.process
@needs_etcd
def test_watch_fanout_against_etcd(tmp_path: Path) -> None:
    """10 watchers on a follower get every one of 300 puts, in order."""
    stdout, report = _run_script(
        tmp_path, "watch_fanout.py", "--systems", "etcd", "--watchers", "10", "--rate", "300",
        "--duration", "1", "--per-stream", "4", "--target", "follower", "--drain", "20",
    )  # fmt: skip
    [row] = report["rows"]
    assert row["system"] == "etcd" and row["target"] == "follower" and row["streams"] == 3 and row["procs"] == 2
    assert row["acked"] == row["puts"] == 300 and row["put_error_count"] == 0
    assert row["events"] == row["expected_events"] == 3000 and row["watchers_complete"] == 10
    assert row["out_of_order"] == 0 and row["stream_errors"] == [] and row["canceled"] == 0
    assert len(row["receiver_cpu_fraction"]) == 2 and all(c > 0 for c in row["receiver_cpu_fraction"])
    assert 0 < row["latency_p50_us"] <= row["latency_p99_us"] and row["events_per_s"] > 0
    assert "| etcd | 10 | 3/2 | follower |" in stdout and "load average (1 min)" in stdout


@pytest.mark.process
@needs_etcd
def test_lease_keepalive_against_dkv_and_etcd(tmp_path: Path) -> None:
    """etcd measured; dkv skipped with a line while it does not serve Lease,
    measured the same way once it does."""
    stdout, report = _run_script(
        tmp_path, "lease_keepalive.py", "--systems", "dkv,etcd", "--leases", "200", "--streams", "2", "--duration", "1"
    )
    dkv, etcd = report["rows"]
    for row in (etcd,) if "skipped" in dkv else (dkv, etcd):
        assert row["grants"] == 200 and row["grants_per_s"] > 0 and row["keepalives"] > 200
        assert row["expired_answers"] == row["mismatched_answers"] == 0 and row["stream_errors"] == []
        assert 0 < row["keepalive_p50_us"] <= row["keepalive_p99_us"]
        assert f"| {row['system']} | 200 | 2 | leader |" in stdout
    if "skipped" in dkv:
        assert dkv["skipped"].startswith("dkv does not serve Lease yet")
        assert "dkv: skipped: dkv does not serve Lease yet" in stdout and "| dkv | - |" in stdout
