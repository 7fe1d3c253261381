"""Deterministic simulation of a dkv Raft cluster, for tests of the pure core.

Two drivers live here, both following the core's contract exactly (persist
hard state and entries, then send the Ready's messages, then apply the
committed entries, then ``advance``; at most one Ready outstanding):

``Cluster``
    a chaotic cluster run from one seed: a lossy network (drop, delay,
    duplicate, reorder), partitions and one-way cuts, crashes and restarts
    from a simulated disk, asynchronous fsync (a Ready stays outstanding for
    a while), client proposals and reads, leadership transfers and membership
    changes. ``Invariants`` checks Raft's safety properties after every step;
    ``Cluster.check_liveness`` checks that a healed cluster makes progress.

``Net``
    a small, fully deterministic network for readable scenario tests (like
    etcd-io/raft's ``network``): messages queue in order and ``deliver_all``
    steps them into their recipients until none are left; ``isolate``,
    ``cut``, ``ignore`` and ``recover`` shape what gets through.

Nothing here reads the clock or the global random functions: every choice
comes from a ``random.Random`` derived from the seed, so a run replays exactly.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import attrs

from dkv.raft import (
    Entry,
    EntryKind,
    HardState,
    Member,
    Membership,
    MembershipError,
    Message,
    NotLeader,
    Outbox,
    ProposalDropped,
    Raft,
    RaftConfig,
    ReadState,
    Ready,
    Role,
)
from dkv.raft.messages import (
    AppendEntries,
    AppendResponse,
    RequestVote,
    VoteResponse,
    depends_on_disk,
)


def bootstrap_membership(ids: Sequence[str]) -> Membership:
    """The configuration every bootstrapping node writes as its first entry."""
    return Membership(tuple(Member(i, f"{i}.test:7000") for i in ids))


def bootstrap_entry(ids: Sequence[str]) -> Entry:
    """Entry 1 of every node of a fresh cluster (identical bytes everywhere)."""
    return Entry(1, 1, EntryKind.CONFIG, bootstrap_membership(ids).encode())


@attrs.define
class Disk:
    """What survives a crash: hard state, log and the entries applied so far.

    Applying is durable together with the Ready that carried the entries (as
    in the product, where both go into one storage transaction)."""

    hard_state: HardState = HardState()
    log: list[Entry] = attrs.Factory(list)
    applied: list[Entry] = attrs.Factory(list)

    @classmethod
    def bootstrapped(cls, ids: Sequence[str]) -> Disk:
        """A member of a new cluster: entry 1 holds the configuration and is
        committed, nothing is applied yet."""
        return cls(HardState(term=1, vote="", commit=1), [bootstrap_entry(ids)], [])


class SimNode:
    """One node: a Raft core, its disk, and the driver loop of the contract.

    ``raft`` is None while the node is down. ``ready`` is the outstanding
    Ready, handed out by the core but not yet persisted."""

    def __init__(self, node_id: str, config: RaftConfig, disk: Disk, rng: random.Random) -> None:
        self.id = node_id
        self.config = config
        self.disk = disk
        self._rng = rng
        self.raft: Raft | None = None
        self.ready: Ready | None = None

    def start(self, first_election_ticks: int | None = None) -> Raft:
        """Boot from the disk (first start or restart after a crash)."""
        assert self.raft is None, f"{self.id} is already running"
        self.raft = Raft(
            self.id,
            self.config,
            random.Random(self._rng.getrandbits(64)),
            hard_state=self.disk.hard_state,
            entries=list(self.disk.log),
            applied=len(self.disk.applied),
            first_election_ticks=first_election_ticks,
        )
        return self.raft

    def crash(self) -> None:
        """Lose everything not on disk: the core's memory and the outstanding Ready."""
        self.raft = None
        self.ready = None

    def take_ready(self) -> Ready | None:
        """Hand out a new Ready if none is outstanding and the core has one."""
        raft = self.raft
        assert raft is not None
        if self.ready is None and raft.has_ready():
            self.ready = raft.ready()
            return self.ready
        return None

    def persist(self) -> tuple[Ready, list[Entry], HardState]:
        """Write the outstanding Ready to disk. Returns (ready, the entries the
        disk held before, the hard state before) so callers can check what
        changed. The caller then sends rd.messages, then calls ``apply`` and
        ``advance``."""
        rd = self.ready
        assert rd is not None, f"{self.id} has no outstanding Ready"
        old_log, old_hs = self.disk.log, self.disk.hard_state
        if rd.entries:
            first = rd.entries[0].index
            assert first <= len(old_log) + 1, (
                f"{self.id}: Ready entries start at {first}, leaving a gap after {len(old_log)}"
            )
            self.disk.log = old_log[: first - 1] + list(rd.entries)
        if rd.hard_state is not None:
            self.disk.hard_state = rd.hard_state
        return rd, old_log, old_hs

    def apply(self, rd: Ready) -> None:
        """Apply the Ready's committed entries (durably, with the Ready)."""
        self.disk.applied.extend(rd.committed)

    def advance(self, rd: Ready) -> None:
        """Tell the core rd was persisted, sent and applied."""
        assert self.raft is not None and self.ready is rd
        self.ready = None
        self.raft.advance(rd)


# ---------------------------------------------------------------------------
# Invariants


