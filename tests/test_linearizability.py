"""Tests for dkv.testing.history and dkv.testing.linearizability."""

from __future__ import annotations

import itertools
import math
import os
import random
import tempfile
import time

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkv.testing.history import (
    Op,
    dumps_history,
    loads_history,
    op_from_json,
    op_to_json,
    read_history,
    write_history,
)
from dkv.testing.linearizability import Verdict, check

K = b"k"


# -- building histories by hand ------------------------------------------------


def w(p, value, invoke, complete, outcome="ok", key=K):
    return Op(process=p, kind="write", key=key, value=value, invoke=invoke,
              complete=complete, outcome=outcome)


def r(p, result, invoke, complete, outcome="ok", key=K):
    return Op(process=p, kind="read", key=key, result=result, invoke=invoke,
              complete=complete, outcome=outcome)


def cas(p, expected, value, invoke, complete, outcome="ok", key=K):
    return Op(process=p, kind="cas", key=key, expected=expected, value=value,
              invoke=invoke, complete=complete, outcome=outcome)


def ncas(p, expected, value, found, invoke, complete, key=K):
    """An ok compare-and-swap that did not swap: the key held ``found``."""
    return Op(process=p, kind="cas", key=key, expected=expected, value=value, result=found,
              invoke=invoke, complete=complete, outcome="ok", swapped=False)


def uw(p, value, invoke, key=K):
    """A write whose client never heard back."""
    return w(p, value, invoke, None, "unknown", key)


def assert_linearizable(ops, **kwargs):
    verdict = check(ops, **kwargs)
    assert verdict.ok, verdict.explanation
    assert not verdict.violation and not verdict.timed_out
    if "depth_first_steps" not in kwargs:  # the breadth-first search agrees
        assert check(ops, depth_first_steps=0, **kwargs).ok
    return verdict


def mentions(explanation: str, op: Op) -> bool:
    """Whether some line of the explanation shows ``op``: its process, the
    value it read or wrote, and its invocation time."""
    value = op.result if op.kind == "read" else op.value
    shown = "absent" if value is None else repr(value)
    for line in explanation.splitlines():
        tokens = line.split()
        if str(op.process) in tokens and shown in line and f"{op.invoke:.6f}" in tokens:
            return True
    return False


def informative(op: Op) -> bool:
    """Whether the checker has any use for ``op``."""
    if op.outcome == "fail":
        return False
    if op.outcome == "unknown":
        return op.kind == "write" or (op.kind == "cas" and op.expected != op.value)
    return True


def assert_violation(ops, *offending, key=K, **kwargs):
    """Check that ``ops`` is found not linearizable at ``key``, with the
    offending operations named in the explanation."""
    verdict = check(ops, **kwargs)
    assert verdict.violation, verdict
    assert not verdict.ok and not verdict.timed_out
    assert verdict.key == key
    for op in offending:
        assert mentions(verdict.explanation, op), (op, verdict.explanation)
    if "depth_first_steps" not in kwargs:  # the breadth-first search agrees
        assert check(ops, depth_first_steps=0, **kwargs).violation
    return verdict


# -- accepted histories ----------------------------------------------------------


def test_empty_history():
    verdict = assert_linearizable([])
    assert verdict == Verdict(True, None, verdict.explanation, 0)


def test_sequential():
    assert_linearizable([
        r(1, None, 0, 1),
        w(1, b"1", 2, 3),
        r(2, b"1", 4, 5),
        w(2, b"2", 6, 7),
        r(1, b"2", 8, 9),
        cas(3, b"2", b"3", 10, 11),
        r(1, b"3", 12, 13),
        w(1, None, 14, 15),  # writing None deletes
        r(2, None, 16, 17),
    ])


def test_initial_value():
    assert_linearizable([r(1, b"0", 0, 1)], initial=b"0")
    assert_violation([r(1, b"0", 0, 1)], r(1, b"0", 0, 1))
    assert_violation([r(1, None, 0, 1)], r(1, None, 0, 1), initial=b"0")


def test_order_of_ops_in_the_input_does_not_matter():
    ops = [w(1, b"1", 0, 1), w(2, b"2", 2, 3), r(3, b"2", 4, 5)]
    assert_linearizable(list(reversed(ops)))
    assert_violation(list(reversed(ops[:2])) + [r(3, b"1", 4, 5)], r(3, b"1", 4, 5))


@pytest.mark.parametrize("seen", [b"1", b"2"])
def test_overlapping_writes_take_effect_in_either_order(seen):
    assert_linearizable([
        w(1, b"1", 0, 10),
        w(2, b"2", 1, 9),
        r(3, seen, 11, 12),
        r(4, seen, 13, 14),
    ])


