# test-case-name: tests.test_statemachine,tests.test_driver_simulation,tests.test_idempotency
"""The replicated state machine: what committed entries do to the state.

Every NORMAL entry's data is a ``dkv.raft.v0.Command`` carrying one of
etcd's writes (``dkv.commands``); applying it runs the multi-version store
(``dkv.mvcc``) over the driver's writable view of the tables. Applying is
deterministic: the same entries on the same tables make the same writes and
the same answers on every node.

``apply_entries`` returns, for the entries given, the table writes (for the
store's next transaction), and for each command the request id and its
result: the response message, or the ``EtcdError`` the store refused it with
(a refused request writes nothing, on every node alike). CONFIG entries,
no-ops (empty data) and data that is not a command (a bug on the proposing
side) change nothing, on every node alike.

Auth writes (``dkv.auth.store``) change the auth tables and say so in the
outcome (``auth_changed``), so nodes drop what they cached of them. A token
an Authenticate issued changes nothing stored; the outcome carries it
(``tokens_issued``) so that every member learns it.

Commands carrying an idempotency key are answered from, and recorded in,
the idempotency table (``dkv.idempotency``): a retry of a write already
applied is answered with its first outcome and changes nothing. Each
command's leader stamp moves log time first.

A batch's ``Outcome`` carries what it knows of the state it leaves (``Carry``:
the store's revisions, the alarm, log time): given to the next batch, that
batch need not read it again. Only the owner of the state knows whether
anything else changed it since (a snapshot installed): it gives a carry only
to the batch right after the one that made it.

While a NOSPACE alarm is active (``dkv.alarms``), the writes that grow the
db (a put, a txn with a put, a lease grant) are refused with etcd's
``NoSpace`` and change nothing, on every node alike.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from dkv.alarms import AlarmTable, grows_db
from dkv.auth.store import COMMAND_FIELDS as AUTH_FIELDS
from dkv.auth.store import AuthStore
from dkv.auth.tokens import token_of
from dkv.commands import RequestId, decode
from dkv.idempotency import IdempotencyTable, LogTime
from dkv.mvcc import MvccStore, lease_ops
from dkv.mvcc.errors import EtcdError, NoSpace
from dkv.mvcc.leases import TableLeases
from dkv.pb.etcd_kv_pb2 import Event
from dkv.pb.etcd_rpc_pb2 import AuthenticateResponse
from dkv.pb.raft_pb2 import IssuedToken
from dkv.raft.messages import Entry, EntryKind
from dkv.storage import Applied
from dkv.storage.overlay import OverlayWriter


@attrs.frozen
class Carry:
    """What a batch knew at its end of the state it left: the store's
    revision and compact revision, whether a NOSPACE alarm is active (None:
    not read), and log time. Valid for that state only: for the next batch,
    if nothing else changed the state in between."""

    revision: int
    compacted: int
    nospace: bool | None
    log_time: LogTime

    @property
    def counters(self) -> tuple[int, int]:
        """(revision, compact revision): what ``MvccView`` reads of the state."""
        return self.revision, self.compacted


@attrs.frozen
class Outcome:
    """What applying a batch of committed entries did."""

    applied: Applied
    #: (request id, response message or EtcdError), in entry order.
    results: tuple[tuple[RequestId, object], ...] = ()
    #: The events of the writes, in revision order (for watchers).
    events: tuple[Event, ...] = ()
    #: Leases granted (id, TTL) and revoked (id), in entry order (for the lessor).
    leases_granted: tuple[tuple[int, int], ...] = ()
    leases_revoked: tuple[int, ...] = ()
    #: An Auth write changed the auth state (``dkv.auth.store``).
    auth_changed: bool = False
    #: The tokens Authenticate issued, in entry order, each with its whole
    #: token (``dkv.auth.tokens``: every member learns them; nothing is
    #: stored).
    tokens_issued: tuple[IssuedToken, ...] = ()
    #: An alarm was raised or cleared (``dkv.alarms``).
    alarms_changed: bool = False
    #: What the batch knew of the state it left, for the next batch
    #: (``apply_entries``' carry); None if it knew nothing (it applied no
    #: command and was given none).
    carry: Carry | None = None


def apply_entries(entries: Iterable[Entry], writer: OverlayWriter, carry: Carry | None = None) -> Outcome:
    """Apply committed entries, in order, through writer (its ``index`` is
    set to each entry's). Precondition: entries is not empty and contiguous
    after the applied index of the state writer shows; carry, if given, is
    the outcome's carry of the batch that left that state, which nothing
    changed since. The answers and writes are the same with or without it."""
    results: list[tuple[RequestId, object]] = []
    events: list[Event] = []
    last = 0
    store: MvccStore | None = None
    idem: IdempotencyTable | None = None
    leases = TableLeases(writer)
    granted: list[tuple[int, int]] = []
    revoked: list[int] = []
    auth_changed = False
    tokens: list[IssuedToken] = []
    alarms_changed = False
    # Whether a NOSPACE alarm is active: read once (or carried), read again
    # after an alarm entry (the only writer of the alarms).
    nospace: bool | None = None if carry is None else carry.nospace
    for entry in entries:
        last = entry.index
        if entry.kind != EntryKind.NORMAL or not entry.data:
            continue
        try:
            cmd = decode(entry.data)
        except Exception:  # noqa: BLE001 - deterministic skip, see the docstring
            continue
        op = cmd.WhichOneof("op")
        if op is None:
            continue
        writer.index = entry.index
        if store is None:
            # One per batch: each follows its own writes.
            store = MvccStore(
                writer, leases=leases, counters=None if carry is None else carry.counters, revision_at_flush=True
            )
            idem = IdempotencyTable(writer, None if carry is None else carry.log_time)
        assert idem is not None
        idem.advance(cmd.leader_time_ms)
        keyed = bool(cmd.idempotency_key)
        result: object | None = idem.replay(cmd) if keyed else None
        if result is not None:
            results.append((RequestId(cmd.origin, cmd.seq), result))
            continue
        request = getattr(cmd, op)
        try:
            if grows_db(op, request):
                if nospace is None:
                    nospace = AlarmTable(writer).active()
                if nospace:
                    raise NoSpace()
            if op == "put":
                written = store.put(request)
                result, events_made = written.response, written.events
            elif op == "delete_range":
                deleted = store.delete_range(cmd.delete_range)
                result, events_made = deleted.response, deleted.events
            elif op == "txn":
                txn = store.txn(cmd.txn)
                result, events_made = txn.response, txn.events
            elif op == "lease_grant":
                result, events_made = lease_ops.grant(store, leases, cmd.lease_grant), ()
                granted.append((cmd.lease_grant.ID, cmd.lease_grant.TTL))
            elif op == "lease_revoke":
                gone = lease_ops.revoke(store, leases, cmd.lease_revoke)
                result, events_made = gone.response, gone.events
                revoked.append(cmd.lease_revoke.ID)
            elif op == "auth_token":
                # The token is the proposed prefix and this entry's index (etcd's shape).
                issued = IssuedToken()
                issued.CopyFrom(cmd.auth_token)
                issued.token = token_of(issued.token, entry.index)
                tokens.append(issued)
                result, events_made = AuthenticateResponse(token=issued.token), ()
            elif op == "alarm":
                result, events_made = AlarmTable(writer).apply(cmd.alarm), ()
                alarms_changed = True
                nospace = None
            elif op in AUTH_FIELDS:
                result, events_made = AuthStore(writer).apply(op, getattr(cmd, op)), ()
                auth_changed = True
            else:
                result, events_made = store.compact(cmd.compaction.revision), ()
        except EtcdError as e:
            result, events_made = e, ()
        if keyed and not isinstance(result, NoSpace):  # not applied: a retry after disarm may apply it
            idem.remember(cmd, result)
        if events_made:
            events.extend(events_made)
        results.append((RequestId(cmd.origin, cmd.seq), result))
    if store is not None:
        assert idem is not None
        store.flush_revision()
        idem.flush()
        carry = Carry(store.revision, store.compact_revision, nospace, idem.carried())
    return Outcome(
        Applied(last, tuple(writer.writes)),
        tuple(results),
        tuple(events),
        tuple(granted),
        tuple(revoked),
        auth_changed,
        tuple(tokens),
        alarms_changed,
        carry,
    )
