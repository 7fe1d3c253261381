# test-case-name: tests.test_lock_check,tests.test_lock_faults
"""A lock workload: several clients take turns holding one lease-bound lock.

Each client thread plays etcd's lock recipe on the JSON gateway, polling
instead of watching (the recipe's order is the same; only how a waiter
learns its turn differs):

1. grant a lease (``/v3/lease/grant``, TTL ``ttl``) and keep it alive from a
   second thread (``/v3/lease/keepalive`` every ``ttl / 4`` seconds, to any
   node), remembering the send time of every request answered "alive";
2. create its own key under the lock's prefix, attached to the lease: a
   Txn ``create_revision(key) == 0 -> put key lease`` (safe to resend after
   an unknown outcome: the compare makes a second one a no-op);
3. range the prefix (linearizable) every ``poll`` seconds until its key has
   the lowest create revision: it holds the lock from that answer on. If its
   key is gone (the lease expired) or its lease may have lapsed (no renewal
   answered within ``ttl`` of the previous one's sending), it gives up and
   starts again with a new lease;
4. hold for a random time in ``hold``, then release: delete the key and
   revoke the lease (best effort: the lease's expiry cleans up otherwise).
   A holder that sees its lease may have lapsed stops holding at once.

Every try is recorded as a ``dkv.testing.lock_check.Attempt`` (with its
``Hold`` when it acquired) on ``time.monotonic()``, the nemesis's clock;
``dkv.testing.lock_check.check_holds`` checks them. Requests go to a random
node each, on a fresh connection, with a socket timeout of ``timeout``
seconds; any error just makes the client try again (another node, the next
poll), so a kill or a partition only slows it down.
"""

from __future__ import annotations

import base64
import http.client
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import attrs

from dkv.api.b64 import encode as b64_encode
from dkv.testing.lock_check import Attempt, AttemptOutcome, Hold, HoldEnd
from dkv.testing.rest_client import http_request

__all__ = ["LockConfig", "LockWorkload", "prefix_end"]


@attrs.frozen(kw_only=True)
class LockConfig:
    """The workload's knobs; times in seconds."""

    clients: int = 4
    ttl: int = 2
    prefix: bytes = b"/dkv-torture-lock/"
    hold: tuple[float, float] = (0.05, 0.4)
    poll: float = 0.05
    timeout: float = 1.0
    host: str = "127.0.0.1"


class _RequestFailed(Exception):
    """A request got no usable answer (nothing known about its effect)."""


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for every key starting with prefix."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


class _Lease:
    """A granted lease and its keep-alive thread."""

    def __init__(self, client: _LockClient, lease_id: int, granted_sent: float) -> None:
        self.client = client
        self.id = lease_id
        self.ttl = float(client.config.ttl)
        self._renewals = [granted_sent]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._gone = False  # a keep-alive answered "no such lease"
        self._thread = threading.Thread(target=self._run, name=f"dkv-lock-keepalive-{client.index}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rng = random.Random(f"{self.client.rng.random()}/keepalive")
        while not self._stop.wait(self.ttl / 4):  # schedule
            sent = time.monotonic()
            try:
                data = self.client.call("/v3/lease/keepalive", {"ID": str(self.id)}, rng, self.ttl / 4)
            except _RequestFailed:
                continue
            result = data.get("result") if isinstance(data, dict) else None
            ttl = int((result or {}).get("TTL") or 0)
            with self._lock:
                if ttl > 0:
                    self._renewals.append(sent)
                else:
                    self._gone = True
                    return

    @property
    def renewals(self) -> list[float]:
        with self._lock:
            return list(self._renewals)

    def bound(self) -> float:
        """The earliest moment the lease may have expired, by the renewals
        so far (``Hold.lease_bound``)."""
        with self._lock:
            if self._gone:
                return float("-inf")
            return Hold(
                client=0, key="", lease=0, ttl=self.ttl, acquired=0, ended=0, end="stopped", renewals=self._renewals
            ).lease_bound

    def alive(self, now: float) -> bool:
        return now < self.bound()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.ttl + self.client.config.timeout + 1)


