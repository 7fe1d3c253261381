"""Three etcd members on this machine: free loopback ports, a new cluster in
a temporary directory, default snapshot settings, warn-level logs in files."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from dkv.testing.launcher import free_ports
from dkv.testing.poll import Timeout, wait_until
from dkv.testing.process import Process
from dkv.testing.rest_client import http_request


def etcd_env() -> dict[str, str]:
    """Our environment without variables that would configure etcd (or a
    dkv node) behind our back."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("DKV_", "ETCD_", "ETCDCTL_"))}


class EtcdCluster:
    """Three etcd members, e0..e2, each a ``Process`` in its own session."""

    system = "etcd"
    own_api = "v3"

    def __init__(self, etcd: str, base_dir: Path | None) -> None:
        self.etcd = etcd
        self.dir = Path(tempfile.mkdtemp(prefix="vs-etcd-etcd-", dir=base_dir))
        ports = free_ports(6)
        self.names = ["e0", "e1", "e2"]
        self.client = {n: ports[2 * i] for i, n in enumerate(self.names)}
        self.peer = {n: ports[2 * i + 1] for i, n in enumerate(self.names)}
        self.members: dict[str, Process] = {}

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def argv(self, name: str, initial: str, token: str) -> list[str]:
        """The command line of member name."""
        return [
            self.etcd,
            "--name", name,
            "--data-dir", str(self.dir / f"{name}.etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{self.client[name]}",
            "--advertise-client-urls", f"http://127.0.0.1:{self.client[name]}",
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer[name]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer[name]}",
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", token,
            "--logger", "zap",
            "--log-outputs", str(self.dir / f"{name}.log"),
            "--log-level", "warn",
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        """Start the three members and wait until they agree on a leader."""
        initial = ",".join(f"{n}=http://127.0.0.1:{self.peer[n]}" for n in self.names)
        token = f"vs-etcd-{os.getpid()}-{time.time_ns()}"
        for n in self.names:
            member = Process(self.argv(n, initial, token), self.dir / f"{n}.out.log", env=etcd_env(), name=n)
            self.members[n] = member
            member.start()
        try:
            wait_until(self._leader_name, timeout, "etcd to elect a leader")
        except Timeout as e:
            raise RuntimeError(f"{e}\n{self.logs_tail()}") from None

    def client_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.client[n]}" for n in self.names]

    def _status(self, name: str) -> dict[str, Any] | None:
        try:
            code, body = http_request(self.client[name], "POST", "/v3/maintenance/status", {}, timeout=1.0)
        except (OSError, http.client.HTTPException):
            return None
        return body if code == 200 and isinstance(body, dict) else None

    def _leader_name(self) -> str | None:
        """The member every member names as leader, or None."""
        statuses = {n: self._status(n) for n in self.names}
        if not all(statuses.values()):
            return None
        leaders = {s.get("leader") for s in statuses.values() if s}
        if len(leaders) != 1 or leaders & {None, "0", 0}:
            return None
        leader = leaders.pop()
        for n, s in statuses.items():
            if s and s.get("header", {}).get("member_id") == leader:
                return n
        return None

    def leader_url(self) -> str:
        name = self._leader_name()
        if name is None:
            raise RuntimeError("etcd has no leader")
        return f"http://127.0.0.1:{self.client[name]}"

    def close(self) -> None:
        """Stop every member (SIGTERM to all, then wait; SIGKILL a member
        that lingers) and remove the data."""
        for member in self.members.values():
            member.signal(signal.SIGTERM)
        for member in self.members.values():
            with contextlib.suppress(Exception):
                member.stop(15.0)
            member.close()
        self.members.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs_tail(self, lines: int = 5) -> str:
        """The last lines of every member's log, for error messages."""
        out = []
        for log in sorted(self.dir.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)
