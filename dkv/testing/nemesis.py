# test-case-name: tests.test_faults
"""Fault schedules ("nemeses") for a real-process cluster.

A ``Nemesis`` runs one schedule on a background thread: it injects a fault,
lets it last a few seconds, undoes it, waits a few seconds, and so on until
it is stopped; then ``heal_all()`` resumes, restarts and reconnects
everything. One fault is active at a time, so a majority is always at most
one fault away. Schedules:

``kill-leader``     kill -9 the leader, restart it a few seconds later.
``kill-random``     kill -9 a random node, restart it later.
``pause``           SIGSTOP the leader or a random node (a coin flip), then SIGCONT.
``partition``       split the nodes at random into two halves (both ways), then heal.
``isolate-leader``  cut every link to and from the leader, then heal.
``flaky``           make a random set of directed peer links reset their
                    connections at random and deliver late, then heal.
``transfer-leader`` ask the leader (``POST /v0/leader/transfer``) to hand
                    leadership to a random other node; nothing to undo.
``membership``      remove a random node, the leader too, from the cluster
                    (``DELETE /v0/members/ID`` through another node); once it
                    has stopped, move its db aside and start it again empty
                    with ``--join --auto-promote``: it comes back as a
                    learner, catches up (by snapshot if the log was
                    compacted) and becomes a voter again.
``clock``           step the wall clock of the leader or a random node (a coin
                    flip) an hour ahead or back, or make it run twice as fast
                    (``dkv.testing.faketime``: libfaketime, the monotonic
                    clock untouched), then set it right; skipped (a note) when
                    the cluster was not started with fake clocks.
``mix``             each fault drawn at random from all of the above.

Every choice (which fault, which node or links, how long) comes from the
seeded ``random.Random`` given; "the leader" is whoever says so at that
moment, so which node that is depends on timing and two runs with one seed
are not bit-for-bit the same. Every action is logged as a ``FaultEvent`` with
its ``time.monotonic()`` timestamp, on the clock the workload uses.

The waits between actions are the schedule itself (marked ``# schedule``),
not waits for a state: the fault lasts that long whatever the cluster does.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from dkv.testing.cluster import Cluster
from dkv.testing.faketime import REAL, SPECS, FakeClocks
from dkv.testing.poll import Timeout, wait_until

__all__ = ["FAULTS", "SCHEDULES", "FaultEvent", "Nemesis", "NemesisConfig"]

#: The single faults; ``mix`` draws from all of them.
FAULTS: tuple[str, ...] = (
    "kill-leader",
    "kill-random",
    "pause",
    "partition",
    "isolate-leader",
    "flaky",
    "transfer-leader",
    "membership",
    "clock",
)
SCHEDULES: tuple[str, ...] = FAULTS + ("mix",)

#: How long a removed node may take to notice and stop.
REMOVED_STOP_SECONDS = 10.0

#: Actions that inject a fault (counted in ``Nemesis.injected``); the rest
#: undo one or leave notes.
FAULT_ACTIONS = frozenset({"kill", "pause", "partition", "isolate", "flaky", "transfer", "remove", "clock"})


@attrs.frozen(kw_only=True)
class FaultEvent:
    """One thing the nemesis did: ``action`` (kill, restart, pause, resume,
    partition, isolate, flaky, heal, note) on ``nodes`` at monotonic
    ``time``, with a human ``detail``."""

    time: float
    action: str
    nodes: tuple[str, ...] = ()
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "action": self.action, "nodes": list(self.nodes), "detail": self.detail}


def _span(value: tuple[float, float]) -> tuple[float, float]:
    low, high = value
    if not 0 <= low <= high:
        raise ValueError(f"a (low, high) range of seconds with 0 <= low <= high, not {value!r}")
    return (float(low), float(high))


@attrs.frozen(kw_only=True)
class NemesisConfig:
    """Pacing, in seconds, each drawn uniformly from its range: how long a
    fault lasts, and how long the cluster is left alone between two faults.
    ``flaky_drop`` is the range of the per-chunk reset probability of a flaky
    link, ``flaky_delay`` the range of its delay (jitter: half of it)."""

    fault_seconds: tuple[float, float] = attrs.field(default=(2.0, 4.0), converter=_span)
    quiet_seconds: tuple[float, float] = attrs.field(default=(1.0, 2.5), converter=_span)
    flaky_drop: tuple[float, float] = attrs.field(default=(0.02, 0.15), converter=_span)
    flaky_delay: tuple[float, float] = attrs.field(default=(0.0, 0.06), converter=_span)


class Nemesis:
    """Runs ``schedule`` against ``cluster``; see the module docstring.

    ``start()`` runs it on a thread until ``stop()``, which undoes the fault
    in force and re-raises anything that went wrong on the thread (a node
    that would not restart, say). ``heal_all()`` then brings every node back
    and heals every link. ``events`` is the log so far."""

    def __init__(
        self,
        cluster: Cluster,
        schedule: str,
        rng: random.Random,
        config: NemesisConfig = NemesisConfig(),
        clock: Callable[[], float] = time.monotonic,
        clocks: FakeClocks | None = None,
        rotate: bool = False,
    ) -> None:
        """clocks: the nodes' fake wall clocks (``FakeClocks.install``ed on
        cluster), for the clock fault; None: it is skipped. rotate: ``mix``
        takes the faults in turns (each round a seeded shuffle of all of
        them) instead of at random, so a long run meets every one evenly."""
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown nemesis {schedule!r}; one of {', '.join(SCHEDULES)}")
        self.cluster = cluster
        self.schedule = schedule
        self.rng = rng
        self.config = config
        self.clock = clock
        self.clocks = clocks
        self.rotate = rotate
        self._round: list[str] = []
        self._events: list[FaultEvent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._down: set[str] = set()  # killed or removed by us, not restarted yet
        self.rejoins = 0
        #: Things the nodes did wrong that are not in the history (a removed
        #: node that does not stop), for a check of their own.
        self.anomalies: list[str] = []
        #: (node, exit status) of every node found dead that we had not killed.
        self.unexpected_exits: list[tuple[str, int | None]] = []

    # -- the log -----------------------------------------------------------------

    @property
    def events(self) -> list[FaultEvent]:
        with self._lock:
            return list(self._events)

    @property
    def injected(self) -> int:
        """Faults injected so far."""
        return sum(1 for e in self.events if e.action in FAULT_ACTIONS)

    def log(self, action: str, nodes: Sequence[str] = (), detail: str = "") -> None:
        event = FaultEvent(time=self.clock(), action=action, nodes=tuple(nodes), detail=detail)
        with self._lock:
            self._events.append(event)

    # -- running -----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the nemesis was already started")
        self._thread = threading.Thread(target=self._run, name="dkv-nemesis", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop injecting, undo the fault in force, wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"the nemesis did not stop within {timeout}s")
        if self._error is not None:
            raise RuntimeError(f"the nemesis failed: {self._error}") from self._error

    def check_exits(self) -> None:
        """Record (once per death) every node that exited although we did
        not kill it: a crash of the node itself."""
        known = {n for n, _ in self.unexpected_exits}
        for i in self.cluster.ids:
            node = self.cluster.node(i)
            if node.proc is not None and not node.alive and i not in self._down and i not in known:
                self.unexpected_exits.append((i, node.returncode))
                self.log("note", [i], f"{i} exited by itself with status {node.returncode}")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.check_exits()
                fault = self._next_fault()
                undo = self.inject(fault)
                try:
                    self._stop.wait(self.rng.uniform(*self.config.fault_seconds))  # schedule
                finally:
                    undo()
                self._stop.wait(self.rng.uniform(*self.config.quiet_seconds))  # schedule
        except BaseException as e:  # noqa: BLE001 - re-raised by stop()
            self._error = e
            self.log("note", detail=f"nemesis failed: {e!r}")

    def _next_fault(self) -> str:
        if self.schedule != "mix":
            return self.schedule
        if not self.rotate:
            return self.rng.choice(FAULTS)
        if not self._round:
            self._round = list(FAULTS)
            self.rng.shuffle(self._round)
        return self._round.pop()

    # -- faults ------------------------------------------------------------------

    def inject(self, fault: str) -> Callable[[], None]:
        """Inject one fault now; return what undoes it."""
        c = self.cluster
        if fault == "kill-leader":
            return self._kill(self._leader_or_random("kill"), "leader")
        if fault == "kill-random":
            return self._kill(self.rng.choice(c.ids), "random")
        if fault == "pause":
            if self.rng.random() < 0.5:
                return self._pause(self._leader_or_random("pause"), "leader")
            return self._pause(self.rng.choice(c.ids), "random")
        if fault == "partition":
            ids = list(c.ids)
            self.rng.shuffle(ids)
            half = len(ids) // 2
            groups = (sorted(ids[:half]), sorted(ids[half:]))
            c.partition(*groups)
            self.log("partition", ids, f"{groups[0]} | {groups[1]}")
            return self._heal_links
        if fault == "isolate-leader":
            leader = self._leader_or_random("isolate")
            c.isolate(leader)
            self.log("isolate", [leader], f"{leader} cut off from {[i for i in c.ids if i != leader]}")
            return self._heal_links
        if fault == "flaky":
            links = [link for link in c.links if self.rng.random() < 0.5] or [self.rng.choice(list(c.links))]
            parts = []
            for a, b in links:
                drop = self.rng.uniform(*self.config.flaky_drop)
                delay = self.rng.uniform(*self.config.flaky_delay)
                proxy = c.link(a, b)
                proxy.delay(delay, delay / 2)
                proxy.flaky(drop)
                parts.append(f"{a}->{b} reset p={drop:.3f} delay={delay * 1000:.0f}ms")
            self.log("flaky", sorted({n for link in links for n in link}), "; ".join(parts))
            return self._heal_links
        if fault == "transfer-leader":
            return self._transfer()
        if fault == "membership":
            return self._remove_rejoin()
        if fault == "clock":
            return self._clock_fault()
        raise ValueError(f"unknown fault {fault!r}")

    def _transfer(self) -> Callable[[], None]:
        c = self.cluster
        leader = self._leader_or_random("transfer from")
        to = self.rng.choice([i for i in c.ids if i != leader] or [leader])
        try:
            code, body = c.request(leader, "POST", "/v0/leader/transfer", {"to": to})
            answer = f"{code} {body}"
        except (OSError, http.client.HTTPException) as e:
            answer = f"no answer: {e!r}"
        self.log("transfer", [leader, to], f"{leader} asked to hand leadership to {to}: {answer}")
        return lambda: None

    def _clock_fault(self) -> Callable[[], None]:
        clocks = self.clocks
        if clocks is None:
            self.log("note", detail="clock fault skipped: the nodes run without fake clocks (libfaketime)")
            return lambda: None
        leader = self.rng.random() < 0.5
        node = self._leader_or_random("step the clock of") if leader else self.rng.choice(self.cluster.ids)
        spec = self.rng.choice(sorted(SPECS))
        clocks.set(node, spec)
        self.log("clock", [node], f"wall clock of {node} {SPECS[spec]} (faketime {spec!r})")

        def undo() -> None:
            clocks.set(node, REAL)
            self.log("clock-reset", [node], f"wall clock of {node} real again")

        return undo

    def _members(self, via: str) -> dict[str, bool] | None:
        """id -> voter, as node via sees the configuration; None if it does not answer."""
        try:
            code, body = self.cluster.request(via, "GET", "/v0/members", timeout=5.0)
        except (OSError, http.client.HTTPException):
            return None
        if code != 200:
            return None
        return {m["id"]: bool(m["voter"]) for m in body["members"]}

    def _remove_rejoin(self) -> Callable[[], None]:
        c = self.cluster
        victim = self.rng.choice(c.ids)
        via = self.rng.choice([i for i in c.ids if i != victim])
        self._down.add(victim)  # it will stop by itself: expected
        try:
            code, body = c.request(via, "DELETE", f"/v0/members/{victim}", timeout=c.client_timeout)
            answer = f"{code} {body}"
        except (OSError, http.client.HTTPException) as e:
            code, answer = None, f"no answer: {e!r}"
        self.log("remove", [victim], f"DELETE /v0/members/{victim} via {via}: {answer}")
        removed = code == 200

        def undo() -> None:
            if not removed:
                self._down.discard(victim)
                return
            node = c.node(victim)
            try:
                wait_until(lambda: not node.alive, REMOVED_STOP_SECONDS, f"{victim} to stop once removed")
                status = node.returncode
            except Timeout:
                st = node.try_status()
                seen = "" if st is None else (
                    f": role {st['role']}, term {st['term']}, commit {st['commit_index']}, "
                    f"applied {st['applied_index']}, last {st['last_index']}, "
                    f"members {[m['id'] for m in st['members']]}"
                )
                detail = f"{victim} still runs {REMOVED_STOP_SECONDS:g} s after its removal{seen}; killing it"
                self.log("note", [victim], detail)
                self.anomalies.append(detail)
                node.kill()
                status = None
            self.rejoins += 1
            db = c.dir / f"{victim}.db"
            for suffix in ("", "-lock"):
                path = Path(f"{db}{suffix}")
                if path.exists():
                    path.rename(f"{db}.removed-{self.rejoins}{suffix}")
            contact = self.rng.choice([i for i in c.ids if i != victim])
            c.rejoin_empty(victim, contact)
            c.start_node(victim)
            self._down.discard(victim)
            self.log("rejoin", [victim], f"{victim} stopped (status {status}); restarted empty, joining via {contact}")
            try:
                wait_until(lambda: (m := self._members(contact)) and m.get(victim), 30.0, f"{victim} to be a voter")
                self.log("note", [victim], f"{victim} is a voter again")
            except Timeout:
                self.log("note", [victim], f"{victim} not a voter 30 s after rejoining")

        return undo

    def _leader(self) -> tuple[str, int] | None:
        """(id, term) of the running node that says it leads, the highest term if several."""
        leaders = [
            (st["term"], i) for i, st in self.cluster.statuses().items() if st is not None and st["role"] == "leader"
        ]
        if not leaders:
            return None
        term, node = max(leaders)
        return node, term

    def _leader_or_random(self, why: str) -> str:
        """The leader; if none shows up within a few seconds (an election
        under way), a random node, noted in the log."""
        try:
            node, term = wait_until(self._leader, 3.0, "a leader")
        except Timeout:
            node = self.rng.choice(self.cluster.ids)
            self.log("note", [node], f"no leader seen to {why}; chose {node} at random")
            return node
        self.log("note", [node], f"leader is {node} (term {term})")
        return node

    def _kill(self, node: str, which: str) -> Callable[[], None]:
        self.check_exits()
        self._down.add(node)
        self.cluster.kill(node)
        self.log("kill", [node], f"kill -9 ({which})")

        def undo() -> None:
            self.cluster.restart(node)
            self._down.discard(node)
            self.log("restart", [node], "restarted, REST answers")

        return undo

    def _pause(self, node: str, which: str) -> Callable[[], None]:
        self.cluster.pause(node)
        self.log("pause", [node], f"SIGSTOP ({which})")

        def undo() -> None:
            self.cluster.resume(node)
            self.log("resume", [node], "SIGCONT")

        return undo

    def _heal_links(self) -> None:
        self.cluster.heal()
        self.log("heal", self.cluster.ids, "every link passes")

    def heal_all(self) -> None:
        """Resume paused nodes, restart dead ones, heal every link."""
        c = self.cluster
        self.check_exits()
        for i in c.ids:
            node = c.node(i)
            if node.paused:
                c.resume(i)
                self.log("resume", [i], "SIGCONT (final heal)")
        dead = [i for i in c.ids if not c.node(i).alive]
        for i in dead:
            c.start_node(i)
            self._down.discard(i)
            self.log("restart", [i], "restarted (final heal)")
        if self.clocks is not None:
            for i in c.ids:
                if self.clocks.get(i) != REAL:
                    self.clocks.set(i, REAL)
                    self.log("clock-reset", [i], f"wall clock of {i} real again (final heal)")
        c.heal()
        self.log("heal", c.ids, "final heal: every node runs, every link passes")