@pytest.mark.parametrize("seen", [b"1", b"2"])
def test_read_overlapping_a_write_sees_old_or_new(seen):
    assert_linearizable([w(1, b"1", 0, 1), w(2, b"2", 2, 6), r(3, seen, 3, 4)])


def test_read_of_a_write_still_in_flight():
    assert_linearizable([w(1, b"1", 0, 10), r(2, b"1", 1, 2), r(3, b"1", 3, 4)])


def test_concurrent_reads_see_a_write_take_effect_between_them():
    # The write lands between the two overlapping reads: old, then new.
    assert_linearizable([
        w(1, b"1", 0, 1),
        w(2, b"2", 2, 10),
        r(3, b"1", 3, 6),
        r(4, b"2", 4, 5),
    ])


def test_operations_touching_at_one_instant_count_as_overlapping():
    assert_linearizable([w(1, b"1", 0, 1), w(2, b"2", 1, 2), r(3, b"1", 2, 3)])


def test_unknown_write_that_took_effect():
    assert_linearizable([w(1, b"1", 0, 1), uw(2, b"2", 2), r(3, b"2", 3, 4)])
    # ...even long after its client gave up on it.
    assert_linearizable([
        w(1, b"1", 0, 1),
        w(2, b"2", 2, 3, outcome="unknown"),
        r(3, b"1", 4, 5),
        r(3, b"1", 6, 7),
        r(3, b"2", 8, 9),
    ])


def test_unknown_write_that_never_took_effect():
    assert_linearizable([w(1, b"1", 0, 1), uw(2, b"2", 2), r(3, b"1", 3, 4), r(3, b"1", 5, 6)])


def test_unknown_write_explains_an_old_value_after_a_newer_write():
    # The unknown write of 1 may land after the acknowledged write of 2.
    assert_linearizable([
        w(1, b"1", 0, 1),
        w(2, b"2", 2, 3),
        uw(4, b"1", 3.5),
        r(3, b"1", 4, 5),
    ])


def test_unknown_writes_of_one_value_each_take_effect_once():
    assert_linearizable([
        uw(8, b"9", 0),
        uw(9, b"9", 0.5),
        w(1, b"1", 1, 2),
        r(2, b"9", 3, 4),
        w(1, b"2", 5, 6),
        r(3, b"9", 7, 8),
    ])


def test_failed_and_unknown_reads_carry_no_information():
    assert_linearizable([
        w(1, b"1", 0, 1),
        r(2, b"nonsense", 2, 3, outcome="fail"),
        r(3, b"other", 2, None, outcome="unknown"),
        r(4, b"1", 4, 5),
    ])


def test_failed_writes_are_dropped():
    assert_linearizable([w(1, b"1", 0, 1), w(2, b"2", 2, 3, outcome="fail"), r(3, b"1", 4, 5)])


def test_cas_success_and_failure():
    assert_linearizable([
        w(1, b"1", 0, 1),
        cas(2, b"1", b"2", 2, 3),
        cas(3, b"1", b"3", 4, 5, outcome="fail"),  # expected no longer matches
        r(1, b"2", 6, 7),
        cas(1, None, b"4", 8, 9, outcome="fail"),
        cas(2, b"2", None, 10, 11),  # cas to absent
        r(3, None, 12, 13),
        cas(3, None, b"5", 14, 15),  # cas from absent
        r(1, b"5", 16, 17),
    ])


def test_concurrent_cas_race_only_one_succeeds():
    assert_linearizable([
        w(1, b"0", 0, 1),
        cas(2, b"0", b"a", 2, 5),
        cas(3, b"0", b"b", 2, 5, outcome="fail"),
        r(1, b"a", 6, 7),
    ])


def test_unknown_cas_that_took_effect_or_did_not():
    base = [w(1, b"1", 0, 1), cas(2, b"1", b"2", 2, None, outcome="unknown")]
    assert_linearizable(base + [r(3, b"2", 3, 4)])
    assert_linearizable(base + [r(3, b"1", 3, 4)])
    assert_linearizable(base + [r(3, b"1", 3, 4), r(3, b"2", 5, 6)])
    # A chain of unknown operations: write 1, cas 1 -> 2, cas 2 -> 3.
    assert_linearizable([
        w(1, b"0", 0, 1),
        uw(2, b"1", 2),
        cas(3, b"1", b"2", 2, None, outcome="unknown"),
        cas(4, b"2", b"3", 2, 3, outcome="unknown"),
        r(5, b"3", 4, 5),
    ])


def test_cas_that_did_not_swap_reads_what_it_found():
    assert_linearizable([
        w(1, b"1", 0, 1),
        cas(2, b"1", b"2", 2, 3),
        ncas(3, b"1", b"3", b"2", 4, 5),  # expected 1, found 2: nothing changed
        r(1, b"2", 6, 7),
        ncas(2, None, b"4", b"2", 8, 9),  # expected absent
        w(1, None, 10, 11),
        ncas(3, b"2", b"5", None, 12, 13),  # found absent
    ])


