"""Deterministic simulation of a dkv Raft cluster, for tests of the pure core.

Two drivers live here, both following the core's contract exactly (persist a
Ready's snapshot, hard state and entries, then send its messages, then apply
its committed entries, then ``advance``; at most one Ready outstanding):

``Cluster``
    a chaotic cluster run from one seed: a lossy network (drop, delay,
    duplicate, reorder), partitions and one-way cuts, crashes and restarts
    from a simulated disk, asynchronous fsync (a Ready stays outstanding for
    a while), client proposals and reads, leadership transfers and membership
    changes; with a ``SnapshotPolicy``, also log compaction and snapshots
    sent out of band (delayed, lost, failed, duplicated, stale by the time
    they arrive) and nodes that join with an empty log. ``Invariants`` checks
    Raft's safety properties after every step; ``Cluster.check_liveness``
    checks that a healed cluster makes progress.

``Net``
    a small, fully deterministic network for readable scenario tests (like
    etcd-io/raft's ``network``): messages queue in order and ``deliver_all``
    steps them into their recipients until none are left; ``isolate``,
    ``cut``, ``ignore`` and ``recover`` shape what gets through. A snapshot
    transfer is queued as the ``InstallSnapshot`` its recipient's driver will
    step once the state is staged.

Every node has a state machine whose state is the list of the entries it
applied, in order (``Disk.applied``; its length is the applied index). A
snapshot carries that list whole, so State Machine Safety compares states
exactly, across snapshots too.

Nothing here reads the clock or the global random functions: every choice
comes from a ``random.Random`` derived from the seed, so a run replays exactly.
"""

from __future__ import annotations

import bisect
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
    InstallSnapshot,
    RequestVote,
    SnapshotMeta,
    VoteResponse,
    depends_on_disk,
)


def bootstrap_membership(ids: Sequence[str], learners: Sequence[str] = ()) -> Membership:
    """The configuration every bootstrapping node writes as its first entry:
    ids are voters, except those also in learners."""
    return Membership(tuple(Member(i, f"{i}.test:7000", voter=i not in learners) for i in ids))


def bootstrap_entry(ids: Sequence[str], learners: Sequence[str] = ()) -> Entry:
    """Entry 1 of every node of a fresh cluster (identical bytes everywhere)."""
    return Entry(1, 1, EntryKind.CONFIG, bootstrap_membership(ids, learners).encode())


#: A state machine's state: every entry applied, in order (entry i at i - 1).
State = tuple[Entry, ...]


@attrs.define
class Disk:
    """What survives a crash: hard state, the log's base (``snapshot``), the
    log entries after it, and the state machine (the entries applied so far).

    Applying is durable together with the Ready that carried the entries (as
    in the product, where both go into one storage transaction); so are
    installing a snapshot and forgetting a compacted prefix of the log."""

    hard_state: HardState = HardState()
    #: The entries after ``snapshot.index``: log[k] is entry snapshot.index + 1 + k.
    log: list[Entry] = attrs.Factory(list)
    applied: list[Entry] = attrs.Factory(list)
    #: The log's base: index and term of the last entry the log forgot (0 if
    #: none) and the configuration in force there.
    snapshot: SnapshotMeta = SnapshotMeta(0, 0)

    @classmethod
    def bootstrapped(cls, ids: Sequence[str], learners: Sequence[str] = ()) -> Disk:
        """A member of a new cluster: entry 1 holds the configuration and is
        committed, nothing is applied yet."""
        return cls(HardState(term=1, vote="", commit=1), [bootstrap_entry(ids, learners)], [])

    @classmethod
    def joining(cls, membership: Membership) -> Disk:
        """A node that joins an existing cluster (``--join``): no log, and the
        configuration that added it (as a learner) as the log's base."""
        return cls(snapshot=SnapshotMeta(0, 0, membership))

    @property
    def base(self) -> int:
        return self.snapshot.index

    def last_index(self) -> int:
        return self.snapshot.index + len(self.log)

    def entry(self, index: int) -> Entry | None:
        """The entry at index, or None when it is compacted or absent."""
        if self.snapshot.index < index <= self.last_index():
            return self.log[index - self.snapshot.index - 1]
        return None

    def term(self, index: int) -> int | None:
        if index == self.snapshot.index:
            return self.snapshot.term
        e = self.entry(index)
        return e.term if e is not None else None


@attrs.frozen
class DiskBefore:
    """What a node's disk held before a write (for the invariants)."""

    hard_state: HardState
    snapshot: SnapshotMeta
    log: list[Entry]
    applied: int


