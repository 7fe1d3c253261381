"""The process launcher itself: a node's command line and environment in
every style, child processes that are signalled as a group and never left
behind, commands that must exit, detached processes stopped by a later run,
polling with a deadline, and how a cluster configures its nodes.

The children here are small Python programs, not dkv nodes (those are
covered by test_process, test_cluster and the fault suite), so these tests
are fast."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest

from dkv.config import PEER_PORT_OFFSET
from dkv.testing.cluster import Cluster, agreed_leader
from dkv.testing.launcher import NodeConfig, NodeProcess, child_env, free_node_ports, free_ports, twistd_command
from dkv.testing.poll import Timeout, wait_until
from dkv.testing.process import Process, pid_gone, run_to_exit, terminate
from dkv.testing.proxy import ProxyPair

#: A child that says it is up, then waits for a signal.
IDLE = "import signal; print('up', flush=True); signal.pause()"
#: The same, ignoring SIGTERM.
STUBBORN = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); signal.pause()"
#: A child that starts an idle grandchild in its own group, prints the grandchild's pid, and waits.
PARENT = (
    "import subprocess, sys, signal; "
    f"g = subprocess.Popen([sys.executable, '-c', {IDLE!r}], stdout=subprocess.DEVNULL); "
    "print(g.pid, flush=True); signal.pause()"
)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def started(procs: list[Process], p: Process) -> Process:
    procs.append(p)
    p.start()
    if p.log_path is not None:
        wait_until(lambda: p.log_text().splitlines().count("up") >= p.starts, 10, f"{p.name} to be up")
    return p


def state(pid: int) -> str:
    """The process state letter of /proc/PID/stat (R, S, T, Z, ...)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


# -- a node's command line -----------------------------------------------------------


CONFIG = NodeConfig(
    node_id="b", rpc_port=8080, rest_port=8081, db_path=Path("/data/b.db"), cluster="a@h:7070,b@h:8080",
    tick_ms=50, request_timeout=2.0, extra_args=("--max-inflight", "8"),
)  # fmt: skip


def test_flags_and_variables_carry_the_same_settings() -> None:
    argv, variables = CONFIG.command("flags", program=["dkv"])
    assert argv == [
        "dkv", "--node-id", "b", "--cluster", "a@h:7070,b@h:8080", "--rpc-port", "8080", "--rest-port", "8081",
        "--db-path", "/data/b.db", "--tick-ms", "50", "--request-timeout", "2.0", "--max-inflight", "8",
    ]  # fmt: skip
    assert variables == {}
    argv, variables = CONFIG.command("env", program=["dkv"])
    assert argv == ["dkv", "--max-inflight", "8"]  # extra flags stay flags
    assert variables == {
        "DKV_NODE_ID": "b", "DKV_CLUSTER": "a@h:7070,b@h:8080", "DKV_RPC_PORT": "8080", "DKV_REST_PORT": "8081",
        "DKV_DB_PATH": "/data/b.db", "DKV_TICK_MS": "50", "DKV_REQUEST_TIMEOUT": "2.0",
    }  # fmt: skip


def test_twistd_style_runs_the_plugin_with_the_flags() -> None:
    argv, variables = CONFIG.command("twistd")
    assert argv == [*twistd_command(), "-n", "--pidfile=", "dkv", *CONFIG.flags()] and variables == {}
    assert CONFIG.command()[0][:3] == [sys.executable, "-m", "dkv.cli"]
    with pytest.raises(ValueError, match="style"):
        CONFIG.command("yaml")


def test_a_joining_node_and_the_auto_promote_switch() -> None:
    config = NodeConfig(node_id="d", rpc_port=1, rest_port=2, db_path="d.db", join="127.0.0.1:7070", auto_promote=True)
    assert config.flags() == [
        "--node-id", "d", "--join", "127.0.0.1:7070", "--rpc-port", "1", "--rest-port", "2", "--db-path", "d.db",
        "--auto-promote",
    ]  # fmt: skip
    assert config.variables()["DKV_AUTO_PROMOTE"] == "true" and "DKV_CLUSTER" not in config.variables()


def test_reconfigure_changes_the_next_start_only_for_config_built_nodes(tmp_path: Path) -> None:
    node = NodeProcess.from_config(CONFIG, tmp_path / "b.log", env={"GRPC_TRACE": "x"}, style="env")
    assert node.name == "b" and node.rest_port == 8081
    assert node.env == {"GRPC_TRACE": "x", **CONFIG.variables()}
    node.reconfigure(cluster=None, join="127.0.0.1:7070", auto_promote=True)
    assert "DKV_CLUSTER" not in node.env and node.env["DKV_JOIN"] == "127.0.0.1:7070"
    assert node.env["DKV_AUTO_PROMOTE"] == "true" and node.env["GRPC_TRACE"] == "x"
    raw = NodeProcess(["dkv", "--whatever"], tmp_path / "raw.log", env={"DKV_NODE_ID": "?"})
    with pytest.raises(RuntimeError, match="NodeConfig"):
        raw.reconfigure(tick_ms=1)


