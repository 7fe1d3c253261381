"""dkv.mvcc against the reference model (tests/mvcc_model.py): random
sequences of Put, DeleteRange, Txn (compares, nested txns), Range (at random
revisions, with every option), Compact and reads of the event history must
give identical answers -- the same response messages, or the same etcd
error. Along the way: a second store fed the same requests holds the same
tables and the same HashKV (determinism); a store reopened over the same
tables answers the same (restart); the derived tables agree with the
history."""

from __future__ import annotations

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from dkv.mvcc import MvccStore, errors
from dkv.storage.tables import MemoryTables
from tests.mvcc.invariants import check_derived_tables
from tests.mvcc.strategies import deletes, puts, ranges, txns
from tests.mvcc_model import Model

#: Revisions for events: the past, the compacted past, the present, the
#: future and values <= 0.
REVISIONS = st.integers(min_value=-2, max_value=30)


def outcome(call):
    try:
        return call()
    except errors.EtcdError as error:
        return type(error)


def without_prev_kv(events):
    stripped = []
    for ev in events:
        copy = type(ev)()
        copy.CopyFrom(ev)
        copy.ClearField("prev_kv")
        stripped.append(copy)
    return stripped


class StoreMatchesModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.tables = MemoryTables()
        self.store = MvccStore(self.tables)
        # fed the same writes; its events carry prev_kv
        self.replica_tables = MemoryTables()
        self.replica = MvccStore(self.replica_tables, prev_kv_in_events=True)

    def _write(self, method: str, request) -> None:
        expected = outcome(lambda: getattr(self.model, method)(request))
        got = outcome(lambda: getattr(self.store, method)(request))
        again = outcome(lambda: getattr(self.replica, method)(request))
        event(f"{method}: " + (type(got.response).__name__ if isinstance(expected, tuple) else expected.__name__))
        if isinstance(expected, tuple):
            response, events = expected
            assert not isinstance(got, type), f"{method} raised {got.__name__}, the model answered {response}"
            assert got.response == response
            assert list(got.events) == without_prev_kv(events)
            assert again.response == response
            assert list(again.events) == events
        else:
            assert got == expected
            assert again == expected

    @initialize(requests=st.lists(puts(), min_size=2, max_size=8))
    def some_keys(self, requests) -> None:
        for request in requests:
            self._write("put", request)

    @rule(request=puts())
    def put(self, request) -> None:
        self._write("put", request)

    @rule(request=deletes())
    def delete_range(self, request) -> None:
        self._write("delete_range", request)

    @rule(request=puts())
    def put_again(self, request) -> None:
        """(Puts twice as often as the other writes, so keys pile up.)"""
        self._write("put", request)

    def revisions(self) -> st.SearchStrategy[int]:
        """Mostly the uncompacted past and the present; sometimes the
        compacted past, the future, or <= 0 (the newest)."""
        newest = self.model.revision
        return st.one_of(
            st.integers(max(self.model.compacted, 1), newest),
            st.integers(-2, newest + 2),
        )

    @rule(data=st.data())
    def txn(self, data) -> None:
        self._write("txn", data.draw(txns(self.revisions())))

    @rule(data=st.data())
    def range(self, data) -> None:
        request = data.draw(ranges(self.revisions()))
        answer = outcome(lambda: self.model.range(request))
        event(
            "range: "
            + (
                f"{min(len(answer.kvs), 3)}+ kvs of {min(answer.count, 3)}+"
                if not isinstance(answer, type)
                else answer.__name__
            )
        )
        assert outcome(lambda: self.store.range(request)) == outcome(lambda: self.model.range(request))

    @rule(data=st.data())
    def compact(self, data) -> None:
        revision = data.draw(self.revisions())
        expected = outcome(lambda: self.model.compact(revision))
        assert outcome(lambda: self.store.compact(revision)) == expected
        assert outcome(lambda: self.replica.compact(revision)) == expected

    @rule(
        start=REVISIONS,
        end=st.none() | REVISIONS,
        limit=st.none() | st.integers(1, 4),
        prev_kv=st.booleans(),
    )
    def events(self, start: int, end, limit, prev_kv: bool) -> None:
        expected = outcome(lambda: self.model.events(start, end, limit, prev_kv))
        assert outcome(lambda: self.store.events(start, end, limit, prev_kv=prev_kv)) == expected

    @rule()
    def restart(self) -> None:
        """A new store over the same tables is the same store."""
        self.store = MvccStore(self.tables)

    @invariant()
    def same_revisions(self) -> None:
        assert self.store.revision == self.replica.revision == self.model.revision
        assert self.store.compact_revision == self.model.compacted

    @invariant()
    def replicas_hold_the_same_tables(self) -> None:
        assert self.tables._data == self.replica_tables._data
        assert self.store.hash_kv() == self.replica.hash_kv()

    @invariant()
    def derived_tables_agree_with_the_history(self) -> None:
        check_derived_tables(self.tables)


StoreMatchesModel.TestCase.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
test_store_matches_model = StoreMatchesModel.TestCase
