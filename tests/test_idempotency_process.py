"""Exactly-once writes on a real 3-node cluster: a write with an
Idempotency-Key answered by the leader, retried on another node after the
leader is killed, and on the old leader after its restart, gets the
original answer and makes no new revision; a write that timed out (504,
outcome unknown) retried with its key is applied once."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from dkv.testing.cluster import Cluster, b64, wait_until

pytestmark = pytest.mark.process


def call(c: Cluster, node: str, path: str, body: Any, key: str | None, timeout: float = 10.0) -> tuple[int, Any]:
    """POST body as JSON to node's REST port with an Idempotency-Key."""
    conn = http.client.HTTPConnection("127.0.0.1", c.rest_ports[node], timeout=timeout)
    try:
        headers = {"content-type": "application/json"}
        if key is not None:
            headers["idempotency-key"] = key
        conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _without_node(body: dict[str, Any]) -> dict[str, Any]:
    """The answer without what names the answering member and its term."""
    header = {k: v for k, v in body["header"].items() if k not in ("member_id", "raft_term")}
    return {**body, "header": header}


def _range(c: Cluster, node: str, key: bytes) -> dict[str, Any]:
    status, body = call(c, node, "/v3/kv/range", {"key": b64(key)}, None)
    assert status == 200, body
    return body


def test_retry_on_another_node_after_the_leader_dies_gets_the_original_answer(tmp_path) -> None:
    with Cluster(tmp_path, ["a", "b", "c"]) as c:
        c.start()
        first_leader = c.wait_settled()
        others = [i for i in c.ids if i != first_leader]
        put = {"key": b64(b"once"), "value": b64(b"v1"), "prev_kv": True}
        assert call(c, first_leader, "/v3/kv/put", {"key": b64(b"once"), "value": b64(b"v0")}, None)[0] == 200
        status, first = call(c, first_leader, "/v3/kv/put", put, "op-1")
        assert status == 200, first
        revision = first["header"]["revision"]
        assert first["prev_kv"]["value"] == b64(b"v0")

        c.kill(first_leader)
        new_leader = c.leader(among=others)
        retry_on = next(i for i in others if i != new_leader)  # a follower: it forwards to the new leader
        status, again = call(c, retry_on, "/v3/kv/put", put, "op-1", timeout=c.client_timeout)
        assert status == 200, again
        assert _without_node(again) == _without_node(first)
        state = _range(c, retry_on, b"once")
        assert state["header"]["revision"] == revision  # no new revision
        assert state["kvs"][0]["version"] == "2" and state["kvs"][0]["mod_revision"] == revision

        status, refused = call(c, new_leader, "/v3/kv/put", {**put, "value": b64(b"v2")}, "op-1")
        assert status == 422 and "different request" in refused["message"]

        c.restart(first_leader)
        index = c.statuses([new_leader])[new_leader]["commit_index"]
        c.wait_applied(first_leader, index)
        status, after_restart = call(c, first_leader, "/v3/kv/put", put, "op-1", timeout=c.client_timeout)
        assert status == 200 and _without_node(after_restart) == _without_node(first)
        assert _range(c, first_leader, b"once")["header"]["revision"] == revision


def test_a_write_that_timed_out_is_applied_once_when_retried_with_its_key(tmp_path) -> None:
    with Cluster(tmp_path, ["a", "b", "c"], request_timeout=1.0) as c:
        c.start()
        leader = c.wait_settled()
        others = [i for i in c.ids if i != leader]
        c.isolate(leader)  # its appends reach no one: the write's outcome is unknown
        body = {"key": b64(b"maybe"), "value": b64(b"once")}
        status, _ = call(c, leader, "/v0/kv", body, "unknown-1", timeout=c.client_timeout)
        assert status in (503, 504)  # 504: proposed, outcome unknown; 503: never proposed
        c.heal()

        def retried() -> tuple[int, Any] | None:
            for node in others:
                try:
                    status, answer = call(c, node, "/v0/kv", body, "unknown-1", timeout=c.client_timeout)
                except (OSError, http.client.HTTPException):
                    continue
                if status == 200:
                    return status, answer
            return None

        assert wait_until(retried, 30.0, "the retry to be acknowledged") == (200, {})
        # And once more, anywhere: still one write.
        assert wait_until(retried, 30.0, "a second retry") == (200, {})
        node = others[0]
        kvs = _range(c, node, b"maybe")["kvs"]
        assert kvs[0]["version"] == "1" and kvs[0]["value"] == b64(b"once")
