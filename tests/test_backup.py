"""Backup files and restore, without a cluster: the SHA-256 trailer refuses a
flipped byte and a cut file; a restore keeps the state byte for byte and
makes the Raft metadata a new cluster's, the same on every member; the
refusals create nothing; ``dkvctl snapshot save`` writes FILE only once a
whole, checked stream arrived."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import sys
from pathlib import Path

import pytest
import pytest_twisted

from dkv import ctl
from dkv.cli import main as dkv_main
from dkv.commands import RequestId, encode, encode_put
from dkv.config import parse_cluster
from dkv.mvcc import MvccView
from dkv.pb.etcd_rpc_pb2 import LeaseGrantRequest, RangeRequest
from dkv.raft.membership import Member, Membership
from dkv.raft.messages import Entry, EntryKind, HardState, SnapshotMeta
from dkv.snapshot_status import status
from dkv.statemachine import apply_entries
from dkv.storage import StorageError, WriteBatch, restore
from dkv.storage.lmdb_store import LmdbStore
from dkv.storage.overlay import Overlay
from dkv.storage.snapshot_file import SnapshotFileError, append_trailer, check
from tests.http_stub import serving

OLD = Membership((Member("a", "127.0.0.1:7070"), Member("b", "127.0.0.1:8080"), Member("c", "127.0.0.1:9090")))
NEW_SPEC = "x@127.0.0.1:17070,y@127.0.0.1:18080,z@127.0.0.1:19090"
LEASE = 0x1234
KEYS = 50


def _open(path: Path) -> LmdbStore:
    from twisted.internet import reactor

    return LmdbStore.open(str(path), reactor)


async def _apply(store: LmdbStore, entries: list[Entry]) -> None:
    with store.reading() as tables:
        applied = apply_entries(entries, Overlay().writer(tables)).applied
    await store.write(
        WriteBatch(hard_state=HardState(2, "a", entries[-1].index), entries=tuple(entries), apply=applied)
    )


def _save_backup(store: LmdbStore, path: Path) -> None:
    """A backup file of store at path: a copy of its db and the SHA-256."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        store.copy(fd)
        append_trailer(fd)
    finally:
        os.close(fd)


@pytest_twisted.async_yield_fixture
async def backup(tmp_path: Path):
    """A node's db with KEYS keys (one on a lease), compacted, and its
    backup file (db + SHA-256) at tmp_path/backup.db."""
    store = _open(tmp_path / "node.db")
    store.bootstrap("0ldc1u5ter", OLD)
    grant = encode(RequestId(7, 1), LeaseGrantRequest(ID=LEASE, TTL=3600))
    entries = [Entry(2, 2, EntryKind.NORMAL, grant)]
    entries += [
        Entry(i + 3, 2, EntryKind.NORMAL, encode_put(RequestId(7, i + 2), b"k%03d" % i, b"v%d" % i))
        for i in range(KEYS)
    ]
    await _apply(store, entries)
    await store.write(WriteBatch(compact=SnapshotMeta(10, 2, OLD)))
    path = tmp_path / "backup.db"
    _save_backup(store, path)
    with store.reading() as tables:
        view = MvccView(tables)
        expected = (view.revision, view.hash_kv(0))
    await store.close()
    yield path, expected


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


# -- the file ------------------------------------------------------------------------------


def test_a_whole_file_checks_and_names_its_hash(backup) -> None:
    path, _ = backup
    checked = check(str(path))
    raw = path.read_bytes()
    assert checked.has_trailer and checked.db_bytes == len(raw) - 32
    assert checked.sha256 == hashlib.sha256(raw[:-32]).hexdigest() == raw[-32:].hex()


