"""One Watch stream's rules (etcd 3.4's server stream) on the hub, an
in-memory store and a fake clock: ids, refusals, cancel, progress, progress
notifications, the bounded queue of a slow reader, and closing."""

from __future__ import annotations

import pytest

from dkv.pb.etcd_rpc_pb2 import (
    ResponseHeader,
    WatchCancelRequest,
    WatchCreateRequest,
    WatchProgressRequest,
    WatchRequest,
    WatchResponse,
)
from dkv.watch import WatchSession, WatchSettings
from dkv.watch.session import DUPLICATE_ID, EMPTY_RANGE, _Events
from tests.watch.test_hub import World


def header(h: ResponseHeader) -> None:
    h.member_id = 42


class Stream:
    def __init__(self, world: World) -> None:
        self.wakes = 0
        self.session = WatchSession(world.hub, header, self.wake)

    def wake(self) -> None:
        self.wakes += 1

    def send(self, **request: object) -> None:
        self.session.handle(WatchRequest(**request))  # type: ignore[arg-type]

    def create(self, key: bytes, range_end: bytes = b"", **options: object) -> None:
        self.send(create_request=WatchCreateRequest(key=key, range_end=range_end, **options))  # type: ignore[arg-type]

    def out(self) -> list[WatchResponse]:
        found = []
        while (response := self.session.take()) is not None:
            found.append(response)
        return found


@pytest.fixture
def world() -> World:
    return World(WatchSettings(progress_interval=10.0, max_pending_events=3))


def test_ids_created_and_refusals(world: World) -> None:
    stream = Stream(world)
    stream.create(b"a")
    stream.create(b"b", watch_id=1)
    stream.create(b"c")  # 0 and 1 are taken
    stream.create(b"d", watch_id=1)
    stream.create(b"b", b"a")
    out = stream.out()
    assert [(r.watch_id, r.created, r.canceled, r.cancel_reason) for r in out] == [
        (0, True, False, ""),
        (1, True, False, ""),
        (2, True, False, ""),
        (-1, True, True, DUPLICATE_ID),
        (-1, True, True, EMPTY_RANGE),
    ]
    assert out[0].header.revision == 1 and out[0].header.member_id == 42
    assert stream.wakes == 5


def test_from_key_and_events_after_created(world: World) -> None:
    stream = Stream(world)
    stream.create(b"b", b"\x00")
    world.put(b"a")
    world.put(b"c")
    out = stream.out()
    assert out[0].created and [e.kv.key for e in out[1].events] == [b"c"]
    assert out[1].header.revision == 3


def test_cancel_and_progress(world: World) -> None:
    stream = Stream(world)
    stream.create(b"k", start_revision=1)  # behind until a round runs
    world.put(b"k")
    stream.send(progress_request=WatchProgressRequest())
    stream.send(cancel_request=WatchCancelRequest(watch_id=5))  # unknown: no answer
    out = stream.out()
    assert [(r.watch_id, r.header.revision) for r in out] == [(0, 1), (-1, 0)]
    world.settle()
    stream.send(progress_request=WatchProgressRequest())
    stream.send(cancel_request=WatchCancelRequest(watch_id=0))
    out = stream.out()
    assert [e.kv.mod_revision for e in out[0].events] == [2]
    assert [(r.watch_id, r.header.revision, r.canceled) for r in out[1:]] == [(-1, 2, False), (0, 2, True)]
    assert world.hub.counts == (0, 0)


def test_progress_notify_only_when_quiet_and_synced(world: World) -> None:
    stream = Stream(world)
    stream.create(b"k", progress_notify=True)
    stream.create(b"j")  # no progress_notify
    stream.out()
    world.put(b"k")
    world.clock.advance(10)  # events were sent in this interval: nothing
    assert [len(r.events) for r in stream.out()] == [1]
    world.clock.advance(10)
    out = stream.out()
    assert [(r.watch_id, r.header.revision, len(r.events)) for r in out] == [(0, 2, 0)]