def test_concurrent_cas_race_loser_finds_the_winners_value():
    assert_linearizable([
        w(1, b"0", 0, 1),
        cas(2, b"0", b"a", 2, 5),
        ncas(3, b"0", b"b", b"a", 2, 5),
        r(1, b"a", 6, 7),
    ])
    # The loser may also come first, if it found a value that was there then.
    assert_linearizable([
        w(1, b"0", 0, 1),
        cas(2, b"0", b"a", 2, 5),
        ncas(3, b"x", b"b", b"0", 2, 5),
        r(1, b"a", 6, 7),
    ])


def test_cas_not_swapped_although_it_found_what_it_expected():
    bad = ncas(2, b"1", b"2", b"1", 2, 3)
    verdict = assert_violation([w(1, b"1", 0, 1), bad], bad)
    assert "not swapped" in verdict.explanation
    assert check([ncas(2, None, b"2", None, 2, 3)]).violation


def test_cas_not_swapped_found_a_value_nobody_wrote():
    bad = ncas(2, b"0", b"2", b"ghost", 2, 3)
    assert_violation([w(1, b"1", 0, 1), bad], bad)


def test_cas_not_swapped_found_an_overwritten_value():
    bad = ncas(3, b"0", b"9", b"1", 4, 5)
    assert_violation([w(1, b"1", 0, 1), w(2, b"2", 2, 3), bad], bad)


def test_cas_not_swapped_orders_the_swap_it_saw():
    # The failed compare saw b"2" by time 4, so the swap 1 -> 2 came before;
    # a read of b"1" after that is stale.
    bad = r(4, b"1", 5, 6)
    assert_violation([
        w(1, b"1", 0, 1),
        cas(2, b"1", b"2", 2, 10),
        ncas(3, b"1", b"3", b"2", 3, 4),
        bad,
    ], bad)
    # Without it, the swap may come late and the read is fine.
    assert_linearizable([w(1, b"1", 0, 1), cas(2, b"1", b"2", 2, 10), r(4, b"1", 5, 6)])


def test_keys_are_independent():
    assert_linearizable([
        w(1, b"1", 0, 10, key=b"a"),
        w(2, b"2", 0, 10, key=b"b"),
        r(3, b"1", 1, 2, key=b"a"),
        r(3, None, 3, 4, key=b"b"),
        r(3, b"2", 11, 12, key=b"b"),
    ])


# -- rejected histories ----------------------------------------------------------


def test_stale_read():
    bad = r(3, b"1", 4, 5)
    verdict = assert_violation([w(1, b"1", 0, 1), w(2, b"2", 2, 3), bad], bad)
    assert "b'2'" in verdict.explanation  # the value it should have seen
    assert verdict.ops_checked == 3


def test_read_of_a_value_never_written():
    bad = r(2, b"ghost", 2, 3)
    assert_violation([w(1, b"1", 0, 1), bad, r(3, b"1", 4, 5)], bad)


def test_read_of_absent_after_a_write():
    bad = r(2, None, 2, 3)
    assert_violation([w(1, b"1", 0, 1), bad], bad)


def test_reads_in_an_order_no_write_order_explains():
    # Both writes overlap everything, so either order is fine, but the reads
    # see 1, then 2, then 1 again.
    bad = r(5, b"1", 7, 8)
    assert_violation([
        w(1, b"1", 0, 10),
        w(2, b"2", 0, 10),
        r(3, b"1", 1, 2),
        r(4, b"2", 3, 4),
        bad,
    ], bad)
    # Sequential writes, reads see them backwards.
    bad = r(4, b"1", 6, 7)
    assert_violation([
        w(1, b"1", 0, 1),
        w(2, b"2", 0.5, 2),
        r(3, b"2", 3, 4),
        bad,
    ], bad)


def test_lost_acknowledged_write():
    lost = w(2, b"2", 2, 3)
    bad = r(3, b"1", 4, 5)
    assert_violation([w(1, b"1", 0, 1), lost, bad], lost, bad)


def test_cas_acknowledged_although_expected_value_did_not_match():
    bad = cas(2, b"0", b"2", 2, 3)
    assert_violation([w(1, b"1", 0, 1), bad], bad)


def test_cas_effect_lost():
    bad = r(3, b"1", 4, 5)
    assert_violation([w(1, b"1", 0, 1), cas(2, b"1", b"2", 2, 3), bad], bad)


