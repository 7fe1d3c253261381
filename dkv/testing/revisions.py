# test-case-name: tests.test_fault_checks
"""Checks of the revisions etcd's answers report (the ``txn`` workload).

Every write transaction makes one revision, and each of the workload's
writes touches one key, so a revision names one write: one key and the value
it left (``None``: a delete). The answers say a lot about that map:

* an ok put, or cas that swapped, created ``header.revision`` (a delete, if
  it deleted the key);
* an answer showing a key's value (a range, a cas's range) shows the
  ``mod_revision`` that wrote it: known even when the write itself ended
  ``unknown`` or went through ``/v0`` (whose answers carry no revision);
* and it shows the value the key had *at* a revision: the one a read at a
  revision asked for, or the ``header.revision`` of the answer (the store's
  revision when it was read: a linearizable or a serializable range, a cas).

These statements, all of them, are **facts** (revision -> key, value) and
**observations** (key had value, written at mod_revision, at revision R).
Two checks:

``revisions``
    the facts agree: no revision named for two writes, no value (each is
    written once) at two revisions; and revisions follow real time: an
    answer to a linearizable request (a read, a read at a revision, a write,
    a cas) that completed before another was invoked reported a revision no
    greater than that one's, and smaller if that one created a revision.
    Serializable reads are local, so not ordered. A read at a revision an
    earlier answer reported must not be refused as a future revision.
``read-at-revision``
    every observation shows what the facts say the key held at R: its
    ``mod_revision`` is at most R and no known write of the key lies in
    (mod_revision, R]; an absent key's latest known write at or before R is
    a delete, or there is none. What is *certain* is only what the facts
    say: revisions no answer named (writes of unknown outcome, /v0 writes,
    deletes whose revision went unreported) are gaps. A key shown absent at
    R when its last known write before R was a put is a violation only if no
    gap between them can be a delete of the key, that is, if there is no
    gap or no delete of it (that did not fail) whose revision is unknown;
    otherwise it counts as uncertain, never as a pass or a failure.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import attrs

from dkv.testing.checks import CheckResult, show
from dkv.testing.gateway import FUTURE_REVISION
from dkv.testing.workload import Request

__all__ = ["Fact", "Observation", "check_read_at_revision", "check_revision_order", "facts_and_observations"]


@attrs.frozen
class Fact:
    """Revision ``revision`` wrote ``value`` (None: deleted) to ``key``;
    ``source`` says which answer said so."""

    revision: int
    key: bytes
    value: bytes | None
    source: str


@attrs.frozen
class Observation:
    """An answer showed ``key`` holding ``value`` (None: absent), written at
    ``mod_revision``, at revision ``at``."""

    key: bytes
    value: bytes | None
    mod_revision: int | None
    at: int
    source: str
    at_revision: bool


def _where(r: Request) -> str:
    op = r.op
    what = {"read": "read", "write": "write" if op.value is not None else "delete", "cas": "cas"}[op.kind]
    if r.consistency == "revision":
        what = f"read at revision {r.at_revision}"
    elif r.consistency == "serializable":
        what = "serializable read"
    return f"{what} of {show(op.key)} on {r.node} by process {op.process} at {op.invoke:.3f}-{op.complete:.3f}"


def facts_and_observations(requests: Sequence[Request]) -> tuple[list[Fact], list[Observation]]:
    """What the ok v3 answers of ``requests`` state (see the module docstring)."""
    facts: list[Fact] = []
    seen: list[Observation] = []
    for r in requests:
        op = r.op
        if r.api != "v3" or op.outcome != "ok" or r.revision is None:
            continue
        where = _where(r)
        if op.kind == "write":
            if r.mod_revision is not None:
                facts.append(Fact(r.mod_revision, op.key, op.value, f"the answer to the {where}"))
            continue
        if op.kind == "cas" and op.swapped:
            facts.append(Fact(r.revision, op.key, op.value, f"the answer to the {where}"))
        if op.result is not None and r.mod_revision is not None:
            facts.append(Fact(r.mod_revision, op.key, op.result, f"the mod_revision the {where} showed"))
        at = r.at_revision if r.consistency == "revision" and r.at_revision is not None else r.revision
        seen.append(Observation(op.key, op.result, r.mod_revision, at, where, r.consistency == "revision"))
    return facts, seen


def _fact_conflicts(facts: Sequence[Fact]) -> list[str]:
    by_revision: dict[int, Fact] = {}
    by_value: dict[tuple[bytes, bytes], Fact] = {}
    bad = []
    for f in facts:
        other = by_revision.setdefault(f.revision, f)
        if (other.key, other.value) != (f.key, f.value):
            bad.append(
                f"revision {f.revision} wrote {show(other.value)} to {show(other.key)} by {other.source}, "
                f"but {show(f.value)} to {show(f.key)} by {f.source}"
            )
        if f.value is not None:
            first = by_value.setdefault((f.key, f.value), f)
            if first.revision != f.revision:
                bad.append(
                    f"{show(f.value)} (written once) in {show(f.key)} was written at revision {first.revision} "
                    f"by {first.source}, but at {f.revision} by {f.source}"
                )
    return bad


def _order_violations(requests: Sequence[Request]) -> list[str]:
    """Linearizable answers whose revisions go back in real time."""
    ordered = [
        r
        for r in requests
        if r.api == "v3" and r.op.outcome == "ok" and r.revision is not None and r.consistency != "serializable"
    ]
    by_complete = sorted(ordered, key=lambda r: r.op.complete or math.inf)
    completes = [r.op.complete or math.inf for r in by_complete]
    # Prefix maxima of the revisions, in completion order.
    best: list[Request] = []
    for r in by_complete:
        best.append(r if not best or r.revision > best[-1].revision else best[-1])  # type: ignore[operator]
    bad = []
    for r in ordered:
        k = bisect.bisect_left(completes, r.op.invoke)
        if not k:
            continue
        before = best[k - 1]
        assert before.revision is not None and r.revision is not None
        creates = (r.op.kind == "write" and r.mod_revision is not None) or (r.op.kind == "cas" and r.op.swapped)
        if r.revision < before.revision or (creates and r.revision == before.revision):
            bad.append(
                f"the {_where(r)} reported revision {r.revision}, but the {_where(before)}, which completed "
                f"before it began, had reported {before.revision}"
            )
    return bad


def check_revision_order(requests: Sequence[Request]) -> CheckResult:
    """``revisions``: the facts agree, and revisions follow real time."""
    facts, _ = facts_and_observations(requests)
    bad = _fact_conflicts(facts) + _order_violations(requests)
    future = [
        r for r in requests if r.consistency == "revision" and r.op.outcome == "fail" and FUTURE_REVISION in r.detail
    ]
    bad += [f"the {_where(r)}, a revision an earlier answer reported, was refused as a future revision" for r in future]
    if bad:
        more = f"; and {len(bad) - 10} more" if len(bad) > 10 else ""
        return CheckResult(name="revisions", ok=False, detail="; ".join(bad[:10]) + more)
    revisions = {f.revision for f in facts}
    ordered = sum(1 for r in requests if r.api == "v3" and r.op.outcome == "ok" and r.consistency != "serializable")
    return CheckResult(
        name="revisions",
        ok=True,
        detail=f"{len(revisions)} revisions named by {len(facts)} statements agree; "
        f"{ordered} linearizable answers report revisions in real-time order",
    )


def check_read_at_revision(requests: Sequence[Request]) -> CheckResult:
    """``read-at-revision``: every value shown at a revision is the one the
    facts say the key held then (see the module docstring)."""
    facts, seen = facts_and_observations(requests)
    # The first statement about a revision wins; conflicts are for ``revisions``.
    by_revision: dict[int, Fact] = {}
    for f in facts:
        by_revision.setdefault(f.revision, f)
    per_key: dict[bytes, list[Fact]] = {}
    for f in sorted(by_revision.values(), key=lambda f: f.revision):
        per_key.setdefault(f.key, []).append(f)
    key_revisions = {key: [f.revision for f in writes] for key, writes in per_key.items()}
    known = sorted(by_revision)
    # Keys some delete that did not fail may have deleted at an unknown revision.
    deletable = {
        r.op.key
        for r in requests
        if r.op.kind == "write"
        and r.op.value is None
        and r.op.outcome != "fail"
        and not (r.op.outcome == "ok" and r.api == "v3")
    }
    bad: list[str] = []
    certain = {True: 0, False: 0}
    uncertain = 0
    for o in seen:
        writes = per_key.get(o.key, [])
        k = bisect.bisect_right(key_revisions.get(o.key, []), o.at)
        latest = writes[k - 1] if k else None
        if o.value is not None:
            assert o.mod_revision is not None
            if o.mod_revision > o.at:
                bad.append(
                    f"the {o.source} showed {show(o.value)} at revision {o.at}, written later, at {o.mod_revision}"
                )
            elif latest is not None and latest.revision > o.mod_revision:
                bad.append(
                    f"the {o.source} showed {show(o.value)} (written at {o.mod_revision}) at revision {o.at}, "
                    f"but revision {latest.revision} had written {show(latest.value)} there ({latest.source})"
                )
            elif latest is not None and latest.revision == o.mod_revision and latest.value != o.value:
                bad.append(
                    f"the {o.source} showed {show(o.value)} as written at {o.mod_revision}, "
                    f"which wrote {show(latest.value)} ({latest.source})"
                )
            else:
                certain[o.at_revision] += 1
            continue
        if latest is None or latest.value is None:
            certain[o.at_revision] += 1
            continue
        gaps = (o.at - latest.revision) - (
            bisect.bisect_right(known, o.at) - bisect.bisect_right(known, latest.revision)
        )
        if gaps > 0 and o.key in deletable:
            uncertain += 1
            continue
        bad.append(
            f"the {o.source} showed {show(o.key)} absent at revision {o.at}, but revision {latest.revision} had "
            f"written {show(latest.value)} there ({latest.source}) and "
            + (
                f"no delete of it could have come in the {gaps} unnamed revisions since"
                if gaps
                else "every revision since is another key's"
            )
        )
    if bad:
        more = f"; and {len(bad) - 10} more" if len(bad) > 10 else ""
        return CheckResult(name="read-at-revision", ok=False, detail="; ".join(bad[:10]) + more)
    return CheckResult(
        name="read-at-revision",
        ok=True,
        detail=f"{certain[True]} reads at a revision and {certain[False]} other answers show what the "
        f"{len(by_revision)} known revisions say the key held then"
        + (f"; {uncertain} absent keys could be unknown deletes (uncertain)" if uncertain else ""),
    )
