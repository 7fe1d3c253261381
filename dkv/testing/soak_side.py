# test-case-name: tests.test_soak
"""The soak's side workloads on etcd's JSON gateway, beside the checked KV
history of ``dkv.testing.workload``, each on a thread of its own and each
checked simply:

``WatchChecker``  one watch on the whole keyspace, re-created from the next
                  revision on whichever node answers when its stream breaks.
                  Every revision that writes anything has an event in the
                  whole keyspace, so its events must come in revision order
                  with no revision skipped; a resume below the compacted
                  revision is told so (``compact_revision``), and that gap is
                  counted, not failed.
``LeaseChecker``  in turns: grant a lease, put a key bound to it, keep it
                  alive a few times -- the key must still be there after each
                  keep-alive that found the lease alive (not expired early) --
                  then revoke it: once a revoke succeeded, a linearizable
                  range must not find the key. Every other turn lets a short
                  lease expire instead: its key must vanish (late is counted,
                  not failed: elections renew leases, as etcd's do).

Requests that fail (a node down, no leader) are counted as unavailable and
the turn is dropped; only a wrong answer is a violation.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
from collections import Counter
from typing import Any

from dkv.testing.cluster import Cluster
from dkv.testing.poll import Timeout, wait_until
from dkv.testing.rest_client import b64

__all__ = ["LEASE_PREFIX", "LeaseChecker", "WatchChecker"]

#: Keys of the lease checker (not the KV workload's).
LEASE_PREFIX = "soak-lease/"


class _Side:
    def __init__(self, cluster: Cluster, seed: int, name: str) -> None:
        self.cluster = cluster
        self.rng = random.Random(f"{seed}/{name}")
        self.counts: Counter[str] = Counter()
        self.violations: list[str] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._guard, name=f"dkv-soak-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60.0)

    def _guard(self) -> None:
        try:
            self.run()
        except BaseException as e:  # noqa: BLE001 - reported by the soak's summary
            self.error = e

    def run(self) -> None:
        raise NotImplementedError

    def _node(self) -> str | None:
        running = self.cluster.running()
        return self.rng.choice(running) if running else None

    def _post(self, path: str, body: dict[str, Any], node: str | None = None) -> tuple[int | None, Any]:
        """(status, JSON) of a gateway request; (None, error) if no answer."""
        node = node or self._node()
        if node is None:
            return None, "no node runs"
        try:
            return self.cluster.request(node, "POST", path, body, timeout=self.cluster.client_timeout)
        except (OSError, http.client.HTTPException) as e:
            return None, repr(e)


class WatchChecker(_Side):
    def __init__(self, cluster: Cluster, seed: int) -> None:
        super().__init__(cluster, seed, "watch")
        self.last_revision = 0
        self.events = 0

    def run(self) -> None:
        while not self._stop.is_set():
            node = self._node()
            if node is None:
                self._stop.wait(0.5)  # schedule: nothing runs
                continue
            try:
                self._watch(node)
            except (OSError, http.client.HTTPException, ValueError):
                self.counts["stream broke"] += 1
            self._stop.wait(0.2)  # schedule: a new stream on another node

    def _watch(self, node: str) -> None:
        port = self.cluster.rest_ports[node]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5.0)
        body: dict[str, Any] = {"key": b64("\0"), "range_end": b64("\0")}
        if self.last_revision:
            body["start_revision"] = str(self.last_revision + 1)
        try:
            conn.request("POST", "/v3/watch", json.dumps({"create_request": body}).encode())
            resp = conn.getresponse()
            if resp.status != 200:
                self.counts[f"refused {resp.status}"] += 1
                return
            self.counts["streams"] += 1
            while not self._stop.is_set():
                line = resp.readline()
                if not line:
                    return
                if line.strip():
                    self._result(json.loads(line).get("result", {}))
        finally:
            conn.close()

    def _result(self, result: dict[str, Any]) -> None:
        if result.get("canceled"):
            compacted = int(result.get("compact_revision") or 0)
            if compacted:
                self.counts["resumed past a compaction"] += 1
                self.last_revision = max(self.last_revision, compacted - 1)
            raise ValueError("watch canceled")
        for event in result.get("events") or ():
            revision = int(event["kv"]["mod_revision"])
            self.events += 1
            if revision < self.last_revision:
                self.violations.append(f"event at revision {revision} after one at {self.last_revision}")
            elif revision > self.last_revision + 1 and self.last_revision:
                self.violations.append(f"revisions {self.last_revision + 1}..{revision - 1} skipped")
            self.last_revision = max(self.last_revision, revision)


class LeaseChecker(_Side):
    def __init__(self, cluster: Cluster, seed: int, ttl: int = 6) -> None:
        super().__init__(cluster, seed, "lease")
        self.ttl = ttl
        self.turn = 0

    def run(self) -> None:
        while not self._stop.is_set():
            self.turn += 1
            key = f"{LEASE_PREFIX}{self.turn}"
            if self.turn % 2:
                self._revoked(key)
            else:
                self._expires(key)
            self._stop.wait(0.5)  # schedule: the next turn

    def _count(self, key: str) -> int | None:
        status, body = self._post("/v3/kv/range", {"key": b64(key), "count_only": True})
        return int(body.get("count") or 0) if status == 200 else None

    def _grant_put(self, key: str, ttl: int) -> str | None:
        status, grant = self._post("/v3/lease/grant", {"TTL": str(ttl)})
        if status != 200:
            self.counts["unavailable"] += 1
            return None
        lease = str(grant["ID"])
        status, _ = self._post("/v3/kv/put", {"key": b64(key), "value": b64("v"), "lease": lease})
        if status != 200:
            self.counts["unavailable"] += 1
            return None
        self.counts["granted"] += 1
        return lease

    def _revoked(self, key: str) -> None:
        lease = self._grant_put(key, self.ttl)
        if lease is None:
            return
        for _ in range(3):
            status, body = self._post("/v3/lease/keepalive", {"ID": lease})
            alive = status == 200 and int(body.get("result", {}).get("TTL") or 0) > 0
            if alive:
                self.counts["kept alive"] += 1
                if self._count(key) == 0:
                    self.violations.append(f"lease {lease} alive (kept alive) but its key {key} is gone")
            self._stop.wait(1.0)  # schedule: keep-alive pace
        status, _ = self._post("/v3/lease/revoke", {"ID": lease})
        if status != 200:
            self.counts["unavailable"] += 1
            return
        self.counts["revoked"] += 1
        if self._count(key) == 1:
            self.violations.append(f"key {key} still there after its lease {lease} was revoked")

    def _expires(self, key: str) -> None:
        lease = self._grant_put(key, 2)
        if lease is None:
            return
        try:
            wait_until(lambda: self._stop.is_set() or self._count(key) == 0, 60.0, f"{key} to expire", interval=0.5)
            self.counts["expired"] += 1
        except Timeout:
            self.counts["expired late (over 60 s)"] += 1
