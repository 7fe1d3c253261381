"""The space quota and the NOSPACE alarm on a 3-member cluster, driven by
etcdctl as an operator would (and the same steps against etcd 3.4 with the
same ``--quota-backend-bytes``): fill until a write is refused with
``database space exceeded``; the alarm is listed on every member and every
member refuses writes that grow the db, while reads, deletes, compaction and
defragment work; after deleting, compacting and ``alarm disarm`` writes
resume, and every member has the same HashKV."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest

from dkv.testing.cluster import Cluster
from dkv.testing.etcd_cluster import INSTALL_HINT, ApiEndpoints, EtcdCluster, etcd_binary
from dkv.testing.poll import wait_until
from tests.compat.clients import dkvctl, error_lines, etcdctl, ok

pytestmark = [pytest.mark.process, pytest.mark.etcd]

QUOTA = 768 * 1024
VALUE = "v" * (16 * 1024)
NOSPACE = "etcdserver: mvcc: database space exceeded"
#: etcdctl's ``alarm list`` / ``alarm disarm``: a line per alarm (each member
#: that found its db over the quota raised its own).
ALARMS = re.compile(r"(memberID:\d+ alarm:NOSPACE \n)+")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(params=["dkv", "etcd"])
def small_quota_cluster(request: pytest.FixtureRequest) -> Iterator[ApiEndpoints]:
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


def api_of(dkv: Cluster) -> ApiEndpoints:
    return ApiEndpoints(
        system="dkv",
        names=tuple(dkv.ids),
        gateway_urls=tuple(f"http://127.0.0.1:{dkv.rest_ports[i]}" for i in dkv.ids),
        grpc_addresses=tuple(f"127.0.0.1:{dkv.rpc_ports[i]}" for i in dkv.ids),
        directory=dkv.dir,
    )


def _put(api: ApiEndpoints, key: str, member: int = 0) -> tuple[int, object]:
    return api.gateway("/v3/kv/put", {"key": _b64(key), "value": _b64(VALUE)}, member=member)


def test_fill_alarm_recover_disarm(small_quota_cluster: ApiEndpoints) -> None:
    api = small_quota_cluster
    for n in range(400):
        status, answer = _put(api, f"big/{n:04d}")
        if status != 200:
            break
    else:
        raise AssertionError("the quota never refused a write")
    assert n > 0 and (status, answer) == (429, {"error": NOSPACE, "message": NOSPACE, "code": 8})
    assert error_lines(etcdctl(api, "put", "small", "x")) == [f"Error: {NOSPACE}"]

    # the alarm is replicated: every member lists it and refuses growing writes
    def listed(member: int) -> str:
        return ok(etcdctl(api, "alarm", "list", endpoints=api.grpc_addresses[member]))

    def same_alarms() -> bool:
        seen = {listed(m) for m in range(3)}
        return len(seen) == 1 and ALARMS.fullmatch(seen.pop()) is not None

    wait_until(same_alarms, timeout=30, what="the same alarms on every member")
    for member in (1, 2):
        assert _put(api, "refused", member)[0] == 429
    assert api.gateway("/v3/lease/grant", {"TTL": 60}, member=1)[0] == 429

    # reads, deletes, compaction and defragment work meanwhile
    assert ok(etcdctl(api, "get", "big/0000", "--print-value-only")) == VALUE + "\n"
    deleted = ok(etcdctl(api, "del", "--prefix", "big/"))
    # dkv: the refused write was certainly not applied (etcd 3.4 now and then applies it anyway)
    assert int(deleted) == n if api.system == "dkv" else int(deleted) >= n
    revision = int(api.ok("/v3/kv/range", {"key": _b64("x")})["header"]["revision"])
    assert ok(etcdctl(api, "compact", str(revision), "--physical")) == f"compacted revision {revision}\n"
    assert "Finished defragmenting" in ok(etcdctl(api, "defrag"))

    # disarm: writes resume
    disarmed = ok(etcdctl(api, "alarm", "disarm"))
    assert ALARMS.fullmatch(disarmed)
    wait_until(lambda: all(listed(m) == "" for m in range(3)), timeout=30, what="alarm cleared on every member")
    assert ok(etcdctl(api, "put", "small", "x")) == "OK\n"
    assert ok(etcdctl(api, "get", "small", "--print-value-only")) == "x\n"

    # every member has the same keyspace history
    def hashes() -> set[str]:
        out = ok(etcdctl(api, "endpoint", "hashkv"))
        return {line.split(", ")[1] for line in out.splitlines()}

    wait_until(lambda: len(hashes()) == 1, timeout=30, what="equal HashKV")
    if api.system == "dkv":
        kv = {api.gateway("/v3/maintenance/hashkv", {}, member=m)[1]["hash"] for m in range(3)}  # type: ignore[index]
        assert len(kv) == 1


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
