"""``GET /v0/cluster`` (``dkv.api.cluster_view``), ``GET /`` (the status page's
HTML), and the counters they show: reads answered (``dkv.request_counts``)
and leader changes seen (the driver's ``leader_changes``).

The view is checked on in-process stacks: members' answers come from a fake
client (exact roles, lags and errors), from a real node's gRPC port and from
an address nobody listens on (``ClusterClient``); the routes are checked over
HTTP on both REST stacks. The browser test is ``tests/test_status_page.py``.

klein and the reactor are imported inside the tests (see tests/conftest.py).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from dkv.aio import deferred_from
from dkv.api.cluster_view import cluster_view
from dkv.ids import member_id
from dkv.node import Node
from dkv.pb import etcd_rpc_pb2 as pb
from tests.api_stacks import start_leaderless_stack, start_stuck_leader_stack
from tests.conftest import REST_STACKS, Stack, start_stack

MEMBER_FIELDS = {
    "id", "address", "voter", "self", "reachable", "error", "role", "term", "leader_id", "commit_index",
    "applied_index", "revision", "db_size", "match_index", "lag",
}  # fmt: skip
TOP_FIELDS = {
    "id", "cluster_id", "role", "term", "leader_id", "commit_index", "applied_index", "last_index", "revision",
    "db_size", "db_size_in_use", "leader_changes", "reads", "lag_basis", "members",
}  # fmt: skip


class FakeMembers:
    """Stands in for ``ClusterClient``: answers each address's status as
    told (a StatusResponse, or an exception to fail with), and records the
    timeouts it was given."""

    def __init__(self, answers: dict[str, pb.StatusResponse | Exception]) -> None:
        self.answers = answers
        self.timeouts: list[float] = []

    def member_status(self, address: str, timeout: float) -> defer.Deferred[pb.StatusResponse]:
        self.timeouts.append(timeout)
        answer = self.answers[address]
        return defer.fail(answer) if isinstance(answer, Exception) else defer.succeed(answer)


def status(
    leader: str, term: int, commit: int, applied: int, revision: int, learner: bool = False
) -> pb.StatusResponse:
    response = pb.StatusResponse(
        leader=member_id(leader) if leader else 0, raftTerm=term, raftIndex=commit, raftAppliedIndex=applied,
        dbSize=8192, isLearner=learner,
    )  # fmt: skip
    response.header.revision = revision
    return response


def by_id(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["id"]: m for m in view["members"]}


async def stopped(stoppers: list) -> None:
    for stop in stoppers:
        await defer.maybeDeferred(stop)


# -- the view, members answering through a fake client --------------------------------


@pytest_twisted.ensureDeferred
async def test_follower_view_lag_is_against_the_leaders_commit(tmp_path) -> None:
    stack, stoppers = await start_leaderless_stack(tmp_path)
    try:
        fake = FakeMembers({
            "127.0.0.1:2": status("b", term=7, commit=40, applied=38, revision=30),
            "127.0.0.1:3": ConnectionRefusedError("connection refused"),
        })  # fmt: skip
        node = Node(stack.replication, stack.store, cluster=fake)  # type: ignore[arg-type]
        view = await cluster_view(node, timeout=0.5)
    finally:
        await stopped(stoppers)
    assert set(view) == TOP_FIELDS
    assert fake.timeouts == [0.5, 0.5]
    assert view["id"] == "a" and view["cluster_id"] == "test-cluster"
    assert view["role"] == "pre-candidate" and view["leader_id"] == ""
    assert view["lag_basis"] == "applied_index"
    members = by_id(view)
    assert list(members) == ["a", "b", "c"]
    assert all(set(m) == MEMBER_FIELDS for m in members.values())
    a, b, c = members["a"], members["b"], members["c"]
    assert a["self"] and a["reachable"] and a["role"] == "pre-candidate" and a["error"] is None
    assert a["applied_index"] == stack.replication.applied and a["revision"] == view["revision"]
    # b says it leads: its commit (40) is what everyone's lag is measured against.
    assert b == {
        "id": "b", "address": "127.0.0.1:2", "voter": True, "self": False, "reachable": True, "error": None,
        "role": "leader", "term": 7, "leader_id": "b", "commit_index": 40, "applied_index": 38, "revision": 30,
        "db_size": 8192, "match_index": None, "lag": 2,
    }  # fmt: skip
    assert a["lag"] == 40 - a["applied_index"]
    # c did not answer: unreachable, with the reason, nothing else known.
    assert c["reachable"] is False and "connection refused" in c["error"]
    assert [c[k] for k in ("role", "term", "commit_index", "applied_index", "lag")] == [None] * 5


@pytest_twisted.ensureDeferred
async def test_leader_view_lag_is_against_the_leaders_last_index(tmp_path) -> None:
    stack, stoppers = await start_stuck_leader_stack(tmp_path)
    try:
        # A write the followers never acknowledge: the leader's last index moves past their match.
        stack.node.put(b"k", b"v").addErrback(lambda _: None)
        fake = FakeMembers({
            "127.0.0.1:2": status("a", term=2, commit=1, applied=1, revision=1),
            "127.0.0.1:3": status("a", term=2, commit=1, applied=1, revision=1, learner=True),
        })  # fmt: skip
        node = Node(stack.replication, stack.store, cluster=fake)  # type: ignore[arg-type]
        st = stack.replication.status()
        view = await cluster_view(node)
    finally:
        await stopped(stoppers)
    assert view["role"] == "leader" and view["leader_id"] == "a"
    assert view["lag_basis"] == "match_index"
    members = by_id(view)
    for i in ("a", "b", "c"):
        assert members[i]["match_index"] == st.match[i]
        assert members[i]["lag"] == st.last_index - st.match[i]
    assert members["b"]["lag"] > 0
    assert members["a"]["role"] == "leader" and members["b"]["role"] == "follower"
    assert members["c"]["role"] == "learner"  # as it says of itself
    assert members["b"]["leader_id"] == "a"


# -- the view over real gRPC -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_members_are_asked_over_grpc_and_an_unreachable_one_is_a_line(tmp_path) -> None:
    from dkv.transport.cluster_client import ClusterClient

    (tmp_path / "other").mkdir()
    (tmp_path / "mine").mkdir()
    other, other_stoppers = await start_stack(tmp_path / "other")  # serves etcd's Maintenance.Status
    stack, stoppers = await start_leaderless_stack(tmp_path / "mine")
    client = ClusterClient(5.0)
    try:
        routes = {"b": other.rpc_address}  # c stays at 127.0.0.1:3, where nobody listens
        node = Node(stack.replication, stack.store, cluster=client, address_of=routes.get)
        view = await cluster_view(node, timeout=2.0)
        expected = (other.replication.applied, other.node.revision(), other.store.size()[0])
    finally:
        await deferred_from(client.close())
        await stopped(stoppers)
        await stopped(other_stoppers)
    members = by_id(view)
    b, c = members["b"], members["c"]
    assert b["reachable"] and b["error"] is None
    # The node behind b's route leads its own one-node cluster as "a".
    assert b["role"] == "follower" and b["leader_id"] == "a"
    assert (b["applied_index"], b["revision"], b["db_size"]) == expected
    assert c["reachable"] is False and c["error"].startswith("UNAVAILABLE")


# -- the routes over HTTP -----------------------------------------------------------------


@pytest.fixture(params=REST_STACKS)
def rest(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest_twisted.async_yield_fixture
async def stack(tmp_path, rest: str) -> AsyncIterator[Stack]:
    s, stoppers = await start_stack(tmp_path, rest=rest)
    try:
        yield s
    finally:
        await stopped(stoppers)


async def fetch(method: str, url: str, body: bytes | None = None) -> tuple[int, str, bytes]:
    import treq

    resp = await treq.request(method, url.encode("ascii"), data=body, persistent=False)
    raw = await treq.content(resp)
    return resp.code, (resp.headers.getRawHeaders(b"content-type") or [b""])[0].decode(), raw


async def cluster_json(stack: Stack) -> dict[str, Any]:
    code, content_type, raw = await fetch("GET", stack.rest_url + "/v0/cluster")
    assert (code, content_type) == (200, "application/json"), raw
    return json.loads(raw)


@pytest_twisted.ensureDeferred
async def test_cluster_route(stack: Stack) -> None:
    await fetch("POST", stack.rest_url + "/v0/kv", json.dumps({"key": "aw==", "value": "dg=="}).encode())
    view = await cluster_json(stack)
    assert set(view) == TOP_FIELDS
    assert view["id"] == "a" and view["role"] == "leader" and view["leader_id"] == "a"
    assert view["revision"] == stack.node.revision() >= 2
    assert view["db_size"] == stack.store.size()[0] and 0 < view["db_size_in_use"] <= view["db_size"]
    assert view["leader_changes"] == 1
    [me] = view["members"]
    assert me["self"] and me["reachable"] and me["role"] == "leader" and me["lag"] == 0
    assert me["match_index"] == view["last_index"]


@pytest_twisted.ensureDeferred
async def test_reads_are_counted(stack: Stack) -> None:
    before = (await cluster_json(stack))["reads"]
    key = base64.b64encode(b"counted").decode()
    await fetch("POST", stack.rest_url + "/v0/kv", json.dumps({"key": key, "value": "dg=="}).encode())
    assert (await fetch("GET", f"{stack.rest_url}/v0/kv/key/{key}"))[0] == 200
    assert (await fetch("GET", f"{stack.rest_url}/v0/kv/key/{key}?consistency=serializable"))[0] == 200
    assert (await fetch("GET", f"{stack.rest_url}/v0/kv/key/bm9uZQ=="))[0] == 404  # an answer: counted
    assert (await fetch("POST", stack.rest_url + "/v3/kv/range", json.dumps({"key": key}).encode()))[0] == 200
    assert (await fetch("GET", stack.rest_url + "/v0/kv/key/"))[0] == 400  # refused: not counted
    assert (await fetch("POST", stack.rest_url + "/v3/kv/range", b"{}"))[0] == 400  # refused: not counted
    assert (await cluster_json(stack))["reads"] == before + 4


@pytest_twisted.ensureDeferred
async def test_status_page_is_one_self_contained_html_page(stack: Stack) -> None:
    code, content_type, raw = await fetch("GET", stack.rest_url + "/")
    assert (code, content_type) == (200, "text/html; charset=utf-8")
    page = raw.decode()
    assert page.startswith("<!doctype html>")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "/v0/cluster" in page
    # No external assets: nothing loaded from anywhere but this node.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert not re.search(r"@import|url\(", page, re.I)
    assert re.findall(r"<link\b[^>]*>", page) == ['<link rel="icon" href="data:,">']  # no favicon request
    assert (await fetch("POST", stack.rest_url + "/"))[0] == 405
