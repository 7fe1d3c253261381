"""dkv.client.blocking from a plain script (a fresh interpreter, the reactor
in a background thread) against a cluster that speaks etcd's v3 API."""

from __future__ import annotations

import sys

import pytest

from dkv.testing.etcd_cluster import ApiEndpoints
from dkv.testing.launcher import child_env
from dkv.testing.process import run_to_exit
from tests.compat.client_support import require_watch

pytestmark = [pytest.mark.process, pytest.mark.etcd]

SCRIPT = """
import sys
from dkv.client import NotFound, txn
from dkv.client.blocking import BlockingClient

client = BlockingClient(sys.argv[1].split(","))
first = client.put(b"k", b"v1")
watch = client.watch(b"k", start_revision=first.header.revision)
client.put(b"k", b"v2")
print(client.get(b"k").value.decode(), client.prefix(b"").count)
print(client.txn(txn.Txn().when(txn.value(b"k") == b"v2").then(txn.delete(b"k"))).succeeded)
print([next(iter(watch)).kv.value.decode() for _ in range(2)])
watch.close()
print(list(watch))
try:
    client.revoke(12345)
except NotFound as e:
    print("NotFound", e.code)
"""


def test_a_script_uses_the_blocking_client(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    require_watch(api)
    done = run_to_exit([sys.executable, "-c", SCRIPT, ",".join(api.gateway_urls)], env=child_env(), timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == ["v2 1", "True", "['v1', 'v2']", "[]"]
    if api.system == "etcd":  # dkv's Lease service may not be merged yet
        assert lines[4] == "NotFound 5"
