# test-case-name: tests.test_auto_compaction
"""Automatic compaction of the keyspace's history, as etcd's
``--auto-compaction-mode`` and ``--auto-compaction-retention``.

Only the leader compacts, through the log (``compaction_steps.compact_in_steps``),
so every member drops the same history at the same point:

``revision``  keep the last ``retention`` revisions: every five minutes,
              compact to (current revision - retention).
``periodic``  keep ``retention`` seconds of history: the revision is sampled
              every tenth of the retention (at most every hour, at least
              every second), and each time the history older than the
              retention is compacted (to the revision sampled ``retention``
              ago).

A compaction the store refuses (nothing new to compact) is no error.
"""

from __future__ import annotations

import collections

import attrs
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from dkv.compaction_steps import compact_in_steps
from dkv.logs import logger
from dkv.node import Node
from dkv.pb.etcd_rpc_pb2 import CompactionRequest
from dkv.raft import Role

log = logger("dkv.compaction")

#: The revision mode's interval, as etcd's.
REVISION_INTERVAL = 300.0


@attrs.frozen
class AutoCompaction:
    mode: str  # "periodic" or "revision"
    #: Seconds (periodic) or revisions (revision); 0 turns it off.
    retention: float

    def interval(self) -> float:
        if self.mode == "revision":
            return REVISION_INTERVAL
        return min(max(self.retention / 10, 1.0), 3600.0)


class AutoCompactor(Service):
    def __init__(self, node: Node, policy: AutoCompaction, clock: IReactorTime) -> None:
        self._node = node
        self._policy = policy
        self._clock = clock
        self._loop: LoopingCall | None = None
        #: periodic: (time, revision) samples, oldest first.
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._compacted = 0

    def startService(self) -> None:
        super().startService()
        if not self._policy.retention:
            return
        self._loop = LoopingCall(self.check)
        self._loop.clock = self._clock
        self._loop.start(self._policy.interval(), now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        """One round: sample, and if this node leads, compact what is due."""
        replication = self._node.replication
        raft = replication.raft
        if raft is None or not replication.running:
            return
        revision = self._node.revision()
        now = self._clock.seconds()
        if self._policy.mode == "revision":
            target = revision - int(self._policy.retention)
        else:
            self._samples.append((now, revision))
            target = 0
            while self._samples and now - self._samples[0][0] >= self._policy.retention:
                target = self._samples.popleft()[1]
        if raft.role is not Role.LEADER or target <= self._compacted or target <= 1:
            return
        self._compacted = target
        d = compact_in_steps(self._node, CompactionRequest(revision=target))
        d.addCallbacks(
            lambda _: log.info("compacted the history up to revision {revision}", revision=target),
            lambda f: log.debug("compaction to {revision} not done: {why}", revision=target, why=f.getErrorMessage()),
        )