class Invariants:
    """Raft's safety properties, checked incrementally after every step.

    Each check raises AssertionError naming the property. The checker keeps
    history (leaders per term, every committed entry, read points), so a
    property is checked against the whole run, not only the current state.
    Only nodes touched by a step can have changed, so ``check_node`` is called
    for those; together that is a check of every node after every step."""

    def __init__(self, nodes: dict[str, SimNode]) -> None:
        self.nodes = nodes
        #: Election Safety: term -> the one node that led it.
        self.leaders: dict[int, str] = {}
        #: Log Matching, checked locally: (index, term) -> (term of the previous
        #: entry, kind, data). Two logs agreeing on every entry's content and
        #: predecessor term agree, by induction, on the whole prefix.
        self.chain: dict[tuple[int, int], tuple[int, EntryKind, bytes]] = {}
        #: committed[i - 1] is the entry committed at index i.
        self.committed: list[Entry] = []
        #: The term of the node that first saw entry i committed: the entry was
        #: committed in that term or earlier, so every leader of a term >= it
        #: must hold the entry (Leader Completeness).
        self.committed_seen_in: list[int] = []
        #: Per read ctx: (node that asked, highest commit index any node had
        #: when it asked) -- the least index a linearizable read may use.
        self.read_points: dict[int, tuple[str, int]] = {}
        #: Every client payload ever proposed.
        self.payloads: set[bytes] = set()
        # Per node, per life.
        self._mem_log: dict[str, list[Entry]] = {}
        self._mem_log_commit: dict[str, int] = {}
        self._mem_config: dict[str, int] = {}
        self._decoded: dict[Entry, Membership] = {}
        self._seen_commit: dict[str, int] = {}
        self._seen_applied: dict[str, int] = {}
        self._seen_term: dict[str, int] = {}
        self._was_leader_in: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------------

    def on_start(self, node: SimNode) -> None:
        """A node (re)started from its disk: check what it recovered."""
        raft = node.raft
        assert raft is not None
        self._mem_log[node.id] = []
        self._mem_log_commit[node.id] = 0
        self._mem_config[node.id] = 0
        self._seen_commit[node.id] = 0
        self._seen_applied[node.id] = raft.log.applied
        self._seen_term[node.id] = raft.term
        self._was_leader_in[node.id] = 0
        assert raft.log.applied == len(node.disk.applied), (
            f"{node.id} restarted with applied={raft.log.applied} but applied "
            f"{len(node.disk.applied)} entries before the crash"
        )
        self.check_node(node)

    # -- per step --------------------------------------------------------------

    def check_node(self, node: SimNode) -> None:
        raft = node.raft
        if raft is None:
            return
        nid = node.id
        if raft.term < self._seen_term[nid]:
            raise AssertionError(f"{nid}: term went back from {self._seen_term[nid]} to {raft.term}")
        if raft.term < node.disk.hard_state.term:
            raise AssertionError(
                f"{nid}: in-memory term {raft.term} is behind its durable term "
                f"{node.disk.hard_state.term}"
            )
        self._seen_term[nid] = raft.term
        stable = raft.log.stable
        if stable > len(node.disk.log) or (
            stable >= 1 and node.disk.log[stable - 1] != raft.log.entry(stable)
        ):
            raise AssertionError(
                f"{nid}: the core counts its log stable up to {stable}, but its disk holds "
                f"{len(node.disk.log)} entries"
                + (f" ending {_short(node.disk.log[stable - 1])}" if stable <= len(node.disk.log) else "")
            )
        self._check_mem_log(node, raft)
        self._observe_commit(node, raft)
        if raft.role is Role.LEADER and self._was_leader_in[nid] != raft.term:
            self._was_leader_in[nid] = raft.term
            self._on_leader(nid, raft)
        if raft.log.applied < self._seen_applied[nid]:
            raise AssertionError(
                f"{nid}: applied index went back from {self._seen_applied[nid]} to {raft.log.applied}"
            )
        self._seen_applied[nid] = raft.log.applied

    def _on_leader(self, nid: str, raft: Raft) -> None:
        term = raft.term
        other = self.leaders.setdefault(term, nid)
        if other != nid:
            raise AssertionError(f"Election Safety: both {other} and {nid} led term {term}")
        for i, (e, seen_in) in enumerate(zip(self.committed, self.committed_seen_in), start=1):
            if seen_in <= term and not self._holds(raft, e):
                raise AssertionError(
                    f"Leader Completeness: {nid} leads term {term} without committed entry "
                    f"{_short(e)} (seen committed in term {seen_in}); it has "
                    f"{_short(raft.log.entry(i)) if raft.log.term(i) is not None else 'nothing'} at {i}"
                )

    @staticmethod
    def _holds(raft: Raft, e: Entry) -> bool:
        return raft.log.term(e.index) == e.term and raft.log.entry(e.index) == e

    def _check_mem_log(self, node: SimNode, raft: Raft) -> None:
        last = raft.log.last_index()
        cur = raft.log.slice(1, last + 1) if last >= 1 else []
        shadow = self._mem_log[node.id]
        n = len(shadow)
        if len(cur) >= n and cur[:n] == shadow:
            first_changed = n + 1
        else:
            first_changed = 1
            for a, b in zip(cur, shadow):
                if a != b:
                    break
                first_changed += 1
            # The commit index as of the previous check: the entries up to it
            # were committed before whatever changed the log in this step.
            if first_changed <= self._mem_log_commit[node.id]:
                raise AssertionError(
                    f"{node.id}: in-memory log changed at {first_changed}, at or below its "
                    f"commit index {self._mem_log_commit[node.id]}"
                )
        if first_changed <= len(cur):
            self.check_log(f"{node.id} (memory)", cur, first_changed)
        if first_changed <= max(len(cur), n):
            self._check_membership(node, raft, cur, first_changed)
        self._mem_log[node.id] = cur
        self._mem_log_commit[node.id] = raft.log.committed

    def _check_membership(self, node: SimNode, raft: Raft, log: list[Entry], first_changed: int) -> None:
        """Thesis §4.1: "a server always uses the latest configuration in its
        log, regardless of whether the entry is committed" -- checked against
        the log itself whenever it changed."""
        latest = 0
        for i in range(len(log), first_changed - 1, -1):
            if log[i - 1].kind is EntryKind.CONFIG:
                latest = i
                break
        else:
            previous = self._mem_config[node.id]
            if previous and previous < first_changed:
                latest = previous
            else:
                for i in range(min(first_changed - 1, len(log)), 0, -1):
                    if log[i - 1].kind is EntryKind.CONFIG:
                        latest = i
                        break
        self._mem_config[node.id] = latest
        if latest == 0:
            expected = Membership()
        else:
            e = log[latest - 1]
            expected = self._decoded.get(e)
            if expected is None:
                expected = self._decoded[e] = Membership.decode(e.data)
        if raft.membership != expected:
            raise AssertionError(
                f"{node.id} uses configuration voters={sorted(raft.membership.voters)} "
                f"learners={sorted(raft.membership.learners)}, but the latest one in its log "
                f"(index {latest}) has voters={sorted(expected.voters)} "
                f"learners={sorted(expected.learners)}"
            )

    def check_log(self, what: str, log: Sequence[Entry], first: int) -> None:
        """Log Matching for log[first-1:] (the part that changed)."""
        chain = self.chain
        prev_term = log[first - 2].term if first >= 2 else 0
        for i in range(first, len(log) + 1):
            e = log[i - 1]
            if e.index != i:
                raise AssertionError(f"{what}: entry at position {i} has index {e.index}")
            if e.term < prev_term:
                raise AssertionError(f"{what}: term goes back at {i}: {prev_term} then {e.term}")
            key = (i, e.term)
            val = (prev_term, e.kind, e.data)
            known = chain.setdefault(key, val)
            if known != val:
                raise AssertionError(
                    f"Log Matching: {what} has {_short(e)} after an entry of term {prev_term}, "
                    f"but another log has (index={i}, term={e.term}) as {known[1].name} "
                    f"{known[2]!r} after term {known[0]}"
                )
            prev_term = e.term

    def _check_durable_quorum(self, node: SimNode, raft: Raft, e: Entry) -> None:
        """The first node to see e committed is the leader that committed it
        (followers learn commits from it later), and it counted a quorum of
        its latest configuration holding e on disk (§5.3, thesis §4.1)."""
        config = raft.membership
        holders = sorted(
            v
            for v in config.voters
            if v in self.nodes
            and len(self.nodes[v].disk.log) >= e.index
            and self.nodes[v].disk.log[e.index - 1] == e
        )
        if len(holders) < config.quorum():
            raise AssertionError(
                f"{node.id} ({raft.role.value}, term {raft.term}) committed {_short(e)} but only "
                f"{holders} of the voters {sorted(config.voters)} hold it on disk"
            )

    def _observe_commit(self, node: SimNode, raft: Raft) -> None:
        seen = self._seen_commit[node.id]
        commit = raft.log.committed
        if commit < seen:
            raise AssertionError(f"{node.id}: commit index went back from {seen} to {commit}")
        if commit == seen:
            return
        for i in range(seen + 1, commit + 1):
            e = raft.log.entry(i)
            if i <= len(self.committed):
                if self.committed[i - 1] != e:
                    raise AssertionError(
                        f"State Machine Safety: {node.id} committed {_short(e)} at {i} but "
                        f"{_short(self.committed[i - 1])} was committed there before"
                    )
                if raft.term < self.committed_seen_in[i - 1]:
                    self.committed_seen_in[i - 1] = raft.term
            else:
                assert i == len(self.committed) + 1
                self._check_durable_quorum(node, raft, e)
                self.committed.append(e)
                self.committed_seen_in.append(raft.term)
                # Every current leader of this term or later must hold it.
                for other in self.nodes.values():
                    r = other.raft
                    if r is not None and r.role is Role.LEADER and r.term >= raft.term:
                        if not self._holds(r, e):
                            raise AssertionError(
                                f"Leader Completeness: {other.id} leads term {r.term} without "
                                f"{_short(e)}, which {node.id} saw committed in term {raft.term}"
                            )
        self._seen_commit[node.id] = commit

    # -- driver events -----------------------------------------------------------

    def on_outbox(self, node: SimNode, out: Outbox) -> None:
        for m in out.messages:
            if depends_on_disk(m):
                raise AssertionError(f"{node.id}: {m} promises the disk but left via take_outbox")
            self.on_send(node, m)
        for rs in out.read_states:
            self.check_read_state(node.id, rs)

    def check_read_state(self, nid: str, rs: ReadState) -> None:
        asked = self.read_points.get(rs.ctx)
        if asked is None:
            raise AssertionError(f"{nid}: ReadState for unknown ctx {rs.ctx}")
        who, point = asked
        if who != nid:
            raise AssertionError(f"{nid}: got the ReadState of {who}'s read {rs.ctx}")
        if rs.index < point:
            raise AssertionError(
                f"Linearizable reads: read {rs.ctx} on {nid} got read index {rs.index}, but index "
                f"{point} was already committed when the read was issued"
            )

    def on_read_issued(self, nid: str, ctx: int) -> None:
        self.read_points[ctx] = (nid, len(self.committed))

    def on_send(self, node: SimNode, m: Message) -> None:
        """m leaves node now: what it promises must already be on node's disk
        (Raft §5.2, §5.3: a vote, a vote request and an append acknowledgement
        are answers "after updating stable storage"). Checked against the disk
        itself, whichever way the core classified the message."""
        if m.frm != node.id or m.to == node.id:
            raise AssertionError(f"{node.id} sent a message {m.frm}->{m.to}")
        hs = node.disk.hard_state
        if isinstance(m, VoteResponse) and m.granted and not m.pre_vote:
            if hs.term < m.term or (hs.term == m.term and hs.vote != m.to):
                raise AssertionError(f"{node.id}: sent {_describe(m)} but its disk says {hs}")
        elif isinstance(m, RequestVote) and not m.pre_vote:
            if hs.term < m.term or (hs.term == m.term and hs.vote != node.id):
                raise AssertionError(f"{node.id}: sent {_describe(m)} but its disk says {hs}")
        elif isinstance(m, AppendResponse) and m.success:
            if hs.term < m.term:
                raise AssertionError(f"{node.id}: sent {_describe(m)} but its disk says {hs}")
            raft = node.raft
            if hs.term == m.term and raft is not None and raft.term == m.term:
                # Still in the term of the ack: the disk must hold what the
                # in-memory log (which matches the leader) holds at index.
                if len(node.disk.log) < m.index or (
                    m.index >= 1 and node.disk.log[m.index - 1] != raft.log.entry(m.index)
                ):
                    raise AssertionError(
                        f"{node.id}: acknowledged index {m.index} in term {m.term}, but its disk "
                        f"holds {len(node.disk.log)} entries that do not end as its log does"
                    )

    def on_persist(self, node: SimNode, rd: Ready, old_log: list[Entry], old_hs: HardState) -> None:
        """The driver wrote rd to node's disk (before sending or applying)."""
        disk = node.disk
        hs = disk.hard_state
        if hs.term < old_hs.term:
            raise AssertionError(f"{node.id}: durable term went back from {old_hs.term} to {hs.term}")
        if hs.term == old_hs.term and old_hs.vote and hs.vote != old_hs.vote:
            raise AssertionError(
                f"{node.id}: changed its durable vote in term {hs.term} from {old_hs.vote} to {hs.vote}"
            )
        if hs.commit < old_hs.commit:
            raise AssertionError(f"{node.id}: durable commit went back from {old_hs.commit} to {hs.commit}")
        if hs.commit > len(disk.log):
            raise AssertionError(f"{node.id}: durable commit {hs.commit} beyond its durable log {len(disk.log)}")
        if rd.entries:
            first = rd.entries[0].index
            committed = self.committed
            for i in range(first, min(len(old_log), len(committed)) + 1):
                old = old_log[i - 1]
                new = disk.log[i - 1] if i <= len(disk.log) else None
                if old == committed[i - 1] and new != old:
                    raise AssertionError(
                        f"{node.id}: committed entry {_short(old)} disappeared from its disk "
                        f"(now {_short(new) if new else 'nothing'})"
                    )
            self.check_log(f"{node.id} (disk)", disk.log, first)

    def on_apply(self, node: SimNode, entries: Sequence[Entry], applied_before: int) -> None:
        raft = node.raft
        assert raft is not None
        self._observe_commit(node, raft)
        for offset, e in enumerate(entries):
            i = applied_before + 1 + offset
            if e.index != i:
                raise AssertionError(f"{node.id}: applied {_short(e)} when {i} was next")
            if i > len(self.committed):
                raise AssertionError(f"{node.id}: applied {_short(e)}, which is not committed")
            if self.committed[i - 1] != e:
                raise AssertionError(
                    f"State Machine Safety: {node.id} applied {_short(e)} at {i} where "
                    f"{_short(self.committed[i - 1])} is committed"
                )
            if e.kind is EntryKind.NORMAL and e.data and e.data not in self.payloads:
                raise AssertionError(f"{node.id}: applied a payload nobody proposed: {e.data!r}")


