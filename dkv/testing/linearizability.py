# test-case-name: tests.test_linearizability
"""A linearizability checker for per-key read/write/compare-and-swap registers.

``check(ops)`` decides whether a client history (see ``dkv.testing.history``)
could have come from one register per key, every key initially absent (or
``initial``), each operation taking effect atomically at one instant between
its invocation and its completion.

Keys are independent registers, so each key's sub-history is checked on its
own (linearizability is compositional), which keeps every search small.

Operations whose outcome is not ``ok``:

* ``fail`` operations certainly did not take effect and are dropped, as are
  reads that did not return ``ok`` (they carry no information).
* ``unknown`` writes and compare-and-swaps may take effect at any time after
  their invocation, or never: their completion is +infinity, so they never
  hold anything up, and those not placed once every ``ok`` operation has
  been are simply left out.

A compare-and-swap sets the register to its new value if it holds the
expected one. An ``ok`` one that swapped took effect, so the register held
the expected value at that instant. An ``ok`` one answered as not swapped
(``Op.swapped`` False, etcd's ``succeeded: false``) found the register
holding something else, ``result``, and changed nothing: to the search it is
a read of ``result``, which must differ from the expected value (if it does
not, the answer contradicts itself and the history is not linearizable).
Simultaneous timestamps count as overlapping: an operation invoked at the
very instant another completed may come before it.

For each key, three cheap tests come first, each a proof of a violation when
it fires: a compare-and-swap answered as not swapped although it found the
value it expected; an ``ok`` read (or compare-and-swap) that needs a value no
operation invoked before it completed could write; and one that needs a
value v when some ``ok`` operation w changed the value after every possible
writer of v had completed, and completed before the read began (a stale
read, or a lost write).

Then the search, Wing & Gong's as refined by Lowe and used by Knossos and
Porcupine: a configuration is the set of operations placed so far (integer
bitsets) and the register's value; from one, any operation invoked before
the earliest completion among the unplaced ``ok`` operations may be placed
next, if the register allows; the history is linearizable if some sequence
of placements takes in every ``ok`` operation. A configuration reached once
is never explored again. The search runs depth-first first, which finds a
linearization quickly when there is one, then, if that has not settled it
after a few steps per operation, breadth-first -- one level per number of
operations placed -- which visits each configuration once where the
depth-first search may come back to one, and so proves quickly that there
is none. Neither recurses.

A few reductions cut the configurations visited without losing any
linearization (``_KeySearch._expand`` gives the reasons): a read of the
current value is placed at once, without alternatives; a configuration with
a pending read whose value nothing left can write is abandoned; of pending
operations with the same effect only the one that completes first is tried;
an unknown write is only placed just before an operation that needs its
value, and only if no ``ok`` write of that value could come instead; an
unknown compare-and-swap must be followed at once by an operation that
needs its value; and unknown writes of one value are used in the order they
were invoked, so a configuration that has used fewer of them rules out one
that has used more.

The search has a step budget; a key that exceeds it is reported as timed
out, never as a violation. Histories whose writes write distinct values,
and per-key histories of moderate length (a thousand or so operations per
key when many clients share it), check fastest: proving that a long, highly
concurrent history of one key with many unknown writes is *not*
linearizable can take exponential time.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence

import attrs

from dkv.testing.history import Op

__all__ = ["DEFAULT_MAX_STEPS", "Verdict", "check"]

#: Search steps allowed per key before ``check`` gives up: 100,000 to a
#: million steps a second, depending on the history.
DEFAULT_MAX_STEPS = 2_000_000

#: Rows of the linearized prefix shown in an explanation.
_PREFIX_ROWS = 8
#: Rows of pending operations shown in an explanation.
_PENDING_ROWS = 20


@attrs.frozen(slots=True)
class Verdict:
    """The result of ``check``.

    ``ok`` is True only when every key was shown to be linearizable. When it
    is False, either ``timed_out`` is False and ``key``'s history is certainly
    not linearizable, or ``timed_out`` is True and the search for ``key`` ran
    out of steps without an answer (see ``violation``). ``explanation`` is
    meant for people: for a violation, an excerpt of ``key``'s history around
    the point where no linearization exists. ``ops_checked`` counts the
    operations the search considered over the keys it examined: all but
    failed operations and those of unknown outcome that cannot matter (reads,
    and compare-and-swaps whose new value is the expected one).
    """

    ok: bool
    key: bytes | None
    explanation: str
    ops_checked: int
    timed_out: bool = False

    @property
    def violation(self) -> bool:
        """True if the history is certainly not linearizable."""
        return not self.ok and not self.timed_out


def check(
    ops: Iterable[Op],
    initial: bytes | None = None,
    *,
    max_steps: int | None = DEFAULT_MAX_STEPS,
    depth_first_steps: int | None = None,
) -> Verdict:
    """Check that ``ops`` is linearizable as one register per key.

    Every key starts with value ``initial`` (``None``: absent). Keys are
    checked one at a time in byte order; the first key with a violation is
    reported and the rest are not examined. A key whose search takes more
    than ``max_steps`` steps (``None``: no limit) is reported as timed out
    unless some other key has a violation. The order of ``ops`` does not
    matter.

    Each key's search is depth-first for up to ``depth_first_steps`` steps
    (``None``: 20 per operation plus 10,000), which finds a linearization
    quickly when there is one, then breadth-first, which proves there is
    none with less work. The steps of both count towards ``max_steps``.
    """
    by_key: dict[bytes, list[tuple[int, Op]]] = {}
    for index, op in enumerate(ops):
        by_key.setdefault(op.key, []).append((index, op))
    checked = 0
    timeout: tuple[bytes, str] | None = None
    for key in sorted(by_key):
        search = _KeySearch(key, by_key[key], initial)
        checked += search.size
        outcome = search.run(max_steps, depth_first_steps)
        if outcome is True:
            continue
        if outcome is None:
            if timeout is None:
                timeout = (key, search.timeout_explanation(max_steps))
            continue
        return Verdict(False, key, search.violation_explanation(), checked)
    if timeout is not None:
        return Verdict(False, timeout[0], timeout[1], checked, timed_out=True)
    return Verdict(
        True,
        None,
        f"linearizable: {checked} operations over {len(by_key)} keys",
        checked,
    )


#: Marks an operation that does not read the register (a write).
_ANY = object()
#: Marks an operation that does not change the register (a read).
_SAME = object()

# A configuration is a tuple (rel, low, ucas, used, state, obliged):
#
# rel, low  the ok operations placed: all of 0..low-1, and low+k for each
#           bit k set in rel (bit 0 of rel is always clear). Ok operations
#           are numbered in order of invocation, so rel stays small.
# ucas      the unknown compare-and-swaps placed (bit k: operation q+k).
# used      the unknown writes used (bit j: unknown write j).
# state     the register's value.
# obliged   whether the last operation placed was an unknown cas, so the
#           next must be one that needs its value.
_Config = tuple[int, int, int, int, object, bool]
# (rel, low, ucas, state): the part of a configuration compared exactly;
# ``used`` is compared by inclusion and ``obliged`` by implication.
_Key = tuple[int, int, int, object]
# (operation placed, unknown write used just before it or -1, parent) --
# a persistent list of placements, most recent first.
_Frame = tuple[int, int, "_Frame | None"]


class _KeySearch:
    """The linearization search over one key's operations.

    Listed operations are numbered 0..m-1: first the q ``ok`` ones, which
    must be placed, in order of invocation; then the ``unknown``
    compare-and-swaps, which may be, in order of invocation. ``unknown``
    writes are numbered 0..u-1 apart, and only placed on demand.
    """

    def __init__(self, key: bytes, indexed: Sequence[tuple[int, Op]], initial: bytes | None):
        self.key = key
        self.initial = initial
        ok: list[tuple[int, Op]] = []
        unknown_cas: list[tuple[int, Op]] = []
        unknown_writes: list[tuple[int, Op]] = []
        for index, op in indexed:
            if op.outcome == "fail":
                continue
            if op.outcome == "ok":
                ok.append((index, op))
            elif op.kind == "write":
                unknown_writes.append((index, op))
            elif op.kind == "cas" and op.expected != op.value:
                # A cas that would not change the value never needs placing.
                unknown_cas.append((index, op))
        ok.sort(key=lambda item: (item[1].invoke, item[0]))
        unknown_cas.sort(key=lambda item: (item[1].invoke, item[0]))
        self.listed = listed = ok + unknown_cas
        self.unknown_writes = unknown_writes
        self.q = q = len(ok)
        self.m = m = len(listed)
        self.size = m + len(unknown_writes)

        needs: list[object] = []
        outs: list[object] = []
        for _, op in listed:
            if op.kind == "read":
                needs.append(op.result)
                outs.append(_SAME)
            elif op.kind == "write":
                needs.append(_ANY)
                outs.append(op.value)
            elif not op.swapped:
                needs.append(op.result)
                outs.append(_SAME)
            else:
                needs.append(op.expected)
                outs.append(_SAME if op.value == op.expected else op.value)
        self.needs = needs
        self.outs = outs
        self.inv = inv = [op.invoke for _, op in listed]
        # An ok operation always completed; one of unknown outcome may land
        # any time after its invocation.
        self.ret: list[float] = [
            op.complete if i < q and op.complete is not None else math.inf for i, (_, op) in enumerate(listed)
        ]
        ret = self.ret

        # Unknown writes by value, earliest invocation first: (invoke, bit).
        by_value: dict[object, list[tuple[float, int]]] = {}
        for j, (_, op) in enumerate(unknown_writes):
            by_value.setdefault(op.value, []).append((op.invoke, 1 << j))
        for entries in by_value.values():
            entries.sort()
        self.unknown_by_value = by_value

        # Listed operations that change the value, by the value they write:
        # ok ones in order of invocation, unknown ones apart.
        sources: dict[object, list[int]] = {}
        optional_sources: dict[object, list[int]] = {}
        for i in range(m):
            if outs[i] is not _SAME:
                (sources if i < q else optional_sources).setdefault(outs[i], []).append(i)
        self.sources = sources
        self.optional_sources = optional_sources
        # For each ok operation that needs a value: how many ok sources of
        # that value were invoked no later than it completed.
        source_invs = {value: [inv[j] for j in js] for value, js in sources.items()}
        self.source_limit = [
            bisect.bisect_right(source_invs.get(needs[i], ()), ret[i])
            if i < q and needs[i] is not _ANY
            else 0
            for i in range(m)
        ]

        # Filled by run().
        self.steps = 0
        self.configurations = 0
        self.phase = "depth-first"
        self.contradiction: int | None = None
        self.unsourced: int | None = None
        self.overwritten: tuple[int, int] | None = None
        self.best_depth = 0
        self.best: tuple[_Config, _Frame | None] = ((0, 0, 0, 0, initial, False), None)

    # -- the search ----------------------------------------------------------

    def run(self, max_steps: int | None, depth_first_steps: int | None = None) -> bool | None:
        """Search; True if linearizable, False if not, None if out of steps.

        A depth-first search runs first, for at most ``depth_first_steps``
        (default: a few per operation), which is plenty to find a
        linearization when there is one. If it has not finished by then, a
        breadth-first search takes over with what is left of ``max_steps``:
        it visits each configuration once, where the depth-first search may
        revisit one each time it finds it with fewer unknown writes used.
        """
        needs, q = self.needs, self.q
        root: _Config = (0, 0, 0, 0, self.initial, False)

        # A cas that did not swap although it found what it expected?
        for i in range(q):
            op = self.listed[i][1]
            if not op.swapped and op.result == op.expected:
                self.contradiction = i
                return False
        # Something that needs a value no operation could have written?
        for i in range(q):
            need = needs[i]
            if (
                need is not _ANY
                and need != self.initial
                and not self._has_source(i, need, root, -math.inf)
            ):
                self.unsourced = i
                return False
        self.overwritten = self._find_overwritten()
        if self.overwritten is not None:
            return False
        if q == 0:
            return True

        limit = math.inf if max_steps is None else max_steps
        quota = 20 * self.size + 10_000 if depth_first_steps is None else depth_first_steps
        found = self._depth_first(min(limit, quota))
        if found is not None or self.steps >= limit:
            return found
        self.phase = "breadth-first"
        return self._breadth_first(limit - self.steps)

    def _depth_first(self, limit: float) -> bool | None:
        expand, q = self._expand, self.q
        seen: dict[_Key, list[int]] = {}
        seen_obliged: dict[_Key, list[int]] = {}
        config: _Config = (0, 0, 0, 0, self.initial, False)
        frame: _Frame | None = None
        successors = expand(config)
        pos = 0
        stack: list[tuple[_Config, list | None, int, _Frame | None]] = []
        steps = self.steps
        configurations = 0
        best_depth = self.best_depth
        try:
            while True:
                steps += 1
                if steps > limit:
                    steps -= 1
                    return None
                if successors is None or pos == len(successors):
                    if not stack:
                        return False
                    config, successors, pos, frame = stack.pop()
                    continue
                op, borrowed, child = successors[pos]
                pos += 1
                rel, low, ucas, used, state, obliged = child
                if low == q:
                    self.best = (child, (op, borrowed, frame))
                    return True
                key = (rel, low, ucas, state)
                if _dominated(seen, key, used) or (
                    obliged and _dominated(seen_obliged, key, used)
                ):
                    continue
                _visit(seen_obliged if obliged else seen, key, used)
                configurations += 1
                stack.append((config, successors, pos, frame))
                config = child
                frame = (op, borrowed, frame)
                successors = expand(child)
                pos = 0
                depth = low + rel.bit_count()
                if depth > best_depth:
                    best_depth = depth
                    self.best_depth = depth
                    self.best = (child, frame)
        finally:
            self.steps = steps
            self.configurations += configurations

    def _breadth_first(self, limit: float) -> bool | None:
        """Expand the configurations with k listed operations placed, for
        k = 0, 1, ...: every placement adds one, so each level is complete
        (and free of dominated configurations) before it is expanded."""
        expand, q = self._expand, self.q
        level: dict[_Key, list[tuple[int, _Frame | None]]] = {
            (0, 0, 0, self.initial): [(0, None)]
        }
        level_obliged: dict[_Key, list[tuple[int, _Frame | None]]] = {}
        steps = 0
        configurations = 1
        best_depth = self.best_depth
        try:
            while level or level_obliged:
                following: dict[_Key, list[tuple[int, _Frame | None]]] = {}
                following_obliged: dict[_Key, list[tuple[int, _Frame | None]]] = {}
                for table, obliged in ((level, False), (level_obliged, True)):
                    for (rel, low, ucas, state), visits in table.items():
                        for used, frame in visits:
                            steps += 1
                            if steps > limit:
                                steps -= 1
                                return None
                            successors = expand((rel, low, ucas, used, state, obliged))
                            if not successors:
                                continue
                            for op, borrowed, child in successors:
                                c_rel, c_low, c_ucas, c_used, c_state, c_obliged = child
                                c_frame = (op, borrowed, frame)
                                if c_low == q:
                                    self.best = (child, c_frame)
                                    return True
                                key = (c_rel, c_low, c_ucas, c_state)
                                if c_obliged:
                                    if _dominated_framed(following, key, c_used) or (
                                        _dominated_framed(following_obliged, key, c_used)
                                    ):
                                        continue
                                    _visit_framed(following_obliged, key, c_used, c_frame)
                                else:
                                    if _dominated_framed(following, key, c_used):
                                        continue
                                    _visit_framed(following, key, c_used, c_frame)
                                    if key in following_obliged:
                                        _forget_framed(following_obliged, key, c_used)
                                configurations += 1
                                depth = c_low + c_rel.bit_count()
                                if depth > best_depth:
                                    best_depth = depth
                                    self.best_depth = depth
                                    self.best = (child, c_frame)
                level, level_obliged = following, following_obliged
            return False
        finally:
            self.steps += steps
            self.configurations += configurations

    def _find_overwritten(self) -> tuple[int, int] | None:
        """Find an ok operation i that needs a value v and an ok operation w
        that changed the value such that every operation that could have
        written v completed before w was invoked, and w completed before i
        was invoked: then v was gone for good before i began. Return (i, w)
        or None. (A cheap, sound test that catches stale reads and lost
        writes however long the history.)"""
        q, inv, ret, needs, outs = self.q, self.inv, self.ret, self.needs, self.outs
        # Ok operations that change the value, by invocation, with the one
        # completing first among those invoked at or after each.
        changers = [i for i in range(q) if outs[i] is not _SAME]
        changer_invs = [inv[i] for i in changers]
        first_done = changers[:]
        for k in range(len(changers) - 2, -1, -1):
            if ret[first_done[k + 1]] < ret[first_done[k]]:
                first_done[k] = first_done[k + 1]
        # For each value, the latest completion among its first k ok sources.
        latest: dict[object, list[float]] = {}
        for value, sources in self.sources.items():
            running = -math.inf
            latest[value] = marks = []
            for j in sources:
                running = max(running, ret[j])
                marks.append(running)
        for i in range(q):
            need = needs[i]
            if need is _ANY:
                continue
            deadline = ret[i]
            unknown = self.unknown_by_value.get(need)
            if unknown and unknown[0][0] <= deadline:
                continue
            if any(inv[j] <= deadline for j in self.optional_sources.get(need, ())):
                continue
            limit = self.source_limit[i]
            if limit:
                gone = latest[need][limit - 1]
            elif need == self.initial:
                gone = -math.inf
            else:
                continue  # unsourced
            k = bisect.bisect_right(changer_invs, gone)
            if k < len(changers) and ret[first_done[k]] < inv[i]:
                return i, first_done[k]
        return None

    def _expand(self, config: _Config) -> list[tuple[int, int, _Config]] | None:
        """The configurations worth visiting next from ``config``, as
        (operation placed, unknown write used or -1, configuration); None if
        ``config`` is hopeless.

        The operations that may come next are those invoked before the
        earliest completion among the unplaced ok operations (Wing & Gong's
        condition; ok operations are numbered in order of invocation, so
        they are found by scanning from the first unplaced one). Of those:

        * If one needs a value that nothing left can write -- no unplaced
          operation (or unused unknown write) invoked before it completed
          writes it -- the configuration is hopeless.
        * A read (or a cas not changing the value) of the current value is
          placed at once, without alternatives: it may move to the front of
          any linearization from here, since it may come next and reads
          what is there.
        * An unknown cas is only worth placing just before an operation
          that needs the value it writes (else leaving it out changes
          nothing), so right after one only operations that need its value
          are worth trying, and it is only tried if one of the others may
          need it.
        * Of operations with the same effect (the same kind of request for
          the same values) only the one that completes first is worth
          trying: any linearization that places another first can swap the
          two.
        * An operation that needs another value than the current one may
          come next only after an unknown write of that value -- the unused
          one invoked first, as those are interchangeable -- and only if no
          ok write of that value may come next instead (a linearization
          that uses the unknown write here and the ok write later can swap
          them).

        Writes are tried last, the one due first first, and operations that
        need an unknown write after everything else: orders that put off
        writes tend to need fewer unknown writes, and visiting those first
        lets them rule out the rest.
        """
        rel, low, ucas, used, state, obliged = config
        q, inv, ret, needs, outs = self.q, self.inv, self.ret, self.needs, self.outs
        ANY, SAME = _ANY, _SAME

        candidates: list[int] = []
        deadline = math.inf
        i = low
        while i < q and inv[i] <= deadline:
            if not rel >> (i - low) & 1:
                candidates.append(i)
                if ret[i] < deadline:
                    deadline = ret[i]
            i += 1
        # ``low`` is unplaced, so the earliest unplaced ok invocation is its.
        floor = inv[low]
        for i in candidates:
            need = needs[i]
            if need is not ANY:
                if need == state:
                    if outs[i] is SAME:
                        return [(i, -1, self._place(config, i, -1))]
                elif not self._has_source(i, need, config, floor):
                    return None
        # Unknown compare-and-swaps are worth placing only just before an
        # operation that needs the value they write: one of these, or
        # another unknown cas worth placing.
        wanted = {needs[i] for i in candidates if needs[i] is not ANY}
        work = list(wanted)
        optional_sources = self.optional_sources
        while work:
            for i in optional_sources.get(work.pop(), ()):
                if inv[i] > deadline:
                    break
                if not ucas >> (i - q) & 1:
                    candidates.append(i)
                    need = needs[i]
                    if need not in wanted:
                        wanted.add(need)
                        work.append(need)

        # Keep one operation per effect, the one that completes first.
        best: dict[tuple[object, object], int] = {}
        for i in candidates:
            need = needs[i]
            if obliged and (need is ANY or need != state):
                continue
            effect = (need, outs[i])
            other = best.get(effect)
            if other is None or ret[i] < ret[other]:
                best[effect] = i
        chosen = list(best.values())

        direct = [i for i in chosen if needs[i] is ANY or needs[i] == state]
        direct.sort(key=lambda i: (needs[i] is ANY, ret[i] if needs[i] is ANY else 0.0))
        result = [(i, -1, self._place(config, i, -1)) for i in direct]
        if len(direct) < len(chosen):
            writable = {outs[i] for i in chosen if needs[i] is ANY and i < q}
            for i in chosen:
                need = needs[i]
                if need is ANY or need == state or need in writable:
                    continue
                j = self._unknown_write(need, used, deadline)
                if j >= 0:
                    result.append((i, j, self._place(config, i, j)))
        return result

    def _place(self, config: _Config, i: int, j: int) -> _Config:
        """The configuration after unknown write j (if not -1) and then
        listed operation i."""
        rel, low, ucas, used, state, _ = config
        if j >= 0:
            used |= 1 << j
            state = self.unknown_writes[j][1].value
        out = self.outs[i]
        if out is not _SAME:
            state = out
        if i < self.q:
            rel |= 1 << (i - low)
            if rel & 1:
                shift = (~rel & (rel + 1)).bit_length() - 1
                rel >>= shift
                low += shift
            return (rel, low, ucas, used, state, False)
        return (rel, low, ucas | 1 << (i - self.q), used, state, True)

    def _has_source(self, i: int, value: object, config: _Config, floor: float) -> bool:
        """Whether some unplaced operation (or unused unknown write) invoked
        before ok operation i completed writes ``value``. Ok operations
        invoked before ``floor`` are known to be placed."""
        rel, low, ucas, used, _, _ = config
        deadline = self.ret[i]
        for invoke, bit in self.unknown_by_value.get(value, ()):
            if invoke > deadline:
                break
            if not used & bit:
                return True
        sources = self.sources.get(value)
        if sources:
            inv = self.inv
            k = self.source_limit[i] - 1
            while k >= 0:
                j = sources[k]
                if inv[j] < floor:
                    break
                if j >= low and not rel >> (j - low) & 1:
                    return True
                k -= 1
        q = self.q
        for j in self.optional_sources.get(value, ()):
            if self.inv[j] <= deadline and not ucas >> (j - q) & 1:
                return True
        return False

    def _unknown_write(self, value: object, used: int, deadline: float) -> int:
        """The unused unknown write of ``value`` invoked first, if it was
        invoked by ``deadline``; else -1."""
        for invoke, bit in self.unknown_by_value.get(value, ()):
            if not used & bit:
                return bit.bit_length() - 1 if invoke <= deadline else -1
        return -1

    # -- explanations ----------------------------------------------------------

    def _placed(self, config: _Config, i: int) -> bool:
        rel, low, ucas, _, _, _ = config
        if i < self.q:
            return i < low or bool(rel >> (i - low) & 1)
        return bool(ucas >> (i - self.q) & 1)

    def violation_explanation(self) -> str:
        """Describe why the history is not linearizable: an operation that
        needs a value nothing could have written, or one that needs a value
        overwritten for good before it began, or else where the search got
        stuck -- the deepest configuration it reached, the operations placed
        just before it and those it could not place."""
        if self.overwritten is not None:
            i, w = self.overwritten
            need = self.needs[i]
            reader, changer = self.listed[i][0], self.listed[w][0]
            sources = self.sources.get(need, [])[: self.source_limit[i]]
            if sources:
                story = (
                    f"every operation that could have written it completed before "
                    f"operation #{changer} began, and #{changer} changed the value and "
                    f"completed before #{reader} began:"
                )
            else:
                story = (
                    f"that was the initial value, and operation #{changer} changed it, "
                    f"completing before #{reader} began:"
                )
            shown = sorted(sources, key=lambda j: self.ret[j])[-3:]
            lines = [
                f"key {_show(self.key)} is not linearizable: operation #{reader} needs the "
                f"value {_show(need)}, but {story}",
                _HEADER,
            ]
            if len(sources) > len(shown):
                lines.append(f"  ... {len(sources) - len(shown)} earlier writes of {_show(need)}")
            lines.extend(_row(*self.listed[j], note=f"wrote {_show(need)}") for j in shown)
            lines.append(_row(*self.listed[w], note="changed the value"))
            lines.append(_row(*self.listed[i], note=f"needs {_show(need)}"))
            return "\n".join(lines)
        if self.contradiction is not None:
            i = self.contradiction
            return "\n".join([
                f"key {_show(self.key)} is not linearizable: this compare-and-swap was "
                f"answered as not swapped, yet the value it found, "
                f"{_show(self.listed[i][1].result)}, is the one it expected:",
                _HEADER,
                _row(*self.listed[i]),
            ])
        if self.unsourced is not None:
            i = self.unsourced
            return "\n".join([
                f"key {_show(self.key)} is not linearizable: this operation needs the value "
                f"{_show(self.needs[i])}, but no operation invoked before it completed "
                f"could have written it (and it is not the initial value "
                f"{_show(self.initial)}):",
                _HEADER,
                _row(*self.listed[i]),
            ])

        config, frame = self.best
        state = config[4]
        prefix: list[tuple[int, Op]] = []
        while frame is not None:
            i, j, frame = frame
            prefix.append(self.listed[i])
            if j >= 0:
                prefix.append(self.unknown_writes[j])
        prefix.reverse()

        q = self.q
        unplaced = [i for i in range(self.m) if not self._placed(config, i)]
        deadline = min((self.ret[i] for i in unplaced if i < q), default=math.inf)
        floor = min((self.inv[i] for i in unplaced if i < q), default=math.inf)
        pending = [i for i in unplaced if self.inv[i] <= deadline]
        used = config[3]
        spare = [
            (index, op)
            for j, (index, op) in enumerate(self.unknown_writes)
            if not used >> j & 1 and op.invoke <= deadline
        ]

        optional = self.size - q
        lines = [
            f"key {_show(self.key)} is not linearizable: no order of its {q} ok operations"
            + (f" (with any subset of its {optional} of unknown outcome)" if optional else "")
            + " respects both real time and the register "
            f"({self.phase} search: {self.steps} steps, {self.configurations} configurations).",
            f"The longest linearizable prefix places {self.best_depth} of the {q} ok "
            f"operations and leaves the value {_show(state)}.",
        ]
        if prefix:
            last = prefix[-_PREFIX_ROWS:]
            lines.append(
                f"Last {len(last)} operations of that prefix, in linearization order:"
                if len(last) < len(prefix)
                else "That prefix, in linearization order:"
            )
            lines.append(_HEADER)
            lines.extend(_row(*item) for item in last)
        lines.append(f"Pending operations, none of which can come next (value {_show(state)}):")
        lines.append(_HEADER)
        for i in pending[:_PENDING_ROWS]:
            notes = []
            if i < q and self.ret[i] == deadline:
                notes.append("completed first")
            need = self.needs[i]
            if (
                i < q
                and need is not _ANY
                and need != state
                and not self._has_source(i, need, config, floor)
            ):
                notes.append(f"nothing left can write {_show(need)}")
            lines.append(_row(*self.listed[i], note="; ".join(notes)))
        if len(pending) > _PENDING_ROWS:
            lines.append(f"  ... and {len(pending) - _PENDING_ROWS} more")
        if spare:
            spare.sort(key=lambda item: item[1].invoke)
            lines.append(
                f"Unused writes of unknown outcome that could still take effect: {len(spare)}"
            )
            lines.extend(_row(*item) for item in spare[:5])
            if len(spare) > 5:
                lines.append(f"  ... and {len(spare) - 5} more")
        return "\n".join(lines)

    def timeout_explanation(self, max_steps: int | None) -> str:
        """Say that the search gave up, and how far it had got."""
        return (
            f"key {_show(self.key)}: gave up after {max_steps} search steps "
            f"({self.configurations} configurations) over {self.size} operations; "
            f"linearizability is unknown (the deepest prefix found placed "
            f"{self.best_depth} of {self.q} ok operations)."
        )


# Tables of visited configurations: key -> the ``used`` bitsets it was
# visited with, none a subset of another. A configuration that has used a
# subset of the unknown writes another has used, and is otherwise the same,
# has every continuation the other has: so if it failed, so does the other.


def _dominated(table: dict[_Key, list[int]], key: _Key, used: int) -> bool:
    visits = table.get(key)
    if visits is not None:
        for u in visits:
            if u | used == used:
                return True
    return False


def _visit(table: dict[_Key, list[int]], key: _Key, used: int) -> None:
    visits = table.get(key)
    if visits is None:
        table[key] = [used]
    else:
        visits[:] = [u for u in visits if u | used != u]
        visits.append(used)


def _dominated_framed(
    table: dict[_Key, list[tuple[int, _Frame | None]]], key: _Key, used: int
) -> bool:
    visits = table.get(key)
    if visits is not None:
        for u, _ in visits:
            if u | used == used:
                return True
    return False


def _visit_framed(
    table: dict[_Key, list[tuple[int, _Frame | None]]],
    key: _Key,
    used: int,
    frame: _Frame | None,
) -> None:
    visits = table.get(key)
    if visits is None:
        table[key] = [(used, frame)]
    else:
        visits[:] = [v for v in visits if v[0] | used != v[0]]
        visits.append((used, frame))


def _forget_framed(
    table: dict[_Key, list[tuple[int, _Frame | None]]], key: _Key, used: int
) -> None:
    visits = [v for v in table[key] if v[0] | used != v[0]]
    if visits:
        table[key] = visits
    else:
        del table[key]


_HEADER = f"  {'#':>6} {'proc':>5}  {'operation':<28} {'invoke':>14} {'complete':>14}  outcome"


def _show(value: object, width: int = 24) -> str:
    if value is None:
        return "absent"
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _describe(op: Op) -> str:
    if op.kind == "read":
        return f"read -> {_show(op.result)}"
    if op.kind == "write":
        return f"write {_show(op.value)}"
    if not op.swapped:
        return f"cas {_show(op.expected, 12)} -> {_show(op.value, 12)} found {_show(op.result, 12)}"
    return f"cas {_show(op.expected, 12)} -> {_show(op.value, 12)}"


def _time(t: float | None) -> str:
    return "-" if t is None else f"{t:.6f}"


def _row(index: int, op: Op, note: str = "") -> str:
    return (
        f"  {index:>6} {op.process:>5}  {_describe(op):<28} {_time(op.invoke):>14} "
        f"{_time(op.complete):>14}  {op.outcome}{'  <- ' + note if note else ''}"
    )
