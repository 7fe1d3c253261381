"""One real node as a process: the ``dkv`` command with ``DKV_*`` variables,
``twistd dkv`` with flags, kill -9 and restart on the same db, and the
configuration errors that must exit at once with one ``dkv:`` line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dkv.testing.launcher import NodeConfig, NodeProcess, child_env, dkv_command, free_node_ports, twistd_command
from dkv.testing.poll import wait_until
from dkv.testing.process import Process, pid_gone, run_to_exit
from dkv.testing.rest_client import b64, unb64

pytestmark = pytest.mark.process


def wait_leader(node: NodeProcess, timeout: float = 15.0) -> dict:
    return wait_until(
        lambda: (st := node.try_status()) and st["role"] == "leader" and st,
        timeout,
        f"{node.name} to lead its one-node cluster",
    )


def put(node: NodeProcess, key: bytes, value: bytes) -> tuple[int, dict]:
    return node.request("POST", "/v0/kv", {"key": b64(key), "value": b64(value)})


def get(node: NodeProcess, key: bytes, consistency: str | None = None) -> tuple[int, dict]:
    path = f"/v0/kv/key/{b64(key)}" + (f"?consistency={consistency}" if consistency else "")
    return node.request("GET", path)


def round_trip(node: NodeProcess) -> None:
    wait_leader(node)
    assert put(node, b"hello", b"world") == (200, {})
    assert get(node, b"hello") == (200, {"key": b64(b"hello"), "value": b64(b"world")})
    code, body = get(node, b"absent")
    assert (code, body) == (404, {"error": "key not found", "code": 5})


@contextlib.contextmanager
def _show_logs_on_failure(procs: list[Process]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        for p in procs:
            sys.stderr.write(f"----- log of {p.name} ({p.log_path}) -----\n{p.log_tail()}\n")
        raise


def one_node(db_path: str | Path, **settings: Any) -> NodeConfig:
    """Node a of a one-node cluster on free ports, with fast ticks."""
    [(rpc, rest)] = free_node_ports(1)
    return NodeConfig(
        node_id="a", rpc_port=rpc, rest_port=rest, db_path=db_path, cluster=f"a@127.0.0.1:{rpc}", tick_ms=50,
        **settings,
    )  # fmt: skip


def one_node_process(
    log_dir: Path, procs: list, db_path: str | Path, env: dict[str, str] | None = None, **settings: Any
) -> NodeProcess:
    """The ``dkv`` command as a one-node cluster (``one_node``) on db_path,
    started by DKV_* variables with env added, logging to log_dir/a.log;
    not started yet, but in procs, so it is killed at the end."""
    config = one_node(db_path, **settings)
    node = NodeProcess.from_config(config, log_dir / "a.log", style="env", program=dkv_command(), env=env)
    procs.append(node)
    return node


def start_leading(node: NodeProcess) -> None:
    """Start node (a one-node cluster) and wait until it leads and its db
    holds all it applied (no held writes are still to be written)."""
    node.start()
    node.wait_ready()
    wait_leader(node)
    wait_until(
        lambda: (st := node.try_status()) and st["stored_index"] == st["applied_index"],
        10.0,
        f"{node.name}'s db to hold what it applied",
    )


def test_dkv_command_with_env_round_trip_kill9_restart(tmp_path, procs) -> None:
    # DKV_* variables only; the db path is relative to the working directory, as in the README.
    config = one_node("a.db", log_level="info")
    node = NodeProcess.from_config(config, tmp_path / "a.log", style="env", program=dkv_command(), cwd=tmp_path)
    assert node.argv == dkv_command() and node.env["DKV_DB_PATH"] == "a.db"
    procs.append(node)
    with _show_logs_on_failure(procs):
        node.start()
        node.wait_ready()
        round_trip(node)
        assert (tmp_path / "a.db").exists()

        node.kill()  # kill -9
        assert node.returncode == -signal.SIGKILL
        node.start()  # same variables, same db, same ports
        node.wait_ready()
        # The write is in the log on disk; its apply may have been held for
        # the next transaction (``held_apply``) when the kill came: the node
        # applies it again once it knows it committed, here as it leads again.
        wait_leader(node)
        code, body = get(node, b"hello", "serializable")
        assert code == 200 and unb64(body["value"]) == b"world"
        code, body = get(node, b"hello")
        assert code == 200 and unb64(body["value"]) == b"world"
        assert put(node, b"hello", b"again") == (200, {})
        assert node.stop() == 0  # SIGTERM: a clean stop
        assert "starting" in node.log_text()


def test_twistd_with_flags_round_trip(tmp_path, procs) -> None:
    # A variable loses against its flag.
    node = NodeProcess.from_config(
        one_node(tmp_path / "a.db"), tmp_path / "a.log", style="twistd", env={"DKV_REST_PORT": "1"},
        cwd=tmp_path,
    )  # fmt: skip
    assert node.argv[: len(twistd_command()) + 4] == [*twistd_command(), "-n", "--pidfile=", "dkv", "--node-id"]
    procs.append(node)
    with _show_logs_on_failure(procs):
        node.start()
        node.wait_ready()
        round_trip(node)
        node.kill()
        node.start()
        node.wait_ready()
        wait_leader(node)
        code, body = get(node, b"hello")
        assert code == 200 and unb64(body["value"]) == b"world"
        # twistd stops cleanly, then exits by the signal it received.
        assert node.stop() in (0, -signal.SIGTERM)
        assert "Server Shut Down." in node.log_text()


# -- configuration errors ------------------------------------------------------------


def run_failing(argv: list[str], env: dict[str, str], cwd: Path, limit: float = 10.0) -> tuple[int, str, str, float]:
    """Run a command that must fail, with exactly these ``DKV_*`` variables;
    (exit status, stderr, stdout, seconds). Fails the test if it runs on."""
    p = run_to_exit(argv, child_env(env), cwd, timeout=limit)
    return p.returncode, p.stderr, p.stdout, p.seconds


def assert_one_line_error(code: int, stderr: str, elapsed: float, *needles: str) -> None:
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    assert lines[0].startswith("dkv: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert elapsed < 8.0, f"took {elapsed:.1f}s to refuse"


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A two-node cluster's node a as ``DKV_*`` variables, then ``extra``
    (any text: the tests below break them on purpose)."""
    [(rpc, rest)] = free_node_ports(1)
    config = NodeConfig(
        node_id="a", rpc_port=rpc, rest_port=rest, db_path=tmp_path / "a.db",
        cluster=f"a@127.0.0.1:{rpc},b@127.0.0.1:{rpc + 1}",
    )  # fmt: skip
    return {**config.variables(), **extra}