def test_a_slow_reader_holds_a_bounded_queue_and_catches_up(world: World) -> None:
    stream = Stream(world)
    stream.create(b"k", b"l")
    stream.out()
    for i in range(10):
        world.put(b"k%d" % i)  # 2..11; the reader reads nothing
    assert world.hub.counts == (0, 1)
    queued = sum(item.count for item in stream.session._queue if isinstance(item, _Events))
    assert queued == 3  # max_pending_events
    got: list[int] = []
    for _ in range(20):
        got += [e.kv.mod_revision for r in stream.out() for e in r.events]
        world.settle()
    assert got == list(range(2, 12))
    assert world.hub.counts == (1, 0)


def test_close_drops_every_watcher(world: World) -> None:
    stream = Stream(world)
    stream.create(b"a")
    stream.create(b"b", start_revision=1)
    stream.session.close()
    world.settle()
    world.put(b"a")
    assert world.hub.counts == (0, 0) and stream.out() == []


def test_encoded_answers_are_the_answers(world: World) -> None:
    """take_encoded (gRPC: events encoded once for every stream) gives the
    bytes of what take gives."""
    streams = [Stream(world), Stream(world)]
    for stream in streams:
        stream.create(b"k", b"l", watch_id=-3)
        stream.create(b"k", b"l", prev_kv=True)
    world.put(b"k1", b"a")
    world.put(b"k1", b"b")
    world.delete(b"k1")
    plain = streams[0].out()
    encoded = []
    while (data := streams[1].session.take_encoded()) is not None:
        encoded.append(WatchResponse.FromString(data))
    # the two watchers of a stream are offered in any order; each's answers in order
    for watch_id in (-3, 0):
        assert [r for r in encoded if r.watch_id == watch_id] == [r for r in plain if r.watch_id == watch_id]
    assert len(encoded) == len(plain) == 4  # created twice, then each watcher's three events in one answer
    assert [e.prev_kv.value for r in plain if r.watch_id == 0 for e in r.events] == [b"", b"a", b"b"]


def test_a_negative_start_replays_everything_or_is_compacted(world: World) -> None:
    """As etcd 3.4: a negative start_revision is older than every revision."""
    world.put(b"k")  # 2
    world.put(b"k")  # 3
    stream = Stream(world)
    stream.create(b"k", start_revision=-5)
    world.settle()
    assert [e.kv.mod_revision for r in stream.out() for e in r.events] == [2, 3]
    world.store.compact(3)
    stream.create(b"k", start_revision=-5, watch_id=4)
    world.settle()
    out = stream.out()
    assert [(r.watch_id, r.canceled, r.compact_revision) for r in out] == [(4, False, 0), (4, True, 3)]


def test_a_stream_behind_gets_one_answer_per_watcher(world: World) -> None:
    """Events offered while a watcher's answer still waits join it (fewer,
    larger answers when the client reads slowly), in order."""
    stream = Stream(world)
    stream.create(b"k", b"l")
    stream.create(b"k1")
    stream.out()
    world.put(b"k1")  # 2
    world.put(b"k2")  # 3
    out = stream.out()
    assert [(r.watch_id, [e.kv.mod_revision for e in r.events]) for r in out] in (
        [(0, [2, 3]), (1, [2])],
        [(1, [2]), (0, [2, 3])],
    )
    assert [r.header.revision for r in out if r.watch_id == 0] == [3]


def test_a_reused_id_never_joins_the_old_watchers_answer(world: World) -> None:
    stream = Stream(world)
    stream.create(b"k", watch_id=5)
    world.put(b"k")  # 2: waits in the queue
    stream.send(cancel_request=WatchCancelRequest(watch_id=5))
    stream.create(b"k", watch_id=5)
    world.put(b"k")  # 3
    out = stream.out()
    assert [(r.created, r.canceled, [e.kv.mod_revision for e in r.events]) for r in out] == [
        (True, False, []),
        (False, False, [2]),
        (False, True, []),
        (True, False, []),
        (False, False, [3]),
    ]