def _short(e: Entry) -> str:
    data = e.data if e.kind is EntryKind.NORMAL else b"<config>"
    return f"({e.index}, t{e.term}, {data[:24]!r})"


# ---------------------------------------------------------------------------
# The chaotic cluster


@attrs.frozen
class Chaos:
    """Fault rates of a simulation run. Probabilities are per message or per
    Ready; weights are relative to the other events of the schedule."""

    drop: float = 0.05
    duplicate: float = 0.03
    delay: float = 0.05
    max_delay_ticks: int = 15
    #: Probability that a Ready is not persisted in the step that made it.
    async_persist: float = 0.6
    crash_weight: float = 0.03
    #: Share of crashes that hit the current leader (the interesting case).
    crash_leader: float = 0.5
    partition_weight: float = 0.03
    #: A partition heals by itself after 1 to this many election timeouts.
    max_partition_elections: int = 8
    stall_weight: float = 0.08
    max_stall_ticks: int = 60
    propose_weight: float = 1.0
    read_weight: float = 0.5
    transfer_weight: float = 0.04
    membership_weight: float = 0.2
    #: Probability that a membership change is followed at once by a
    #: partition that leaves its leader in a minority.
    cut_after_change: float = 0.25


@attrs.frozen
class _InFlight:
    msg: Message
    due: int  # tick from which it may be delivered


