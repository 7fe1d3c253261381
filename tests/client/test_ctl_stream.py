"""dkvctl watch and lock without a cluster: how events are printed (as
etcdctl's simple format) and how ``lock NAME -- COMMAND`` is parsed."""

from __future__ import annotations

from dkv.client.values import Event, KeyValue
from dkv.ctl import parse
from dkv.ctl_stream import event_lines


def test_events_print_as_etcdctl_prints_them() -> None:
    put = Event("PUT", KeyValue(b"foo", b"bar", 2, 3, 2), KeyValue(b"foo", b"old", 2, 2, 1))
    assert event_lines(put, False) == ["PUT", "foo", "old", "foo", "bar"]
    deleted = Event("DELETE", KeyValue(b"foo", b"", 0, 4))
    assert event_lines(deleted, False) == ["DELETE", "foo", ""]
    assert event_lines(Event("PUT", KeyValue(b"\xff", b"v")), False) == ["PUT", "base64:/w==", "v"]
    assert event_lines(Event("PUT", KeyValue(b"k", b"v")), True) == ["PUT", "aw==", "dg=="]


def test_lock_takes_everything_after_the_separator_as_its_command() -> None:
    args = parse(["--endpoint", "h:1", "lock", "jobs", "--ttl", "3", "--", "sh", "-c", "exit 3", "--ttl"])
    assert (args.command, args.name, args.ttl, args.exec_command) == (
        "lock",
        "jobs",
        3,
        ["sh", "-c", "exit 3", "--ttl"],
    )
    held = parse(["lock", "jobs"])
    assert (held.ttl, held.exec_command) == (10, [])
    assert parse(["put", "lock", "--", "-v"]).value == "-v"
    watch = parse(["watch", "k", "--prefix", "--rev", "4", "--prev-kv"])
    assert (watch.key, watch.end, watch.prefix, watch.rev, watch.prev_kv) == ("k", None, True, 4, True)
