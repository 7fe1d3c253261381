"""A real node whose disk fails (the test-only ``DKV_TEST_DISK_FAULTS`` hook,
``dkv.storage.disk_faults``): it exits non-zero at the next commit with one
clear line, restarts from what is durable, and every acknowledged write is
there. A damaged db file stops start-up with one ``dkv:`` line."""

from __future__ import annotations

import os

import pytest

from dkv.storage.disk_faults import ENABLE_VARIABLE, SPEC_VARIABLE
from dkv.testing.launcher import NodeProcess, dkv_command
from dkv.testing.poll import wait_until
from dkv.testing.rest_client import unb64
from tests.test_process import (
    _show_logs_on_failure,
    assert_one_line_error,
    get,
    one_node,
    put,
    run_failing,
    wait_leader,
)

pytestmark = pytest.mark.process


def test_a_node_whose_disk_fails_stops_with_one_line_and_restarts_with_every_acknowledged_write(
    tmp_path, procs
) -> None:
    trigger = tmp_path / "disk-fails-now"
    faults = {ENABLE_VARIABLE: "1", SPEC_VARIABLE: f"eio-when={trigger}"}
    config = one_node(tmp_path / "a.db", log_level="info")
    node = NodeProcess.from_config(config, tmp_path / "a.log", style="env", program=dkv_command(), env=faults)
    procs.append(node)
    with _show_logs_on_failure(procs):
        node.start()
        node.wait_ready()
        wait_leader(node)
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
    config = one_node(tmp_path / "a.db")
    node = NodeProcess.from_config(config, tmp_path / "a.log", style="env", program=dkv_command())
    procs.append(node)
    with _show_logs_on_failure(procs):
        node.start()
        node.wait_ready()
        wait_leader(node)
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
