"""Exactly-once writes in the state machine (dkv.idempotency): a retry with
the same key and request gets the first answer and changes nothing; another
request under the same key is refused; records expire in leader-stamped log
time, which never goes backwards, are purged with bounded work, and survive
a restart (LMDB) and a snapshot."""

from __future__ import annotations

import pytest
import pytest_twisted

from dkv.commands import Idempotency, RequestId, decode, encode, encode_put, stamp
from dkv.errors import InvalidArgument
from dkv.idempotency import (
    EXPIRY,
    MAX_KEY_BYTES,
    PURGE_PER_ENTRY,
    RECORDS,
    IdempotencyKeyReused,
    IdempotencyTable,
    key_from_metadata,
    parse_key,
)
from dkv.mvcc import MvccView
from dkv.mvcc.errors import FutureRevision
from dkv.pb.etcd_rpc_pb2 import CompactionRequest, PutRequest, RangeRequest, RequestOp, TxnRequest
from dkv.raft.membership import Member, Membership
from dkv.raft.messages import Entry, EntryKind, HardState, SnapshotMeta
from dkv.statemachine import apply_entries
from dkv.storage import WriteBatch, apply_writes, record_crc
from dkv.storage.overlay import Overlay
from dkv.storage.tables import MemoryTables

MINUTE_MS = 60_000
WINDOW = 600.0  # seconds: the default


class Log:
    """Entries with increasing indexes, applied batch by batch to tables."""

    def __init__(self, tables=None) -> None:
        self.tables = tables if tables is not None else MemoryTables()
        self.index = 0
        self.seq = 0

    def entry(self, request, *, key: bytes | None = None, at_ms: int = 0, window: float = WINDOW) -> Entry:
        self.index += 1
        self.seq += 1
        idem = Idempotency(key, window) if key is not None else None
        return Entry(self.index, 2, EntryKind.NORMAL, stamp(encode(RequestId(5, self.seq), request, idem), at_ms))

    def apply(self, *entries: Entry):
        outcome = apply_entries(entries, Overlay().writer(self.tables))
        apply_writes(self.tables, outcome.applied.writes)
        return [result for _, result in outcome.results]

    def write(self, request, **kw):
        (result,) = self.apply(self.entry(request, **kw))
        return result

    @property
    def revision(self) -> int:
        return MvccView(self.tables).revision

    def value(self, key: bytes) -> bytes | None:
        kvs = MvccView(self.tables).range(RangeRequest(key=key)).kvs
        return kvs[0].value if kvs else None


def put(key: bytes, value: bytes, prev_kv: bool = False) -> PutRequest:
    return PutRequest(key=key, value=value, prev_kv=prev_kv)


def test_leader_stamp_is_a_field_of_the_command() -> None:
    payload = encode_put(RequestId(1, 2), b"k", b"v")
    assert decode(stamp(payload, 1_700_000_000_123)).leader_time_ms == 1_700_000_000_123
    assert decode(stamp(stamp(payload, 5), 9)).leader_time_ms == 9  # restamped: the last one counts
    assert stamp(b"", 5) == b""  # a no-op stays a no-op


def test_retry_with_same_key_gets_the_first_answer_and_changes_nothing() -> None:
    log = Log()
    log.write(put(b"k", b"old"))
    first = log.write(put(b"k", b"new", prev_kv=True), key=b"op-1", at_ms=MINUTE_MS)
    assert first.header.revision == 3 and first.prev_kv.value == b"old"
    log.write(put(b"k", b"other"), at_ms=2 * MINUTE_MS)  # someone else writes meanwhile
    assert log.revision == 4
    history = list(log.tables.scan("mvcc.history"))
    again = log.write(put(b"k", b"new", prev_kv=True), key=b"op-1", at_ms=3 * MINUTE_MS)
    assert again == first  # same revision, same body (prev_kv included)
    assert log.revision == 4 and log.value(b"k") == b"other"
    assert list(log.tables.scan("mvcc.history")) == history


def test_same_key_with_another_request_is_refused() -> None:
    log = Log()
    log.write(put(b"k", b"v"), key=b"op-1", at_ms=1000)
    refused = log.write(put(b"k", b"different"), key=b"op-1", at_ms=2000)
    assert isinstance(refused, IdempotencyKeyReused) and refused.http_status == 422
    assert "different request" in refused.message
    assert log.revision == 2 and log.value(b"k") == b"v"
    # Another kind of write under the key is another request too.
    assert isinstance(log.write(TxnRequest(), key=b"op-1", at_ms=3000), IdempotencyKeyReused)


