# test-case-name: tests.raft.test_paper,tests.raft.test_simulation
"""The pure Raft core: a deterministic state machine with no I/O.

Inputs are ``tick()``, ``step(message)``, ``propose()``, ``read_index()``,
``propose_membership()`` and ``transfer_leadership()``. Outputs are collected,
never acted on:

``take_outbox()``
    messages that may leave at once, plus reads that became safe and requests
    that failed. The leader's appends are here: a leader may send entries
    before its own disk holds them (Raft thesis §10.2.1); it counts itself
    towards a commit only once they are stable.
``ready()`` / ``advance()``
    what must be made durable (hard state, entries), committed entries to
    apply, and the messages that may leave only *after* that write: votes and
    append acknowledgements promise the sender's disk (§5.2, §5.3). The driver
    persists, then sends, then applies, then calls ``advance(ready)``; it holds
    at most one Ready at a time.

The durability rule (etcd's): **no message leaves before the term it carries
is on disk**, and a vote (or a vote request, which votes for its sender) not
before the vote is. ``take_outbox()`` holds back every message of a term newer
than the hard state of the last Ready passed to ``advance()`` (PreVote
messages excepted: they carry a prospective term and promise nothing); they
leave from a later ``take_outbox()``, once the Ready that carries the term is
advanced. Without it a lone voter, which wins its election without anyone's
help, could send appends of a term that a crash then forgets, win that same
term again and write other entries at the same (index, term) (Log Matching
broken). Votes and append acknowledgements travel in ``Ready.messages``.

Time is a tick count and randomness an injected ``random.Random``, so a
schedule replays exactly from its seed.
"""

from __future__ import annotations

import bisect
import enum
import random
from collections.abc import Sequence

import attrs

from dkv.raft.log import RaftLog
from dkv.raft.membership import Membership, MembershipError, check_single_change
from dkv.raft.messages import (
    AppendEntries,
    AppendResponse,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    NotMember,
    Propose,
    ProposeRejected,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    SnapshotMeta,
    TimeoutNow,
    VoteResponse,
    depends_on_disk,
)
from dkv.raft.progress import Progress, ProgressState
from dkv.raft.read_only import ReadIndexTracker


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class ProposalDropped(Exception):
    """The request was certainly not appended to any log (safe to retry)."""