def test_child_env_drops_our_dkv_variables_and_runs_this_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DKV_NODE_ID", "leaked")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = child_env({"DKV_TICK_MS": "20"})
    assert "DKV_NODE_ID" not in env and env["DKV_TICK_MS"] == "20" and env["PYTHONUNBUFFERED"] == "1"
    first, rest = env["PYTHONPATH"].split(os.pathsep, 1)
    assert (Path(first) / "dkv" / "__init__.py").exists() and rest == "/elsewhere"
    out = run_to_exit(python("import dkv, os; print(dkv.__file__)"), env, cwd="/")
    assert Path(out.stdout.strip()).parent.parent == Path(first)


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(6)
    assert len(set(ports)) == 6
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_free_node_ports_leave_each_derived_peer_port_free() -> None:
    """Nodes on the default transport listen on RPC + 2 too: each pair's
    ports and that one are distinct from all the others, and bindable."""
    pairs = free_node_ports(4)
    ports = [p for rpc, rest in pairs for p in (rpc, rest, rpc + PEER_PORT_OFFSET)]
    assert len(pairs) == 4 and len(set(ports)) == 12
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_the_peer_transport_and_port_are_flags_and_variables_when_given() -> None:
    config = attrs.evolve(CONFIG, peer_transport="grpc", peer_port=9000, peer_route="a=h:7070/7072")
    assert config.flags()[-8:] == [
        "--peer-route", "a=h:7070/7072", "--peer-transport", "grpc", "--peer-port", "9000", "--max-inflight", "8",
    ]  # fmt: skip
    assert "--peer-transport" not in CONFIG.flags() and "DKV_PEER_PORT" not in CONFIG.variables()
    assert {k: config.variables()[k] for k in ("DKV_PEER_TRANSPORT", "DKV_PEER_PORT")} == {
        "DKV_PEER_TRANSPORT": "grpc", "DKV_PEER_PORT": "9000",
    }  # fmt: skip


# -- processes ------------------------------------------------------------------------


def test_start_log_pause_resume_stop_and_restart(tmp_path: Path, procs: list[Process]) -> None:
    p = started(procs, Process(python(IDLE), tmp_path / "p.log", name="p"))
    assert p.alive and p.starts == 1 and p.log_text().startswith("=== harness: start #1: ")
    pid = p.pid
    assert pid is not None
    p.pause()
    wait_until(lambda: state(pid) == "T", 5, "the process to stop")
    p.resume()
    wait_until(lambda: state(pid) != "T", 5, "the process to run again")
    assert p.stop() == -signal.SIGTERM and not p.alive
    assert "=== harness: p stopped (exit -15)" in p.log_text()
    started(procs, p)  # again, appending to the same log
    assert p.starts == 2 and "=== harness: start #2: " in p.log_text()
    p.kill()
    assert p.returncode == -signal.SIGKILL


def test_stop_kills_what_ignores_sigterm(tmp_path: Path, procs: list[Process]) -> None:
    p = started(procs, Process(python(STUBBORN), tmp_path / "p.log"))
    assert p.stop(timeout=0.5) == -signal.SIGKILL
    assert "did not stop within 0.5s of SIGTERM; killing" in p.log_text()


def test_kill_and_close_reach_the_whole_group(tmp_path: Path, procs: list[Process]) -> None:
    p = started(procs, Process(python(PARENT), capture=True))
    assert p.proc is not None and p.proc.stdout is not None
    grandchild = int(p.proc.stdout.readline())
    assert not pid_gone(grandchild)
    p.close()
    wait_until(lambda: pid_gone(grandchild), 10, "the grandchild to be gone")
    assert not p.alive


def test_captured_output(procs: list[Process]) -> None:
    p = started(procs, Process(python("print('result 42')"), capture=True))
    assert p.output(timeout=10) == "result 42\n" and p.returncode == 0


def test_run_to_exit_captures_and_kills_what_runs_on() -> None:
    done = run_to_exit(python("import sys; print('out'); sys.exit('err')"), timeout=10)
    assert (done.returncode, done.stdout, done.stderr) == (1, "out\n", "err\n") and done.seconds < 10
    fed = run_to_exit(python("import sys; print(sys.stdin.read().upper(), end='')"), stdin="line\n", timeout=10)
    assert (fed.returncode, fed.stdout) == (0, "LINE\n")
    start = time.monotonic()
    with pytest.raises(Timeout, match="did not exit within 0.5s"):
        run_to_exit(python(IDLE), timeout=0.5)
    assert time.monotonic() - start < 5


def test_a_detached_process_outlives_its_launcher_and_terminate_stops_it(tmp_path: Path) -> None:
    """The launcher exits normally (atexit runs); the detached child stays
    up until ``terminate`` from here stops it."""
    launcher = (
        "import json, sys\n"
        "from dkv.testing.process import Process\n"
        f"p = Process([sys.executable, '-c', {IDLE!r}], {str(tmp_path / 'd.log')!r})\n"
        "p.start()\n"
        "print(json.dumps(p.detach()))\n"
    )
    out = run_to_exit(python(launcher), child_env(), timeout=30)
    pid = json.loads(out.stdout)
    try:
        assert out.returncode == 0 and not pid_gone(pid)
        terminate([pid], timeout=10)
        assert pid_gone(pid)
    finally:
        if not pid_gone(pid):
            os.killpg(pid, signal.SIGKILL)


