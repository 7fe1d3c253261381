"""A real node whose disk fails (the test-only ``DKV_TEST_DISK_FAULTS`` hook,
``dkv.storage.disk_faults``): it exits non-zero at the next commit with one
clear line, restarts from what is durable, and every acknowledged write is
there. A damaged db file stops start-up with one ``dkv:`` line."""

from __future__ import annotations

import os

import pytest

from dkv.storage.disk_faults import ENABLE_VARIABLE, SPEC_VARIABLE
from dkv.testing.poll import wait_until
from dkv.testing.rest_client import unb64
from tests.test_process import (
    _show_logs_on_failure,
    assert_one_line_error,
    get,
    one_node_process,
    put,
    run_failing,
    start_leading,
    wait_leader,
)

pytestmark = pytest.mark.process


def test_a_node_whose_disk_fails_stops_with_one_line_and_restarts_with_every_acknowledged_write(
    tmp_path, procs
) -> None:
    trigger = tmp_path / "disk-fails-now"
    faults = {ENABLE_VARIABLE: "1", SPEC_VARIABLE: f"eio-when={trigger}"}
    node = one_node_process(tmp_path, procs, tmp_path / "a.db", env=faults, log_level="info")
    with _show_logs_on_failure(procs):
        start_leading(node)
        acknowledged = {}
        for i in range(20):
            key, value = b"key-%d" % i, b"value-%d" % i
            assert put(node, key, value) == (200, {})
            acknowledged[key] = value

        trigger.touch()  # from now on every commit fails with EIO
        try:
            code, _ = put(node, b"doomed", b"x")
        except OSError:
            code = 0  # the node went away before it answered
        assert code != 200
        wait_until(lambda: not node.alive, 30.0, "the node to stop after its disk failed")
        assert node.returncode not in (None, 0)
        log = node.log_text()
        lines = [line for line in log.splitlines() if "disk failure" in line]
        assert len(lines) == 1, log
        assert "Input/output error" in lines[0] and "stopped to protect its data" in lines[0]
        assert "Traceback" not in log

        os.unlink(trigger)  # the disk is back (or the db moved to a good one)
        node.start()
        node.wait_ready()
        wait_leader(node)
        for key, value in acknowledged.items():
            code, body = get(node, key)
            assert code == 200 and unb64(body["value"]) == value, key
        assert put(node, b"after", b"restart") == (200, {})
        assert node.stop() == 0


@pytest.mark.parametrize(
    ("damage", "needle"),
    [("truncate", "it is truncated"), ("zero-meta", "meta pages are not valid")],
)
def test_a_damaged_db_stops_start_up_with_one_line(tmp_path, procs, damage, needle) -> None:
    node = one_node_process(tmp_path, procs, tmp_path / "a.db")
    with _show_logs_on_failure(procs):
        start_leading(node)
        for i in range(300):
            assert put(node, b"key-%d" % i, b"v" * 1000) == (200, {})
        assert node.stop() == 0
    db = tmp_path / "a.db"
    if damage == "truncate":
        os.truncate(db, os.path.getsize(db) // 2)
    else:
        with open(db, "r+b") as f:
            f.write(b"\0" * 8192)
    code, stderr, _, elapsed = run_failing(node.argv, node.env, tmp_path)
    assert_one_line_error(code, stderr, elapsed, str(db), needle, "re-join")


def test_a_node_whose_disk_is_full_raises_nospace_serves_reads_and_resumes_when_space_is_freed(tmp_path, procs) -> None:
    """The test-only ``enospc-when`` hook: every commit fails with ENOSPC
    while the trigger file exists. The node does not stop: it says so in one
    line, reports NOSPACE (``/health``, the alarm list), serves what it has
    applied, refuses writes that grow the db, and once space is freed the
    write it held goes through; after ``alarm disarm`` writes resume."""
    trigger = tmp_path / "disk-full-now"
    faults = {ENABLE_VARIABLE: "1", SPEC_VARIABLE: f"enospc-when={trigger}"}
    node = one_node_process(tmp_path, procs, tmp_path / "a.db", env=faults, log_level="info", request_timeout=2.0)
    with _show_logs_on_failure(procs):
        start_leading(node)
        for i in range(20):
            assert put(node, b"key-%d" % i, b"value-%d" % i) == (200, {})

        trigger.touch()  # the disk is full from now on
        code, _ = put(node, b"held", b"x")
        # 504: its entry could not be stored (outcome unknown, not lost); 507
        # if the node's own write (a hard state, the alarm) met the full disk
        # first: refused before it was proposed.
        assert code in (504, 507)
        held = code == 504
        code, body = node.request("GET", "/health")
        assert (code, body) == (503, {"health": "false", "reason": "ALARM NOSPACE"})
        code, body = node.request("POST", "/v3/maintenance/alarm", {})
        assert code == 200 and [a["alarm"] for a in body["alarms"]] == ["NOSPACE"], body
        code, body = put(node, b"refused", b"x")
        assert code == 507, body  # refused before it is proposed
        for i in range(20):  # what was applied is served (linearizable reads)
            code, body = get(node, b"key-%d" % i)
            assert code == 200 and unb64(body["value"]) == b"value-%d" % i
        assert node.alive
        log = node.log_text()
        assert len([line for line in log.splitlines() if "the disk is full" in line]) == 1, log
        assert "Traceback" not in log

        os.unlink(trigger)  # space was freed
        if held:
            wait_until(lambda: get(node, b"held")[0] == 200, 30.0, "the held write to be applied")
            assert unb64(get(node, b"held")[1]["value"]) == b"x"
        wait_until(lambda: "has room again" in node.log_text(), 30.0, "the held batch to be stored")
        code, body = node.request("POST", "/v3/maintenance/alarm", {})  # the replicated alarm stays
        member = body["alarms"][0]["memberID"]
        code, body = node.request(
            "POST", "/v3/maintenance/alarm", {"action": "DEACTIVATE", "memberID": member, "alarm": "NOSPACE"}
        )
        assert code == 200, body
        assert put(node, b"after", b"y") == (200, {})
        assert node.request("GET", "/health")[0] == 200
        assert node.stop() == 0
