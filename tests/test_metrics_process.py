"""Metrics and probes of a real 3-node cluster (``dkv.testing.cluster``).

- ``/metrics`` parses with prometheus_client's own parser on every node;
  after N writes the committed and applied indexes
  (``dkv_server_proposals_committed_total`` / ``..._applied_total``, gauges
  of the indexes as etcd's) moved by N plus the entries the cluster wrote
  itself meanwhile: one no-op per new leader term (no membership change,
  lease or compaction happens in the test), so by N exactly while the term
  stays; and the request counters moved by route and code.
- ``/health`` turns 503 on a node cut off from both peers within the
  request timeout and back to 200 after healing; ``/readyz`` follows;
  ``/livez`` stays 200.
- ``--metrics-port`` serves the same families.
"""

from __future__ import annotations

import http.client
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dkv.testing.cluster import Cluster, free_ports, wait_until

pytestmark = pytest.mark.process

WRITES = 20


def scrape(port: int, path: str = "/metrics") -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode()
        assert response.status == 200, body
        assert response.getheader("content-type", "").startswith("text/plain; version=0.0.4")
        return body
    finally:
        conn.close()


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_with_writes_and_health_follows_a_partition(tmp_path) -> None:
    [metrics_port] = free_ports(1)
    with Cluster(tmp_path, ["a", "b", "c"]) as c:
        c.nodes["a"].reconfigure(extra_args=("--metrics-port", str(metrics_port)))
        c.start()
        leader = c.wait_settled()

        def scrape_all() -> dict[str, Any]:
            return {n: values(scrape(c.rest_ports[n])) for n in c.ids}

        before = scrape_all()
        term_before = c.status(leader)[1]["term"]
        for n in c.ids:
            assert value(before[n], "dkv_server_has_leader") == 1
            assert value(before[n], "dkv_server_is_leader") == (1 if n == leader else 0)
            assert value(before[n], "dkv_server_leader_changes_seen_total") >= 1
        for i in range(WRITES):
            assert c.put(leader, f"key-{i}", "v")[0] == 200

        def moved() -> dict[str, Any] | None:
            now = scrape_all()
            done = all(
                value(now[n], "dkv_server_proposals_applied_total")
                - value(before[n], "dkv_server_proposals_applied_total") >= WRITES
                for n in c.ids
            )
            return now if done else None

        after = wait_until(moved, timeout=30, what=f"{WRITES} writes applied on every node")
        term_after = c.status(leader)[1]["term"]
        for n in c.ids:
            for name in ("dkv_server_proposals_committed_total", "dkv_server_proposals_applied_total"):
                delta = value(after[n], name) - value(before[n], name)
                # N writes plus one no-op per new term (none while the leader stays).
                assert WRITES <= delta <= WRITES + (term_after - term_before), (n, name, delta)
            assert value(after[n], "dkv_debugging_mvcc_keys_total") == WRITES
            assert value(after[n], "dkv_disk_wal_fsync_duration_seconds_count") > value(
                before[n], "dkv_disk_wal_fsync_duration_seconds_count"
            )
            assert value(after[n], "dkv_disk_backend_commit_duration_seconds_count") > 0
            assert value(after[n], "dkv_mvcc_db_total_size_in_bytes") > 0
            # Raft traffic flows between the leader and each follower.
            for peer in c.ids if n == leader else [leader]:
                if peer != n:
                    assert value(after[n], "dkv_network_peer_sent_bytes_total", To=peer) > 0
                    assert value(after[n], "dkv_network_peer_received_bytes_total", From=peer) > 0
        put = {"api": "v0", "route": "put", "code": "200"}
        assert value(after[leader], "dkv_http_requests_total", **put) - value(
            before[leader], "dkv_http_requests_total", **put
        ) == WRITES
        assert value(after[leader], "dkv_http_request_duration_seconds_count", api="v0", route="put") >= WRITES
        followers = [n for n in c.ids if n != leader]
        rtt = [value(after[leader], "dkv_network_peer_round_trip_time_seconds_count", To=f) for f in followers]
        assert all(count > 0 for count in rtt), rtt
        # Raft traffic took the peer port (the default native peer protocol), not gRPC's Raft streams.
        assert value(after[leader], "dkv_grpc_server_started_total", grpc_type="client_stream",
                     grpc_service="dkv.raft.v0.Raft", grpc_method="Stream") == 0  # fmt: skip

        # --metrics-port serves the same families as the REST port.
        apart = {f.name for f in text_string_to_metric_families(scrape(metrics_port))}
        on_rest = {f.name for f in text_string_to_metric_families(scrape(c.rest_ports["a"]))}
        assert apart == on_rest and "dkv_server_has_leader" in apart

        # Probes on a healthy cluster.
        for n in c.ids:
            assert c.request(n, "GET", "/health") == (200, {"health": "true"})
            assert c.request(n, "GET", "/livez") == (200, {"live": "true"})
            assert c.request(n, "GET", "/readyz") == (200, {"ready": "true"})

        # A minority: cut one follower off from both peers (both directions).
        lone = followers[0]
        c.partition([lone], [n for n in c.ids if n != lone])
        timeout = c.request_timeout or 5.0

        def unhealthy() -> Any:
            code, body = c.request(lone, "GET", "/health")
            return body if code == 503 else None

        # Within an election timeout the node stops trusting its leader, and
        # a /health read fails within the request timeout.
        body = wait_until(unhealthy, timeout=timeout + 10, what=f"/health 503 on {lone}")
        assert body["health"] == "false" and body["reason"], body
        assert c.request(lone, "GET", "/livez") == (200, {"live": "true"})
        for n in c.ids:
            if n != lone:
                assert c.request(n, "GET", "/health") == (200, {"health": "true"})
        code, ready = c.request(lone, "GET", "/readyz")
        assert (code, ready.get("ready")) in ((503, "false"), (200, "true")), ready

        c.heal()
        wait_until(lambda: c.request(lone, "GET", "/health") == (200, {"health": "true"}), timeout=30,
                   what=f"/health 200 on {lone} after healing")  # fmt: skip
        wait_until(lambda: c.request(lone, "GET", "/readyz") == (200, {"ready": "true"}), timeout=30,
                   what=f"/readyz 200 on {lone} after healing")  # fmt: skip
        healed = values(scrape(c.rest_ports[lone]))
        assert value(healed, "dkv_http_requests_total", api="other", route="health", code="503") >= 1
