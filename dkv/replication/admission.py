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
  waited longer than the queueing-delay target; linearizable reads, while
  the oldest read waiting has waited longer than it (a bound on queueing
  delay, as CoDel's target, rather than on queue length: however fast the
  node commits, a request it admits waits behind at most that much work,
  so the admitted ones are answered in about that time, and the node stops
  admitting as soon as a standing queue forms). Only while at least
  ``queue_delay_min_pending`` requests of that kind wait (as CoDel never
  drops from a near-empty queue: a few writes stuck on a slow disk or a
  dead leader are not overload) and, for writes, the node knows a leader
  (during an election writes wait for one, as before).

The target follows the node's own speed: ``queue_delay_factor`` (4) times
the fastest write answered here over the last one to two
``queue_delay_window``s (10 s), clamped to [``min_queue_delay``,
``max_queue_delay``] (20 ms .. 250 ms), and ``max_queue_delay`` while no
write has been answered. The fastest write of a window is about one commit
round trip (fsync on a quorum, the apply): it waited behind nothing, and
does not grow with the queue, since admission keeps the queue short (a
windowed minimum, as BBR's round-trip estimate, so the target does not
chase the delays it bounds). A node on a fast disk refuses once about
4 commit rounds of work wait; one on a slow disk allows more, up to the
maximum.

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
    # The fastest write answered in the current window (since _window_at)
    # and in the one before it.
    _window_at: float | None = None
    _fastest_now: float | None = None
    _fastest_before: float | None = None

    def write_answered(self, seconds: float) -> None:
        """A write this node took was answered (applied) seconds after it
        was taken; feeds the queueing-delay target."""
        self._roll(self.clock.seconds())
        if self._fastest_now is None or seconds < self._fastest_now:
            self._fastest_now = seconds

    def queue_delay_target(self) -> float:
        """Seconds the oldest waiting request may have waited before new
        ones are refused (0: no such bound): ``queue_delay_factor`` x the
        fastest write lately, clamped to [min_queue_delay, max_queue_delay];
        the maximum while none was answered."""
        limits = self.limits
        if limits.max_queue_delay <= 0:
            return 0.0
        self._roll(self.clock.seconds())
        fastest = min((f for f in (self._fastest_now, self._fastest_before) if f is not None), default=None)
        if fastest is None:
            return limits.max_queue_delay
        return min(limits.max_queue_delay, max(limits.min_queue_delay, limits.queue_delay_factor * fastest))

    def _roll(self, now: float) -> None:
        """Start a new window once the current one is queue_delay_window old."""
        start = self._window_at
        window = self.limits.queue_delay_window
        if start is None:
            self._window_at = now
        elif now - start >= window:
            self._fastest_before = self._fastest_now if now - start < 2 * window else None
            self._fastest_now = None
            self._window_at = now

    def check_write(self, pending_writes: int, commit: int, applied: int, oldest_since: float | None = None) -> None:
        """Raise Overloaded unless one more write may wait; oldest_since is
        when the oldest write still waiting was taken (None: none waits, or
        its wait is not held against new ones)."""
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
        self._check_delay("write", pending_writes, oldest_since)

    def _check_delay(self, what: str, pending: int, oldest_since: float | None) -> None:
        if oldest_since is None or pending < self.limits.queue_delay_min_pending:
            return
        target = self.queue_delay_target()
        waited = self.clock.seconds() - oldest_since
        if target > 0 and waited > target:
            self._refuse(
                QUEUE_DELAY,
                f"the oldest {what} waiting on this node has waited {waited * 1000:.0f} ms (the target is "
                f"{target * 1000:.0f} ms, --min-queue-delay .. --max-queue-delay)",
            )

    def check_read(self, pending_reads: int, oldest_since: float | None = None) -> None:
        """Raise Overloaded unless one more linearizable read may wait;
        oldest_since is when the oldest read still waiting was taken."""
        bound = self.limits.max_pending_reads
        if pending_reads >= bound:
            self._refuse(
                PENDING_READS,
                f"{pending_reads} linearizable reads are waiting on this node (the bound is "
                f"{bound}, --max-pending-reads)",
            )
        self._check_delay("read", pending_reads, oldest_since)

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
