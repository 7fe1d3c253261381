# test-case-name: tests.test_faults
"""A concurrent read/write workload against a real cluster, recorded as a history.

``Workload`` runs ``clients`` threads. Each plays one client at a time: it
picks a node at random, reads a key (linearizable, the default consistency)
or writes a value that nobody ever wrote before (``c<client>-<seq>``; with
``delete_ratio`` some writes are deletes, a write of "absent"), waits for the
answer, and records one ``dkv.testing.history.Op`` with the invocation and
completion times read from ``time.monotonic()`` and what it learnt:

``ok``
    200 (a read's value, or absent on a 404 ``key not found``).
``fail``
    certainly not applied: the connection could not be opened (refused,
    connect timeout: nothing was sent), any 4xx other than a read's
    ``key not found``, or 503 (``no leader``).
``unknown``
    maybe applied: the connection broke or timed out after the request was
    sent, 504 (``outcome unknown``), any other 5xx, or an answer that is not
    the documented JSON. A client whose request ended ``unknown`` never hears
    back about it, so it carries on as a new process (its ``process`` number
    grows by ``clients``), as in Jepsen: each process has at most one
    operation pending.

A read that is not ``ok`` carries no information; it is recorded with the
same rules and the checker ignores it.

Every write (put, delete, cas) carries a fresh ``Idempotency-Key`` header; a
write whose attempt ended ``unknown`` is sent again, with the same key and the
same body, to another node, up to ``write_attempts`` attempts while
``write_deadline`` seconds have not passed since it was invoked
(``dkv.testing.retries`` says what a retry's answer means). It is recorded
once: invoked at the first attempt, completed at the last answer, with the
final outcome; its ``Request`` says how many attempts it took and whether the
first one ended unknown.

That is the ``kv`` workload, on dkv's own ``/v0`` paths. The ``txn``
workload speaks etcd's JSON gateway (``dkv.testing.gateway``: the requests,
and the outcome rules for etcd's errors) on the same keys and values: a read
is a linearizable ``/v3/kv/range``; a write is, with probability
``cas_ratio``, a compare-and-swap -- a Txn that sets the key to a new value
if it holds what this client last saw there (absent if it never saw it),
recorded as a ``cas`` whose ``ok`` answer says whether it ``swapped`` and
what the key holds -- else a put (or, by ``delete_ratio``, a delete). A share
``revision_read_ratio`` of the reads are reads at a revision some earlier
answer reported (any client's): not linearizable reads of "now", so kept out
of the history like serializable reads, and checked against the revisions
the answers reported (``dkv.testing.revisions``). Now and then
(``compact_ratio`` of the operations) a client compacts the history at a
revision reported a while ago, so old reads answer ``compacted``. Every
answer's ``header.revision``, and the ``mod_revision`` of the value it shows
or the revision a write created, is kept with its ``Request``. The ``mixed``
workload picks ``kv`` or ``txn`` at random for each operation.

Each thread keeps one keep-alive ``http.client`` connection per node. Before
reusing one it checks that the node has not closed it (a killed or restarted
node), so a request is sent on a connection that was alive a moment before
and "connection refused" is reliably "nothing sent".

Choices (node, key, kind) come from one ``random.Random`` per client, seeded
from ``seed``; what happens depends on real timing, so two runs with one seed
make the same choices but not the same history.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import select
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from dkv.api.b64 import encode as b64_encode
from dkv.testing import gateway
from dkv.testing.gateway import Answer, V3Kind
from dkv.testing.history import Kind, Op, Outcome
from dkv.testing.poll import wait_until
from dkv.testing.retries import RetryCounts, retried

__all__ = [
    "WORKLOADS",
    "Compaction",
    "Request",
    "Workload",
    "WorkloadConfig",
    "history_ops",
    "key_name",
    "retry_counts",
]

#: The workloads: dkv's /v0 paths, etcd's gateway with transactions, or both.
WORKLOADS = ("kv", "txn", "mixed")

_ratio = [attrs.validators.ge(0.0), attrs.validators.le(1.0)]


def key_name(n: int) -> bytes:
    """The n-th key of the workload's key set."""
    return b"k%d" % n