class SimNode:
    """One node: a Raft core, its disk, and the driver loop of the contract.

    ``raft`` is None while the node is down. ``ready`` is the outstanding
    Ready, handed out by the core but not yet persisted. ``staged`` holds
    snapshots received but not installed (by (index, term)), ``install_pending``
    the one the core restored to in memory and still has to make durable, and
    ``pending_compact`` a compaction the next write makes durable."""

    def __init__(self, node_id: str, config: RaftConfig, disk: Disk, rng: random.Random) -> None:
        self.id = node_id
        self.config = config
        self.disk = disk
        self._rng = rng
        self.raft: Raft | None = None
        self.ready: Ready | None = None
        self.staged: dict[tuple[int, int], State] = {}
        self.install_pending: SnapshotMeta | None = None
        self.pending_compact: SnapshotMeta | None = None
        #: The applied index at the last compaction (the driver compacts every
        #: so many applied entries).
        self.compacted_at = 0

    def start(self, first_election_ticks: int | None = None) -> Raft:
        """Boot from the disk (first start or restart after a crash), as the
        product does: log base, entries after it, hard state, applied index."""
        assert self.raft is None, f"{self.id} is already running"
        disk = self.disk
        self.raft = Raft(
            self.id,
            self.config,
            random.Random(self._rng.getrandbits(64)),
            hard_state=disk.hard_state,
            entries=list(disk.log),
            snapshot_index=disk.snapshot.index,
            snapshot_term=disk.snapshot.term,
            snapshot_membership=disk.snapshot.membership,
            applied=len(disk.applied),
            first_election_ticks=first_election_ticks,
        )
        self.compacted_at = len(disk.applied)
        return self.raft

    def crash(self) -> None:
        """Lose everything not on disk: the core's memory, the outstanding
        Ready, staged snapshots and a compaction not yet written."""
        self.raft = None
        self.ready = None
        self.staged.clear()
        self.install_pending = None
        self.pending_compact = None

    def take_ready(self) -> Ready | None:
        """Hand out a new Ready if none is outstanding and the core has one."""
        raft = self.raft
        assert raft is not None
        if self.ready is None and raft.has_ready():
            self.ready = raft.ready()
            return self.ready
        return None

    def install(self, m: InstallSnapshot, state: State) -> str:
        """The receiving driver: stage the state, then step m into the core.
        Returns what the core made of it: "restore" (the next Ready installs
        it), "stale" (it already committed that far), "stale-term" (from an
        old leader) or "fast-forward" (its log holds the snapshot's last
        entry: it keeps the log and learns the commit)."""
        raft = self.raft
        assert raft is not None and m.to == self.id
        assert len(state) == m.meta.index, "the driver staged a state that does not match its meta"
        self.staged[(m.meta.index, m.meta.term)] = state
        base, commit, term = raft.log.snapshot_index, raft.log.committed, raft.term
        raft.step(m)
        if raft.log.snapshot_index != base:
            self.install_pending = m.meta
            return "restore"
        if m.term < term:
            return "stale-term"
        if m.meta.index <= commit:
            return "stale"
        return "fast-forward"

    def persist(self) -> tuple[Ready, DiskBefore]:
        """Write the outstanding Ready to disk, in the product's order: install
        its snapshot, hard state, entries, then a pending compaction. Returns
        the Ready and what the disk held before, so callers can check what
        changed. The caller then sends rd.messages, then calls ``apply`` and
        ``advance``."""
        rd = self.ready
        assert rd is not None, f"{self.id} has no outstanding Ready"
        disk = self.disk
        before = DiskBefore(disk.hard_state, disk.snapshot, disk.log, len(disk.applied))
        if rd.snapshot is not None:
            meta = rd.snapshot
            state = self.staged.get((meta.index, meta.term))
            assert state is not None, (
                f"{self.id}: the Ready installs snapshot ({meta.index}, t{meta.term}), which was never staged"
            )
            disk.applied = list(state)
            disk.snapshot = meta
            disk.log = []
            self.staged = {k: v for k, v in self.staged.items() if k[0] > meta.index}
            if self.install_pending == meta:
                self.install_pending = None
        if rd.entries:
            first = rd.entries[0].index
            base = disk.snapshot.index
            assert base < first <= disk.last_index() + 1, (
                f"{self.id}: Ready entries start at {first}, but the disk holds ({base}, {disk.last_index()}]"
            )
            disk.log = disk.log[: first - base - 1] + list(rd.entries)
        if rd.hard_state is not None:
            disk.hard_state = rd.hard_state
        self.write_compaction()
        return rd, before

    def write_compaction(self) -> None:
        """Make a pending compaction durable: forget the log up to its index
        (skipped when the log's base already passed it, say by an install)."""
        compact, self.pending_compact = self.pending_compact, None
        disk = self.disk
        if compact is not None and compact.index > disk.snapshot.index:
            assert compact.index <= disk.last_index(), f"{self.id}: compacting beyond the durable log"
            disk.log = disk.log[compact.index - disk.snapshot.index :]
            disk.snapshot = compact

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
    for those; together that is a check of every node after every step.

    Snapshots: a log's base (compaction point or installed snapshot) must be
    a committed entry, the configuration recorded with it the committed one
    in force there, and an installed state exactly the state every node had
    after applying that index. A log's base never moves back (in memory
    within one life, and on disk), nothing below it is ever applied, and the
    durable base never passes the durable state."""

    def __init__(self, nodes: dict[str, SimNode]) -> None:
        self.nodes = nodes
        #: Election Safety: term -> the one node that led it.
        self.leaders: dict[int, str] = {}
        #: Log Matching, checked locally: (index, term) -> (term of the previous
        #: entry, kind, data). Two logs agreeing on every entry's content and
        #: predecessor term agree, by induction, on the whole prefix.
        self.chain: dict[tuple[int, int], tuple[int, EntryKind, bytes]] = {}
        #: Chain links seen only in one node's memory, in one life, so far:
        #: key -> (node, life). Such an entry never left the node (it is on no
        #: disk, in no other log); a crash forgets it, and a lone voter that
        #: never made the term durable may win that term again and write
        #: another entry there. Everything else stays in the chain for good.
        self._chain_owner: dict[tuple[int, int], tuple[str, int]] = {}
        self._life: dict[str, int] = {}
        #: committed[i - 1] is the entry committed at index i.
        self.committed: list[Entry] = []
        #: The term of the node that first saw entry i committed: the entry was
        #: committed in that term or earlier, so every leader of a term >= it
        #: must hold the entry (Leader Completeness).
        self.committed_seen_in: list[int] = []
        #: Indexes of the CONFIG entries among ``committed``, ascending.
        self._committed_configs: list[int] = []
        #: Per read ctx: (node that asked, highest commit index any node had
        #: when it asked) -- the least index a linearizable read may use.
        self.read_points: dict[int, tuple[str, int]] = {}
        #: Every client payload ever proposed.
        self.payloads: set[bytes] = set()
        # Per node, per life.
        self._mem_log: dict[str, tuple[int, list[Entry]]] = {}
        self._mem_log_commit: dict[str, int] = {}
        self._mem_config: dict[str, int] = {}
        self._decoded: dict[Entry, Membership] = {}
        self._seen_commit: dict[str, int] = {}
        self._seen_applied: dict[str, int] = {}
        self._seen_term: dict[str, int] = {}
        self._was_leader_in: dict[str, int] = {}
        #: Snapshot requests for a removed member that the leader stopped
        #: tracking in the same take_outbox (wasted transfers).
        self.untracked_snapshot_requests = 0
        #: The configuration a node's log had as its base at index 0 (a
        #: joining node's; empty for the others).
        self._base0_config: dict[str, Membership] = {}

    # -- committed history -----------------------------------------------------

    def _decode(self, e: Entry) -> Membership:
        m = self._decoded.get(e)
        if m is None:
            m = self._decoded[e] = Membership.decode(e.data)
        return m

    def committed_config_at(self, index: int) -> Membership:
        """The configuration in force at committed index (its last CONFIG
        entry at or before index)."""
        at = bisect.bisect_right(self._committed_configs, index)
        if at == 0:
            return Membership()
        return self._decode(self.committed[self._committed_configs[at - 1] - 1])

    def _config_at_base(self, nid: str, base: int) -> Membership:
        if base == 0:
            return self._base0_config.get(nid, Membership())
        return self.committed_config_at(base)

    def check_snapshot_point(self, what: str, index: int, term: int) -> None:
        """A log's base (a compaction point, or a snapshot sent or installed)
        must be a committed entry: the state it stands for is the state after
        applying the committed prefix up to index."""
        if index == 0:
            if term != 0:
                raise AssertionError(f"{what}: log base at index 0 with term {term}")
            return
        if index > len(self.committed):
            raise AssertionError(
                f"{what}: snapshot at ({index}, t{term}), but only {len(self.committed)} entries are committed"
            )
        if self.committed[index - 1].term != term:
            raise AssertionError(
                f"{what}: snapshot at ({index}, t{term}), but {_short(self.committed[index - 1])} is committed there"
            )

    def _check_base_config(self, what: str, nid: str, base: int, config: Membership) -> None:
        expected = self._config_at_base(nid, base)
        if config != expected:
            raise AssertionError(
                f"{what}: the configuration recorded at the log's base {base} has "
                f"voters={sorted(config.voters)} learners={sorted(config.learners)}, but the one "
                f"in force there has voters={sorted(expected.voters)} "
                f"learners={sorted(expected.learners)}"
            )

    # -- lifecycle -------------------------------------------------------------

    def on_start(self, node: SimNode) -> None:
        """A node (re)started from its disk: check what it recovered."""
        raft = node.raft
        assert raft is not None
        nid = node.id
        disk = node.disk
        self._life[nid] = self._life.get(nid, 0) + 1
        if disk.snapshot.index == 0:
            self._base0_config[nid] = disk.snapshot.membership
        base = raft.log.snapshot_index
        if (base, raft.log.snapshot_term) != (disk.snapshot.index, disk.snapshot.term):
            raise AssertionError(
                f"{nid} restarted with log base ({base}, t{raft.log.snapshot_term}), but its disk's "
                f"is ({disk.snapshot.index}, t{disk.snapshot.term})"
            )
        self.check_snapshot_point(f"{nid} (restart)", base, raft.log.snapshot_term)
        self._check_base_config(f"{nid} (restart)", nid, base, raft.membership_at(base))
        if not base <= len(disk.applied) <= max(disk.hard_state.commit, base):
            raise AssertionError(
                f"{nid}: its disk has log base {base}, applied index {len(disk.applied)} and commit "
                f"{disk.hard_state.commit}: need base <= applied <= commit"
            )
        self._mem_log[nid] = (base, [])
        self._mem_log_commit[nid] = 0
        self._mem_config[nid] = 0
        self._seen_commit[nid] = 0
        self._seen_applied[nid] = raft.log.applied
        self._seen_term[nid] = raft.term
        self._was_leader_in[nid] = 0
        assert raft.log.applied == len(disk.applied), (
            f"{nid} restarted with applied={raft.log.applied} but applied {len(disk.applied)} entries before the crash"
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
                f"{nid}: in-memory term {raft.term} is behind its durable term {node.disk.hard_state.term}"
            )
        self._seen_term[nid] = raft.term
        self._check_stable(node, raft)
        self._check_mem_log(node, raft)
        self._observe_commit(node, raft)
        if raft.role is Role.LEADER and self._was_leader_in[nid] != raft.term:
            self._was_leader_in[nid] = raft.term
            self._on_leader(nid, raft)
        if raft.log.applied < self._seen_applied[nid]:
            raise AssertionError(f"{nid}: applied index went back from {self._seen_applied[nid]} to {raft.log.applied}")
        self._seen_applied[nid] = raft.log.applied

    def _check_stable(self, node: SimNode, raft: Raft) -> None:
        """What the core counts as durable is on the disk."""
        stable = raft.log.stable
        disk = node.disk
        base = raft.log.snapshot_index
        if stable < base:
            raise AssertionError(f"{node.id}: stable index {stable} below its log base {base}")
        if stable > base:
            ok = disk.entry(stable) == raft.log.entry(stable)
        else:
            # A snapshot the core restored to counts as stable once the Ready
            # that installs it is written (nothing may leave before that).
            ok = node.install_pending is not None or disk.term(stable) == raft.log.snapshot_term
        if not ok:
            raise AssertionError(
                f"{node.id}: the core counts its log stable up to {stable}, but its disk holds "
                f"({disk.base}, {disk.last_index()}]"
                + (f" with {_short(e)} at {stable}" if (e := disk.entry(stable)) is not None else "")
            )

    def _on_leader(self, nid: str, raft: Raft) -> None:
        term = raft.term
        other = self.leaders.setdefault(term, nid)
        if other != nid:
            raise AssertionError(f"Election Safety: both {other} and {nid} led term {term}")
        start = raft.log.snapshot_index  # the base itself is checked by _holds
        for i in range(max(start, 1), len(self.committed) + 1):
            e, seen_in = self.committed[i - 1], self.committed_seen_in[i - 1]
            if seen_in <= term and not self._holds(raft, e):
                held = raft.log.entry(i) if i > start and raft.log.term(i) is not None else None
                raise AssertionError(
                    f"Leader Completeness: {nid} leads term {term} without committed entry "
                    f"{_short(e)} (seen committed in term {seen_in}); it has "
                    f"{_short(held) if held is not None else 'nothing'} at {i}"
                )

    @staticmethod
    def _holds(raft: Raft, e: Entry) -> bool:
        """Does raft's log hold e? Entries below its base are in its state
        (a base is always a committed entry, checked separately)."""
        base = raft.log.snapshot_index
        if e.index < base:
            return True
        if e.index == base:
            return raft.log.snapshot_term == e.term
        return raft.log.term(e.index) == e.term and raft.log.entry(e.index) == e

    def _check_mem_log(self, node: SimNode, raft: Raft) -> None:
        nid = node.id
        log = raft.log
        base, last = log.snapshot_index, log.last_index()
        cur = log.slice(base + 1, last + 1) if last > base else []
        sbase, shadow = self._mem_log[nid]
        slast = sbase + len(shadow)
        base_moved = base != sbase
        if base_moved:
            if base < sbase:
                raise AssertionError(f"{nid}: first index went back from {sbase + 1} to {base + 1}")
            self.check_snapshot_point(f"{nid} (memory)", base, log.snapshot_term)
            self._check_base_config(f"{nid} (memory)", nid, base, raft.membership_at(base))
        # The first index whose entry differs from what the log held at the
        # previous check (entries at or below the base are gone, not changed).
        if base <= slast and (base == sbase or shadow[base - sbase - 1].term == log.snapshot_term):
            # Same base, or a compaction of entries we saw: compare the rest.
            old = shadow[base - sbase :] if base_moved else shadow
            n = len(old)
            if len(cur) >= n and cur[:n] == old:
                first_changed = base + n + 1
            else:
                first_changed = base + 1
                for a, b in zip(cur, old, strict=False):
                    if a != b:
                        break
                    first_changed += 1
                # The commit index as of the previous check: the entries up to
                # it were committed before whatever changed the log in this step.
                if first_changed <= self._mem_log_commit[nid]:
                    raise AssertionError(
                        f"{nid}: in-memory log changed at {first_changed}, at or below its "
                        f"commit index {self._mem_log_commit[nid]}"
                    )
        else:
            # A snapshot replaced the log (its base is committed, checked above),
            # or entries appended, applied and compacted within one step.
            first_changed = base + 1
        if first_changed <= last:
            self.check_log(f"{nid} (memory)", cur, first_changed, base, log.snapshot_term, owner=(nid, self._life[nid]))
        if base_moved or first_changed <= max(last, slast):
            self._check_membership(node, raft, cur, base, first_changed)
        self._mem_log[nid] = (base, cur)
        self._mem_log_commit[nid] = log.committed

    def _check_membership(self, node: SimNode, raft: Raft, log: list[Entry], base: int, first_changed: int) -> None:
        """Thesis §4.1: "a server always uses the latest configuration in its
        log, regardless of whether the entry is committed" -- checked against
        the log itself whenever it changed; with no configuration in the log,
        the one in force at the log's base."""
        last = base + len(log)
        latest = 0
        for i in range(last, max(first_changed, base + 1) - 1, -1):
            if log[i - base - 1].kind is EntryKind.CONFIG:
                latest = i
                break
        else:
            previous = self._mem_config[node.id]
            if previous and base < previous < first_changed:
                latest = previous
            else:
                for i in range(min(first_changed - 1, last), base, -1):
                    if log[i - base - 1].kind is EntryKind.CONFIG:
                        latest = i
                        break
        self._mem_config[node.id] = latest
        if latest == 0:
            expected = self._config_at_base(node.id, base)
        else:
            expected = self._decode(log[latest - base - 1])
        if raft.membership != expected:
            raise AssertionError(
                f"{node.id} uses configuration voters={sorted(raft.membership.voters)} "
                f"learners={sorted(raft.membership.learners)}, but the latest one in its log "
                f"(index {latest or f'{base}, its base'}) has voters={sorted(expected.voters)} "
                f"learners={sorted(expected.learners)}"
            )

    def on_crash(self, node: SimNode) -> None:
        """node lost its memory: entries that only its memory held are gone."""
        life = (node.id, self._life.get(node.id, 0))
        for key in [k for k, owner in self._chain_owner.items() if owner == life]:
            del self._chain_owner[key]
            del self.chain[key]

    def check_log(
        self,
        what: str,
        log: Sequence[Entry],
        first: int,
        base: int = 0,
        base_term: int = 0,
        owner: tuple[str, int] | None = None,
    ) -> None:
        """Log Matching for the entries from index first on (the part that
        changed); log[k] is the entry at base + 1 + k, after an entry of
        base_term at base. owner: the (node, life) whose memory holds log
        (None for a disk)."""
        chain = self.chain
        owners = self._chain_owner
        prev_term = log[first - base - 2].term if first - 1 > base else base_term
        for i in range(first, base + len(log) + 1):
            e = log[i - base - 1]
            if e.index != i:
                raise AssertionError(f"{what}: entry at position {i} has index {e.index}")
            if e.term < prev_term:
                raise AssertionError(f"{what}: term goes back at {i}: {prev_term} then {e.term}")
            key = (i, e.term)
            val = (prev_term, e.kind, e.data)
            known = chain.get(key)
            if known is None:
                chain[key] = known = val
                if owner is not None:
                    owners[key] = owner
            elif owners and owners.get(key, owner) != owner:
                del owners[key]  # another log holds it too: it left the node
            if known != val:
                raise AssertionError(
                    f"Log Matching: {what} has {_short(e)} after an entry of term {prev_term}, "
                    f"but another log has (index={i}, term={e.term}) as {known[1].name} "
                    f"{known[2]!r} after term {known[0]}"
                )
            prev_term = e.term

    @staticmethod
    def _disk_holds(disk: Disk, e: Entry) -> bool:
        return e.index <= disk.snapshot.index or disk.entry(e.index) == e

    def _check_durable_quorum(self, node: SimNode, raft: Raft, e: Entry) -> None:
        """The first node to see e committed is the leader that committed it
        (followers learn commits from it later), and it counted a quorum of
        its latest configuration holding e on disk (§5.3, thesis §4.1)."""
        config = raft.membership
        holders = sorted(v for v in config.voters if v in self.nodes and self._disk_holds(self.nodes[v].disk, e))
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
        base = raft.log.snapshot_index
        if seen < base:
            # Known committed through a snapshot (restart, install): its base
            # must be committed already.
            self.check_snapshot_point(f"{node.id} (commit)", base, raft.log.snapshot_term)
            for i in range(seen + 1, min(base, commit) + 1):
                if raft.term < self.committed_seen_in[i - 1]:
                    self.committed_seen_in[i - 1] = raft.term
        for i in range(max(seen, base) + 1, commit + 1):
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
                if e.kind is EntryKind.CONFIG:
                    self._committed_configs.append(i)
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
        for peer in out.snapshots_needed:
            self.on_snapshot_request(node, peer)

    def on_snapshot_request(self, node: SimNode, peer: str) -> None:
        """The leader asks for a snapshot of peer only when the entry peer
        needs next is compacted: if it knows peer's log matches up to its
        log's base, appends could serve peer."""
        raft = node.raft
        assert raft is not None
        if raft.role is not Role.LEADER:
            raise AssertionError(f"{node.id} ({raft.role.value}) asked for a snapshot of {peer}")
        base = raft.log.snapshot_index
        match = raft.status().match.get(peer)
        if match is None:
            # No longer tracked: the same flush dropped it as a removed member
            # that was told of its removal (a wasted transfer, not unsafe).
            if peer in raft.membership.ids:
                raise AssertionError(f"{node.id} asked for a snapshot of {peer}, a member it does not track")
            self.untracked_snapshot_requests += 1
            return
        if match >= base:
            raise AssertionError(
                f"{node.id} asked for a snapshot of {peer}, whose log it knows to match up to "
                f"{match}, while its own log starts after {base}: appends could serve it"
            )
        progress = getattr(raft, "_progress", {}).get(peer)
        if progress is not None and progress.next > base:
            raise AssertionError(
                f"{node.id} asked for a snapshot of {peer}, which needs entry {progress.next} "
                f"next, while its log holds everything after {base}"
            )

    def on_ready(self, node: SimNode, rd: Ready) -> None:
        """A Ready was handed out: nothing to apply at or below the log's base,
        and a snapshot to install only at a committed index."""
        raft = node.raft
        assert raft is not None
        if rd.committed and rd.committed[0].index <= raft.log.snapshot_index:
            raise AssertionError(
                f"{node.id}: a Ready applies {_short(rd.committed[0])}, at or below its log base "
                f"{raft.log.snapshot_index}"
            )
        if rd.snapshot is not None:
            self.check_snapshot_point(f"{node.id} (Ready)", rd.snapshot.index, rd.snapshot.term)
            self._check_base_config(f"{node.id} (Ready)", node.id, rd.snapshot.index, rd.snapshot.membership)
        for m in rd.messages:
            if isinstance(m, InstallSnapshot):
                raise AssertionError(f"{node.id}: the core sends the local-only {m}")

    def on_compact(self, node: SimNode, meta: SnapshotMeta) -> None:
        """raft.compact(index) returned meta: the driver will make it the log's
        base, so it must describe the applied state."""
        raft = node.raft
        assert raft is not None
        if meta.index > len(node.disk.applied):
            raise AssertionError(
                f"{node.id}: compacted up to {meta.index}, beyond its applied index {len(node.disk.applied)}"
            )
        self.check_snapshot_point(f"{node.id} (compact)", meta.index, meta.term)
        self._check_base_config(f"{node.id} (compact)", node.id, meta.index, meta.membership)
        if raft.log.snapshot_index < meta.index:
            raise AssertionError(f"{node.id}: compact({meta.index}) left the log's base at {raft.log.snapshot_index}")

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
        """m leaves node now (from take_outbox or from a Ready): what it
        promises must already be on node's disk. Every message carries a term
        that is on the sender's disk (PreVote messages excepted: their term is
        a prospective one), so a crash cannot make the node forget a term it
        spoke in and then speak in it again with another log (the core's
        durability rule); a vote, a vote request and an append
        acknowledgement are answers "after updating stable storage" (Raft
        §5.2, §5.3). Checked against the disk itself, whichever way the core
        classified the message."""
        if m.frm != node.id or m.to == node.id:
            raise AssertionError(f"{node.id} sent a message {m.frm}->{m.to}")
        if isinstance(m, InstallSnapshot):
            raise AssertionError(f"{node.id}: the core sends the local-only {m}")
        hs = node.disk.hard_state
        pre_vote = isinstance(m, (RequestVote, VoteResponse)) and m.pre_vote
        if not pre_vote and m.term > hs.term:
            raise AssertionError(f"Durable term: {node.id} sent {_describe(m)} but its disk holds term {hs.term} only")
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
                # in-memory log (which matches the leader) holds at index --
                # as an entry, or as the base of its log (an installed snapshot).
                disk = node.disk
                expected = raft.log.term(m.index)
                if m.index > disk.last_index() or (
                    m.index >= disk.base and expected is not None and disk.term(m.index) != expected
                ):
                    raise AssertionError(
                        f"{node.id}: acknowledged index {m.index} in term {m.term}, but its disk "
                        f"holds ({disk.base}, {disk.last_index()}], which does not end as its log does"
                    )

    def on_persist(self, node: SimNode, rd: Ready, before: DiskBefore) -> None:
        """The driver wrote rd to node's disk (before sending or applying)."""
        nid = node.id
        disk = node.disk
        hs, old_hs = disk.hard_state, before.hard_state
        if hs.term < old_hs.term:
            raise AssertionError(f"{nid}: durable term went back from {old_hs.term} to {hs.term}")
        if hs.term == old_hs.term and old_hs.vote and hs.vote != old_hs.vote:
            raise AssertionError(f"{nid}: changed its durable vote in term {hs.term} from {old_hs.vote} to {hs.vote}")
        if hs.commit < old_hs.commit:
            raise AssertionError(f"{nid}: durable commit went back from {old_hs.commit} to {hs.commit}")
        if hs.commit > disk.last_index():
            raise AssertionError(f"{nid}: durable commit {hs.commit} beyond its durable log {disk.last_index()}")
        applied_after = rd.committed[-1].index if rd.committed else len(disk.applied)
        if applied_after > hs.commit:
            raise AssertionError(f"{nid}: applies up to {applied_after} with a durable commit of {hs.commit}")
        base, old_base = disk.snapshot.index, before.snapshot.index
        if base < old_base:
            raise AssertionError(f"{nid}: the durable log's base went back from {old_base} to {base}")
        if base > len(disk.applied):
            raise AssertionError(
                f"{nid}: the durable log forgot entries up to {base}, but its durable state has "
                f"only {len(disk.applied)} applied"
            )
        if base != old_base:
            self.check_snapshot_point(f"{nid} (disk)", base, disk.snapshot.term)
            self._check_base_config(f"{nid} (disk)", nid, base, disk.snapshot.membership)
        first = rd.entries[0].index if rd.entries else None
        if rd.snapshot is not None:
            meta = rd.snapshot
            if disk.snapshot != meta:
                raise AssertionError(f"{nid}: installed {meta} but its disk's log base is {disk.snapshot}")
            if meta.index <= before.applied:
                raise AssertionError(
                    f"{nid}: installed a snapshot at {meta.index}, not after its applied index {before.applied}"
                )
            if disk.applied != self.committed[: meta.index]:
                raise AssertionError(
                    f"State Machine Safety: {nid} installed a snapshot at {meta.index} whose state "
                    f"differs from the state after applying the committed entries up to {meta.index}"
                )
            first = old_base + 1
        if first is not None:
            committed = self.committed
            old_log = before.log
            for i in range(max(first, base + 1), min(old_base + len(old_log), len(committed)) + 1):
                old = old_log[i - old_base - 1]
                new = disk.entry(i)
                if old == committed[i - 1] and new != old:
                    raise AssertionError(
                        f"{nid}: committed entry {_short(old)} disappeared from its disk "
                        f"(now {_short(new) if new else 'nothing'})"
                    )
        if rd.entries:
            self.check_log(f"{nid} (disk)", disk.log, rd.entries[0].index, base, disk.snapshot.term)

    def on_apply(self, node: SimNode, entries: Sequence[Entry], applied_before: int) -> None:
        raft = node.raft
        assert raft is not None
        self._observe_commit(node, raft)
        base = node.disk.snapshot.index
        for offset, e in enumerate(entries):
            i = applied_before + 1 + offset
            if e.index != i:
                raise AssertionError(f"{node.id}: applied {_short(e)} when {i} was next")
            if i <= base:
                raise AssertionError(f"{node.id}: applied {_short(e)}, at or below its log base {base}")
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
class SnapshotPolicy:
    """How the simulated drivers compact their logs and send snapshots.

    Like the product, a node compacts after every ``every`` applied entries,
    up to ``keep`` entries behind its applied index (both drawn anew from
    their ranges at each compaction), and writes the compaction with its next
    Ready. A snapshot requested by a leader is its applied state at that
    moment; the transfer takes up to ``max_delay_ticks`` and may fail (the
    leader hears ``report_snapshot(peer, False)``), arrive while the leader
    hears of a failure anyway, or arrive a second time much later."""

    every: tuple[int, int] = (5, 30)
    keep: tuple[int, int] = (0, 5)
    #: Probability that a transfer fails before the follower staged it.
    fail: float = 0.1
    #: Probability that the follower staged it but the leader hears "failed".
    ack_lost: float = 0.05
    #: Probability that the snapshot arrives once more, later (stale by then).
    duplicate: float = 0.1
    max_delay_ticks: int = 10
    #: As the product's driver, after a failed transfer keep that snapshot
    #: for this many ticks and send it again (not a newer one) if asked.
    keep_failed_ticks: int = 20

    @classmethod
    def for_seed(cls, seed: int) -> SnapshotPolicy:
        """A per-seed variation: aggressive (compact every few entries, keep
        almost nothing), moderate, or with a long tail for slow followers."""
        r = random.Random(f"snapshots-{seed}")
        style = r.random()
        if style < 0.4:
            every, keep = (1, r.randint(2, 6)), (0, r.randint(0, 2))
        elif style < 0.8:
            lo = r.randint(3, 15)
            every, keep = (lo, lo + r.randint(0, 20)), (0, r.randint(0, 5))
        else:
            lo = r.randint(10, 40)
            every, keep = (lo, lo + 10), (r.randint(0, 10), r.randint(10, 40))
        return cls(
            every=every,
            keep=keep,
            fail=r.choice((0.0, 0.1, 0.3)),
            ack_lost=r.choice((0.0, 0.05, 0.2)),
            duplicate=r.choice((0.0, 0.1, 0.3)),
            max_delay_ticks=r.choice((0, 3, 10, 30)),
            keep_failed_ticks=r.choice((0, 20, 100)),
        )


