# test-case-name: tests.watch.test_session
"""``WatchSession``: one Watch stream's watchers, as etcd 3.4's server stream
keeps them, free of any transport.

The transport (gRPC, the JSON gateway, Server-Sent Events) hands it each
``WatchRequest`` (``handle``) and writes what ``take`` gives, in order,
whenever ``wake`` tells it there is something; it calls ``close`` when the
client goes away (every watcher is dropped from the hub).

etcd's rules kept here:

- create: ``watch_id`` 0 picks the lowest unused id (from 0); a client id
  already in use answers ``created`` and ``canceled`` with watch_id -1 and
  etcd's reason; so does a range whose end is not after its key. ``range_end``
  ``"\\0"`` watches every key from ``key``. ``start_revision`` 0 starts
  after the current revision; a negative one is a start before every
  revision (the whole history, or cancelled as compacted), as in etcd. The created answer carries the current
  revision, and comes before any event of the watcher.
- a create the caller may not read (auth enabled, no READ over the range)
  answers ``created`` and ``canceled`` with watch_id -1 and the reason
  etcd gives (``rpc error: code = PermissionDenied desc = etcdserver:
  permission denied``).
- cancel: answers ``canceled`` for a known id, nothing for an unknown one.
- progress_request: answers ``watch_id`` -1 with the revision every watcher
  of the stream has been given all events up to.
- progress_notify: every ``progress_interval`` a watcher that was given no
  event since the last tick, and is synced, gets an empty answer with the
  current revision.
- fragment: an answer over ``max_response_bytes`` is split into several,
  all but the last with ``fragment`` set, each with one event or more.
- a watcher whose start was compacted answers ``canceled`` with
  ``compact_revision`` (and, as etcd's, no header revision) and is dropped.

Each watcher may have ``max_pending_events`` events waiting in the queue;
beyond that the hub is refused and catches the watcher up later.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import attrs
from twisted.internet.task import LoopingCall

from dkv.mvcc.keys import key_span
from dkv.pb.etcd_kv_pb2 import Event
from dkv.pb.etcd_rpc_pb2 import ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse
from dkv.watch.hub import WatchHub
from dkv.watch.watcher import Watcher, encode_events, encode_response_head

#: etcd's mvcc errors a create may be refused with.
DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
EMPTY_RANGE = "mvcc: watcher range is empty"

#: Fills a response header (cluster, member, term); the revision is set.
HeaderFiller = Callable[[ResponseHeader], None]


class WatchSession:
    def __init__(
        self,
        hub: WatchHub,
        fill_header: HeaderFiller,
        wake: Callable[[], None],
        *,
        max_response_bytes: int = 1572864,
        refusal: Callable[[bytes, bytes], str | None] = lambda key, range_end: None,
    ) -> None:
        """refusal(key, range_end): why a create for that range is refused
        (the caller's permissions, ``dkv.auth``), or None to allow it."""
        self._hub = hub
        self._refusal = refusal
        self._fill_header = fill_header
        self._wake = wake
        self._max_response_bytes = max_response_bytes
        self._max_pending = hub.settings.max_pending_events
        self.watchers: dict[int, Watcher] = {}
        self._fragment: set[int] = set()
        self._progress: dict[int, bool] = {}  # id -> no event since the last tick
        self._pending: dict[int, int] = {}
        #: Answers in order: messages, and answers of events kept as
        #: ``_Events`` until taken (later events of that watcher join it).
        self._queue: deque[WatchResponse | _Events] = deque()
        self._open: dict[int, _Events] = {}
        self._header: tuple[int, bytes] = (-1, b"")
        self._next_id = 0
        self._ticker: LoopingCall | None = None
        self.closed = False

    # -- for the transport -------------------------------------------------------------

    def handle(self, request: WatchRequest) -> None:
        """One request of the stream (a request with none of the three
        parts is ignored, as etcd does)."""
        if self.closed:
            return
        kind = request.WhichOneof("request_union")
        if kind == "create_request":
            self._create(request.create_request)
        elif kind == "cancel_request":
            self._cancel(request.cancel_request.watch_id)
        elif kind == "progress_request":
            self._progress_answer()

    @property
    def backlog(self) -> int:
        """Answers waiting to be taken."""
        return len(self._queue)

    def take(self) -> WatchResponse | None:
        """The next answer to write, or None."""
        item = self._pop()
        if item is None:
            return None
        if isinstance(item, WatchResponse):
            return item
        response = self._response(item.revision, item.watch_id)
        for batch in item.batches:
            response.events.extend(batch)
        return response

    def take_encoded(self) -> bytes | None:
        """The next answer to write, serialized, or None. The events of an
        answer offered to many streams are encoded once for all of them."""
        item = self._pop()
        if item is None:
            return None
        if isinstance(item, WatchResponse):
            return item.SerializeToString()
        head = encode_response_head(self._header_bytes(item.revision), item.watch_id)
        return head + b"".join(encode_events(batch) for batch in item.batches)

    def _pop(self) -> WatchResponse | _Events | None:
        if not self._queue:
            return None
        item = self._queue.popleft()
        if isinstance(item, _Events):
            watch_id = item.watch_id
            if self._open.get(watch_id) is item:
                del self._open[watch_id]
            if watch_id in self._pending:
                self._pending[watch_id] -= item.count
                watcher = self.watchers.get(watch_id)
                if watcher is not None and not watcher.synced:
                    self._hub.wake()
        elif item.events:  # a fragment
            watch_id = item.watch_id
            if watch_id in self._pending:
                self._pending[watch_id] -= len(item.events)
        return item

    def _header_bytes(self, revision: int) -> bytes:
        if self._header[0] != revision:
            header = ResponseHeader()
            self._fill_header(header)
            header.revision = revision
            self._header = (revision, header.SerializeToString())
        return self._header[1]

    def close(self) -> None:
        """The client went away: drop every watcher."""
        if self.closed:
            return
        self.closed = True
        for watcher in self.watchers.values():
            self._hub.cancel(watcher)
        self.watchers.clear()
        self._queue.clear()
        self._open.clear()
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()

    # -- WatchTarget -------------------------------------------------------------------

    def offer(self, watcher: Watcher, events: Sequence[Event], revision: int) -> bool:
        watch_id = watcher.tag
        assert isinstance(watch_id, int)
        if self.closed or watch_id not in self.watchers:
            return True  # gone: nothing to keep for it
        if self._pending[watch_id] >= self._max_pending:
            return False
        self._progress[watch_id] = False
        if watch_id in self._fragment and len(events) > 1:
            response = self._response(revision, watch_id)
            response.events.extend(events)
            if response.ByteSize() > self._max_response_bytes:
                self._open.pop(watch_id, None)  # nothing joins an answer before its fragments
                for part in self._fragments(response):
                    self._pending[watch_id] += len(part.events)
                    self._push(part)
                return True
        self._pending[watch_id] += len(events)
        waiting = self._open.get(watch_id)
        if waiting is not None and watch_id not in self._fragment:
            # The stream is behind: one answer instead of two.
            waiting.revision = revision
            waiting.batches.append(events)
            waiting.count += len(events)
            return True
        item = self._open[watch_id] = _Events(watch_id, revision, [events], len(events))
        self._push(item)
        return True

    def has_room(self, watcher: Watcher) -> bool:
        watch_id = watcher.tag
        return self.closed or watch_id not in self._pending or self._pending[watch_id] < self._max_pending

    def compacted(self, watcher: Watcher, compact_revision: int, revision: int) -> None:
        watch_id = watcher.tag
        assert isinstance(watch_id, int)
        if self.closed or self.watchers.get(watch_id) is not watcher:
            return
        self._forget(watch_id)
        response = self._response(0, watch_id)  # etcd's says no revision
        response.canceled = True
        response.compact_revision = compact_revision
        self._push(response)

    # -- requests ----------------------------------------------------------------------

    def _create(self, create: WatchCreateRequest) -> None:
        key, range_end = create.key, create.range_end
        if create.watch_id != 0 and create.watch_id in self.watchers:
            self._refuse(DUPLICATE_ID)
            return
        if range_end and range_end != b"\x00" and key >= range_end:
            self._refuse(EMPTY_RANGE)
            return
        reason = self._refusal(key, range_end)
        if reason is not None:
            self._refuse(reason)
            return
        watch_id = create.watch_id if create.watch_id != 0 else self._free_id()
        created = self._response(self._hub.revision, watch_id)
        created.created = True
        self._push(created)
        filters = set(create.filters)
        self._pending[watch_id] = 0
        if create.fragment:
            self._fragment.add(watch_id)
        if create.progress_notify:
            self._progress[watch_id] = True
            self._start_ticker()
        self.watchers[watch_id] = self._hub.watch(
            key_span(key, range_end),
            self,
            create.start_revision,
            no_put=WatchCreateRequest.NOPUT in filters,
            no_delete=WatchCreateRequest.NODELETE in filters,
            prev_kv=create.prev_kv,
            tag=watch_id,
        )

    def _refuse(self, reason: str) -> None:
        response = self._response(self._hub.revision, -1)
        response.created = True
        response.canceled = True
        response.cancel_reason = reason
        self._push(response)

    def _free_id(self) -> int:
        while self._next_id in self.watchers:
            self._next_id += 1
        watch_id = self._next_id
        self._next_id += 1
        return watch_id

    def _cancel(self, watch_id: int) -> None:
        watcher = self.watchers.get(watch_id)
        if watcher is None:
            return
        self._hub.cancel(watcher)
        self._forget(watch_id)
        response = self._response(self._hub.revision, watch_id)
        response.canceled = True
        self._push(response)

    def _forget(self, watch_id: int) -> None:
        self.watchers.pop(watch_id, None)
        self._open.pop(watch_id, None)
        self._pending.pop(watch_id, None)
        self._fragment.discard(watch_id)
        self._progress.pop(watch_id, None)

    def _progress_answer(self) -> None:
        revision = self._hub.revision
        for watcher in self.watchers.values():
            revision = min(revision, self._hub.position(watcher) - 1)
        self._push(self._response(revision, -1))

    def _start_ticker(self) -> None:
        if self._ticker is None:
            self._ticker = LoopingCall(self._tick)
            self._ticker.clock = self._hub.clock
            self._ticker.start(self._hub.settings.progress_interval, now=False)

    def _tick(self) -> None:
        for watch_id, quiet in list(self._progress.items()):
            watcher = self.watchers.get(watch_id)
            if quiet and watcher is not None and watcher.synced:
                self._push(self._response(self._hub.revision, watch_id))
            self._progress[watch_id] = True

    # -- answers -----------------------------------------------------------------------

    def _response(self, revision: int, watch_id: int) -> WatchResponse:
        response = WatchResponse(watch_id=watch_id)
        self._fill_header(response.header)
        response.header.revision = revision
        return response

    def _fragments(self, whole: WatchResponse) -> list[WatchResponse]:
        parts: list[WatchResponse] = []
        part = self._response(whole.header.revision, whole.watch_id)
        base = part.ByteSize()
        size = base
        for event in whole.events:
            event_size = event.ByteSize() + 5
            if part.events and size + event_size > self._max_response_bytes:
                part.fragment = True
                parts.append(part)
                part = self._response(whole.header.revision, whole.watch_id)
                size = base
            part.events.append(event)
            size += event_size
        parts.append(part)
        return parts

    def _push(self, answer: WatchResponse | _Events) -> None:
        self._queue.append(answer)
        self._wake()


@attrs.define
class _Events:
    """An answer of events waiting in a stream's queue."""

    watch_id: int
    revision: int
    batches: list[Sequence[Event]]
    count: int