class Cluster:
    """A simulated cluster driven entirely by one seed.

    ``ids`` bootstrap the cluster; ``spares`` start with an empty disk and
    join only when a membership change adds them. ``run(steps)`` is the
    chaotic phase; ``check_liveness()`` then heals everything and requires
    progress. ``Invariants`` are checked after every step."""

    def __init__(
        self,
        seed: int,
        ids: Sequence[str] = ("n1", "n2", "n3"),
        *,
        spares: Sequence[str] = (),
        config: RaftConfig | None = None,
        chaos: Chaos = Chaos(),
        membership_plan: Sequence[str] = (),
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config or RaftConfig(election_ticks=10, heartbeat_ticks=1)
        self.chaos = chaos
        self.nodes: dict[str, SimNode] = {}
        for nid in ids:
            self.nodes[nid] = SimNode(nid, self.config, Disk.bootstrapped(ids), self._child_rng())
        for nid in spares:
            self.nodes[nid] = SimNode(nid, self.config, Disk(), self._child_rng())
        self.ids = list(self.nodes)
        self.inv = Invariants(self.nodes)
        self.now = 0  # ticks
        self.steps = 0
        self._deliverable: list[_InFlight] = []
        self._delayed: list[_InFlight] = []
        #: Directed links that lose everything: (from, to).
        self.cuts: set[tuple[str, str]] = set()
        self._heal_at = 0
        self._stalled_until: dict[str, int] = {}
        self._down_until: dict[str, int] = {}
        self._touched: set[str] = set()
        self._next_ctx = 1
        self.faults_on = True
        #: Remaining membership changes, in order (see ``_membership_step``).
        self.membership_plan = list(membership_plan)
        self._plan_base: Membership | None = None
        #: A short history of what happened, for failure messages.
        self.trace: deque[tuple[int, int, str | Message]] = deque(maxlen=40)
        self.stats: dict[str, int] = {}
        for node in self.nodes.values():
            node.start()
            self.inv.on_start(node)

    def _child_rng(self) -> random.Random:
        return random.Random(self.rng.getrandbits(64))

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _log(self, what: str | Message) -> None:
        self.trace.append((self.steps, self.now, what))

    def format_trace(self) -> str:
        """The last events, oldest first (messages are formatted only here)."""
        lines = []
        for step, tick, what in self.trace:
            text = what if isinstance(what, str) else f"deliver {_describe(what)}"
            lines.append(f"  [step {step} tick {tick}] {text}")
        return "\n".join(lines)

    # -- the driver ---------------------------------------------------------------

    def drive(self, node: SimNode) -> None:
        """Run node's driver until it waits: send take_outbox messages at once,
        hand out a Ready when none is outstanding, and persist it now (by
        chance, or always once faults are off) or leave it outstanding for a
        later ``persist_one`` event (asynchronous fsync)."""
        raft = node.raft
        if raft is None:
            return
        self._touched.add(node.id)
        while True:
            out = raft.take_outbox()
            if out:
                self.inv.on_outbox(node, out)
                if out.read_states:
                    self._count("read-served")
                for m in out.messages:
                    self._send(m)
            rd = node.take_ready()
            if rd is None:
                return
            stalled = self._stalled_until.get(node.id, 0) > self.now
            if not self.faults_on or (not stalled and self.rng.random() >= self.chaos.async_persist):
                self._persist(node)
            else:
                return

    def _persist(self, node: SimNode) -> None:
        rd, old_log, old_hs = node.persist()
        self.inv.on_persist(node, rd, old_log, old_hs)
        for m in rd.messages:
            self.inv.on_send(node, m)
            self._send(m)
        applied_before = len(node.disk.applied)
        if rd.committed:
            self.inv.on_apply(node, rd.committed, applied_before)
        node.apply(rd)
        node.advance(rd)
        self._count("persist")

    def _send(self, m: Message) -> None:
        chaos = self.chaos
        if self.faults_on:
            r = self.rng.random()
            if r < chaos.drop:
                self._count("drop")
                self._maybe_report_unreachable(m)
                return
            copies = 2 if self.rng.random() < chaos.duplicate else 1
            for _ in range(copies):
                if self.rng.random() < chaos.delay:
                    due = self.now + self.rng.randint(1, chaos.max_delay_ticks)
                    self._delayed.append(_InFlight(m, due))
                else:
                    self._deliverable.append(_InFlight(m, self.now))
        else:
            self._deliverable.append(_InFlight(m, self.now))

    def _maybe_report_unreachable(self, m: Message) -> None:
        sender = self.nodes[m.frm].raft
        if isinstance(m, AppendEntries) and sender is not None and self.rng.random() < 0.5:
            # The transport noticed (say, a broken stream). No drive here: we
            # may be inside the sender's driver loop; its next turn sends.
            sender.report_unreachable(m.to)

    # -- events --------------------------------------------------------------------

    def deliver_one(self) -> None:
        msgs = self._deliverable
        i = self.rng.randrange(len(msgs))
        msgs[i], msgs[-1] = msgs[-1], msgs[i]
        m = msgs.pop().msg
        node = self.nodes[m.to]
        if node.raft is None or (m.frm, m.to) in self.cuts:
            self._count("lost")
            return
        self._log(m)
        node.raft.step(m)
        self.drive(node)
        self._count("deliver")

    def tick(self) -> None:
        self.now += 1
        still: list[_InFlight] = []
        for f in self._delayed:
            (self._deliverable if f.due <= self.now else still).append(f)
        self._delayed = still
        for nid, until in sorted(self._down_until.items()):
            if until <= self.now:
                self.restart(nid)
        if self.cuts and self._heal_at <= self.now:
            self.heal()
        order = [n for n in self.nodes.values() if n.raft is not None]
        self.rng.shuffle(order)
        for node in order:
            assert node.raft is not None
            node.raft.tick()
            self.drive(node)
        self._count("tick")

    def _waiting(self) -> list[SimNode]:
        """Nodes with an outstanding Ready that their disk may write now."""
        return [
            n
            for n in self.nodes.values()
            if n.ready is not None and self._stalled_until.get(n.id, 0) <= self.now
        ]

    def persist_one(self) -> None:
        node = self.rng.choice(self._waiting())
        self._log(f"persist {node.id}")
        self._persist(node)
        self.drive(node)

    def propose(self, nid: str | None = None) -> bytes | None:
        """A client proposes unique payloads on nid (default: a random node)."""
        node = self.nodes[nid] if nid else self.rng.choice(list(self.nodes.values()))
        if node.raft is None:
            return None
        count = 1 if self.rng.random() < 0.8 else self.rng.randint(2, 4)
        ctx = self._next_ctx
        payloads = []
        for _ in range(count):
            p = b"s%d-p%d" % (self.seed, self._next_ctx)
            self._next_ctx += 1
            self.inv.payloads.add(p)
            payloads.append(p)
        self._log(f"propose {payloads} on {node.id}")
        try:
            node.raft.propose(payloads, ctx=ctx)
        except ProposalDropped:
            self._count("propose-dropped")
            return None
        self._count("propose")
        self.drive(node)
        return payloads[-1]

    def read(self) -> None:
        node = self.rng.choice(list(self.nodes.values()))
        if node.raft is None:
            return
        ctx = self._next_ctx
        self._next_ctx += 1
        self.inv.on_read_issued(node.id, ctx)
        self._log(f"read_index ctx={ctx} on {node.id}")
        try:
            node.raft.read_index(ctx)
        except ProposalDropped:
            self._count("read-dropped")
            return
        self._count("read")
        self.drive(node)

    def transfer(self) -> None:
        leader = self.leader()
        if leader is None:
            return
        raft = leader.raft
        assert raft is not None
        to = None if self.rng.random() < 0.5 else self.rng.choice(sorted(raft.membership.ids))
        self._log(f"transfer_leadership(to={to}) on {leader.id}")
        try:
            raft.transfer_leadership(to)
        except (NotLeader, MembershipError):
            return
        self._count("transfer")
        self.drive(leader)

    def crash(self, nid: str | None = None) -> None:
        """Crash nid, or the leader (sometimes), or a random live node."""
        live = [n for n in self.nodes.values() if n.raft is not None]
        if not live:
            return
        leader = self.leader()
        if nid is not None:
            node = self.nodes[nid]
        elif leader is not None and self.rng.random() < self.chaos.crash_leader:
            node = leader
        else:
            node = self.rng.choice(live)
        self._log(f"crash {node.id}")
        node.crash()
        # Messages on their way to it are lost with it.
        self._deliverable = [f for f in self._deliverable if f.msg.to != node.id]
        self._delayed = [f for f in self._delayed if f.msg.to != node.id]
        self._down_until[node.id] = self.now + self.rng.randint(1, 4 * self.config.election_ticks)
        self._count("crash")

    def restart(self, nid: str) -> None:
        node = self.nodes[nid]
        self._down_until.pop(nid, None)
        self._log(f"restart {nid}")
        node.start()
        self.inv.on_start(node)
        self.drive(node)

    def partition(self) -> None:
        """Cut links until a random tick: isolate the leader (a stale leader
        then lingers in a minority), split the nodes into random groups, or
        cut a few links one way only."""
        ids = list(self.ids)
        self.rng.shuffle(ids)
        mode = self.rng.random()
        leader = self.leader()
        if mode < 0.4 and leader is not None:
            groups = [[leader.id], [i for i in ids if i != leader.id]]
        elif mode < 0.8:
            k = self.rng.randint(2, min(3, len(ids)))
            groups = [ids[i::k] for i in range(k)]
        else:
            groups = []
            for _ in range(self.rng.randint(1, 3)):
                a, b = self.rng.sample(ids, 2)
                self._log(f"cut {a}->{b}")
                self.cuts.add((a, b))
        if groups:
            self._log(f"partition {groups}")
            for g in groups:
                for a in g:
                    for b in ids:
                        if b not in g:
                            self.cuts.add((a, b))
        longest = self.chaos.max_partition_elections * self.config.election_ticks
        self._heal_at = max(self._heal_at, self.now + self.rng.randint(1, longest))
        self._count("partition")

    def stall_disk(self) -> None:
        """A disk stops writing for a while (an fsync stall): the node's
        Ready stays outstanding while the node goes on stepping messages."""
        leader = self.leader()
        if leader is not None and self.rng.random() < 0.5:
            node = leader
        else:
            node = self.rng.choice(list(self.nodes.values()))
        ticks = self.rng.randint(1, self.chaos.max_stall_ticks)
        self._log(f"stall {node.id}'s disk for {ticks} ticks")
        self._stalled_until[node.id] = self.now + ticks
        self._count("stall")

    def heal(self) -> None:
        self._log("heal")
        self.cuts.clear()
        self._heal_at = 0

    def leader(self) -> SimNode | None:
        """The live leader with the highest term, if any."""
        best = None
        for node in self.nodes.values():
            r = node.raft
            if r is not None and r.role is Role.LEADER:
                if best is None or r.term > best.raft.term:  # type: ignore[union-attr]
                    best = node
        return best

    # -- membership ----------------------------------------------------------------

    def _membership_step(self) -> None:
        """Try the next change of the plan on the leader: ``add:ID`` (as a
        learner), ``promote:ID``, ``remove-follower`` or ``remove-leader``.

        ``random`` makes random single-server changes (``_random_change``)
        for the rest of the run. Only the plan changes the configuration, so
        a step is done once the committed configuration differs from the one
        it started from. While a
        change is uncommitted nothing is proposed; a proposal lost with its
        leader is simply proposed again (the victim of a removal may differ)."""
        leader = self.leader()
        if leader is None or not self.membership_plan:
            return
        raft = leader.raft
        assert raft is not None
        committed = raft.membership_at(raft.log.committed)
        if self._plan_base is None:
            self._plan_base = committed
        elif committed != self._plan_base:
            self._log(f"membership step {self.membership_plan[0]} done: {sorted(committed.voters)}")
            if self.membership_plan[0] != "random" or len(self.membership_plan) > 1:
                self.membership_plan.pop(0)
            self._plan_base = None
            self._count("membership-done")
            return
        if raft.membership != committed:
            return  # our change is under way
        kind, _, arg = self.membership_plan[0].partition(":")
        if kind == "add":
            new = committed.add(Member(arg, f"{arg}.test:7000", voter=False))
        elif kind == "promote":
            new = committed.promote(arg)
        elif kind == "remove-follower":
            new = committed.remove(self.rng.choice(sorted(committed.voters - {leader.id})))
        elif kind == "remove-leader":
            new = committed.remove(leader.id)
        elif kind == "random":
            new = self._random_change(committed)
        else:
            raise ValueError(f"unknown membership step {self.membership_plan[0]!r}")
        self._log(
            f"propose_membership voters={sorted(new.voters)} learners={sorted(new.learners)} "
            f"on {leader.id}"
        )
        try:
            raft.propose_membership(new)
        except (NotLeader, MembershipError, ProposalDropped):
            return
        self._count("membership-proposed")
        if self.faults_on and self.rng.random() < self.chaos.cut_after_change:
            # The hard case: the change reaches a minority only, and the
            # majority moves on with a leader of its own.
            others = [i for i in self.ids if i != leader.id]
            self.rng.shuffle(others)
            minority = [leader.id] + others[: (len(self.ids) - 1) // 2 - 1]
            self._log(f"cut {minority} from the rest")
            for a in minority:
                for b in self.ids:
                    if b not in minority:
                        self.cuts.add((a, b))
                        self.cuts.add((b, a))
            longest = self.chaos.max_partition_elections * self.config.election_ticks
            self._heal_at = max(self._heal_at, self.now + self.rng.randint(1, longest))
        self.drive(leader)

    def _random_change(self, committed: Membership) -> Membership:
        """One random single-server change: add a node (as voter or learner;
        removed nodes come back with whatever log they kept), promote a
        learner, or remove any member, the leader included (keeping two
        voters at least)."""
        options: list[Callable[[], Membership]] = []
        outside = sorted(set(self.ids) - committed.ids)
        if outside:
            nid = self.rng.choice(outside)
            voter = self.rng.random() < 0.5
            options.append(lambda: committed.add(Member(nid, f"{nid}.test:7000", voter=voter)))
        if committed.learners:
            options.append(lambda: committed.promote(self.rng.choice(sorted(committed.learners))))
        if len(committed.voters) > 2 or committed.learners:
            removable = sorted(committed.learners if len(committed.voters) <= 2 else committed.ids)
            options.append(lambda: committed.remove(self.rng.choice(removable)))
        return self.rng.choice(options)()

    # -- the schedule --------------------------------------------------------------

    def step(self) -> None:
        """One random event, then the invariants for every node it touched."""
        c = self.chaos
        n_waiting = len(self._waiting())
        events: list[tuple[float, Callable[[], None]]] = [
            (4.0, self.tick),
            (c.propose_weight, self.propose),
            (c.read_weight, self.read),
            (c.transfer_weight, self.transfer),
        ]
        if self._deliverable:
            events.append((3.0 * len(self._deliverable), self.deliver_one))
        if n_waiting:
            events.append((6.0 * n_waiting, self.persist_one))
        if self.faults_on:
            events.append((c.crash_weight, self.crash))
            events.append((c.partition_weight, self.partition))
            events.append((c.stall_weight, self.stall_disk))
        if self.membership_plan:
            events.append((c.membership_weight, self._membership_step))
        action = self.rng.choices([e[1] for e in events], weights=[e[0] for e in events])[0]
        self._touched.clear()
        self.steps += 1
        action()
        for nid in sorted(self._touched):
            self.inv.check_node(self.nodes[nid])

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def quiesce_faults(self) -> None:
        """Stop injecting faults: heal every link, restart every crashed node."""
        self.faults_on = False
        self.heal()
        self._stalled_until.clear()
        self._deliverable.extend(self._delayed)
        self._delayed = []
        for nid in sorted(self._down_until):
            self._touched.clear()
            self.restart(nid)
            for t in sorted(self._touched):
                self.inv.check_node(self.nodes[t])

    def settle(self) -> None:
        """Deliver every message and persist every Ready until all is quiet,
        in random order, checking invariants after every step."""
        for _ in range(100_000):
            waiting = [n for n in self.nodes.values() if n.ready is not None]
            if not self._deliverable and not waiting:
                return
            self._touched.clear()
            self.steps += 1
            if self._deliverable and (not waiting or self.rng.random() < 0.7):
                self.deliver_one()
            else:
                self.persist_one()
            for nid in sorted(self._touched):
                self.inv.check_node(self.nodes[nid])
        raise AssertionError("the cluster never went quiet (a message storm?)")

    def check_liveness(self, max_ticks: int | None = None) -> int:
        """Heal everything, stop faults, and require that within max_ticks
        (default 20 election timeouts) one leader is known to every member and
        a new proposal commits and is applied on every member. Returns the
        number of ticks it took."""
        limit = max_ticks if max_ticks is not None else 20 * self.config.election_ticks
        self.quiesce_faults()
        probes: list[bytes] = []
        proposed_in: tuple[str, int] | None = None
        for ticks in range(limit + 1):
            self.settle()
            leader = self.leader()
            if leader is not None:
                raft = leader.raft
                assert raft is not None
                members = raft.membership_at(raft.log.committed).ids
                if probes and self._all_applied(members, probes) and self._agree_on(leader.id, members):
                    return ticks
                ready_to_serve = raft.log.term(raft.log.committed) == raft.term
                if ready_to_serve and proposed_in != (leader.id, raft.term):
                    p = self.propose(leader.id)
                    if p is not None:
                        probes.append(p)
                        proposed_in = (leader.id, raft.term)
                    self.settle()
            self._touched.clear()
            self.steps += 1
            self.tick()
            for nid in sorted(self._touched):
                self.inv.check_node(self.nodes[nid])
        states = {
            n.id: (n.raft.role.value, n.raft.term, n.raft.leader, n.raft.log.committed)
            for n in self.nodes.values()
            if n.raft is not None
        }
        raise AssertionError(
            f"Liveness: no leader committed and applied a new proposal everywhere within "
            f"{limit} ticks after healing; nodes (role, term, leader, commit): {states}"
        )

    def _all_applied(self, members: Iterable[str], probes: list[bytes]) -> bool:
        wanted = set(probes)
        return all(
            any(e.data in wanted for e in reversed(self.nodes[nid].disk.applied)) for nid in members
        )

    def _agree_on(self, leader: str, members: Iterable[str]) -> bool:
        leaders = [n.id for n in self.nodes.values() if n.raft is not None and n.raft.role is Role.LEADER]
        if leaders != [leader]:
            return False
        return all(
            self.nodes[nid].raft is not None and self.nodes[nid].raft.leader == leader  # type: ignore[union-attr]
            for nid in members
        )


def _describe(m: Message) -> str:
    name = type(m).__name__
    extra = ""
    if isinstance(m, AppendEntries):
        extra = f" prev=({m.prev_index},{m.prev_term}) n={len(m.entries)} commit={m.commit}"
    elif isinstance(m, AppendResponse):
        extra = f" ok={m.success} index={m.index} hint=({m.hint_index},{m.hint_term})"
    elif isinstance(m, (RequestVote,)):
        extra = f" pre={m.pre_vote} last=({m.last_index},{m.last_term})"
    elif isinstance(m, VoteResponse):
        extra = f" pre={m.pre_vote} granted={m.granted}"
    return f"{name} {m.frm}->{m.to} t{m.term}{extra}"


# ---------------------------------------------------------------------------
# A deterministic network for scenario tests


class Net:
    """Nodes that deliver messages in order, persisting every Ready at once.

    Like etcd-io/raft's test ``network``: nothing happens until the test says
    so. ``tick(id)`` and client calls queue messages; ``deliver_all()`` steps
    every queued message into its recipient (driving each node by the
    contract: persist, send, apply, advance) until none are left.
    ``isolate``/``cut``/``ignore`` lose messages; ``recover`` restores the
    links; ``hold_disk`` keeps a node's Ready outstanding (a slow fsync).
    For finer control, ``take`` removes queued messages and ``step``
    delivers one. Invariants are checked after every delivery, as in
    ``Cluster``."""

    def __init__(
        self,
        ids: Sequence[str] = ("n1", "n2", "n3"),
        config: RaftConfig | None = None,
        *,
        seed: int = 0,
        disks: dict[str, Disk] | None = None,
    ) -> None:
        self.config = config or RaftConfig(election_ticks=10, heartbeat_ticks=1)
        rng = random.Random(seed)
        self.nodes: dict[str, SimNode] = {}
        for nid in ids:
            disk = (disks or {}).get(nid) or Disk.bootstrapped(ids)
            self.nodes[nid] = SimNode(nid, self.config, disk, random.Random(rng.getrandbits(64)))
        self.inv = Invariants(self.nodes)
        for node in self.nodes.values():  # a given history counts as proposed
            self.inv.payloads.update(e.data for e in node.disk.log if e.kind is EntryKind.NORMAL)
        self.queue: deque[Message] = deque()
        self.cuts: set[tuple[str, str]] = set()
        #: Message types lost on every link (etcd's ``ignore``).
        self.ignored: set[type[Message]] = set()
        #: Nodes whose disk does not write: their Ready stays outstanding.
        self.held_disks: set[str] = set()
        #: Everything delivered so far, in order (tests inspect it).
        self.delivered: list[Message] = []
        #: Read states and failed reads per node, in arrival order.
        self.read_states: dict[str, list[ReadState]] = {i: [] for i in ids}
        self.failed_reads: dict[str, list[int]] = {i: [] for i in ids}
        self._next_ctx = 1
        for node in self.nodes.values():
            node.start()
            self.inv.on_start(node)

    def raft(self, nid: str) -> Raft:
        r = self.nodes[nid].raft
        assert r is not None, f"{nid} is down"
        return r

    # -- driving -------------------------------------------------------------------

    def drive(self, nid: str) -> None:
        """Follow the contract for nid until it has nothing to do."""
        node = self.nodes[nid]
        raft = node.raft
        if raft is None:
            return
        while True:
            out = raft.take_outbox()
            if out:
                self.inv.on_outbox(node, out)
                self.queue.extend(out.messages)
                self.read_states[nid].extend(out.read_states)
                self.failed_reads[nid].extend(out.failed_reads)
            node.take_ready()  # hands one out unless one is outstanding
            if node.ready is None or nid in self.held_disks:
                break
            rd, old_log, old_hs = node.persist()
            self.inv.on_persist(node, rd, old_log, old_hs)
            for m in rd.messages:
                self.inv.on_send(node, m)
            self.queue.extend(rd.messages)
            if rd.committed:
                self.inv.on_apply(node, rd.committed, len(node.disk.applied))
            node.apply(rd)
            node.advance(rd)
        self.inv.check_node(node)

    def deliver_all(self, limit: int = 100_000) -> list[Message]:
        """Deliver queued messages in order until none are left; returns the
        ones that arrived (lost ones are not included)."""
        for nid in self.nodes:
            self.drive(nid)
        arrived: list[Message] = []
        for _ in range(limit):
            if not self.queue:
                return arrived
            m = self.queue.popleft()
            node = self.nodes[m.to]
            if node.raft is None or (m.frm, m.to) in self.cuts or type(m) in self.ignored:
                continue
            node.raft.step(m)
            arrived.append(m)
            self.delivered.append(m)
            self.drive(m.to)
        raise AssertionError(f"messages still flowing after {limit} deliveries")

    def deliver_until(self, done: Callable[[], bool], limit: int = 10_000) -> None:
        """Deliver queued messages in order, one at a time, until done()."""
        for nid in self.nodes:
            self.drive(nid)
        for _ in range(limit):
            if done():
                return
            if not self.queue:
                raise AssertionError("no message left, and the awaited state never came")
            m = self.queue.popleft()
            node = self.nodes[m.to]
            if node.raft is None or (m.frm, m.to) in self.cuts or type(m) in self.ignored:
                continue
            self.step(m)
        raise AssertionError(f"not done after {limit} deliveries")

    def take(self, pred: Callable[[Message], bool]) -> list[Message]:
        """Remove and return the queued messages matching pred (in order), so
        a test can reorder, duplicate or drop them before ``step``-ping them."""
        taken = [m for m in self.queue if pred(m)]
        self.queue = deque(m for m in self.queue if not pred(m))
        return taken

    def step(self, m: Message) -> None:
        """Deliver one message now (whatever the links say)."""
        self.raft(m.to).step(m)
        self.delivered.append(m)
        self.drive(m.to)

    def tick(self, nid: str, n: int = 1) -> None:
        """Tick one node n times (its messages stay queued)."""
        for _ in range(n):
            self.raft(nid).tick()
            self.drive(nid)

    def tick_all(self, n: int = 1) -> None:
        """Tick every live node n times, delivering everything after each tick."""
        for _ in range(n):
            for nid, node in self.nodes.items():
                if node.raft is not None:
                    node.raft.tick()
                    self.drive(nid)
            self.deliver_all()

    def campaign(self, nid: str) -> None:
        """Tick nid alone until it starts an election, then deliver everything."""
        raft = self.raft(nid)
        for _ in range(2 * self.config.election_ticks):
            if raft.role is not Role.FOLLOWER:
                break
            self.tick(nid)
        self.deliver_all()

    def elect(self, nid: str) -> Raft:
        """Make nid the leader (its election must succeed) and let it commit
        its no-op, so it serves reads and proposals."""
        self.campaign(nid)
        raft = self.raft(nid)
        assert raft.role is Role.LEADER, f"{nid} did not win: {raft.role} in term {raft.term}"
        return raft

    def propose(self, nid: str, *payloads: bytes) -> None:
        for p in payloads:
            self.inv.payloads.add(p)
        self.raft(nid).propose(list(payloads))
        self.drive(nid)

    def read_index(self, nid: str) -> int:
        """Issue a read on nid; returns its ctx (see ``read_states``)."""
        ctx = self._next_ctx
        self._next_ctx += 1
        self.inv.on_read_issued(nid, ctx)
        self.raft(nid).read_index(ctx)
        self.drive(nid)
        return ctx

    # -- faults ----------------------------------------------------------------------

    def isolate(self, nid: str) -> None:
        for other in self.nodes:
            if other != nid:
                self.cuts.add((nid, other))
                self.cuts.add((other, nid))

    def cut(self, a: str, b: str) -> None:
        """Lose everything between a and b, both ways."""
        self.cuts.add((a, b))
        self.cuts.add((b, a))

    def ignore(self, kind: type[Message]) -> None:
        self.ignored.add(kind)

    def hold_disk(self, nid: str) -> None:
        """nid's disk stops writing (a slow fsync): its next Ready stays
        outstanding, so nothing it must persist first leaves the node."""
        self.held_disks.add(nid)

    def release_disk(self, nid: str) -> None:
        self.held_disks.discard(nid)
        self.drive(nid)

    def recover(self) -> None:
        """Restore every link and stop ignoring message types."""
        self.cuts.clear()
        self.ignored.clear()

    def crash(self, nid: str) -> None:
        self.nodes[nid].crash()
        self.queue = deque(m for m in self.queue if m.to != nid)

    def restart(self, nid: str) -> Raft:
        node = self.nodes[nid]
        raft = node.start()
        self.inv.on_start(node)
        self.drive(nid)
        return raft

    # -- queries -----------------------------------------------------------------------

    def applied_data(self, nid: str) -> list[bytes]:
        """Client payloads nid applied, in order (no-ops and configs left out)."""
        return [
            e.data for e in self.nodes[nid].disk.applied if e.kind is EntryKind.NORMAL and e.data
        ]

    def log_terms(self, nid: str) -> list[int]:
        r = self.raft(nid)
        return [r.log.term(i) or 0 for i in range(1, r.log.last_index() + 1)]