@attrs.frozen
class _InFlight:
    msg: Message
    due: int  # tick from which it may be delivered


@attrs.frozen
class _Transfer:
    """A snapshot on its way (``deliver``: the transfer ends, then the leader
    hears how; ``replay``: the same snapshot arrives again) or the leader's
    driver learning how a transfer ended (``report``)."""

    due: int
    kind: str
    leader: str
    #: The leader's life (a restart ends its transfers).
    life: int
    msg: InstallSnapshot
    state: State
    ok: bool = True


class Cluster:
    """A simulated cluster driven entirely by one seed.

    ``ids`` bootstrap the cluster; ``spares`` start with an empty disk and
    take part only once a membership change adds them; ``joiners`` are not
    running until a committed configuration includes them, then start like
    a node that joins with ``--join``: an empty log whose base records that
    configuration. ``snapshots`` turns on compaction and snapshot transfers.
    As the product's driver, a node whose core learns it was removed
    (``raft.removed``, from the leader's NotMember) and hears from no leader
    for two election timeouts stops; it starts again from its disk
    once the newest committed configuration lists it (an operator re-added it),
    and stopping a member of the newest committed configuration is an error.
    ``run(steps)`` is the chaotic phase; ``check_liveness()`` then heals
    everything and requires progress. ``Invariants`` are checked after every
    step."""

    def __init__(
        self,
        seed: int,
        ids: Sequence[str] = ("n1", "n2", "n3"),
        *,
        learners: Sequence[str] = (),
        spares: Sequence[str] = (),
        joiners: Sequence[str] = (),
        config: RaftConfig | None = None,
        chaos: Chaos = Chaos(),
        snapshots: SnapshotPolicy | None = None,
        membership_plan: Sequence[str] = (),
        min_voters: int = 2,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config or RaftConfig(election_ticks=10, heartbeat_ticks=1)
        self.chaos = chaos
        self.snapshots = snapshots
        #: Random membership changes keep at least this many voters (1: a
        #: lone voter that wins its elections alone, with learners).
        self.min_voters = min_voters
        self.nodes: dict[str, SimNode] = {}
        for nid in ids:
            disk = Disk.bootstrapped(ids, learners)
            self.nodes[nid] = SimNode(nid, self.config, disk, self._child_rng())
        for nid in spares:
            self.nodes[nid] = SimNode(nid, self.config, Disk(), self._child_rng())
        for nid in joiners:
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
        #: Joiners not started yet.
        self._joiners = list(joiners)
        #: Nodes stopped by their driver because the core said it was removed
        #: (NotMember), until the newest committed configuration lists them.
        self._stopped: set[str] = set()
        #: Since when (tick) each node's core says it was removed.
        self._told_removed_at: dict[str, int] = {}
        #: Snapshot transfers and reports on their way.
        self._transfers: list[_Transfer] = []
        #: (leader, peer) pairs with a transfer under way (as the product's
        #: driver, a leader sends one snapshot at a time to a peer).
        self._sending: set[tuple[str, str]] = set()
        #: (leader, peer) -> (meta, state, until tick): a failed snapshot kept
        #: for a retry.
        self._kept: dict[tuple[str, str], tuple[SnapshotMeta, State, int]] = {}
        self._life: dict[str, int] = {}
        #: Per node: applied entries between compactions (drawn per compaction).
        self._compact_every: dict[str, int] = {}
        #: A short history of what happened, for failure messages.
        self.trace: deque[tuple[int, int, str | Message]] = deque(maxlen=40)
        self.stats: dict[str, int] = {}
        for nid in self.ids:
            if nid not in self._joiners:
                self._boot(nid, drive=False)

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
        """Run node's driver until it waits: send take_outbox messages at once
        (and start the snapshot transfers it asks for), hand out a Ready when
        none is outstanding, and persist it now (by chance, or always once
        faults are off) or leave it outstanding for a later ``persist_one``
        event (asynchronous fsync)."""
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
                for peer in out.snapshots_needed:
                    self._start_transfer(node, peer)
            rd = node.take_ready()
            if rd is None:
                return
            self.inv.on_ready(node, rd)
            stalled = self._stalled_until.get(node.id, 0) > self.now
            if not self.faults_on or (not stalled and self.rng.random() >= self.chaos.async_persist):
                self._persist(node)
            else:
                return

    def _persist(self, node: SimNode) -> None:
        rd, before = node.persist()
        self.inv.on_persist(node, rd, before)
        if rd.entries and rd.entries[0].index == 1:
            # Its log from entry 1: every node at start-up, and a joiner
            # (empty log) that got the state by appends, not a snapshot.
            self._count(f"log-from-start-on-{node.id}")
        if rd.snapshot is not None:
            self._count("snapshot-installed")
            self._count(f"snapshot-installed-on-{node.id}")
            self._log(f"{node.id} installed the snapshot at ({rd.snapshot.index}, t{rd.snapshot.term})")
        for m in rd.messages:
            self.inv.on_send(node, m)
            self._send(m)
        applied_before = len(node.disk.applied)
        if rd.committed:
            self.inv.on_apply(node, rd.committed, applied_before)
        node.apply(rd)
        node.advance(rd)
        self._count("persist")
        self._maybe_compact(node, rd)

    def _maybe_compact(self, node: SimNode, rd: Ready) -> None:
        """As the product's driver: every so many applied entries, compact up
        to a few entries behind the applied index (written with the next
        Ready)."""
        policy = self.snapshots
        raft = node.raft
        if policy is None or raft is None:
            return
        applied = len(node.disk.applied)
        if rd.snapshot is not None:
            node.compacted_at = rd.snapshot.index
        every = self._compact_every.get(node.id)
        if every is None:
            every = self._compact_every[node.id] = self.rng.randint(*policy.every)
        if applied - node.compacted_at < every:
            return
        node.compacted_at = applied
        self._compact_every[node.id] = self.rng.randint(*policy.every)
        point = applied - self.rng.randint(*policy.keep)
        if point > raft.log.snapshot_index:
            meta = raft.compact(point)
            self.inv.on_compact(node, meta)
            node.pending_compact = meta
            self._count("compact")

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

    # -- snapshot transfers ----------------------------------------------------------

    def _start_transfer(self, node: SimNode, peer: str) -> None:
        """The leader's driver sends peer its applied state, as the product
        does: at the applied index A, with term log.term(A) and the
        configuration in force at A; then it reports how it went."""
        raft = node.raft
        assert raft is not None
        self._count("snapshot-requested")
        if (node.id, peer) in self._sending:
            self._count("snapshot-already-sending")
            return
        kept = self._kept.pop((node.id, peer), None)
        if kept is not None and kept[2] >= self.now:
            meta, state, _ = kept  # resume the failed transfer: an older snapshot
            self._count("snapshot-resent")
        else:
            applied = len(node.disk.applied)
            term = raft.log.term(applied)
            if self.snapshots is None or term is None:
                raft.report_snapshot(peer, False)  # no sender; or (never here) the log passed A
                return
            meta = SnapshotMeta(applied, term, raft.membership_at(applied))
            state = tuple(node.disk.applied)
        self.inv.check_snapshot_point(f"{node.id} (snapshot for {peer})", meta.index, meta.term)
        msg = InstallSnapshot(frm=node.id, to=peer, term=raft.term, meta=meta)
        self._sending.add((node.id, peer))
        life = self._life[node.id]
        self._log(f"{node.id} starts sending {peer} a snapshot at ({meta.index}, t{meta.term})")
        if not self.faults_on:
            self._transfers.append(_Transfer(self.now, "deliver", node.id, life, msg, state))
            return
        policy = self.snapshots
        if self.rng.random() < policy.fail:
            due = self.now + self.rng.randint(0, policy.max_delay_ticks)
            self._transfers.append(_Transfer(due, "report", node.id, life, msg, state, ok=False))
            return
        due = self.now + self.rng.randint(0, policy.max_delay_ticks)
        ok = self.rng.random() >= policy.ack_lost
        self._transfers.append(_Transfer(due, "deliver", node.id, life, msg, state, ok=ok))
        if self.rng.random() < policy.duplicate:
            later = due + self.rng.randint(1, 3 * policy.max_delay_ticks + 10)
            self._transfers.append(_Transfer(later, "replay", node.id, life, msg, state))

    def _due_transfers(self) -> list[int]:
        return [i for i, t in enumerate(self._transfers) if t.due <= self.now]

    def transfer_one(self) -> None:
        """Finish one snapshot transfer (or report) that is due."""
        due = self._due_transfers()
        t = self._transfers.pop(self.rng.choice(due))
        self._run_transfer(t)

    def _run_transfer(self, t: _Transfer) -> None:
        msg = t.msg
        if t.kind == "report":
            leader = self.nodes[t.leader]
            if leader.raft is None or self._life[t.leader] != t.life:
                return  # that driver is gone, and its transfers with it
            self._sending.discard((t.leader, msg.to))
            self._log(f"{t.leader} hears its snapshot for {msg.to} {'arrived' if t.ok else 'failed'}")
            if not t.ok and self.faults_on and self.snapshots is not None:
                until = self.now + self.snapshots.keep_failed_ticks
                self._kept[(t.leader, msg.to)] = (msg.meta, t.state, until)
            leader.raft.report_snapshot(msg.to, t.ok)
            self._count("snapshot-report-ok" if t.ok else "snapshot-report-failed")
            self.drive(leader)
            return
        target = self.nodes[msg.to]
        lost = target.raft is None or (t.leader, msg.to) in self.cuts
        if lost:
            self._count("snapshot-lost")
        else:
            self._log(f"{msg.to} staged the snapshot at ({msg.meta.index}, t{msg.meta.term}) from {t.leader}")
            self._install(target, msg, t.state)
        if t.kind == "deliver":
            delay = self.rng.randint(0, 2) if self.faults_on else 0
            self._transfers.append(
                _Transfer(self.now + delay, "report", t.leader, t.life, msg, t.state, ok=t.ok and not lost)
            )

    def _install(self, node: SimNode, msg: InstallSnapshot, state: State) -> None:
        """The follower's driver: stage, then step InstallSnapshot."""
        pending = node.install_pending
        if pending is not None and (node.ready is None or node.ready.snapshot != pending):
            # The core restored to a snapshot whose install is not handed to
            # the store yet. The product's store has one staging area, and
            # staging a snapshot (even the same one again) starts it afresh:
            # there, this transfer would destroy the state the install needs.
            self._count("staging-while-install-pending")
        outcome = node.install(msg, state)
        self._count(f"snapshot-{outcome}")
        self.drive(node)

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
        return [n for n in self.nodes.values() if n.ready is not None and self._stalled_until.get(n.id, 0) <= self.now]

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
        self._take_down(node)
        self._down_until[node.id] = self.now + self.rng.randint(1, 4 * self.config.election_ticks)
        self._count("crash")

    def _take_down(self, node: SimNode) -> None:
        node.crash()
        self.inv.on_crash(node)
        # Messages on their way to it are lost with it; so are its transfers.
        self._deliverable = [f for f in self._deliverable if f.msg.to != node.id]
        self._delayed = [f for f in self._delayed if f.msg.to != node.id]
        self._sending = {s for s in self._sending if s[0] != node.id}
        self._kept = {k: v for k, v in self._kept.items() if k[0] != node.id}

    def _stop_removed(self) -> None:
        """As the product's driver: a node whose core was told by the leader
        that it is no member (``raft.removed``) and that no leader contacted
        since (which clears it) for two election timeouts stops. It must be
        certain: the latest configuration it knows of (its log's, or the
        committed one the leader sent, if newer) must leave it out. (It may
        have been re-added since, unknown to it; then the operator who
        re-added it starts it again: ``_restart_readded``.)"""
        for nid, node in self.nodes.items():
            raft = node.raft
            if raft is None or not raft.removed:
                self._told_removed_at.pop(nid, None)
                continue
            since = self._told_removed_at.setdefault(nid, self.now)
            if self.now - since >= 2 * self.config.election_ticks:
                self._told_removed_at.pop(nid)
                index, known = raft.latest_known_membership()
                if nid in known.ids:
                    raise AssertionError(
                        f"NotMember stopped a member: {nid} stops as removed, but the latest configuration it "
                        f"knows of (index {index}: voters={sorted(known.voters)} learners={sorted(known.learners)}) "
                        f"lists it"
                    )
                self._log(f"{nid} was told it is no member: its driver stops it")
                self._take_down(node)
                self._stopped.add(nid)
                self._count("stopped-removed")

    def _restart_readded(self) -> None:
        """A node stopped as removed that the newest committed configuration,
        or the latest one of a live node, lists again is started from its
        disk: the operator re-added it and starts it. (Waiting for the change
        to commit could wait forever: adding a voter to a single voter needs
        the new voter's vote to commit.)"""
        listed = set(self.inv.committed_config_at(len(self.inv.committed)).ids)
        for node in self.nodes.values():
            if node.raft is not None:
                listed |= node.raft.membership.ids
        for nid in sorted(self._stopped & listed):
            self._stopped.discard(nid)
            self.restart(nid)

    def _after_event(self) -> None:
        if self._joiners:
            self._start_joiners()
        self._stop_removed()
        if self._stopped:
            self._restart_readded()

    def restart(self, nid: str) -> None:
        self._down_until.pop(nid, None)
        self._log(f"restart {nid}")
        self._boot(nid)

    def _boot(self, nid: str, drive: bool = True) -> None:
        node = self.nodes[nid]
        self._life[nid] = self._life.get(nid, 0) + 1
        node.start()
        self.inv.on_start(node)
        if drive:
            self.drive(node)

    def _start_joiners(self) -> None:
        """Start each joiner once some node's committed configuration has it:
        empty log, that configuration as the log's base (as ``--join`` does
        after the cluster added the node)."""
        for nid in list(self._joiners):
            for other in self.nodes.values():
                r = other.raft
                if r is None or other.id == nid:
                    continue
                committed = r.membership_at(r.log.committed)
                if nid in committed.ids:
                    self._joiners.remove(nid)
                    self.nodes[nid].disk = Disk.joining(committed)
                    self._log(
                        f"{nid} joins with voters={sorted(committed.voters)} learners={sorted(committed.learners)}"
                    )
                    self._touched.add(nid)
                    self._boot(nid)
                    self._count("joined")
                    break

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
        learner), ``join:ID`` (the same, but only once the leader compacted
        its log past entry 1, so the newcomer needs a snapshot),
        ``promote:ID``, ``remove-follower`` or ``remove-leader``.

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
        if kind in ("add", "join"):
            if kind == "join" and raft.log.snapshot_index <= 1:
                return  # wait until a newcomer cannot be served from the log
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
        self._log(f"propose_membership voters={sorted(new.voters)} learners={sorted(new.learners)} on {leader.id}")
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
        learner, or remove any member, the leader included (keeping
        ``min_voters`` voters at least)."""
        options: list[Callable[[], Membership]] = []
        outside = sorted(set(self.ids) - committed.ids)
        if outside:
            nid = self.rng.choice(outside)
            voter = self.rng.random() < 0.5
            options.append(lambda: committed.add(Member(nid, f"{nid}.test:7000", voter=voter)))
        if committed.learners:
            options.append(lambda: committed.promote(self.rng.choice(sorted(committed.learners))))
        at_least = self.min_voters
        if len(committed.voters) > at_least or committed.learners:
            removable = sorted(committed.learners if len(committed.voters) <= at_least else committed.ids)
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
        if self._transfers:
            n_due = len(self._due_transfers())
            if n_due:
                events.append((3.0 * n_due, self.transfer_one))
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
        self._after_event()
        for nid in sorted(self._touched):
            self.inv.check_node(self.nodes[nid])

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def quiesce_faults(self) -> None:
        """Stop injecting faults: heal every link, restart every crashed node,
        let every snapshot transfer and report under way finish now."""
        self.faults_on = False
        self.heal()
        self._stalled_until.clear()
        self._deliverable.extend(self._delayed)
        self._delayed = []
        self._transfers = [attrs.evolve(t, due=self.now) for t in self._transfers]
        for nid in sorted(self._down_until):
            self._touched.clear()
            self.restart(nid)
            self._after_event()
            for t in sorted(self._touched):
                self.inv.check_node(self.nodes[t])

    def settle(self) -> None:
        """Deliver every message, persist every Ready and finish every due
        snapshot transfer until all is quiet, in random order, checking
        invariants after every step."""
        for _ in range(100_000):
            waiting = [n for n in self.nodes.values() if n.ready is not None]
            due = bool(self._transfers) and bool(self._due_transfers())
            if not self._deliverable and not waiting and not due:
                return
            self._touched.clear()
            self.steps += 1
            if not due:
                if self._deliverable and (not waiting or self.rng.random() < 0.7):
                    self.deliver_one()
                else:
                    self.persist_one()
            else:
                r = self.rng.random()
                if self._deliverable and r < 0.5:
                    self.deliver_one()
                elif not waiting or r < 0.8:
                    self.transfer_one()
                else:
                    self.persist_one()
            self._after_event()
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
            self._after_event()
            for nid in sorted(self._touched):
                self.inv.check_node(self.nodes[nid])
        states = {
            n.id: (n.raft.role.value, n.raft.term, n.raft.leader, n.raft.log.committed, n.raft.log.first_index())
            for n in self.nodes.values()
            if n.raft is not None
        }
        raise AssertionError(
            f"Liveness: no leader committed and applied a new proposal everywhere within "
            f"{limit} ticks after healing; nodes (role, term, leader, commit, first index): {states}"
        )

    def _all_applied(self, members: Iterable[str], probes: list[bytes]) -> bool:
        wanted = set(probes)
        return all(any(e.data in wanted for e in reversed(self.nodes[nid].disk.applied)) for nid in members)

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
    elif isinstance(m, InstallSnapshot):
        extra = f" meta=({m.meta.index},t{m.meta.term})"
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
    ``Cluster``.

    Snapshots: ``compact`` compacts a node's log (durably, at once). When a
    leader asks for a snapshot, its driver queues the ``InstallSnapshot``
    that the follower's driver steps once it staged the leader's applied
    state; delivering it stages the state, steps the message and reports
    the outcome to the leader (``report_snapshot``). A lost one reports a
    failure. ``snapshot_message`` makes one by hand."""

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
        #: Forwarded proposal contexts refused, per node, in arrival order.
        self.failed_proposals: dict[str, list[int]] = {i: [] for i in ids}
        #: The state each queued InstallSnapshot carries.
        self.snapshot_states: dict[InstallSnapshot, State] = {}
        #: What each delivered InstallSnapshot came to (see SimNode.install).
        self.snapshot_outcomes: list[tuple[InstallSnapshot, str]] = []
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
                self.failed_proposals[nid].extend(out.failed_proposals)
                for peer in out.snapshots_needed:
                    self.queue.append(self.snapshot_message(nid, peer))
            if node.take_ready() is not None:
                self.inv.on_ready(node, node.ready)  # type: ignore[arg-type]
            if node.ready is None or nid in self.held_disks:
                break
            rd, before = node.persist()
            self.inv.on_persist(node, rd, before)
            for m in rd.messages:
                self.inv.on_send(node, m)
            self.queue.extend(rd.messages)
            if rd.committed:
                self.inv.on_apply(node, rd.committed, len(node.disk.applied))
            node.apply(rd)
            node.advance(rd)
        self.inv.check_node(node)

    def _lost(self, m: Message) -> bool:
        node = self.nodes.get(m.to)
        return node is None or node.raft is None or (m.frm, m.to) in self.cuts or type(m) in self.ignored

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
            if isinstance(m, InstallSnapshot):
                if self._transfer(m):
                    arrived.append(m)
                continue
            if self._lost(m):
                continue
            self.raft(m.to).step(m)
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
            if isinstance(m, InstallSnapshot):
                self._transfer(m)
            elif not self._lost(m):
                self.step(m)
        raise AssertionError(f"not done after {limit} deliveries")

    def take(self, pred: Callable[[Message], bool]) -> list[Message]:
        """Remove and return the queued messages matching pred (in order), so
        a test can reorder, duplicate or drop them before ``step``-ping them."""
        taken = [m for m in self.queue if pred(m)]
        self.queue = deque(m for m in self.queue if not pred(m))
        return taken

    def step(self, m: Message, report: bool = True) -> None:
        """Deliver one message now (whatever the links say). An
        InstallSnapshot is staged and stepped, then (if report) its sender
        hears that it arrived."""
        if isinstance(m, InstallSnapshot):
            self._transfer(m, force=True, report=report)
            return
        self.raft(m.to).step(m)
        self.delivered.append(m)
        self.drive(m.to)

    def _transfer(self, m: InstallSnapshot, force: bool = False, report: bool = True) -> bool:
        """A snapshot transfer ends: the follower's driver stages the state and
        steps m (unless the transfer is lost), then the leader's driver
        reports how it went. Returns whether it arrived."""
        node = self.nodes.get(m.to)
        arrived = node is not None and node.raft is not None and (force or not self._lost(m))
        if arrived:
            assert node is not None
            outcome = node.install(m, self.snapshot_states[m])
            self.snapshot_outcomes.append((m, outcome))
            self.delivered.append(m)
            self.drive(m.to)
        sender = self.nodes[m.frm].raft
        if report and sender is not None:
            sender.report_snapshot(m.to, arrived)
            self.drive(m.frm)
        return arrived

    def snapshot_message(self, frm: str, to: str) -> InstallSnapshot:
        """The snapshot frm's driver would send to now: its applied state, at
        its applied index A, with term log.term(A) and the configuration in
        force at A (as the product's driver)."""
        node = self.nodes[frm]
        raft = self.raft(frm)
        applied = len(node.disk.applied)
        term = raft.log.term(applied)
        assert term is not None, f"{frm}'s log no longer covers its applied index {applied}"
        meta = SnapshotMeta(applied, term, raft.membership_at(applied))
        m = InstallSnapshot(frm=frm, to=to, term=raft.term, meta=meta)
        self.snapshot_states[m] = tuple(node.disk.applied)
        return m

    def compact(self, nid: str, index: int | None = None) -> SnapshotMeta:
        """Compact nid's log up to index (default: its applied index) and
        write that to its disk at once."""
        node = self.nodes[nid]
        raft = self.raft(nid)
        meta = raft.compact(raft.log.applied if index is None else index)
        self.inv.on_compact(node, meta)
        node.pending_compact = meta
        node.write_compaction()
        self.inv.check_node(node)
        return meta

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
        """nid loses its memory; messages on their way to it are lost, and
        so are snapshot transfers to it (their senders hear so)."""
        self.nodes[nid].crash()
        self.inv.on_crash(self.nodes[nid])
        lost = [m for m in self.queue if m.to == nid]
        self.queue = deque(m for m in self.queue if m.to != nid)
        for m in lost:
            if isinstance(m, InstallSnapshot):
                self._transfer(m)

    def restart(self, nid: str) -> Raft:
        node = self.nodes[nid]
        raft = node.start()
        self.inv.on_start(node)
        self.drive(nid)
        return raft

    def join(self, nid: str, membership: Membership) -> Raft:
        """Start a new node nid as ``--join`` does once the cluster added it:
        an empty log whose base records membership (the configuration that
        added it). Until now messages to nid were lost."""
        assert nid not in self.nodes, f"{nid} already exists"
        self.nodes[nid] = SimNode(nid, self.config, Disk.joining(membership), random.Random(nid))
        self.read_states[nid] = []
        self.failed_reads[nid] = []
        self.failed_proposals[nid] = []
        return self.restart(nid)

    # -- queries -----------------------------------------------------------------------

    def applied_data(self, nid: str) -> list[bytes]:
        """Client payloads nid applied, in order (no-ops and configs left out)."""
        return [e.data for e in self.nodes[nid].disk.applied if e.kind is EntryKind.NORMAL and e.data]

    def log_terms(self, nid: str) -> list[int]:
        """The terms of nid's log entries (from its first index on)."""
        r = self.raft(nid)
        return [r.log.term(i) or 0 for i in range(r.log.first_index(), r.log.last_index() + 1)]
