# test-case-name: tests.test_replication,tests.test_driver_simulation
"""``ReplicationService``: the one place that turns the Raft core's decisions into I/O.

It ticks the core from an injected clock, steps received messages into it,
and runs the turn the core's contract asks for::

    take_outbox()  -> send at once (leader appends, heartbeats, read answers)
    ready()        -> persist hard state + entries and apply committed entries,
                      all in ONE store transaction (one fsync)
                   -> then send the Ready's messages (votes, append acks)
                   -> then answer the clients whose entries were applied
                   -> then advance()

Committed entries are applied (``dkv.statemachine``: etcd's multi-version
store) to an in-memory overlay over the store and their writes answered as
soon as the Ready is taken (they are on a majority's disk); the store gets the
same table writes in that Ready's transaction. A Ready with nothing to make
durable but those writes and the commit index gets no transaction: it is
advanced at once and its writes are held (``held_apply``) for the store's
next transaction, or one of their own within ``HELD_FLUSH_SECONDS`` (within
``HELD_FLUSH_BATCH_SECONDS`` once they make a batch). A
follower whose store keeps its log apart, and on which no client waits for an
apply, turns that order round for a Ready that also brings new entries: it
stores them and sends their acknowledgement first, then applies
(``_acknowledges_first``), because the leader's commit waits on that
acknowledgement and nobody on the apply. A Ready
that installs a snapshot carries no committed entries (the core holds them
for the next Ready), and reads waiting for the snapshot's index are released only once it
is in the store. The applied index never moves backwards (a violation stops
the node). A write the store refuses because the disk is full is held and
tried again, unchanged, until it gets through (``_stall``); any other store
failure stops the node.

At most one Ready is being persisted at a time. Everything that arrives in the
meantime (client proposals, peer messages) piles up in the core and goes into
the next Ready: that is the group commit. Client proposals and reads of one
reactor turn also enter the core together (one ``propose``, one
``read_index``), so they share one append and one ReadIndex round.

The service does the turn and wires the parts that each hold one job: the
request table (``requests``), snapshot shipping (``snapshot_shipping``), peer
links and removal (``membership_watch``) and the compaction policy
(``compaction``). Deferreds carry results to clients; they never change Raft
state: replies, errors and timeouts from peers become messages stepped into
the core.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from dkv.commands import RequestId, stamp
from dkv.config import Admission
from dkv.disk_full import is_disk_full
from dkv.errors import FailedPrecondition, MemberNotFound, NoLeader, Overloaded
from dkv.idempotency import LeaderStamps, stored_log_time_ms
from dkv.logs import logger
from dkv.mvcc import MvccView
from dkv.mvcc.view import key_count_change
from dkv.raft import NotLeader, Outbox, ProposalDropped, Raft, RaftConfig, RaftStatus, Ready, Role
from dkv.raft.membership import Member, Membership, MembershipError
from dkv.raft.messages import AppendEntries, HardState, Message, Propose, ReadIndexRequest, SnapshotMeta
from dkv.replication.admission import AdmissionControl
from dkv.replication.compaction import CompactionPolicy
from dkv.replication.held_apply import HeldApply
from dkv.replication.membership_watch import PeerLinks, RemovalWatch
from dkv.replication.requests import RequestTable
from dkv.replication.snapshot_shipping import SnapshotSender, SnapshotShipper
from dkv.soon import Cancellable, soon_caller
from dkv.statemachine import Carry, Outcome, apply_entries
from dkv.storage import Applied, NodeStore, PersistentState, WriteBatch
from dkv.storage.disk_faults import DiskFailed
from dkv.storage.overlay import Overlay
from dkv.transport import Transport
from dkv.watch import WatchHub, WatchSettings

#: How long a commit index may wait for an append to carry it (defer_commit).
COMMIT_FLUSH_SECONDS = 0.002
#: How often a write the full disk refused is tried again.
DISK_FULL_RETRY_SECONDS = 1.0
#: How long applied writes may be held for the store's next transaction
#: before they get one of their own (``held_apply``): HELD_FLUSH_SECONDS at
#: most (a light load: one transaction per 100 ms, as etcd commits its
#: backend), HELD_FLUSH_BATCH_SECONDS once they make a batch of
#: HELD_FLUSH_BATCH table writes (under load: a transaction per 20 ms) ...
HELD_FLUSH_SECONDS = 0.1
HELD_FLUSH_BATCH_SECONDS = 0.02
HELD_FLUSH_BATCH = 512
#: ... and how many table writes may be held at most.
HELD_FLUSH_WRITES = 10_000
#: A Ready that asks the store for nothing (the held writes' flush).
_NO_READY = Ready(hard_state=None, entries=(), committed=(), messages=())

log = logger("dkv.replication")


@attrs.frozen
class DriverConfig:
    """How one node's driver behaves (see the README's configuration table)."""

    raft: RaftConfig = RaftConfig()
    tick_seconds: float = 0.1
    #: How long a client request may wait for the cluster.
    request_timeout: float = 5.0
    #: The node listed first in a new cluster gets this short first timeout.
    first_election_ticks: int | None = None
    #: Compact every this many applied entries (0: never), keeping this many.
    snapshot_entries: int = 10_000
    snapshot_keep: int = 5_000
    #: A learner may be promoted once within this many entries of the commit.
    promote_lag: int = 1000
    #: The watch hub's settings (``dkv.watch``).
    watch: WatchSettings = WatchSettings()
    #: Admission control's bounds (``dkv.replication.admission``).
    admission: Admission = Admission()


class ReplicationService(Service):
    def __init__(
        self,
        *,
        node_id: str,
        store: NodeStore,
        state: PersistentState | None = None,
        transport: Transport,
        clock: IReactorTime,
        rng: random.Random,
        config: DriverConfig = DriverConfig(),
        snapshot_sender: SnapshotSender | None = None,
        on_fatal: Callable[[Failure], None] = lambda f: None,
        on_removed: Callable[[], None] = lambda: None,
    ) -> None:
        """state: what the store holds (default: ``store.load()`` when the
        service starts, so the store may open later than this is built);
        on_fatal: the store failed or an internal check did (the node must
        stop); on_removed: this node was removed from the cluster."""
        self.node_id = node_id
        self.config = config
        self._state = state
        self._store = store
        self._transport = transport
        self._clock = clock
        self._rng = rng
        self._on_fatal = on_fatal
        self.raft: Raft | None = None
        self.requests = RequestTable(rng, config.request_timeout, config.tick_seconds)
        #: Refuses new requests past the bounds (``config.admission``).
        self.admission = AdmissionControl(config.admission, clock)
        self.applied = state.applied if state is not None else 0
        self._overlay = Overlay()
        #: The view ``view()`` answers while reads are released in a batch
        #: (``_one_view``); None otherwise.
        self._shared_view: MvccView | None = None
        #: What the last batch applied knew of the state it left
        #: (``dkv.statemachine.Carry``), for the next batch and for the
        #: views; None while unknown: at start, and once a snapshot replaces
        #: the state.
        self._carry: Carry | None = None
        #: Applied writes answered but not given to the store yet (``held_apply``),
        #: flushed by ``_held_flush`` if no transaction takes them first.
        self._held = HeldApply()
        self._held_flush: IDelayedCall | None = None
        #: The applied index the store holds (or is being given), and the
        #: term and vote it holds: a hard state with others is never held.
        self._stored_applied = self.applied
        self._stored_vote: tuple[int, str] = (state.hard_state.term, state.hard_state.vote) if state else (0, "")
        #: ``stored()`` callers: (applied index, fired once the store holds it).
        self._stored_waiters: list[tuple[int, Deferred[None]]] = []
        self._compaction = CompactionPolicy(config.snapshot_entries, config.snapshot_keep, self.applied)
        self._pending_compact: SnapshotMeta | None = None
        self._shipper = SnapshotShipper(store, snapshot_sender, clock, self._snapshot_reported)
        self._links = PeerLinks(transport, clock)
        grace = 2 * config.raft.election_ticks * config.tick_seconds
        self._removal = RemovalWatch(node_id, clock, grace, on_removed)
        self._ticker: LoopingCall | None = None
        #: Runs the turn on the clock's next turn (``dkv.soon``: the event
        #: loop's own call_soon on the asyncio reactor, callLater(0) else).
        self._soon = soon_caller(clock)
        self._scheduled: Cancellable | None = None
        self._commit_flush: IDelayedCall | None = None
        #: When the commit index held back must be sent (None: none is).
        self._commit_flush_at: float | None = None
        self._persisting: Deferred | None = None
        #: The disk is full: the batch it refused waits for this retry, and
        #: nothing newer is written (see ``_stall``).
        self._disk_retry: IDelayedCall | None = None
        self._disk_full: BaseException | None = None
        #: Told True when a write finds the disk full, False when a retry
        #: gets through (the quota: the NOSPACE alarm).
        self.disk_full_listeners: list[Callable[[bool], None]] = []
        self._installing: SnapshotMeta | None = None
        self._failed: Failure | None = None
        self._soft: tuple[Role, int, str | None] | None = None
        #: Leader changes this node has seen since it started: each time the
        #: leader it knows becomes a member other than the one it knew before
        #: (etcd's leader_changes_seen_total: the first leader counts, and
        #: so does the same leader again after a spell without one).
        self.leader_changes = 0
        #: Hooks (the lessor): each applied Outcome, in order; True when this
        #: node starts leading, False when it stops.
        self.apply_listeners: list[Callable[[Outcome], None]] = []
        self.leadership_listeners: list[Callable[[bool], None]] = []
        #: Hooks told when a snapshot replaced the applied state (the auth cache).
        self.install_listeners: list[Callable[[], None]] = []
        self._leading = False
        #: What this node stamps while it leads (``dkv.idempotency``).
        self._stamps = LeaderStamps()
        #: This node's watchers, fed after each apply from the applied state.
        self.watch_hub = WatchHub(clock, self.view, config.watch)
        # What the metrics read at scrape time (``dkv.metrics.NodeState``,
        # with ``leader_changes`` above): snapshots taken (log compactions)
        # and installed (received from a leader).
        self.snapshots_saved = 0
        self.snapshots_installed = 0
        #: The highest commit index a leader's append carried to this node.
        self._leader_commit = 0
        #: Keys in the applied state: counted once when first asked, then
        #: moved by each applied event (None: to be counted).
        self._live_keys: int | None = None

    # -- lifecycle ---------------------------------------------------------------

    @property
    def clock(self) -> IReactorTime:
        return self._clock

    @property
    def cluster_id(self) -> str:
        return self._state.cluster_id if self._state is not None else ""

    def startService(self) -> None:
        if self._state is None:
            self._state = self._store.load()
            if self._state is None:
                raise RuntimeError("the store holds no node: bootstrap or initialize it first")
            self.applied = self._stored_applied = self._state.applied
            self._stored_vote = (self._state.hard_state.term, self._state.hard_state.vote)
            self._compaction.reset(self.applied)
        super().startService()
        st = self._state
        self.raft = Raft(
            self.node_id,
            self.config.raft,
            self._rng,
            hard_state=st.hard_state,
            entries=st.entries,
            snapshot_index=st.snapshot_index,
            snapshot_term=st.snapshot_term,
            snapshot_membership=st.snapshot_membership,
            applied=st.applied,
            first_election_ticks=self.config.first_election_ticks,
        )
        self._watch_membership(self.raft)
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = self._clock
        self._ticker.start(self.config.tick_seconds, now=False)
        self._schedule()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        if self._scheduled is not None:
            self._scheduled.cancel()  # not run yet: _process clears it first
        for call in (self._commit_flush, self._disk_retry, self._held_flush):
            if call is not None and call.active():
                call.cancel()
        self._scheduled = self._commit_flush = self._disk_retry = self._held_flush = None
        self._commit_flush_at = None
        self.requests.fail_all()
        waiters, self._stored_waiters = self._stored_waiters, []
        for _, waiter in waiters:
            waiter.errback(NoLeader("node is shutting down"))
        self._shipper.stop()
        if self._leading:
            self._leading = False
            for listener in self.leadership_listeners:
                listener(False)
        self.watch_hub.stop()
        if self._persisting is not None:
            d: Deferred[None] = Deferred()

            def written(result: object) -> object:
                self._store_held_at_stop().addBoth(lambda _: d.callback(None))
                return result

            self._persisting.addBoth(written)
            return d
        return self._store_held_at_stop()

    def _store_held_at_stop(self) -> Deferred[None]:
        """Fires once the held writes are stored, or could not be (the store
        may be closing already: its service stops beside this one); never
        fails, never raises."""
        if self._held and self._failed is None and self._disk_full is None:
            # Not needed (a restart applies them again from the log), but a
            # node stopped in good order starts from where it stopped.
            applied, hard_state = self._held.take(None, None)
            flushed: Deferred[None] = maybeDeferred(self._store.write, WriteBatch(hard_state, (), applied))
            flushed.addErrback(self._held_lost)
            return flushed
        return succeed(None)

    @staticmethod
    def _held_lost(failure: Failure) -> None:
        log.warn(
            "the last applied writes were not stored at stop ({error}); the node applies them again "
            "from its log when it starts",
            error=failure.getErrorMessage(),
        )

    # -- API for the node --------------------------------------------------------

    def next_request_id(self) -> RequestId:
        return self.requests.next_request_id()

    def propose(
        self, rid: RequestId, payload: bytes, *, internal: bool = False, admitted: bool = False
    ) -> Deferred[Any]:
        """Fires when the entry carrying rid is committed and applied here.

        While no leader is known (an election, a transfer) the write waits for
        one. Fails with NoLeader when it was certainly not appended anywhere
        (no leader took it by the deadline, or the leader refused it), and
        OutcomeUnknown when it was proposed but not seen applied in time.
        Fails at once with Overloaded (never proposed) when admission control
        refuses it; an internal write (the node's own, not a client's) is
        never refused, and one the caller has just checked
        (``check_write_admission``, earlier in the same call: admitted) is
        not checked again."""
        if not self.running or self.raft is None:
            return fail(NoLeader("node is not running"))
        if not internal and not admitted:
            try:
                self.check_write_admission()
            except Overloaded as e:
                return fail(e)
        d = self.requests.add_write(self._clock.seconds(), rid, payload)
        self._schedule()
        return d

    def check_write_admission(self) -> None:
        """Raise Overloaded (counted and logged as a refusal) if a client
        write taken now would be refused by admission control: what
        ``propose`` checks first, for callers that can refuse a write
        before they build it (the REST front door, before it reads the
        body)."""
        if self.raft is None:
            return
        # While no leader is known, writes wait for one (an election is not
        # overload): their delay is not held against new ones.
        waiting_since = self.requests.oldest_write_since() if self.raft.leader is not None else None
        self.admission.check_write(self.requests.pending_writes, self.known_commit, self.applied, waiting_since)

    def read_barrier(self, *, internal: bool = False) -> Deferred[None]:
        """Fires when a linearizable read may be served from the local state:
        leadership was confirmed by a quorum after this call (ReadIndex) and
        the read index is applied here. Waits for a leader as ``propose``
        does; fails with NoLeader when none confirms the read in time or the
        leader lost its leadership meanwhile, and at once with Overloaded
        when admission control refuses it (never an internal read)."""
        if not self.running or self.raft is None:
            return fail(NoLeader("node is not running"))
        if not internal:
            try:
                self.admission.check_read(self.requests.pending_reads, self.requests.oldest_read_since())
            except Overloaded as e:
                return fail(e)
        d = self.requests.add_read(self._clock.seconds())
        self._schedule()
        return d

    def stored(self) -> Deferred[None]:
        """Fires once the store holds the applied state as it is now (every
        write answered so far): what a copy of the store (a snapshot file)
        waits for. Held writes are given to the store at once; fails with
        NoLeader if the node stops first."""
        index = self.applied
        if self._stored_applied >= index and not self._held:
            return succeed(None)
        if not self.running:
            return fail(NoLeader("node is not running"))
        d: Deferred[None] = Deferred()
        self._stored_waiters.append((index, d))
        if self._held:
            self._flush_held()  # or, a write under way, right after it
        return d

    def wait_applied(self, index: int) -> Deferred[None]:
        """Fires once this node has applied index (at once if it has);
        fails with NoLeader if it has not within the request timeout."""
        if self.applied >= index:
            return succeed(None)
        if not self.running or self.raft is None:
            return fail(NoLeader("node is not running"))
        return self.requests.add_apply_wait(self._clock.seconds(), index)

    @contextlib.contextmanager
    def view(self) -> Iterator[MvccView]:
        """The applied state (the overlay over the store), for reads within
        one reactor turn. Raises NoLeader once the node is stopping (the
        store may be closed)."""
        if not self.running:
            raise NoLeader("node is shutting down")
        shared = self._shared_view
        if shared is not None:
            yield shared
            return
        with self._store.reading() as base:
            yield MvccView(self._overlay.view(base), self._counters())

    @contextlib.contextmanager
    def _one_view(self) -> Iterator[None]:
        """Within the block, ``view()`` answers one view of the applied
        state, opened once: for the reads a turn releases together. The
        caller guarantees that nothing is applied within the block, nor
        dropped from the overlay as stored (what its requests' callbacks
        start, such as a proposal or a flush of the held writes, completes
        in a later turn), so the one view is what each read would have
        opened."""
        if self._shared_view is not None or not self.running:
            yield
            return
        with self._store.reading() as base:
            self._shared_view = MvccView(self._overlay.view(base), self._counters())
            try:
                yield
            finally:
                self._shared_view = None

    def _counters(self) -> tuple[int, int] | None:
        """The applied state's (revision, compact revision), if the last
        batch carried them."""
        carry = self._carry
        return None if carry is None else carry.counters

    def read(self, key: bytes) -> bytes | None:
        """The applied value of key (as a Range of that one key finds it)."""
        shared = self._shared_view
        if shared is not None and self.running:  # view()'s first answer, without its context manager
            return shared.value(key)
        with self.view() as state:
            return state.value(key)

    def status(self) -> RaftStatus:
        assert self.raft is not None
        return self.raft.status()

    @property
    def failed(self) -> bool:
        """The store or an internal check failed: the node serves no more."""
        return self._failed is not None

    @property
    def disk_full(self) -> bool:
        """A write found the disk full and waits for space (``_stall``)."""
        return self._disk_full is not None

    @property
    def stored_applied(self) -> int:
        """The applied index the store holds: ``applied`` less the writes
        held for the next transaction (``held_apply``) or being written."""
        return self._stored_applied

    @property
    def known_commit(self) -> int:
        """The highest commit index this node knows of: its own, or the
        leader's as its appends carried it (a follower's own commit index
        stops at the end of the log it holds)."""
        own = self.raft.commit_index if self.raft is not None else 0
        return max(own, self._leader_commit)

    def live_keys(self) -> int:
        """Keys in the applied state (scans them once, then follows the
        applied events)."""
        if self._live_keys is None:
            with self.view() as state:
                self._live_keys = state.key_count()
        return self._live_keys

    @property
    def installing_snapshot(self) -> bool:
        """The core accepted a staged snapshot that is not installed yet:
        the staging area must not be reused until it is."""
        return self._installing is not None or (self.raft is not None and self.raft.snapshot_pending)

    # -- membership and leadership (leader only; callers forward otherwise) -------

    def _require_leader(self) -> Raft:
        raft = self.raft
        if raft is None or not self.running:
            raise NoLeader("node is not running")
        if raft.role is not Role.LEADER:
            raise NotLeader(raft.leader)
        return raft

    def add_member(self, member: Member) -> Deferred[Membership]:
        """Add member (a learner or a voter); fires once the change is
        committed and applied here. Adding an identical member again succeeds
        at once (a node retrying its join)."""
        raft = self._require_leader()
        current = raft.membership
        existing = current.get(member.id)
        if existing == member:
            return succeed(current)
        if existing is not None:
            raise FailedPrecondition(f"{member.id} is already a member (at {existing.address})")
        if any(m.address == member.address for m in current.members):
            raise FailedPrecondition(f"address {member.address} is already used by another member")
        return self._change(raft, current.add(member))

    def promote_member(self, node_id: str) -> Deferred[Membership]:
        raft = self._require_leader()
        current = raft.membership
        member = current.get(node_id)
        if member is None:
            raise MemberNotFound(f"no member {node_id}")
        if member.voter:
            return succeed(current)
        if not raft.caught_up(node_id, self.config.promote_lag):
            match = raft.status().match.get(node_id, 0)
            raise FailedPrecondition(
                f"learner {node_id} has not caught up: it holds the log up to {match}, "
                f"the commit index is {raft.commit_index}"
            )
        return self._change(raft, current.promote(node_id))

    def remove_member(self, node_id: str) -> Deferred[Membership]:
        raft = self._require_leader()
        current = raft.membership
        if current.get(node_id) is None:
            raise MemberNotFound(f"no member {node_id}")
        return self._change(raft, current.remove(node_id))

    def _change(self, raft: Raft, new: Membership) -> Deferred[Membership]:
        try:
            index = raft.propose_membership(new)
        except MembershipError as e:
            raise FailedPrecondition(str(e)) from None
        except ProposalDropped as e:
            raise NoLeader(f"no leader ({e})") from None
        term = raft.term
        d = self.requests.add_change(self._clock.seconds(), index)
        self._schedule()

        def check(_: object) -> Membership:
            # Applied up to index: was it our entry that got there?
            held = raft.term_at(index)
            if held is not None and held != term:
                raise NoLeader("leadership changed before the membership change committed")
            return raft.membership_at(index)

        return d.addCallback(check)

    def transfer_leadership(self, to: str | None) -> Deferred[str]:
        """Hand leadership over; fires with the new leader's id."""
        raft = self._require_leader()
        try:
            target = raft.transfer_leadership(to)
        except MembershipError as e:
            raise FailedPrecondition(str(e)) from None
        if target == self.node_id:
            return succeed(target)
        d = self.requests.add_transfer(self._clock.seconds(), target)
        self._schedule()
        return d

    def leader_known(self) -> Deferred[str]:
        """Fires with the leader's id once this node knows one (at once when
        it does); fails with NoLeader when no leader is elected within the
        request timeout or the node stops."""
        raft = self.raft
        if raft is None or not self.running:
            return fail(NoLeader("node is not running"))
        if raft.leader is not None:
            return succeed(raft.leader)
        return self.requests.add_leader_wait(self._clock.seconds())

    # -- inputs from the transport -------------------------------------------------

    def receive(self, messages: Sequence[Message]) -> None:
        """Messages from peers (called by the transport), stepped into the
        core; the turn (``_process``) runs at once when no client request of
        this turn waits to join a proposal and either this node leads and
        they moved its commit index (answers are due), or it follows and
        they gave it something to store, send or apply while no write of
        its is under way (an append to acknowledge: the leader's commit
        waits for it); else it runs next, as soon as the reactor turns."""
        raft = self.raft
        if raft is None or not self.running:
            return
        def step_all() -> None:
            for m in messages:
                if isinstance(m, AppendEntries):
                    if m.commit > self._leader_commit:
                        self._leader_commit = m.commit
                elif isinstance(m, Propose) and raft.role is Role.LEADER:
                    m = attrs.evolve(m, payloads=tuple(self._stamped(m.payloads)))
                raft.step(m)

        committed = raft.commit_index
        self._guard(step_all)
        if (
            (raft.commit_index > committed and raft.role is Role.LEADER)
            or (raft.role is Role.FOLLOWER and self._persisting is None and raft.has_ready())
        ) and not self.requests.has_new_writes and not self.requests.has_new_reads:
            # On a leader, an acknowledgement committed entries: apply and
            # answer now, not after the rest of the turn (another peer's
            # messages). On a follower, an append is stored and acknowledged
            # now, not a reactor turn later (the peer port hands over the
            # appends one read brings in one call: they are stored
            # together). What the turn raises is logged and goes no
            # further, as when it runs soon: not into the transport's
            # connection.
            if self._scheduled is not None:
                self._scheduled.cancel()
            try:
                self._process()
            except Exception:  # noqa: BLE001
                log.failure("unhandled error in the driver's turn")
            return
        self._schedule()

    def unreachable(self, peer: str) -> None:
        raft = self.raft
        if raft is not None and self.running:
            self._guard(lambda: raft.report_unreachable(peer))

    # -- the turn --------------------------------------------------------------------

    def _tick(self) -> None:
        raft = self.raft
        assert raft is not None
        self.requests.on_tick(self._clock.seconds())
        self._guard(raft.tick)
        self._process()

    def _schedule(self) -> None:
        if self._scheduled is None and self.running:
            self._scheduled = self._soon(self._process)

    def _process(self) -> None:
        self._scheduled = None
        raft = self.raft
        if raft is None or not self.running or self._failed is not None:
            return
        if self.requests.has_new_writes:
            self._propose_new(raft)
        if self.requests.has_new_reads:
            self._read_new(raft)
        self._deliver(raft, raft.take_outbox())
        self._watch_commit(raft)
        self._watch_membership(raft)
        self._on_role_change(raft)
        if self._persisting is None and self._disk_retry is None and raft.has_ready():
            self._persist(raft, raft.ready())

    def _persist(self, raft: Raft, rd: Ready) -> None:
        """Hand rd to the store; apply and answer its committed entries now
        (a Ready that installs a snapshot has none: see the module docstring),
        or, on a follower, once its new entries are stored and acknowledged
        (``_acknowledges_first``)."""
        # Acknowledging first, the Ready is a log-only write like any other
        # whose applies are held (below); they are made in _persisted.
        applied = None if self._acknowledges_first(raft, rd) else self._apply(rd)
        self._installing = rd.snapshot
        if rd.snapshot is not None:
            self._held.drop_writes()  # the snapshot replaces the state they made
            self._carry = None
        elif self._may_hold(applied):
            if not self._makes_durable(rd):
                self._hold(applied, rd.hard_state)
                # Nothing to make durable: the Ready's messages (acknowledgements
                # of entries stored by earlier Readys) may leave now.
                self._send(rd.messages)
                self._guard(lambda: raft.advance(rd))
                self._maybe_compact(raft)
                self._schedule_if_due(raft)
                return
            if self._store.log_apart:
                # The store's log file takes the entries and hard state (one
                # fdatasync); the applied writes wait for its next transaction.
                hard_state = self._held.take_hard_state(rd.hard_state)
                self._hold(applied, None)
                self._write(WriteBatch(hard_state, rd.entries), rd, None)
                return
        applied, hard_state = self._held.take(applied, rd.hard_state)
        batch = WriteBatch(hard_state, rd.entries, applied, install=rd.snapshot, compact=self._pending_compact)
        self._pending_compact = None
        self._write(batch, rd, applied)

    def _acknowledges_first(self, raft: Raft, rd: Ready) -> bool:
        """Whether rd's new entries go to the store before its committed
        entries are applied: on a follower on which no client waits for an
        apply (no write it took is unanswered, no read waits for its index)
        and whose store appends them to its log file alone, the
        acknowledgement that lets the leader commit them leaves one apply
        sooner. The committed entries are applied in ``_persisted``, before
        ``advance``, and their writes held; only while writes may be held
        (``_may_hold``: no compaction and no one waits for the store, whose
        transaction takes the applied writes at once). A Ready with
        committed entries installs no snapshot (the module docstring)."""
        return (
            bool(rd.committed and rd.entries)
            and raft.role is not Role.LEADER
            and self._store.log_apart
            and not self.requests.waits_for_apply
            and self._may_hold(None)
        )

    def _apply(self, rd: Ready) -> Applied | None:
        """Apply rd's committed entries to the overlay and answer their
        clients: they are on a majority's disk already. The store gets the
        same writes in a later transaction (held, or the batch's own)."""
        if not rd.committed:
            return None
        carry, self._carry = self._carry, None  # none, if applying fails
        with self._store.reading() as base:
            outcome = apply_entries(rd.committed, self._overlay.writer(base), carry)
        self._carry = outcome.carry
        applied = outcome.applied
        self._set_applied(applied.index)
        newest = self.requests.applied_writes(outcome.results)
        if newest is not None:
            self.admission.write_answered(self._clock.seconds() - newest)
        if self.requests.releases(self.applied):
            with self._one_view():
                self.requests.release_applied(self.applied)
        for listener in self.apply_listeners:
            listener(outcome)
        # Readable now (the overlay holds them): watchers may be given them.
        self.watch_hub.applied(outcome.events)
        if self._live_keys is not None:
            self._live_keys += key_count_change(outcome.events)
        return applied

    def _may_hold(self, applied: Applied | None) -> bool:
        """The applied writes of a Ready (no snapshot) may be held for a
        later transaction: no compaction waits, no one waits for the store,
        and the held writes stay few (``held_apply``)."""
        if self._pending_compact is not None or self._stored_waiters:
            return False
        return self._held.writes + (len(applied.writes) if applied is not None else 0) < HELD_FLUSH_WRITES

    def _makes_durable(self, rd: Ready) -> bool:
        """rd brings entries or a new term or vote: the store must have them
        before its messages leave."""
        hs = rd.hard_state
        return bool(rd.entries) or (hs is not None and (hs.term, hs.vote) != self._stored_vote)

    def _hold(self, applied: Applied | None, hard_state: HardState | None) -> None:
        if applied is None and hard_state is None:
            return
        self._held.hold(applied, hard_state, self._clock.seconds())
        if self._held_flush is None:
            self._held_flush = self._clock.callLater(HELD_FLUSH_BATCH_SECONDS, self._held_due)

    def _held_due(self) -> None:
        """The flush timer: one per HELD_FLUSH_BATCH_SECONDS at most, not one
        per hold. What it finds held since less than that waits for the rest
        of its time (a transaction took what was held when it was set); held
        writes that make no batch (``HELD_FLUSH_BATCH``) wait on, a
        HELD_FLUSH_BATCH_SECONDS at a time, until HELD_FLUSH_SECONDS have
        passed since the oldest was held. Fewer transactions at a light load
        mean fewer of their fsyncs in the way of the log appends, every
        member's, on the disk."""
        self._held_flush = None
        since = self._held.since
        if since is None or not self.running:
            return
        now = self._clock.seconds()
        wait = since + HELD_FLUSH_BATCH_SECONDS - now
        if wait <= 0 and self._held.writes < HELD_FLUSH_BATCH:
            wait = min(HELD_FLUSH_BATCH_SECONDS, since + HELD_FLUSH_SECONDS - now)
        if wait > 1e-6:  # (not a rounding error's worth of a wait)
            self._held_flush = self._clock.callLater(wait, self._held_due)
            return
        self._flush_held()

    def _flush_held(self) -> None:
        """Give the held writes (and any compaction waiting) to the store in
        a transaction of their own: no Ready took them in time, or someone
        waits for the store. Only while no write is under way: a transaction
        under way carries them already, and a log-only write under way is
        followed by this flush (``_persisted``)."""
        if self._held_flush is not None:
            if self._held_flush.active():
                self._held_flush.cancel()
            self._held_flush = None
        if not self._held or not self.running or self._failed is not None:
            return
        if self._persisting is not None or self._disk_retry is not None:
            return
        applied, hard_state = self._held.take(None, None)
        batch = WriteBatch(hard_state, (), applied, compact=self._pending_compact)
        self._pending_compact = None
        self._write(batch, _NO_READY, applied)

    def _write(self, batch: WriteBatch, rd: Ready, applied: Applied | None) -> None:
        if batch.hard_state is not None:
            self._stored_vote = (batch.hard_state.term, batch.hard_state.vote)
        d = self._store.write(batch)
        self._persisting = d
        d.addCallbacks(
            self._persisted, self._persist_failed, callbackArgs=(rd, applied, batch), errbackArgs=(batch, rd, applied)
        )

    def _persisted(self, _: None, rd: Ready, applied: Applied | None, batch: WriteBatch | None = None) -> None:
        """rd is durable. Persist -> send -> apply -> advance: the store now
        holds what the overlay had, or the snapshot, whose index reads may
        now be released at."""
        self._persisting = None
        self._installing = None
        if self._disk_full is not None and (batch is None or not (self._store.log_apart and batch.log_only)):
            self._disk_full = None
            log.warn("the disk has room again: the write it refused is stored, this node writes again")
            for listener in self.disk_full_listeners:
                listener(False)
        raft = self.raft
        if not self.running or raft is None:
            return
        self._send(rd.messages)
        if rd.committed and rd.committed[-1].index > self.applied:
            # Stored and acknowledged before they were applied (_acknowledges_first).
            self._hold(self._apply(rd), None)
        if rd.snapshot is not None:
            log.info("installed a snapshot at index {index}", index=rd.snapshot.index)
            self.snapshots_installed += 1
            self._live_keys = None
            self._carry = None
            self._overlay.clear()
            self._compaction.reset(rd.snapshot.index)
            self._set_applied(rd.snapshot.index)
            self.requests.release_applied(self.applied)
            self.watch_hub.replaced()
            for hook in self.install_listeners:
                hook()
        elif applied is not None:
            self._overlay.stored(applied.index)
        if rd.snapshot is not None or applied is not None:
            self._stored_applied = rd.snapshot.index if rd.snapshot is not None else applied.index  # type: ignore[union-attr]
            self._release_stored()
        self._guard(lambda: raft.advance(rd))
        self._maybe_compact(raft)
        if self._held and (self._held_flush is None or self._stored_waiters or self._held.writes >= HELD_FLUSH_WRITES):
            # Its time came, someone began to wait for the store, or the
            # held writes grew to their bound, while this write (log-only:
            # it took none of them) was under way.
            self._flush_held()
        self._schedule_if_due(raft)

    def _schedule_if_due(self, raft: Raft) -> None:
        """After a Ready: the next turn, if it would find something to store,
        send or answer; else (at one connection, say, where the
        acknowledgements are yet to come) only what the apply may have
        changed is looked at now, and the next input schedules the turn."""
        requests = self.requests
        if raft.has_ready() or raft.has_output() or requests.has_new_writes or requests.has_new_reads:
            self._schedule()
        else:
            self._watch_membership(raft)

    def _release_stored(self) -> None:
        if not self._stored_waiters:
            return
        waiting, self._stored_waiters = self._stored_waiters, []
        for index, waiter in waiting:
            if index <= self._stored_applied:
                waiter.callback(None)
            else:
                self._stored_waiters.append((index, waiter))

    def _persist_failed(self, failure: Failure, batch: WriteBatch, rd: Ready, applied: Applied | None) -> None:
        self._persisting = None
        error = failure.value
        if error is not None and not isinstance(error, DiskFailed) and is_disk_full(error):
            if rd is _NO_READY and self._store.log_apart:
                self._flush_refused(error, batch)
            else:
                self._stall(error, batch, rd, applied)
            return
        self._failed = failure
        if isinstance(error, DiskFailed):
            log.critical("{line}", line=error.line)  # one line: the traceback says nothing more
        else:
            log.failure("cannot write to the store; this node stops serving", failure)
        self._on_fatal(failure)

    def _stall(self, error: BaseException, batch: WriteBatch, rd: Ready, applied: Applied | None) -> None:
        """The disk (or LMDB's map) is full: nothing of batch was stored
        (an LMDB transaction is all or nothing, and a full disk fails it
        before its meta page is written, so trying it again is safe, unlike
        an fsync that failed with EIO). The node keeps batch, writes nothing
        newer and tries batch again every ``DISK_FULL_RETRY_SECONDS`` until
        it gets through (space was freed) or the node stops (a restart
        recovers from what is durable). Meanwhile its Ready is not advanced:
        its votes and append acknowledgements stay unsent, nothing of it
        counts towards a commit, and no later entry is applied here -- the
        same entries, in the same order, are applied as on every member,
        only later. What was applied before (the overlay holds it) is still
        served. The listeners (the quota) raise the NOSPACE alarm.

        A leader whose disk is full hands leadership to the most up-to-date
        voter (and again at each retry while it still leads): the others
        commit without it, but it could neither apply nor answer, so the
        deletes, compactions and disarms that free space would hang."""
        self._note_disk_full(error)
        if self.running:
            self._hand_over_leadership()
            self._disk_retry = self._clock.callLater(DISK_FULL_RETRY_SECONDS, self._retry_write, batch, rd, applied)

    def _flush_refused(self, error: BaseException, batch: WriteBatch) -> None:
        """The disk refused a flush of held writes (nothing of it stored)
        over a store whose log file needs no room (it is preallocated). The
        node does not stall: it keeps appending to the log file, applying
        and answering; the disk is full all the same (the NOSPACE alarm is
        raised, writes that grow the db are refused), the flush's writes are
        held again, before any held since, and the flush is tried again every
        ``DISK_FULL_RETRY_SECONDS``. Past ``HELD_FLUSH_WRITES`` held writes,
        or with a compaction due, the next Ready is a transaction, which the
        full disk refuses in turn: that one stalls (``_stall``)."""
        self._note_disk_full(error)
        self._held.put_back(batch.apply, batch.hard_state, self._clock.seconds())
        if batch.compact is not None and self._pending_compact is None:
            self._pending_compact = batch.compact
        if self.running:
            self._hand_over_leadership()
            if self._held_flush is not None and self._held_flush.active():
                self._held_flush.cancel()
            self._held_flush = self._clock.callLater(DISK_FULL_RETRY_SECONDS, self._flush_held)
            self._schedule()

    def _note_disk_full(self, error: BaseException) -> None:
        if self._disk_full is None:
            log.critical(
                "cannot write to the store: the disk is full ({error}); this node raises the NOSPACE alarm, "
                "serves what it has applied and tries the write again every {retry:g} s (nothing acknowledged "
                "is lost): free space on the db's file system and it resumes by itself, or stop it and move "
                "the db to a larger one",
                error=error,
                retry=DISK_FULL_RETRY_SECONDS,
            )
            self._disk_full = error
            for listener in self.disk_full_listeners:
                listener(True)

    def _hand_over_leadership(self) -> None:
        """Leader with a full disk: start a transfer to the most up-to-date
        voter, unless one is under way or no other voter exists. The writes
        taken so far (the NOSPACE alarm the listeners just proposed) are
        proposed first: a transfer refuses proposals until it ends."""
        raft = self.raft
        if raft is None or raft.role is not Role.LEADER or raft.transferring_to is not None:
            return
        if not raft.membership.voters - {self.node_id}:
            return
        if self.requests.has_new_writes:
            self._propose_new(raft)
        try:
            target = raft.transfer_leadership(None)
        except (MembershipError, NotLeader):
            return
        log.warn("this leader's disk is full: it hands leadership to {target}", target=target)
        self._schedule()

    def _retry_write(self, batch: WriteBatch, rd: Ready, applied: Applied | None) -> None:
        self._disk_retry = None
        if self.running and self._failed is None:
            self._write(batch, rd, applied)

    def _watch_commit(self, raft: Raft) -> None:
        """A commit index held back gets COMMIT_FLUSH_SECONDS for an append
        to carry it, counted from when it was first held back: an append
        that carried it ends the wait (the timer then finds nothing to do), so that under a steady
        trickle of writes (one connection) followers learn every commit index
        from the next append and no commit-only message is ever sent."""
        if not raft.commit_waiting:
            self._commit_flush_at = None  # the timer, if set, finds nothing to do
        elif self._commit_flush_at is None:
            self._commit_flush_at = self._clock.seconds() + COMMIT_FLUSH_SECONDS
            if self._commit_flush is None:
                self._commit_flush = self._clock.callLater(COMMIT_FLUSH_SECONDS, self._commit_due)

    def _commit_due(self) -> None:
        """The commit flush timer: set once and left to run (cheaper than
        setting and cancelling one per write); what it finds held back
        since less than COMMIT_FLUSH_SECONDS waits for the rest of its time."""
        self._commit_flush = None
        at = self._commit_flush_at
        if at is None or not self.running:
            return
        wait = at - self._clock.seconds()
        if wait > 0:
            self._commit_flush = self._clock.callLater(wait, self._commit_due)
            return
        self._flush_commit()

    def _flush_commit(self) -> None:
        """The commit index held back for the next append: send it now."""
        self._commit_flush_at = None
        raft = self.raft
        if raft is not None and self.running:
            self._guard(raft.flush_commit)
            self._process()

    def _propose_new(self, raft: Raft) -> None:
        """This turn's writes as one proposal (one append, or one forward)."""
        live = self.requests.take_new_writes()
        if not live:
            return
        ctx = self.requests.next_ctx()
        payloads = [p for _, p in live]
        try:
            raft.propose(self._stamped(payloads) if raft.role is Role.LEADER else payloads, ctx)
        except ProposalDropped:
            # No leader known, or a leadership transfer under way: both pass
            # within an election or so. A write no leader took by its
            # deadline fails with NoLeader (it was never proposed).
            self.requests.hold_writes(live)
            return
        self.requests.proposed(live)
        if raft.role is not Role.LEADER:
            self.requests.forwarded(self._clock.seconds(), ctx, live)

    def _send(self, messages: Sequence[Message]) -> None:
        """Hand messages to the transport. A forward it dropped unsent (no
        link to the leader yet, or the link down) certainly reached no log:
        its writes are no longer "proposed" and are proposed again at the
        next tick, as after the leader's refusal (they end as NoLeader, not
        OutcomeUnknown, if no leader takes them by their deadline); a
        forwarded read is asked again the same way."""
        unsent = self._transport.send(messages)
        if not unsent:
            return
        requests = self.requests
        for msg in unsent:
            if type(msg) is Propose and requests.ours(msg.ctx):
                requests.refused(msg.ctx)
            elif type(msg) is ReadIndexRequest and requests.ours(msg.ctx):
                requests.read_refused(msg.ctx)

    def _stamped(self, payloads: Sequence[bytes]) -> list[bytes]:
        """payloads as this leader appends them: stamped with its clock, the
        source of log time (``dkv.idempotency``; a follower forwards them
        unstamped and the leader stamps them as it steps them in)."""
        now_ms = self._stamps.now_ms(self._clock.seconds(), self._log_time_ms)
        return [stamp(p, now_ms) for p in payloads]

    def _log_time_ms(self) -> int:
        """Log time as the applied state holds it."""
        if self._carry is not None:
            return self._carry.log_time.now_ms
        with self.view() as state:
            return stored_log_time_ms(state.tables)

    def _read_new(self, raft: Raft) -> None:
        """This turn's reads share one ReadIndex request."""
        reqs = self.requests.take_new_reads()
        if not reqs:
            return
        ctx = self.requests.next_ctx()
        try:
            raft.read_index(ctx)
        except ProposalDropped:
            self.requests.hold_reads(reqs)  # no leader known: as writes
            return
        self.requests.reads_asked(ctx, reqs)

    def _deliver(self, raft: Raft, out: Outbox) -> None:
        if not out:
            return
        if out.messages:
            self._send(out.messages)
        requests = self.requests
        if out.read_states:
            with self._one_view():  # nothing is applied until _persist
                for rs in out.read_states:
                    if requests.ours(rs.ctx):
                        requests.read_index(rs.ctx, rs.index, self.applied)
                    else:
                        log.debug("ignored a read index for an earlier run of this node (ctx {ctx})", ctx=rs.ctx)
        for ctx in out.failed_reads:
            if requests.ours(ctx):
                requests.read_refused(ctx)
        for ctx in out.failed_proposals:
            if requests.ours(ctx):
                requests.refused(ctx)
            else:
                log.debug("ignored a refusal for an earlier run of this node (ctx {ctx})", ctx=ctx)
        for peer in out.snapshots_needed:
            self._shipper.send(peer, raft.term, raft.term_at, raft.membership_at)

    # -- the parts' hooks ------------------------------------------------------------

    def _snapshot_reported(self, peer: str, ok: bool) -> None:
        raft = self.raft
        if raft is not None and self.running:
            self._guard(lambda: raft.report_snapshot(peer, ok))
            self._schedule()

    def _maybe_compact(self, raft: Raft) -> None:
        point = self._compaction.point(self.applied, self._stored_applied, raft.log_base)
        if point is not None:
            self._pending_compact = raft.compact(point)
            self.snapshots_saved += 1
            log.info("compacted the log up to index {index} (applied {applied})", index=point, applied=self.applied)
            self._schedule()

    def _watch_membership(self, raft: Raft) -> None:
        self._links.sync(raft.membership, raft.committed_membership())
        self._removal.check(raft.membership_at(self.applied), self.applied, raft.removed)

    def _on_role_change(self, raft: Raft) -> None:
        """Log leadership changes once; a node that stops leading drops the
        snapshot views it kept, pending transfers learn the new leader, and
        requests waiting for a leader (``leader_known``) learn of one.
        The leadership listeners hear when this node starts or stops leading."""
        leading = raft.role is Role.LEADER
        if leading != self._leading:
            self._leading = leading
            self._stamps.stop()
            for listener in self.leadership_listeners:
                listener(leading)
        # Whatever the turn saw in between, a known leader is what they wait for.
        if raft.leader is not None and self.requests.has_leader_waits:
            self.requests.leader_known(raft.leader)
        soft = (raft.role, raft.term, raft.leader)
        if soft == self._soft:
            return
        old, self._soft = self._soft, soft
        if raft.leader is not None and (old is None or old[2] != raft.leader):
            self.leader_changes += 1
        if old is not None and old[0] is soft[0] and old[2] == soft[2]:
            return  # only the term moved (e.g. a failed election)
        if raft.role is not Role.LEADER:
            self._shipper.drop_kept()
            if raft.leader is not None and self.requests.has_transfers:
                self.requests.transfers_done(raft.leader)
        if raft.role is Role.LEADER:
            log.info("became leader in term {term}", term=raft.term)
        elif raft.leader is not None:
            log.info("following {leader} in term {term}", leader=raft.leader, term=raft.term)
        elif old is not None and old[2] is not None:
            log.info("lost contact with leader {old} (term {term})", old=old[2], term=raft.term)

    # -- invariants ------------------------------------------------------------------

    def _set_applied(self, index: int) -> None:
        """The state reads see (overlay over store) now reflects every entry
        up to index. It never moves backwards: a read released at index i
        must never see the state of an index below i afterwards."""
        if index < self.applied:
            try:
                raise AssertionError(f"applied index would move back from {self.applied} to {index}")
            except AssertionError:
                self._internal_error(Failure())
            return
        self.applied = index

    def _guard(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001
            self._internal_error(Failure())

    def _internal_error(self, failure: Failure) -> None:
        """An internal check failed: stop serving at once (nothing more is
        persisted, sent or answered) and let the node stop."""
        self._failed = failure
        log.failure("an internal check failed; this node stops", failure)
        self._on_fatal(failure)
