"""A real 3-node cluster on the native peer protocol (--peer-transport
twisted), through the fault-injecting proxies (--peer-route ID=HOST:PORT/PEER_PORT):
it elects a leader, replicates writes, a killed follower catches up after
a restart by a snapshot streamed over the peer port (the leader compacts
its log meanwhile), a partitioned follower is cut off and heals, and a new
member joins."""

from __future__ import annotations

from dkv.testing.cluster import Cluster
from dkv.testing.poll import wait_until

SNAPSHOT_ARGS = ["--snapshot-entries", "50", "--snapshot-keep-entries", "10"]


def test_three_nodes_over_the_native_peer_protocol(tmp_path) -> None:
    with Cluster(tmp_path, ["a", "b", "c"], peer_transport="twisted", extra_args=SNAPSHOT_ARGS) as c:
        c.start()
        leader = c.leader(timeout=30)
        assert c.put_retry(b"k0", b"v0")
        st = c.status(leader)[1]
        for i in c.ids:
            c.wait_applied(i, st["commit_index"], timeout=30)
            assert c.get_value(i, b"k0", consistency="serializable") == (200, b"v0")
        follower = next(i for i in c.ids if i != leader)
        c.kill(follower)
        for n in range(120):  # past --snapshot-entries: the leader compacts what the follower lacks
            assert c.put_retry(f"k{n}", f"v{n}")
        c.restart(follower)
        c.wait_applied(follower, c.status(leader)[1]["commit_index"], timeout=60)
        assert c.get_value(follower, b"k119", consistency="serializable") == (200, b"v119")
        assert "staged and verified" in c.log_tail(follower, 400)
        # A partitioned follower falls behind; healed, it catches up over a new connection.
        other = next(i for i in c.ids if i not in (leader, follower))
        c.isolate(other)
        # A blackholed link is noticed by its pings (dead_after 3 s), as by gRPC's keepalive.
        wait_until(lambda: "no answer for" in c.log_tail(leader, 400), 15, "the leader to notice the partition")
        assert c.put_retry(b"during", b"partition", via=[leader, follower])
        c.heal()
        wait_until(
            lambda: c.get_value(other, b"during", consistency="serializable") == (200, b"partition"),
            60,
            "the healed follower to catch up",
        )
        assert "peer port: dropped" not in c.log_tail(leader, 400)
        # A new member joins (over the RPC port), is found at RPC port + 2, and catches up.
        c.add_node("d", join_via=leader, auto_promote=True)
        wait_until(
            lambda: c.get_value("d", b"during", consistency="serializable") == (200, b"partition"),
            60,
            "the new member to catch up",
        )
