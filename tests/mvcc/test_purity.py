"""The multi-version store is a pure state machine: no Twisted, gRPC, LMDB,
clock, randomness, threads or I/O in dkv/mvcc/ (statically, and importing it
in a fresh interpreter loads none of them), and what it writes does not
depend on the interpreter's hash seed (the same requests under two seeds
leave byte-identical tables)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dkv.mvcc
from tests.raft.test_purity import _imports

MVCC_DIR = Path(dkv.mvcc.__file__).parent
MODULES = sorted(MVCC_DIR.glob("*.py"))
ROOT = MVCC_DIR.parent.parent
IO_LIBRARIES = ("twisted", "grpc", "lmdb", "klein", "treq")
#: Clocks, randomness, threads, processes, files and the network.
NOT_PURE = ("time", "datetime", "random", "secrets", "uuid", "os", "threading", "asyncio", "socket", "subprocess")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_forbidden_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for module, _names in _imports(tree):
        top = module.split(".")[0]
        assert top not in IO_LIBRARIES + NOT_PURE, f"{path.name} imports {module}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_builtin_hash(path: Path) -> None:
    """hash() of bytes changes with the interpreter's hash seed."""
    tree = ast.parse(path.read_text(), filename=str(path))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert all(call.func.id != "hash" for call in calls), f"{path.name} calls hash()"


def test_importing_the_store_loads_no_io_library() -> None:
    code = "import json, sys; import dkv.mvcc; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT).stdout
    offending = [m for m in json.loads(out) if m.split(".")[0] in IO_LIBRARIES]
    assert offending == [], f"importing dkv.mvcc loaded {offending}"


#: Writes of every kind, txns with nested txns, duplicate-key checks (which
#: use sets) and a compaction; prints the tables.
WORKLOAD = """
import json
from dkv.mvcc import MvccStore, errors
from dkv.pb.etcd_rpc_pb2 import *
from dkv.storage.tables import MemoryTables

tables = MemoryTables()
store = MvccStore(tables)
keys = [bytes([a, b]) for a in range(40, 60) for b in (0, 1, 255)]
for i, key in enumerate(keys):
    store.put(PutRequest(key=key, value=b"v%d" % i, lease=i % 3))
store.delete_range(DeleteRangeRequest(key=keys[5], range_end=keys[9]))
ops = [RequestOp(request_put=PutRequest(key=k, value=b"t")) for k in keys[20:40]]
nested = TxnRequest(success=ops[10:], failure=[RequestOp(request_delete_range=DeleteRangeRequest(key=keys[50], range_end=b"\\0"))])
txn = TxnRequest(
    compare=[Compare(key=keys[0], range_end=keys[30], target=Compare.VERSION, result=Compare.GREATER, version=0)],
    success=ops[:10] + [RequestOp(request_txn=nested)],
)
store.txn(txn)
try:
    store.txn(TxnRequest(success=ops[:5] + [RequestOp(request_delete_range=DeleteRangeRequest(key=keys[0], range_end=b"\\0"))]))
except errors.DuplicateKey:
    pass
store.compact(store.revision - 3)
print(json.dumps({name: [[k.hex(), v.hex()] for k, v in tables.scan(name)] for name in tables.tables()}))
"""


def test_tables_do_not_depend_on_the_hash_seed() -> None:
    dumps = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", WORKLOAD], check=True, capture_output=True, text=True, cwd=ROOT, env=env
        ).stdout
        dumps.append(json.loads(out))
    assert dumps[0] == dumps[1]
    assert len(dumps[0]["mvcc.history"]) > 50
