# test-case-name: tests.test_faults
"""The checks made once a fault run is over and the cluster is healed.

``final_checks`` runs them all and returns one ``CheckResult`` per check:

``leader``          one leader is agreed on again (poll with a deadline).
``applied``         every node's applied index becomes the same (poll).
``converged``       a serializable (local) read of every key gives the same
                    answer on every node.
``acknowledged``    every acknowledged (``ok``) write, or compare-and-swap
                    that swapped, is in the final state, or was overwritten:
                    the final value was written by a write (or cas) that did
                    not fail and that may have taken effect after it (it
                    completed after the ``ok`` write began, or never
                    completed).
``no-phantoms``     every value read anywhere (an ``ok`` read, serializable,
                    linearizable or at a revision, the value an ``ok`` cas
                    found, a final read) was written by some write invoked
                    before the read completed.
``failed-invisible`` no value of a write that ``fail``ed (certainly not
                    applied: 503, 4xx, nothing sent), or of a cas answered
                    as not swapped, is ever read.
``linearizable``    ``dkv.testing.linearizability.check`` of the history;
                    inconclusive (the search ran out of steps) is reported
                    as such, never as a pass.
``hash-kv``         etcd's ``HashKV`` at the nodes' common revision answers
                    the same hash and compact revision on every node: the
                    whole multi-version history is equal, not only the
                    latest values of the workload's keys.
``removed-stop``    (runs whose nemesis removes members) every removed
                    node stopped by itself: ``check_removed_stop``.
``node-logs``       no node logged that its Raft core failed an internal
                    check, that it could not write its store, a critical
                    error or a traceback; and no node exited by itself.
                    Known node bugs (``KNOWN_LOG_BUGS``) fail a check of
                    their own name instead.

Final reads use each node's REST port directly with a fresh connection.
"""

from __future__ import annotations

import http.client
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from dkv.testing.cluster import Cluster
from dkv.testing.history import Op
from dkv.testing.linearizability import Verdict, check
from dkv.testing.poll import Timeout, wait_until
from dkv.testing.rest_client import unb64

if TYPE_CHECKING:
    from dkv.testing.nemesis import FaultEvent

__all__ = [
    "CheckResult",
    "FinalState",
    "check_acknowledged",
    "check_convergence",
    "check_failed_invisible",
    "check_hash_kv",
    "check_linearizable",
    "check_no_phantoms",
    "check_removed_stop",
    "final_checks",
    "hash_kv_result",
    "read_final_state",
    "render_check",
    "scan_logs",
    "show",
    "wait_applied_equal",
]

#: node -> key -> value (None: absent).
FinalState = dict[str, dict[bytes, bytes | None]]


@attrs.frozen(kw_only=True)
class CheckResult:
    """One check: ``ok`` True (passed), False (violated) or None
    (inconclusive), with what a person needs to see in ``detail``."""

    name: str
    ok: bool | None
    detail: str

    @property
    def passed(self) -> bool:
        return self.ok is True

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


#: How a terminal summary marks a check's ``ok``.
_MARK = {True: "PASS", False: "FAIL", None: "????"}


def render_check(c: CheckResult) -> str:
    """One check as a line of a terminal summary (a violation's detail in
    full, indented; a long pass cut short)."""
    detail = c.detail if c.ok is not False else c.detail.replace("\n", "\n        ")
    if c.ok is True and len(detail) > 120:
        detail = detail[:117] + "..."
    return f"  {_MARK[c.ok]} {c.name}: {detail}"


def show(value: bytes | None) -> str:
    """A value (or key) for people: its bytes as Python shows them, or absent."""
    return "absent" if value is None else repr(value)[2:-1]


def _upper(op: Op) -> float:
    """The latest instant op may have taken effect."""
    if op.outcome == "unknown" or op.complete is None:
        return math.inf
    return op.complete


# -- waiting for the healed cluster ---------------------------------------------


def wait_leader(cluster: Cluster, timeout: float = 30.0) -> CheckResult:
    try:
        leader = cluster.leader(timeout=timeout)
    except Timeout as e:
        return CheckResult(name="leader", ok=False, detail=f"no agreed leader after healing: {e}")
    return CheckResult(name="leader", ok=True, detail=f"{leader} leads")