def test_terminate_kills_what_ignores_sigterm(tmp_path: Path, procs: list[Process]) -> None:
    p = started(procs, Process(python(STUBBORN), tmp_path / "s.log"))
    pid = p.detach()
    assert not p.alive
    try:
        start = time.monotonic()
        terminate([pid], timeout=0.5)
        wait_until(lambda: pid_gone(pid), 5, "the stubborn process to be gone")
        assert time.monotonic() - start < 5
    finally:
        if not pid_gone(pid):
            os.killpg(pid, signal.SIGKILL)


def test_pid_gone() -> None:
    assert not pid_gone(os.getpid())
    child = subprocess.Popen(python("pass"))
    child.wait()
    assert pid_gone(child.pid)


# -- polling --------------------------------------------------------------------------


def test_wait_until_returns_the_value_and_names_the_last_error() -> None:
    calls = iter([None, 0, "found"])
    assert wait_until(lambda: next(calls), 5, interval=0.001) == "found"

    def refuses() -> bool:
        raise ConnectionRefusedError("no one there")

    with pytest.raises(Timeout, match="waiting for the door .*no one there"):
        wait_until(refuses, 0.05, "the door", interval=0.01)


# -- how a cluster configures its nodes ------------------------------------------------


def status(role: str, leader: str, term: int = 3) -> dict[str, object]:
    return {"role": role, "leader_id": leader, "term": term}


def test_agreed_leader() -> None:
    a_leads = {"a": status("leader", "a"), "b": status("follower", "a"), "c": status("follower", "a")}
    assert agreed_leader(a_leads) == "a"
    assert agreed_leader({**a_leads, "c": None}) is None  # one did not answer
    assert agreed_leader({**a_leads, "c": status("follower", "a", term=2)}) is None  # behind
    assert agreed_leader({**a_leads, "b": status("leader", "b", term=4)}) is None  # two say they lead
    assert agreed_leader({}) is None


def test_cluster_node_command_lines(tmp_path: Path) -> None:
    with Cluster(tmp_path / "fast", extra_args=["--max-inflight", "8"]) as c:
        argv = c.node("a").argv
        assert argv[argv.index("--tick-ms") + 1] == "50" and argv[argv.index("--request-timeout") + 1] == "2.0"
        # the default transport: the peer port is derived (RPC + 2), each route names both proxies
        assert "--peer-transport" not in argv and "--peer-port" not in argv
        assert c.peer_ports["a"] == c.rpc_ports["a"] + PEER_PORT_OFFSET
        routes = argv[argv.index("--peer-route") + 1]
        ab, ac = c.link("a", "b"), c.link("a", "c")
        assert isinstance(ab, ProxyPair) and isinstance(ac, ProxyPair)
        assert routes == (
            f"b=127.0.0.1:{ab.second.port}/{ab.first.port},c=127.0.0.1:{ac.second.port}/{ac.first.port}"
        )
        assert ab.first.target_port == c.peer_ports["b"] and ab.second.target_port == c.rpc_ports["b"]
        assert argv[-2:] == ["--max-inflight", "8"] and c.node("a").cwd == str(tmp_path / "fast")
        c.rejoin_empty("b", "c")
        argv = c.node("b").argv
        assert "--cluster" not in argv and argv[argv.index("--join") + 1] == f"127.0.0.1:{c.rpc_ports['c']}"
        assert "--auto-promote" in argv and "--peer-route" in argv
    with Cluster(tmp_path / "env", configure_with="env") as c:
        node = c.node("c")
        assert node.argv == [sys.executable, "-m", "dkv.cli"]
        assert node.env["DKV_NODE_ID"] == "c" and node.env["DKV_DB_PATH"] == str(tmp_path / "env" / "c.db")
    with Cluster(tmp_path / "grpc", peer_transport="grpc") as c:
        argv = c.node("a").argv
        assert argv[argv.index("--peer-transport") + 1] == "grpc" and c.peer_ports == {}
        assert argv[argv.index("--peer-route") + 1] == (
            f"b=127.0.0.1:{c.link('a', 'b').port},c=127.0.0.1:{c.link('a', 'c').port}"
        )


def test_benchmark_cluster_uses_node_defaults_and_direct_links(tmp_path: Path) -> None:
    with Cluster.for_benchmark(tmp_path) as c:
        argv = c.node("b").argv
        assert argv[argv.index("--log-level") + 1] == "warn"
        for flag in ("--tick-ms", "--election-ticks", "--heartbeat-ticks", "--request-timeout", "--peer-route"):
            assert flag not in argv
        for flag in ("--peer-port", "--peer-transport"):  # the default transport, peer port RPC + 2
            assert flag not in argv
        assert c.client_timeout == 10.0  # the node's default request timeout, plus a margin
        with pytest.raises(RuntimeError, match="no proxies"):
            c.partition(["a"], ["b", "c"])
        with pytest.raises(RuntimeError, match="no proxies"):
            c.heal()
