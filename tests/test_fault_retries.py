"""The fault workload's retries of writes of unknown outcome, and the
``applied-once`` check, without processes: the meaning of a retry's answer,
the workload against stand-ins for a node that remembers idempotency keys
(and for one that answers 504 forever), the counts the summary shows, the
check on hand-made store histories, and reading a history from a stand-in
of etcd's watch gateway (compacted once)."""

from __future__ import annotations

import base64
import http.server
import json
import socket
import threading
from collections import Counter

import pytest

from dkv.testing.applied_once import (
    HistoryReadError,
    StoreEvent,
    StoreHistory,
    check_applied_once,
    read_store_history,
)
from dkv.testing.gateway import Answer
from dkv.testing.history import Op
from dkv.testing.poll import wait_until
from dkv.testing.retries import RetryCounts, retried
from dkv.testing.torture import TortureConfig, parse_args
from dkv.testing.workload import Workload, WorkloadConfig, retry_counts
from tests.http_stub import serving

K = b"k0"


def w(value: bytes | None, outcome: str = "ok", key: bytes = K, kind: str = "write", swapped: bool = True) -> Op:
    complete = None if outcome == "unknown" else 2.0
    return Op(
        process=0, kind=kind, key=key, value=value, invoke=1.0, complete=complete, outcome=outcome, swapped=swapped
    )


# -- what a retry's answer means ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome", "expected"),
    [
        (200, "ok", "ok"),
        (400, "fail", "fail"),  # refused: the same request is refused on every attempt
        (404, "fail", "fail"),
        (503, "fail", "unknown"),  # no leader: this attempt was not proposed, an earlier one may have been
        ("not-sent", "fail", "unknown"),  # nothing sent this time
        (408, "fail", "unknown"),
        (422, "fail", "unknown"),
        (429, "fail", "unknown"),
        (504, "unknown", "unknown"),
        ("lost", "unknown", "unknown"),
    ],
)
def test_retried(status, outcome, expected) -> None:
    answer = retried(Answer(outcome=outcome, detail="d"), status)
    assert answer.outcome == expected
    if outcome == "fail" and expected == "unknown":
        assert "an earlier attempt may have been" in answer.detail


def test_retry_counts() -> None:
    counts = RetryCounts.of(
        [
            (False, "ok", 1),
            (False, "fail", 1),
            (True, "ok", 2),
            (True, "ok", 3),
            (True, "fail", 2),
            (True, "unknown", 3),
        ]
    )
    assert (counts.writes, counts.unknown_first) == (6, 4)
    assert (counts.retried_ok, counts.retried_fail, counts.still_unknown) == (2, 1, 1)
    assert counts.retried_known + counts.still_unknown == counts.unknown_first
    assert counts.attempts == {1: 2, 2: 2, 3: 2}
    assert counts.to_json()["retried_known"] == 3 and counts.to_json()["attempts"] == {"1": 2, "2": 2, "3": 2}
    assert "4 of 6 writes unknown at the first attempt; retries made 3 known (2 ok, 1 fail), 1 still" in (
        counts.render()
    )


# -- the workload against stand-in nodes -----------------------------------------------


class _IdempotentNode:
    """A /v0 stand-in: the first attempt of every write answers 504 (and is
    applied every other time, as a write whose commit came too late); a
    request with an Idempotency-Key it has applied answers the remembered
    answer and applies nothing. ``forever_504`` answers every write 504."""

    def __init__(self, forever_504: bool = False) -> None:
        self.lock = threading.Lock()
        self.forever = forever_504
        self.data: dict[str, str] = {}
        self.applied: Counter[str] = Counter()  # idempotency key -> times applied
        self.seen: dict[str, list[bytes]] = {}  # idempotency key -> the bodies sent with it
        self.missing_key = 0

    def answer(self, method: str, path: str, key: str | None, body: bytes) -> tuple[int, dict]:
        with self.lock:
            if method == "GET":
                b64key = path.rsplit("/", 1)[1].split("?")[0]
                if b64key in self.data:
                    return 200, {"key": b64key, "value": self.data[b64key]}
                return 404, {"error": "key not found", "code": 5}
            if key is None:
                self.missing_key += 1
                return 400, {"error": "no key", "code": 3}
            attempts = self.seen.setdefault(key, [])
            attempts.append(body)
            if self.forever:
                return 504, {"error": "outcome unknown", "code": 4}
            if len(attempts) == 1 and len(self.seen) % 2:
                return 504, {"error": "outcome unknown", "code": 4}
            if not self.applied[key]:
                self.applied[key] += 1
                if method == "POST":
                    doc = json.loads(body)
                    self.data[doc["key"]] = doc["value"]
                else:
                    self.data.pop(path.rsplit("/", 1)[1], None)
            if len(attempts) == 1:  # applied, then "timed out" before the answer
                return 504, {"error": "outcome unknown", "code": 4}
            return 200, {}


def _serve(node: _IdempotentNode):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, answer = node.answer(self.command, self.path, self.headers.get("Idempotency-Key"), body)
            raw = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_DELETE = _answer  # noqa: N815 - http.server's names

        def log_message(self, *args: object) -> None:
            pass

    return serving(Handler)


