# test-case-name: tests.test_compaction_steps
"""A large compaction as a series of small ones.

A compaction is applied in one step on every member, on the reactor thread:
dropping the history of n revisions takes time in proportion to n (about
15 µs a revision), during which the node serves nothing and sends no
heartbeat. So one compaction of millions of revisions (an hour of history at
a thousand writes a second) would stop every member for a minute at once.

``compact_in_steps(node, request)`` proposes instead compactions to the
compacted revision + ``STEP``, + 2 x ``STEP``, ... and last to the
requested revision, each once the one before it is applied here: no entry
drops more than ``STEP`` revisions, and the reactor turns between them.
Compacting in steps leaves the same store as compacting at once (what a
compaction keeps depends on the final revision alone: for each key its
newest change at or below it if that is a put, every change at it, and
everything after it; ``dkv.mvcc.compaction``). Meanwhile reads between the
old and the new compacted revision succeed or fail with Compacted as the
steps pass, as they would while etcd's backend compacts in batches.

Steps are proposed only when the request is certainly valid: above the
compacted revision and at most the revision this node has applied (so not in
the leader's future). Otherwise the request goes to the log as it is and
fails there with etcd's error, as before. A step that fails because another
compaction passed it is not an error: the next step starts past it. The
answer is the last step's: the request's own.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred, ensureDeferred

from dkv.errors import NoLeader
from dkv.mvcc import errors
from dkv.node import Node
from dkv.pb.etcd_rpc_pb2 import CompactionRequest, CompactionResponse

#: The most revisions one compaction entry drops (about 15 ms of apply; the
#: overlay of writes not yet stored stays small, so smaller steps are also
#: faster in all: 60,000 revisions took 8.2 s at once, 2.5 s in steps).
STEP = 1000


def compact_in_steps(node: Node, request: CompactionRequest, step: int = STEP) -> Deferred[CompactionResponse]:
    """etcd's Compact of request.revision, proposed in steps of at most step
    revisions (see the module docstring); fires with the CompactionResponse
    of the last, or fails as ``Node.write`` does."""
    try:
        compacted, newest = _applied(node)
    except NoLeader:
        return node.write(request)  # which says so
    if request.revision > newest or request.revision - compacted <= step:
        return node.write(request)
    return ensureDeferred(_steps(node, request, compacted, step))


def _applied(node: Node) -> tuple[int, int]:
    """(compacted revision, 0 if none; newest revision) applied here."""
    with node.replication.view() as state:
        return max(state.compact_revision, 0), state.revision


async def _steps(node: Node, request: CompactionRequest, done: int, step: int) -> CompactionResponse:
    # The client's idempotency key names its request, the last step: the
    # steps before it go without (each is safe to repeat anyway).
    unkeyed = attrs.evolve(node, idempotency_key=None) if node.idempotency_key is not None else node
    while request.revision - done > step:
        done += step
        try:
            await unkeyed.write(CompactionRequest(revision=done))
        except errors.Compacted:
            # Another compaction got here first: go on past what it did.
            done = max(done, _applied(node)[0])
    response: CompactionResponse = await node.write(request)
    return response
