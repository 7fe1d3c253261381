# test-case-name: tests.test_fault_retries
"""The ``applied-once`` check: no write was applied twice.

Every value the workload writes is new (``c<client>-<seq>``), and a write
that a client retried carries one idempotency key on all its attempts. If
the store applied a write twice, the key's multi-version history would hold
its value at two revisions. So the check reads the whole history the store
keeps -- a watch of every key from revision 1 on etcd's JSON gateway
(``POST /v3/watch``, ``start_revision``), which replays each revision's
events; if the history was compacted (the ``txn`` workload compacts now and
then) the watch is cancelled with ``compact_revision`` and read again from
there, so revisions below it are not seen -- and finds:

* a value put at two revisions or more: applied twice;
* a value of a write answered ``fail`` (certainly not applied), or of a
  cas answered as not swapped: applied though it should not have been;
* more delete events of a key than deletes of it that did not fail (a
  delete carries no value, so only their number can be checked; a delete
  of an absent key makes no event).

Values written by no client of the history are left to ``no-phantoms``;
keys no operation of the history touches (another workload's, such as the
soak's lease keys) are not judged.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from dkv.api.b64 import encode as b64_encode
from dkv.testing.checks import CheckResult, show
from dkv.testing.cluster import Cluster
from dkv.testing.history import Op
from dkv.testing.poll import Timeout

__all__ = [
    "HistoryReadError",
    "StoreEvent",
    "StoreHistory",
    "applied_once",
    "check_applied_once",
    "read_store_history",
]


@attrs.frozen
class StoreEvent:
    """Revision ``revision`` put ``value`` in ``key`` (None: deleted it)."""

    revision: int
    key: bytes
    value: bytes | None


@attrs.frozen(kw_only=True)
class StoreHistory:
    """The events of every revision after ``compact_revision`` (0: none
    compacted; the revisions from there on are kept) up to ``revision``."""

    events: list[StoreEvent]
    revision: int
    compact_revision: int = 0


class HistoryReadError(Exception):
    """The store's history could not be read whole."""


def _watch_all(start: int) -> dict[str, Any]:
    every = b64_encode(b"\0")
    return {"create_request": {"key": every, "range_end": every, "start_revision": str(start)}}


def _events_of(result: Any) -> list[StoreEvent]:
    out = []
    for ev in result.get("events") or []:
        kv = ev["kv"]
        value = None if ev.get("type") == "DELETE" else base64.b64decode(kv.get("value", ""))
        out.append(StoreEvent(int(kv["mod_revision"]), base64.b64decode(kv["key"]), value))
    return out


def read_store_history(port: int, revision: int, host: str = "127.0.0.1", timeout: float = 30.0) -> StoreHistory:
    """Every event up to ``revision`` (the store's current revision, with no
    writes coming any more) that the node on ``port`` keeps, by watching
    every key from revision 1 on its JSON gateway (from the compacted
    revision if it refuses 1). Raises ``HistoryReadError`` if the answers
    stop short of ``revision`` for ``timeout`` seconds or are malformed."""
    start, compacted = 1, 0
    deadline = time.monotonic() + timeout
    while True:
        events: list[StoreEvent] = []
        if revision < start:
            return StoreHistory(events=events, revision=revision, compact_revision=compacted)
        conn = http.client.HTTPConnection(host, port, timeout=max(0.1, deadline - time.monotonic()))
        try:
            conn.request(
                "POST", "/v3/watch", json.dumps(_watch_all(start)).encode(), {"content-type": "application/json"}
            )
            resp = conn.getresponse()
            if resp.status != 200:
                raise HistoryReadError(f"POST /v3/watch answered {resp.status}: {resp.read()[:200]!r}")
            restart = None
            while restart is None:
                line = resp.readline()
                if not line:
                    raise HistoryReadError(f"the watch ended at revision {events[-1].revision if events else 0}")
                if not line.strip():
                    continue
                result = json.loads(line).get("result") or {}
                if result.get("canceled"):
                    found = int(result.get("compact_revision") or 0)
                    if found <= start:
                        raise HistoryReadError(f"the watch was cancelled: {line[:200]!r}")
                    restart = found
                    break
                events += _events_of(result)
                if events and events[-1].revision >= revision:
                    return StoreHistory(
                        events=[e for e in events if e.revision <= revision],
                        revision=revision,
                        compact_revision=compacted,
                    )
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as e:
            raise HistoryReadError(f"reading the history from revision {start}: {e!r}") from e
        finally:
            conn.close()
        # Revisions below `restart` are compacted: the history kept starts there.
        start, compacted = restart, restart - 1


