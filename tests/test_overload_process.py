"""Admission control on a real node: flooded past tiny bounds (set with the
flags) behind a slow disk, it answers 429 with ``Retry-After`` and a JSON
reason (``/v0``) or etcd's ``too many requests`` (the gateway) at once,
every acknowledged write is readable afterwards, refused ones are not
there, and the node keeps serving."""

from __future__ import annotations

import base64
import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from dkv.storage.disk_faults import ENABLE_VARIABLE, SPEC_VARIABLE
from dkv.testing.cluster import Cluster
from dkv.testing.poll import wait_until

pytestmark = pytest.mark.process

WORKERS = 32
PER_WORKER = 15


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def _post(port: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], Any, float]:
    """(status, headers, JSON body, seconds) of one request on its own connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.monotonic()
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, json.loads(data) if data else None, time.monotonic() - started
    finally:
        conn.close()


def test_a_flooded_node_refuses_quickly_and_loses_nothing_it_acknowledged(tmp_path) -> None:
    with Cluster(
        tmp_path,
        ids=("a",),
        request_timeout=10.0,
        extra_args=("--max-pending-proposals", "4", "--max-pending-reads", "4"),
        env={ENABLE_VARIABLE: "1", SPEC_VARIABLE: "commit-delay=0.05"},
    ) as c:
        c.start()
        c.wait_settled()
        port = c.rest_ports["a"]

        def flood(worker: int) -> list[tuple[str, int, dict[str, str], Any, float]]:
            answers = []
            for n in range(PER_WORKER):
                key = f"w{worker}-{n}"
                if n % 3 == 2:  # every third through etcd's gateway
                    status, headers, body, seconds = _post(port, "/v3/kv/put", {"key": _b64(key), "value": _b64("v")})
                else:
                    status, headers, body, seconds = _post(port, "/v0/kv", {"key": _b64(key), "value": _b64("v")})
                answers.append((key, status, headers, body, seconds))
            return answers

        with ThreadPoolExecutor(WORKERS) as pool:
            answers = [a for batch in pool.map(flood, range(WORKERS)) for a in batch]

        statuses = [status for _, status, _, _, _ in answers]
        assert set(statuses) <= {200, 429}, sorted(set(statuses))
        refused = [a for a in answers if a[1] == 429]
        acknowledged = [key for key, status, _, _, _ in answers if status == 200]
        assert refused, "no request was refused: the bound was never reached"
        assert acknowledged, "every request was refused"
        gateway = [body for _, _, _, body, _ in refused if "message" in body]
        assert gateway and len(gateway) < len(refused), "both /v0 and the gateway must have refused some"
        for key, _, headers, body, seconds in refused:
            assert headers.get("retry-after") == "1", headers
            assert seconds < 5.0, f"{key} was refused only after {seconds:.1f} s"
            if "message" in body:  # the gateway, as etcd says it
                assert body == {"error": "etcdserver: too many requests", "message": "etcdserver: too many requests",
                                "code": 8}  # fmt: skip
            else:
                assert body["reason"] == "pending_proposals", body
                assert body["retry_after"] == 1 and "--max-pending-proposals" in body["error"], body

        # Every acknowledged write is there; no refused one is.
        for key in acknowledged:
            code, value = c.get_value("a", key)
            assert (code, value) == (200, b"v"), key
        for key, _, _, _, _ in refused:
            code, _ = c.get("a", key, consistency="serializable")
            assert code == 404, f"refused write {key} was applied"

        # Still serving, and the refusals are counted.
        assert c.put("a", "after", "1")[0] == 200
        code, text = c.request("a", "GET", "/metrics")
        assert code == 200
        metrics = text["raw"]  # not JSON: the client hands the text back as it is
        line = next(
            (
                ln
                for ln in metrics.splitlines()
                if ln.startswith('dkv_server_requests_refused_total{reason="pending_proposals"}')
            ),
            None,
        )
        assert line is not None and float(line.split()[-1]) >= len(refused), line
        wait_until(lambda: "refusing new requests" in c.log_tail("a", 200), 10.0, "the refusal log line")
        assert c.log_tail("a", 2000).count("refusing new requests") <= 2  # once per 10 s, not per request
