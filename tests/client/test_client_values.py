"""The JSON dkv.client sends (etcd's gateway mapping: base64, int64 as
strings, enums by name, defaults omitted) and how it reads answers that omit
every default."""

from __future__ import annotations

import pytest

from dkv.client import txn
from dkv.client.requests import delete_request, put_request, range_request, watch_create_request
from dkv.client.values import Event, KeyValue, LeaseTimeToLive, Member, RangeResult, Status, TxnResult, prefix_end


def test_prefix_end_follows_etcds_rule() -> None:
    assert prefix_end(b"foo") == b"fop"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert prefix_end(b"") == b"\0"


def test_request_bodies() -> None:
    assert range_request(b"k") == {"key": "aw=="}
    assert range_request(
        b"k", prefix=True, revision=5, limit=1, sort_target="create", sort_order="DESCEND", max_create_revision=9,
        serializable=True,
    ) == {
        "key": "aw==", "range_end": "bA==", "revision": "5", "limit": "1", "max_create_revision": "9",
        "sort_target": "CREATE", "sort_order": "DESCEND", "serializable": True,
    }  # fmt: skip
    assert range_request(b"a", from_key=True) == {"key": "YQ==", "range_end": "AA=="}
    assert put_request(b"k", b"", lease=2**62, prev_kv=True) == {
        "key": "aw==", "value": "", "lease": str(2**62), "prev_kv": True
    }  # fmt: skip
    assert delete_request(b"a", b"c") == {"key": "YQ==", "range_end": "Yw=="}
    assert watch_create_request(b"k", start_revision=3, no_delete=True, prev_kv=True) == {
        "key": "aw==", "start_revision": "3", "filters": ["NODELETE"], "prev_kv": True
    }  # fmt: skip
    with pytest.raises(ValueError):
        range_request(b"k", b"z", prefix=True)
    with pytest.raises(ValueError):
        range_request(b"k", sort_target="SIZE")


def test_the_txn_builder() -> None:
    t = (
        txn.Txn()
        .when(txn.value(b"k") == b"v", txn.create_revision(b"k") > 0, txn.version(b"a", b"b") != 2)
        .when(txn.mod_revision(b"k") < 9, txn.lease(b"k") == 0)
        .then(txn.put(b"k", b"w", lease=7), txn.get(b"k", prefix=True))
        .otherwise(txn.delete(b"k", prev_kv=True))
    )
    assert t.writes and not txn.Txn().then(txn.get(b"k")).writes
    assert t.body() == {
        "compare": [
            {"key": "aw==", "target": "VALUE", "result": "EQUAL", "value": "dg=="},
            {"key": "aw==", "target": "CREATE", "result": "GREATER", "create_revision": "0"},
            {"key": "YQ==", "range_end": "Yg==", "target": "VERSION", "result": "NOT_EQUAL", "version": "2"},
            {"key": "aw==", "target": "MOD", "result": "LESS", "mod_revision": "9"},
            {"key": "aw==", "target": "LEASE", "result": "EQUAL", "lease": "0"},
        ],
        "success": [
            {"request_put": {"key": "aw==", "value": "dw==", "lease": "7"}},
            {"request_range": {"key": "aw==", "range_end": "bA=="}},
        ],
        "failure": [{"request_delete_range": {"key": "aw==", "prev_kv": True}}],
    }
    with pytest.raises(TypeError):
        txn.value(b"k") == "text"  # noqa: B015
    with pytest.raises(TypeError):
        txn.version(b"k") == b"1"  # noqa: B015


def test_answers_with_omitted_defaults() -> None:
    empty = RangeResult.from_json({"header": {"revision": "3"}})
    assert (empty.header.revision, empty.kvs, empty.count, empty.more) == (3, (), 0, False)
    kv = KeyValue.from_json({"key": "aw==", "create_revision": "2", "mod_revision": "4", "version": "3"})
    assert kv == KeyValue(b"k", b"", 2, 4, 3, 0)
    answer = TxnResult.from_json(
        {
            "header": {"revision": "4"},
            "responses": [
                {"response_put": {"header": {"revision": "4"}}},
                {"response_range": {"header": {"revision": "4"}, "kvs": [{"key": "aw=="}], "count": "1"}},
                {"response_delete_range": {"header": {}, "deleted": "1"}},
            ],
        }
    )
    assert not answer.succeeded and [type(r).__name__ for r in answer.responses] == [
        "PutResult", "RangeResult", "DeleteResult"
    ]  # fmt: skip
    deleted = Event.from_json({"type": "DELETE", "kv": {"key": "aw==", "mod_revision": "6"}})
    assert (deleted.type, deleted.revision, deleted.prev_kv) == ("DELETE", 6, None)
    assert Event.from_json({"kv": {"key": "aw=="}}).type == "PUT"
    assert Member.from_json({"ID": "18446744073709551615", "name": "e0"}).id == 2**64 - 1
    assert Status.from_json({"header": {}, "leader": "5", "dbSize": "20480"}).db_size == 20480
    assert LeaseTimeToLive.from_json({"ID": "1", "TTL": "-1"}) == LeaseTimeToLive(1, -1, 0, ())


def test_an_empty_prefix_or_start_means_every_key() -> None:
    assert range_request(b"", prefix=True) == range_request(b"", from_key=True) == {"key": "AA==", "range_end": "AA=="}