def check_applied_once(
    ops: Sequence[Op], history: StoreHistory, retried: Iterable[tuple[bytes, bytes | None]] = ()
) -> CheckResult:
    """``applied-once`` of the history ``ops`` against the store's history
    (the rules are in the module docstring). ``retried``: (key, value) of
    the writes that were sent more than once, to say how many of them the
    check saw."""
    revisions: dict[tuple[bytes, bytes], list[int]] = {}
    deletes: Counter[bytes] = Counter()
    keys = {op.key for op in ops}
    for ev in history.events:
        if ev.key not in keys:
            continue  # another workload's key (the soak's leases): not this history's to judge
        if ev.value is None:
            deletes[ev.key] += 1
        else:
            revisions.setdefault((ev.key, ev.value), []).append(ev.revision)
    not_applied = {
        (op.key, op.value): op
        for op in ops
        if op.kind in ("write", "cas") and op.value is not None and (op.outcome == "fail" or not op.swapped)
    }
    deletes_sent = Counter(op.key for op in ops if op.kind == "write" and op.value is None and op.outcome != "fail")
    bad = []
    for (key, value), revs in sorted(revisions.items()):
        if len(revs) > 1:
            bad.append(f"{show(value)} of {show(key)} was applied {len(revs)} times, at revisions {sorted(revs)}")
        op = not_applied.get((key, value))
        if op is not None:
            said = "failed" if op.outcome == "fail" else "did not swap"
            bad.append(
                f"{show(value)} of {show(key)} is at revision {revs[0]} though its {op.kind} {said} "
                f"(process {op.process}, {op.invoke:.3f}-{op.complete:.3f})"
            )
    for key, n in sorted(deletes.items()):
        if n > deletes_sent[key]:
            bad.append(f"{show(key)} was deleted {n} times, by {deletes_sent[key]} deletes that did not fail")
    window = f"revisions {history.compact_revision + 1}..{history.revision}"
    if history.compact_revision:
        window += f" (compacted below {history.compact_revision + 1})"
    if bad:
        return CheckResult(
            name="applied-once",
            ok=False,
            detail=f"{len(bad)} writes applied more often than answered, in {window}: " + "; ".join(bad[:10]),
        )
    retried_seen = sum(1 for kv in set(retried) if kv in revisions)
    return CheckResult(
        name="applied-once",
        ok=True,
        detail=f"{len(revisions)} values each at one revision, {sum(deletes.values())} deletions by "
        f"{sum(deletes_sent.values())} deletes, no failed write, {window}; {retried_seen} by retried writes",
    )


def applied_once(
    cluster: Cluster, ops: Sequence[Op], retried: Iterable[tuple[bytes, bytes | None]] = (), timeout: float = 30.0
) -> CheckResult:
    """``applied-once`` on a healed cluster whose workload has stopped: the
    leader's history up to its current revision (``read_store_history``),
    checked by ``check_applied_once``. Inconclusive (``ok`` None) if the
    history cannot be read."""
    try:
        node = cluster.leader(timeout=timeout)
        status, body = cluster.request(node, "POST", "/v3/maintenance/status", {})
        if status != 200:
            raise HistoryReadError(f"status on {node} answered {status} {body}")
        revision = int(body["header"]["revision"])
        history = read_store_history(cluster.rest_ports[node], revision, timeout=timeout)
    except (HistoryReadError, Timeout, OSError, http.client.HTTPException, KeyError, TypeError, ValueError) as e:
        return CheckResult(name="applied-once", ok=None, detail=f"inconclusive: the store's history was not read: {e}")
    return check_applied_once(ops, history, retried)
