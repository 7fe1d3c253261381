"""``etcdctl watch`` (key, ``--prefix``, ``--rev``, ``--prev-kv``) against a
3-member cluster that speaks etcd's API, run in the background with its
output read under a deadline. etcdctl's watch output has no ids, so it is
compared byte for byte: the same assertions pass against etcd and dkv."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from dkv.testing.etcd_cluster import ApiEndpoints, etcd_env, etcdctl_binary
from dkv.testing.launcher import child_env
from dkv.testing.poll import wait_until
from dkv.testing.process import Process, run_to_exit
from tests.compat.clients import etcdctl, ok, put_all
from tests.compat.test_etcd3gw import client

pytestmark = [pytest.mark.process, pytest.mark.etcd]


class Watching:
    """Background ``etcdctl watch`` processes, killed when the test ends."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[Process] = []

    def start(self, api: ApiEndpoints, *args: str, endpoints: str | None = None) -> Process:
        binary = etcdctl_binary()
        if binary is None:
            pytest.skip("etcdctl is not installed")
        argv = [binary, "--endpoints", endpoints or api.etcdctl_endpoints, "watch", *args]
        proc = Process(
            argv,
            log_path=self.directory / f"watch-{len(self.procs)}.log",
            env=etcd_env() | {"ETCDCTL_API": "3"},
            name=f"etcdctl watch {' '.join(args)}",
        )
        self.procs.append(proc)
        proc.start()
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.close()


@pytest.fixture
def watching(tmp_path: Path) -> Iterator[Watching]:
    w = Watching(tmp_path)
    try:
        yield w
    finally:
        w.close()


def printed(proc: Process) -> str:
    """What the watch printed so far (without the harness's notes)."""
    return "".join(line for line in proc.log_text().splitlines(keepends=True) if not line.startswith("=== harness"))


def until(proc: Process, wanted: str, timeout: float = 15.0) -> str:
    """Wait until proc printed at least len(wanted) characters; return them."""
    try:
        wait_until(lambda: len(printed(proc)) >= len(wanted), timeout, f"{proc.name} to print {wanted!r}")
    except AssertionError:
        raise AssertionError(f"{proc.name} printed {printed(proc)!r}, wanted {wanted!r}") from None
    return printed(proc)


HISTORY = "PUT\nfoo\nbar\nPUT\nfoo\nbaz\nDELETE\nfoo\n\n"


def test_watch_replays_from_a_revision_then_follows(v3_cluster: ApiEndpoints, watching: Watching) -> None:
    api = v3_cluster
    put_all(etcdctl, api, ("foo", "bar"), ("foo", "baz"), ("foo1", "x"))  # 2, 3, 4
    assert ok(etcdctl(api, "del", "foo")) == "1\n"  # 5
    one = watching.start(api, "foo", "--rev", "2")
    prefix = watching.start(api, "foo", "--prefix", "--rev", "2", "--prev-kv")
    # on another member than the writes go to: any member serves watches
    follower = watching.start(api, "foo", "--rev", "3", endpoints=api.grpc_addresses[2])
    assert until(one, HISTORY) == HISTORY
    prefixed = "PUT\nfoo\nbar\nPUT\nfoo\nbar\nfoo\nbaz\nPUT\nfoo1\nx\nDELETE\nfoo\nbaz\nfoo\n\n"
    assert until(prefix, prefixed) == prefixed
    put_all(etcdctl, api, ("foo", "new"), ("bar", "other"))  # 6, 7
    assert until(one, HISTORY + "PUT\nfoo\nnew\n") == HISTORY + "PUT\nfoo\nnew\n"
    assert until(prefix, prefixed + "PUT\nfoo\nnew\n") == prefixed + "PUT\nfoo\nnew\n"
    following = "PUT\nfoo\nbaz\nDELETE\nfoo\n\nPUT\nfoo\nnew\n"
    assert until(follower, following) == following


