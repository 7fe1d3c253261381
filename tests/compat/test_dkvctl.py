"""dkvctl's etcd-style commands (``dkv.ctl_etcd``) as a user runs them,
against a 3-member cluster that speaks etcd's v3 JSON gateway: output as
etcdctl prints it, errors as dkvctl has always printed them, endpoints
tried in order."""

from __future__ import annotations

import pytest

from dkv.storage.snapshot_file import check
from dkv.testing.etcd_cluster import ApiEndpoints
from dkv.testing.launcher import free_ports
from dkv.testing.poll import wait_until
from dkv.testing.process import Exited
from tests.compat.clients import dkvctl, ok, put_all, without_header_ids

pytestmark = [pytest.mark.process, pytest.mark.etcd]

COMPACTED = "dkvctl: etcdserver: mvcc: required revision has been compacted (HTTP 400, code 11)\n"


def v3(api: ApiEndpoints, *args: str) -> Exited:
    """dkvctl with --v3: plain put, get and delete speak the gateway too."""
    return dkvctl(api, "--v3", *args)


def test_get_put_and_del_with_etcds_options(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    put_all(v3, api, ("foo", "bar"), ("foo1", "bar1"), ("foo2", "bar2"), ("zoo", "z"))  # revisions 2..5
    assert ok(dkvctl(api, "put", "foo", "baz", "--prev-kv")) == "OK\nfoo\nbar\n"  # revision 6

    def get(*args: str) -> str:
        return ok(dkvctl(api, "get", *args))

    assert ok(dkvctl(api, "--v3", "get", "foo")) == "foo\nbaz\n"
    assert ok(dkvctl(api, "--v3", "get", "nothing-here")) == ""
    assert get("foo", "--prefix") == "foo\nbaz\nfoo1\nbar1\nfoo2\nbar2\n"
    assert get("foo1", "--from-key") == "foo1\nbar1\nfoo2\nbar2\nzoo\nz\n"
    assert get("foo1", "zoo") == "foo1\nbar1\nfoo2\nbar2\n"
    assert get("foo", "--prefix", "--limit", "2") == "foo\nbaz\nfoo1\nbar1\n"
    assert get("foo", "--prefix", "--rev", "3") == "foo\nbar\nfoo1\nbar1\n"
    assert get("foo", "--prefix", "--sort-by", "modify", "--order", "descend") == "foo\nbaz\nfoo2\nbar2\nfoo1\nbar1\n"
    assert get("foo", "--prefix", "--keys-only") == "foo\nfoo1\nfoo2\n"
    assert get("foo", "--prefix", "--count-only") == "3\n"
    every = ("", "--from-key", "--serializable", "--count-only")  # a follower's own state: it may lag
    wait_until(lambda: get(*every) == "4\n", 10, "a serializable read to see every key")
    assert without_header_ids(ok(dkvctl(api, "--json", "get", "foo", "--rev", "2"))) == (
        '{"header": {"cluster_id": "0", "member_id": "0", "revision": "6", "raft_term": "0"}, '
        '"kvs": [{"key": "Zm9v", "create_revision": "2", "mod_revision": "2", "version": "1", "value": "YmFy"}], '
        '"count": "1"}\n'
    )
    assert ok(dkvctl(api, "del", "foo", "--prefix", "--prev-kv")) == "3\nfoo\nbaz\nfoo1\nbar1\nfoo2\nbar2\n"
    assert ok(dkvctl(api, "del", "foo", "--prev-kv")) == "0\n"
    assert ok(dkvctl(api, "--b64", "get", "", "--from-key")) == "em9v\neg==\n"


def test_txn_from_standard_input(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    put_all(v3, api, ("foo", "bar"), ("foo1", "bar1"))
    held = dkvctl(api, "txn", stdin='value("foo") = "bar"\ncreate(foo1) > 0\n\nput foo qux\nget foo1\n\nput foo nope\n')
    assert ok(held) == "SUCCESS\n\nOK\n\nfoo1\nbar1\n"
    otherwise = "put foo nope --prev-kv\ndel foo1\nget foo --count-only\n"
    failed = dkvctl(api, "txn", stdin='value("foo") = "bar"\n\nput foo qux\n\n' + otherwise)
    assert ok(failed) == "FAILURE\n\nOK\nfoo\nqux\n\n1\n\n1\n"
    assert ok(dkvctl(api, "get", "", "--from-key")) == "foo\nnope\n"
    unreadable = dkvctl(api, "txn", stdin='value("foo") = bar\n\nput foo\n')
    assert (unreadable.returncode, unreadable.stderr) == (
        1, "dkvctl: txn line 3: the following arguments are required: value\n"
    )  # fmt: skip


def test_compact_then_reads_below_and_above(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    put_all(v3, api, ("foo", "bar"), ("foo", "baz"), ("foo", "qux"))  # revisions 2, 3, 4
    assert ok(dkvctl(api, "compact", "3")) == "compacted revision 3\n"
    below = dkvctl(api, "get", "foo", "--rev", "2")
    assert (below.returncode, below.stdout, below.stderr) == (1, "", COMPACTED)
    assert ok(dkvctl(api, "get", "foo", "--rev", "3")) == "foo\nbaz\n"
    future = dkvctl(api, "get", "foo", "--rev", "9")
    assert (future.returncode, future.stderr) == (
        1, "dkvctl: etcdserver: mvcc: required revision is a future revision (HTTP 400, code 11)\n"
    )  # fmt: skip
    again = dkvctl(api, "compact", "3")
    assert (again.returncode, again.stderr) == (1, COMPACTED)


def test_endpoint_status_and_hashes_of_every_endpoint(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    put_all(v3, api, ("a", "1"), ("b", "2"))
    leader = api.leader()
    rows = [line.split(", ") for line in ok(dkvctl(api, "endpoint", "status")).splitlines()]
    assert [row[0] for row in rows] == list(api.gateway_urls)
    assert [row[1] for row in rows] == [format(i, "x") for i in api.member_ids()]
    assert [row[4] for row in rows] == ["true" if i == leader else "false" for i in range(len(rows))]

    def equal(command: str) -> list[list[str]] | None:
        rows = [line.split(", ") for line in ok(dkvctl(api, command)).splitlines()]
        return rows if len({row[1] for row in rows}) == 1 else None  # a member may still be applying

    hashes = wait_until(lambda: equal("hash"), 10, "every member to report the same hash")
    assert [row[0] for row in hashes] == list(api.gateway_urls) and hashes[0][1].isdigit()
    if api.system == "etcd":
        # etcd 3.4's gateway routes no HashKV: its HTTP rule repeats Hash's path.
        done = dkvctl(api, "hashkv")
        assert (done.returncode, done.stdout, done.stderr) == (1, "", "dkvctl: HTTP 404 Not Found\n")
    else:
        rows = wait_until(lambda: equal("hashkv"), 10, "every member to report the same hashkv")
        assert [row[2] for row in rows] == ["-1"] * len(rows)  # never compacted: -1, as etcd's HashKV


def test_endpoints_are_tried_in_order(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    down = [f"127.0.0.1:{port}" for port in free_ports(2)]
    assert ok(dkvctl(api, "put", "k", "v", "--prev-kv", endpoints=",".join([*down, api.gateway_urls[1]]))) == "OK\n"
    nowhere = dkvctl(api, "get", "k", "--prefix", endpoints=",".join(down))
    assert (nowhere.returncode, nowhere.stdout) == (2, "")
    assert nowhere.stderr == f"dkvctl: cannot reach {down[0]}, {down[1]}: [Errno 111] Connection refused\n"
    # endpoint status asks every endpoint: the rows of those that answer, then the first that did not
    partly = dkvctl(api, "endpoint", "status", endpoints=f"{api.gateway_urls[0]},{down[0]}")
    assert partly.returncode == 2 and partly.stdout.startswith(api.gateway_urls[0] + ", ")
    assert len(partly.stdout.splitlines()) == 1
    assert partly.stderr == f"dkvctl: cannot reach {down[0]}: [Errno 111] Connection refused\n"


def test_snapshot_save_writes_a_checked_file(v3_cluster: ApiEndpoints, tmp_path) -> None:
    """etcd's gateway streams its bbolt file and its SHA-256 as dkv streams
    its LMDB file and its SHA-256: dkvctl saves either, checked."""
    api = v3_cluster
    put_all(v3, api, ("a", "1"))
    path = tmp_path / "snapshot.db"
    lines = ok(dkvctl(api, "snapshot", "save", str(path))).splitlines()
    assert lines[0] == f"Snapshot saved at {path}"
    assert lines[1].endswith(f"sha256 {check(str(path)).sha256}")
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot.db"]
