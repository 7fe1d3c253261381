"""The space quota and the NOSPACE alarm on a 3-member cluster, driven by
etcdctl as an operator would (and the same steps against etcd 3.4 with the
same ``--quota-backend-bytes``): fill until a write is refused with
``database space exceeded``; the alarm is listed on every member and every
member refuses writes that grow the db, while reads, deletes, compaction and
defragment work; after deleting, compacting and ``alarm disarm`` writes
resume, and every member has the same HashKV."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dkv.testing.cluster import Cluster
from dkv.testing.etcd_cluster import INSTALL_HINT, ApiEndpoints, EtcdCluster, etcd_binary, etcdctl_binary
from dkv.testing.nospace_scenario import ALARMS, Settings, api_of, assert_passed, run_steps
from dkv.testing.poll import wait_until
from tests.compat.clients import dkvctl, ok

pytestmark = [pytest.mark.process, pytest.mark.etcd]

QUOTA = 768 * 1024
VALUE = "v" * (16 * 1024)


@pytest.fixture(params=["dkv", "etcd"])
def small_quota_cluster(request: pytest.FixtureRequest) -> Iterator[ApiEndpoints]:
    if etcdctl_binary() is None:
        pytest.skip(f"etcdctl is not installed ({INSTALL_HINT})")
    if request.param == "etcd":
        if etcd_binary() is None:
            pytest.skip(f"etcd is not installed ({INSTALL_HINT})")
        with EtcdCluster(extra_args=["--quota-backend-bytes", str(QUOTA)]) as etcd:
            etcd.start()
            yield etcd.endpoints()
        return
    # The Raft log shares the db with the state: a short log keeps its share small.
    args = ["--quota-backend-bytes", str(QUOTA), "--snapshot-entries", "10", "--snapshot-keep-entries", "2"]
    with Cluster(extra_args=args) as dkv:
        dkv.start()
        dkv.wait_settled()
        yield api_of(dkv)


def test_fill_alarm_recover_disarm(small_quota_cluster: ApiEndpoints) -> None:
    """The steps of ``dkv.testing.nospace_scenario`` (also a command, for a
    64 MiB quota): each must pass, on dkv and on etcd alike."""
    assert_passed(run_steps(small_quota_cluster, Settings(value_bytes=len(VALUE), max_puts=400)))


def test_the_alarm_survives_a_restart(tmp_path) -> None:
    """The alarm is replicated state in the db: a member restarted while it
    is active lists it and refuses growing writes until it is disarmed."""
    args = ["--quota-backend-bytes", str(QUOTA), "--snapshot-entries", "10", "--snapshot-keep-entries", "2"]
    with Cluster(tmp_path, extra_args=args) as dkv:
        dkv.start()
        leader = dkv.wait_settled()
        for n in range(400):
            status, _ = dkv.put(leader, f"big/{n:04d}", VALUE)
            if status != 200:
                break
        assert status == 507
        other = next(i for i in dkv.ids if i != leader)
        dkv.restart(other)

        def alarms(node_id: str) -> list[object]:
            status, answer = dkv.request(node_id, "POST", "/v3/maintenance/alarm", {})
            return answer.get("alarms", []) if status == 200 else []

        wait_until(lambda: alarms(other), timeout=30, what="the alarm after the restart")
        assert alarms(other) == alarms(leader)
        assert dkv.put(other, "small", "x")[0] == 507

        def disarmed() -> bool:  # (the refused put on other may have raised other's own alarm meanwhile)
            listed = alarms(leader)
            for alarm in listed:
                body = {"action": "DEACTIVATE", **alarm}  # type: ignore[dict-item]
                assert dkv.request(leader, "POST", "/v3/maintenance/alarm", body)[0] == 200
            return not listed

        listed = ok(dkvctl(api_of(dkv), "alarm", "list", endpoints=f"127.0.0.1:{dkv.rest_ports[other]}"))
        assert ALARMS.fullmatch(listed)
        wait_until(disarmed, timeout=30, what="every alarm disarmed")
        assert ok(dkvctl(api_of(dkv), "alarm", "list")) == ""
        wait_until(lambda: dkv.request(other, "GET", "/health")[0] == 200, timeout=30, what="healthy after disarm")