def wait_applied_equal(cluster: Cluster, timeout: float = 30.0) -> CheckResult:
    """Poll until every node answers and all applied indexes are equal (and
    equal to the commit indexes)."""
    last: dict[str, Any] = {}

    def same() -> dict[str, int] | None:
        sts = cluster.statuses(cluster.ids)
        last.clear()
        last.update({i: None if st is None else (st["applied_index"], st["commit_index"]) for i, st in sts.items()})
        if any(st is None for st in sts.values()):
            return None
        indexes = {i: st["applied_index"] for i, st in sts.items() if st is not None}
        commits = {st["commit_index"] for st in sts.values() if st is not None}
        if len(set(indexes.values())) == 1 and commits == set(indexes.values()):
            return indexes
        return None

    try:
        indexes = wait_until(same, timeout, "equal applied indexes")
    except Timeout:
        return CheckResult(
            name="applied", ok=False, detail=f"applied/commit indexes still differ after {timeout}s: {last}"
        )
    return CheckResult(name="applied", ok=True, detail=f"every node applied {next(iter(indexes.values()))}")


def read_final_state(cluster: Cluster, keys: Iterable[bytes]) -> FinalState:
    """Serializable read of every key on every node (raises on an error answer)."""
    state: FinalState = {}
    for i in cluster.ids:
        state[i] = {}
        for key in keys:
            code, body = cluster.get(i, key, "serializable")
            if code == 200:
                state[i][key] = unb64(body["value"])
            elif code == 404 and body.get("code") == 5:
                state[i][key] = None
            else:
                raise AssertionError(f"serializable read of {key!r} on {i}: {code} {body}")
    return state


# -- checks on the history and the final state ----------------------------------------


def check_convergence(state: FinalState) -> CheckResult:
    nodes = sorted(state)
    keys = sorted({k for per in state.values() for k in per})
    diffs = []
    for key in keys:
        answers = {i: state[i].get(key) for i in nodes}
        if len(set(answers.values())) > 1:
            diffs.append(f"{show(key)}: " + ", ".join(f"{i}={show(v)}" for i, v in answers.items()))
    if diffs:
        return CheckResult(name="converged", ok=False, detail="nodes disagree: " + "; ".join(diffs))
    return CheckResult(name="converged", ok=True, detail=f"{len(nodes)} nodes agree on {len(keys)} keys")


def check_acknowledged(ops: Sequence[Op], final: Mapping[bytes, bytes | None]) -> CheckResult:
    """Every ok write (or cas that swapped) w of key k: final[k] is w's
    value, or final[k] was written by a non-failed write (or cas) that may
    have taken effect after w began."""
    writes: dict[bytes, list[Op]] = {}
    for op in ops:
        if op.sets_value and op.outcome != "fail":
            writes.setdefault(op.key, []).append(op)
    lost = []
    acked = 0
    for key, ws in writes.items():
        value = final.get(key)
        # The latest possible effect of a write that leaves `value` behind.
        sources = [w for w in ws if w.value == value]
        latest = max((_upper(w) for w in sources), default=-math.inf)
        for w in ws:
            if w.outcome != "ok":
                continue
            acked += 1
            if w.value == value:
                continue
            if latest > w.invoke:
                continue
            lost.append(
                f"ok {w.kind} {show(w.value)} to {show(key)} (process {w.process}, "
                f"{w.invoke:.3f}-{w.complete:.3f}) is lost: the final value is {show(value)}, "
                + (
                    "which no write or cas that did not fail wrote"
                    if not sources
                    else f"whose writers all completed by {latest:.3f}, before it began"
                )
            )
    if lost:
        return CheckResult(
            name="acknowledged",
            ok=False,
            detail=f"{len(lost)} of {acked} acknowledged writes lost: " + "; ".join(lost[:10]),
        )
    return CheckResult(name="acknowledged", ok=True, detail=f"{acked} acknowledged writes present or overwritten")


#: Reads kept out of the linearizable history (serializable, at a revision): (node, op).
StaleReads = Sequence[tuple[str, Op]]


