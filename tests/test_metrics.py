"""The node's metrics (``dkv.metrics``): names, types and values as
Prometheus' own parser reads them; the REST port's request labels
(``dkv.api.http_metrics``); the gRPC interceptor (``dkv.grpc_metrics``);
the key count's bookkeeping; and the routes on a real single-node stack.

Never import the reactor or klein at module level here (see conftest)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer

from dkv.metrics import CONTENT_TYPE, NodeMetrics, NodeState, RequestMeter
from dkv.mvcc.view import key_count_change
from dkv.pb.etcd_kv_pb2 import Event, KeyValue
from tests.conftest import REST_STACKS, Stack, start_stack


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


# -- the module ----------------------------------------------------------------------------


def test_state_families_carry_etcds_names_types_and_values() -> None:
    metrics = NodeMetrics()
    metrics.read_state = lambda: NodeState(
        has_leader=True, is_leader=False, leader_changes=3, committed_index=17, applied_index=16,
        proposals_pending=2, proposals_failed=1, db_size=65536, db_size_in_use=32768, keys=5, watchers=4,
        leases=2, snapshots_saved=6, snapshots_installed=1, peer_sent={"b": 10}, peer_received={"c": 20},
        auth_failures={"denied": 3, "bad_token": 1},
    )  # fmt: skip
    text = metrics.render().decode()
    found = families(text)
    expected_types = {
        "dkv_server_has_leader": "gauge",
        "dkv_server_is_leader": "gauge",
        "dkv_server_leader_changes_seen": "counter",
        "dkv_server_proposals_committed_total": "gauge",
        "dkv_server_proposals_applied_total": "gauge",
        "dkv_server_proposals_pending": "gauge",
        "dkv_server_proposals_failed": "counter",
        "dkv_disk_wal_fsync_duration_seconds": "histogram",
        "dkv_disk_backend_commit_duration_seconds": "histogram",
        "dkv_network_peer_round_trip_time_seconds": "histogram",
        "dkv_network_peer_sent_bytes": "counter",
        "dkv_network_peer_received_bytes": "counter",
        "dkv_mvcc_db_total_size_in_bytes": "gauge",
        "dkv_mvcc_db_total_size_in_use_in_bytes": "gauge",
        "dkv_debugging_mvcc_keys_total": "gauge",
        "dkv_debugging_mvcc_watcher_total": "gauge",
        "dkv_debugging_lease_total": "gauge",
        "dkv_snapshot_save": "counter",
        "dkv_snapshot_install": "counter",
        "dkv_http_requests": "counter",
        "dkv_http_request_duration_seconds": "histogram",
        "dkv_grpc_server_started": "counter",
        "dkv_grpc_server_handled": "counter",
        "dkv_grpc_server_handling_seconds": "histogram",
        "dkv_auth_failures": "counter",
    }
    assert {name: found[name].type for name in expected_types} == expected_types
    values = samples(text)
    assert values[("dkv_server_has_leader", ())] == 1
    assert values[("dkv_server_is_leader", ())] == 0
    assert values[("dkv_server_leader_changes_seen_total", ())] == 3
    assert values[("dkv_server_proposals_committed_total", ())] == 17
    assert values[("dkv_server_proposals_applied_total", ())] == 16
    assert values[("dkv_server_proposals_pending", ())] == 2
    assert values[("dkv_server_proposals_failed_total", ())] == 1
    assert values[("dkv_mvcc_db_total_size_in_bytes", ())] == 65536
    assert values[("dkv_debugging_mvcc_keys_total", ())] == 5
    assert values[("dkv_debugging_mvcc_watcher_total", ())] == 4
    assert values[("dkv_debugging_lease_total", ())] == 2
    assert values[("dkv_snapshot_save_total", ())] == 6
    assert values[("dkv_snapshot_install_total", ())] == 1
    assert values[("dkv_network_peer_sent_bytes_total", (("To", "b"),))] == 10
    assert values[("dkv_network_peer_received_bytes_total", (("From", "c"),))] == 20
    reasons = ("no_user", "bad_token", "denied", "authenticate")
    failures = {reason: values[("dkv_auth_failures_total", (("reason", reason),))] for reason in reasons}
    assert failures == {"no_user": 0, "bad_token": 1, "denied": 3, "authenticate": 0}
    assert "_created" not in text
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")


def test_without_a_state_only_the_instruments_are_exposed() -> None:
    found = families(NodeMetrics().render().decode())
    assert "dkv_server_has_leader" not in found
    assert "dkv_disk_wal_fsync_duration_seconds" in found


def test_registries_of_two_nodes_are_apart() -> None:
    one, two = NodeMetrics(), NodeMetrics()
    one.observe_commit(0.003, wrote_log=True, applied=False)
    one.http.observe(("v0", "put"), "200", 0.001)
    values_one, values_two = samples(one.render().decode()), samples(two.render().decode())
    assert values_one[("dkv_disk_wal_fsync_duration_seconds_count", ())] == 1
    assert values_one[("dkv_disk_backend_commit_duration_seconds_count", ())] == 0
    assert values_two[("dkv_disk_wal_fsync_duration_seconds_count", ())] == 0
    assert ("dkv_http_requests_total", (("api", "v0"), ("code", "200"), ("route", "put"))) not in values_two


def test_a_request_meter_counts_by_code_and_times_without_it() -> None:
    meter = RequestMeter(("t_requests", "h"), ("t_seconds", "h"), ["route"], "code", buckets=(0.01, 0.1, 1.0))
    metrics = NodeMetrics()
    metrics.registry.register(type("C", (), {"collect": lambda self: meter.collect()})())
    for seconds, code in [(0.005, "200"), (0.01, "200"), (0.05, "503"), (5.0, "200")]:
        meter.observe(("put",), code, seconds)
    values = samples(metrics.render().decode())
    assert values[("t_requests_total", (("code", "200"), ("route", "put")))] == 3
    assert values[("t_requests_total", (("code", "503"), ("route", "put")))] == 1
    buckets = {dict(labels)["le"]: v for (name, labels), v in values.items() if name == "t_seconds_bucket"}
    # Cumulative, "le" inclusive (0.01 falls in the 0.01 bucket), +Inf counts all.
    assert buckets == {"0.01": 2, "0.1": 3, "1.0": 3, "+Inf": 4}
    assert values[("t_seconds_count", (("route", "put"),))] == 4
    assert values[("t_seconds_sum", (("route", "put"),))] == pytest.approx(5.065)
    assert meter.count(("put",), "503") == 1


def test_the_key_count_follows_creations_and_deletions() -> None:
    def put(version: int) -> Event:
        return Event(type=Event.PUT, kv=KeyValue(key=b"k", version=version))

    deleted = Event(type=Event.DELETE, kv=KeyValue(key=b"k"))
    assert key_count_change([put(1), put(2), put(1), deleted]) == 1
    assert key_count_change([]) == 0


# -- on a real single-node stack -----------------------------------------------------------


@pytest_twisted.async_yield_fixture(params=REST_STACKS)
async def served(tmp_path, request) -> AsyncIterator[Stack]:
    stack, stoppers = await start_stack(tmp_path, rest=request.param)
    try:
        yield stack
    finally:
        for stop in stoppers:
            await defer.maybeDeferred(stop)


async def raw_get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    import treq

    response = await treq.request(method, url.encode("ascii"), persistent=False)
    body = await treq.content(response)
    return response.code, (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode(), body


@pytest_twisted.ensureDeferred
async def test_get_metrics_serves_the_text_format_on_both_stacks(served: Stack) -> None:
    from tests.test_rest import put

    await put(served, b"k", b"v")
    code, content_type, body = await raw_get(served.rest_url + "/metrics")
    assert (code, content_type) == (200, CONTENT_TYPE)
    found = families(body.decode())
    # Without wiring (dkv.node_tree sets read_state) only the instruments are there.
    assert "dkv_http_requests" in found
    code, _, head_body = await raw_get(served.rest_url + "/metrics", "HEAD")
    assert (code, head_body) == (200, b"")


@pytest_twisted.ensureDeferred
async def test_the_front_door_counts_fast_and_klein_requests_by_route_and_code(tmp_path) -> None:
    from tests.test_rest import get, put, request

    stack, stoppers = await start_stack(tmp_path, rest="front-door")
    try:
        meter = stack.node.metrics.http
        await put(stack, b"k", b"v")  # fast
        await get(stack, "bm8=")  # fast, 404
        await request("GET", stack.rest_url + "/v0/status")  # Klein
        await request("DELETE", stack.rest_url + "/v0/members/zz")  # Klein, a route with a parameter
        await request("GET", stack.rest_url + "/nowhere")  # no route
        await request("POST", stack.rest_url + "/v3/kv/range", b'{"key":"aw=="}')
        assert meter.count(("v0", "put"), "200") == 1
        assert meter.count(("v0", "get"), "404") == 1
        assert meter.count(("v0", "status"), "200") == 1
        assert meter.count(("v0", "remove_member"), "404") == 1
        assert meter.count(("other", "unknown"), "404") == 1
        assert meter.count(("v3", "etcd_v3_kv_range"), "200") == 1
        values = samples(stack.node.metrics.render().decode())
        assert values[("dkv_http_request_duration_seconds_count", (("api", "v0"), ("route", "put")))] == 1
    finally:
        for stop in stoppers:
            await defer.maybeDeferred(stop)


@pytest_twisted.ensureDeferred
async def test_the_grpc_interceptor_counts_calls_by_method_and_code(tmp_path) -> None:
    from grpc import aio

    from dkv.api import etcd_grpc
    from dkv.grpc_metrics import MetricsInterceptor
    from dkv.grpc_server import GrpcServerService
    from dkv.pb import etcd_rpc_pb2 as pb
    from dkv.pb import etcd_rpc_pb2_grpc as pb_grpc
    from tests.test_grpc_kv import wait

    stack, stoppers = await start_stack(tmp_path)
    metrics = stack.node.metrics
    server = GrpcServerService(
        "127.0.0.1", 0, [lambda s: etcd_grpc.register(s, stack.node)], max_message_bytes=1 << 20,
        interceptors=[MetricsInterceptor(metrics)],
    )  # fmt: skip
    server.startService()
    channel = aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        kv = pb_grpc.KVStub(channel)
        await wait(kv.Put(pb.PutRequest(key=b"a", value=b"1")))
        await wait(kv.Range(pb.RangeRequest(key=b"a")))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await wait(kv.Range(pb.RangeRequest(key=b"")))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        lease = pb_grpc.LeaseStub(channel)
        granted = await wait(lease.LeaseGrant(pb.LeaseGrantRequest(TTL=60)))

        async def keep_alive() -> list[Any]:
            call = lease.LeaseKeepAlive(iter([pb.LeaseKeepAliveRequest(ID=granted.ID)]))
            return [r async for r in call]

        assert len(await wait(keep_alive())) == 1
        grpc_meter = metrics.grpc
        assert grpc_meter.count(("unary", "etcdserverpb.KV", "Put"), "OK") == 1
        assert grpc_meter.count(("unary", "etcdserverpb.KV", "Range"), "OK") == 1
        assert grpc_meter.count(("unary", "etcdserverpb.KV", "Range"), "INVALID_ARGUMENT") == 1
        assert metrics.grpc_started_counts[("unary", "etcdserverpb.KV", "Range")] == 2
        keep_alives = ("bidi_stream", "etcdserverpb.Lease", "LeaseKeepAlive")
        await wait_until_counted(lambda: grpc_meter.count(keep_alives, "OK"))
        values = samples(metrics.render().decode())
        labels = (("grpc_method", "Range"), ("grpc_service", "etcdserverpb.KV"), ("grpc_type", "unary"))
        assert values[("dkv_grpc_server_handling_seconds_count", labels)] == 2
    finally:
        await wait(channel.close())
        await server.stopService()
        for stop in stoppers:
            await defer.maybeDeferred(stop)


async def wait_until_counted(count: Any) -> None:
    from tests.conftest import wait_for

    await wait_for(lambda: count() == 1, what="the stream counted once it ended")