def test_watch_from_now_sees_the_next_writes(v3_cluster: ApiEndpoints, watching: Watching) -> None:
    api = v3_cluster
    live = watching.start(api, "live")
    seen = "PUT\nlive\n1\n"

    def written_and_seen() -> bool:
        assert ok(etcdctl(api, "put", "live", "1")) == "OK\n"
        return seen in printed(live)

    wait_until(written_and_seen, 20, "the watch to see a write made after it started", interval=0.2)
    text = printed(live)
    assert text == seen * (len(text) // len(seen))


def test_watch_below_the_compacted_revision(v3_cluster: ApiEndpoints, watching: Watching) -> None:
    api = v3_cluster
    put_all(etcdctl, api, ("c", "1"), ("c", "2"), ("c", "3"))  # 2..4
    assert ok(etcdctl(api, "compact", "3")) == "compacted revision 3\n"
    compaction_applied(api, 2)
    old = watching.start(api, "c", "--rev", "2")
    wait_until(lambda: old.returncode is not None, 15, "the watch to be cancelled")
    assert printed(old) == (
        "watch was canceled (etcdserver: mvcc: required revision has been compacted)\n"
        "Error: watch is canceled by the server\n"
    )
    assert old.returncode == 5


def test_etcd3gw_watch_prefix_and_watch_once(v3_cluster: ApiEndpoints) -> None:
    """etcd3gw (the gateway client) reads ``POST /v3/watch``'s stream."""
    etcd = client(v3_cluster, 1)
    for key, value in (("w/a", "1"), ("w/b", "2"), ("other", "3")):
        assert etcd.put(key, value) is True  # 2, 3, 4
    assert etcd.delete("w/a") is True  # 5
    events, cancel = etcd.watch_prefix("w/", start_revision=2)
    got = []
    try:
        for event in events:
            got.append(
                (event.get("type", "PUT"), event["kv"]["key"], event["kv"].get("value"), event["kv"]["mod_revision"])
            )
            if len(got) == 3:
                break
    finally:
        cancel()
    assert got == [("PUT", b"w/a", b"1", "2"), ("PUT", b"w/b", b"2", "3"), ("DELETE", b"w/a", None, "5")]
    once = etcd.watch_once("w/b", timeout=10, start_revision=3)
    assert (once["kv"]["key"], once["kv"]["value"], once["kv"]["version"]) == (b"w/b", b"2", "1")


def gateway_lines(api: ApiEndpoints, body: dict, count: int, member: int = 1) -> list[dict]:
    """The first count ``{"result": ...}`` lines of ``POST /v3/watch``,
    headers without the ids and term (they differ between systems)."""
    lines = []
    with requests.post(api.gateway_urls[member] + "/v3/watch", json=body, stream=True, timeout=15) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if not line:
                continue
            result = json.loads(line)["result"]
            result["header"] = {"revision": result["header"].get("revision")}
            lines.append(result)
            if len(lines) == count:
                break
    return lines


def applied_here(api: ApiEndpoints, revision: int, member: int = 1) -> None:
    """Wait until member has applied revision (a watch is served from the
    member's own applied state, which may trail the leader's a little)."""

    def there() -> bool:
        status, body = api.gateway("/v3/kv/range", {"key": "Zw==", "serializable": True}, member)
        return status == 200 and int(body["header"]["revision"]) >= revision

    wait_until(there, 10, f"member {member} to apply revision {revision}")


def compaction_applied(api: ApiEndpoints, below: int, members: tuple[int, ...] = (0, 1, 2)) -> None:
    """Wait until members refuse a read at revision below as compacted."""
    for member in members:
        wait_until(
            lambda m=member: (
                api.gateway("/v3/kv/range", {"key": "Zw==", "revision": str(below), "serializable": True}, m)[0] == 400
            ),
            10,
            f"member {member} to apply the compaction",
        )


def test_gateway_watch_lines_are_etcds(v3_cluster: ApiEndpoints) -> None:
    api = v3_cluster
    put_all(etcdctl, api, ("g", "1"), ("g", "2"))  # 2, 3
    assert ok(etcdctl(api, "del", "g")) == "1\n"  # 4
    key = base64.b64encode(b"g").decode()
    applied_here(api, 4)
    lines = gateway_lines(api, {"create_request": {"key": key, "start_revision": "2", "prev_kv": True}}, 2)
    assert lines == [
        {"header": {"revision": "4"}, "created": True},
        {
            "header": {"revision": "4"},
            "events": [
                {"kv": {"key": key, "create_revision": "2", "mod_revision": "2", "version": "1", "value": "MQ=="}},
                {
                    "kv": {"key": key, "create_revision": "2", "mod_revision": "3", "version": "2", "value": "Mg=="},
                    "prev_kv": {
                        "key": key,
                        "create_revision": "2",
                        "mod_revision": "2",
                        "version": "1",
                        "value": "MQ==",
                    },
                },
                {
                    "type": "DELETE",
                    "kv": {"key": key, "mod_revision": "4"},
                    "prev_kv": {
                        "key": key,
                        "create_revision": "2",
                        "mod_revision": "3",
                        "version": "2",
                        "value": "Mg==",
                    },
                },
            ],
        },
    ]
    assert ok(etcdctl(api, "compact", "3")) == "compacted revision 3\n"
    compaction_applied(api, 2, members=(1,))
    compacted = gateway_lines(api, {"create_request": {"key": key, "start_revision": "2"}}, 2)
    assert compacted == [
        {"header": {"revision": "4"}, "created": True},
        {"header": {"revision": None}, "canceled": True, "compact_revision": "3"},  # etcd's has no revision
    ]


def test_aetcd_watch(v3_cluster: ApiEndpoints) -> None:
    """aetcd (a gRPC client library) watches, in a child process."""
    done = run_to_exit(
        [sys.executable, "-m", "tests.compat.aetcd_watch_scenario", v3_cluster.grpc_addresses[1]],
        env=child_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["prefix"] == [
        ["PUT", "w/a", "1", 2, None],
        ["PUT", "w/a", "2", 3, "1"],
        ["DELETE", "w/a", "", 4, "2"],
        ["PUT", "w/b", "live", 5, None],
    ]
    assert seen["once"] == ["PUT", "w/b", "live", 5, None]