def test_a_refusal_of_the_store_is_remembered_too() -> None:
    log = Log()
    first = log.write(CompactionRequest(revision=99), key=b"c", at_ms=1000)
    assert isinstance(first, FutureRevision)
    for i in range(100):
        log.write(put(b"x%d" % i, b"v"))
    again = log.write(CompactionRequest(revision=99), key=b"c", at_ms=2000)
    assert isinstance(again, FutureRevision)  # the first outcome, though 99 exists now


def test_txn_answer_is_replayed() -> None:
    log = Log()
    txn = TxnRequest(success=[RequestOp(request_put=put(b"a", b"1")), RequestOp(request_range=RangeRequest(key=b"a"))])
    first = log.write(txn, key=b"t", at_ms=1)
    assert log.write(txn, key=b"t", at_ms=2) == first
    assert log.revision == 2


def test_outcome_is_forgotten_after_the_window_of_log_time() -> None:
    log = Log()
    log.write(put(b"k", b"v"), key=b"op", at_ms=1000, window=60.0)
    assert log.write(put(b"k", b"v"), key=b"op", at_ms=1000 + 59_999).header.revision == 2  # remembered
    after = log.write(put(b"k", b"v"), key=b"op", at_ms=1000 + 60_000)
    assert after.header.revision == 3  # expired: applied as a new write
    # Now remembered again, from its new first application.
    assert log.write(put(b"k", b"v"), key=b"op", at_ms=1000 + 61_000).header.revision == 3


def test_window_zero_remembers_nothing() -> None:
    log = Log()
    log.write(put(b"k", b"v"), key=b"op", at_ms=1000, window=0.0)
    assert list(log.tables.scan(RECORDS)) == []
    assert log.write(put(b"k", b"v"), key=b"op", at_ms=2000, window=0.0).header.revision == 3


def test_log_time_never_goes_backwards_under_a_new_leader_with_a_slower_clock() -> None:
    log = Log()
    log.write(put(b"k", b"v"), key=b"op", at_ms=10 * MINUTE_MS, window=60.0)
    log.write(put(b"z", b"1"), at_ms=10 * MINUTE_MS + 30_000)
    # A new leader whose clock is 9 minutes behind: log time stays put.
    assert log.write(put(b"k", b"v"), key=b"op", at_ms=MINUTE_MS).header.revision == 2
    assert IdempotencyTable(log.tables).now_ms == 10 * MINUTE_MS + 30_000
    # Log time passes the expiry (an entry of the old leader's clock); the
    # slow leader's stamp cannot bring the record back.
    log.write(put(b"z", b"2"), at_ms=11 * MINUTE_MS)
    assert log.write(put(b"k", b"v"), key=b"op", at_ms=2 * MINUTE_MS).header.revision == 5


def test_unstamped_entries_leave_log_time_alone() -> None:
    log = Log()
    log.write(put(b"k", b"v"), key=b"op", at_ms=5000)
    log.write(put(b"z", b"1"))  # no stamp (0)
    assert IdempotencyTable(log.tables).now_ms == 5000


def test_expired_records_are_purged_with_bounded_work_per_entry() -> None:
    log = Log()
    n = 3 * PURGE_PER_ENTRY
    log.apply(*(log.entry(put(b"k%d" % i, b"v"), key=b"op-%d" % i, at_ms=1000 + i, window=1.0) for i in range(n)))
    log.write(put(b"keep", b"v"), key=b"young", at_ms=1500, window=60.0)
    assert len(list(log.tables.scan(RECORDS))) == n + 1
    log.write(put(b"z", b"1"), at_ms=10_000)  # every op-* expired
    assert len(list(log.tables.scan(RECORDS))) == n + 1 - PURGE_PER_ENTRY
    log.write(put(b"z", b"2"), at_ms=10_001)
    log.write(put(b"z", b"3"), at_ms=10_002)
    assert [k for k, _ in log.tables.scan(RECORDS)] == [b"young"]
    assert len(list(log.tables.scan(EXPIRY))) == 1
    log.write(put(b"z", b"4"), at_ms=10_003)  # nothing more to purge
    assert [k for k, _ in log.tables.scan(RECORDS)] == [b"young"]


