"""etcdctl (etcd's own client, v3 API) against a 3-member cluster that
speaks etcd's API. Where etcdctl's output is deterministic on a fresh
cluster it is compared byte for byte (so the same assertion proves another
server's answers identical to etcd's); where it carries ids, URLs or terms,
its shape is checked against what the cluster says of itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dkv.testing.etcd_cluster import ApiEndpoints
from dkv.testing.poll import wait_until
from tests.compat.clients import error_lines, etcdctl, ok, put_all, without_header_ids

pytestmark = [pytest.mark.process, pytest.mark.etcd]

COMPACTED = "Error: etcdserver: mvcc: required revision has been compacted"
FUTURE = "Error: etcdserver: mvcc: required revision is a future revision"
#: What ``txn -i`` prints while it reads its input.
PROMPTS = "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n"


def test_put_and_get_with_prefix_from_key_limit_rev_sort_and_json(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    put_all(etcdctl, api, ("foo", "bar"), ("foo1", "bar1"), ("foo2", "bar2"), ("zoo", "z"))  # revisions 2..5
    assert ok(etcdctl(api, "put", "--prev-kv", "foo", "baz")) == "OK\nfoo\nbar\n"  # revision 6

    def get(*args: str) -> str:
        return ok(etcdctl(api, "get", *args))

    assert get("foo") == "foo\nbaz\n"
    assert get("nothing-here") == ""
    assert get("foo", "--prefix") == "foo\nbaz\nfoo1\nbar1\nfoo2\nbar2\n"
    assert get("foo1", "--from-key") == "foo1\nbar1\nfoo2\nbar2\nzoo\nz\n"
    assert get("foo1", "zoo") == "foo1\nbar1\nfoo2\nbar2\n"
    assert get("foo", "--prefix", "--limit", "2") == "foo\nbaz\nfoo1\nbar1\n"
    assert get("foo", "--rev", "2") == "foo\nbar\n"
    assert get("foo", "--prefix", "--rev", "3") == "foo\nbar\nfoo1\nbar1\n"
    assert get("foo", "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND") == "foo\nbaz\nfoo2\nbar2\nfoo1\nbar1\n"
    assert get("foo", "--prefix", "--sort-by", "VALUE") == "foo1\nbar1\nfoo2\nbar2\nfoo\nbaz\n"
    assert get("", "--prefix", "--sort-by", "VERSION", "--order", "DESCEND", "--limit", "1") == "foo\nbaz\n"
    assert get("foo", "--prefix", "--keys-only") == "foo\n\nfoo1\n\nfoo2\n\n"
    assert without_header_ids(get("foo", "-w", "json")) == (
        '{"header":{"cluster_id":0,"member_id":0,"revision":6,"raft_term":0},'
        '"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":6,"version":2,"value":"YmF6"}],"count":1}\n'
    )
    assert without_header_ids(get("foo", "--prefix", "--limit", "1", "-w", "json")) == (
        '{"header":{"cluster_id":0,"member_id":0,"revision":6,"raft_term":0},'
        '"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":6,"version":2,"value":"YmF6"}],"more":true,"count":3}\n'
    )


def test_del_with_prefix_and_prev_kv(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    put_all(etcdctl, api, ("foo", "bar"), ("foo1", "bar1"), ("foo2", "bar2"), ("zoo", "z"))
    assert ok(etcdctl(api, "del", "--prefix", "--prev-kv", "foo")) == "3\nfoo\nbar\nfoo1\nbar1\nfoo2\nbar2\n"
    assert ok(etcdctl(api, "del", "foo")) == "0\n"
    assert ok(etcdctl(api, "get", "", "--from-key")) == "zoo\nz\n"
    assert ok(etcdctl(api, "get", "foo", "--rev", "5")) == "foo\nbar\n"  # history keeps what was deleted


def test_txn_whose_compares_hold_and_fail(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    put_all(etcdctl, api, ("foo", "bar"), ("foo1", "bar1"))  # revisions 2, 3
    compares = 'value("foo") = "bar"\nversion("foo1") = "1"\ncreate("foo") = "2"\n'
    held = etcdctl(api, "txn", "-i", stdin=compares + "\nput foo qux\nget foo1\n\nput foo nope\n\n")
    assert ok(held) == PROMPTS + "SUCCESS\n\nOK\n\nfoo1\nbar1\n"  # revision 4
    compares = 'value("foo") = "bar"\nmod("foo") > "3"\n'
    failed = etcdctl(api, "txn", "-i", stdin=compares + "\nput foo qux\n\nput foo nope\ndel foo1\nget foo --prefix\n\n")
    assert ok(failed) == PROMPTS + "FAILURE\n\nOK\n\n1\n\nfoo\nnope\n"  # revision 5
    as_json = etcdctl(api, "txn", "-w", "json", "-i", stdin='create("new") = "0"\n\nput new v\n\n\n')
    assert without_header_ids(ok(as_json)) == PROMPTS + (
        '{"header":{"cluster_id":0,"member_id":0,"revision":6,"raft_term":0},"succeeded":true,'
        '"responses":[{"Response":{"ResponsePut":{"header":{"revision":6}}}}]}\n'
    )
    assert ok(etcdctl(api, "get", "", "--from-key")) == "foo\nnope\nnew\nv\n"


def test_compaction_then_a_read_below_it(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    put_all(etcdctl, api, ("foo", "bar"), ("foo", "baz"), ("foo", "qux"))  # revisions 2, 3, 4
    assert ok(etcdctl(api, "compaction", "3")) == "compacted revision 3\n"
    below = etcdctl(api, "get", "foo", "--rev", "2")
    assert (below.returncode, below.stdout, error_lines(below)) == (1, "", [COMPACTED])
    assert ok(etcdctl(api, "get", "foo", "--rev", "3")) == "foo\nbaz\n"
    future = etcdctl(api, "get", "foo", "--rev", "5")
    assert (future.returncode, error_lines(future)) == (1, [FUTURE])
    again = etcdctl(api, "compaction", "3")
    assert (again.returncode, error_lines(again)) == (1, [COMPACTED])
    assert ok(etcdctl(api, "compaction", "--physical", "4")) == "compacted revision 4\n"


def _member_lines(api: ApiEndpoints) -> list[list[str]]:
    return [line.split(", ") for line in ok(etcdctl(api, "member", "list")).splitlines()]


def test_member_list(v3_cluster: ApiEndpoints) -> None:
    """ID, status, name, peer URLs, client URLs, is learner: the client URL
    of each member is where its gRPC is served (etcdctl's --cluster dials
    it)."""
    api = v3_cluster
    rows = _member_lines(api)
    ids = {name: format(member_id, "x") for name, member_id in zip(api.names, api.member_ids(), strict=True)}
    assert len(rows) == len(api.names)
    for row in rows:
        assert len(row) == 6 and row[1] == "started" and row[5] == "false", row
        name = row[2]
        assert row[0] == ids[name]
        assert re.fullmatch(r"https?://[^,\s]+", row[3]), row
        assert row[4] == "http://" + api.grpc_addresses[api.names.index(name)]
    assert sorted(row[2] for row in rows) == sorted(api.names)


def test_endpoint_status(v3_cluster: ApiEndpoints) -> None:
    """Endpoint, member id, version, db size, is leader, is learner, raft
    term, raft index, raft applied index, errors."""
    api = v3_cluster
    leader = api.leader()
    ids = api.member_ids()
    rows = [line.split(", ") for line in ok(etcdctl(api, "endpoint", "status")).splitlines()]
    assert [row[0] for row in rows] == list(api.grpc_addresses)
    assert [row[1] for row in rows] == [format(i, "x") for i in ids]
    assert [row[4] for row in rows] == ["true" if i == leader else "false" for i in range(len(rows))]
    for row in rows:
        assert len(row) == 10 and row[5] == "false" and row[9] == "", row
        assert re.fullmatch(r"\d+(\.\d+)? [kMG]?B", row[3]), row
        assert all(field.isdigit() for field in row[6:9]), row
    assert len({row[6] for row in rows}) == 1  # one term


def test_endpoint_hashkv_is_equal_on_every_member(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    put_all(etcdctl, api, ("a", "1"), ("b", "2"), ("a", "3"))
    assert ok(etcdctl(api, "del", "b")) == "1\n"
    assert ok(etcdctl(api, "compaction", "3")) == "compacted revision 3\n"

    def hashes() -> dict[str, str] | None:
        rows = dict(line.split(", ") for line in ok(etcdctl(api, "endpoint", "hashkv", "--cluster")).splitlines())
        return rows if len(set(rows.values())) == 1 else None  # a member may still be applying

    rows = wait_until(hashes, 10, "every member to report the same hash")
    assert sorted(rows) == sorted("http://" + address for address in api.grpc_addresses)
    assert all(value.isdigit() for value in rows.values())


def test_snapshot_save(v3_cluster: ApiEndpoints, tmp_path: Path) -> None:
    api = v3_cluster
    put_all(etcdctl, api, ("a", "1"))
    path = tmp_path / "snapshot.db"
    saved = etcdctl(api, "snapshot", "save", str(path), endpoints=api.grpc_addresses[0])
    assert ok(saved) == f"Snapshot saved at {path}\n"
    assert path.stat().st_size > 0


def test_move_leader(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    leader = api.leader()
    target = (leader + 1) % len(api.names)
    ids = [format(i, "x") for i in api.member_ids()]
    moved = etcdctl(api, "move-leader", ids[target])
    assert ok(moved) == f"Leadership transferred from {ids[leader]} to {ids[target]}\n"
    assert api.leader() == target
    assert ok(etcdctl(api, "put", "after", "move")) == "OK\n"
