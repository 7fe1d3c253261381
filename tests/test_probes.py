"""The probes (``dkv.api.probes``) on in-process stacks: a healthy single
node, a node that never knows a leader, and a leader that cannot confirm a
read (its peers never answer). The 3-node process test is in
``tests.test_metrics_process``.

Never import the reactor or klein at module level here (see conftest)."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import defer

from dkv.api.probes import READY_MAX_LAG
from tests.api_stacks import start_leaderless_stack, start_stuck_leader_stack
from tests.conftest import REST_STACKS, start_stack


async def probe(url: str, method: str = "GET") -> tuple[int, dict | bytes]:
    import treq

    response = await treq.request(method, url.encode("ascii"), persistent=False)
    body = await treq.content(response)
    return response.code, (json.loads(body) if body else body)


@pytest.mark.parametrize("rest", REST_STACKS)
@pytest_twisted.ensureDeferred
async def test_a_healthy_node_answers_every_probe_with_get_and_head(tmp_path, rest: str) -> None:
    stack, stoppers = await start_stack(tmp_path, rest=rest)
    try:
        assert await probe(stack.rest_url + "/health") == (200, {"health": "true"})
        assert await probe(stack.rest_url + "/livez") == (200, {"live": "true"})
        assert await probe(stack.rest_url + "/readyz") == (200, {"ready": "true"})
        for path in ("/health", "/livez", "/readyz", "/metrics"):
            assert await probe(stack.rest_url + path, "HEAD") == (200, b"")
        code, _ = await probe(stack.rest_url + "/health", "POST")
        assert code == 405
    finally:
        for stop in stoppers:
            await defer.maybeDeferred(stop)


@pytest_twisted.ensureDeferred
async def test_a_node_without_a_leader_is_live_but_neither_healthy_nor_ready(tmp_path) -> None:
    stack, stoppers = await start_leaderless_stack(tmp_path)
    try:
        assert await probe(stack.rest_url + "/health") == (503, {"health": "false", "reason": "no leader"})
        assert await probe(stack.rest_url + "/readyz") == (503, {"ready": "false", "reason": "no leader"})
        assert await probe(stack.rest_url + "/livez") == (200, {"live": "true"})
    finally:
        for stop in stoppers:
            await defer.maybeDeferred(stop)


@pytest_twisted.ensureDeferred
async def test_a_leader_that_cannot_confirm_a_read_is_unhealthy_within_the_timeout(tmp_path) -> None:
    from twisted.internet import reactor

    stack, stoppers = await start_stuck_leader_stack(tmp_path, request_timeout=0.3)
    try:
        started = reactor.seconds()
        code, body = await probe(stack.rest_url + "/health")
        assert code == 503 and body["health"] == "false"  # type: ignore[index]
        assert "linearizable read" in body["reason"], body  # type: ignore[index]
        assert reactor.seconds() - started < 0.3 + 2.0
    finally:
        for stop in stoppers:
            await defer.maybeDeferred(stop)


@pytest_twisted.ensureDeferred
async def test_a_node_far_behind_the_commit_it_knows_is_not_ready(tmp_path) -> None:
    stack, stoppers = await start_stack(tmp_path)
    try:
        replication = stack.replication
        # As if a leader's append had carried a commit index this far ahead.
        replication._leader_commit = replication.applied + READY_MAX_LAG + 1
        code, body = await probe(stack.rest_url + "/readyz")
        assert code == 503 and body["ready"] == "false"  # type: ignore[index]
        assert f"{READY_MAX_LAG + 1} entries behind" in body["reason"], body  # type: ignore[index]
        replication._leader_commit = replication.applied + READY_MAX_LAG
        assert await probe(stack.rest_url + "/readyz") == (200, {"ready": "true"})
    finally:
        for stop in stoppers:
            await defer.maybeDeferred(stop)