class NotLeader(Exception):
    """The operation needs the leader; ``leader`` is who we think leads, if anyone."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


@attrs.frozen
class RaftConfig:
    #: A follower that hears nothing for a random time in [election, 2*election)
    #: ticks starts an election; a leader that cannot hear a quorum for
    #: election ticks steps down (CheckQuorum).
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    #: Unacknowledged appends per follower while replicating (pipelining).
    max_inflight: int = 64
    #: Soft cap on the entry data in one append.
    max_append_bytes: int = 1 << 20
    check_quorum: bool = True
    pre_vote: bool = True
    #: Hold back appends that would only carry a new commit index until
    #: ``flush_commit()``: under load the next append carries it anyway, one
    #: message per follower instead of two (the driver flushes soon after).
    defer_commit: bool = False

    def __attrs_post_init__(self) -> None:
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")


@attrs.frozen
class ReadState:
    """A read registered with ctx is linearizable once applied >= index."""

    ctx: int
    index: int


@attrs.frozen
class Outbox:
    messages: tuple[Message, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    #: Read contexts that cannot be served (no leader, leadership lost).
    failed_reads: tuple[int, ...] = ()
    #: Forwarded proposal contexts that the receiver certainly did not append.
    failed_proposals: tuple[int, ...] = ()
    #: Followers that need entries we compacted: send each the state (a
    #: snapshot), then ``report_snapshot(peer, ok)``.
    snapshots_needed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(
            self.messages
            or self.read_states
            or self.failed_reads
            or self.failed_proposals
            or self.snapshots_needed
        )


_NO_OUTBOX = Outbox()


@attrs.frozen
class Ready:
    """One unit of durable work. Order: persist hard_state and entries
    (entries replace the log from entries[0].index on), then send messages,
    then apply committed, then ``advance(self)``."""

    hard_state: HardState | None
    entries: tuple[Entry, ...]
    committed: tuple[Entry, ...]
    messages: tuple[Message, ...]
    #: Make the staged snapshot with this meta the state and the log's base,
    #: dropping the whole log; persisted before hard_state and entries. A
    #: Ready with a snapshot has no committed entries.
    snapshot: SnapshotMeta | None = None


@attrs.frozen
class RaftStatus:
    id: str
    role: Role
    term: int
    leader: str | None
    commit: int
    applied: int
    last_index: int
    first_index: int
    snapshot_index: int
    membership: Membership
    #: Match index per member (the leader's view; empty on other nodes).
    match: dict[str, int]


class Raft:
    """One node's Raft state. Not thread-safe; one caller at a time."""

    def __init__(
        self,
        node_id: str,
        config: RaftConfig,
        rng: random.Random,
        *,
        hard_state: HardState = HardState(),
        entries: Sequence[Entry] = (),
        snapshot_index: int = 0,
        snapshot_term: int = 0,
        snapshot_membership: Membership = Membership(),
        applied: int = 0,
        first_election_ticks: int | None = None,
    ) -> None:
        self.id = node_id
        self.cfg = config
        self._rng = rng
        self.log = RaftLog(
            entries,
            snapshot_index=snapshot_index,
            snapshot_term=snapshot_term,
            committed=hard_state.commit,
            applied=applied,
        )
        self._snapshot_membership = snapshot_membership
        #: membership's memo: (log.config_version, snapshot membership, latest).
        self._latest: tuple[int, Membership | None, Membership] = (-1, None, snapshot_membership)
        self.term = hard_state.term
        self.vote = hard_state.vote
        self._last_hard_state = HardState(self.term, self.vote, self.log.committed)
        #: The term of the last hard state the driver made durable (advance):
        #: messages of a newer term are held back (see the module docstring).
        self._durable_term = hard_state.term
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        self._votes: dict[str, bool] = {}
        self._progress: dict[str, Progress] = {}
        self.election_elapsed = 0
        self._heartbeat_elapsed = 0
        # The node listed first in a new cluster's configuration gets "the
        # first chance" to lead: until any leader has appended to the log
        # (the log holds only the bootstrap entry, of term 1), its election
        # timeout is this short one, every time.
        self._first_election_ticks = first_election_ticks
        self._timeout = self._random_timeout()
        self._transferee: str | None = None
        #: Told by the leader that its configurations leave us out
        #: (NotMember): we stay passive (no campaigning). A later message
        #: from a leader clears it: the notice may have been overtaken by a
        #: change that added us back.
        self.removed = False
        #: With ``removed``: the committed configuration (index, members) the
        #: leader sent, which leaves us out.
        self.removed_by: tuple[int, Membership] | None = None
        # Outputs.
        self._msgs: list[Message] = []
        self._durable_msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._failed_reads: list[int] = []
        self._failed_proposals: list[int] = []
        self._snapshots_needed: list[str] = []
        self._pending_snapshot: SnapshotMeta | None = None
        # Leader: appends to send at the next take_outbox (batching per turn).
        self._dirty: set[str] = set()
        # Leader: followers to send an append even when there is nothing new
        # (their match lags although every entry went out: some were lost).
        self._probe_tail: set[str] = set()
        # Leader: followers owed a commit index held back (defer_commit).
        self._commit_waiting: set[str] = set()
        # ReadIndex (thesis §6.4): reads wait for a quorum to ack a round.
        self._reads = ReadIndexTracker()
        self._heartbeat_due = False
        # Decoded CONFIG entries by (index, term).
        self._membership_cache: dict[tuple[int, int], Membership] = {}

    # -- membership --------------------------------------------------------------

    @property
    def membership(self) -> Membership:
        """The latest configuration in the log, committed or not (thesis §4.1).
        Asked for many times per message: kept until the log's configuration
        entries or the snapshot's configuration change."""
        latest = self._latest
        if latest[0] == self.log.config_version and latest[1] is self._snapshot_membership:
            return latest[2]
        membership = self._config_at(self.log.last_index())
        self._latest = (self.log.config_version, self._snapshot_membership, membership)
        return membership

    def membership_at(self, index: int) -> Membership:
        """The configuration in force at index: the last CONFIG entry at or
        before it, else the snapshot's."""
        configs = self.log.config_indexes
        if not configs or index >= configs[-1]:
            return self.membership  # the latest's (the usual case: no change under way)
        return self._config_at(index)

    def _config_at(self, index: int) -> Membership:
        at = bisect.bisect_right(self.log.config_indexes, index)
        if at == 0:
            return self._snapshot_membership
        entry = self.log.entry(self.log.config_indexes[at - 1])
        # Keyed by (index, term): a truncation can put another configuration
        # at the same index. Few configurations exist, so keep them all.
        key = (entry.index, entry.term)
        membership = self._membership_cache.get(key)
        if membership is None:
            if len(self._membership_cache) > 64:
                self._membership_cache.clear()
            membership = self._membership_cache[key] = Membership.decode(entry.data)
        return membership

    def _config_pending(self) -> bool:
        return bool(self.log.config_indexes) and self.log.config_indexes[-1] > self.log.committed

    def _promotable(self) -> bool:
        """May we campaign? Voters of the latest configuration may. So may
        voters of the committed one that an uncommitted change removes:
        until the change commits they may be the only nodes whose logs are
        up to date enough to win, e.g. two leaders in turn that each appended
        a change removing itself and lost leadership before committing it.
        A node told it was removed (NotMember) may not."""
        if self.removed:
            return False
        if self.membership.is_voter(self.id):
            return True
        return self._config_pending() and self.membership_at(self.log.committed).is_voter(self.id)

    # -- inputs ------------------------------------------------------------------

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
        elif self.role is Role.CANDIDATE and self.term > self._durable_term:
            # The campaign has not begun for anyone else: its vote requests
            # leave once its term and vote are on disk. Counting the time a
            # slow disk takes would start the next campaign before this one
            # asked anybody; the late requests of each abandoned term would
            # then keep resetting the other members' timers (they grant
            # them), and nobody would ever win.
            return
        else:
            self.election_elapsed += 1
            if self.election_elapsed >= self._timeout and self._promotable():
                self.election_elapsed = 0
                self._campaign("pre" if self.cfg.pre_vote else "real")

    def propose(self, payloads: Sequence[bytes], ctx: int = 0) -> None:
        """Append payloads as NORMAL entries (leader) or forward them (follower).

        Raises ProposalDropped when they certainly reach no log: no leader is
        known, or a leadership transfer is under way. A follower that forwards
        learns of a refusal through ``Outbox.failed_proposals`` (by ctx)."""
        if self.role is Role.LEADER:
            if self._transferee is not None:
                raise ProposalDropped("leadership transfer in progress")
            first = self.log.last_index() + 1
            self._append_local(
                [Entry(first + i, self.term, EntryKind.NORMAL, p) for i, p in enumerate(payloads)]
            )
        elif self.leader is not None:
            self._send(
                Propose(frm=self.id, to=self.leader, term=self.term, ctx=ctx, payloads=tuple(payloads))
            )
        else:
            raise ProposalDropped("no leader")

    def propose_membership(self, new: Membership) -> int:
        """Append a configuration change (leader only); returns its index.

        One change at a time: refused while an earlier one is uncommitted, and
        when it would add or remove more than one voter. Also refused
        (ProposalDropped, retry later) until the leader has committed an entry
        of its own term: before that, a change appended by an earlier leader
        may still be in some logs and win, and a majority for it and one for
        ours need not overlap (the single-server change bug and its fix,
        described by Diego Ongaro on raft-dev in 2015)."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self._transferee is not None:
            raise ProposalDropped("leadership transfer in progress")
        if self.log.term(self.log.committed) != self.term:
            raise ProposalDropped("no entry of the leader's term is committed yet")
        if self._config_pending():
            raise MembershipError("another membership change is in progress")
        check_single_change(self.membership, new)
        index = self.log.last_index() + 1
        self._append_local([Entry(index, self.term, EntryKind.CONFIG, new.encode())])
        return index

    def read_index(self, ctx: int) -> None:
        """Ask for a linearizable read point. The answer arrives as a
        ReadState(ctx, index) in the outbox, or ctx in failed_reads."""
        if self.role is Role.LEADER:
            self._register_read(self.id, ctx)
        elif self.leader is not None:
            self._send(ReadIndexRequest(frm=self.id, to=self.leader, term=self.term, ctx=ctx))
        else:
            raise ProposalDropped("no leader")

    def transfer_leadership(self, to: str | None = None) -> str:
        """Hand leadership to ``to`` (default: the most up-to-date voter).
        Proposals are refused until the transfer ends or times out."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        voters = self.membership.voters - {self.id}
        if to is None:
            if not voters:
                raise MembershipError("no other voter to transfer leadership to")
            to = max(sorted(voters), key=lambda v: self._progress[v].match)
        if to == self.id:
            return to
        if to not in voters:
            raise MembershipError(f"{to} is not a voter")
        self._transferee = to
        self.election_elapsed = 0
        if self._progress[to].match == self.log.last_index():
            self._send(TimeoutNow(frm=self.id, to=to, term=self.term))
        else:
            self._dirty.add(to)
        return to

    @property
    def transferring_to(self) -> str | None:
        """The voter a leadership transfer under way hands over to; None if none."""
        return self._transferee

    def report_snapshot(self, peer: str, ok: bool) -> None:
        """The driver finished sending peer a snapshot (ok) or gave up. Either
        way we probe next; after a failure only once a heartbeat answers, so
        a dead follower does not get snapshot after snapshot."""
        pr = self._progress.get(peer)
        if self.role is not Role.LEADER or pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.paused = not ok

    @property
    def snapshot_pending(self) -> bool:
        """A snapshot was accepted and waits for the next Ready."""
        return self._pending_snapshot is not None

    def compact(self, index: int) -> SnapshotMeta:
        """Forget entries up to index (<= applied): the applied state is the
        snapshot. Returns the new log base for the driver to persist."""
        term = self.log.term(index)
        if term is None:
            raise ValueError(f"cannot compact at {index}: no such entry")
        meta = SnapshotMeta(index, term, self.membership_at(index))
        if index > self.log.snapshot_index:
            self._snapshot_membership = meta.membership
            self.log.compact(index, term)
        return meta

    def report_unreachable(self, peer: str) -> None:
        """The transport lost messages to peer: stop streaming, probe again."""
        pr = self._progress.get(peer)
        if self.role is Role.LEADER and pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def step(self, m: Message) -> None:
        if isinstance(m, NotMember):
            self._on_not_member(m)
            return
        if isinstance(m, RequestVote) and not self.removed:
            self._tell_if_not_member(m)
        if self.removed and isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)) and m.term >= self.term:
            self.removed = False  # a leader replicates to us: we are (again) wanted
        if m.term > self.term:
            if isinstance(m, RequestVote):
                in_lease = (
                    self.cfg.check_quorum
                    and self.leader is not None
                    and self.election_elapsed < self.cfg.election_ticks
                )
                if in_lease and not m.transfer:
                    # We heard from a live leader recently: a disruptive
                    # candidate (say, one rejoining after a partition) must
                    # not depose it (thesis §4.2.3).
                    return
            if isinstance(m, RequestVote) and m.pre_vote:
                pass  # a PreVote never changes anybody's term
            elif isinstance(m, VoteResponse) and m.pre_vote and m.granted:
                pass  # granted PreVotes carry the term we would campaign in
            else:
                leader = m.frm if isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)) else None
                self._become_follower(m.term, leader)
        elif m.term < self.term:
            if not self._step_request(m):
                self._step_stale(m)
            return

        if isinstance(m, RequestVote):
            self._handle_vote_request(m)
        elif self._step_request(m):
            pass
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    # -- outputs -----------------------------------------------------------------

    def take_outbox(self) -> Outbox:
        """Messages that may leave now, and finished or failed requests.

        Messages of a term not yet durable stay queued until it is (a leader
        of such a term does not even build its appends and heartbeats)."""
        term_durable = self.term <= self._durable_term
        if self.role is Role.LEADER and term_durable:
            self._flush_leader()
        if not self._has_queued():
            return _NO_OUTBOX
        if term_durable:
            msgs, self._msgs = self._msgs, []
        else:
            msgs = [m for m in self._msgs if self._may_leave(m)]
            self._msgs = [m for m in self._msgs if not self._may_leave(m)]
        out = Outbox(
            tuple(msgs),
            tuple(self._read_states),
            tuple(self._failed_reads),
            tuple(self._failed_proposals),
            tuple(self._snapshots_needed),
        )
        self._read_states, self._failed_reads, self._failed_proposals = [], [], []
        self._snapshots_needed = []
        return out

    def has_output(self) -> bool:
        """Would ``take_outbox`` give anything now, or build appends or a
        heartbeat round for it? (A driver may skip a turn that finds none.)"""
        if (
            self.role is Role.LEADER
            and self.term <= self._durable_term
            and (self._dirty or self._heartbeat_due or self._reads.round_wanted)
        ):
            return True
        return self._has_queued()

    def _has_queued(self) -> bool:
        """Does the outbox hold a message, a read state, a failure or a
        snapshot request?"""
        return bool(
            self._msgs
            or self._read_states
            or self._failed_reads
            or self._failed_proposals
            or self._snapshots_needed
        )

    def _may_leave(self, m: Message) -> bool:
        """Is the term m carries durable (or is m a PreVote message, whose
        term is a prospective one that promises nothing)?"""
        return m.term <= self._durable_term or (isinstance(m, (RequestVote, VoteResponse)) and m.pre_vote)

    @property
    def durable_term(self) -> int:
        """The term of the last hard state made durable (see ``advance``)."""
        return self._durable_term

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def has_ready(self) -> bool:
        """Is there work for a Ready? (Messages held back by take_outbox for
        a term that is not durable yet imply a changed hard state, or a
        Ready that carries it outstanding.)"""
        return bool(
            self._durable_msgs
            or self._pending_snapshot is not None
            or self.log.stable < self.log.last_index()
            or self.log.applying < self.log.committed
            or self._hard_state() != self._last_hard_state
        )

    def ready(self) -> Ready:
        """The next unit of durable work. A Ready that installs a snapshot
        carries no committed entries: those after the snapshot come in the
        next Ready, applied on the installed state."""
        hs = self._hard_state()
        changed = hs != self._last_hard_state
        self._last_hard_state = hs
        committed = self.log.next_committed() if self._pending_snapshot is None else []
        if committed:
            self.log.applying = committed[-1].index
        rd = Ready(
            hard_state=hs if changed else None,
            entries=tuple(self.log.unstable_entries()),
            committed=tuple(committed),
            messages=tuple(self._durable_msgs),
            snapshot=self._pending_snapshot,
        )
        self._durable_msgs = []
        self._pending_snapshot = None
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted rd, sent its messages and applied its entries.
        Messages held back for rd's term may leave from the next take_outbox."""
        if rd.hard_state is not None:
            self._durable_term = max(self._durable_term, rd.hard_state.term)
        if rd.entries:
            self.log.stable_to(rd.entries)
        if rd.committed:
            self.log.applied = max(self.log.applied, rd.committed[-1].index)
        if self.role is Role.LEADER:
            self._progress[self.id].match = self.log.stable
            self._maybe_commit()

    # -- facts for the driver ------------------------------------------------------

    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def applied_index(self) -> int:
        """The last index the driver applied and advanced."""
        return self.log.applied

    @property
    def log_base(self) -> int:
        """The index the log starts after (the last compacted or installed)."""
        return self.log.snapshot_index

    def term_at(self, index: int) -> int | None:
        """The term of the entry at index; None when compacted or absent."""
        return self.log.term(index)

    def committed_membership(self) -> Membership:
        """The configuration in force at the commit index."""
        return self.membership_at(self.log.committed)

    def caught_up(self, node_id: str, max_lag: int) -> bool:
        """Leader only: does node_id hold the latest configuration change (the
        one that made it a learner, say: it answers as a member) and a log
        within max_lag entries of the commit index?"""
        if self.role is not Role.LEADER:
            return False
        pr = self._progress.get(node_id)
        if pr is None:
            return False
        added_at = self.log.config_indexes[-1] if self.log.config_indexes else 0
        return pr.match >= added_at and pr.match + max_lag >= self.log.committed

    def status(self) -> RaftStatus:
        match = (
            {i: p.match for i, p in self._progress.items()} if self.role is Role.LEADER else {}
        )
        return RaftStatus(
            id=self.id,
            role=self.role,
            term=self.term,
            leader=self.leader,
            commit=self.log.committed,
            applied=self.log.applied,
            last_index=self.log.last_index(),
            first_index=self.log.first_index(),
            snapshot_index=self.log.snapshot_index,
            membership=self.membership,
            match=match,
        )

    # -- role changes -------------------------------------------------------------

    def _random_timeout(self) -> int:
        if self._first_election_ticks and self.log.last_term() <= 1:
            return self._first_election_ticks
        return self.cfg.election_ticks + self._rng.randrange(self.cfg.election_ticks)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = ""
        self.leader = None
        self.election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._timeout = self._random_timeout()
        self._votes = {}
        self._transferee = None
        self._dirty.clear()
        self._probe_tail.clear()
        self._commit_waiting.clear()
        self._heartbeat_due = False
        self._fail_pending_reads()

    def _become_follower(self, term: int, leader: str | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader
        self._progress = {}

    def _become_pre_candidate(self) -> None:
        # Like etcd: a pre-candidate keeps its term and vote; only the lead goes.
        self._fail_pending_reads()
        self.role = Role.PRE_CANDIDATE
        self.leader = None
        self._votes = {}
        self._progress = {}

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.role = Role.CANDIDATE
        self.vote = self.id
        self._progress = {}

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        last = self.log.last_index()
        self._progress = {i: Progress(last + 1) for i in self.membership.ids | {self.id}}
        self._progress[self.id].match = self.log.stable
        self._progress[self.id].recent_active = True
        # A no-op entry of the new term: committing it commits everything
        # before it (§5.4.2) and enables ReadIndex (thesis §6.4).
        self._append_local([Entry(last + 1, self.term, EntryKind.NORMAL, b"")])

    def _fail_pending_reads(self) -> None:
        for frm, ctx in self._reads.take_all():
            if frm == self.id:
                self._failed_reads.append(ctx)
            else:
                self._send(
                    ReadIndexResponse(frm=self.id, to=frm, term=self.term, ctx=ctx, ok=False)
                )

    # -- elections ---------------------------------------------------------------

    def _campaign(self, kind: str) -> None:
        """kind: "pre" (PreVote, §9.6 of the thesis), "real", or "transfer"."""
        if kind == "pre":
            self._become_pre_candidate()
            term = self.term + 1
        else:
            self._become_candidate()
            term = self.term
        if self._poll(self.id, True):
            return
        for voter in sorted(self.membership.voters - {self.id}):
            self._send(
                RequestVote(
                    frm=self.id,
                    to=voter,
                    term=term,
                    last_index=self.log.last_index(),
                    last_term=self.log.last_term(),
                    pre_vote=kind == "pre",
                    transfer=kind == "transfer",
                )
            )

    def _poll(self, voter: str, granted: bool) -> bool:
        """Record a vote; returns True when the election ended (won or lost)."""
        self._votes.setdefault(voter, granted)
        voters = self.membership.voters
        yes = sum(1 for v, g in self._votes.items() if g and v in voters)
        no = sum(1 for v, g in self._votes.items() if not g and v in voters)
        if yes >= self.membership.quorum():
            if self.role is Role.PRE_CANDIDATE:
                self._campaign("real")
            else:
                self._become_leader()
            return True
        if no > len(voters) - self.membership.quorum():
            self._become_follower(self.term, None)
            return True
        return False

    def _config_index(self, index: int) -> int:
        """The index of the configuration in force at index: its entry, or
        the snapshot base if it came with the snapshot (a lower bound)."""
        at = bisect.bisect_right(self.log.config_indexes, index)
        return self.log.config_indexes[at - 1] if at else self.log.snapshot_index

    def _tell_if_not_member(self, m: RequestVote) -> None:
        """A campaigning node that the leader's configurations (committed and
        latest) do not list may have been removed without learning it (it was
        down, or the news was lost): tell it (thesis §4.2.2). Only the leader
        tells: it holds every committed change, so a node it tells was not
        re-added since."""
        if self.role is not Role.LEADER:
            return
        committed = self.log.committed
        if m.frm in self.membership.ids or m.frm in self.membership_at(committed).ids:
            return
        if not self.membership_at(committed).members:
            return  # we know no configuration yet (a node still joining)
        self._send(
            NotMember(
                frm=self.id,
                to=m.frm,
                term=self.term,
                config_index=self._config_index(committed),
                membership=self.membership_at(committed),
            )
        )

    def _on_not_member(self, m: NotMember) -> None:
        """The leader's committed configuration, at least as recent as the
        latest one in our log, leaves us out: we were removed. We check it
        ourselves (it is in the message), so we are certain that the latest
        configuration we know of leaves us out. Stop campaigning; the driver
        stops the node unless a leader contacts us soon (see ``removed``)."""
        if self.removed or self.id not in self.membership.ids | self.membership_at(self.log.committed).ids:
            return
        if m.term < self.term or m.config_index < self._config_index(self.log.last_index()):
            return  # older news than our own log
        if self.id in m.membership.ids or not m.membership.members:
            return  # the configuration it sent does list us: not removed
        self.removed = True
        self.removed_by = (m.config_index, m.membership)
        if self.role is not Role.FOLLOWER:
            self._become_follower(self.term, None)

    def latest_known_membership(self) -> tuple[int, Membership]:
        """The latest configuration this node knows of, with its index: the
        latest in its log, or the committed one a leader sent with NotMember
        if that is newer."""
        own = (self._config_index(self.log.last_index()), self.membership)
        if self.removed and self.removed_by is not None and self.removed_by[0] >= own[0]:
            return self.removed_by
        return own

    def _handle_vote_request(self, m: RequestVote) -> None:
        can_vote = (
            self.vote == m.frm
            or (self.vote == "" and self.leader is None)
            # A PreVote for a later term (the lease check in step already
            # ignored it if we hear from a live leader).
            or (m.pre_vote and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            if not m.pre_vote:
                self.vote = m.frm
                self.election_elapsed = 0
            # A granted PreVote answers in the candidate's prospective term.
            self._send(VoteResponse(frm=self.id, to=m.frm, term=m.term, granted=True, pre_vote=m.pre_vote))
        else:
            self._send(
                VoteResponse(frm=self.id, to=m.frm, term=self.term, granted=False, pre_vote=m.pre_vote)
            )

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, VoteResponse):
            if m.pre_vote == (self.role is Role.PRE_CANDIDATE):
                self._poll(m.frm, m.granted)
        elif isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
            # Someone won this term (§5.2).
            self._become_follower(m.term, m.frm)
            self._step_follower(m)

    def _step_request(self, m: Message) -> bool:
        """Forwarded client requests and the answers to ours, handled alike in
        every role and term; False when m is not one of them.

        The leader of m's term serves a forwarded proposal or read; anyone
        else (a follower, a candidate, a leader of a later term: the sender
        took an older leader for ours) refuses it, and the sender retries.
        Answers to what we forwarded count in any role and term: a refused
        proposal was certainly not appended, and a read index was confirmed
        by a quorum of its leader's term after our request reached it, which
        makes it safe to serve (thesis §6.4). Dropped (in any role, a leader
        included: a forwarder may have become leader meanwhile), they left
        the request waiting for its deadline."""
        if isinstance(m, Propose):
            if self.role is Role.LEADER and m.term == self.term:
                try:
                    self.propose(m.payloads)
                    return True
                except ProposalDropped:
                    pass
            self._send(ProposeRejected(frm=self.id, to=m.frm, term=self.term, ctx=m.ctx))
        elif isinstance(m, ReadIndexRequest):
            if self.role is Role.LEADER and m.term == self.term:
                self._register_read(m.frm, m.ctx)
            else:
                self._send(ReadIndexResponse(frm=self.id, to=m.frm, term=self.term, ctx=m.ctx, ok=False))
        elif isinstance(m, ReadIndexResponse):
            if m.ok:
                self._read_states.append(ReadState(m.ctx, m.index))
            else:
                self._failed_reads.append(m.ctx)
        elif isinstance(m, ProposeRejected):
            self._failed_proposals.append(m.ctx)
        else:
            return False
        return True

    def _step_stale(self, m: Message) -> None:
        """A message from an older term. Mostly ignored, but a stale leader or
        pre-candidate is told our term so it stops (etcd does the same)."""
        if isinstance(m, (AppendEntries, Heartbeat)):
            self._send(AppendResponse(frm=self.id, to=m.frm, term=self.term, success=False, index=0))
        elif isinstance(m, RequestVote) and m.pre_vote:
            self._send(VoteResponse(frm=self.id, to=m.frm, term=self.term, granted=False, pre_vote=True))

    # -- follower ----------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self.election_elapsed = 0
            self.leader = m.frm
            self._handle_append(m)
        elif isinstance(m, InstallSnapshot):
            self.election_elapsed = 0
            self.leader = m.frm
            self._handle_snapshot(m)
        elif isinstance(m, Heartbeat):
            self.election_elapsed = 0
            self.leader = m.frm
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(HeartbeatResponse(frm=self.id, to=m.frm, term=self.term, seq=m.seq))
        elif isinstance(m, TimeoutNow):
            if self._promotable():
                self._campaign("transfer")

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        """A snapshot from our leader is staged (Raft §7). Make it our state
        unless we already hold what it covers."""
        meta = m.meta
        if meta.index <= self.log.committed:
            # Stale (e.g. we caught up from the log meanwhile): just say where we are.
            self._send(
                AppendResponse(frm=self.id, to=m.frm, term=self.term, success=True, index=self.log.committed)
            )
            return
        if self.log.matches(meta.index, meta.term):
            # Our log holds the snapshot's last entry: keep the log, learn the commit.
            self.log.commit_to(meta.index)
        else:
            self.log.restore(meta.index, meta.term)
            self._snapshot_membership = meta.membership
            self._pending_snapshot = meta
        self._send(AppendResponse(frm=self.id, to=m.frm, term=self.term, success=True, index=meta.index))

    def _handle_append(self, m: AppendEntries) -> None:
        prev_index, prev_term, entries = m.prev_index, m.prev_term, m.entries
        committed = self.log.committed
        if prev_index < committed:
            # Everything up to our commit index matches any leader's log
            # (Leader Completeness, §5.4): skip it.
            skip = committed - prev_index
            if skip >= len(entries):
                if m.commit_only:
                    return
                self._send(
                    AppendResponse(
                        frm=self.id, to=m.frm, term=self.term, success=True, index=committed, seq=m.seq
                    )
                )
                return
            entries = entries[skip:]
            prev_index, prev_term = committed, self.log.term(committed) or 0
        truncations = self.log.truncations
        last_new = self.log.maybe_append(prev_index, prev_term, m.commit, entries)
        if self.log.truncations != truncations:
            self._forget_acks_after(prev_index)
        if m.commit_only and not entries:
            return  # just the commit index; a mismatch shows in heartbeat answers
        if last_new is not None:
            self._send(
                AppendResponse(frm=self.id, to=m.frm, term=self.term, success=True, index=last_new, seq=m.seq)
            )
        else:
            hint_index, hint_term = self.log.conflict_hint(prev_index)
            self._send(
                AppendResponse(
                    frm=self.id,
                    to=m.frm,
                    term=self.term,
                    success=False,
                    index=prev_index,
                    hint_index=hint_index,
                    hint_term=hint_term,
                    seq=m.seq,
                )
            )

    def _forget_acks_after(self, index: int) -> None:
        """Entries after index were just replaced: acknowledgements of them
        still waiting for a Ready (held until the disk has the entries) would
        leave after the next Ready is on disk, which no longer holds what
        they acknowledge -- an old leader could count them towards a commit.
        Drop them (an acknowledgement lost is harmless: the leader asks again)."""
        self._durable_msgs = [
            m
            for m in self._durable_msgs
            if not (type(m) is AppendResponse and m.success and m.index > index)
        ]

    # -- leader ------------------------------------------------------------------

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                # CheckQuorum (thesis §6.2): we cannot hear a majority, so
                # another leader may exist; stop serving.
                self._become_follower(self.term, None)
                return
            self._transferee = None  # a transfer that did not finish in time
            if not self._config_pending():
                self._sync_progress(force=True)  # removed members that never answered
        if self._heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._heartbeat_due = True

    def _quorum_active(self) -> bool:
        voters = self.membership.voters
        active = 0
        for node_id, pr in self._progress.items():
            if node_id == self.id:
                active += node_id in voters
                continue
            if pr.recent_active and node_id in voters:
                active += 1
            pr.recent_active = False
        return active >= self.membership.quorum()

    def _append_local(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        self._sync_progress()
        self._dirty.update(self._progress)
        self._dirty.discard(self.id)

    def _sync_progress(self, force: bool = False) -> None:
        """Track the members of the latest configuration (and us). A member
        it removes is still replicated to until the change is committed and
        it was told the commit index: that is how it learns it was removed
        (it then stops). ``force`` drops such members regardless (they may
        be down)."""
        ids = self.membership.ids | {self.id}
        last = self.log.last_index()
        for node_id in ids - self._progress.keys():
            self._progress[node_id] = Progress(last + 1)
        config_index = self.log.config_indexes[-1] if self.log.config_indexes else 0
        for node_id in self._progress.keys() - ids:
            pr = self._progress[node_id]
            told = self.log.committed >= config_index and pr.sent_commit >= config_index
            if force or told:
                del self._progress[node_id]

    def _match(self, node_id: str) -> int:
        if node_id == self.id:
            return self.log.stable
        pr = self._progress.get(node_id)
        return pr.match if pr is not None else 0

    def _maybe_commit(self) -> bool:
        voters = self.membership.voters
        if not voters:
            return False
        matches = sorted((self._match(v) for v in voters), reverse=True)
        n = matches[self.membership.quorum() - 1]
        # Only entries of the current term commit by counting (§5.4.2).
        if n <= self.log.committed or self.log.term(n) != self.term:
            return False
        self.log.commit_to(n)
        self._dirty.update(p for p in self._progress if p != self.id)
        for frm, ctx in self._reads.take_held():
            self._register_read(frm, ctx)
        if not self._promotable() and not self._config_pending():
            # We were removed and the change is committed: hand over and stop
            # leading (thesis §4.2.2).
            voters_left = sorted(self.membership.voters)
            if voters_left:
                best = max(voters_left, key=lambda v: self._match(v))
                self._send(TimeoutNow(frm=self.id, to=best, term=self.term))
            self._become_follower(self.term, None)
        return True

    def _register_read(self, frm: str, ctx: int) -> None:
        if self.log.term(self.log.committed) != self.term:
            # Until an entry of our term commits we do not know the commit
            # index of the previous leaders (thesis §6.4).
            self._reads.hold(frm, ctx)
            return
        self._reads.register(frm, ctx, self.log.committed)
        self._release_reads()

    def _release_reads(self) -> None:
        if not self._reads:
            return
        acked = (
            self._reads.seq if v == self.id else self._progress[v].acked_seq
            for v in self.membership.voters
            if v in self._progress
        )
        for r in self._reads.confirm(acked, self.membership.quorum()):
            if r.frm == self.id:
                self._read_states.append(ReadState(r.ctx, r.index))
            else:
                self._send(
                    ReadIndexResponse(frm=self.id, to=r.frm, term=self.term, ctx=r.ctx, index=r.index)
                )

    def _step_leader(self, m: Message) -> None:
        if isinstance(m, AppendResponse):
            self._on_append_response(m)
        elif isinstance(m, HeartbeatResponse):
            pr = self._progress.get(m.frm)
            if pr is None:
                return
            pr.recent_active = True
            pr.acked_seq = max(pr.acked_seq, m.seq)
            pr.paused = False if pr.state is ProgressState.PROBE else pr.paused
            if pr.state is ProgressState.REPLICATE and pr.is_paused(self.cfg.max_inflight):
                pr.inflight.popleft()  # lost appends must not stall us forever
            if pr.match < self.log.last_index():
                # If every entry already went out, some were lost (or arrived
                # out of order and were refused): an empty append finds out
                # where the follower stands. "The leader retries AppendEntries
                # RPCs indefinitely" (§5.3), not only when new entries come.
                self._dirty.add(m.frm)
                self._probe_tail.add(m.frm)
            self._release_reads()
        # Other messages at our term (votes, appends from ourselves) are stale.

    def _on_append_response(self, m: AppendResponse) -> None:
        pr = self._progress.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        pr.acked_seq = max(pr.acked_seq, m.seq)
        if not m.success:
            if pr.maybe_decrease(m.index, self._next_from_hint(m.hint_index, m.hint_term)):
                self._dirty.add(m.frm)
        elif pr.maybe_update(m.index):
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
                pr.become_probe()
                pr.become_replicate()
            self._maybe_commit()
            if self.role is not Role.LEADER:
                return
            self._dirty.add(m.frm)
            if m.frm == self._transferee and pr.match == self.log.last_index():
                self._send(TimeoutNow(frm=self.id, to=m.frm, term=self.term))
        elif pr.match < self.log.last_index():
            self._dirty.add(m.frm)
        self._release_reads()

    def _next_from_hint(self, hint_index: int, hint_term: int) -> int:
        if hint_term == 0:
            return hint_index
        last = self.log.last_index_of_term(hint_term)
        return last + 1 if last else hint_index

    def _flush_leader(self) -> None:
        """Turn the turn's accumulated work into messages: one heartbeat round
        if one is due (by the clock, or for reads when no read round is in
        flight), and for each follower as many appends as flow control
        allows, so proposals of one turn share one append."""
        if self._reads.round_wanted and not self._reads.round_outstanding():
            self._heartbeat_due = True
        if self._heartbeat_due:
            self._heartbeat_due = False
            self._reads.round_wanted = False
            for node_id, pr in sorted(self._progress.items()):
                if node_id != self.id:
                    self._send(
                        Heartbeat(
                            frm=self.id,
                            to=node_id,
                            term=self.term,
                            commit=min(pr.match, self.log.committed),
                            seq=self._reads.seq,
                        )
                    )
            self._reads.round_sent()
            self._release_reads()  # a single voter confirms its own reads
        if self._dirty:
            for node_id in sorted(self._dirty):
                if node_id in self._progress and node_id != self.id:
                    self._send_appends(node_id, probe=node_id in self._probe_tail)
            self._dirty.clear()
            self._probe_tail.clear()
            if len(self._progress) > len(self.membership.ids | {self.id}):
                self._sync_progress()  # removed members that now know it

    def _send_appends(self, to: str, probe: bool = False) -> None:
        """Send to ``to`` what flow control allows. With nothing new to send,
        send an empty append if the follower should learn the commit index,
        or if ``probe`` asks to check where its log ends."""
        pr = self._progress[to]
        last = self.log.last_index()
        sent_any = False
        while not pr.is_paused(self.cfg.max_inflight) and pr.next <= last:
            if pr.next <= self.log.snapshot_index:
                # The entries it needs are compacted: it needs our state.
                pr.become_snapshot(self.log.applied)
                self._snapshots_needed.append(to)
                return
            prev = pr.next - 1
            entries = self.log.slice(pr.next, last + 1, self.cfg.max_append_bytes)
            self._send_append(to, pr, prev, entries)
            sent_any = True
        if sent_any or pr.is_paused(self.cfg.max_inflight):
            return
        if probe:
            # We must learn whether it got what we sent.
            self._send_append(to, pr, pr.next - 1, [])
        elif pr.sent_commit < self.log.committed:
            # Nothing new to send, but the follower should learn the commit.
            if self.cfg.defer_commit:
                self._commit_waiting.add(to)
            else:
                self._send_append(to, pr, pr.next - 1, [], commit_only=True)

    @property
    def commit_waiting(self) -> bool:
        """Some follower waits for a commit index held back (defer_commit)
        that no append has carried to it since."""
        return bool(self._commit_waiting)

    def flush_commit(self) -> None:
        """Send the held-back commit index to followers that did not get it
        with an append since."""
        waiting, self._commit_waiting = self._commit_waiting, set()
        if self.role is not Role.LEADER:
            return
        for to in sorted(waiting):
            pr = self._progress.get(to)
            if pr is not None and pr.sent_commit < self.log.committed and not pr.is_paused(self.cfg.max_inflight):
                self._send_append(to, pr, pr.next - 1, [], commit_only=True)

    def _send_append(
        self, to: str, pr: Progress, prev: int, entries: list[Entry], commit_only: bool = False
    ) -> None:
        """commit_only: an append that only tells the commit index; it is not
        answered, so it must not be what flow control waits for."""
        commit = self.log.committed
        self._send(
            AppendEntries(
                frm=self.id,
                to=to,
                term=self.term,
                prev_index=prev,
                prev_term=self.log.term(prev) or 0,
                entries=tuple(entries),
                commit=commit,
                seq=0 if commit_only else self._reads.seq,
                commit_only=commit_only,
            )
        )
        pr.sent_commit = commit
        self._commit_waiting.discard(to)  # this append carries the commit index
        if commit_only:
            return  # no answer will come: neither a read round nor flow control
        self._reads.round_sent()
        pr.sent(prev + len(entries), len(entries))

    # -- plumbing ----------------------------------------------------------------

    def _send(self, m: Message) -> None:
        if depends_on_disk(m):
            self._durable_msgs.append(m)
        else:
            self._msgs.append(m)