def test_unknown_write_invoked_too_late_does_not_explain_a_stale_read():
    bad = r(3, b"1", 4, 5)
    assert_violation([w(1, b"1", 0, 1), w(2, b"2", 2, 3), bad, uw(4, b"1", 6)], bad)


def test_unknown_write_of_another_value_does_not_explain_a_stale_read():
    bad = r(3, b"1", 4, 5)
    assert_violation([w(1, b"1", 0, 1), uw(4, b"3", 1), w(2, b"2", 2, 3), bad], bad)


def test_unknown_write_does_not_explain_a_value_never_written():
    bad = r(3, b"ghost", 4, 5)
    assert_violation([w(1, b"1", 0, 1), uw(2, b"2", 2), bad], bad)


def test_unknown_write_takes_effect_at_most_once():
    bad = r(3, b"9", 7, 8)
    verdict = assert_violation([
        uw(9, b"9", 0),
        w(1, b"1", 1, 2),
        r(2, b"9", 3, 4),
        w(1, b"2", 5, 6),
        bad,
    ], bad)
    assert "unknown" in verdict.explanation


def test_unknown_write_does_not_explain_flip_flopping_reads():
    bad = r(5, b"1", 7, 8)
    assert_violation([
        w(1, b"1", 0, 10),
        w(2, b"2", 0, 10),
        uw(6, b"2", 0),
        r(3, b"1", 1, 2),
        r(4, b"2", 3, 4),
        bad,
    ], bad)


def test_failed_write_cannot_explain_a_read():
    bad = r(3, b"2", 4, 5)
    assert_violation([w(1, b"1", 0, 1), w(2, b"2", 2, 3, outcome="fail"), bad], bad)


def test_unknown_cas_cannot_explain_a_value_its_expectation_rules_out():
    bad = r(3, b"2", 4, 5)
    assert_violation([w(1, b"1", 0, 1), cas(2, b"0", b"2", 2, None, outcome="unknown"), bad], bad)


def test_violation_reports_the_offending_key_among_many():
    bad = r(3, b"1", 4, 5, key=b"b")
    ops = [
        w(1, b"1", 0, 1, key=b"a"),
        r(2, b"1", 2, 3, key=b"a"),
        w(1, b"1", 0, 1, key=b"b"),
        w(2, b"2", 2, 3, key=b"b"),
        bad,
        w(1, b"x", 0, 1, key=b"c"),
    ]
    assert_violation(ops, bad, key=b"b")


def test_overwritten_value_explanation_names_the_writes():
    old = w(1, b"1", 0, 1)
    newer = w(2, b"2", 2, 3)
    bad = r(3, b"1", 4, 5)
    verdict = assert_violation([old, newer, bad, r(4, b"2", 4, 5)], old, newer, bad)
    assert "changed the value" in verdict.explanation


def flip_flop(t, key=K):
    """Two overlapping writes, then reads that see 1, 2 and 1 again."""
    return [
        w(101, b"flip-1", t, t + 10, key=key),
        w(102, b"flip-2", t, t + 10, key=key),
        r(103, b"flip-1", t + 1, t + 2, key=key),
        r(103, b"flip-2", t + 3, t + 4, key=key),
        r(103, b"flip-1", t + 5, t + 6, key=key),
    ]


@pytest.mark.parametrize("depth_first_steps", [None, 0])
def test_search_explanation_is_short_for_long_histories(depth_first_steps):
    ops = []
    t = 0.0
    for n in range(500):
        ops.append(w(1, b"%d" % n, t, t + 1))
        ops.append(r(2, b"%d" % n, t + 2, t + 3))
        t += 4
    tail = flip_flop(t)
    verdict = assert_violation(
        ops + tail, tail[-1], tail[-2], depth_first_steps=depth_first_steps
    )
    assert len(verdict.explanation.splitlines()) < 30
    assert "search" in verdict.explanation
    assert ("breadth-first" in verdict.explanation) == (depth_first_steps == 0)


# -- the step budget ---------------------------------------------------------------


def test_step_budget_yields_a_timeout_not_a_violation():
    ops = [w(p, b"%d" % p, 0, 10) for p in range(8)] + [r(9, b"3", 11, 12)]
    verdict = check(ops, max_steps=5)
    assert verdict.timed_out and not verdict.ok and not verdict.violation
    assert verdict.key == K
    assert "gave up" in verdict.explanation
    assert_linearizable(ops, max_steps=None)
    for depth_first_steps in (0, 3):
        verdict = check(ops, max_steps=5, depth_first_steps=depth_first_steps)
        assert verdict.timed_out
        assert_linearizable(ops, depth_first_steps=depth_first_steps)


def test_violation_elsewhere_beats_a_timeout():
    slow = [w(p, b"%d" % p, 0, 10, key=b"a") for p in range(8)] + [r(9, b"3", 11, 12, key=b"a")]
    verdict = check(slow + flip_flop(0, key=b"b"), max_steps=30)
    assert verdict.violation and verdict.key == b"b"


