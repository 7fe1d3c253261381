"""The fault suite's own parts, without processes: the outcome rules of the
workload, the final checks on hand-made histories (each must catch what it
is for, so a green fault run means something), and the runner's arguments."""

from __future__ import annotations

import pytest

from dkv.testing.checks import (
    check_acknowledged,
    check_convergence,
    check_failed_invisible,
    check_no_phantoms,
    hash_kv_result,
    scan_logs,
)
from dkv.testing.history import Op
from dkv.testing.nemesis import FAULTS, SCHEDULES, NemesisConfig
from dkv.testing.torture import TortureConfig, parse_args
from dkv.testing.workload import classify

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


def test_parse_args_refuses_nonsense(tmp_path) -> None:
    for bad in (["--nemesis", "meteor"], ["--time", "5", "--tail", "6"], ["--fault-seconds", "3,1"]):
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
