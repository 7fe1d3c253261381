"""Backup and restore with real processes: a 3-node cluster under write load
is backed up with ``dkvctl snapshot save`` (and ``etcdctl snapshot save``),
each member of a fresh 3-node cluster (new ids, ports and directories) is
made with ``dkv restore``, and the new cluster elects a leader, serves the
keys, answers the original's HashKV at the backup's revision, continues the
revision from there and keeps a lease granted before the backup. A damaged
file and a db path that holds data are refused by the command with one line,
creating nothing."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from dkv.testing.cluster import Cluster
from dkv.testing.etcd_cluster import etcd_env, etcdctl_binary
from dkv.testing.poll import wait_until
from dkv.testing.process import run_to_exit
from dkv.testing.rest_client import b64, http_request

pytestmark = pytest.mark.process

LEASE_TTL = 3600


def _ok(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = http_request(port, "POST", path, body, timeout=15)
    assert status == 200, (path, status, answer)
    return answer


class _Writer(threading.Thread):
    """Puts load/NNNNNN keys through the gateway, round-robin over the nodes,
    until stopped; counts the acknowledged writes."""

    def __init__(self, ports: list[int]) -> None:
        super().__init__(daemon=True)
        self.ports = ports
        self.stop = threading.Event()
        self.acked = 0
        self.errors: list[str] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            port = self.ports[n % len(self.ports)]
            try:
                status, body = http_request(
                    port, "POST", "/v3/kv/put", {"key": b64(f"load/{n:06d}"), "value": b64(f"v{n}")}, timeout=10
                )
            except OSError as e:
                status, body = 0, str(e)
            if status == 200:
                self.acked += 1
            else:
                self.errors.append(f"{status} {body}")
            n += 1


def _dkv(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = run_to_exit([sys.executable, "-m", "dkv.cli", *argv], timeout=timeout)
    return subprocess.CompletedProcess(argv, done.returncode, done.stdout, done.stderr)


def _dkvctl(endpoints: str, *argv: str) -> subprocess.CompletedProcess[str]:
    done = run_to_exit([sys.executable, "-m", "dkv.ctl", "--endpoint", endpoints, *argv], timeout=120)
    return subprocess.CompletedProcess(argv, done.returncode, done.stdout, done.stderr)


def _hash_kv(port: int, revision: int) -> tuple[str, str]:
    answer = _ok(port, "/v3/maintenance/hashkv", {"revision": str(revision)})
    return answer["hash"], answer.get("compact_revision", "0")


def _status(path: Path) -> dict[str, Any]:
    import json

    done = _dkvctl("127.0.0.1:1", "--json", "snapshot", "status", str(path))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _restore(path: Path, cluster: Cluster, node_id: str) -> subprocess.CompletedProcess[str]:
    return _dkv(
        "restore", str(path), "--node-id", node_id, "--cluster", cluster.cluster_spec,
        "--db-path", str(cluster.dir / f"{node_id}.db"),
    )  # fmt: skip


def test_backup_under_load_restores_into_a_new_cluster(tmp_path: Path) -> None:
    backup = tmp_path / "backup.db"
    etcd_backup = tmp_path / "etcdctl-backup.db"
    with Cluster(tmp_path / "old") as old:
        old.start()
        old.wait_settled()
        ports = [old.rest_ports[i] for i in old.ids]
        endpoints = ",".join(f"127.0.0.1:{p}" for p in ports)
        lease = _ok(ports[0], "/v3/lease/grant", {"TTL": str(LEASE_TTL)})["ID"]
        _ok(ports[0], "/v3/kv/put", {"key": b64("leased"), "value": b64("yes"), "lease": lease})

        writer = _Writer(ports)
        writer.start()
        try:
            wait_until(lambda: writer.acked >= 150, 60, "150 writes before the backup")
            saved = _dkvctl(endpoints, "snapshot", "save", str(backup))
            assert saved.returncode == 0, saved.stderr
            assert saved.stdout.splitlines()[0] == f"Snapshot saved at {backup}"
            etcdctl = etcdctl_binary()
            if etcdctl is not None:
                done = run_to_exit(
                    [etcdctl, "--endpoints", f"127.0.0.1:{old.rpc_ports[old.ids[1]]}", "snapshot", "save",
                     str(etcd_backup)],
                    env=etcd_env() | {"ETCDCTL_API": "3"}, timeout=120,
                )  # fmt: skip
                assert done.returncode == 0, done.stderr
                assert done.stdout == f"Snapshot saved at {etcd_backup}\n"
            at_backup = writer.acked
            wait_until(lambda: writer.acked >= at_backup + 50, 60, "writes after the backup")
        finally:
            writer.stop.set()
            writer.join(30)
        assert not writer.errors, writer.errors[:5]

        held = _status(backup)
        revision = held["revision"]
        newest = int(_ok(ports[0], "/v3/kv/range", {"key": b64("leased")})["header"]["revision"])
        assert 150 < revision < newest, "the backup is of a moment during the load"
        original = {_hash_kv(p, revision) for p in ports}
        assert len(original) == 1, original
        load_range = {"key": b64("load/"), "range_end": b64("load0"), "revision": str(revision), "count_only": True}
        keys_at_backup = _ok(ports[0], "/v3/kv/range", load_range)["count"]
        assert held["totalKey"] == int(keys_at_backup) + 1  # and "leased"
        old_cluster_id = http_request(ports[0], "GET", "/v0/members")[1]["cluster_id"]
        etcd_held = _status(etcd_backup) if etcd_backup.exists() else None
        if etcd_held is not None:
            etcd_original = _hash_kv(ports[0], etcd_held["revision"])

    with Cluster(tmp_path / "new", ["p", "q", "r"]) as new:
        for node_id in new.ids:
            done = _restore(backup, new, node_id)
            assert done.returncode == 0, done.stderr
            assert f"member {node_id} of new cluster" in done.stdout and f"revision {revision}" in done.stdout
        # A db path that holds data is refused, and stays as it was.
        db = new.dir / "p.db"
        before = db.read_bytes()
        again = _restore(backup, new, "p")
        assert (
            again.returncode == 1 and again.stderr.startswith("dkv restore: db path") and "holds data" in again.stderr
        )
        assert db.read_bytes() == before

        new.start()
        new.leader(timeout=30)
        new_ports = [new.rest_ports[i] for i in new.ids]
        assert {_hash_kv(p, revision) for p in new_ports} == original
        current = {**load_range, "revision": "0"}
        assert _ok(new_ports[1], "/v3/kv/range", current)["count"] == keys_at_backup
        one = _ok(new_ports[2], "/v3/kv/range", {"key": b64("load/000007")})["kvs"][0]
        assert one["value"] == b64("v7")
        members = http_request(new_ports[0], "GET", "/v0/members")[1]
        assert members["cluster_id"] != old_cluster_id
        assert sorted(m["id"] for m in members["members"]) == ["p", "q", "r"]
        # The revision continues from the backup's.
        put = _ok(new_ports[0], "/v3/kv/put", {"key": b64("after"), "value": b64("restore")})
        assert int(put["header"]["revision"]) == revision + 1
        # The lease survived, with its key.
        ttl = _ok(new_ports[1], "/v3/lease/timetolive", {"ID": lease, "keys": True})
        assert ttl["grantedTTL"] == str(LEASE_TTL) and ttl["keys"] == [b64("leased")]
        assert int(ttl["TTL"]) > LEASE_TTL - 120

    if etcd_held is None:
        pytest.skip("etcdctl is not installed: its snapshot was not restored")
    # etcdctl's file restores too: one member, same history at its revision.
    with Cluster(tmp_path / "from-etcdctl", ["s"]) as single:
        done = _restore(etcd_backup, single, "s")
        assert done.returncode == 0, done.stderr
        single.start()
        single.leader(timeout=30)
        assert _hash_kv(single.rest_ports["s"], etcd_held["revision"]) == etcd_original


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_backup_is_refused_and_nothing_is_created(tmp_path: Path, damage: str) -> None:
    backup = tmp_path / "backup.db"
    with Cluster(tmp_path / "old", ["a"]) as old:
        old.start()
        old.wait_settled()
        _ok(old.rest_ports["a"], "/v3/kv/put", {"key": b64("k"), "value": b64("v")})
        saved = _dkvctl(f"127.0.0.1:{old.rest_ports['a']}", "snapshot", "save", str(backup))
        assert saved.returncode == 0, saved.stderr
    data = bytearray(backup.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    else:
        del data[len(data) - 4096 :]
    backup.write_bytes(bytes(data))
    target = tmp_path / "new"
    target.mkdir()
    done = _dkv(
        "restore", str(backup), "--node-id", "a", "--cluster", "a@127.0.0.1:1", "--db-path", str(target / "a.db")
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"dkv restore: snapshot {backup} failed")
    assert list(target.iterdir()) == []
    status = _dkvctl("127.0.0.1:1", "snapshot", "status", str(backup))
    assert status.returncode == 1 and "integrity check" in status.stderr
