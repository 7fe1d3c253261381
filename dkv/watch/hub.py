# test-case-name: tests.watch.test_hub
"""``WatchHub``: one node's watchers, fed from its applied state.

The driver calls ``applied(events)`` after each apply, once the events are
readable through ``view`` (the overlay over the store), and ``replaced()``
after a snapshot install switched the state under it. Every node has its
own hub, so any node serves watches from what it applied.

Two groups, as etcd's watchable store keeps them:

- **synced** watchers have been given every event up to the hub's revision
  (a watcher whose start revision is in the future waits here too: events
  below its ``next_revision`` are not its). ``applied`` offers each the
  events it wants, at once. A target that refuses (its buffer is full)
  moves the watcher to unsynced, its ``next_revision`` at the first
  revision it was not given.
- **unsynced** watchers are behind: they start in the past, were slow, or
  the state was replaced. A sync round (on the clock, never inside the
  apply turn) takes every unsynced watcher whose target has room, reads
  the history **once** for all of them from the lowest ``next_revision``
  (at most ``sync_events`` events, whole revisions), and offers each its
  part; a watcher that reached the hub's revision joins the synced group.
  A watcher whose ``next_revision`` is below the compacted revision is
  dropped and told (``compacted``).

Per watcher, every revision is offered exactly once, in order: its
``next_revision`` only moves forward, past what its target took. The hub
never blocks: a slow target costs one refused offer and a later read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from dkv.errors import NoLeader
from dkv.logs import logger
from dkv.mvcc import MvccView
from dkv.mvcc.keys import Span
from dkv.pb.etcd_kv_pb2 import Event
from dkv.watch.watcher import EventBatch, Selection, Watcher, WatcherGroup, WatchTarget, passes

log = logger("dkv.watch")

#: A source of views of the applied state (``ReplicationService.view``).
ViewSource = Callable[[], AbstractContextManager[MvccView]]


@attrs.frozen
class WatchSettings:
    """How a node's watches behave."""

    #: Seconds between progress notifications (etcd's default: 10 minutes).
    progress_interval: float = 600.0
    #: Events a watcher may have waiting in its stream before it is
    #: refused new ones (and catches up from the history later).
    max_pending_events: int = 1024
    #: Events one sync round reads from the history (whole revisions).
    sync_events: int = 1000
    #: Seconds between the keep-alive comments of a ``/v0/watch`` stream.
    sse_keepalive: float = 15.0


