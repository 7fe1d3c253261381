"""Issue 5 on real processes: compaction, a node that joins and catches up by
snapshot, promotion, growing to five, removing two, losing the leader of the
new configuration, and nothing acknowledged lost."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from dkv.testing.cluster import Cluster
from dkv.testing.poll import wait_until
from dkv.testing.rest_client import b64, http_request

pytestmark = pytest.mark.process

SNAPSHOT_ARGS = ["--snapshot-entries", "2000", "--snapshot-keep-entries", "300"]


def put_many(cluster: Cluster, ids: list[str], keys: range, threads: int = 16) -> set[int]:
    """Put key i -> value i for every i, spread over nodes; returns the
    acknowledged ones (retrying 503s, which are certainly not applied)."""
    acked: set[int] = set()
    lock = threading.Lock()

    def worker(chunk: list[int]) -> None:
        for i in chunk:
            for attempt in range(20):
                node = ids[(i + attempt) % len(ids)]
                try:
                    code, _ = http_request(
                        cluster.rest_ports[node],
                        "POST",
                        "/v0/kv",
                        {"key": b64(b"k%d" % i), "value": b64(b"v%d" % i)},
                        timeout=10,
                    )
                except OSError:
                    continue
                if code == 200:
                    with lock:
                        acked.add(i)
                    break
                if code != 503:
                    break  # 504: unknown, leave it out of the acknowledged set

    chunks = [list(keys)[n::threads] for n in range(threads)]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, chunks))
    return acked


def members(cluster: Cluster, node: str) -> dict:
    code, body = cluster.request(node, "GET", "/v0/members")
    assert code == 200, body
    return body


def test_grow_shrink_and_lose_the_leader() -> None:
    with Cluster(extra_args=SNAPSHOT_ARGS, request_timeout=3.0) as cluster:
        cluster.start()
        leader = cluster.leader(timeout=20)
        acked = put_many(cluster, ["a", "b", "c"], range(30_000))
        assert len(acked) >= 29_000, f"only {len(acked)} of 30000 writes acknowledged"
        for node in "abc":
            status = cluster.wait_applied(node, cluster.status(leader)[1]["commit_index"], timeout=60)
            assert status["first_index"] > 20_000, f"{node}: log not compacted: {status}"

        # A fourth node joins as a learner and catches up by snapshot.
        cluster.add_node("d", "b")  # --join via b, empty db; dials its peers directly
        commit = cluster.status(cluster.leader())[1]["commit_index"]
        d_status = cluster.wait_applied("d", commit, timeout=60)
        assert d_status["snapshot_index"] > 20_000, d_status
        assert "installed a snapshot" in cluster.nodes["d"].log_text()
        view = members(cluster, "a")
        assert {m["id"]: m["voter"] for m in view["members"]} == {"a": True, "b": True, "c": True, "d": False}
        # It serves linearizable reads.
        for i in (0, 12_345, 29_999):
            if i in acked:
                assert cluster.get_value("d", b"k%d" % i) == (200, b"v%d" % i)

        # Promote it, through a follower (forwarded to the leader).
        follower = next(n for n in "abc" if n != cluster.leader())
        code, body = cluster.request(follower, "POST", "/v0/members/d/promote")
        assert code == 200, body
        assert {m["id"] for m in body["members"] if m["voter"]} == {"a", "b", "c", "d"}

        # A fifth joins and promotes itself once it has caught up.
        cluster.add_node("e", "a", auto_promote=True)
        wait_until(
            lambda: all(m["voter"] for m in members(cluster, "a")["members"]), timeout=60, what="e to become a voter"
        )
        more = put_many(cluster, ["a", "d", "e"], range(30_000, 31_000))

        # Remove two of the original three (one at a time), leader first if it is one of them.
        doomed = sorted({"b", "c"} | ({cluster.leader()} & {"a", "b", "c"}))[:2]
        for node in doomed:
            via = next(n for n in "abcde" if n not in doomed)
            code, body = cluster.request(via, "DELETE", f"/v0/members/{node}", timeout=15)
            assert code == 200, body
            assert node not in {m["id"] for m in body["members"]}
            wait_until(lambda n=node: not cluster.nodes[n].alive, timeout=20, what=f"{node} to stop")
            assert cluster.nodes[node].returncode == 0, f"{node} should exit cleanly"
        survivors = [n for n in "abcde" if n not in doomed]
        assert len(survivors) == 3

        # Kill the leader of the new configuration; the other two carry on.
        new_leader = cluster.leader(timeout=20, among=survivors)
        cluster.kill(new_leader)
        rest = [n for n in survivors if n != new_leader]
        cluster.leader(timeout=20, among=rest)
        acked |= more | put_many(cluster, rest, range(31_000, 31_200))

        # Every acknowledged write is still there.
        reader = cluster.leader(among=rest)
        wait_until(
            lambda: cluster.status(reader)[1]["applied_index"] >= cluster.status(reader)[1]["commit_index"],
            what="the leader to apply everything",
        )
        missing = []

        def check(i: int) -> None:
            code, value = cluster.get_value(reader, b"k%d" % i, consistency="serializable")
            if (code, value) != (200, b"v%d" % i):
                missing.append((i, code, value))

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(check, sorted(acked)))
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"


def test_transfer_leadership_over_rest() -> None:
    with Cluster() as cluster:
        cluster.start()
        leader = cluster.leader(timeout=20)
        target = next(n for n in "abc" if n != leader)
        via = next(n for n in "abc" if n not in (leader, target))
        answers = []

        def transferred() -> bool:
            # A 503 (no leader known yet, or the transfer timed out on a busy
            # machine) is retryable by contract; any other answer is final.
            answers.append(cluster.request(via, "POST", "/v0/leader/transfer", {"to": target}, timeout=10))
            return answers[-1][0] != 503

        wait_until(transferred, timeout=30, what="an answer to the transfer other than 503")
        assert answers[-1] == (200, {"leader_id": target}), answers
        assert cluster.leader(timeout=10) == target
        code, body = cluster.request(target, "POST", "/v0/leader/transfer", {"to": "nope"})
        assert code == 409 and body["code"] == 9, body


def test_membership_errors_over_rest() -> None:
    with Cluster() as cluster:
        cluster.start()
        leader = cluster.leader(timeout=20)
        cases = [
            ("DELETE", "/v0/members/zz", None, 404, 5),
            ("POST", "/v0/members/zz/promote", None, 404, 5),
            ("POST", "/v0/members", {"id": "b", "address": "127.0.0.1:1"}, 409, 9),
            ("POST", "/v0/members", {"id": "bad id", "address": "127.0.0.1:1"}, 400, 3),
            ("POST", "/v0/members", {"id": "x", "address": "nowhere"}, 400, 3),
            ("POST", "/v0/members", {"id": "x", "address": "127.0.0.1:1", "learner": "yes"}, 400, 3),
            ("POST", "/v0/members", {"address": "127.0.0.1:1"}, 400, 3),
        ]
        for node in (leader, next(n for n in "abc" if n != leader)):
            for method, path, body, status, code in cases:
                got, answer = cluster.request(node, method, path, body)
                assert (got, answer.get("code")) == (status, code), (node, method, path, answer)
        assert len(members(cluster, leader)["members"]) == 3
