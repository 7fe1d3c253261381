# test-case-name: tests.client.test_client_values
"""The values ``dkv.client`` hands back, decoded from etcd's JSON gateway:
bytes for keys and values (base64 on the wire), ints for int64 fields (strings
on the wire), and defaults where the gateway omits a field (it omits every
default: a zero, an empty list, ``false``)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import attrs

PUT = "PUT"
DELETE = "DELETE"


def b64(data: bytes) -> str:
    """bytes as the gateway wants them: standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes:
    """The bytes of a base64 field (absent: empty)."""
    return base64.b64decode(text) if text else b""


def as_int(value: Any) -> int:
    """An int64 field: a string (or number) on the wire, absent means 0."""
    return int(value) if value not in (None, "") else 0


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with prefix (etcd's
    rule): the prefix with its last byte below 0xff incremented and what
    follows dropped; ``b"\\0"`` (every key from prefix on) when there is
    none."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


@attrs.frozen
class Header:
    """A response header: the store's revision when it answered, and who answered."""

    revision: int = 0
    member_id: int = 0
    cluster_id: int = 0
    raft_term: int = 0

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> Header:
        d = d or {}
        return cls(
            revision=as_int(d.get("revision")),
            member_id=as_int(d.get("member_id")),
            cluster_id=as_int(d.get("cluster_id")),
            raft_term=as_int(d.get("raft_term")),
        )


@attrs.frozen
class KeyValue:
    key: bytes
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> KeyValue:
        return cls(
            key=unb64(d.get("key")),
            value=unb64(d.get("value")),
            create_revision=as_int(d.get("create_revision")),
            mod_revision=as_int(d.get("mod_revision")),
            version=as_int(d.get("version")),
            lease=as_int(d.get("lease")),
        )


def _kv_or_none(d: Mapping[str, Any] | None) -> KeyValue | None:
    return KeyValue.from_json(d) if d else None


@attrs.frozen
class RangeResult:
    header: Header
    kvs: tuple[KeyValue, ...] = ()
    count: int = 0
    more: bool = False

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RangeResult:
        return cls(
            header=Header.from_json(d.get("header")),
            kvs=tuple(KeyValue.from_json(kv) for kv in d.get("kvs", ())),
            count=as_int(d.get("count")),
            more=bool(d.get("more", False)),
        )


@attrs.frozen
class PutResult:
    header: Header
    prev_kv: KeyValue | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PutResult:
        return cls(header=Header.from_json(d.get("header")), prev_kv=_kv_or_none(d.get("prev_kv")))


@attrs.frozen
class DeleteResult:
    header: Header
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DeleteResult:
        return cls(
            header=Header.from_json(d.get("header")),
            deleted=as_int(d.get("deleted")),
            prev_kvs=tuple(KeyValue.from_json(kv) for kv in d.get("prev_kvs", ())),
        )


OpResult = RangeResult | PutResult | DeleteResult


@attrs.frozen
class TxnResult:
    """A transaction's answer: which branch ran, and each of its operations'
    results in order."""

    header: Header
    succeeded: bool = False
    responses: tuple[OpResult | TxnResult, ...] = ()

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TxnResult:
        return cls(
            header=Header.from_json(d.get("header")),
            succeeded=bool(d.get("succeeded", False)),
            responses=tuple(_op_result(r) for r in d.get("responses", ())),
        )


def _op_result(d: Mapping[str, Any]) -> OpResult | TxnResult:
    if "response_range" in d:
        return RangeResult.from_json(d["response_range"])
    if "response_put" in d:
        return PutResult.from_json(d["response_put"])
    if "response_delete_range" in d:
        return DeleteResult.from_json(d["response_delete_range"])
    if "response_txn" in d:
        return TxnResult.from_json(d["response_txn"])
    # An empty response object: the gateway omitted a default-valued response.
    return RangeResult(header=Header())


@attrs.frozen
class Event:
    """One change a watch saw: ``type`` PUT or DELETE, the key-value after
    it (for a DELETE: the key and the deletion's revision), the one before
    it when the watch asked for ``prev_kv``."""

    type: str
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Event:
        return cls(
            type=d.get("type") or PUT,
            kv=KeyValue.from_json(d.get("kv") or {}),
            prev_kv=_kv_or_none(d.get("prev_kv")),
        )


@attrs.frozen
class Member:
    id: int
    name: str = ""
    peer_urls: tuple[str, ...] = ()
    client_urls: tuple[str, ...] = ()
    is_learner: bool = False

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Member:
        return cls(
            id=as_int(d.get("ID")),
            name=d.get("name", ""),
            peer_urls=tuple(d.get("peerURLs", ())),
            client_urls=tuple(d.get("clientURLs", ())),
            is_learner=bool(d.get("isLearner", False)),
        )


@attrs.frozen
class Status:
    """One member's ``Maintenance.Status``."""

    header: Header
    version: str = ""
    db_size: int = 0
    leader: int = 0
    raft_index: int = 0
    raft_term: int = 0
    raft_applied_index: int = 0
    is_learner: bool = False
    errors: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Status:
        return cls(
            header=Header.from_json(d.get("header")),
            version=d.get("version", ""),
            db_size=as_int(d.get("dbSize")),
            leader=as_int(d.get("leader")),
            raft_index=as_int(d.get("raftIndex")),
            raft_term=as_int(d.get("raftTerm")),
            raft_applied_index=as_int(d.get("raftAppliedIndex")),
            is_learner=bool(d.get("isLearner", False)),
            errors=tuple(d.get("errors", ())),
        )


@attrs.frozen
class LeaseTimeToLive:
    """A lease's remaining ``ttl`` in seconds (-1: expired or unknown), the
    TTL it was granted with, and its keys when asked for."""

    id: int
    ttl: int = -1
    granted_ttl: int = 0
    keys: tuple[bytes, ...] = ()

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LeaseTimeToLive:
        return cls(
            id=as_int(d.get("ID")),
            ttl=as_int(d.get("TTL")),
            granted_ttl=as_int(d.get("grantedTTL")),
            keys=tuple(unb64(k) for k in d.get("keys", ())),
        )