@pytest.mark.parametrize("where", ["start", "middle", "trailer"])
def test_a_flipped_byte_is_refused(backup, where: str) -> None:
    path, _ = backup
    size = path.stat().st_size
    _flip(path, {"start": 0, "middle": size // 2, "trailer": size - 1}[where])
    with pytest.raises(SnapshotFileError, match="integrity check"):
        check(str(path))


def test_a_truncated_file_is_refused(backup) -> None:
    path, _ = backup
    os.truncate(path, path.stat().st_size - 4096)
    with pytest.raises(SnapshotFileError, match="corrupted or truncated"):
        check(str(path))
    os.truncate(path, 10)
    with pytest.raises(SnapshotFileError, match="truncated"):
        check(str(path))
    os.truncate(path, 0)
    with pytest.raises(SnapshotFileError, match="empty"):
        check(str(path))


def test_skip_hash_check_takes_a_raw_copy(backup, tmp_path: Path) -> None:
    path, _ = backup
    raw = tmp_path / "raw.db"
    raw.write_bytes(path.read_bytes()[:-32])
    with pytest.raises(SnapshotFileError, match="--skip-hash-check"):
        check(str(raw))
    taken = check(str(raw), skip_hash_check=True)
    assert not taken.has_trailer and taken.db_bytes == raw.stat().st_size
    # A file with its trailer is taken without it.
    assert check(str(path), skip_hash_check=True) == check(str(path))


def test_status_reads_revision_keys_leases_and_hash(backup) -> None:
    path, (revision, (digest, compacted)) = backup
    held = status(str(path))
    assert (held.revision, held.hash, held.compact_revision) == (revision, digest, compacted)
    assert held.revision == KEYS + 1 and held.total_keys == KEYS and held.leases == 1
    assert held.total_size == path.stat().st_size
    assert held.cluster_id == "0ldc1u5ter" and held.members == OLD.members
    assert held.applied_index == KEYS + 2


# -- restore -------------------------------------------------------------------------------


def test_the_new_cluster_id_is_new_and_the_same_for_every_member() -> None:
    new = parse_cluster(NEW_SPEC).membership
    digest = "ab" * 32
    first = restore.restored_cluster_id(new, digest)
    assert first == restore.restored_cluster_id(new, digest)
    assert first != parse_cluster(NEW_SPEC).cluster_id()  # not the bootstrap id of the same members
    assert first != restore.restored_cluster_id(new, "cd" * 32)
    assert first != restore.restored_cluster_id(new, digest, "again")
    assert restore.restored_cluster_id(OLD, digest) != restore.restored_cluster_id(new, digest)


@pytest_twisted.ensureDeferred
async def test_restore_keeps_the_state_and_makes_a_new_cluster(backup, tmp_path: Path) -> None:
    path, (revision, hashed) = backup
    spec = parse_cluster(NEW_SPEC)
    snapshot = check(str(path))
    cluster_id = restore.restored_cluster_id(spec.membership, snapshot.sha256)
    loaded = []
    made = set()
    for member in ("x", "y", "z"):
        db = tmp_path / f"{member}.db"
        done = restore.restore(snapshot, str(db), spec.membership, cluster_id)
        assert (done.index, done.old_cluster_id) == (KEYS + 2, "0ldc1u5ter")
        made.add(db.read_bytes())  # before opening gives it a log epoch of its own
        store = _open(db)
        try:
            state = store.load()
            with store.reading() as tables:
                view = MvccView(tables)
                assert (view.revision, view.hash_kv(revision)) == (revision, hashed)
                assert view.range(RangeRequest(key=b"k007")).kvs[0].value == b"v7"
                assert len(list(tables.scan("lease.leases"))) == 1
        finally:
            await store.close()
        loaded.append(state)
    first = loaded[0]
    assert first.cluster_id == cluster_id
    assert first.hard_state == HardState(1, "", KEYS + 2)
    assert first.entries == ()
    assert (first.applied, first.snapshot_index, first.snapshot_term) == (KEYS + 2, KEYS + 2, 1)
    assert first.snapshot_membership == spec.membership
    assert all(state == first for state in loaded)
    assert len(made) == 1
    assert [p.name for p in tmp_path.iterdir() if ".restore-" in p.name] == []


@pytest_twisted.ensureDeferred
async def test_a_restored_db_reads_no_log_file_record_of_the_db_backed_up(tmp_path: Path) -> None:
    """The backup carries its db's log epoch; a restore onto the path of
    that same db, whose log file was left behind with records of that
    epoch, must not read them: they belong to the old cluster."""
    db = tmp_path / "node.db"
    store = _open(db)
    store.bootstrap("0ldc1u5ter", OLD)
    put = Entry(2, 2, EntryKind.NORMAL, encode_put(RequestId(7, 2), b"k", b"v"))
    await _apply(store, [put])
    path = tmp_path / "backup.db"
    _save_backup(store, path)
    late = Entry(3, 2, EntryKind.NORMAL, encode_put(RequestId(7, 3), b"late", b"v"))
    await store.write(WriteBatch(HardState(2, "a", 3), (late,)))  # in the log file only
    store.close_now()  # a crash: the record stays in the log file
    os.unlink(db)
    os.unlink(str(db) + "-lock")
    spec = parse_cluster(NEW_SPEC)
    restore.restore(check(str(path)), str(db), spec.membership, "c1")
    store = _open(db)
    try:
        state = store.load()
        assert state.cluster_id == "c1" and state.entries == () and state.hard_state == HardState(1, "", 2)
    finally:
        await store.close()


def test_restore_never_replaces_data(backup, tmp_path: Path) -> None:
    path, _ = backup
    spec = parse_cluster(NEW_SPEC)
    db = tmp_path / "x.db"
    db.write_bytes(b"precious")
    with pytest.raises(StorageError, match="already holds data"):
        restore.restore(check(str(path)), str(db), spec.membership, "c1")
    assert db.read_bytes() == b"precious"
    db.write_bytes(b"")  # an empty file may be replaced
    restore.restore(check(str(path)), str(db), spec.membership, "c1")
    assert db.stat().st_size > 0


def test_restore_refuses_a_file_that_is_not_a_dkv_db(tmp_path: Path) -> None:
    path = tmp_path / "not.db"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    os.write(fd, b"\x00" * 8192)
    append_trailer(fd)
    os.close(fd)
    with pytest.raises(StorageError, match="not a dkv db"):
        restore.restore(check(str(path)), str(tmp_path / "x.db"), parse_cluster(NEW_SPEC).membership, "c1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not.db"]


def _restore_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        dkv_main(["restore", *args])
        code = 0
    except SystemExit as e:
        code = 1 if isinstance(e.code, str) else int(e.code or 0)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return code, out, err


def test_dkv_restore_command(backup, tmp_path: Path, capsys) -> None:
    path, (revision, _) = backup
    db = tmp_path / "new" / "x.db"
    db.parent.mkdir()
    code, out, err = _restore_cli(capsys, str(path), "--node-id", "x", "--cluster", NEW_SPEC, "--db-path", str(db))
    assert code == 0, err
    assert f"revision {revision}, {KEYS} keys, 1 leases" in out and "member x of new cluster" in out
    # Again onto the same path: refused, nothing changed.
    before = db.read_bytes()
    code, _, err = _restore_cli(capsys, str(path), "--node-id", "x", "--cluster", NEW_SPEC, "--db-path", str(db))
    assert code == 1 and "already holds data" in err
    assert db.read_bytes() == before


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_dkv_restore_refuses_a_damaged_file_and_creates_nothing(backup, tmp_path: Path, capsys, damage) -> None:
    path, _ = backup
    if damage == "flip":
        _flip(path, path.stat().st_size // 3)
    else:
        os.truncate(path, path.stat().st_size // 2)
    target = tmp_path / "new"
    target.mkdir()
    code, out, err = _restore_cli(
        capsys, str(path), "--node-id", "y", "--cluster", NEW_SPEC, "--db-path", str(target / "y.db")
    )
    assert code == 1 and out == ""
    assert err.strip().startswith("dkv restore: snapshot") and "corrupted or truncated" in err
    assert err.strip().count("\n") == 0
    assert list(target.iterdir()) == []


def test_dkv_restore_checks_its_arguments(backup, tmp_path: Path, capsys) -> None:
    path, _ = backup
    code, _, err = _restore_cli(capsys, str(path), "--node-id", "w", "--cluster", NEW_SPEC, "--db-path", "w.db")
    assert code == 1 and "not in --cluster" in err
    code, _, err = _restore_cli(
        capsys, str(path), "--node-id", "x", "--cluster", NEW_SPEC, "--db-path", str(tmp_path / "no" / "x.db")
    )
    assert code == 1 and "does not exist" in err


# -- dkvctl snapshot -----------------------------------------------------------------------


class _SnapshotServer(http.server.BaseHTTPRequestHandler):
    """Streams ``data`` as the gateway's snapshot messages; ``cut`` bytes
    never come (the last message still says how many remain)."""

    protocol_version = "HTTP/1.1"
    data = b""
    cut = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        sent, lines = 0, []
        data = self.data[: len(self.data) - self.cut]
        for at in range(0, len(data), 3000):
            blob = data[at : at + 3000]
            sent += len(blob)
            result = {
                "header": {},
                "remaining_bytes": str(len(self.data) - sent),
                "blob": base64.b64encode(blob).decode(),
            }
            lines.append(json.dumps({"result": result}).encode() + b"\n")
        body = b"".join(lines)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _dkvctl(endpoint: str, *argv: str, capsys) -> tuple[int, str, str]:
    try:
        ctl.main(["--endpoint", endpoint, *argv])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_dkvctl_snapshot_save_and_status(backup, tmp_path: Path, capsys) -> None:
    path, (revision, (digest, _)) = backup
    _SnapshotServer.data, _SnapshotServer.cut = path.read_bytes(), 0
    target = tmp_path / "saved.db"
    with serving(_SnapshotServer) as address:
        code, out, err = _dkvctl(address, "snapshot", "save", str(target), capsys=capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"Snapshot saved at {target}"
    assert lines[1].startswith(f"revision {revision}, {KEYS} keys, ")
    assert lines[1].endswith(f"sha256 {check(str(path)).sha256}")
    assert target.read_bytes() == path.read_bytes()
    code, out, _ = _dkvctl(address, "snapshot", "status", str(target), capsys=capsys)
    assert code == 0 and out.split(", ")[:3] == [format(digest, "x"), str(revision), str(KEYS)]
    code, out, _ = _dkvctl(address, "--json", "snapshot", "status", str(target), capsys=capsys)
    assert json.loads(out)["revision"] == revision and json.loads(out)["totalKey"] == KEYS


@pytest.mark.parametrize("fault", ["cut", "corrupt"])
def test_dkvctl_snapshot_save_keeps_no_half_file(backup, tmp_path: Path, capsys, fault: str) -> None:
    path, _ = backup
    data = bytearray(path.read_bytes())
    if fault == "corrupt":
        data[100] ^= 0xFF
    _SnapshotServer.data, _SnapshotServer.cut = bytes(data), 5000 if fault == "cut" else 0
    target = tmp_path / "saved.db"
    target.write_bytes(b"the previous backup")
    with serving(_SnapshotServer) as address:
        code, out, err = _dkvctl(address, "snapshot", "save", str(target), capsys=capsys)
    assert code != 0 and out == ""
    assert "nothing was saved" in err
    assert target.read_bytes() == b"the previous backup"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["backup.db", "node.db", "node.db-lock", "node.db-wal", "saved.db"]
    )


def test_dkvctl_snapshot_status_refuses_a_damaged_file(backup, capsys) -> None:
    path, _ = backup
    _flip(path, 5)
    code, out, err = _dkvctl("127.0.0.1:1", "snapshot", "status", str(path), capsys=capsys)
    assert code == 1 and out == "" and "integrity check" in err