def _observed(
    ops: Sequence[Op], state: FinalState | None, stale: StaleReads = ()
) -> list[tuple[bytes, bytes, str, float]]:
    """(key, value, where, when it was known) of every present value read:
    ok reads, the values ok cas found, reads kept out of the history
    (serializable, at a revision), final reads (known at +infinity)."""
    seen = [
        (op.key, op.result, f"ok {op.kind} by process {op.process} at {op.invoke:.3f}-{op.complete:.3f}", op.complete)
        for op in ops
        if op.kind in ("read", "cas") and op.outcome == "ok" and op.result is not None
    ]
    seen += [
        (op.key, op.result, f"read outside the history on {node} at {op.invoke:.3f}-{op.complete:.3f}", op.complete)
        for node, op in stale
        if op.kind == "read" and op.outcome == "ok" and op.result is not None
    ]
    for node, per in (state or {}).items():
        seen += [(k, v, f"final read on {node}", math.inf) for k, v in per.items() if v is not None]
    return seen  # type: ignore[return-value]


def check_no_phantoms(ops: Sequence[Op], state: FinalState | None = None, stale: StaleReads = ()) -> CheckResult:
    """Every value read was written by a write (or cas) invoked before the
    read completed (a cas answered as not swapped wrote nothing)."""
    first: dict[tuple[bytes, bytes], float] = {}
    for op in ops:
        if op.sets_value and op.value is not None:
            first[(op.key, op.value)] = min(op.invoke, first.get((op.key, op.value), math.inf))
    bad = []
    for k, v, where, known in _observed(ops, state, stale):
        invoked = first.get((k, v))
        if invoked is None:
            bad.append(f"{show(v)} in {show(k)} ({where}): never written")
        elif invoked > known:
            bad.append(f"{show(v)} in {show(k)} ({where}): its write began later, at {invoked:.3f}")
    if bad:
        return CheckResult(
            name="no-phantoms", ok=False, detail="values nobody had written were read: " + "; ".join(bad[:10])
        )
    return CheckResult(
        name="no-phantoms", ok=True, detail="every value read was written by a write invoked before the read ended"
    )


def check_failed_invisible(ops: Sequence[Op], state: FinalState | None = None, stale: StaleReads = ()) -> CheckResult:
    failed = {
        (op.key, op.value): op
        for op in ops
        if op.kind in ("write", "cas") and (op.outcome == "fail" or not op.swapped) and op.value is not None
    }
    bad = []
    for k, v, where, _ in _observed(ops, state, stale):
        op = failed.get((k, v))
        if op is not None:
            bad.append(
                f"{show(v)} in {show(k)} ({where}) was written by a {op.kind} that "
                + ("failed" if op.outcome == "fail" else "did not swap")
                + f" (process {op.process}, {op.invoke:.3f}-{op.complete:.3f})"
            )
    if bad:
        return CheckResult(
            name="failed-invisible",
            ok=False,
            detail="writes answered as certainly not applied were seen: " + "; ".join(bad[:10]),
        )
    return CheckResult(
        name="failed-invisible", ok=True, detail=f"none of {len(failed)} failed or not swapped writes was ever seen"
    )


def check_linearizable(ops: Sequence[Op], max_steps: int | None = None) -> tuple[CheckResult, Verdict]:
    verdict = check(ops) if max_steps is None else check(ops, max_steps=max_steps)
    if verdict.ok:
        return CheckResult(name="linearizable", ok=True, detail=verdict.explanation), verdict
    if verdict.timed_out:
        return CheckResult(name="linearizable", ok=None, detail="inconclusive: " + verdict.explanation), verdict
    return CheckResult(name="linearizable", ok=False, detail=verdict.explanation), verdict


# -- the multi-version store's hash ---------------------------------------------------

#: node -> (HTTP status, JSON answer), or (None, the error) if none came.
Answers = Mapping[str, tuple[int | None, Any]]


def _header_revision(answer: tuple[int | None, Any]) -> int | None:
    status, body = answer
    if status != 200 or not isinstance(body, dict):
        return None
    try:
        return int(body["header"]["revision"])
    except (KeyError, TypeError, ValueError):
        return None


