# test-case-name: tests.test_idempotency,tests.test_idempotency_driver,tests.test_idempotency_api
"""Exactly-once writes: what the state machine remembers of writes that
carried an idempotency key, and log time.

**Log time.** The leader's driver stamps its clock (``LeaderStamps``: the
log time it found on taking the lead, moved on by the injected reactor's
``seconds()``, which is monotonic, in milliseconds) into every command it
appends, its own and those forwarded to it (``Command.leader_time_ms``,
``dkv.commands.stamp``).
Applying an entry moves log time to ``max(stamp, log time so far)``: it
never goes backwards, even when a new leader's clock is behind the old
one's, and an unstamped entry (0) leaves it alone. Log time is kept in the
state tables (``idem.meta``), so every replica, after a restart or a
snapshot install too, computes the same time from the same log. No replica's
clock is ever read when applying, and the Raft core sees none of this (the
stamp is part of the opaque entry data).

**Records.** A command with ``idempotency_key`` is looked up in
``idem.records`` before it is applied:

- a record that has not expired (``expires_ms > log time``) and the same
  digest: the write is not applied again; its answer is the recorded
  outcome (the response message, same revision, or the etcd error);
- the same key with another digest: refused with ``IdempotencyKeyReused``
  (HTTP 422, gRPC FAILED_PRECONDITION); nothing is written;
- otherwise (no record, or an expired one) it is applied and its outcome
  recorded until ``log time + idempotency_window_ms`` (a window of 0
  remembers nothing).

Expired records are purged as log time moves: ``idem.expiry`` orders them
by expiry (``expires_ms`` big-endian + key), and each applied entry that
moves log time purges at most ``PURGE_PER_ENTRY`` of them, oldest first --
bounded work, and the same on every replica (the table remembers, within a
batch, when the next record expires, so entries in between scan nothing).
Log time is written once per batch (``flush``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
from google.protobuf import descriptor_pool
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from dkv.errors import DkvError, InvalidArgument
from dkv.mvcc.errors import Code, EtcdError
from dkv.pb.idempotency_pb2 import IdempotencyRecord
from dkv.pb.raft_pb2 import Command

if TYPE_CHECKING:  # dkv.storage's package imports Twisted; this needs only the protocols
    from dkv.storage.tables import Tables, WritableTables

RECORDS = "idem.records"
EXPIRY = "idem.expiry"
META = "idem.meta"
#: META key: log time in ms (absent: 0).
LOG_TIME = b"log_time"

#: Longest idempotency key accepted (bytes); longer is refused with 400.
MAX_KEY_BYTES = 256
#: Expired records purged per applied entry, at most.
PURGE_PER_ENTRY = 8

_U64 = struct.Struct(">Q")
_NEVER = 1 << 64


def stored_log_time_ms(tables: Tables) -> int:
    """Log time as the applied state in tables holds it (ms; 0: none yet)."""
    raw = tables.get(META, LOG_TIME)
    return 0 if raw is None else _U64.unpack(raw)[0]


class LeaderStamps:
    """What a leader stamps (ms): log time as it found it when it started
    leading, advanced by its own *monotonic* clock since then. No wall-clock
    step moves it (a wall clock stepped +1 h would otherwise expire every
    record of the window at once), and it carries on from the log time the
    last leader reached even on another machine, whose monotonic clock has
    another origin. A new leader whose applied state lags starts a little
    behind: ``advance`` keeps log time from moving back meanwhile (records
    then live a little longer, never shorter), and once its applied log time
    overtakes its stamps it starts again just past it. ``stop`` when
    leadership ends; the next ``now_ms`` starts again from log time."""

    def __init__(self) -> None:
        self._origin: tuple[int, float] | None = None

    def now_ms(self, monotonic_seconds: float, log_time_ms: Callable[[], int]) -> int:
        """The stamp at monotonic_seconds; log_time_ms reads the applied log time."""
        applied = log_time_ms()
        if self._origin is not None:
            base, since = self._origin
            stamp = base + max(0, int((monotonic_seconds - since) * 1000))
            if stamp > applied:
                return stamp
        self._origin = (applied + 1, monotonic_seconds)  # never 0: 0 is "unstamped"
        return applied + 1

    def stop(self) -> None:
        self._origin = None


class IdempotencyKeyReused(DkvError):
    """The key was first used with another request (the IETF draft's 422)."""

    http_status = 422
    grpc_code = 9  # FAILED_PRECONDITION
    default_message = "idempotency key was already used with a different request"


def parse_key(raw: bytes | str | None) -> bytes | None:
    """The key of an ``Idempotency-Key`` header or ``idempotency-key`` gRPC
    metadata value: as it is, or the string inside double quotes (the
    draft's structured-field string). None if absent. Raises
    InvalidArgument for an empty key, one over ``MAX_KEY_BYTES``, or one with
    bytes outside printable ASCII."""
    if raw is None:
        return None
    key = raw.encode("latin-1") if isinstance(raw, str) else raw
    key = key.strip(b" \t")
    if len(key) >= 2 and key[:1] == b'"' and key[-1:] == b'"':
        key = key[1:-1]
    if not key:
        raise InvalidArgument("Idempotency-Key must not be empty")
    if len(key) > MAX_KEY_BYTES:
        raise InvalidArgument(f"Idempotency-Key is {len(key)} bytes; the limit is {MAX_KEY_BYTES}")
    if any(b < 0x20 or b > 0x7E for b in key):
        raise InvalidArgument("Idempotency-Key must be printable ASCII")
    return key


#: The gRPC metadata key that carries an idempotency key.
METADATA_KEY = "idempotency-key"


def key_from_metadata(metadata: object) -> bytes | None:
    """The idempotency key in a gRPC call's invocation metadata (pairs of
    key and value), parsed (``parse_key``); None if absent."""
    for name, value in metadata or ():  # type: ignore[attr-defined]
        if name == METADATA_KEY:
            return parse_key(value)
    return None


@attrs.frozen
class LogTime:
    """What an IdempotencyTable knows at the end of a batch: log time (ms,
    as the tables hold it) and a bound no record expires before (0:
    unknown). Valid for the state that batch left, as long as only the
    next batch's table changes it."""

    now_ms: int
    next_expiry_ms: int


class IdempotencyTable:
    """The records and log time over one batch's writable tables (made once
    per batch by ``dkv.statemachine``; it follows its own writes)."""

    def __init__(self, tables: WritableTables, carried: LogTime | None = None) -> None:
        """carried: what the table over the state as the last batch left it
        knew at its end (``carried()``); None reads log time from tables."""
        self._tables = tables
        if carried is not None:
            self._now, self._stored, self._next_expiry = carried.now_ms, carried.now_ms, carried.next_expiry_ms
            return
        raw = tables.get(META, LOG_TIME)
        self._now = self._stored = 0 if raw is None else _U64.unpack(raw)[0]
        #: No record expires before this (ms); unknown (0) until a purge looked.
        self._next_expiry = 0

    def carried(self) -> LogTime:
        """Log time and the earliest expiry known, for the next batch's table
        (after ``flush``: the tables hold this log time)."""
        return LogTime(self._now, self._next_expiry)

    @property
    def now_ms(self) -> int:
        """Log time, in milliseconds."""
        return self._now

    def advance(self, stamp_ms: int) -> None:
        """An entry stamped stamp_ms is applied: log time moves to the max,
        and expired records are purged (at most ``PURGE_PER_ENTRY``)."""
        if stamp_ms <= self._now:
            return
        self._now = stamp_ms
        if self._next_expiry <= stamp_ms:
            self._purge()

    def flush(self) -> None:
        """Write log time (once per batch, not per entry)."""
        if self._now != self._stored:
            self._tables.put(META, LOG_TIME, _U64.pack(self._now))
            self._stored = self._now

    def _purge(self) -> None:
        expired: list[bytes] = []
        self._next_expiry = _NEVER
        for index_key, _ in self._tables.scan(EXPIRY):
            expires = _U64.unpack_from(index_key)[0]
            if expires > self._now or len(expired) >= PURGE_PER_ENTRY:
                self._next_expiry = expires
                break
            expired.append(index_key)
        for index_key in expired:
            self._tables.delete(EXPIRY, index_key)
            self._tables.delete(RECORDS, index_key[_U64.size :])

    def replay(self, cmd: Command) -> object | None:
        """What a keyed command is answered with instead of being applied:
        the recorded outcome (a response message or an EtcdError), or
        IdempotencyKeyReused; None if it must be applied (no key, no live
        record)."""
        if not cmd.idempotency_key:
            return None
        raw = self._tables.get(RECORDS, cmd.idempotency_key)
        if raw is None:
            return None
        record = IdempotencyRecord.FromString(raw)
        if record.expires_ms <= self._now:
            self._forget(cmd.idempotency_key, record.expires_ms)
            return None
        if record.digest != cmd.idempotency_digest:
            return IdempotencyKeyReused(
                "idempotency key was already used with a different request; use a new key for a new request"
            )
        return _outcome(record)

    def remember(self, cmd: Command, result: object) -> None:
        """Record the outcome a keyed command was applied with."""
        if not cmd.idempotency_key or cmd.idempotency_window_ms == 0:
            return
        record = IdempotencyRecord(
            digest=cmd.idempotency_digest,
            applied_ms=self._now,
            expires_ms=self._now + cmd.idempotency_window_ms,
        )
        if isinstance(result, EtcdError):
            record.refusal.code = int(result.code)
            record.refusal.message = result.message
        elif isinstance(result, Message):
            record.response.type = result.DESCRIPTOR.full_name
            record.response.data = result.SerializeToString(deterministic=True)
        else:
            return  # nothing a client could be answered with again
        key = cmd.idempotency_key
        self._tables.put(RECORDS, key, record.SerializeToString(deterministic=True))
        self._tables.put(EXPIRY, _U64.pack(record.expires_ms) + key, b"")
        self._next_expiry = min(self._next_expiry, record.expires_ms) if self._next_expiry else 0

    def _forget(self, key: bytes, expires_ms: int) -> None:
        self._tables.delete(RECORDS, key)
        self._tables.delete(EXPIRY, _U64.pack(expires_ms) + key)


def _outcome(record: IdempotencyRecord) -> object:
    if record.WhichOneof("outcome") == "refusal":
        return _etcd_error(record.refusal.code, record.refusal.message)
    descriptor = descriptor_pool.Default().FindMessageTypeByName(record.response.type)
    return GetMessageClass(descriptor).FromString(record.response.data)


def _etcd_error(code: int, message: str) -> EtcdError:
    """The EtcdError class with this code and message (a generic one if no
    class has them)."""
    pending: list[type[EtcdError]] = [EtcdError]
    while pending:
        cls = pending.pop()
        if cls.message == message and int(cls.code) == code:
            return cls()
        pending.extend(cls.__subclasses__())
    return _RecordedError(Code(code) if code in Code._value2member_map_ else Code.UNKNOWN, message)


class _RecordedError(EtcdError):
    """A recorded refusal whose class is no longer known: its code and message."""

    def __init__(self, code: Code, message: str) -> None:
        Exception.__init__(self, message)
        self.code = code  # type: ignore[misc]
        self.message = message  # type: ignore[misc]