def _run(node: _IdempotentNode, n: int, **config) -> Workload:
    with _serve(node) as address:
        port = int(address.rsplit(":", 1)[1])
        cfg = WorkloadConfig(clients=3, keys=2, delete_ratio=0.2, retry_pause=0.0, **config)
        workload = Workload({"a": port, "b": port, "c": port}, cfg, seed=3)
        workload.start()
        try:
            wait_until(lambda: len(workload.requests) >= n, 30, f"{n} operations")
        finally:
            workload.stop()
    return workload


def test_writes_of_unknown_outcome_are_retried_with_their_key() -> None:
    node = _IdempotentNode()
    workload = _run(node, 200)
    writes = [r for r in workload.requests if r.op.kind == "write"]
    assert writes and node.missing_key == 0
    # Every write went out with a key of its own, the same body on each attempt.
    assert len(node.seen) == len(writes)
    assert all(len(set(bodies)) == 1 for bodies in node.seen.values())
    # Each answered 504 first; the retry (to another node) told its outcome.
    assert all(r.unknown_first and r.attempts == 2 and r.op.outcome == "ok" for r in writes), writes[:3]
    assert max(node.applied.values()) == 1
    # The trail: the first attempt's 504 marked unknown, the retry to another node.
    for r in writes:
        first, second = r.trail
        assert first.endswith(":504?") and second.endswith(":200") and first[0] != second[0], r.trail
    counts = retry_counts(workload.requests)
    assert counts.unknown_first == counts.retried_ok == len(writes) and counts.still_unknown == 0
    # Recorded once, from the first attempt's invocation to the last answer.
    assert all(r.op.complete is not None and r.op.complete >= r.op.invoke for r in writes)
    assert json.loads(json.dumps(writes[0].to_json()))["attempts"] == 2
    # Reads are never retried.
    assert all(r.attempts == 1 and not r.unknown_first for r in workload.requests if r.op.kind == "read")


def test_a_write_unknown_on_every_attempt_stays_unknown() -> None:
    node = _IdempotentNode(forever_504=True)
    workload = _run(node, 60, write_attempts=3)
    writes = [r for r in workload.requests if r.op.kind == "write"]
    assert writes and all(r.op.outcome == "unknown" and r.attempts == 3 for r in writes)
    assert len(node.seen) == len(writes) and all(len(bodies) == 3 for bodies in node.seen.values())
    counts = retry_counts(workload.requests)
    assert counts.unknown_first == counts.still_unknown == len(writes) and counts.retried_known == 0
    # An unknown write leaves its process pending: the client goes on as a new one.
    processes = [r.op.process for r in workload.requests]
    assert len(set(processes)) > 3


def test_a_retry_avoids_nodes_it_could_not_reach() -> None:
    node = _IdempotentNode(forever_504=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]  # bound, never listening: connections are refused
        with _serve(node) as address:
            port = int(address.rsplit(":", 1)[1])
            cfg = WorkloadConfig(clients=3, keys=2, read_ratio=0.0, retry_pause=0.0, write_attempts=5)
            workload = Workload({"a": dead, "b": port, "c": port}, cfg, seed=4)
            workload.start()
            try:
                wait_until(lambda: len(workload.requests) >= 60, 30, "60 operations")
            finally:
                workload.stop()
    trails = [r.trail for r in workload.requests if r.attempts > 1]
    assert any("a:not-sent" in t for t in trails), trails[:5]
    for t in trails:
        if "a:not-sent" in t:
            assert all(not step.startswith("a:") for step in t[t.index("a:not-sent") + 1 :]), t
    assert all(r.op.outcome == "unknown" for r in workload.requests if r.attempts > 1)


def test_no_retry_with_one_attempt() -> None:
    workload = _run(_IdempotentNode(forever_504=True), 30, write_attempts=1)
    writes = [r for r in workload.requests if r.op.kind == "write"]
    assert writes and all(r.attempts == 1 and r.unknown_first and r.op.outcome == "unknown" for r in writes)


def test_write_deadline_stops_retries() -> None:
    workload = _run(_IdempotentNode(forever_504=True), 30, write_attempts=5, write_deadline=0.0)
    assert all(r.attempts == 1 for r in workload.requests)


def test_write_attempts_option(tmp_path) -> None:
    cfg = parse_args(["--write-attempts", "5", "--out", str(tmp_path)])
    assert cfg.write_attempts == 5 and "--write-attempts 5" in cfg.command()
    assert parse_args(cfg.command().split()[3:]) == cfg
    assert TortureConfig(out=tmp_path).write_attempts == 3
    assert "--write-attempts" not in TortureConfig(out=tmp_path).command()
    with pytest.raises(SystemExit):
        parse_args(["--write-attempts", "0", "--out", str(tmp_path)])


# -- applied-once ------------------------------------------------------------------------


