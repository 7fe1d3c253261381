"""``dkvctl watch`` and ``dkvctl lock`` as a user runs them, side by side with
etcdctl against a 3-member cluster that speaks etcd's v3 API: the same
output for the same history, and locks that exclude each other across the
two tools. On dkv these skip while it answers 404 for /v3/watch or
/v3/lease/grant."""

from __future__ import annotations

import base64
import signal
import sys
from pathlib import Path

import pytest

from dkv.testing.etcd_cluster import ApiEndpoints
from dkv.testing.launcher import child_env
from dkv.testing.poll import wait_until
from dkv.testing.process import Process
from tests.compat.client_support import etcdctl_child, printed, require_watch, require_watch_and_leases
from tests.compat.clients import dkvctl, etcdctl, ok, put_all

pytestmark = [pytest.mark.process, pytest.mark.etcd]


def dkvctl_child(api: ApiEndpoints, log: Path, *args: str) -> Process:
    """dkvctl with args against every member's gateway, in the background."""
    argv = [sys.executable, "-m", "dkv.ctl", "--endpoint", ",".join(api.gateway_urls), *args]
    child = Process(argv, log, env=child_env(), name="dkvctl")
    child.start()
    return child


def keys_under(api: ApiEndpoints, prefix: str) -> int:
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = {"key": base64.b64encode(prefix.encode()).decode(), "range_end": base64.b64encode(end.encode()).decode()}
    return int(api.ok("/v3/kv/range", {**body, "count_only": True}).get("count", 0))


def test_dkvctl_watch_prints_what_etcdctl_watch_prints(
    v3_cluster: ApiEndpoints, tmp_path: Path, procs: list[Process]
) -> None:
    api = v3_cluster
    require_watch(api)
    put_all(etcdctl, api, ("foo", "bar"), ("foo", "baz"), ("foo1", "x"))  # revisions 2, 3, 4
    assert ok(etcdctl(api, "del", "foo")) == "1\n"  # revision 5
    watching = ("watch", "foo", "--prefix", "--rev", "1", "--prev-kv")
    theirs = etcdctl_child(api, tmp_path / "etcdctl.log", *watching)
    ours = dkvctl_child(api, tmp_path / "dkvctl.log", *watching)
    single = dkvctl_child(api, tmp_path / "single.log", "watch", "foo1", "--rev", "4")
    procs += [theirs, ours, single]
    expected = [
        "PUT", "foo", "bar",
        "PUT", "foo", "bar", "foo", "baz",
        "PUT", "foo1", "x",
        "DELETE", "foo", "baz", "foo", "",
    ]  # fmt: skip
    wait_until(lambda: printed(theirs) == expected, 20, f"etcdctl watch to print the history: {printed(theirs)}")
    wait_until(lambda: printed(ours) == expected, 20, f"dkvctl watch to print the history: {printed(ours)}")
    put_all(etcdctl, api, ("foo2", "live"))  # a live event after the replayed ones
    live = [*expected, "PUT", "foo2", "live"]
    wait_until(lambda: printed(ours) == printed(theirs) == live, 20, "both to print a live event")
    wait_until(lambda: printed(single) == ["PUT", "foo1", "x"], 20, "dkvctl watch of one key to print its event")
    ours.signal(signal.SIGINT)
    wait_until(lambda: not ours.alive, 10, "dkvctl watch to exit on SIGINT")
    assert ours.returncode == 0
    single.signal(signal.SIGTERM)
    wait_until(lambda: not single.alive, 10, "dkvctl watch to exit on SIGTERM")
    assert single.returncode == 0

    assert ok(dkvctl(api, "compact", "4")) == "compacted revision 4\n"
    compacted = dkvctl(api, "watch", "foo", "--rev", "2")
    assert compacted.returncode == 1
    assert compacted.stderr.startswith("dkvctl: etcdserver: mvcc: required revision has been compacted")


def test_dkvctl_lock_runs_its_command_holding_a_lock_etcdctl_respects(
    v3_cluster: ApiEndpoints, tmp_path: Path, procs: list[Process]
) -> None:
    api = v3_cluster
    require_watch_and_leases(api)
    key_file, release, marker = tmp_path / "key", tmp_path / "release", tmp_path / "etcdctl-ran"
    script = f'echo "$ETCD_LOCK_KEY $ETCD_LOCK_REV" > {key_file}; while [ ! -e {release} ]; do sleep 0.05; done; exit 3'
    holder = dkvctl_child(api, tmp_path / "holder.log", "lock", "jobs", "--", "sh", "-c", script)
    procs.append(holder)
    wait_until(key_file.exists, 20, "dkvctl lock to run its command")
    wait_until(lambda: key_file.read_text().strip(), 5, "the command to write its environment")
    lock_key, lock_rev = key_file.read_text().split()
    assert lock_key.startswith("jobs/") and int(lock_rev) > 1
    waiter = etcdctl_child(api, tmp_path / "waiter.log", "lock", "jobs", "--", "touch", str(marker))
    procs.append(waiter)
    wait_until(lambda: keys_under(api, "jobs/") == 2, 20, "etcdctl lock to queue behind dkvctl's lock")
    assert not marker.exists() and holder.alive
    release.touch()
    wait_until(lambda: not holder.alive, 20, "dkvctl lock to end with its command")
    assert holder.returncode == 3  # the command's exit status
    wait_until(marker.exists, 20, "etcdctl lock to get the lock once dkvctl released it")
    wait_until(lambda: not waiter.alive, 20, "etcdctl lock to exit")
    assert waiter.returncode == 0 and keys_under(api, "jobs/") == 0


def test_dkvctl_lock_without_a_command_holds_until_interrupted(
    v3_cluster: ApiEndpoints, tmp_path: Path, procs: list[Process]
) -> None:
    api = v3_cluster
    require_watch_and_leases(api)
    holder = dkvctl_child(api, tmp_path / "holder.log", "lock", "jobs", "--ttl", "5")
    procs.append(holder)
    wait_until(lambda: len(printed(holder)) == 2, 20, "dkvctl lock to print its key and value")
    key, value = printed(holder)
    assert key.startswith("jobs/") and value == "" and keys_under(api, "jobs/") == 1
    lease = int(key.split("/", 1)[1], 16)
    ttl = api.ok("/v3/lease/timetolive", {"ID": str(lease)})
    assert ttl["grantedTTL"] == "5"
    waiter = etcdctl_child(api, tmp_path / "waiter.log", "lock", "jobs", "--", "true")
    procs.append(waiter)
    wait_until(lambda: keys_under(api, "jobs/") == 2, 20, "etcdctl lock to queue")
    assert waiter.alive
    holder.signal(signal.SIGTERM)
    wait_until(lambda: not holder.alive, 20, "dkvctl lock to release and exit")
    assert holder.returncode == 0
    wait_until(lambda: not waiter.alive, 20, "etcdctl lock to get the lock and exit")
    assert waiter.returncode == 0 and keys_under(api, "jobs/") == 0
