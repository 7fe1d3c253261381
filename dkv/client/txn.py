# test-case-name: tests.client.test_client_values
"""A small builder for etcd transactions: compares on a key's value,
version, create or mod revision or lease, and the operations of each branch.

    from dkv.client import txn
    t = (txn.Txn()
         .when(txn.value(b"k") == b"old", txn.version(b"lock") == 0)
         .then(txn.put(b"k", b"new"), txn.get(b"k"))
         .otherwise(txn.get(b"k")))
    result = await client.txn(t)     # a TxnResult: .succeeded, .responses

Comparisons are built with ``==``, ``!=``, ``<`` and ``>`` on a target.
"""

from __future__ import annotations

from typing import Any

import attrs

from dkv.client.requests import delete_request, put_request, range_request
from dkv.client.values import b64


@attrs.frozen
class Compare:
    """One compare of a TxnRequest, as its JSON body."""

    body: dict[str, Any]


#: Compare.CompareTarget name -> the field holding the compared value.
_FIELDS = {"VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision", "VALUE": "value", "LEASE": "lease"}


class Target:
    """What a compare looks at: one field of key (or of every key in
    [key, range_end)). Compare it with ``==``, ``!=``, ``<``, ``>``."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, target: str, key: bytes, range_end: bytes | None = None) -> None:
        self.target = target
        self.key = key
        self.range_end = range_end

    def _compare(self, result: str, other: object) -> Compare:
        body: dict[str, Any] = {"key": b64(self.key), "target": self.target, "result": result}
        if self.range_end is not None:
            body["range_end"] = b64(self.range_end)
        field = _FIELDS[self.target]
        if self.target == "VALUE":
            if not isinstance(other, bytes):
                raise TypeError("a value compares with bytes")
            body[field] = b64(other)
        else:
            if not isinstance(other, int):
                raise TypeError(f"a {field} compares with an int")
            body[field] = str(other)
        return Compare(body)

    def __eq__(self, other: object) -> Compare:  # type: ignore[override]
        return self._compare("EQUAL", other)

    def __ne__(self, other: object) -> Compare:  # type: ignore[override]
        return self._compare("NOT_EQUAL", other)

    def __lt__(self, other: object) -> Compare:
        return self._compare("LESS", other)

    def __gt__(self, other: object) -> Compare:
        return self._compare("GREATER", other)


def value(key: bytes, range_end: bytes | None = None) -> Target:
    return Target("VALUE", key, range_end)


def version(key: bytes, range_end: bytes | None = None) -> Target:
    return Target("VERSION", key, range_end)


def create_revision(key: bytes, range_end: bytes | None = None) -> Target:
    return Target("CREATE", key, range_end)


def mod_revision(key: bytes, range_end: bytes | None = None) -> Target:
    return Target("MOD", key, range_end)


def lease(key: bytes, range_end: bytes | None = None) -> Target:
    return Target("LEASE", key, range_end)


@attrs.frozen
class Op:
    """One operation of a branch, as its RequestOp JSON body."""

    body: dict[str, Any]

    @property
    def writes(self) -> bool:
        return "request_range" not in self.body


def get(key: bytes, range_end: bytes | None = None, **options: Any) -> Op:
    """A range operation (options as ``Client.range``)."""
    return Op({"request_range": range_request(key, range_end, **options)})


def put(key: bytes, value: bytes, *, lease: int = 0, prev_kv: bool = False) -> Op:
    return Op({"request_put": put_request(key, value, lease=lease, prev_kv=prev_kv)})


def delete(key: bytes, range_end: bytes | None = None, **options: Any) -> Op:
    """A delete-range operation (options as ``Client.delete``)."""
    return Op({"request_delete_range": delete_request(key, range_end, **options)})


@attrs.frozen
class Txn:
    """A transaction: if every compare holds, the success operations run,
    otherwise the failure operations. Immutable: each builder step returns
    a new Txn."""

    compares: tuple[Compare, ...] = ()
    success: tuple[Op, ...] = ()
    failure: tuple[Op, ...] = ()

    def when(self, *compares: Compare) -> Txn:
        return attrs.evolve(self, compares=self.compares + compares)

    def then(self, *ops: Op) -> Txn:
        return attrs.evolve(self, success=self.success + ops)

    def otherwise(self, *ops: Op) -> Txn:
        return attrs.evolve(self, failure=self.failure + ops)

    @property
    def writes(self) -> bool:
        """Whether either branch changes the store (then it is sent as a write)."""
        return any(op.writes for op in self.success + self.failure)

    def body(self) -> dict[str, Any]:
        """The TxnRequest JSON body."""
        body: dict[str, Any] = {}
        if self.compares:
            body["compare"] = [c.body for c in self.compares]
        if self.success:
            body["success"] = [op.body for op in self.success]
        if self.failure:
            body["failure"] = [op.body for op in self.failure]
        return body