def history(*events: tuple[int, bytes | None], key: bytes = K, compacted: int = 0) -> StoreHistory:
    evs = [StoreEvent(rev, key, value) for rev, value in events]
    return StoreHistory(events=evs, revision=max((e.revision for e in evs), default=1), compact_revision=compacted)


def test_applied_once_passes_a_clean_history() -> None:
    ops = [w(b"c0-1"), w(b"c0-2", "unknown"), w(None), w(b"c0-3", "unknown"), w(b"c0-4", kind="cas")]
    result = check_applied_once(ops, history((2, b"c0-1"), (3, b"c0-2"), (4, None), (5, b"c0-4")), [(K, b"c0-2")])
    assert result.passed, result.detail
    assert "3 values each at one revision, 1 deletions by 1 deletes, no failed write, revisions 1..5" in (
        result.detail
    )
    assert result.detail.endswith("; 1 by retried writes"), result.detail


def test_applied_once_catches_a_value_at_two_revisions() -> None:
    ops = [w(b"c0-1"), w(b"c0-2", "unknown"), w(b"c0-3")]
    result = check_applied_once(ops, history((2, b"c0-1"), (3, b"c0-2"), (4, b"c0-3"), (5, b"c0-2")))
    assert result.ok is False
    assert "c0-2 of k0 was applied 2 times, at revisions [3, 5]" in result.detail, result.detail


def test_applied_once_catches_an_applied_failed_write() -> None:
    ops = [w(b"c0-1", "fail"), w(b"c0-2", kind="cas", swapped=False)]
    ops[1] = Op(process=0, kind="cas", key=K, value=b"c0-2", expected=b"x", result=b"y", invoke=1, complete=2,
                outcome="ok", swapped=False)  # fmt: skip
    result = check_applied_once(ops, history((2, b"c0-1"), (3, b"c0-2")))
    assert result.ok is False
    assert "c0-1 of k0 is at revision 2 though its write failed" in result.detail
    assert "c0-2 of k0 is at revision 3 though its cas did not swap" in result.detail


def test_applied_once_counts_deletes() -> None:
    ops = [w(b"c0-1"), w(None, "unknown"), w(b"c0-2"), w(None, "fail")]
    twice = history((2, b"c0-1"), (3, None), (4, b"c0-2"), (5, None))
    result = check_applied_once(ops, twice)
    assert result.ok is False and "k0 was deleted 2 times, by 1 deletes that did not fail" in result.detail
    assert check_applied_once(ops[:3] + [w(None)], twice).passed


def test_applied_once_says_what_was_compacted() -> None:
    result = check_applied_once([w(b"c0-1"), w(b"c0-2")], history((7, b"c0-2"), compacted=5))
    assert result.passed and "revisions 6..7 (compacted below 6)" in result.detail


# -- reading the history from a watch stand-in -------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _watch_server(events: list[tuple[int, bytes, bytes | None]], compacted: int, requests: list[dict]):
    """A stand-in for POST /v3/watch of every key: a start below
    ``compacted`` is cancelled with compact_revision, as etcd does; else the
    events from the start on, two per line, then the stream stays open."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            requests.append(body)
            start = int(body["create_request"]["start_revision"])
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            lines = [{"result": {"header": {"revision": "9"}, "created": True}}]
            if start < compacted:
                lines.append({"result": {"canceled": True, "compact_revision": str(compacted)}})
            else:
                evs = [
                    {"kv": {"key": _b64(k), "mod_revision": str(rev), **({"value": _b64(v)} if v else {})}}
                    | ({} if v else {"type": "DELETE"})
                    for rev, k, v in events
                    if rev >= start
                ]
                lines += [
                    {"result": {"header": {"revision": "9"}, "events": evs[i : i + 2]}} for i in range(0, len(evs), 2)
                ]
            for line in lines:
                raw = json.dumps(line).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
                self.wfile.flush()
            if start < compacted:
                self.wfile.write(b"0\r\n\r\n")

        def log_message(self, *args: object) -> None:
            pass

    return serving(Handler)


def test_read_store_history_restarts_at_the_compacted_revision() -> None:
    events = [(3, b"k0", b"c0-1"), (4, b"k1", b"c1-1"), (5, b"k0", None), (6, b"k1", b"c1-2"), (7, b"k0", b"c0-2")]
    requests: list[dict] = []
    with _watch_server(events, 3, requests) as address:
        port = int(address.rsplit(":", 1)[1])
        got = read_store_history(port, 7, timeout=10)
    assert [int(r["create_request"]["start_revision"]) for r in requests] == [1, 3]
    assert requests[0]["create_request"]["key"] == requests[0]["create_request"]["range_end"] == _b64(b"\0")
    assert got.compact_revision == 2 and got.revision == 7
    assert got.events == [StoreEvent(rev, k, v) for rev, k, v in events]


def test_read_store_history_times_out_short_of_the_revision() -> None:
    with _watch_server([(2, b"k0", b"c0-1")], 0, []) as address:
        port = int(address.rsplit(":", 1)[1])
        with pytest.raises(HistoryReadError):
            read_store_history(port, 5, timeout=0.5)
