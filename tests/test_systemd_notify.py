"""systemd's notify protocol (``dkv.systemd_notify``): the datagrams a node
sends to a fake ``$NOTIFY_SOCKET`` (a real datagram socket, by path and
abstract), driven by a fake clock; a real node under ``twistd`` telling a
fake systemd READY after it serves and STOPPING on SIGTERM; and the unit file
checked by ``systemd-analyze verify`` where that tool exists."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from dkv.systemd_notify import Notifier, SystemdNotify, notifier_from_env, socket_address, watchdog_interval
from dkv.testing.launcher import NodeConfig, NodeProcess, free_node_ports
from dkv.testing.poll import wait_until

UNIT = Path(__file__).resolve().parent.parent / "contrib" / "systemd" / "dkv@.service"


class FakeSystemd:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str, env_value: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        #: What $NOTIFY_SOCKET holds for this socket.
        self.env_value = env_value
        self.messages: list[str] = []

    def receive(self) -> list[str]:
        """Every datagram that has arrived since the last call."""
        got = []
        while True:
            try:
                got.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                break
        self.messages += got
        return got

    def lines(self) -> list[str]:
        self.receive()
        return [line for m in self.messages for line in m.split("\n")]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def path_systemd() -> Iterator[FakeSystemd]:
    # A short directory: an AF_UNIX path has at most 107 bytes.
    with tempfile.TemporaryDirectory(prefix="dkv-notify-") as d:
        fake = FakeSystemd(os.path.join(d, "notify"), os.path.join(d, "notify"))
        yield fake
        fake.close()


@pytest.fixture
def abstract_systemd() -> Iterator[FakeSystemd]:
    name = f"dkv-test-notify-{uuid.uuid4().hex}"
    fake = FakeSystemd("\0" + name, "@" + name)
    yield fake
    fake.close()


# -- the environment ------------------------------------------------------------------


def test_socket_address_forms() -> None:
    assert socket_address(None) is None
    assert socket_address("") is None
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract/name") == "\0abstract/name"
    assert socket_address("vsock:2:1234") is None


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid=42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42) == 15.0


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"},
    ],
)
def test_no_watchdog_unless_asked_for_this_process(env: dict[str, str]) -> None:
    assert watchdog_interval(env, pid=42) is None


# -- sending ------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["path_systemd", "abstract_systemd"])
def test_notifier_sends_one_datagram_of_lines(fixture: str, request: pytest.FixtureRequest) -> None:
    fake: FakeSystemd = request.getfixturevalue(fixture)
    notifier = notifier_from_env({"NOTIFY_SOCKET": fake.env_value})
    assert notifier.enabled
    assert notifier.send("READY=1", "STATUS=serving")
    assert fake.receive() == ["READY=1\nSTATUS=serving"]


def test_notifier_without_notify_socket_sends_nothing() -> None:
    notifier = notifier_from_env({})
    assert not notifier.enabled
    assert notifier.send("READY=1") is False


def test_notifier_failure_is_reported_not_raised() -> None:
    with tempfile.TemporaryDirectory(prefix="dkv-notify-") as d:
        notifier = Notifier(os.path.join(d, "nobody-listens"))
        assert notifier.send("READY=1") is False
        assert notifier.send("WATCHDOG=1") is False


# -- the service ---------------------------------------------------------------------------


class Node:
    """What the service is told about the node: when it serves, its status."""

    def __init__(self) -> None:
        self.serving: Deferred[None] = Deferred()
        self.text = "follower, term 1"


def service(fake: FakeSystemd | None, clock: Clock, node: Node, watchdog: float | None = None) -> SystemdNotify:
    notifier = Notifier(None if fake is None else socket_address(fake.env_value))
    return SystemdNotify(notifier, clock, ready=lambda: node.serving, status=lambda: node.text, watchdog=watchdog)


def test_ready_only_once_the_node_serves_then_stopping(abstract_systemd: FakeSystemd) -> None:
    clock, node = Clock(), Node()
    svc = service(abstract_systemd, clock, node)
    svc.startService()
    clock.advance(60)
    assert abstract_systemd.lines() == [], "nothing before the node serves (no watchdog asked for)"
    node.serving.callback(None)
    lines = abstract_systemd.lines()
    assert lines[0] == "READY=1"
    assert "STATUS=follower, term 1" in lines
    assert f"MAINPID={os.getpid()}" in lines
    svc.stopService()
    assert abstract_systemd.receive() == ["STOPPING=1\nSTATUS=stopping"]


def test_status_is_sent_when_it_changes(path_systemd: FakeSystemd) -> None:
    clock, node = Clock(), Node()
    svc = service(path_systemd, clock, node)
    svc.startService()
    node.serving.callback(None)
    path_systemd.receive()
    clock.advance(svc.status_interval * 3)
    assert path_systemd.receive() == [], "an unchanged status is not sent again"
    node.text = "leader, term 2"
    clock.advance(svc.status_interval)
    assert path_systemd.receive() == ["STATUS=leader, term 2"]
    svc.stopService()


def test_watchdog_pings_every_interval_from_the_start_and_stop_on_stop(path_systemd: FakeSystemd) -> None:
    clock, node = Clock(), Node()
    svc = service(path_systemd, clock, node, watchdog=15.0)
    svc.startService()
    assert path_systemd.receive() == ["WATCHDOG=1"], "the first ping at once"
    clock.advance(14.9)
    assert path_systemd.receive() == []
    clock.advance(0.1)
    assert path_systemd.receive() == ["WATCHDOG=1"]
    node.serving.callback(None)
    assert path_systemd.receive()[0].startswith("READY=1")
    for _ in range(3):
        clock.advance(15.0)
    assert path_systemd.receive().count("WATCHDOG=1") == 3
    svc.stopService()
    assert path_systemd.receive() == ["STOPPING=1\nSTATUS=stopping"]
    clock.advance(60)
    assert path_systemd.receive() == [], "no pings after stopping"
    assert clock.getDelayedCalls() == []


def test_a_node_that_never_serves_is_never_ready(path_systemd: FakeSystemd) -> None:
    clock, node = Clock(), Node()
    svc = service(path_systemd, clock, node)
    svc.startService()
    node.serving.errback(RuntimeError("the gRPC server did not start"))
    assert path_systemd.receive() == []
    svc.stopService()
    assert path_systemd.receive() == ["STOPPING=1\nSTATUS=stopping"]


def test_stopped_before_serving_never_says_ready(path_systemd: FakeSystemd) -> None:
    clock, node = Clock(), Node()
    svc = service(path_systemd, clock, node)
    svc.startService()
    svc.stopService()
    node.serving.callback(None)
    assert path_systemd.receive() == ["STOPPING=1\nSTATUS=stopping"]


def test_without_notify_socket_the_service_does_nothing() -> None:
    clock, node = Clock(), Node()
    svc = service(None, clock, node, watchdog=1.0)
    svc.startService()
    node.serving.callback(None)
    assert clock.getDelayedCalls() == []
    svc.stopService()


# -- a real node -----------------------------------------------------------------------------


def _connects(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.process
def test_a_real_node_under_twistd_says_ready_when_serving_and_stopping_on_sigterm(
    tmp_path: Path, path_systemd: FakeSystemd
) -> None:
    [(rpc, rest)] = free_node_ports(1)
    config = NodeConfig(
        node_id="a", rpc_port=rpc, rest_port=rest, db_path=tmp_path / "a.db", cluster=f"a@127.0.0.1:{rpc}"
    )
    node = NodeProcess.from_config(
        config,
        tmp_path / "a.log",
        style="twistd",
        env={"NOTIFY_SOCKET": path_systemd.env_value, "WATCHDOG_USEC": "1000000"},
    )
    try:
        node.start()
        wait_until(
            lambda: "READY=1" in path_systemd.lines() or (not node.alive and pytest.fail(node.log_tail())),
            60,
            "READY=1 from the node",
        )
        # At READY both ports serve and the store is open.
        assert _connects(rpc) and _connects(rest)
        assert node.try_status(timeout=10) is not None
        ready = next(m for m in path_systemd.messages if m.startswith("READY=1"))
        assert f"rest 127.0.0.1:{rest}, rpc 127.0.0.1:{rpc}" in ready
        # WatchdogSec=1s: a ping every half second from the reactor.
        wait_until(lambda: path_systemd.lines().count("WATCHDOG=1") >= 3, 30, "three watchdog pings")
        node.signal(signal.SIGTERM)
        wait_until(lambda: "STOPPING=1" in path_systemd.lines(), 30, "STOPPING=1 from the node")
        assert node.proc is not None
        # twistd ends by re-raising the signal that stopped it; systemd counts
        # SIGTERM as a clean exit (SuccessExitStatus= has it by default).
        assert node.proc.wait(30) in (0, -signal.SIGTERM)
        assert path_systemd.lines().index("READY=1") < path_systemd.lines().index("STOPPING=1")
    finally:
        node.close()


# -- the unit file ------------------------------------------------------------------------------


def test_unit_file_says_what_the_readme_promises() -> None:
    text = UNIT.read_text()
    for line in [
        "Type=notify",
        "EnvironmentFile=/etc/dkv/%i.env",
        "User=dkv",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/dkv",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "NotifyAccess=main",
    ]:
        assert line in text.splitlines(), line
    assert "twistd -n --pidfile= dkv" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify resolves ExecStart's program: give it one at the path the unit names.
    unit = tmp_path / "dkv@a.service"
    text = UNIT.read_text()
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    program = exec_line.removeprefix("ExecStart=").split()[0]
    if not os.path.exists(program):
        fake = tmp_path / "twistd"
        fake.write_text("#!/bin/sh\n")
        fake.chmod(0o755)
        text = text.replace(program, str(fake))
    unit.write_text(text)
    started = time.monotonic()
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    # Anything said about our unit is a finding (other units' noise is not ours).
    ours = [line for line in output.splitlines() if "dkv@" in line]
    assert ours == [], f"{output}\n(took {time.monotonic() - started:.1f}s)"