@pytest.mark.parametrize(
    "override, needles",
    [
        ({"DKV_NODE_ID": "z"}, ["'z'", "not in the cluster"]),
        ({"DKV_CLUSTER": "a@127.0.0.1"}, ["cluster", "HOST:PORT"]),
        ({"DKV_CLUSTER": "a127.0.0.1:7070"}, ["cluster", "ID@HOST:PORT"]),
        ({"DKV_CLUSTER": "a@127.0.0.1:7070,a@127.0.0.1:8080"}, ["twice"]),
        ({"DKV_RPC_PORT": "seventy"}, ["DKV_RPC_PORT", "seventy"]),
        ({"DKV_RPC_PORT": "70000"}, ["DKV_RPC_PORT", "70000"]),
        ({"DKV_NODE_ID": ""}, ["node id"]),
    ],
    ids=["node-not-in-cluster", "cluster-no-port", "cluster-no-at", "cluster-duplicate", "rpc-port-word",
         "rpc-port-range", "no-node-id"],
)  # fmt: skip
def test_bad_configuration_exits_at_once(tmp_path, override, needles) -> None:
    env = base_env(tmp_path, **override)
    code, stderr, _, elapsed = run_failing(dkv_command(), env, tmp_path)
    assert_one_line_error(code, stderr, elapsed, *needles)
    assert not (tmp_path / "a.db").exists(), "a refused configuration must not create the db"


def test_db_path_whose_parent_is_a_file(tmp_path) -> None:
    (tmp_path / "plain").write_text("not a directory")
    env = base_env(tmp_path, DKV_DB_PATH=str(tmp_path / "plain" / "a.db"))
    code, stderr, _, elapsed = run_failing(dkv_command(), env, tmp_path)
    assert_one_line_error(code, stderr, elapsed, "db path", "plain")


def test_db_path_in_missing_directory(tmp_path) -> None:
    env = base_env(tmp_path, DKV_DB_PATH=str(tmp_path / "missing" / "a.db"))
    code, stderr, _, elapsed = run_failing(dkv_command(), env, tmp_path)
    assert_one_line_error(code, stderr, elapsed, "db path", "does not exist")


def test_db_path_is_a_directory(tmp_path) -> None:
    env = base_env(tmp_path, DKV_DB_PATH=str(tmp_path))
    code, stderr, _, elapsed = run_failing(dkv_command(), env, tmp_path)
    assert_one_line_error(code, stderr, elapsed, "db path", "directory")


def test_empty_db_without_cluster(tmp_path) -> None:
    env = base_env(tmp_path)
    del env["DKV_CLUSTER"]
    code, stderr, _, elapsed = run_failing(dkv_command(), env, tmp_path)
    assert_one_line_error(code, stderr, elapsed, "no data", "--cluster")