# -- an oracle for small histories --------------------------------------------------


def brute_force(ops, initial=None) -> bool:
    """Linearizability by definition: some subset of the unknown operations
    and some order of them with all ok operations respects real time and the
    register."""
    by_key = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    return all(_brute_force_key(key_ops, initial) for key_ops in by_key.values())


def _brute_force_key(ops, initial) -> bool:
    ops = [op for op in ops if op.outcome != "fail" and (op.kind != "read" or op.outcome == "ok")]
    required = [op for op in ops if op.outcome == "ok"]
    optional = [op for op in ops if op.outcome == "unknown"]

    def ret(op):
        return op.complete if op.outcome == "ok" else math.inf

    def legal(order):
        for a, b in itertools.combinations(order, 2):
            if ret(b) < a.invoke:  # b finished before a began, yet comes after it
                return False
        state = initial
        for op in order:
            if op.kind == "read":
                if state != op.result:
                    return False
            elif op.kind == "write":
                state = op.value
            else:
                if state != op.expected:
                    return False
                state = op.value
        return True

    for n in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, n):
            for order in itertools.permutations(required + list(chosen)):
                if legal(order):
                    return True
    return False


VALUES = [None, b"a", b"b"]


@st.composite
def small_ops(draw, keys=(K,), span=8):
    kind = draw(st.sampled_from(["read", "write", "cas"]))
    invoke = draw(st.integers(0, span))
    outcome = draw(st.sampled_from(["ok", "ok", "ok", "unknown", "fail"]))
    if outcome == "unknown" and draw(st.booleans()):
        complete = None
    else:
        complete = invoke + draw(st.integers(0, 4))
    return Op(
        process=draw(st.integers(0, 5)),
        kind=kind,
        key=draw(st.sampled_from(keys)),
        value=draw(st.sampled_from(VALUES)),
        expected=draw(st.sampled_from(VALUES)),
        result=draw(st.sampled_from(VALUES)),
        invoke=invoke,
        complete=complete,
        outcome=outcome,
    )


def reference(ops, initial=None) -> bool:
    """Linearizability by a plain memoized search straight from the
    definition, for histories too long for ``brute_force``: place, one at a
    time, any operation that no unplaced ok operation completed before; an
    unknown operation may be placed or not."""
    by_key = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    return all(_reference_key(key_ops, initial) for key_ops in by_key.values())


def _reference_key(ops, initial) -> bool:
    ops = [op for op in ops if op.outcome != "fail" and (op.kind != "read" or op.outcome == "ok")]
    ret = [op.complete if op.outcome == "ok" else math.inf for op in ops]
    required = frozenset(i for i, op in enumerate(ops) if op.outcome == "ok")
    failed = set()
    stack = [(frozenset(), initial)]  # iterative DFS over (placed, value)
    while stack:
        placed, state = stack.pop()
        if required <= placed:
            return True
        if (placed, state) in failed:
            continue
        failed.add((placed, state))
        pending = [i for i in required if i not in placed]
        for x, op in enumerate(ops):
            if x in placed or any(ret[y] < op.invoke for y in pending if y != x):
                continue
            if op.kind == "read":
                if state == op.result:
                    stack.append((placed | {x}, state))
            elif op.kind == "write":
                stack.append((placed | {x}, op.value))
            elif state == op.expected:
                stack.append((placed | {x}, op.value))
    return False


@settings(max_examples=600, deadline=None)
@given(st.lists(small_ops(), max_size=6), st.sampled_from(VALUES))
def test_agrees_with_brute_force_on_small_histories(ops, initial):
    expected = brute_force(ops, initial)
    for depth_first_steps in (None, 0, 2):
        verdict = check(ops, initial=initial, depth_first_steps=depth_first_steps)
        assert not verdict.timed_out
        assert verdict.ok == expected, verdict.explanation


@settings(max_examples=200, deadline=None)
@given(st.lists(small_ops(keys=(b"x", b"y")), max_size=9))
def test_agrees_with_brute_force_on_two_keys(ops):
    verdict = check(ops)
    assert verdict.ok == brute_force(ops), verdict.explanation
    if not verdict.ok:
        assert not brute_force([op for op in ops if op.key == verdict.key])


@st.composite
def medium_ops(draw):
    n = draw(st.integers(6, 14))
    return [draw(small_ops(span=3 * n)) for _ in range(n)]


@settings(max_examples=300, deadline=None)
@given(medium_ops(), st.sampled_from(VALUES))
def test_agrees_with_a_plain_search_on_medium_histories(ops, initial):
    expected = reference(ops, initial)
    for depth_first_steps in (None, 0):
        verdict = check(ops, initial=initial, depth_first_steps=depth_first_steps)
        assert verdict.ok == expected, verdict.explanation