class WatchHub:
    def __init__(self, clock: IReactorTime, view: ViewSource, settings: WatchSettings = WatchSettings()) -> None:
        self.clock = clock
        self.settings = settings
        self._view = view
        self._synced = WatcherGroup()
        self._unsynced: set[Watcher] = set()
        self._revision: int | None = None
        self._sync_call: IDelayedCall | None = None
        self._stopped = False

    # -- for the driver ----------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The revision of the last event the hub was given (the state's)."""
        if self._revision is None:
            with self._view() as view:
                self._revision = view.revision
        return self._revision

    def applied(self, events: Sequence[Event]) -> None:
        """events (in revision order) were applied and are readable through
        the view: offer each synced watcher what it wants."""
        if not events or self._stopped:
            return
        before = events[0].kv.mod_revision - 1
        last = events[-1].kv.mod_revision
        self._revision = last
        if not self._synced:
            return
        try:
            self._notify(events, before, last)
        except Exception:  # noqa: BLE001 - a watcher's failure never reaches the apply loop
            log.failure("delivering applied events to watchers failed")

    def _notify(self, events: Sequence[Event], before: int, last: int) -> None:
        matched: dict[Selection, EventBatch] = {}
        for event in events:
            for selection in self._synced.selections_for(event.kv.key):
                if passes(selection, event):
                    batch = matched.get(selection)
                    if batch is None:
                        batch = matched[selection] = EventBatch()
                    batch.append(event)
        if not matched:
            return
        with self._maybe_view(self._any_prev_kv(matched)) as view:
            for selection, found in matched.items():
                with_prev: EventBatch | None = None
                first = found[0].kv.mod_revision
                for watcher in self._synced.members(selection):
                    given: EventBatch = found
                    if watcher.next_revision > first:  # a start in the future
                        given = EventBatch(e for e in found if e.kv.mod_revision >= watcher.next_revision)
                        if not given:
                            continue
                    if watcher.prev_kv and view is not None:
                        if given is not found:
                            given = EventBatch(view.with_prev_kv(given))
                        else:
                            with_prev = given = with_prev or EventBatch(view.with_prev_kv(found))
                    if watcher.target.offer(watcher, given, last):
                        watcher.next_revision = last + 1
                    else:
                        self._fall_behind(watcher, before + 1)

    def _any_prev_kv(self, matched: dict[Selection, EventBatch]) -> bool:
        return any(w.prev_kv for selection in matched for w in self._synced.members(selection))

    def replaced(self) -> None:
        """The state was replaced (a snapshot install): every watcher catches
        up from the new state's history (or learns it was compacted)."""
        if self._stopped:
            return
        old = self._revision
        self._revision = None
        for watcher in self._synced:
            self._fall_behind(watcher, (old or 0) + 1)
        self._schedule_sync()

    def stop(self) -> None:
        """The node stops: no more rounds."""
        self._stopped = True
        if self._sync_call is not None and self._sync_call.active():
            self._sync_call.cancel()
        self._sync_call = None

    # -- for the streams ---------------------------------------------------------------

    def watch(
        self,
        span: Span,
        target: WatchTarget,
        start_revision: int = 0,
        *,
        no_put: bool = False,
        no_delete: bool = False,
        prev_kv: bool = False,
        tag: object = None,
    ) -> Watcher:
        """A new watcher of span from start_revision (0: the next revision);
        events of an older start (a negative one: before every revision)
        are replayed from the history first."""
        current = self.revision
        start = current + 1 if start_revision == 0 else max(start_revision, 1)
        watcher = Watcher(span, target, start, no_put=no_put, no_delete=no_delete, prev_kv=prev_kv, tag=tag)
        if start > current:
            watcher.synced = True
            self._synced.add(watcher)
        else:
            self._unsynced.add(watcher)
            self._schedule_sync()
        return watcher

    def cancel(self, watcher: Watcher) -> None:
        """Forget watcher (its target is told nothing)."""
        self._synced.discard(watcher)
        self._unsynced.discard(watcher)
        watcher.synced = False

    def position(self, watcher: Watcher) -> int:
        """The first revision watcher has not been given: its
        ``next_revision``, or for a synced watcher the hub's revision + 1 if
        that is later (it was given every event it wanted up to there)."""
        if watcher.synced:
            return max(watcher.next_revision, self.revision + 1)
        return watcher.next_revision

    def wake(self) -> None:
        """A target has room again: behind watchers may catch up."""
        if self._unsynced:
            self._schedule_sync()

    @property
    def counts(self) -> tuple[int, int]:
        """(synced, unsynced) watchers."""
        return len(self._synced), len(self._unsynced)

    # -- catching up -------------------------------------------------------------------

    def _fall_behind(self, watcher: Watcher, next_revision: int) -> None:
        watcher.next_revision = max(watcher.next_revision, next_revision)
        self._synced.discard(watcher)
        watcher.synced = False
        self._unsynced.add(watcher)
        self._schedule_sync()

    def _schedule_sync(self) -> None:
        if self._sync_call is None and not self._stopped:
            self._sync_call = self.clock.callLater(0, self._sync)

    def _sync(self) -> None:
        self._sync_call = None
        ready = [w for w in self._unsynced if w.target.has_room(w)]
        if not ready:
            return
        try:
            with self._view() as view:
                self._sync_with(view, ready)
        except NoLeader:
            log.debug("watch sync round skipped: the node is stopping")
            return
        except Exception:  # noqa: BLE001 - a watcher's failure never stops the others
            log.failure("a watch sync round failed")
            return
        if any(w.target.has_room(w) for w in self._unsynced):
            self._schedule_sync()

    def _sync_with(self, view: MvccView, ready: list[Watcher]) -> None:
        current = view.revision
        self._revision = current
        compacted = view.compact_revision
        behind: list[Watcher] = []
        for watcher in ready:
            if watcher.next_revision < compacted:
                self._unsynced.discard(watcher)
                watcher.target.compacted(watcher, compacted, current)
            elif watcher.next_revision > current:
                self._join_synced(watcher)
            else:
                behind.append(watcher)
        if not behind:
            return
        start = min(w.next_revision for w in behind)
        events = view.events(start, current, limit=self.settings.sync_events)
        # A revision is never split, and every revision has an event: the
        # read covers [start, end] completely.
        end = events[-1].kv.mod_revision if events else current
        shares: dict[tuple[Span, bool, bool, int], list[Event]] = {}
        with_prev: dict[tuple[Span, bool, bool, int], list[Event]] = {}
        for watcher in behind:
            if watcher.next_revision > end:
                continue  # further on than this read: its turn comes in a later round
            selection = watcher.selection()
            found = shares.get(selection)
            if found is None:
                found = shares[selection] = EventBatch(
                    e for e in events if e.kv.mod_revision >= watcher.next_revision and watcher.wants(e)
                )
            if found and watcher.prev_kv:
                if selection not in with_prev:
                    with_prev[selection] = EventBatch(view.with_prev_kv(found))
                found = with_prev[selection]
            if found and not watcher.target.offer(watcher, found, current):
                continue
            watcher.next_revision = end + 1  # never backwards: it was <= end
            if end >= current:
                self._join_synced(watcher)

    def _join_synced(self, watcher: Watcher) -> None:
        self._unsynced.discard(watcher)
        watcher.synced = True
        self._synced.add(watcher)

    @contextlib.contextmanager
    def _maybe_view(self, wanted: bool) -> Iterator[MvccView | None]:
        if not wanted:
            yield None
            return
        with self._view() as view:
            yield view
