"""Short ways to write etcd requests in tests, and tables that count what
the store does to them."""

from __future__ import annotations

from collections.abc import Iterator

from dkv.mvcc import MvccStore
from dkv.pb.etcd_rpc_pb2 import (
    Compare,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)
from dkv.storage.tables import MemoryTables


def put(store: MvccStore, key: bytes, value: bytes = b"", **options):
    return store.put(PutRequest(key=key, value=value, **options)).response


def delete(store: MvccStore, key: bytes, range_end: bytes = b"", **options):
    return store.delete_range(DeleteRangeRequest(key=key, range_end=range_end, **options)).response


def get(store: MvccStore, key: bytes, range_end: bytes = b"", **options):
    return store.range(RangeRequest(key=key, range_end=range_end, **options))


def keys_of(response) -> list[bytes]:
    return [kv.key for kv in response.kvs]


def op_put(key: bytes, value: bytes = b"", **options) -> RequestOp:
    return RequestOp(request_put=PutRequest(key=key, value=value, **options))


def op_delete(key: bytes, range_end: bytes = b"", **options) -> RequestOp:
    return RequestOp(request_delete_range=DeleteRangeRequest(key=key, range_end=range_end, **options))


def op_range(key: bytes, range_end: bytes = b"", **options) -> RequestOp:
    return RequestOp(request_range=RangeRequest(key=key, range_end=range_end, **options))


def op_txn(compare=(), success=(), failure=()) -> RequestOp:
    return RequestOp(request_txn=txn(compare, success, failure))


def txn(compare=(), success=(), failure=()) -> TxnRequest:
    return TxnRequest(compare=list(compare), success=list(success), failure=list(failure))


def compare(key: bytes, target: str, result: str, wanted, range_end: bytes = b"") -> Compare:
    """compare(b"k", "VALUE", "EQUAL", b"v"); the wanted field follows the target."""
    field = {
        "VALUE": "value",
        "VERSION": "version",
        "CREATE": "create_revision",
        "MOD": "mod_revision",
        "LEASE": "lease",
    }
    return Compare(
        key=key,
        range_end=range_end,
        target=Compare.CompareTarget.Value(target),
        result=Compare.CompareResult.Value(result),
        **{field[target]: wanted},
    )


class CountingTables(MemoryTables):
    """MemoryTables that count writes and the items scans yield, per table."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: dict[str, int] = {}
        self.scanned: dict[str, int] = {}

    def reset(self) -> None:
        self.writes.clear()
        self.scanned.clear()

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self.writes[table] = self.writes.get(table, 0) + 1
        super().put(table, key, value)

    def delete(self, table: str, key: bytes) -> None:
        self.writes[table] = self.writes.get(table, 0) + 1
        super().delete(table, key)

    def scan(
        self, table: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        for item in super().scan(table, start, end, reverse=reverse):
            self.scanned[table] = self.scanned.get(table, 0) + 1
            yield item

    def dump(self) -> dict[str, list[tuple[bytes, bytes]]]:
        return {name: list(super(CountingTables, self).scan(name)) for name in self.tables()}
