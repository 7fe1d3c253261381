"""Three real nodes with a fault-injecting proxy on every peer link: the
README's example, crashes (kill -9), a paused leader, partitions, and nodes
started in any order.

Each test starts its own cluster in ``tmp_path`` (see ``dkv.testing.cluster``);
on failure the tail of every node's log is printed to stderr. Timings are
fast: 50 ms ticks, an election timeout of 0.5-1 s, a request timeout of 2 s.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from typing import Any

import pytest

from dkv.testing.cluster import Cluster
from dkv.testing.poll import wait_until
from dkv.testing.rest_client import b64, unb64

pytestmark = pytest.mark.process

#: Answers that mean "not done, retry" (no leader / outcome unknown).
RETRYABLE = (503, 504)


def eventually_reads(c: Cluster, node_id: str, key: str, value: str, consistency: str = "serializable",
                     timeout: float = 15.0) -> None:  # fmt: skip
    """Poll until node_id answers value for key."""
    wait_until(
        lambda: c.get_value(node_id, key, consistency) == (200, value.encode()),
        timeout,
        f"{node_id} to read {key}={value} ({consistency})",
    )


def timed_put(c: Cluster, node_id: str, key: str, value: str) -> tuple[int, Any, float]:
    start = time.monotonic()
    code, body = c.put(node_id, key, value)
    return code, body, time.monotonic() - start


def assert_refused_in_time(c: Cluster, code: int, body: Any, elapsed: float) -> None:
    """A write that cannot commit: 503 (certainly not applied) or 504 (unknown),
    within the request timeout plus a margin, with the documented body."""
    assert code in RETRYABLE, (code, body)
    expected = {503: {"error": "no leader", "code": 14}, 504: {"error": "outcome unknown", "code": 4}}[code]
    assert body["code"] == expected["code"], body
    assert elapsed <= c.request_timeout + 1.5, f"answered after {elapsed:.2f}s"


def test_readme_three_nodes(tmp_path) -> None:
    """Start three nodes at once: the first listed leads; a write to the leader
    and one to a follower are readable on every node, both ways of reading.
    Like the README, the nodes are configured with DKV_* variables."""
    with Cluster(tmp_path, configure_with="env") as c:
        c.start()
        leader = c.leader()
        assert leader == "a", "the first node in the cluster list gets the first chance to lead"
        follower = "b"
        assert c.put(leader, "hello", "world") == (200, {})
        assert c.put(follower, "from-follower", "forwarded") == (200, {})
        for i in c.ids:
            # Linearizable (the default) sees both writes at once, on any node.
            assert c.get_value(i, "hello") == (200, b"world")
            assert c.get_value(i, "from-follower", "linearizable") == (200, b"forwarded")
            # Serializable is local: it catches up.
            eventually_reads(c, i, "hello", "world")
            eventually_reads(c, i, "from-follower", "forwarded")
        assert c.get(c.ids[2], "absent") == (404, {"error": "key not found", "code": 5})
        assert c.delete(follower, "hello") == (200, {})
        for i in c.ids:
            assert c.get(i, "hello")[0] == 404
        statuses = c.statuses()
        assert {st["leader_id"] for st in statuses.values()} == {"a"}
        assert len({st["term"] for st in statuses.values()}) == 1
        lead = statuses["a"]
        assert [m["id"] for m in lead["members"]] == ["a", "b", "c"]
        assert all(m["voter"] for m in lead["members"])


@pytest.mark.parametrize("transport", ["twisted", "grpc"])
def test_a_follower_whose_link_to_the_leader_is_down_never_answers_outcome_unknown(tmp_path, transport) -> None:
    """What failed test_readme_three_nodes under load: b followed a (it hears
    a on a's link) while its own link to a was still down (its proxy had
    reset it: a's port was not yet listening), so b's transport dropped the
    first forward unsent, and b answered 504 as if it might have been
    applied. A forward the transport did not send is proposed again each
    tick: applied once the link is up, else 503 (certainly not applied)."""
    with Cluster(tmp_path, request_timeout=5.0, peer_transport=transport) as c:
        c.start()
        leader = c.leader()
        follower = next(i for i in c.ids if i != leader)
        assert c.put(follower, "warm", "1") == (200, {})
        log = c.node(follower).log_text
        down_before = log().count(f"peer {leader} at")
        c.cut(follower, leader, mode="refuse")  # every (re)connection is reset at once
        wait_until(lambda: log().count(f"peer {leader} at") > down_before, 15.0, f"{follower} to see its link down")
        # Down for the whole request timeout: certainly not applied.
        code, body = c.put(follower, "k1", "never")
        assert (code, body.get("code")) == (503, 14), body
        # Up again within the request timeout: the write is applied, once.
        answer: list[tuple[int, Any]] = []
        writer = threading.Thread(target=lambda: answer.append(c.put(follower, "k2", "once")))
        writer.start()
        c.heal()
        writer.join(c.client_timeout + 1.0)
        assert answer == [(200, {})]
        for i in c.ids:
            assert c.get_value(i, "k2") == (200, b"once")
            assert c.get(i, "k1")[0] == 404


def test_kill_leader_then_it_restarts_and_catches_up(tmp_path) -> None:
    with Cluster(tmp_path) as c:
        c.start()
        old = c.leader()
        assert c.put(old, "k", "v1") == (200, {})
        old_term = c.status(old)[1]["term"]
        c.kill(old)
        others = [i for i in c.ids if i != old]
        new = c.leader(among=others)
        assert new != old
        assert c.status(new)[1]["term"] > old_term
        # Writes continue on both survivors (the follower forwards).
        assert c.put(new, "k", "v2") == (200, {})
        follower = next(i for i in others if i != new)
        assert c.put(follower, "k2", "w1") == (200, {})
        assert c.get_value(follower, "k") == (200, b"v2")
        c.restart(old)
        # The old leader rejoins as a follower and catches up.
        eventually_reads(c, old, "k", "v2")
        eventually_reads(c, old, "k2", "w1")
        assert c.get_value(old, "k") == (200, b"v2")  # linearizable, through the leader's round
        assert c.put(new, "k3", "after-restart") == (200, {})
        eventually_reads(c, old, "k3", "after-restart")
        c.leader()  # all three agree again


def test_kill_follower_writes_continue(tmp_path) -> None:
    with Cluster(tmp_path) as c:
        c.start()
        leader = c.leader()
        follower = next(i for i in c.ids if i != leader)
        c.kill(follower)
        for n in range(5):
            assert c.put(leader, f"k{n}", f"v{n}") == (200, {})
        survivor = next(i for i in c.ids if i not in (leader, follower))
        assert c.put(survivor, "via-survivor", "ok") == (200, {})
        assert c.get_value(survivor, "k4") == (200, b"v4")
        c.restart(follower)
        for n in range(5):
            eventually_reads(c, follower, f"k{n}", f"v{n}")
        eventually_reads(c, follower, "via-survivor", "ok")


def test_two_of_three_down_then_one_back(tmp_path) -> None:
    with Cluster(tmp_path) as c:
        c.start()
        leader = c.leader()
        acked: dict[str, str] = {}
        for n in range(5):
            key, value = f"k{n}", f"v{n}"
            assert c.put(leader if n % 2 else "c", key, value) == (200, {})
            acked[key] = value
        # Kill the leader and one follower: the last node is a minority.
        down = [leader, next(i for i in c.ids if i != leader)]
        last = next(i for i in c.ids if i not in down)
        for i in down:
            c.kill(i)
        for n in range(3):
            code, body, elapsed = timed_put(c, last, f"lost{n}", "x")
            assert_refused_in_time(c, code, body, elapsed)
        # A linearizable read cannot be confirmed either; a local one can.
        code, body = c.get(last, "k0")
        assert code in RETRYABLE, (code, body)
        assert c.get_value(last, "k0", "serializable") == (200, b"v0")
        # One node back: a majority again.
        c.restart(down[1])
        c.leader(among=[last, down[1]], timeout=20)
        c.put_retry("after", "quorum", via=[last, down[1]])
        acked["after"] = "quorum"
        for key, value in acked.items():
            for i in (last, down[1]):
                assert c.get_value(i, key) == (200, value.encode()), (i, key)


def test_paused_leader_steps_down_and_never_reads_stale(tmp_path) -> None:
    with Cluster(tmp_path) as c:
        c.start()
        old = c.leader()
        assert c.put(old, "k", "old") == (200, {})
        old_term = c.status(old)[1]["term"]
        others = [i for i in c.ids if i != old]
        c.pause(old)  # SIGSTOP, past the election timeout: the others elect
        new = c.leader(among=others)
        assert c.put(new, "k", "new") == (200, {})
        # Send reads to the paused node now: the kernel accepts the
        # connections and buffers the requests, so the node finds them the
        # moment it runs again, before it has heard from anyone.
        port = c.node(old).rest_port
        pending = []
        for _ in range(4):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=c.client_timeout)
            conn.request("GET", f"/v0/kv/key/{b64('k')}")
            pending.append(conn)
        c.resume(old)
        answers = []
        for conn in pending:
            resp = conn.getresponse()
            body = json.loads(resp.read())
            conn.close()
            answers.append((resp.status, unb64(body["value"]) if resp.status == 200 else body))
        for code, value in answers:
            assert value != b"old", "a linearizable read on the deposed leader returned a stale value"
            assert (code, value) == (200, b"new") or code in RETRYABLE, (code, value)
        # Once it ran, a linearizable read on it never goes back either.
        for _ in range(3):
            code, value = c.get_value(old, "k")
            assert value != b"old" and ((code, value) == (200, b"new") or code in RETRYABLE), (code, value)
        # It steps down: a follower in a higher term, following the new leader.
        st = wait_until(
            lambda: (s := c.status(old)[1])["role"] == "follower" and s["leader_id"] == new and s,
            10,
            f"{old} to follow {new}",
        )
        assert st["term"] > old_term
        assert c.get_value(old, "k") == (200, b"new")
        c.leader()


def test_partitioned_leader(tmp_path) -> None:
    with Cluster(tmp_path) as c:
        c.start()
        old = c.leader()
        assert c.put(old, "k", "before") == (200, {})
        others = [i for i in c.ids if i != old]
        c.partition([old], others)
        new = c.leader(among=others)
        assert new != old
        assert c.put(new, "k", "majority") == (200, {})
        assert c.put(next(i for i in others if i != new), "k2", "majority2") == (200, {})
        # The old leader cannot commit: 503 or 504 in bounded time.
        code, body, elapsed = timed_put(c, old, "k", "minority")
        assert_refused_in_time(c, code, body, elapsed)
        # Nor confirm a linearizable read (it must never answer "before" now).
        code, value = c.get_value(old, "k")
        assert code in RETRYABLE, (code, value)
        c.heal()
        c.leader(timeout=20)
        eventually_reads(c, old, "k2", "majority2")
        # The 504 write was appended only on the old leader, in its old term;
        # the new leader committed other entries at that index, so Raft must
        # have cut it: every node reads the majority's value.
        for i in c.ids:
            assert c.get_value(i, "k") == (200, b"majority"), i
            eventually_reads(c, i, "k", "majority")


def test_one_way_cut_from_leader(tmp_path) -> None:
    """The leader can no longer reach one follower (the follower can still
    reach it): the cluster keeps accepting writes, and after the link is
    repaired the follower has every write."""
    with Cluster(tmp_path) as c:
        c.start()
        leader = c.leader()
        follower, other = [i for i in c.ids if i != leader]
        c.cut(leader, follower)
        for n in range(5):
            c.put_retry(f"k{n}", f"v{n}", timeout=15)
        c.heal()
        for n in range(5):
            eventually_reads(c, follower, f"k{n}", f"v{n}")
        c.leader(timeout=20)


def test_slow_and_flaky_links(tmp_path) -> None:
    """Delayed links and connections that keep breaking slow the cluster down
    but lose nothing that was acknowledged."""
    with Cluster(tmp_path) as c:
        c.start()
        leader = c.leader()
        for a in c.ids:
            for b in c.ids:
                if a != b:
                    c.delay_link(a, b, 0.02, jitter=0.01)
        f1, f2 = [i for i in c.ids if i != leader]
        c.flaky_link(leader, f1, 0.05, both=True)
        acked = {}
        for n in range(10):
            try:
                code, _ = c.put(c.ids[n % 3], f"k{n}", f"v{n}")
            except (OSError, http.client.HTTPException):
                continue
            if code == 200:
                acked[f"k{n}"] = f"v{n}"
            else:
                assert code in RETRYABLE
        assert acked, "no write got through a slow, flaky network"
        c.heal()
        c.leader(timeout=20)
        for key, value in acked.items():
            for i in c.ids:
                eventually_reads(c, i, key, value)


def test_nodes_started_in_any_order_at_different_times(tmp_path) -> None:
    with Cluster(tmp_path) as c:
        c.start_node("c")  # the last listed, alone: no leader, writes refused
        st = c.status("c")[1]
        assert st["role"] != "leader"
        code, body, elapsed = timed_put(c, "c", "k", "v")
        assert_refused_in_time(c, code, body, elapsed)
        c.start_node("b")  # now a majority
        leader = c.leader(among=["b", "c"], timeout=20)
        assert leader in ("b", "c")
        c.put_retry("k", "v", via=["b", "c"])
        c.start_node("a")  # the first listed, last and late: it joins, does not disrupt
        final = c.leader(timeout=20)
        assert final in ("b", "c")
        eventually_reads(c, "a", "k", "v")
        assert c.put("a", "k2", "from-a") == (200, {})
        for i in c.ids:
            assert c.get_value(i, "k2") == (200, b"from-a")


def test_acknowledged_writes_survive_leader_crashes_under_load(tmp_path) -> None:
    """Four clients write distinct keys to random nodes while the leader is
    killed twice (and restarted): every write answered 200 is afterwards
    readable, linearizably, on every node; failures are only 503/504 or a
    refused connection to the dead node."""
    with Cluster(tmp_path) as c:
        c.start()
        acked: dict[str, str] = {}
        unexpected: list[Any] = []
        stop = threading.Event()
        lock = threading.Lock()

        def client(w: int) -> None:
            rng = random.Random(w)
            n = 0
            while not stop.is_set():
                n += 1
                key = f"w{w}-{n}"
                target = rng.choice(c.running() or c.ids)
                try:
                    code, body = c.put(target, key, key)
                except (OSError, http.client.HTTPException):
                    continue  # the node was just killed
                if code == 200:
                    with lock:
                        acked[key] = key
                elif code not in RETRYABLE:
                    unexpected.append((target, key, code, body))

        clients = [threading.Thread(target=client, args=(w,), daemon=True) for w in range(4)]
        for t in clients:
            t.start()
        try:
            for _ in range(2):
                old = c.leader()
                count = len(acked)
                wait_until(lambda count=count: len(acked) >= count + 20, 15, "writes to get through")
                c.kill(old)
                c.leader(among=[i for i in c.ids if i != old])
                c.restart(old)
            count = len(acked)
            wait_until(lambda: len(acked) >= count + 20, 15, "writes to get through after the crashes")
        finally:
            stop.set()
            for t in clients:
                t.join(c.client_timeout + 2)
        assert not unexpected, unexpected[:5]
        c.leader()
        for key, value in acked.items():
            for i in c.ids:
                assert c.get_value(i, key) == (200, value.encode()), (i, key)


def test_whole_cluster_restart(tmp_path) -> None:
    """Kill -9 every node, start them again: a leader is elected from the
    recovered state (the bootstrap hint no longer applies) and nothing acknowledged is lost."""
    with Cluster(tmp_path) as c:
        c.start()
        c.leader()
        for n in range(5):
            assert c.put(c.ids[n % 3], f"k{n}", f"v{n}") == (200, {})
        terms = {i: st["term"] for i, st in c.statuses().items()}
        for i in c.ids:
            c.kill(i)
        c.start(reversed(c.ids))
        c.leader(timeout=20)
        for i, st in c.statuses().items():
            assert st["term"] > terms[i]
        for n in range(5):
            for i in c.ids:
                assert c.get_value(i, f"k{n}") == (200, f"v{n}".encode())