@pytest.mark.parametrize("which", ["rpc", "rest", "peer"])
def test_port_in_use(tmp_path, which) -> None:
    """The peer port (the default native peer protocol) is the RPC port + 2, and the line says so."""
    env = base_env(tmp_path)
    port = int(env["DKV_RPC_PORT"]) + 2 if which == "peer" else int(env[f"DKV_{which.upper()}_PORT"])
    with socket.socket() as occupier:
        occupier.bind(("127.0.0.1", port))
        occupier.listen()
        code, stderr, _, elapsed = run_failing(dkv_command(), env, tmp_path)
    needles = ("the RPC port + 2",) if which == "peer" else ()
    assert_one_line_error(code, stderr, elapsed, f"{which} port", str(port), *needles)


def test_twistd_refuses_another_reactor(tmp_path) -> None:
    env = base_env(tmp_path)
    argv = [*twistd_command(), "-n", "--pidfile=", "-r", "poll", "dkv"]
    code, stderr, stdout, elapsed = run_failing(argv, env, tmp_path)
    assert code != 0
    output = stderr + stdout
    assert "dkv needs Twisted's asyncio reactor" in output, output[-2000:]
    assert "PollReactor" in output
    assert elapsed < 8.0
    assert not (tmp_path / "a.db").exists()


def test_twistd_bad_configuration(tmp_path) -> None:
    """Under twistd the same checks refuse; twistd prints its usage and the reason."""
    env = base_env(tmp_path, DKV_NODE_ID="z")
    code, stderr, stdout, elapsed = run_failing([*twistd_command(), "-n", "--pidfile=", "dkv"], env, tmp_path)
    assert code != 0
    assert "node id 'z' is not in the cluster" in stderr + stdout
    assert elapsed < 8.0


def test_twistd_empty_db_without_cluster(tmp_path) -> None:
    """A failure after the db was opened (under twistd) also exits at once."""
    env = base_env(tmp_path)
    del env["DKV_CLUSTER"]
    code, stderr, stdout, elapsed = run_failing([*twistd_command(), "-n", "--pidfile=", "dkv"], env, tmp_path)
    assert code != 0
    assert "dkv: db path" in stderr + stdout and "no data" in stderr + stdout
    assert elapsed < 8.0


def test_db_in_use_by_another_node(tmp_path, procs) -> None:
    """Two nodes on one db file would corrupt it: the second refuses at once."""
    env = base_env(tmp_path)
    env["DKV_CLUSTER"] = f"a@127.0.0.1:{env['DKV_RPC_PORT']}"  # a one-node cluster
    first = NodeProcess(dkv_command(), tmp_path / "a.log", env=env, cwd=tmp_path,
                        rest_port=int(env["DKV_REST_PORT"]), name="a")  # fmt: skip
    procs.append(first)
    with _show_logs_on_failure(procs):
        first.start()
        first.wait_ready()
        [(rpc2, rest2)] = free_node_ports(1)
        env2 = dict(env, DKV_RPC_PORT=str(rpc2), DKV_REST_PORT=str(rest2))
        code, stderr, _, elapsed = run_failing(dkv_command(), env2, tmp_path)
        assert_one_line_error(code, stderr, elapsed, "in use")
        assert first.alive and first.try_status() is not None


# -- the harness cleans up after itself ------------------------------------------------

_HARNESS_CHILD = """
import json, signal, sys
from dkv.testing.cluster import Cluster
# A shell's background job starts with SIGINT ignored (SIG_IGN is inherited);
# an operator's Ctrl-C reaches a harness in the foreground: act as one.
signal.signal(signal.SIGINT, signal.default_int_handler)
directory, style = sys.argv[1], sys.argv[2]
if style == "with":
    with Cluster(directory, ids=["a", "b"]) as c:
        c.start()
        print(json.dumps([n.pid for n in c.nodes.values()]), flush=True)
        signal.pause()  # until the test interrupts us
else:
    c = Cluster(directory, ids=["a", "b"])  # never closed: atexit must do it
    c.start()
    print(json.dumps([n.pid for n in c.nodes.values()]), flush=True)
    signal.pause()
"""


@pytest.mark.parametrize(
    "style, sig", [("with", signal.SIGINT), ("atexit", signal.SIGINT), ("atexit", signal.SIGTERM)]
)
def test_harness_kills_its_nodes_when_interrupted(tmp_path, style, sig) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _HARNESS_CHILD, str(tmp_path / "cluster"), style],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        start_new_session=True,
    )
    pids: list[int] = []
    try:
        line = child.stdout.readline()  # the child's cluster is up
        assert line, child.stderr.read().decode()[-2000:]
        pids = json.loads(line)
        assert all(not pid_gone(p) for p in pids)
        child.send_signal(sig)
        child.wait(20)
        wait_until(lambda: all(pid_gone(p) for p in pids), 10, f"nodes {pids} to be gone")
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        for p in pids:  # never leave a node behind, whatever happened
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p, signal.SIGKILL)