def test_applying_keyed_commands_is_deterministic() -> None:
    def run() -> MemoryTables:
        log = Log()
        for i in range(30):
            log.write(put(b"k%d" % (i % 4), b"v"), key=b"op-%d" % (i % 7), at_ms=1000 * i, window=5.0)
        return log.tables

    a, b = run(), run()
    assert a.tables() == b.tables()
    for name in a.tables():
        assert list(a.scan(name)) == list(b.scan(name))


def test_parse_key() -> None:
    assert parse_key(None) is None
    assert parse_key(b"abc") == b"abc"
    assert parse_key(b'"8e03978e-40d5"') == b"8e03978e-40d5"  # the draft's structured-field string
    assert parse_key("x" * MAX_KEY_BYTES) == b"x" * MAX_KEY_BYTES
    for bad in (b"", b'""', b"x" * (MAX_KEY_BYTES + 1), b"a\x00b", "é".encode()):
        with pytest.raises(InvalidArgument):
            parse_key(bad)
    assert key_from_metadata((("other", "1"), ("idempotency-key", "k-1"))) == b"k-1"
    assert key_from_metadata(None) is None


# -- restart and snapshot (LMDB) --------------------------------------------------------

MEMBERS = Membership((Member("a", "127.0.0.1:7070"), Member("b", "127.0.0.1:8080")))


def _open(path: str):
    from twisted.internet import reactor

    from dkv.storage.lmdb_store import LmdbStore

    return LmdbStore.open(path, reactor)


async def _apply_to_store(store, log: Log, *entries: Entry):
    with store.reading() as tables:
        outcome = apply_entries(entries, Overlay().writer(tables))
    await store.write(WriteBatch(HardState(2, "", entries[-1].index), entries, outcome.applied))
    return [result for _, result in outcome.results]


def _retry_on(store, log: Log, request, **kw):
    with store.reading() as tables:
        outcome = apply_entries([log.entry(request, **kw)], Overlay().writer(tables))
    return outcome.results[0][1]


@pytest_twisted.ensureDeferred
async def test_records_survive_a_restart_and_a_snapshot(tmp_path) -> None:
    path = str(tmp_path / "a.db")
    store = _open(path)
    store.bootstrap("cid", MEMBERS)
    log = Log()
    log.index = 1
    (first,) = await _apply_to_store(store, log, log.entry(put(b"k", b"v"), key=b"op", at_ms=1000))
    assert first.header.revision == 2
    await store.close()
    store = _open(path)  # a restart
    target = _open(str(tmp_path / "b.db"))
    try:
        again = _retry_on(store, log, put(b"k", b"v"), key=b"op", at_ms=2000)
        assert again == first
        assert isinstance(_retry_on(store, log, put(b"k", b"w"), key=b"op", at_ms=2000), IdempotencyKeyReused)
        # A snapshot of the state carries the records and log time.
        target.bootstrap("cid", MEMBERS)
        meta = SnapshotMeta(2, 2, MEMBERS)
        reader = store.snapshot_reader(chunk_bytes=512)
        await target.stage_begin(meta)
        seq, crc = 0, 0
        try:
            while True:
                records, last = reader.read(seq)
                crc = record_crc(records, crc)
                await target.stage_chunk(seq, records, crc, last)
                seq += 1
                if last:
                    break
        finally:
            reader.close()
        await target.write(WriteBatch(install=meta, hard_state=HardState(3, "", 2)))
        assert _retry_on(target, log, put(b"k", b"v"), key=b"op", at_ms=3000) == first
        with target.reading() as tables:
            assert IdempotencyTable(Overlay().writer(tables)).now_ms == 1000
    finally:
        await store.close()
        await target.close()


@pytest.mark.parametrize("key, value", [(b"k", b"v" * 300), (b"", b""), (b"a\x00b", b"")])
@pytest.mark.parametrize("idempotency", [None, Idempotency(b"retry-1", WINDOW)])
def test_encode_put_is_encode_of_a_put_request(key: bytes, value: bytes, idempotency: Idempotency | None) -> None:
    """The /v0 write's command, built in place, is byte for byte the
    general encoding of the same PutRequest (the digest a retry is checked
    against included)."""
    rid = RequestId(12345, 6)
    assert encode_put(rid, key, value, idempotency) == encode(rid, PutRequest(key=key, value=value), idempotency)
