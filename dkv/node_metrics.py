# test-case-name: tests.test_metrics
"""What a scrape of a node's metrics reads of it (``dkv.metrics.NodeState``).

Called on the reactor thread when ``/metrics`` is asked for: the gauges read
the node's state then (nothing is pushed on every change), and the counters
its parts keep as plain integers are read with them.
"""

from __future__ import annotations

from dkv.errors import NoLeader
from dkv.metrics import NodeState
from dkv.node import Node
from dkv.raft import Role
from dkv.transport.peer_common import PeerAccounting


def node_state(node: Node, transport: PeerAccounting) -> NodeState | None:
    """The node's state now; None while it is not serving (not started yet,
    or stopping: its store may be closed)."""
    replication = node.replication
    raft = replication.raft
    if raft is None or not replication.running:
        return None
    try:
        db_size, in_use = node.store_size()
        keys = replication.live_keys()
        leases = len(node.leases.leases().leases)
    except NoLeader:  # stopping
        return None
    synced, unsynced = replication.watch_hub.counts
    return NodeState(
        has_leader=raft.leader is not None,
        is_leader=raft.role is Role.LEADER,
        leader_changes=replication.leader_changes,
        committed_index=raft.commit_index,
        applied_index=replication.applied,
        proposals_pending=replication.requests.pending_writes,
        proposals_failed=replication.requests.failed_writes,
        db_size=db_size,
        db_size_in_use=in_use,
        keys=keys,
        watchers=synced + unsynced,
        leases=leases,
        snapshots_saved=replication.snapshots_saved,
        snapshots_installed=replication.snapshots_installed,
        peer_sent=dict(transport.sent_bytes),
        peer_received=dict(transport.received_bytes),
        auth_failures=dict(node.auth.failures),
        requests_refused=dict(replication.admission.refused),
    )
