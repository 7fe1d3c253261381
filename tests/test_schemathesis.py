"""Schemathesis against a live 3-node cluster: the REST port's answers to
generated requests (valid and invalid) for the ``/v0`` and ``/v3`` routes
must never be a 5xx, must have a documented status, the documented content
type, and match the documented schema (``GET /openapi.json``, loaded from the
cluster itself). A node must never die of it.

Not fuzzed, and why (their descriptions are checked by ``tests/test_openapi.py``):
- streams that do not end by themselves: ``GET /v0/watch``, ``POST /v3/watch``;
- ``POST /v3/maintenance/snapshot`` (downloads the whole db on every call);
- what changes the cluster under test: membership (``/v0/members`` POST and
  DELETE, ``/v0/members/{id}/promote``, ``/v3/cluster/member/add|remove|
  promote|update``) and leadership (``/v0/leader/transfer``,
  ``/v3/maintenance/transfer-leadership``): a generated member id may name a
  real member, and elections make 503s that are the API's contract, not bugs;
- ``/health``, ``/livez``, ``/readyz``, ``/metrics``, ``/version``,
  ``/openapi.json``: outside ``/v0`` and ``/v3``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dkv.testing.cluster import Cluster

pytestmark = pytest.mark.process

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"

EXCLUDED = (
    r"^/v0/watch$|^/v3/watch$|^/v3/maintenance/snapshot$|^/v0/members|^/v0/leader/transfer$"
    r"|^/v3/cluster/member/(add|remove|promote|update)$|^/v3/maintenance/transfer-leadership$"
)
CHECKS = os.environ.get(
    "DKV_SCHEMATHESIS_CHECKS",
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
)
#: Examples per operation: the whole run stays under ~2 minutes on a loaded 2-core machine.
MAX_EXAMPLES = int(os.environ.get("DKV_SCHEMATHESIS_EXAMPLES", "25"))


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed (pip install '.[test]')")
def test_schemathesis_finds_nothing_against_a_live_cluster(tmp_path: Path) -> None:
    with Cluster(tmp_path / "cluster", ["a", "b", "c"], request_timeout=5.0, log_level="warn") as cluster:
        cluster.start()
        cluster.wait_settled()
        # A follower: what it answers goes through forwarding too.
        leader = cluster.leader()
        node = cluster.node(next(i for i in cluster.ids if i != leader))
        argv = [
            str(SCHEMATHESIS), "--no-color", "run", f"http://127.0.0.1:{node.rest_port}/openapi.json",
            "--checks", CHECKS,
            "--include-path-regex", "^/v[03]/",
            "--exclude-path-regex", EXCLUDED,
            "--max-examples", str(MAX_EXAMPLES),
            "--phases", "examples,coverage,fuzzing",
            "--seed", "1",
            "--workers", "2",
            "--request-timeout", "15",
            "--suppress-health-check", "all",
        ]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        report = result.stdout[-20000:] + result.stderr[-5000:]
        assert result.returncode == 0, report
        assert "passed" in result.stdout, report
        for node_id in cluster.ids:
            assert cluster.node(node_id).alive, f"node {node_id} died:\n{cluster.log_tail(node_id)}"
        cluster.wait_settled()