# -- histories from a simulated correct store ---------------------------------------


def simulate(
    rng: random.Random,
    *,
    n_ops: int,
    n_keys: int,
    n_clients: int,
    values: list[bytes | None],
    p_read: float = 0.5,
    p_cas: float = 0.2,
    p_unknown: float = 0.03,
    p_lost: float = 0.02,
    p_tie: float = 0.2,
    p_not_swapped: float = 0.0,
    initial: bytes | None = None,
) -> list[Op]:
    """Run random operations against one sequential register per key.

    Each client invokes an operation, which later takes effect atomically
    (or, now and then, is lost and never does), and later still completes.
    The clock advances by random steps, sometimes zero, between events, so
    every history is linearizable by construction. Some completions are
    unknown: the client stops hearing (complete None or its give-up time)
    and carries on as a new process, as clients do after a timeout. A
    compare-and-swap whose expected value did not match is recorded as
    ``fail``, or, with probability ``p_not_swapped``, as ``ok`` and not
    swapped, with the value it found.
    """
    register: dict[bytes, bytes | None] = {}
    keys = [b"key-%d" % i for i in range(n_keys)]
    process = list(range(n_clients))
    next_process = n_clients
    inflight: list[dict | None] = [None] * n_clients
    history: list[Op] = []
    started = 0
    now = 0.0
    while started < n_ops or any(inflight):
        c = rng.randrange(n_clients)
        now += 0.0 if rng.random() < p_tie else rng.random()
        req = inflight[c]
        if req is None:
            if started == n_ops:
                continue
            started += 1
            x = rng.random()
            kind = "read" if x < p_read else "cas" if x < p_read + p_cas else "write"
            inflight[c] = dict(
                kind=kind, key=rng.choice(keys), value=rng.choice(values),
                expected=rng.choice(values), invoke=now, applied=False, took=False,
                result=None,
            )
            continue
        if not req["applied"] and rng.random() < p_lost:
            outcome = rng.choice(["fail", "unknown"])
            complete = None if outcome == "unknown" and rng.random() < 0.5 else now
        elif not req["applied"]:
            current = register.get(req["key"], initial)
            if req["kind"] == "read":
                req["result"] = current
            elif req["kind"] == "write":
                register[req["key"]] = req["value"]
            elif current == req["expected"]:
                register[req["key"]] = req["value"]
            else:
                req["took"] = False
                req["applied"] = True
                req["result"] = current
                continue
            req["took"] = True
            req["applied"] = True
            continue
        elif not req["took"]:
            # A cas whose expected value did not match.
            outcome, complete = "fail", now
            if p_not_swapped and rng.random() < p_not_swapped:
                outcome = "ok"
        elif rng.random() < p_unknown:
            outcome = "unknown"
            complete = None if rng.random() < 0.5 else now
        else:
            outcome, complete = "ok", now
        history.append(Op(
            process=process[c], kind=req["kind"], key=req["key"], value=req["value"],
            expected=req["expected"] if req["kind"] == "cas" else None,
            result=req["result"] if req["kind"] != "write" and outcome == "ok" else None,
            invoke=req["invoke"], complete=complete, outcome=outcome,
            swapped=req["kind"] != "cas" or outcome != "ok" or req["took"],
        ))
        inflight[c] = None
        if outcome == "unknown":
            process[c] = next_process
            next_process += 1
    rng.shuffle(history)
    return history


@settings(max_examples=300, deadline=None)
@given(
    st.randoms(use_true_random=True),
    st.integers(0, 80),
    st.integers(1, 3),
    st.integers(1, 6),
    st.sampled_from([[None, b"a", b"b"], [b"a", b"b", b"c", b"d", b"e"]]),
    st.sampled_from([None, b"a"]),
)
def test_histories_of_a_correct_register_are_linearizable(
    rng, n_ops, n_keys, n_clients, values, initial
):
    ops = simulate(
        rng, n_ops=n_ops, n_keys=n_keys, n_clients=n_clients, values=values,
        p_unknown=0.1, p_lost=0.1, p_not_swapped=0.5, initial=initial,
    )
    verdict = check(ops, initial=initial)
    assert verdict.ok, verdict.explanation
    assert verdict.ops_checked == sum(1 for op in ops if informative(op))


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=True), st.integers(1, 60))
def test_a_read_of_a_value_nobody_wrote_is_caught(rng, n_ops):
    ops = simulate(rng, n_ops=n_ops, n_keys=2, n_clients=4, values=[b"a", b"b"])
    reads = [i for i, op in enumerate(ops) if op.kind == "read" and op.outcome == "ok"]
    if not reads:
        return
    i = rng.choice(reads)
    ops[i] = bad = attrs.evolve(ops[i], result=b"never written")
    verdict = check(ops)
    assert verdict.violation and verdict.key == bad.key
    assert mentions(verdict.explanation, bad), verdict.explanation