@attrs.frozen(kw_only=True)
class WorkloadConfig:
    """What the clients do.

    ``clients`` threads; ``keys`` keys (``k0``..); each operation is a read
    with probability ``read_ratio`` (of which a share ``serializable_ratio``
    are serializable reads, kept out of the history), else a delete with
    probability ``delete_ratio``, else a write. ``workload`` is one of
    ``WORKLOADS`` (the module docstring says what ``txn`` does with
    ``cas_ratio``, ``revision_read_ratio`` and ``compact_ratio``, which only
    its operations use, and how ``write_attempts``, ``write_deadline`` and
    ``retry_pause`` retry writes of unknown outcome). ``timeout`` is the socket timeout of one
    request in seconds (it should exceed the nodes' ``--request-timeout``, so
    a node's own 503/504 arrives first); ``host`` is where nodes listen."""

    clients: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    keys: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    read_ratio: float = attrs.field(default=0.5, validator=_ratio)
    delete_ratio: float = attrs.field(default=0.0, validator=_ratio)
    serializable_ratio: float = attrs.field(default=0.0, validator=_ratio)
    workload: str = attrs.field(default="kv", validator=attrs.validators.in_(WORKLOADS))
    cas_ratio: float = attrs.field(default=0.6, validator=_ratio)
    revision_read_ratio: float = attrs.field(default=0.3, validator=_ratio)
    compact_ratio: float = attrs.field(default=0.0, validator=_ratio)
    timeout: float = attrs.field(default=7.0, validator=attrs.validators.gt(0.0))
    host: str = "127.0.0.1"
    #: Attempts of one write whose outcome stays unknown (1: never retry).
    write_attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    #: No retry of a write starts later than this many seconds after its
    #: first attempt.
    write_deadline: float = attrs.field(default=15.0, validator=attrs.validators.ge(0.0))
    #: Seconds a client waits before a retry (an election may be under way).
    retry_pause: float = attrs.field(default=0.2, validator=attrs.validators.ge(0.0))


@attrs.frozen(kw_only=True)
class Request:
    """One operation with how it went on the wire: the node asked, the HTTP
    status (None when no answer came) and the error or answer body, for
    people reading a failing history."""

    op: Op
    node: str
    status: int | None
    detail: str
    #: "serializable" for a local read, "revision" for a read at a revision
    #: (``at_revision``): not linearizable reads of "now", so not part of
    #: the history (``Workload.ops``), but their values must still have been
    #: written, by a write that did not fail.
    consistency: str = "linearizable"
    #: "v0" (dkv's paths) or "v3" (etcd's gateway).
    api: str = "v0"
    #: The ``header.revision`` of an ok v3 answer.
    revision: int | None = None
    #: The revision a read at a revision asked for.
    at_revision: int | None = None
    #: Of an ok v3 answer: the revision that wrote the value it shows (a
    #: read, a cas), or that this write created (a put, a delete that
    #: deleted the key); None if none or unknown.
    mod_revision: int | None = None
    #: Of a write: how many times it was sent (retries after an unknown
    #: outcome; ``node``, ``status`` and ``detail`` are the last attempt's).
    attempts: int = 1
    #: Of a write: whether its first attempt ended ``unknown``.
    unknown_first: bool = False
    #: Of a retried write: ``node:status`` of each attempt (the status is
    #: ``not-sent`` or ``lost`` when no answer came; ``?`` marks the first
    #: attempt's unknown outcome).
    trail: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "status": self.status, "detail": self.detail}
        if self.attempts != 1 or self.unknown_first:
            out["attempts"] = self.attempts
            out["unknown_first"] = self.unknown_first
            out["trail"] = list(self.trail)
        if self.consistency != "linearizable":
            out["consistency"] = self.consistency
        if self.api != "v0":
            out["api"] = self.api
        for name in ("revision", "at_revision", "mod_revision"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@attrs.frozen(kw_only=True)
class Compaction:
    """One ``POST /v3/kv/compaction`` a client sent (not an operation of the
    history)."""

    node: str
    revision: int
    invoke: float
    complete: float
    outcome: Outcome
    status: int | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "compact": self.revision,
            "invoke": self.invoke,
            "complete": self.complete,
            "outcome": self.outcome,
            "node": self.node,
            "status": self.status,
            "detail": self.detail,
        }


