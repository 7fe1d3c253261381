"""Deterministic chaos for the product's driver, ``ReplicationService``.

``tests/raft/sim.py`` checks the pure core with a driver written for the
simulation. This module runs the *product's* driver instead, so that what the
driver adds -- the overlay that answers writes before the store transaction,
read barriers, snapshot installs on the writer, request ids, retries of
refused forwards -- is checked under the same kind of seeded chaos:

* nodes are ``ReplicationService`` instances over ``MemoryStore``s whose
  writes complete late (a slow fsync) and are lost when the node crashes;
* a network on a ``task.Clock`` drops, delays, duplicates (all but client
  proposals: the transport delivers at most once) and reorders messages and
  can be partitioned;
* snapshots are streamed through the receiving store's staging area, with
  failures and slow transfers, then stepped into the receiver as the product's
  ``SnapshotReceiver`` does;
* clients write unique values to a few keys and read them (linearizable
  barrier, then ``read``), on random nodes; nodes crash and restart.

``DriverInvariants`` are checked after every event:

* State Machine Safety, at the driver: the entries every node hands to its
  state machine (``Ready.committed``) agree, index by index;
* a write request is applied at most once (its request id appears once in
  the committed log): a forward is only retried when certainly not appended;
* every message carries a term that is on its sender's disk (PreVote
  messages excepted), a vote is on disk before it is sent, and an append
  acknowledgement covers entries on disk;
* ``applied`` never decreases, and what a node serves (``read``: overlay over
  store) is exactly the committed log's state at its applied index;
* a linearizable read returns a value that the key held at some point
  between the read's start and its answer (never older than what was
  committed when it started, never uncommitted);
* an acknowledged write is in the committed log.

After the chaos, ``check_liveness`` heals everything and requires every
node to converge on one state that holds every acknowledged write.

Nothing reads the real clock or the global random functions: a seed replays
exactly.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from dkv.commands import RequestId, decode, encode_delete, encode_put
from dkv.errors import NoLeader, OutcomeUnknown
from dkv.raft import Entry, EntryKind, RaftConfig, Ready
from dkv.raft.membership import Member, Membership
from dkv.raft.messages import (
    AppendResponse,
    InstallSnapshot,
    Message,
    Propose,
    RequestVote,
    VoteResponse,
)
from dkv.replication import DriverConfig, ReplicationService
from dkv.storage import StorageError, WriteBatch, record_crc
from dkv.storage.memory import MemoryStore
from dkv.transport.snapshots import OutgoingSnapshot

TICK = 0.01
KEYS = (b"k0", b"k1", b"k2", b"k3")


class SlowStore(MemoryStore):
    """A MemoryStore whose writes become durable ``delay()`` seconds after
    they are asked for, one at a time in call order; a crash loses the ones
    not yet durable."""

    def __init__(self, clock: Clock, delay: Callable[[], float], log_apart: bool = False) -> None:
        super().__init__(log_apart=log_apart)
        self._clock = clock
        self.delay = delay
        self._queue: list[tuple[Deferred[None], WriteBatch]] = []
        self._call: IDelayedCall | None = None

    def write(self, batch: WriteBatch) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._queue.append((d, batch))
        if self._call is None:
            self._call = self._clock.callLater(self.delay(), self._complete)
        return d

    def _complete(self) -> None:
        self._call = None
        d, batch = self._queue.pop(0)
        MemoryStore.write(self, batch).chainDeferred(d)
        # d's callbacks may have written again (and set the next call).
        if self._queue and self._call is None:
            self._call = self._clock.callLater(self.delay(), self._complete)

    def crash(self) -> None:
        """What was not durable is gone (its Deferreds never fire)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._queue = []


@attrs.frozen
class DriverChaos:
    drop: float = 0.05
    duplicate: float = 0.03
    #: Extra delay of a message, in seconds, with this probability.
    delay: float = 0.1
    max_delay: float = 0.15
    #: Probability that a store write is slow, and how slow it can be.
    slow_write: float = 0.3
    max_write: float = 0.2
    crash_weight: float = 0.01
    crash_leader: float = 0.5
    partition_weight: float = 0.01
    #: A partition heals after up to this many seconds.
    max_partition: float = 1.0
    write_weight: float = 1.0
    read_weight: float = 0.6
    #: Probability that a snapshot transfer fails, and its longest duration.
    snapshot_fail: float = 0.15
    max_snapshot: float = 0.3


@attrs.define
class _Read:
    node: str
    key: bytes
    floor: int


