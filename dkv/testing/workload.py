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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from dkv.api.b64 import encode as b64_encode
from dkv.testing.history import Kind, Op, Outcome
from dkv.testing.poll import wait_until

__all__ = ["Request", "Workload", "WorkloadConfig", "history_ops", "key_name"]


def key_name(n: int) -> bytes:
    """The n-th key of the workload's key set."""
    return b"k%d" % n


@attrs.frozen(kw_only=True)
class WorkloadConfig:
    """What the clients do.

    ``clients`` threads; ``keys`` keys (``k0``..); each operation is a read
    with probability ``read_ratio`` (of which a share ``serializable_ratio``
    are serializable reads, kept out of the history), else a delete with
    probability ``delete_ratio``, else a write. ``timeout`` is the socket timeout of one
    request in seconds (it should exceed the nodes' ``--request-timeout``, so
    a node's own 503/504 arrives first); ``host`` is where nodes listen."""

    clients: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    keys: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    read_ratio: float = attrs.field(default=0.5, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)])
    delete_ratio: float = attrs.field(default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)])
    serializable_ratio: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    timeout: float = attrs.field(default=7.0, validator=attrs.validators.gt(0.0))
    host: str = "127.0.0.1"


@attrs.frozen(kw_only=True)
class Request:
    """One operation with how it went on the wire: the node asked, the HTTP
    status (None when no answer came) and the error or answer body, for
    people reading a failing history."""

    op: Op
    node: str
    status: int | None
    detail: str
    #: "serializable" for a local read: not linearizable by contract, so not
    #: part of the history (``Workload.ops``), but its value must still have
    #: been written, by a write that did not fail.
    consistency: str = "linearizable"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "status": self.status, "detail": self.detail}
        if self.consistency != "linearizable":
            out["consistency"] = self.consistency
        return out


def history_ops(requests: Sequence[Request]) -> list[Op]:
    """The history the checker reads: every operation but serializable reads."""
    return [r.op for r in requests if r.consistency == "linearizable"]


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

    def exchange(self, node: str, method: str, path: str, body: Any = None) -> tuple[int | str, Any]:
        """(HTTP status, decoded JSON) or (_SENT_NOTHING | _LOST, error text)."""
        conn = self._connection(node)
        if conn is None:
            return _SENT_NOTHING, "could not connect"
        payload = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if payload is not None else {}
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

    def step(self) -> Request:
        wl = self.workload
        cfg = wl.config
        node = self.rng.choice(wl.nodes)
        key = key_name(self.rng.randrange(cfg.keys))
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
            self.seq += 1
            if self.rng.random() < cfg.delete_ratio:
                value = None
                method, path, body = "DELETE", f"/v0/kv/key/{b64key}", None
            else:
                value = f"c{self.index}-{self.seq}".encode()
                method, path, body = "POST", "/v0/kv", {"key": b64key, "value": b64_encode(value)}
        invoke = wl.clock()
        status, data = self.exchange(node, method, path, body)
        complete = wl.clock()
        outcome, result, detail = classify(kind, status, data)
        op = Op(
            process=self.process,
            kind=kind,
            key=key,
            value=value,
            invoke=invoke,
            complete=complete,  # for unknown: when the client gave up; the checker uses +inf
            outcome=outcome,
            result=result,
        )
        if outcome == "unknown":
            self.process += cfg.clients  # this process stays pending forever
        return Request(
            op=op,
            node=node,
            status=status if isinstance(status, int) else None,
            detail=detail,
            consistency=consistency,
        )


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
    to finish its current operation (at most ``config.timeout`` seconds);
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
        self._lock = threading.Lock()
        self._requests: list[Request] = []
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
                    self._requests.append(req)
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            with self._lock:
                self._errors.append(e)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop every client and wait for it; re-raise a client's crash."""
        self._stop.set()
        for t in self._threads:
            t.join(self.config.timeout + 10.0)
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
    def ops(self) -> list[Op]:
        return history_ops(self.requests)

    @property
    def serializable_reads(self) -> list[tuple[str, Op]]:
        """(node, op) of every serializable read."""
        return [(r.node, r.op) for r in self.requests if r.consistency != "linearizable"]

    def counts(self) -> Counter[tuple[str, str]]:
        """(kind, outcome) -> number of operations of the history so far."""
        return Counter((op.kind, op.outcome) for op in self.ops)

    def wait_for_ok(self, kind: str, n: int, timeout: float) -> None:
        """Poll until at least n operations of kind were ``ok``."""
        wait_until(lambda: self.counts()[(kind, "ok")] >= n, timeout, f"{n} ok {kind}s")