def history_ops(requests: Sequence[Request]) -> list[Op]:
    """The history the checker reads: every operation but serializable reads."""
    return [r.op for r in requests if r.consistency == "linearizable"]


def retry_counts(requests: Sequence[Request]) -> RetryCounts:
    """What the retries of the writes (and cas) among requests achieved."""
    return RetryCounts.of(
        (r.unknown_first, r.op.outcome, r.attempts) for r in requests if r.op.kind in ("write", "cas")
    )


# What one exchange ended as, before it becomes an outcome.
_SENT_NOTHING = "not-sent"
_LOST = "lost"


class _Client:
    """One client thread's connections and choices."""

    def __init__(self, workload: Workload, index: int) -> None:
        self.workload = workload
        self.index = index
        self.process = index
        self.rng = random.Random(f"{workload.seed}/client/{index}")
        self.seq = 0
        self.conns: dict[str, http.client.HTTPConnection] = {}
        #: What this client last saw in each key (what its next cas expects).
        self.last: dict[bytes, bytes | None] = {}

    # -- one exchange ------------------------------------------------------------

    def _connection(self, node: str) -> http.client.HTTPConnection | None:
        """A connected connection to node, or None if one cannot be opened
        (then nothing was sent)."""
        conn = self.conns.get(node)
        if conn is not None and conn.sock is not None:
            try:
                readable, _, _ = select.select([conn.sock], [], [], 0)
            except (OSError, ValueError):
                readable = [conn.sock]
            if not readable:
                return conn
            # The node closed it (or sent something unasked): start afresh.
        if conn is not None:
            conn.close()
            self.conns.pop(node, None)
        cfg = self.workload.config
        conn = http.client.HTTPConnection(cfg.host, self.workload.ports[node], timeout=cfg.timeout)
        try:
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            conn.close()
            return None
        self.conns[node] = conn
        return conn

    def exchange(
        self, node: str, method: str, path: str, body: Any = None, idempotency_key: str | None = None
    ) -> tuple[int | str, Any]:
        """(HTTP status, decoded JSON) or (_SENT_NOTHING | _LOST, error text)."""
        conn = self._connection(node)
        if conn is None:
            return _SENT_NOTHING, "could not connect"
        payload = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if payload is not None else {}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            self.conns.pop(node, None)
            return _LOST, f"{type(e).__name__}: {e}"
        if resp.will_close:
            conn.close()
            self.conns.pop(node, None)
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"raw": raw[:200].decode("utf-8", "replace")}
        return resp.status, data

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()

    # -- one operation -----------------------------------------------------------

    def step(self) -> Request | Compaction:
        wl = self.workload
        cfg = wl.config
        node = self.rng.choice(wl.nodes)
        key = key_name(self.rng.randrange(cfg.keys))
        if cfg.workload == "txn" or (cfg.workload == "mixed" and self.rng.random() < 0.5):
            return self._v3_step(node, key)
        return self._v0_step(node, key)

    def _new_value(self) -> bytes:
        self.seq += 1
        return f"c{self.index}-{self.seq}".encode()

    def _write(
        self,
        node: str,
        method: str,
        path: str,
        body: Any,
        answer_of: Callable[[int | str, Any], Answer],
    ) -> tuple[str, int | str, Answer, tuple[str, ...]]:
        """Send one write with a fresh idempotency key, retried while its
        outcome is unknown (see the module docstring): (the last node asked,
        its status, the write's answer, ``node:status`` of every attempt,
        the first's status marked ``?`` if it ended unknown)."""
        wl = self.workload
        cfg = wl.config
        key = f"{wl.run_id}-c{self.index}-{self.seq}"
        deadline = wl.clock() + cfg.write_deadline
        status, data = self.exchange(node, method, path, body, key)
        answer = answer_of(status, data)
        trail = [f"{node}:{status}" + ("?" if answer.outcome == "unknown" else "")]
        unreachable: set[str] = set()
        while answer.outcome == "unknown" and len(trail) < cfg.write_attempts and wl.clock() < deadline:
            if status in (_SENT_NOTHING, _LOST):
                unreachable.add(node)
            if cfg.retry_pause:
                time.sleep(cfg.retry_pause)  # schedule: a client's back-off, not a wait for state
            node = self._another_node(node, unreachable)
            status, data = self.exchange(node, method, path, body, key)
            answer = retried(answer_of(status, data), status)
            trail.append(f"{node}:{status}")
        return node, status, answer, tuple(trail)

    def _another_node(self, node: str, unreachable: set[str]) -> str:
        """Where a retry goes: a node other than the one asked last and than
        those this write could not reach, if there is one; else any other
        node (that one, if it is the only node)."""
        others = [n for n in self.workload.nodes if n != node]
        reachable = [n for n in others if n not in unreachable]
        pool = reachable or others
        return self.rng.choice(pool) if pool else node

    def _v0_step(self, node: str, key: bytes) -> Request:
        wl = self.workload
        cfg = wl.config
        b64key = b64_encode(key)
        roll = self.rng.random()
        consistency = "linearizable"
        kind: Kind
        if roll < cfg.read_ratio:
            kind = "read"
            value = None
            method, path, body = "GET", f"/v0/kv/key/{b64key}", None
            if self.rng.random() < cfg.serializable_ratio:
                consistency = "serializable"
                path += "?consistency=serializable"
        else:
            kind = "write"
            value = self._new_value()
            if self.rng.random() < cfg.delete_ratio:
                value = None
                method, path, body = "DELETE", f"/v0/kv/key/{b64key}", None
            else:
                method, path, body = "POST", "/v0/kv", {"key": b64key, "value": b64_encode(value)}
        invoke = wl.clock()
        trail: tuple[str, ...] = ()
        if kind == "read":
            status, data = self.exchange(node, method, path, body)
            answer = _v0_answer(kind, status, data)
        else:
            node, status, answer, trail = self._write(
                node, method, path, body, lambda st, d: _v0_answer("write", st, d)
            )
        complete = wl.clock()
        return self._record(
            node, kind, key, value, None, invoke, complete, status, answer, consistency, "v0", trail=trail
        )

    def _v3_step(self, node: str, key: bytes) -> Request | Compaction:
        wl = self.workload
        cfg = wl.config
        rng = self.rng
        if cfg.compact_ratio and rng.random() < cfg.compact_ratio:
            target = wl.compaction_target()
            if target is not None:
                return self._compact(node, target)
        consistency = "linearizable"
        at: int | None = None
        expected = value = None
        kind: Kind
        v3: V3Kind
        if rng.random() < cfg.read_ratio:
            kind = v3 = "read"
            path = "/v3/kv/range"
            if rng.random() < cfg.revision_read_ratio:
                at = wl.revision_to_read(rng)
            if at is not None:
                consistency = "revision"
            elif rng.random() < cfg.serializable_ratio:
                consistency = "serializable"
            body = gateway.range_body(key, at, consistency == "serializable")
        elif rng.random() < cfg.cas_ratio:
            kind = v3 = "cas"
            expected = self.last.get(key)
            value = self._new_value()
            path, body = "/v3/kv/txn", gateway.cas_body(key, expected, value)
        else:
            kind = "write"
            value = self._new_value()
            if rng.random() < cfg.delete_ratio:
                value = None
                v3, path, body = "delete", "/v3/kv/deleterange", gateway.delete_body(key)
            else:
                v3, path, body = "put", "/v3/kv/put", gateway.put_body(key, value)
        invoke = wl.clock()
        trail: tuple[str, ...] = ()
        if kind == "read":
            status, data = self.exchange(node, "POST", path, body)
            answer = _v3_answer(v3, key, status, data)
        else:
            node, status, answer, trail = self._write(
                node, "POST", path, body, lambda st, d: _v3_answer(v3, key, st, d)
            )
        complete = wl.clock()
        if answer.outcome == "ok" and answer.revision is not None:
            wl.reported(answer.revision)
        return self._record(
            node, kind, key, value, expected, invoke, complete, status, answer, consistency, "v3", at, trail=trail
        )

    def _compact(self, node: str, revision: int) -> Compaction:
        wl = self.workload
        invoke = wl.clock()
        status, data = self.exchange(node, "POST", "/v3/kv/compaction", gateway.compact_body(revision))
        complete = wl.clock()
        answer = _v3_answer("compact", b"", status, data)
        return Compaction(
            node=node,
            revision=revision,
            invoke=invoke,
            complete=complete,
            outcome=answer.outcome,
            status=status if isinstance(status, int) else None,
            detail=answer.detail,
        )

    def _record(
        self,
        node: str,
        kind: Kind,
        key: bytes,
        value: bytes | None,
        expected: bytes | None,
        invoke: float,
        complete: float,
        status: int | str,
        answer: Answer,
        consistency: str,
        api: str,
        at: int | None = None,
        *,
        trail: tuple[str, ...] = (),
    ) -> Request:
        """The Request of one exchange; what it taught this client."""
        ok = answer.outcome == "ok"
        op = Op(
            process=self.process,
            kind=kind,
            key=key,
            value=value,
            expected=expected,
            invoke=invoke,
            complete=complete,  # for unknown: when the client gave up; the checker uses +inf
            outcome=answer.outcome,
            result=answer.result if ok and kind != "write" else None,
            swapped=answer.swapped if ok and kind == "cas" else True,
        )
        if answer.outcome == "unknown":
            self.process += self.workload.config.clients  # this process stays pending forever
        elif ok and consistency != "revision":
            self.last[key] = value if kind == "write" else answer.result
        return Request(
            op=op,
            node=node,
            status=status if isinstance(status, int) else None,
            detail=answer.detail,
            consistency=consistency,
            api=api,
            revision=answer.revision if ok else None,
            at_revision=at,
            mod_revision=answer.mod_revision if ok else None,
            attempts=max(1, len(trail)),
            unknown_first=bool(trail) and trail[0].endswith("?"),
            trail=trail if len(trail) > 1 else (),
        )