class _LockClient:
    def __init__(self, workload: LockWorkload, index: int) -> None:
        self.workload = workload
        self.config = workload.config
        self.index = index
        self.rng = random.Random(f"{workload.seed}/lock/{index}")
        self.seq = 0

    def call(
        self, path: str, body: dict[str, Any], rng: random.Random | None = None, timeout: float | None = None
    ) -> Any:
        """POST body to path on a random node; the JSON of a 200 answer, or
        _RequestFailed."""
        port = (rng or self.rng).choice(self.workload.ports)
        try:
            status, data = http_request(
                port, "POST", path, body, timeout=timeout or self.config.timeout, host=self.config.host
            )
        except (OSError, http.client.HTTPException) as e:
            raise _RequestFailed(f"{path}: {e!r}") from None
        if status != 200:
            raise _RequestFailed(f"{path}: {status} {str(data)[:200]}")
        return data

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.workload.record(self.attempt(stop))

    def attempt(self, stop: threading.Event) -> Attempt:
        started = time.monotonic()
        cfg = self.config

        def done(outcome: AttemptOutcome, detail: str = "", contended: bool = False) -> Attempt:
            return Attempt(
                client=self.index,
                started=started,
                finished=time.monotonic(),
                contended=contended,
                outcome=outcome,
                detail=detail,
            )

        try:
            granted = self.call("/v3/lease/grant", {"TTL": str(cfg.ttl)})
            lease_id = int(granted["ID"])
        except (_RequestFailed, KeyError, TypeError, ValueError) as e:
            stop.wait(cfg.poll)  # schedule: pace retries against a sick cluster
            return done("error", f"grant: {e}")
        lease = _Lease(self, lease_id, started)
        self.seq += 1
        key = cfg.prefix + f"c{self.index}-{self.seq}".encode()
        contended = False
        try:
            outcome, detail, contended, acquired = self._acquire(stop, lease, key)
            if acquired is None:
                return done(outcome, detail, contended)
            hold = self._hold(stop, lease, key, acquired)
            return attrs.evolve(done("acquired", "", contended), hold=hold)
        finally:
            lease.stop()
            self._release(lease, key)

    def _acquire(
        self, stop: threading.Event, lease: _Lease, key: bytes
    ) -> tuple[AttemptOutcome, str, bool, float | None]:
        """(outcome, detail, contended, acquired time or None)."""
        cfg = self.config
        k = b64_encode(key)
        txn = {
            "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": k, "value": b64_encode(b"held"), "lease": str(lease.id)}}],
        }
        created = False
        looks = 0
        contended = False
        while True:
            if stop.is_set():
                return "stopped", "", contended, None
            if not lease.alive(time.monotonic()):
                return "lease-lost", "the lease may have lapsed while waiting", contended, None
            try:
                if not created:
                    self.call("/v3/kv/txn", txn)
                    created = True
                data = self.call(
                    "/v3/kv/range", {"key": b64_encode(cfg.prefix), "range_end": b64_encode(prefix_end(cfg.prefix))}
                )
            except _RequestFailed:
                stop.wait(cfg.poll)  # schedule
                continue
            answered = time.monotonic()
            kvs = data.get("kvs") or []
            revisions = {base64.b64decode(kv["key"]): int(kv.get("create_revision") or 0) for kv in kvs}
            if key not in revisions:
                return "lease-lost", "the key vanished while waiting", contended, None
            lowest = min(revisions, key=lambda name: revisions[name])
            looks += 1
            if lowest == key:
                if not lease.alive(answered):
                    return "lease-lost", "the lease may have lapsed as the lock came", contended, None
                return "acquired", "", contended, answered
            contended = contended or looks == 1
            stop.wait(cfg.poll)  # schedule: the poll interval (no watch)

    def _hold(self, stop: threading.Event, lease: _Lease, key: bytes, acquired: float) -> Hold:
        cfg = self.config
        until = acquired + self.rng.uniform(*cfg.hold)
        end: HoldEnd = "released"
        while True:
            now = time.monotonic()
            bound = lease.bound()
            if now >= bound:
                end, ended = "lease-lost", max(bound, acquired)
                break
            if now >= until or stop.is_set():
                ended = now
                break
            stop.wait(min(0.02, until - now))  # schedule: the holding time
        return Hold(
            client=self.index,
            key=key.decode(),
            lease=lease.id,
            ttl=lease.ttl,
            acquired=acquired,
            ended=ended,
            end=end,
            renewals=[r for r in lease.renewals if r < ended],
        )

    def _release(self, lease: _Lease, key: bytes) -> None:
        for path, body in (
            ("/v3/kv/deleterange", {"key": b64_encode(key)}),
            ("/v3/lease/revoke", {"ID": str(lease.id)}),
        ):
            try:
                self.call(path, body)
            except _RequestFailed:
                pass  # the lease's expiry deletes the key


class LockWorkload:
    """``config.clients`` lock clients against the nodes' REST ports; see the
    module docstring. ``start()``, ``stop()``, then ``attempts``."""

    def __init__(self, ports: Sequence[int] | dict[str, int], config: LockConfig = LockConfig(), seed: int = 0) -> None:
        self.ports = list(ports.values()) if isinstance(ports, dict) else list(ports)
        self.config = config
        self.seed = seed
        self._attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def record(self, attempt: Attempt) -> None:
        with self._lock:
            self._attempts.append(attempt)

    @property
    def attempts(self) -> list[Attempt]:
        with self._lock:
            return sorted(self._attempts, key=lambda a: a.started)

    def start(self) -> None:
        for n in range(self.config.clients):
            client = _LockClient(self, n)
            t = threading.Thread(target=client.run, args=(self._stop,), name=f"dkv-lock-client-{n}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            raise RuntimeError(f"lock clients did not stop: {', '.join(stuck)}")