@settings(max_examples=200, deadline=None)
@given(
    st.randoms(use_true_random=True),
    st.integers(1, 80),
    st.sampled_from([None, 0]),
)
def test_any_wrong_read_in_a_sequential_history_is_caught(rng, n_ops, depth_first_steps):
    """With one client, distinct timestamps and every outcome known, each
    read has exactly one right answer: any other is caught, and named."""
    ops = simulate(
        rng, n_ops=n_ops, n_keys=2, n_clients=1, values=[None, b"a", b"b", b"c"],
        p_unknown=0, p_lost=0, p_tie=0,
    )
    reads = [i for i, op in enumerate(ops) if op.kind == "read" and op.outcome == "ok"]
    if not reads:
        return
    i = rng.choice(reads)
    wrong = rng.choice([v for v in [None, b"a", b"b", b"c"] if v != ops[i].result])
    ops[i] = bad = attrs.evolve(ops[i], result=wrong)
    verdict = check(ops, depth_first_steps=depth_first_steps)
    assert verdict.violation and verdict.key == bad.key
    assert mentions(verdict.explanation, bad), verdict.explanation


@settings(max_examples=200, deadline=None)
@given(st.randoms(use_true_random=True), st.integers(1, 80))
def test_any_wrong_value_found_by_a_cas_that_did_not_swap_is_caught(rng, n_ops):
    """As for reads: in a sequential history, a cas answered as not swapped
    found exactly one value; any other (the expected one included) is caught."""
    values = [None, b"a", b"b", b"c"]
    ops = simulate(
        rng, n_ops=n_ops, n_keys=2, n_clients=1, values=values,
        p_unknown=0, p_lost=0, p_tie=0, p_cas=0.5, p_not_swapped=1.0,
    )
    found = [i for i, op in enumerate(ops) if not op.swapped]
    if not found:
        return
    i = rng.choice(found)
    wrong = rng.choice([v for v in values if v != ops[i].result])
    ops[i] = bad = attrs.evolve(ops[i], result=wrong)
    verdict = check(ops)
    assert verdict.violation and verdict.key == bad.key
    assert mentions(verdict.explanation, bad), verdict.explanation


# -- performance --------------------------------------------------------------------


def big_history(seed: int, *, values: list[bytes | None]) -> list[Op]:
    """10,000 operations by 10 clients over 10 keys, a few hundred writes of
    unknown outcome among them."""
    ops = simulate(
        random.Random(seed), n_ops=10_000, n_keys=10, n_clients=10, values=values,
        p_unknown=0.06, p_lost=0.02,
    )
    unknown_writes = sum(1 for op in ops if op.kind == "write" and op.outcome == "unknown")
    assert len(ops) == 10_000 and unknown_writes >= 150
    return ops


def timed_check(ops):
    start = time.perf_counter()
    verdict = check(ops)
    return verdict, time.perf_counter() - start


#: Generous: these take well under a second on a laptop.
SECONDS = 20


@pytest.mark.parametrize("values", [20, 3])
def test_ten_thousand_ops_in_reasonable_time(values):
    ops = big_history(1, values=[b"v%d" % i for i in range(values)])
    verdict, elapsed = timed_check(ops)
    assert verdict.ok, verdict.explanation
    assert elapsed < SECONDS


def test_ten_thousand_ops_with_a_stale_read_at_the_end():
    ops = big_history(2, values=[b"a", b"b", b"c"])
    end = max(op.complete or op.invoke for op in ops) + 1
    key = b"key-0"
    lost = w(998, b"fresh-b", end + 2, end + 3, key=key)
    bad = r(999, b"fresh-a", end + 4, end + 5, key=key)
    verdict, elapsed = timed_check(ops + [w(998, b"fresh-a", end, end + 1, key=key), lost, bad])
    assert verdict.violation and verdict.key == key
    assert mentions(verdict.explanation, bad) and mentions(verdict.explanation, lost)
    assert elapsed < SECONDS


@pytest.mark.parametrize("values", [20, 3])
def test_ten_thousand_ops_with_flip_flopping_reads_at_the_end(values):
    # No shortcut applies: to rule out every order the search has to visit
    # every configuration of the key's whole history.
    ops = big_history(3, values=[b"v%d" % i for i in range(values)])
    end = max(op.complete or op.invoke for op in ops) + 1
    tail = flip_flop(end, key=b"key-0")
    verdict, elapsed = timed_check(ops + tail)
    assert verdict.violation and verdict.key == b"key-0"
    assert "search" in verdict.explanation
    assert mentions(verdict.explanation, tail[-1])
    assert elapsed < SECONDS