def _v0_answer(kind: str, status: int | str, data: Any) -> Answer:
    """The Answer of an exchange on /v0, by ``classify``."""
    outcome, result, detail = classify(kind, status, data)
    return Answer(outcome=outcome, result=result, detail=detail)


def _v3_answer(kind: V3Kind, key: bytes, status: int | str, data: Any) -> Answer:
    """The Answer of an exchange on the gateway: nothing sent and a lost
    answer as for /v0 (``classify``), the rest by ``gateway.classify``."""
    if status == _SENT_NOTHING:
        return Answer(outcome="fail", detail=str(data))
    if status == _LOST:
        return Answer(outcome="unknown", detail=str(data))
    assert isinstance(status, int)
    return gateway.classify(kind, key, status, data)


def classify(kind: str, status: int | str, data: Any) -> tuple[Outcome, bytes | None, str]:
    """(outcome, read result, detail) of one exchange, by the rules in the module docstring."""
    if status == _SENT_NOTHING:
        return "fail", None, str(data)
    if status == _LOST:
        return "unknown", None, str(data)
    assert isinstance(status, int)
    detail = json.dumps(data, separators=(",", ":"))[:200] if status != 200 else ""
    if status == 200:
        if kind == "read":
            try:
                return "ok", base64.b64decode(data["value"], validate=True), ""
            except (KeyError, TypeError, ValueError):
                return "unknown", None, f"malformed 200 answer {detail}"
        return "ok", None, ""
    if kind == "read" and status == 404 and isinstance(data, dict) and data.get("code") == 5:
        return "ok", None, "key not found"
    if 400 <= status < 500 or status == 503:
        return "fail", None, detail
    return "unknown", None, detail


