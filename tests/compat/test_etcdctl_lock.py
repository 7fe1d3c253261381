"""etcdctl's own concurrency commands against a 3-member cluster that speaks
etcd's v3 API (etcd itself and dkv, the same assertions): two ``etcdctl
lock`` processes on one name run their commands one at a time, and ``etcdctl
elect`` makes one campaigner leader, the next one once the first resigns,
which an ``etcdctl elect -l`` observer sees in that order."""

from __future__ import annotations

import base64
import signal
from pathlib import Path

import pytest

from dkv.testing.etcd_cluster import ApiEndpoints
from dkv.testing.poll import wait_until
from dkv.testing.process import Process
from tests.compat.client_support import etcdctl_child, printed, require_watch_and_leases

pytestmark = [pytest.mark.process, pytest.mark.etcd]


def keys_under(api: ApiEndpoints, prefix: str) -> int:
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = {"key": base64.b64encode(prefix.encode()).decode(), "range_end": base64.b64encode(end.encode()).decode()}
    return int(api.ok("/v3/kv/range", {**body, "count_only": True}).get("count", 0))


def holder_script(name: str, started: Path, release: Path) -> str:
    """A lock command that says it started, then holds until release exists."""
    return f"echo {name} >> {started}; while [ ! -e {release} ]; do sleep 0.05; done"


def test_two_etcdctl_locks_on_one_name_run_one_at_a_time(
    v3_cluster: ApiEndpoints, tmp_path: Path, procs: list[Process]
) -> None:
    api = v3_cluster
    require_watch_and_leases(api)
    started = tmp_path / "started"
    first_script = holder_script("first", started, tmp_path / "r1")
    first = etcdctl_child(api, tmp_path / "first.log", "lock", "jobs", "--", "sh", "-c", first_script)
    procs.append(first)
    wait_until(started.exists, 20, "the first etcdctl lock to run its command")
    second_script = holder_script("second", started, tmp_path / "r2")
    second = etcdctl_child(api, tmp_path / "second.log", "lock", "jobs", "--", "sh", "-c", second_script)
    procs.append(second)
    wait_until(lambda: keys_under(api, "jobs/") == 2, 20, "the second etcdctl lock to queue")
    assert started.read_text() == "first\n" and second.alive
    (tmp_path / "r1").touch()
    wait_until(lambda: not first.alive, 20, "the first etcdctl lock to end with its command")
    wait_until(lambda: started.read_text() == "first\nsecond\n", 20, "the second to get the lock")
    (tmp_path / "r2").touch()
    wait_until(lambda: not second.alive, 20, "the second etcdctl lock to end")
    assert (first.returncode, second.returncode) == (0, 0)
    assert keys_under(api, "jobs/") == 0


def test_etcdctl_elect_hands_leadership_on_and_an_observer_sees_it(
    v3_cluster: ApiEndpoints, tmp_path: Path, procs: list[Process]
) -> None:
    api = v3_cluster
    require_watch_and_leases(api)
    observer = etcdctl_child(api, tmp_path / "observer.log", "elect", "-l", "office")
    procs.append(observer)
    alice = etcdctl_child(api, tmp_path / "alice.log", "elect", "office", "alice")
    procs.append(alice)
    wait_until(lambda: printed(alice) and printed(alice)[0].startswith("office/"), 20, "alice to be elected")
    assert printed(alice)[1:2] == ["alice"]
    bob = etcdctl_child(api, tmp_path / "bob.log", "elect", "office", "bob")
    procs.append(bob)
    wait_until(lambda: keys_under(api, "office/") == 2, 20, "bob to campaign behind alice")
    assert printed(bob) == []
    alice.signal(signal.SIGINT)  # etcdctl resigns on interrupt
    wait_until(lambda: not alice.alive, 20, "alice to resign and exit")
    wait_until(lambda: printed(bob)[1:2] == ["bob"], 20, "bob to be elected")
    wait_until(
        lambda: [line for line in printed(observer) if not line.startswith("office/")] == ["alice", "bob"],
        20,
        "the observer to see alice, then bob",
    )
    bob.signal(signal.SIGINT)
    wait_until(lambda: not bob.alive, 20, "bob to resign and exit")
    wait_until(lambda: keys_under(api, "office/") == 0, 20, "both campaign keys gone")
