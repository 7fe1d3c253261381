"""A real node on a real small file system (ext4 on a loop device,
``dkv.testing.loop_disk``) that fills up, and on a thin device whose writes
start failing while the file system still shows free space. No test hook:
the errors are the kernel's. Every acknowledged write is kept, the node never
prints a traceback, and it writes again once it has room.

Needs root and loop devices (skipped otherwise, saying why).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dkv.testing import loop_disk
from dkv.testing.launcher import NodeProcess
from dkv.testing.poll import wait_until
from dkv.testing.rest_client import unb64
from tests.test_process import _show_logs_on_failure, get, one_node_process, put, start_leading, wait_leader

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(loop_disk.unavailable() is not None, reason=str(loop_disk.unavailable())),
]

VALUE = b"v" * 4096


def _write_until_refused(node: NodeProcess, limit: int = 20000) -> tuple[dict[bytes, bytes], list[int]]:
    """Writes 4 KiB values until the node refuses one; (the acknowledged
    writes, the codes of the writes after the first refusal)."""
    acknowledged: dict[bytes, bytes] = {}
    for i in range(limit):
        key = b"key-%05d" % i
        try:
            code, _ = put(node, key, VALUE)
        except OSError:
            code = 0  # the node went away before it answered
        if code == 200:
            acknowledged[key] = VALUE
            continue
        after = [code]
        for j in range(3):
            try:
                after.append(put(node, b"more-%d" % j, VALUE)[0])
            except OSError:
                after.append(0)
        return acknowledged, after
    raise AssertionError(f"{limit} writes of 4 KiB all succeeded: the disk never filled")


def _assert_all_there(node: NodeProcess, acknowledged: dict[bytes, bytes], consistency: str | None = None) -> None:
    for key, value in acknowledged.items():
        code, body = get(node, key, consistency)
        assert code == 200 and unb64(body["value"]) == value, (key, code, body)


def _disarm(node: NodeProcess) -> bool:
    """Disarm every alarm; whether that worked (False if the node could not
    commit a disarm, or is gone)."""
    try:
        code, body = node.request("POST", "/v3/maintenance/alarm", {})
        for alarm in body.get("alarms", []):
            code, _ = node.request(
                "POST",
                "/v3/maintenance/alarm",
                {"action": "DEACTIVATE", "memberID": alarm["memberID"], "alarm": alarm["alarm"]},
            )
            if code != 200:
                return False
    except OSError:
        return False
    return True


def _writes_again(node: NodeProcess, key: bytes) -> bool:
    if not _disarm(node):
        return False
    try:
        return put(node, key, b"room")[0] == 200
    except OSError:
        return False


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[loop_disk.LoopDisk]:
    with loop_disk.LoopDisk.create(tmp_path / "disk", size_mib=24) as disk:
        yield disk


@pytest.fixture
def thin_disk(tmp_path: Path) -> Iterator[loop_disk.LoopDisk]:
    with loop_disk.LoopDisk.create(tmp_path / "disk", size_mib=64, backing_mib=12) as disk:
        yield disk


def test_a_node_on_a_file_system_that_fills_up_keeps_every_write_and_resumes(tmp_path, procs, small_disk) -> None:
    node = one_node_process(tmp_path, procs, small_disk.mount / "a.db", log_level="info", request_timeout=2.0)
    with _show_logs_on_failure(procs):
        start_leading(node)
        small_disk.fill(leave_bytes=512 * 1024)  # another program filled the disk

        acknowledged, after = _write_until_refused(node)
        assert acknowledged, "no write fitted in the room left"
        # The write the disk refused is held (outcome unknown, 504) when its
        # own transaction failed; when the one that failed held applied
        # writes (the log file took the entries), the node refuses the next
        # writes before they are proposed (507) at once.
        assert after[0] in (504, 507), after
        assert set(after[1:]) == {507}, after
        assert node.alive
        wait_until(
            lambda: node.request("GET", "/health") == (503, {"health": "false", "reason": "ALARM NOSPACE"}),
            20.0,
            "/health to report the NOSPACE alarm",
        )
        _assert_all_there(node, acknowledged)  # reads are served meanwhile

        # A restart on the full disk: it comes up and serves what it has
        # stored. The apply of the last acknowledged write was held for the
        # transaction the disk refused (``held_apply``): the write is in the
        # log, and applied again once the new leader commits an entry of its
        # term. That needs room, unless pages LMDB freed hold it; a
        # linearizable read waits for it (503 at the deadline) meanwhile.
        assert node.stop() == 0
        node.start()
        node.wait_ready()
        wait_leader(node)
        *stored_before, last = acknowledged
        _assert_all_there(node, {k: acknowledged[k] for k in stored_before}, consistency="serializable")
        code, body = get(node, last)
        if code == 200:
            assert unb64(body["value"]) == acknowledged[last]
        else:
            assert code == 503, (code, body)

        small_disk.unfill()  # the operator freed space
        wait_until(lambda: _writes_again(node, b"after"), 30.0, "writes to resume")
        _assert_all_there(node, acknowledged)
        assert node.request("GET", "/health")[0] == 200
        log = node.log_text()
        assert "the disk is full" in log
        assert "Traceback" not in log
        assert node.stop() == 0


def test_a_node_on_a_thin_device_that_runs_out_keeps_every_write(tmp_path, procs, thin_disk) -> None:
    """The device fails writes with ENOSPC while ext4 shows free space. The
    node holds the write and raises NOSPACE; if the device failed LMDB's meta
    page write (LMDB then refuses every transaction), the node stops with one
    ``disk failure`` line instead, and the file system is checked (``e2fsck``)
    before the restart, as an operator would (if the device failed a write of
    ext4's own journal, ext4 turns it read-only until then). Either way nothing
    acknowledged is lost and once the device has room a restart (or the node
    by itself) writes again."""
    node = one_node_process(tmp_path, procs, thin_disk.mount / "a.db", log_level="info", request_timeout=2.0)
    with _show_logs_on_failure(procs):
        start_leading(node)

        acknowledged, after = _write_until_refused(node)
        assert len(acknowledged) > 100, len(acknowledged)
        # 504: the write the device refused was its own transaction's (held,
        # outcome unknown); 507: the refused transaction held applied writes
        # (the log file took the entries), so the next writes are refused at
        # once; 0: the device failed LMDB's meta page and the node stopped.
        assert after[0] in (0, 504, 507), after
        assert thin_disk.free_bytes() > 20 * 2**20  # ext4 still believes it has room

        thin_disk.grow_backing(256)  # the thin pool was extended
        wait_until(
            lambda: not node.alive or _writes_again(node, b"after"), 30.0, "writes to resume or the node to stop"
        )
        log = node.log_text()
        assert "Traceback" not in log
        if not node.alive:
            assert node.returncode == 1
            failures = [line for line in log.splitlines() if "disk failure" in line]
            assert len(failures) == 1, log
            assert "stopped to protect its data" in failures[0]
        stopped = not node.alive
        assert node.stop() in (0, 1)
        if stopped:
            # After a disk failure the operator checks the file system
            # (needed if ext4 aborted its journal: it turns read-only, at
            # once or at its next write).
            thin_disk.repair()

        node.start()  # a restart recovers from what is on disk
        node.wait_ready()
        wait_leader(node)
        _assert_all_there(node, acknowledged)
        wait_until(lambda: _writes_again(node, b"after-restart"), 30.0, "writes after the restart")
        assert "Traceback" not in node.log_text()
        assert node.stop() == 0