def _hash_and_compacted(body: Any) -> tuple[int, int] | None:
    """A HashKV answer's (hash, compact revision); None if it has none."""
    try:
        return int(body["hash"]), int(body.get("compact_revision", 0))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def hash_kv_result(statuses: Answers, hashes: Answers) -> CheckResult:
    """``hash-kv`` from every node's ``/v3/maintenance/status`` answer (its
    current revision, which must be the same on every node) and its
    ``/v3/maintenance/hashkv`` answer at that revision (empty if the
    revisions did not agree): the same ``hash`` and ``compact_revision``
    everywhere."""
    revisions = {node: _header_revision(answer) for node, answer in statuses.items()}
    if not revisions or None in revisions.values():
        bad = {node: statuses[node] for node, rev in revisions.items() if rev is None}
        return CheckResult(name="hash-kv", ok=False, detail=f"no revision from every node's status: {bad}")
    if len(set(revisions.values())) > 1:
        return CheckResult(
            name="hash-kv", ok=False, detail=f"the converged nodes are at different revisions: {revisions}"
        )
    revision = next(iter(revisions.values()))
    found: dict[str, tuple[int, int] | None] = {}
    for node in revisions:
        status, body = hashes.get(node, (None, "not asked"))
        found[node] = _hash_and_compacted(body)
        if status != 200 or found[node] is None:
            return CheckResult(
                name="hash-kv", ok=False, detail=f"HashKV at revision {revision} on {node} answered {status} {body}"
            )
    if len(set(found.values())) > 1:
        shown = ", ".join(f"{node}: hash {h[0]} compact_revision {h[1]}" for node, h in found.items() if h)
        return CheckResult(name="hash-kv", ok=False, detail=f"HashKV at revision {revision} differs: {shown}")
    digest, compacted = next(iter(found.values()))  # type: ignore[misc]
    return CheckResult(
        name="hash-kv",
        ok=True,
        detail=f"HashKV at revision {revision} is {digest} (compact_revision {compacted}) on all {len(found)} nodes",
    )


def check_hash_kv(cluster: Cluster, timeout: float = 10.0) -> CheckResult:
    """``hash-kv`` of a converged cluster: ask every node its revision, then
    its HashKV at that revision (``hash_kv_result``).

    A healed cluster may still be moving: a compaction (the auto-compactor's)
    applied on the leader and not yet on a follower gives them different
    compact revisions, across which HashKV's hashes cannot be compared
    (etcd's corruption check skips such pairs), and a lease expiring gives
    them different revisions for a moment. Then the applied indexes are
    waited for to be equal again (``wait_applied_equal``) and the nodes asked
    again, until timeout; the last answers are judged. Equal compact
    revisions with different hashes fail at once."""
    deadline = time.monotonic() + timeout
    while True:
        statuses, hashes = _ask_hash_kv(cluster)
        result = hash_kv_result(statuses, hashes)
        left = deadline - time.monotonic()
        if result.passed or not _still_moving(statuses, hashes) or left <= 0:
            return result
        wait_applied_equal(cluster, left)


def _ask_hash_kv(cluster: Cluster) -> tuple[Answers, Answers]:
    """Every node's status, and its HashKV at their common revision (none
    asked if the revisions differ)."""

    def ask(node: str, path: str, body: dict[str, Any]) -> tuple[int | None, Any]:
        try:
            return cluster.request(node, "POST", path, body)
        except (OSError, http.client.HTTPException) as e:
            return None, repr(e)

    statuses = {node: ask(node, "/v3/maintenance/status", {}) for node in cluster.ids}
    revisions = {_header_revision(answer) for answer in statuses.values()}
    hashes: dict[str, tuple[int | None, Any]] = {}
    if len(revisions) == 1 and None not in revisions:
        revision = revisions.pop()
        hashes = {node: ask(node, "/v3/maintenance/hashkv", {"revision": str(revision)}) for node in cluster.ids}
    return statuses, hashes


def _still_moving(statuses: Answers, hashes: Answers) -> bool:
    """Whether the answers differ in a way a cluster still applying gives:
    different revisions, or different compact revisions."""
    revisions = {_header_revision(answer) for answer in statuses.values()}
    if None not in revisions and len(revisions) > 1:
        return True
    answers = [_hash_and_compacted(body) for status, body in hashes.values() if status == 200]
    return len({answer[1] for answer in answers if answer is not None}) > 1


#: Lines in a node's log that mean something went wrong inside the node.
_BAD_LINE = re.compile(r"Traceback|failed an internal check|cannot write to the store|Unhandled|#critical\]")

#: Node bugs already reported, recognised in the log block (the bad line and
#: the indented traceback after it): check name -> pattern. They fail a check
#: of their own name instead of ``node-logs``, so a run tells a known bug
#: from a new one. Remove an entry once its bug is fixed.
KNOWN_LOG_BUGS: dict[str, re.Pattern[str]] = {
    # A stopping node closes LMDB while the HTTP path still serves a read.
    "closed-store-read": re.compile(r"Attempt to operate on closed/deleted/dropped object"),
}


