"""The fault suite's own parts, without processes: the outcome rules of the
workloads (dkv's /v0 and etcd's gateway), the final checks on hand-made
histories (each must catch what it is for, so a green fault run means
something), the txn workload against a stand-in for etcd's gateway, and the
runner's arguments."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections import Counter

import pytest

from dkv.testing import gateway
from dkv.testing.checks import (
    check_acknowledged,
    check_convergence,
    check_failed_invisible,
    check_hash_kv,
    check_no_phantoms,
    hash_kv_result,
    scan_logs,
)
from dkv.testing.history import Op
from dkv.testing.linearizability import check
from dkv.testing.nemesis import FAULTS, SCHEDULES, NemesisConfig
from dkv.testing.poll import wait_until
from dkv.testing.rest_client import b64
from dkv.testing.revisions import check_read_at_revision, check_revision_order
from dkv.testing.torture import TortureConfig, parse_args
from dkv.testing.workload import Request, Workload, WorkloadConfig, classify
from tests.http_stub import serving

K = b"k0"


def w(value: bytes | None, invoke: float, complete: float | None, outcome: str = "ok", key: bytes = K) -> Op:
    return Op(process=0, kind="write", key=key, value=value, invoke=invoke, complete=complete, outcome=outcome)


def r(result: bytes | None, invoke: float, complete: float, outcome: str = "ok", key: bytes = K) -> Op:
    return Op(process=1, kind="read", key=key, result=result, invoke=invoke, complete=complete, outcome=outcome)


def _header(revision: int) -> dict:
    return {"header": {"cluster_id": "1", "member_id": "2", "revision": str(revision), "raft_term": "3"}}


# -- outcomes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "body", "expected"),
    [
        ("write", 200, {}, "ok"),
        ("write", 503, {"error": "no leader", "code": 14}, "fail"),
        ("write", 400, {"error": "bad", "code": 3}, "fail"),
        ("write", 413, {"error": "big", "code": 8}, "fail"),
        ("write", 504, {"error": "outcome unknown", "code": 4}, "unknown"),
        ("write", 500, {"error": "internal error", "code": 13}, "unknown"),
        ("write", 502, {"raw": "bad gateway"}, "unknown"),
        ("write", "not-sent", "could not connect", "fail"),
        ("write", "lost", "ConnectionResetError", "unknown"),
        ("read", 404, {"error": "key not found", "code": 5}, "ok"),
        ("read", 503, {"error": "no leader", "code": 14}, "fail"),
        ("read", 504, {"error": "outcome unknown", "code": 4}, "unknown"),
        ("read", 200, {"value": "!!"}, "unknown"),
        ("read", "lost", "timeout", "unknown"),
    ],
)
def test_classify(kind, status, body, expected) -> None:
    assert classify(kind, status, body)[0] == expected


def test_classify_read_value() -> None:
    assert classify("read", 200, {"key": "azA=", "value": "YzEtMQ=="}) == ("ok", b"c1-1", "")
    assert classify("read", 404, {"error": "key not found", "code": 5})[:2] == ("ok", None)


# -- final checks ----------------------------------------------------------------------


def test_acknowledged_present_or_overwritten() -> None:
    ops = [w(b"a", 0, 1), w(b"b", 2, 3), w(b"c", 4, None, "unknown")]
    assert check_acknowledged(ops, {K: b"b"}).passed
    assert check_acknowledged(ops, {K: b"c"}).passed  # the unknown write came last
    lost = check_acknowledged(ops, {K: b"a"})  # b was acknowledged after a completed
    assert lost.ok is False and "b'" not in lost.detail and "ok write b" in lost.detail
    assert check_acknowledged(ops, {K: None}).ok is False
    # A failed write cannot be what overwrote an acknowledged one.
    assert check_acknowledged([w(b"a", 0, 1), w(b"x", 2, 3, "fail")], {K: b"x"}).ok is False
    # Concurrent writes: either may be last.
    both = [w(b"a", 0, 2), w(b"b", 1, 3)]
    assert check_acknowledged(both, {K: b"a"}).passed and check_acknowledged(both, {K: b"b"}).passed
    # A delete that may have come later explains an absent key.
    assert check_acknowledged([w(b"a", 0, 1), w(None, 2, 3)], {K: None}).passed


def test_no_phantoms() -> None:
    ops = [w(b"a", 1, 2), r(b"a", 1.5, 3)]
    assert check_no_phantoms(ops).passed
    assert check_no_phantoms(ops + [r(b"zz", 0, 1)]).ok is False
    assert check_no_phantoms(ops, {"a": {K: b"zz"}}).ok is False
    # A value read before its write was even invoked.
    assert check_no_phantoms([w(b"a", 5, 6), r(b"a", 1, 2)]).ok is False
    # Serializable reads count too.
    assert check_no_phantoms(ops, None, [("b", r(b"q", 1, 2))]).ok is False


def test_failed_writes_invisible() -> None:
    ops = [w(b"a", 0, 1, "fail"), w(b"b", 0, 1, "unknown")]
    assert check_failed_invisible(ops + [r(b"b", 2, 3)]).passed
    assert check_failed_invisible(ops + [r(b"a", 2, 3)]).ok is False
    assert check_failed_invisible(ops, {"c": {K: b"a"}}).ok is False
    assert check_failed_invisible(ops, None, [("a", r(b"a", 2, 3))]).ok is False


def test_convergence() -> None:
    assert check_convergence({"a": {K: b"x"}, "b": {K: b"x"}}).passed
    result = check_convergence({"a": {K: b"x"}, "b": {K: None}})
    assert result.ok is False and "b=absent" in result.detail


# -- the cas-aware checks ------------------------------------------------------------------


def cas(expected: bytes | None, value: bytes, found: bytes | None, invoke: float, complete: float | None,
        outcome: str = "ok", swapped: bool = True) -> Op:  # fmt: skip
    return Op(
        process=2, kind="cas", key=K, expected=expected, value=value, result=found, invoke=invoke,
        complete=complete, outcome=outcome, swapped=swapped,
    )  # fmt: skip


def test_checks_know_cas() -> None:
    swapped = cas(b"a", b"b", b"b", 2, 3)
    not_swapped = cas(b"a", b"x", b"b", 4, 5, swapped=False)
    ops = [w(b"a", 0, 1), swapped, not_swapped]
    # A cas that swapped is an acknowledged write; one that did not, is none.
    assert check_acknowledged(ops, {K: b"b"}).passed
    lost = check_acknowledged(ops, {K: b"a"})
    assert lost.ok is False and "ok cas b" in lost.detail
    assert check_acknowledged(ops, {K: b"x"}).ok is False
    # What a cas found was read: it must have been written, and not by a failure.
    assert check_no_phantoms(ops).passed and check_failed_invisible(ops).passed
    assert check_no_phantoms(ops + [cas(b"a", b"y", b"ghost", 6, 7, swapped=False)]).ok is False
    assert check_failed_invisible(ops + [w(b"f", 0, 1, "fail"), cas(None, b"y", b"f", 6, 7, swapped=False)]).ok is False
    # The new value of a cas that did not swap must never be seen.
    seen = check_failed_invisible(ops + [r(b"x", 6, 7)])
    assert seen.ok is False and "cas that did not swap" in seen.detail
    assert check_no_phantoms(ops + [r(b"x", 6, 7)]).ok is False


# -- HashKV ------------------------------------------------------------------------------


def _status(revision: int) -> tuple[int, dict]:
    return 200, {**_header(revision), "version": "3.4.0"}


def _hash(digest: int, compacted: int = -1, revision: int = 9) -> tuple[int, dict]:
    body = {**_header(revision), "hash": digest}
    if compacted:
        body["compact_revision"] = str(compacted)
    return 200, body


def test_hash_kv_equal() -> None:
    statuses = {n: _status(9) for n in "abc"}
    result = hash_kv_result(statuses, {n: _hash(1234, 5) for n in "abc"})
    assert result.passed and "revision 9 is 1234 (compact_revision 5) on all 3 nodes" in result.detail


@pytest.mark.parametrize(
    ("statuses", "hashes", "says"),
    [
        ({"a": _status(9), "b": _status(8)}, {}, "different revisions"),
        ({"a": _status(9), "b": (None, "ConnectionRefusedError()")}, {}, "no revision"),
        ({"a": _status(9), "b": _status(9)}, {"a": _hash(1), "b": _hash(2)}, "differs: a: hash 1"),
        ({"a": _status(9), "b": _status(9)}, {"a": _hash(1, 5), "b": _hash(1, 6)}, "compact_revision 6"),
        ({"a": _status(9), "b": _status(9)}, {"a": _hash(1), "b": (400, {"code": 11})}, "on b"),
        ({"a": _status(9), "b": _status(9)}, {"a": _hash(1)}, "not asked"),
        ({}, {}, "no revision"),
    ],
)
def test_hash_kv_differs(statuses, hashes, says) -> None:
    result = hash_kv_result(statuses, hashes)
    assert result.ok is False and says in result.detail, result.detail


class _MovingCluster:
    """Answers HashKV from a script, one entry per round of asking: each a
    (hash, compact revision) per node; the last entry repeats. Every status
    says revision 9 and equal applied indexes."""

    ids = ("a", "b", "c")

    def __init__(self, rounds: list[dict[str, tuple[int, int]]]) -> None:
        self.rounds = rounds
        self.asked = 0

    def request(self, node: str, method: str, path: str, body: dict) -> tuple[int, dict]:
        if path.endswith("/status"):
            return _status(9)
        answer = self.rounds[min(self.asked // len(self.ids), len(self.rounds) - 1)][node]
        self.asked += 1
        return _hash(*answer)

    def statuses(self, ids) -> dict[str, dict]:
        return {i: {"applied_index": 40, "commit_index": 40} for i in ids}


def test_hash_kv_asks_again_while_a_compaction_is_applied_on_some_nodes_only() -> None:
    """The leader applied a compaction the followers had not yet when asked:
    compact revisions differ, so the hashes cannot be compared. Asked again
    once the applied indexes agree, they match."""
    cluster = _MovingCluster([{"a": (1, 5), "b": (1, 5), "c": (2, 6)}, {n: (2, 6) for n in "abc"}])
    result = check_hash_kv(cluster, timeout=5.0)  # type: ignore[arg-type]
    assert result.passed and "compact_revision 6" in result.detail
    assert cluster.asked == 6


def test_hash_kv_fails_at_once_on_equal_compact_revisions_and_after_the_timeout_on_others() -> None:
    differ = _MovingCluster([{"a": (1, 5), "b": (1, 5), "c": (2, 5)}])
    result = check_hash_kv(differ, timeout=5.0)  # type: ignore[arg-type]
    assert result.ok is False and "c: hash 2" in result.detail and differ.asked == 3
    stuck = _MovingCluster([{"a": (1, 5), "b": (1, 5), "c": (2, 6)}])
    result = check_hash_kv(stuck, timeout=0.0)  # type: ignore[arg-type]
    assert result.ok is False and "compact_revision 6" in result.detail and stuck.asked == 3


# -- runner ------------------------------------------------------------------------------


def test_parse_args_and_command_round_trip(tmp_path) -> None:
    cfg = parse_args(
        ["--time", "45", "--nemesis", "pause", "--seed", "9", "--out", str(tmp_path), "--fault-seconds", "0.5,1",
         "--delete-ratio", "0.1"]
    )  # fmt: skip
    assert cfg.nemesis == "pause" and cfg.seed == 9 and cfg.time == 45
    assert cfg.nemesis_config == NemesisConfig(fault_seconds=(0.5, 1.0))
    again = parse_args(cfg.command().split()[3:])
    assert again == cfg
    assert cfg.workload == "kv" and "--workload" not in cfg.command()
    txn = parse_args(["--workload", "txn", "--cas-ratio", "0.9", "--compact-ratio", "0", "--out", str(tmp_path)])
    assert (txn.workload, txn.cas_ratio, txn.compact_ratio) == ("txn", 0.9, 0.0)
    assert "--workload txn" in txn.command() and parse_args(txn.command().split()[3:]) == txn


def test_parse_args_refuses_nonsense(tmp_path) -> None:
    for bad in (["--nemesis", "meteor"], ["--time", "5", "--tail", "6"], ["--fault-seconds", "3,1"],
                ["--workload", "sql"]):  # fmt: skip
        with pytest.raises(SystemExit):
            parse_args(["--out", str(tmp_path), *bad])


def test_schedules() -> None:
    assert set(SCHEDULES) == set(FAULTS) | {"mix"}
    with pytest.raises(ValueError):
        TortureConfig(out="x", nemesis="meteor")


class _FakeNode:
    def __init__(self, text: str) -> None:
        self.text = text

    def log_text(self) -> str:
        return self.text


class _FakeCluster:
    def __init__(self, logs: dict[str, str]) -> None:
        self.ids = list(logs)
        self.logs = logs

    def node(self, node_id: str) -> _FakeNode:
        return _FakeNode(self.logs[node_id])


def test_scan_logs() -> None:
    clean = "2026 [dkv#info] dkv node a starting\n2026 [dkv.replication#info] became leader in term 2\n"
    crash = (
        "2026 [dkv.replication#critical] cannot write to the store; this node stops serving\n"
        "\tTraceback (most recent call last):\n\t  File \"x.py\", line 1, in f\n\tValueError: boom\n"
        "2026 [dkv#info] next\n"
    )
    known = (
        "2026 [dkv.api.rest#critical] internal error answering /v0/kv/key/azI=\n"
        "\tTraceback (most recent call last):\n"
        "\tlmdb.Error: Attempt to operate on closed/deleted/dropped object.\n"
    )
    [ok] = scan_logs(_FakeCluster({"a": clean}))  # type: ignore[arg-type]
    assert ok.passed
    [bad] = scan_logs(_FakeCluster({"a": clean, "b": crash}))  # type: ignore[arg-type]
    assert bad.ok is False and "b.log line 1" in bad.detail and "ValueError: boom" in bad.detail
    results = scan_logs(_FakeCluster({"a": known}))  # type: ignore[arg-type]
    assert [(r.name, r.ok) for r in results] == [("node-logs", True), ("closed-store-read", False)]
    [exited] = scan_logs(_FakeCluster({"a": clean}), [("a", 1)])  # type: ignore[arg-type]
    assert exited.ok is False and "a exited by itself with status 1" in exited.detail


# -- etcd's gateway: answers and outcomes ------------------------------------------------


def _kv(key: bytes, value: bytes, mod: int) -> dict:
    return {"key": b64(key), "value": b64(value), "mod_revision": str(mod), "create_revision": "1", "version": "1"}


@pytest.mark.parametrize(
    ("kind", "status", "body", "expected"),
    [
        ("put", 200, _header(7), ("ok", None, True, 7, 7)),
        ("delete", 200, {**_header(7), "deleted": "1"}, ("ok", None, True, 7, 7)),
        ("delete", 200, _header(7), ("ok", None, True, 7, None)),  # nothing deleted: no revision made
        ("read", 200, _header(9), ("ok", None, True, 9, None)),
        ("read", 200, {**_header(9), "kvs": [_kv(K, b"c1-1", 4)], "count": "1"}, ("ok", b"c1-1", True, 9, 4)),
        ("cas", 200, {**_header(5), "succeeded": True, "responses": [
            {"response_put": {"header": {"revision": "5"}}},
            {"response_range": {"kvs": [_kv(K, b"new", 5)], "count": "1"}},
        ]}, ("ok", b"new", True, 5, 5)),
        ("cas", 200, {**_header(5), "responses": [{"response_range": {"kvs": [_kv(K, b"other", 3)]}}]},
         ("ok", b"other", False, 5, 3)),
        ("cas", 200, {**_header(5), "responses": [{"response_range": {}}]}, ("ok", None, False, 5, None)),
        ("compact", 200, _header(5), ("ok", None, True, 5, None)),
    ],
)  # fmt: skip
def test_gateway_ok_answers(kind, status, body, expected) -> None:
    a = gateway.classify(kind, K, status, body)
    assert (a.outcome, a.result, a.swapped, a.revision, a.mod_revision) == expected


@pytest.mark.parametrize(
    ("kind", "status", "body", "expected"),
    [
        ("put", 503, {"error": "etcdserver: no leader", "message": "etcdserver: no leader", "code": 14}, "fail"),
        ("cas", 503, {"error": "etcdserver: request timed out", "message": "etcdserver: request timed out",
                      "code": 14}, "unknown"),
        ("put", 503, {"error": "etcdserver: leader changed", "code": 14}, "unknown"),
        ("read", 400, {"error": gateway.COMPACTED, "message": gateway.COMPACTED, "code": 11}, "fail"),
        ("cas", 400, {"error": "etcdserver: duplicate key given in txn request", "code": 3}, "fail"),
        ("put", 429, {"error": "etcdserver: too many requests", "code": 8}, "fail"),
        ("put", 500, {"error": "etcdserver: internal error", "code": 2}, "unknown"),
        ("put", 502, {"raw": "bad gateway"}, "unknown"),
        # 200s that are not the documented JSON: maybe applied.
        ("put", 200, {}, "unknown"),
        ("read", 200, {**_header(3), "kvs": [_kv(b"k9", b"v", 2)]}, "unknown"),  # another key
        ("read", 200, {**_header(3), "kvs": [{**_kv(K, b"v", 2), "value": "!!"}]}, "unknown"),
        ("cas", 200, {**_header(3), "succeeded": True}, "unknown"),  # no range answer
        ("cas", 200, {**_header(3), "succeeded": "yes", "responses": [{"response_range": {}}]}, "unknown"),
    ],
)  # fmt: skip
def test_gateway_error_answers(kind, status, body, expected) -> None:
    assert gateway.classify(kind, K, status, body).outcome == expected


def test_gateway_cas_body() -> None:
    absent = gateway.cas_body(K, None, b"n")
    assert absent["compare"] == [{"key": b64(K), "target": "VERSION", "result": "EQUAL", "version": "0"}]
    present = gateway.cas_body(K, b"old", b"n")
    assert present["compare"] == [{"key": b64(K), "target": "VALUE", "result": "EQUAL", "value": b64(b"old")}]
    read_it = {"request_range": {"key": b64(K)}}
    assert present["success"] == [{"request_put": {"key": b64(K), "value": b64(b"n")}}, read_it]
    assert present["failure"] == [read_it]
    assert gateway.range_body(K, 12, serializable=True) == {"key": b64(K), "revision": "12", "serializable": True}


# -- revisions -----------------------------------------------------------------------------


def req(
    kind: str,
    invoke: float,
    complete: float | None,
    *,
    value: bytes | None = None,
    result: bytes | None = None,
    revision: int | None = None,
    mod: int | None = None,
    at: int | None = None,
    outcome: str = "ok",
    swapped: bool = True,
    expected: bytes | None = None,
    consistency: str = "linearizable",
    api: str = "v3",
    detail: str = "",
    key: bytes = K,
) -> Request:
    op = Op(
        process=0, kind=kind, key=key, value=value, result=result, expected=expected, invoke=invoke,
        complete=complete, outcome=outcome, swapped=swapped,
    )  # fmt: skip
    if at is not None:
        consistency = "revision"
    return Request(
        op=op, node="a", status=200, detail=detail, consistency=consistency, api=api, revision=revision,
        at_revision=at, mod_revision=mod,
    )  # fmt: skip


def put(value: bytes | None, invoke: float, complete: float, revision: int | None, **kw) -> Request:
    mod = revision if value is not None or kw.pop("deleted", True) else None
    return req("write", invoke, complete, value=value, revision=revision, mod=mod, **kw)


def read(result: bytes | None, invoke: float, complete: float, revision: int, mod: int | None, **kw) -> Request:
    return req("read", invoke, complete, result=result, revision=revision, mod=mod, **kw)


def _good_history() -> list[Request]:
    return [
        put(b"a", 0, 1, 2),
        req("cas", 2, 3, expected=b"a", value=b"b", result=b"b", revision=3, mod=3),
        req("cas", 4, 5, expected=b"a", value=b"x", result=b"b", revision=3, mod=3, swapped=False),
        read(b"a", 6, 7, 3, 2, at=2),
        read(b"b", 6, 7, 3, 3, at=3),
        read(None, 6, 7, 3, None, at=1),
        read(b"b", 8, 9, 3, 3),
        put(b"z", 8, 9, 4, key=b"k1"),
        read(b"b", 10, 11, 4, 3, at=4),
        put(None, 12, 13, 5),
        read(None, 14, 15, 5, None, at=5),
        read(b"b", 14, 15, 5, 3, at=4),
    ]


def test_revisions_of_a_consistent_history() -> None:
    ops = _good_history()
    order, at = check_revision_order(ops), check_read_at_revision(ops)
    assert order.passed, order.detail
    assert at.passed, at.detail
    assert "6 reads at a revision and 3 other answers" in at.detail and "uncertain" not in at.detail


def test_read_at_revision_missing_a_known_write() -> None:
    bad = read(b"a", 6, 7, 3, 2, at=3)  # revision 3 wrote b
    result = check_read_at_revision(_good_history() + [bad])
    assert result.ok is False and "revision 3 had written b" in result.detail, result.detail


def test_read_at_revision_showing_a_later_write() -> None:
    bad = read(b"b", 6, 7, 3, 3, at=2)
    result = check_read_at_revision(_good_history() + [bad])
    assert result.ok is False and "written later, at 3" in result.detail, result.detail


def test_read_at_revision_absent_after_a_put() -> None:
    # Revisions 3 and 4 are known (b to K, z to k1): nothing deleted K before 4.
    bad = read(None, 6, 7, 4, None, at=4)
    result = check_read_at_revision(_good_history() + [bad])
    assert result.ok is False and "every revision since is another key's" in result.detail, result.detail


def test_read_at_revision_absent_across_gaps() -> None:
    history = [put(b"a", 0, 1, 2), put(b"q", 0, 1, 5, key=b"k1"), read(None, 6, 7, 5, None, at=4)]
    # Revisions 3 and 4 are unnamed, but nothing may have deleted the key.
    result = check_read_at_revision(history)
    assert result.ok is False and "2 unnamed revisions" in result.detail, result.detail
    # A delete of unknown outcome may have been one of them: not certain.
    unknown_delete = req("write", 2, None, outcome="unknown")
    result = check_read_at_revision(history + [unknown_delete])
    assert result.passed and "1 absent keys could be unknown deletes" in result.detail, result.detail
    # An ok /v0 delete too (its answer names no revision).
    assert check_read_at_revision(history + [req("write", 2, 3, api="v0")]).passed
    # Not one that failed, nor an ok v3 delete (its revision is known: 6).
    assert check_read_at_revision(history + [req("write", 2, 3, outcome="fail")]).ok is False
    assert check_read_at_revision(history + [put(None, 5, 6, 6)]).ok is False


def test_a_value_shown_teaches_its_revision() -> None:
    # c's put never answered, but a read showed it written at 3.
    history = [
        put(b"a", 0, 1, 2),
        req("write", 2, None, value=b"c", outcome="unknown"),
        read(b"c", 3, 4, 3, 3),
        read(b"c", 5, 6, 3, 3, at=3),
    ]
    assert check_read_at_revision(history).passed
    assert check_revision_order(history).passed
    stale = read(b"a", 5, 6, 3, 2, at=3)
    assert check_read_at_revision(history + [stale]).ok is False


def test_two_writes_at_one_revision() -> None:
    result = check_revision_order([put(b"a", 0, 1, 2), put(b"b", 0, 1, 2)])
    assert result.ok is False and "revision 2 wrote" in result.detail, result.detail
    # One value at two revisions (every value is written once).
    result = check_revision_order([put(b"a", 0, 1, 2), read(b"a", 2, 3, 3, 3)])
    assert result.ok is False and "written at revision 2" in result.detail, result.detail


def test_revisions_follow_real_time() -> None:
    assert check_revision_order([put(b"a", 0, 1, 5), read(b"a", 2, 3, 5, 5)]).passed
    assert check_revision_order([put(b"a", 0, 1, 5), read(None, 1.5, 3, 4, None)]).ok is False
    # As for the linearizability checker, the same instant counts as overlapping.
    assert check_revision_order([put(b"a", 0, 1, 5), read(None, 1, 3, 4, None)]).passed
    stale = check_revision_order([put(b"a", 0, 1, 5), put(b"q", 2, 3, 4, key=b"k1")])
    assert stale.ok is False and "reported revision 4" in stale.detail, stale.detail
    # A write makes a new revision: never the one an earlier answer reported.
    assert check_revision_order([read(None, 0, 1, 5, None), put(b"a", 2, 3, 5)]).ok is False
    # A cas that did not swap, or a delete of nothing, makes none.
    assert check_revision_order([
        read(b"q", 0, 1, 5, 5),
        req("cas", 2, 3, expected=b"x", value=b"y", result=b"q", revision=5, mod=5, swapped=False),
        put(None, 4, 5, 5, deleted=False),
    ]).passed  # fmt: skip
    # Overlapping requests, and serializable reads, may see any order.
    assert check_revision_order([put(b"a", 0, 3, 5), read(None, 1, 2, 4, None)]).passed
    assert check_revision_order([put(b"a", 0, 1, 5), read(None, 2, 3, 4, None, consistency="serializable")]).passed


def test_future_revision_refused() -> None:
    bad = req("read", 2, 3, at=5, outcome="fail", detail=json.dumps({"error": gateway.FUTURE_REVISION}))
    result = check_revision_order([put(b"a", 0, 1, 5), bad])
    assert result.ok is False and "future revision" in result.detail
    compacted = req("read", 2, 3, at=2, outcome="fail", detail=json.dumps({"error": gateway.COMPACTED}))
    assert check_revision_order([put(b"a", 0, 1, 5), compacted]).passed


# -- the txn workload against a stand-in for etcd's gateway ---------------------------------


class _Store:
    """A tiny etcd: one revision per write, history kept, compaction."""

    def __init__(self, stale_reads_at_revision: bool = False) -> None:
        self.lock = threading.Lock()
        self.revision = 1
        self.compacted = 0
        self.history: list[tuple[int, bytes, bytes | None]] = []  # (revision, key, value)
        self.stale = stale_reads_at_revision

    def at(self, key: bytes, revision: int) -> dict:
        for rev, k, v in reversed(self.history):
            if k == key and rev <= revision:
                return {} if v is None else {"kvs": [_kv(key, v, rev)], "count": "1"}
        return {}

    def write(self, key: bytes, value: bytes | None) -> None:
        self.revision += 1
        self.history.append((self.revision, key, value))

    def answer(self, path: str, body: dict) -> tuple[int, dict]:
        with self.lock:
            key = base64.b64decode(body.get("key", ""))
            if path == "/v3/kv/range":
                rev = int(body.get("revision", 0)) or self.revision
                if rev <= self.compacted:
                    return 400, {"error": gateway.COMPACTED, "message": gateway.COMPACTED, "code": 11}
                if rev > self.revision:
                    return 400, {"error": gateway.FUTURE_REVISION, "message": gateway.FUTURE_REVISION, "code": 11}
                return 200, {**_header(self.revision), **self.at(key, self.revision if self.stale else rev)}
            if path == "/v3/kv/put":
                self.write(key, base64.b64decode(body["value"]))
                return 200, _header(self.revision)
            if path == "/v3/kv/deleterange":
                if not self.at(key, self.revision):
                    return 200, _header(self.revision)
                self.write(key, None)
                return 200, {**_header(self.revision), "deleted": "1"}
            if path == "/v3/kv/compaction":
                self.compacted = max(self.compacted, int(body["revision"]))
                return 200, _header(self.revision)
            assert path == "/v3/kv/txn", path
            [compare] = body["compare"]
            key = base64.b64decode(compare["key"])
            current = self.at(key, self.revision).get("kvs")
            if compare["target"] == "VERSION":
                swap = not current
            else:
                swap = bool(current) and current[0]["value"] == compare["value"]
            if swap:
                put = body["success"][0]["request_put"]
                self.write(key, base64.b64decode(put["value"]))
            range_answer = self.at(key, self.revision)
            return 200, {**_header(self.revision), "succeeded": swap, "responses": [{"response_range": range_answer}]}


def _serve(store: _Store):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            status, answer = store.answer(self.path, body)
            raw = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    return serving(Handler)


def _run_txn_workload(store: _Store) -> Workload:
    with _serve(store) as address:
        port = int(address.rsplit(":", 1)[1])
        config = WorkloadConfig(clients=4, keys=2, workload="txn", delete_ratio=0.2, compact_ratio=0.01)
        workload = Workload({"a": port, "b": port}, config, seed=5)
        workload.start()
        try:
            wait_until(lambda: len(workload.requests) >= 600, 30, "600 operations")
        finally:
            workload.stop()
    return workload


def test_txn_workload_against_a_correct_store() -> None:
    workload = _run_txn_workload(_Store())
    requests = workload.requests
    counts = Counter((r.op.kind, r.consistency, r.op.outcome, r.op.swapped) for r in requests)
    assert counts[("cas", "linearizable", "ok", True)] and counts[("cas", "linearizable", "ok", False)], counts
    assert counts[("read", "revision", "ok", True)] and counts[("read", "linearizable", "ok", True)], counts
    assert workload.compactions and all(c.outcome == "ok" for c in workload.compactions)
    assert all(r.api == "v3" and r.op.outcome != "unknown" for r in requests)
    assert check(workload.ops).ok
    for result in (check_revision_order(requests), check_read_at_revision(requests)):
        assert result.passed, result.detail
    assert check_no_phantoms(workload.ops, None, workload.side_reads).passed


def test_txn_workload_catches_stale_reads_at_a_revision() -> None:
    requests = _run_txn_workload(_Store(stale_reads_at_revision=True)).requests
    result = check_read_at_revision(requests)
    assert result.ok is False and "written later" in result.detail, result.detail
