"""The watch hub on an in-memory multi-version store and a fake clock: events
reach each watcher in revision order, exactly once, across replay and live;
filters and prev_kv; compaction; slow watchers catch up from the history
with one read per round for all of them; cancel."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import pytest
from twisted.internet.task import Clock

from dkv.mvcc import MvccStore, MvccView
from dkv.mvcc.keys import key_span
from dkv.pb.etcd_kv_pb2 import Event
from dkv.pb.etcd_rpc_pb2 import DeleteRangeRequest, PutRequest
from dkv.watch import Watcher, WatchHub, WatchSettings
from tests.mvcc.helpers import CountingTables


class Target:
    """A stream that takes up to room events per watcher until drained."""

    def __init__(self, room: int = 10**9) -> None:
        self.room = room
        self.got: dict[object, list[tuple[int, int, bytes]]] = {}
        self.prevs: list[bytes | None] = []
        self.pending: dict[object, int] = {}
        self.compactions: list[tuple[object, int, int]] = []
        self.refused = 0

    def offer(self, watcher: Watcher, events: Sequence[Event], revision: int) -> bool:
        if self.pending.get(watcher.tag, 0) >= self.room:
            self.refused += 1
            return False
        self.pending[watcher.tag] = self.pending.get(watcher.tag, 0) + len(events)
        for e in events:
            self.got.setdefault(watcher.tag, []).append((e.kv.mod_revision, e.type, e.kv.key))
            self.prevs.append(e.prev_kv.value if e.HasField("prev_kv") else None)
        return True

    def has_room(self, watcher: Watcher) -> bool:
        return self.pending.get(watcher.tag, 0) < self.room

    def compacted(self, watcher: Watcher, compact_revision: int, revision: int) -> None:
        self.compactions.append((watcher.tag, compact_revision, revision))

    def drain(self) -> None:
        self.pending.clear()

    def revisions(self, tag: object) -> list[int]:
        return [r for r, _, _ in self.got.get(tag, [])]


class World:
    def __init__(self, settings: WatchSettings | None = None) -> None:
        self.tables = CountingTables()
        self.store = MvccStore(self.tables)
        self.clock = Clock()
        self.reads = 0
        self.hub = WatchHub(self.clock, self.view, settings or WatchSettings())

    @contextlib.contextmanager
    def view(self) -> Iterator[MvccView]:
        self.reads += 1
        yield MvccView(self.tables)

    def put(self, key: bytes, value: bytes = b"v") -> None:
        self.hub.applied(self.store.put(PutRequest(key=key, value=value)).events)

    def delete(self, key: bytes, range_end: bytes = b"") -> None:
        self.hub.applied(self.store.delete_range(DeleteRangeRequest(key=key, range_end=range_end)).events)

    def settle(self) -> None:
        for _ in range(1000):
            if not self.clock.getDelayedCalls():
                return
            self.clock.advance(0)
        raise AssertionError("the hub keeps scheduling rounds")


@pytest.fixture
def world() -> World:
    return World()


def test_live_events_in_order_for_the_span(world: World) -> None:
    target = Target()
    world.hub.watch(key_span(b"a", b""), target, tag="one")
    world.hub.watch(key_span(b"a", b"b"), target, tag="prefix")
    world.hub.watch(key_span(b"b", b"\x00"), target, tag="from-b")
    world.put(b"a")
    world.put(b"ab")
    world.put(b"c")
    world.delete(b"a")
    assert target.got["one"] == [(2, Event.PUT, b"a"), (5, Event.DELETE, b"a")]
    assert target.revisions("prefix") == [2, 3, 5]
    assert target.got["from-b"] == [(4, Event.PUT, b"c")]


def test_filters_and_prev_kv(world: World) -> None:
    world.put(b"k", b"old")
    target = Target()
    world.hub.watch(key_span(b"k", b""), target, no_put=True, tag="deletes")
    world.hub.watch(key_span(b"k", b""), target, no_delete=True, prev_kv=True, tag="puts")
    world.put(b"k", b"new")
    world.delete(b"k")
    assert target.got["deletes"] == [(4, Event.DELETE, b"k")]
    assert target.got["puts"] == [(3, Event.PUT, b"k")]
    assert target.prevs == [b"old", None]


def test_replay_then_live_without_gap_or_repeat(world: World) -> None:
    for i in range(5):
        world.put(b"k%d" % i)  # revisions 2..6
    target = Target()
    world.hub.watch(key_span(b"k", b"l"), target, start_revision=3, tag="w")
    world.put(b"k9")  # 7: applied before the replay round ran
    world.settle()
    world.put(b"k8")  # 8: live
    assert target.revisions("w") == [3, 4, 5, 6, 7, 8]


def test_replay_reads_in_rounds_of_whole_revisions() -> None:
    world = World(WatchSettings(sync_events=2))
    for i in range(7):
        world.put(b"k%d" % i)  # 2..8
    target = Target()
    world.hub.watch(key_span(b"k", b"l"), target, start_revision=2, tag="w")
    world.settle()
    world.put(b"k")
    assert target.revisions("w") == list(range(2, 10))


def test_future_start_waits_and_never_moves_back(world: World) -> None:
    target = Target()
    watcher = world.hub.watch(key_span(b"k", b""), target, start_revision=4, tag="w")
    world.put(b"k")  # 2
    world.put(b"k")  # 3
    assert target.got == {} and world.hub.position(watcher) == 4
    world.put(b"k")  # 4
    world.put(b"k")  # 5
    assert target.revisions("w") == [4, 5]


def test_compacted_start_is_cancelled_with_the_compact_revision(world: World) -> None:
    for _ in range(5):
        world.put(b"k")  # 2..6
    world.store.compact(4)
    target = Target()
    world.hub.watch(key_span(b"k", b""), target, start_revision=3, tag="old")
    world.hub.watch(key_span(b"k", b""), target, start_revision=4, tag="at")
    world.settle()
    assert target.compactions == [("old", 4, 6)]
    assert target.revisions("at") == [4, 5, 6]
    world.put(b"k")
    assert "old" not in target.got and target.revisions("at") == [4, 5, 6, 7]
    assert world.hub.counts == (1, 0)


def test_slow_watcher_catches_up_from_history_and_others_go_on(world: World) -> None:
    slow, fast = Target(room=2), Target()
    world.hub.watch(key_span(b"k", b"l"), slow, tag="slow")
    world.hub.watch(key_span(b"k", b"l"), fast, tag="fast")
    for i in range(10):
        world.put(b"k%d" % i)  # 2..11
    assert fast.revisions("fast") == list(range(2, 12))
    assert slow.revisions("slow") == [2, 3]  # full after two
    assert world.hub.counts == (1, 1)
    world.settle()  # no room: no round reads anything
    assert slow.revisions("slow") == [2, 3]
    while world.hub.counts[1]:
        slow.drain()
        world.hub.wake()
        world.settle()
    world.put(b"k")
    world.settle()
    slow.drain()
    world.hub.wake()
    world.settle()
    assert slow.revisions("slow") == list(range(2, 13))


def test_behind_watchers_share_one_history_read_per_round(world: World) -> None:
    for i in range(20):
        world.put(b"k%d" % i)
    targets = [Target() for _ in range(100)]
    for n, target in enumerate(targets):
        world.hub.watch(key_span(b"k", b"l"), target, start_revision=2 + n % 3, tag=n)
    world.reads = 0
    world.tables.reset()
    world.settle()
    assert world.reads == 1
    assert world.tables.scanned["mvcc.history"] == 20
    for n, target in enumerate(targets):
        assert target.revisions(n) == list(range(2 + n % 3, 22))


def test_snapshot_install_neither_loses_nor_repeats(world: World) -> None:
    target = Target()
    world.hub.watch(key_span(b"k", b"l"), target, tag="w")
    world.put(b"k1")  # 2: given live
    # The state jumps (a snapshot with revisions 3..5 the hub never saw).
    for i in range(3):
        world.store.put(PutRequest(key=b"k%d" % i, value=b"x"))
    world.hub.replaced()
    world.settle()
    world.put(b"k9")  # 6
    assert target.revisions("w") == [2, 3, 4, 5, 6]


def test_cancel_forgets_the_watcher(world: World) -> None:
    target = Target()
    live = world.hub.watch(key_span(b"k", b""), target, tag="live")
    behind = world.hub.watch(key_span(b"k", b""), target, start_revision=1, tag="behind")
    world.hub.cancel(live)
    world.hub.cancel(behind)
    world.settle()
    world.put(b"k")
    assert target.got == {} and world.hub.counts == (0, 0)


def test_behind_watchers_far_apart_never_go_back() -> None:
    """A read that stops before a watcher's next revision leaves it alone
    (it once moved such a watcher back, and it got revisions twice)."""
    world = World(WatchSettings(sync_events=3))
    for i in range(12):
        world.put(b"k%d" % i)  # 2..13
    target = Target()
    world.hub.watch(key_span(b"k", b"l"), target, start_revision=2, tag="early")
    world.hub.watch(key_span(b"k", b"l"), target, start_revision=11, tag="late")
    world.settle()  # rounds of three revisions; the first ends below late's start
    world.put(b"k")
    assert target.revisions("early") == list(range(2, 15))
    assert target.revisions("late") == [11, 12, 13, 14]