class Workload:
    """Clients in threads against the nodes at ``ports`` (node id -> REST port).

    ``start()`` starts them; ``stop()`` asks them to stop and waits for each
    to finish its current operation (at most ``config.timeout`` seconds, or
    the write deadline and a last attempt for a write being retried);
    ``ops`` and ``requests`` are the records so far, in completion order.
    Safe to read from other threads while running."""

    def __init__(
        self,
        ports: Mapping[str, int],
        config: WorkloadConfig = WorkloadConfig(),
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ports = dict(ports)
        self.nodes: Sequence[str] = sorted(self.ports)
        self.config = config
        self.seed = seed
        self.clock = clock
        #: Prefix of this run's idempotency keys (unique per Workload, so two
        #: runs against one cluster never share a key).
        self.run_id = uuid.uuid4().hex[:12]
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._compactions: list[Compaction] = []
        #: Every header.revision an ok answer reported, in arrival order.
        self._revisions: list[int] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    @property
    def keys(self) -> list[bytes]:
        return [key_name(n) for n in range(self.config.keys)]

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("the workload was already started")
        for n in range(self.config.clients):
            t = threading.Thread(target=self._run, args=(_Client(self, n),), name=f"dkv-client-{n}", daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self, client: _Client) -> None:
        try:
            while not self._stop.is_set():
                req = client.step()
                with self._lock:
                    if isinstance(req, Compaction):
                        self._compactions.append(req)
                    else:
                        self._requests.append(req)
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            with self._lock:
                self._errors.append(e)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop every client and wait for it (a write being retried finishes
        its retries); re-raise a client's crash."""
        self._stop.set()
        cfg = self.config
        # A write may start its last attempt just before its deadline.
        longest = cfg.timeout + (cfg.write_deadline + cfg.retry_pause if cfg.write_attempts > 1 else 0.0)
        for t in self._threads:
            t.join(longest + 10.0)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"clients did not stop: {alive}")
        if self._errors:
            raise RuntimeError(f"a client crashed: {self._errors[0]!r}") from self._errors[0]

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    @property
    def compactions(self) -> list[Compaction]:
        with self._lock:
            return list(self._compactions)

    def reported(self, revision: int) -> None:
        """An answer reported this revision: later reads may ask for it."""
        with self._lock:
            self._revisions.append(revision)

    def revision_to_read(self, rng: random.Random) -> int | None:
        """A revision some answer reported (None before any did): half the
        time one of the last hundred, else any."""
        with self._lock:
            pool = self._revisions
            if not pool:
                return None
            if rng.random() < 0.5:
                return rng.choice(pool[-100:])
            return rng.choice(pool)

    def compaction_target(self) -> int | None:
        """Where to compact: the revision reported halfway through the run so
        far (None before any answer reported one)."""
        with self._lock:
            return self._revisions[len(self._revisions) // 2] if self._revisions else None

    @property
    def ops(self) -> list[Op]:
        return history_ops(self.requests)

    @property
    def side_reads(self) -> list[tuple[str, Op]]:
        """(node, op) of every read kept out of the history (serializable, or
        at a revision)."""
        return [(r.node, r.op) for r in self.requests if r.consistency != "linearizable"]

    def counts(self) -> Counter[tuple[str, str]]:
        """(kind, outcome) -> number of operations of the history so far."""
        return Counter((op.kind, op.outcome) for op in self.ops)

    def wait_for_ok(self, kind: str, n: int, timeout: float) -> None:
        """Poll until at least n operations of kind were ``ok``."""
        wait_until(lambda: self.counts()[(kind, "ok")] >= n, timeout, f"{n} ok {kind}s")
