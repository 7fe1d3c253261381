# test-case-name: tests.test_admission
"""Admission control: new work is refused at once when too much waits.

A node under more load than it can carry would otherwise queue every
request until its deadline: memory grows with the offered load and every
answer comes late. Instead, when a bound of ``dkv.config.Admission`` is
passed, a new request is refused before it is queued, with
``dkv.errors.Overloaded`` (HTTP 429 with ``Retry-After``; gRPC
RESOURCE_EXHAUSTED, etcd's ``etcdserver: too many requests``). A refused
request was never handed to the log: it is certainly not applied and safe to
retry. The bounds, checked by the driver as each request arrives:

* ``pending_proposals``: writes this node took and has not answered (those
  it forwarded to the leader included; the leader's log therefore holds at
  most the sum of every member's bound of uncommitted client writes);
* ``pending_reads``: linearizable reads waiting for a ReadIndex round or for
  the apply to reach their index;
* ``apply_gap``: writes, while this node's applied index trails the commit
  index it knows of by more than ``max_apply_gap`` (etcd's
  ``maxGapBetweenApplyAndCommitIndex``: the apply cannot keep up);
* ``queue_delay``: writes, while the oldest write waiting on this node has
  waited longer than ``max_queue_delay`` seconds (a bound on queueing delay,
  as CoDel's target, rather than on queue length: however fast the node
  commits, a write it admits waits behind at most that much work, so the
  admitted ones are answered in about that time plus the unloaded latency,
  and the node stops admitting as soon as a standing queue forms). Only
  while at least ``queue_delay_min_pending`` writes wait (as CoDel never
  drops from a near-empty queue: a few writes stuck on a slow disk or a
  dead leader are not overload) and the node knows a leader (during an
  election writes wait for one, as before).

Internal work (a readiness probe's read barrier, the quota's alarm) is never
refused. Refusals are counted by reason (``dkv_server_requests_refused_total``)
and logged at most once per ``log_every`` seconds, with how many were refused
since the last line.
"""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IReactorTime

from dkv.config import Admission
from dkv.errors import Overloaded
from dkv.logs import logger

log = logger("dkv.admission")

PENDING_PROPOSALS = "pending_proposals"
PENDING_READS = "pending_reads"
APPLY_GAP = "apply_gap"
QUEUE_DELAY = "queue_delay"
#: Every reason a request is refused for (the metric's labels).
REASONS = (PENDING_PROPOSALS, PENDING_READS, APPLY_GAP, QUEUE_DELAY)

#: Seconds between two log lines about refusals.
LOG_EVERY = 10.0


@attrs.define
class AdmissionControl:
    """Decides whether a new request may wait; counts and logs refusals.
    Not thread-safe: the driver's reactor thread owns it."""

    limits: Admission
    clock: IReactorTime
    log_every: float = LOG_EVERY
    #: Requests refused since the node started, by reason.
    refused: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(REASONS, 0))
    _logged_at: float | None = None
    _unlogged: int = 0

    def check_write(self, pending_writes: int, commit: int, applied: int, oldest_since: float | None = None) -> None:
        """Raise Overloaded unless one more write may wait; oldest_since is
        when the oldest write still waiting was taken (None: none waits)."""
        limits = self.limits
        if pending_writes >= limits.max_pending_proposals:
            self._refuse(
                PENDING_PROPOSALS,
                f"{pending_writes} writes are waiting on this node (the bound is "
                f"{limits.max_pending_proposals}, --max-pending-proposals)",
            )
        gap = commit - applied
        if gap > limits.max_apply_gap:
            self._refuse(
                APPLY_GAP,
                f"{gap} committed entries are not applied yet on this node (the bound is "
                f"{limits.max_apply_gap}, --max-apply-gap)",
            )
        queue = pending_writes >= limits.queue_delay_min_pending
        if limits.max_queue_delay > 0 and queue and oldest_since is not None:
            waited = self.clock.seconds() - oldest_since
            if waited > limits.max_queue_delay:
                self._refuse(
                    QUEUE_DELAY,
                    f"the oldest write waiting on this node has waited {waited * 1000:.0f} ms (the bound is "
                    f"{limits.max_queue_delay * 1000:.0f} ms, --max-queue-delay)",
                )

    def check_read(self, pending_reads: int) -> None:
        """Raise Overloaded unless one more linearizable read may wait."""
        bound = self.limits.max_pending_reads
        if pending_reads >= bound:
            self._refuse(
                PENDING_READS,
                f"{pending_reads} linearizable reads are waiting on this node (the bound is "
                f"{bound}, --max-pending-reads)",
            )

    def _refuse(self, reason: str, why: str) -> None:
        self.refused[reason] += 1
        self._unlogged += 1
        now = self.clock.seconds()
        if self._logged_at is None or now - self._logged_at >= self.log_every:
            log.warn(
                "refusing new requests (429 too many requests): {why}; {count} refused since the last such line",
                why=why,
                count=self._unlogged,
            )
            self._logged_at = now
            self._unlogged = 0
        raise Overloaded(f"too many requests: {why}; retry later", reason=reason)