class DriverInvariants:
    """What must hold of the product's driver, checked after every event."""

    def __init__(self) -> None:
        #: committed[i - 1] is the entry committed at index i, as handed to
        #: some node's state machine.
        self.committed: list[Entry] = []
        #: key -> ascending [(index, value or None)] of the writes to it.
        self.writes: dict[bytes, list[tuple[int, bytes | None]]] = {k: [] for k in KEYS}
        #: Request ids applied so far (each at most once).
        self.applied_ids: dict[RequestId, int] = {}
        self.acked: list[RequestId] = []
        self.reads_checked = 0
        self.fatal: list[str] = []
        #: Violations found where raising would not reach the test (inside
        #: the driver's callbacks); ``DriverCluster.check`` raises the first.
        self.violations: list[str] = []

    # -- the committed log --------------------------------------------------------

    def on_committed(self, node: str, entries: Sequence[Entry]) -> None:
        for e in entries:
            i = e.index
            if i <= len(self.committed):
                if self.committed[i - 1] != e:
                    raise AssertionError(
                        f"State Machine Safety: {node} applies {_short(e)} at {i} where "
                        f"{_short(self.committed[i - 1])} was applied before"
                    )
                continue
            if i != len(self.committed) + 1:
                raise AssertionError(f"{node} applies {_short(e)} beyond the committed log ({len(self.committed)})")
            self.committed.append(e)
            if e.kind is EntryKind.NORMAL and e.data:
                cmd = decode(e.data)
                rid = RequestId(cmd.origin, cmd.seq)
                if rid in self.applied_ids:
                    raise AssertionError(
                        f"Exactly once: request {rid} is applied at {i} and at {self.applied_ids[rid]} "
                        f"(a forward was retried although it had been appended)"
                    )
                self.applied_ids[rid] = i
                op = cmd.WhichOneof("op")
                if op == "put":
                    self.writes[cmd.put.key].append((i, cmd.put.value))
                elif op == "delete_range":  # the clients here delete one key at a time
                    self.writes[cmd.delete_range.key].append((i, None))

    def value_at(self, key: bytes, index: int) -> bytes | None:
        w = self.writes[key]
        at = bisect.bisect_right(w, index, key=lambda x: x[0])
        return w[at - 1][1] if at else None

    def values_between(self, key: bytes, lo: int, hi: int) -> list[bytes | None]:
        """The values key held at every index in [lo, hi]."""
        out = [self.value_at(key, lo)]
        out.extend(v for i, v in self.writes[key] if lo < i <= hi)
        return out

    # -- messages -----------------------------------------------------------------

    def on_send(self, node: str, store: MemoryStore, m: Message) -> None:
        hs = store.hard_state
        pre_vote = isinstance(m, (RequestVote, VoteResponse)) and m.pre_vote
        if not pre_vote and m.term > hs.term:
            raise AssertionError(f"Durable term: {node} sent {type(m).__name__} of term {m.term}; its disk holds {hs}")
        # A vote of term T is on disk as (T, vote) -- or superseded by a later
        # durable term, after which the node can never vote in T again.
        if isinstance(m, RequestVote) and not pre_vote and hs.term == m.term and hs.vote != node:
            raise AssertionError(f"{node} asked for votes in term {m.term} with {hs} on disk")
        if isinstance(m, VoteResponse) and m.granted and not pre_vote and hs.term == m.term and hs.vote != m.to:
            raise AssertionError(f"{node} granted {m.to} its vote in term {m.term} with {hs} on disk")
        if isinstance(m, AppendResponse) and m.success and m.index > store.snapshot.index and m.index not in store.log:
            raise AssertionError(f"{node} acknowledged index {m.index}, which is not on its disk")

    # -- nodes --------------------------------------------------------------------

    def check_node(self, node: str, svc: ReplicationService, seen_applied: int) -> None:
        if svc.applied < seen_applied:
            raise AssertionError(f"{node}: applied went back from {seen_applied} to {svc.applied}")
        if svc.applied > len(self.committed):
            raise AssertionError(f"{node}: applied {svc.applied} beyond the committed log {len(self.committed)}")
        for key in KEYS:
            served = svc.read(key)
            expected = self.value_at(key, svc.applied)
            if served != expected:
                raise AssertionError(
                    f"{node} serves {key!r} = {served!r} at applied index {svc.applied}, but the committed "
                    f"log has {expected!r} there"
                )

    def on_read(self, read: _Read, value: bytes | None) -> None:
        possible = self.values_between(read.key, read.floor, len(self.committed))
        if value not in possible:
            raise AssertionError(
                f"Linearizable read: {read.node} read {read.key!r} = {value!r}; between its start (index "
                f"{read.floor} committed) and its answer ({len(self.committed)}) the key held only {possible!r}"
            )
        self.reads_checked += 1

    def check_acked(self) -> None:
        for rid in self.acked:
            if rid not in self.applied_ids:
                raise AssertionError(f"acknowledged write {rid} is not in the committed log")