def scan_logs(
    cluster: Cluster,
    unexpected_exits: Sequence[tuple[str, int | None]] = (),
    known: Mapping[str, re.Pattern[str]] = KNOWN_LOG_BUGS,
) -> list[CheckResult]:
    """``node-logs``: no node exited by itself and no log holds a bad line
    (a failed internal check, a store write failure, a critical error, a
    traceback); plus one failed check per known bug seen (``known``)."""
    problems = [f"{node} exited by itself with status {status}" for node, status in unexpected_exits]
    seen: dict[str, list[str]] = {}
    for i in cluster.ids:
        lines = cluster.node(i).log_text().splitlines()
        n = 0
        while n < len(lines):
            if not _BAD_LINE.search(lines[n]):
                n += 1
                continue
            end = n + 1
            while end < len(lines) and (lines[end][:1] in ("\t", " ") or not lines[end].strip()):
                end += 1
            block = lines[n:end]
            last = next((line.strip() for line in reversed(block) if line.strip()), "")
            summary = f"{i}.log line {n + 1}: {lines[n].strip()[:300]}"
            if last != lines[n].strip():
                summary += f" ... {last[:300]}"
            text = "\n".join(block)
            name = next((k for k, pattern in known.items() if pattern.search(text)), None)
            seen.setdefault(name or "", []).append(summary)
            n = end
    problems += seen.pop("", [])
    results = []
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        results.append(CheckResult(name="node-logs", ok=False, detail=shown))
    else:
        results.append(
            CheckResult(name="node-logs", ok=True, detail="no crash, failed check or traceback in any node's log")
        )
    for name, hits in sorted(seen.items()):
        shown = "; ".join(hits[:3]) + (f"; and {len(hits) - 3} more" if len(hits) > 3 else "")
        results.append(CheckResult(name=name, ok=False, detail=f"known node bug seen again: {shown}"))
    return results


def check_removed_stop(events: Sequence[FaultEvent], anomalies: Sequence[str]) -> CheckResult:
    """``removed-stop``: a node removed from the cluster stops by itself (it
    learns its removal); ``anomalies`` are the nemesis's findings."""
    removals = sum(1 for e in events if e.action == "rejoin")
    if anomalies:
        return CheckResult(name="removed-stop", ok=False, detail="; ".join(anomalies))
    return CheckResult(
        name="removed-stop", ok=True, detail=f"every removed node stopped by itself ({removals} removals)"
    )


def final_checks(
    cluster: Cluster,
    ops: Sequence[Op],
    keys: Iterable[bytes],
    *,
    timeout: float = 30.0,
    unexpected_exits: Sequence[tuple[str, int | None]] = (),
    max_steps: int | None = None,
    stale: StaleReads = (),
) -> tuple[list[CheckResult], Verdict | None, FinalState | None]:
    """Run every check on a healed cluster whose workload has stopped.

    ``ops`` is the history; ``stale`` the reads kept out of it
    (serializable, at a revision), which only the no-phantoms and
    failed-invisible checks use. Returns the results,
    the linearizability verdict and the final state
    (None if the nodes never converged enough to be read)."""
    results = [wait_leader(cluster, timeout), wait_applied_equal(cluster, timeout)]
    state: FinalState | None = None
    try:
        state = read_final_state(cluster, sorted(set(keys)))
    except (AssertionError, OSError, http.client.HTTPException) as e:
        results.append(CheckResult(name="converged", ok=False, detail=f"final reads failed: {e!r}"))
    if state is not None:
        conv = check_convergence(state)
        results.append(conv)
        reference = state[cluster.ids[0]]
        results.append(check_acknowledged(ops, reference))
        if not conv.passed:
            for node in cluster.ids[1:]:
                other = check_acknowledged(ops, state[node])
                if not other.passed:
                    results.append(attrs.evolve(other, detail=f"on {node}: {other.detail}"))
    results.append(check_no_phantoms(ops, state, stale))
    results.append(check_failed_invisible(ops, state, stale))
    lin, verdict = check_linearizable(ops, max_steps)
    results.append(lin)
    results.append(check_hash_kv(cluster))
    results.extend(scan_logs(cluster, unexpected_exits))
    return results, verdict, state