# -- serialisation ----------------------------------------------------------------

_bytes = st.binary(max_size=16)
_times = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)


@st.composite
def any_op(draw):
    outcome = draw(st.sampled_from(["ok", "fail", "unknown"]))
    invoke, complete = sorted(draw(st.lists(_times, min_size=2, max_size=2)))
    if outcome == "unknown" and draw(st.booleans()):
        complete = None
    kind = draw(st.sampled_from(["read", "write", "cas"]))
    return Op(
        process=draw(st.integers(-(2**40), 2**40)),
        kind=kind,
        swapped=kind != "cas" or outcome != "ok" or draw(st.booleans()),
        key=draw(_bytes),
        value=draw(st.none() | _bytes),
        expected=draw(st.none() | _bytes),
        result=draw(st.none() | _bytes),
        invoke=invoke,
        complete=complete,
        outcome=outcome,
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(any_op(), max_size=20))
def test_json_lines_round_trip(ops):
    text = dumps_history(ops)
    assert text.count("\n") == len(ops)
    assert loads_history(text) == ops
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "history.jsonl")
        write_history(path, ops)
        assert read_history(path) == ops


def test_round_trip_preserves_the_verdict(tmp_path):
    ops = big_history(4, values=[b"a", b"b", b"c"])[:2000]
    path = tmp_path / "h.jsonl"
    write_history(path, ops)
    assert read_history(path) == ops
    assert check(read_history(path)) == check(ops)


def test_json_lines_format():
    op = w(3, b"\x00\xff", 1.5, 2.25)
    line = op_to_json(op)
    assert "\n" not in line
    assert '"value":"AP8="' in line and '"key":"aw=="' in line
    assert op_from_json(line) == op
    # Optional fields may be left out; blank lines are skipped.
    assert loads_history('\n{"process":1,"kind":"read","key":"aw==","invoke":0,'
                         '"complete":1,"outcome":"ok"}\n\n') == [r(1, None, 0, 1)]


@pytest.mark.parametrize("line, message", [
    ("not json", "not JSON"),
    ("[1]", "JSON object"),
    ('{"process":1,"kind":"read","key":"aw==","invoke":0,"outcome":"ok"}', "completion"),
    ('{"process":1,"kind":"nap","key":"aw==","invoke":0,"complete":1,"outcome":"ok"}', "kind"),
    ('{"process":1,"kind":"read","key":"!!","invoke":0,"complete":1,"outcome":"ok"}', "base64"),
    ('{"process":1,"kind":"read","key":"aw==","invoke":0,"complete":1,"outcome":"ok","x":1}',
     "unknown fields"),
    ('{"process":1,"kind":"read","key":"aw==","complete":1,"outcome":"ok"}', "missing"),
    ('{"process":"1","kind":"read","key":"aw==","invoke":0,"complete":1,"outcome":"ok"}',
     "process"),
])
def test_malformed_lines_are_rejected_with_their_line_number(line, message):
    with pytest.raises(ValueError, match="line 2") as info:
        loads_history(op_to_json(w(1, b"1", 0, 1)) + "\n" + line + "\n")
    assert message in str(info.value)


def test_cas_swapped_in_json_lines():
    op = ncas(3, b"a", b"b", b"c", 1, 2)
    line = op_to_json(op)
    assert '"swapped":false' in line and op_from_json(line) == op
    assert '"swapped":true' in op_to_json(cas(3, b"a", b"b", 1, 2))
    assert "swapped" not in op_to_json(w(3, b"a", 1, 2))
    # Left out, it means swapped (histories written before it existed).
    assert op_from_json(op_to_json(op).replace(',"swapped":false', "")) == attrs.evolve(op, swapped=True)


def test_op_validation():
    with pytest.raises(ValueError, match="not swapped"):
        Op(process=1, kind="write", key=K, value=b"1", invoke=0, complete=1, outcome="ok", swapped=False)
    with pytest.raises(ValueError, match="not swapped"):
        Op(process=1, kind="cas", key=K, value=b"1", invoke=0, outcome="unknown", swapped=False)
    with pytest.raises(ValueError):
        w(1, b"1", 2, 1)  # completes before it began
    with pytest.raises(ValueError):
        w(1, b"1", 0, None, outcome="ok")  # ok but never completed
    with pytest.raises(ValueError):
        w(1, b"1", math.nan, 1)
    with pytest.raises(ValueError):
        w(1, b"1", 0, 1, outcome="maybe")
    with pytest.raises(TypeError):
        w(1, "text", 0, 1)