def _short(e: Entry) -> str:
    return f"({e.index}, t{e.term}, {e.kind.name}, {e.data[:16]!r})"


class DriverCluster:
    """Product drivers, a lossy network and clients, all on one seed."""

    def __init__(
        self,
        seed: int,
        ids: Sequence[str] = ("n1", "n2", "n3"),
        *,
        learners: Sequence[str] = (),
        chaos: DriverChaos = DriverChaos(),
        snapshot_entries: int = 20,
        snapshot_keep: int = 3,
        log_apart: bool | None = None,
    ) -> None:
        """log_apart: whether the stores say they keep their log apart (the
        driver then holds applied writes across entry writes too); None:
        every other seed does."""
        self.seed = seed
        self.log_apart = seed % 2 == 1 if log_apart is None else log_apart
        self.rng = random.Random(seed)
        self.clock = Clock()
        self.chaos = chaos
        self.ids = list(ids)
        self.membership = Membership(tuple(Member(i, f"{i}.test:7000", voter=i not in learners) for i in ids))
        self.snapshot_entries = snapshot_entries
        self.snapshot_keep = snapshot_keep
        self.inv = DriverInvariants()
        self.faults_on = True
        self.stores: dict[str, SlowStore] = {}
        self.services: dict[str, ReplicationService | None] = {}
        self._seen_applied: dict[str, int] = {}
        self.cuts: set[tuple[str, str]] = set()
        self._heal_at = 0.0
        self._next_value = 0
        self.stats: dict[str, int] = {}
        self.trace: list[str] = []
        for nid in ids:
            store = SlowStore(self.clock, self._write_delay, self.log_apart)
            store.bootstrap("cid", self.membership)
            self.stores[nid] = store
            self._start(nid)

    # -- plumbing -------------------------------------------------------------------

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _log(self, what: str) -> None:
        self.trace.append(f"[{self.clock.seconds():.3f}] {what}")
        del self.trace[:-40]

    def _write_delay(self) -> float:
        if self.faults_on and self.rng.random() < self.chaos.slow_write:
            return self.rng.uniform(0, self.chaos.max_write)
        return 0.0

    def _start(self, nid: str) -> None:
        store = self.stores[nid]
        state = store.load()
        assert state is not None
        svc = ReplicationService(
            node_id=nid,
            state=state,
            store=store,
            transport=_SimTransport(self, nid),
            clock=self.clock,
            rng=random.Random(self.rng.getrandbits(64)),
            config=DriverConfig(
                raft=RaftConfig(election_ticks=10, heartbeat_ticks=1),
                tick_seconds=TICK,
                request_timeout=1.0,
                first_election_ticks=2 if nid == self.ids[0] else None,
                snapshot_entries=self.snapshot_entries,
                snapshot_keep=self.snapshot_keep,
            ),
            on_fatal=lambda f, nid=nid: self.inv.fatal.append(f"{nid}: {f.getErrorMessage()}"),
            snapshot_sender=lambda peer, snap, term, nid=nid: self._send_snapshot(nid, peer, snap, term),
        )
        svc.startService()
        raft = svc.raft
        assert raft is not None
        ready = raft.ready

        def observed_ready() -> Ready:
            rd = ready()
            if rd.committed:
                try:
                    self.inv.on_committed(nid, rd.committed)
                except AssertionError as e:
                    self.inv.violations.append(str(e))
            return rd

        raft.ready = observed_ready  # type: ignore[method-assign]
        self.services[nid] = svc
        self._seen_applied[nid] = svc.applied

    def _live(self) -> list[str]:
        return [i for i, s in self.services.items() if s is not None]

    def _linked(self, a: str, b: str) -> bool:
        return (a, b) not in self.cuts

    def send(self, frm: str, messages: Sequence[Message]) -> None:
        store = self.stores[frm]
        for m in messages:
            try:
                self.inv.on_send(frm, store, m)
            except AssertionError as e:
                self.inv.violations.append(str(e))
            if not self.faults_on:
                self._deliver_later(m, 0.0)
                continue
            if self.rng.random() < self.chaos.drop:
                self._count("dropped")
                continue
            # The transport delivers at most once (dkv.transport.Transport):
            # a forwarded proposal delivered twice would be appended twice.
            # Everything else Raft tolerates twice; duplicate it.
            duplicate = not isinstance(m, Propose) and self.rng.random() < self.chaos.duplicate
            for _ in range(2 if duplicate else 1):
                delay = self.rng.uniform(0, self.chaos.max_delay) if self.rng.random() < self.chaos.delay else 0.0
                self._deliver_later(m, delay)

    def _deliver_later(self, m: Message, delay: float) -> None:
        self.clock.callLater(delay, self._deliver, m)

    def _deliver(self, m: Message) -> None:
        svc = self.services.get(m.to)
        if svc is None or not self._linked(m.frm, m.to):
            self._count("lost")
            return
        svc.receive([m])

    def _send_snapshot(self, frm: str, peer: str, snap: OutgoingSnapshot, term: int) -> Deferred[None]:
        """As the product's sender and receiver: after a while, stage every
        chunk in the receiver's store (refused while it installs one), then
        step InstallSnapshot into it; fails when the link or either node is
        down, or by chance."""
        d: Deferred[None] = Deferred()
        life = self.services[frm]
        duration = self.rng.uniform(0, self.chaos.max_snapshot) if self.faults_on else 0.0
        failed = self.faults_on and self.rng.random() < self.chaos.snapshot_fail
        self._count("snapshot-sent")

        def finish() -> None:
            target = self.services.get(peer)
            if failed or target is None or self.services.get(frm) is not life or not self._linked(frm, peer):
                self._count("snapshot-failed")
                d.errback(Failure(RuntimeError("snapshot transfer failed")))
                return
            if target.installing_snapshot:
                self._count("snapshot-refused-busy")
                d.errback(Failure(RuntimeError("installing an earlier snapshot")))
                return
            store = self.stores[peer]
            try:
                seq = _result(store.stage_begin(snap.meta))
                crc = 0
                for n in range(seq):
                    crc = record_crc(snap.reader.read(n)[0], crc)
                while True:
                    records, last = snap.reader.read(seq)
                    crc = record_crc(records, crc)
                    _result(store.stage_chunk(seq, records, crc, last))
                    if last:
                        break
                    seq += 1
            except StorageError as e:
                d.errback(Failure(e))
                return
            self._count("snapshot-staged")
            target.receive([InstallSnapshot(frm=frm, to=peer, term=term, meta=snap.meta)])
            d.callback(None)

        self.clock.callLater(duration, finish)
        return d

    # -- events -----------------------------------------------------------------------

    def leader(self) -> str | None:
        best: tuple[int, str] | None = None
        for nid, svc in self.services.items():
            if svc is not None and svc.raft is not None and svc.raft.role.value == "leader":
                if best is None or svc.raft.term > best[0]:
                    best = (svc.raft.term, nid)
        return best[1] if best else None

    def advance(self) -> None:
        self.clock.advance(self.rng.choice((0.0, 0.0, TICK / 3, TICK)))
        if self.cuts and self._heal_at <= self.clock.seconds():
            self.heal()

    def client_write(self) -> None:
        live = self._live()
        if not live:
            return
        nid = self.rng.choice(live)
        svc = self.services[nid]
        assert svc is not None
        key = self.rng.choice(KEYS)
        rid = svc.next_request_id()
        if self.rng.random() < 0.15:
            payload = encode_delete(rid, key)
        else:
            self._next_value += 1
            payload = encode_put(rid, key, b"s%d-v%d" % (self.seed, self._next_value))
        self._count("write")

        def ok(_: object) -> None:
            self.inv.acked.append(rid)
            self._count("write-ok")

        def failed(f: Failure) -> None:
            f.trap(NoLeader, OutcomeUnknown)
            self._count("write-" + type(f.value).__name__)

        svc.propose(rid, payload).addCallbacks(ok, failed)

    def client_read(self) -> None:
        live = self._live()
        if not live:
            return
        nid = self.rng.choice(live)
        svc = self.services[nid]
        assert svc is not None
        read = _Read(nid, self.rng.choice(KEYS), len(self.inv.committed))
        self._count("read")

        def done(_: object) -> None:
            try:
                self.inv.on_read(read, svc.read(read.key))
            except AssertionError as e:
                self.inv.violations.append(str(e))
            self._count("read-ok")

        def failed(f: Failure) -> None:
            f.trap(NoLeader)
            self._count("read-failed")

        svc.read_barrier().addCallbacks(done, failed)

    def crash(self, nid: str | None = None) -> None:
        live = self._live()
        if not live:
            return
        leader = self.leader()
        if nid is None:
            nid = (
                leader if leader is not None and self.rng.random() < self.chaos.crash_leader else self.rng.choice(live)
            )
        svc = self.services[nid]
        assert svc is not None
        self._log(f"crash {nid}")
        self.services[nid] = None
        # Stopped first, so that what stopping writes (the held applied
        # writes) is lost with everything else not yet durable.
        svc.stopService()
        self.stores[nid].crash()
        self._count("crash")
        self.clock.callLater(self.rng.uniform(0.05, 1.0), self.restart, nid)

    def restart(self, nid: str) -> None:
        if self.services.get(nid) is not None:
            return
        self._log(f"restart {nid}")
        self._start(nid)
        self._count("restart")

    def partition(self) -> None:
        ids = list(self.ids)
        self.rng.shuffle(ids)
        leader = self.leader()
        if leader is not None and self.rng.random() < 0.5:
            groups = [[leader], [i for i in ids if i != leader]]
        else:
            k = self.rng.randint(2, min(3, len(ids)))
            groups = [ids[i::k] for i in range(k)]
        self._log(f"partition {groups}")
        for g in groups:
            for a in g:
                for b in ids:
                    if b not in g:
                        self.cuts.add((a, b))
        self._heal_at = self.clock.seconds() + self.rng.uniform(0.1, self.chaos.max_partition)
        self._count("partition")

    def heal(self) -> None:
        self._log("heal")
        self.cuts.clear()

    def step(self) -> None:
        c = self.chaos
        events: list[tuple[float, Callable[[], None]]] = [
            (6.0, self.advance),
            (c.write_weight, self.client_write),
            (c.read_weight, self.client_read),
        ]
        if self.faults_on:
            events.append((c.crash_weight, self.crash))
            events.append((c.partition_weight, self.partition))
        action = self.rng.choices([e[1] for e in events], weights=[e[0] for e in events])[0]
        action()
        self.check()

    def check(self) -> None:
        if self.inv.violations:
            raise AssertionError(self.inv.violations[0])
        if self.inv.fatal:
            raise AssertionError(f"a node failed an internal check: {self.inv.fatal}")
        for nid, svc in self.services.items():
            if svc is None:
                continue
            self.inv.check_node(nid, svc, self._seen_applied[nid])
            self._seen_applied[nid] = svc.applied

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def check_liveness(self, seconds: float = 10.0) -> None:
        """Heal, restart everyone, stop faults; then a new write must be
        acknowledged and every node must converge on one state that holds
        every acknowledged write."""
        self.faults_on = False
        self.heal()
        for nid in self.ids:
            self.restart(nid)
        probe: list[str] = []  # "waiting", then "ok"
        deadline = self.clock.seconds() + seconds
        while self.clock.seconds() < deadline:
            self.clock.advance(TICK)
            self.check()
            leader = self.leader()
            if not probe and leader is not None:
                svc = self.services[leader]
                assert svc is not None
                rid = svc.next_request_id()
                probe.append("waiting")

                def ok(_: object, rid: RequestId = rid) -> None:
                    self.inv.acked.append(rid)
                    probe[:] = ["ok"]

                svc.propose(rid, encode_put(rid, KEYS[0], b"probe")).addCallbacks(ok, lambda f: probe.clear())
            applied = {s.applied for s in self.services.values() if s is not None}
            if probe == ["ok"] and applied == {len(self.inv.committed)}:
                self.inv.check_acked()
                return
        states = {
            n: (s.raft.role.value, s.raft.term, s.applied) for n, s in self.services.items() if s is not None and s.raft
        }
        raise AssertionError(
            f"Liveness: no convergence within {seconds}s after healing: {states}, committed {len(self.inv.committed)}"
        )


class _SimTransport:
    def __init__(self, cluster: DriverCluster, node_id: str) -> None:
        self._cluster = cluster
        self._node_id = node_id

    def send(self, messages: Sequence[Message]) -> None:
        self._cluster.send(self._node_id, messages)

    def set_peers(self, addresses: object) -> None:
        pass


def _result(d: Deferred) -> object:
    """The result of a Deferred that has fired (MemoryStore's staging)."""
    out: list[object] = []
    d.addBoth(out.append)
    assert out, "expected a fired Deferred"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


__all__ = ["DriverChaos", "DriverCluster", "DriverInvariants", "SlowStore"]
