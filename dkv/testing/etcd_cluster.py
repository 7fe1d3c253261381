# test-case-name: tests.compat.test_harness
"""Clusters that speak etcd's v3 API, for the compatibility tests and the
benchmark against etcd: real etcd members on loopback, and the endpoints
any such cluster (etcd or dkv) offers its clients.

    with EtcdCluster() as etcd:        # three members e0, e1, e2 in a temp dir
        etcd.start()                   # waits until all name one leader
        api = etcd.endpoints()
        gateway_request(api.gateway_urls[0], "/v3/kv/put", {"key": "YQ==", "value": "Yg=="})

Every member is a ``dkv.testing.process.Process`` in its own session, on
free ports, its data and log in the cluster's directory; ``close()`` (also
on leaving the ``with`` block, at interpreter exit and on SIGTERM, see
``dkv.testing.process``) kills every member and removes the directory.
Synchronous on purpose, like ``dkv.testing.cluster``: poll with deadlines.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from dkv.testing.launcher import free_ports
from dkv.testing.poll import Timeout, wait_until
from dkv.testing.process import Process, track, untrack

#: The packages that hold etcd 3.4 on Debian.
INSTALL_HINT = "apt-get install etcd-server etcd-client"


def etcd_env() -> dict[str, str]:
    """Our environment without variables that would configure etcd,
    etcdctl (or a dkv node) behind our back."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("DKV_", "ETCD_", "ETCDCTL_"))}


def gateway_request(url: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """POST body (JSON) to ``url + path`` on a fresh connection, as etcd's
    JSON gateway is spoken: (HTTP status, decoded JSON answer). An answer
    that is not JSON comes back as ``{"raw": text}``. Connection errors and
    timeouts raise (OSError / http.client.HTTPException)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps({} if body is None else body).encode())
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw) if raw else {}
        except ValueError:
            return resp.status, {"raw": raw.decode("utf-8", "replace")}
    finally:
        conn.close()


def serves_v3_gateway(url: str, timeout: float = 5.0) -> bool:
    """Whether the server at url answers etcd's ``POST /v3/kv/range``
    (``{"key": "YQ=="}``) with 200: it speaks etcd's JSON gateway."""
    try:
        status, _ = gateway_request(url, "/v3/kv/range", {"key": "YQ=="}, timeout)
    except (OSError, http.client.HTTPException):
        return False
    return status == 200


@attrs.frozen
class ApiEndpoints:
    """Where a cluster that speaks etcd's v3 API is reached, member by
    member (the same order in every field).

    etcd serves the JSON gateway and gRPC on one client port; dkv serves the
    gateway on its REST port and gRPC on its RPC port."""

    #: "etcd" or "dkv".
    system: str
    #: Each member's name (etcd's ``--name``, dkv's node id).
    names: tuple[str, ...]
    #: ``http://127.0.0.1:PORT`` of each member's JSON gateway (``/v3/...``).
    gateway_urls: tuple[str, ...]
    #: ``127.0.0.1:PORT`` of each member's gRPC services (etcdctl, gRPC clients).
    grpc_addresses: tuple[str, ...]
    #: Where the cluster keeps its data and logs.
    directory: Path

    @property
    def etcdctl_endpoints(self) -> str:
        """The value of etcdctl's ``--endpoints`` for every member."""
        return ",".join(self.grpc_addresses)

    def gateway(self, path: str, body: Any = None, member: int = 0, timeout: float = 10.0) -> tuple[int, Any]:
        """One gateway request to member (an index): (status, JSON answer)."""
        return gateway_request(self.gateway_urls[member], path, body, timeout)

    def ok(self, path: str, body: Any = None, member: int = 0) -> Any:
        """One gateway request that must answer 200: its JSON answer."""
        status, answer = self.gateway(path, body, member)
        if status != 200:
            raise AssertionError(f"{path} {body!r} on {self.names[member]}: HTTP {status} {answer!r}")
        return answer

    def statuses(self) -> list[dict[str, Any] | None]:
        """Each member's ``/v3/maintenance/status`` (None: no answer)."""
        found: list[dict[str, Any] | None] = []
        for i in range(len(self.names)):
            try:
                status, answer = self.gateway("/v3/maintenance/status", {}, i, timeout=2.0)
            except (OSError, http.client.HTTPException):
                status, answer = 0, None
            found.append(answer if status == 200 else None)
        return found

    def current_leader(self) -> int | None:
        """The index of the member every member names as leader, or None."""
        statuses = self.statuses()
        leaders = {s.get("leader") for s in statuses if s is not None}
        if None in statuses or len(leaders) != 1:
            return None
        leader = leaders.pop()
        for i, s in enumerate(statuses):
            if s is not None and leader not in (None, "0") and s["header"]["member_id"] == leader:
                return i
        return None

    def leader(self, timeout: float = 20.0) -> int:
        """Poll until every member names one leader; its index."""

        def found() -> tuple[int] | None:  # a tuple: index 0 is a leader too
            index = self.current_leader()
            return None if index is None else (index,)

        return wait_until(found, timeout, f"{self.system} members to agree on a leader")[0]

    def member_ids(self) -> list[int]:
        """Each member's id (``header.member_id`` of its status)."""
        return [int(self.ok("/v3/maintenance/status", {}, i)["header"]["member_id"]) for i in range(len(self.names))]


def etcd_binary() -> str | None:
    """The etcd binary on the PATH (or in /usr/bin), if any."""
    return shutil.which("etcd") or shutil.which("etcd", path="/usr/bin")


def etcdctl_binary() -> str | None:
    """The etcdctl binary on the PATH (or in /usr/bin), if any."""
    return shutil.which("etcdctl") or shutil.which("etcdctl", path="/usr/bin")


class EtcdCluster:
    """etcd members (``names``, default e0, e1, e2) forming a new cluster on
    free loopback ports, in ``directory`` (default: a new temporary
    directory named ``prefix...`` in ``parent`` or the system's temp dir,
    removed by ``close()``). Default snapshot and timing settings; warn-level
    logs in ``NAME.log``; ``extra_args`` are more flags for every member."""

    def __init__(
        self,
        directory: str | Path | None = None,
        names: Sequence[str] = ("e0", "e1", "e2"),
        *,
        etcd: str | None = None,
        parent: str | Path | None = None,
        prefix: str = "etcd-cluster-",
        extra_args: Sequence[str] = (),
    ) -> None:
        binary = etcd or etcd_binary()
        if binary is None:
            raise FileNotFoundError(f"etcd is not installed ({INSTALL_HINT})")
        self.etcd = binary
        self._own_dir = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix=prefix, dir=parent) if directory is None else directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.names = list(names)
        self.extra_args = list(extra_args)
        ports = free_ports(2 * len(self.names))
        #: Each member's client port (JSON gateway and gRPC) and peer port.
        self.client = {n: ports[2 * i] for i, n in enumerate(self.names)}
        self.peer = {n: ports[2 * i + 1] for i, n in enumerate(self.names)}
        self.members: dict[str, Process] = {}
        self._closed = False
        track(self)

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and not self._closed:
            with contextlib.suppress(Exception):
                sys.stderr.write(self.logs_tail(20) + "\n")
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
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        """Start every member and wait until all name one leader;
        RuntimeError (with the logs' tails) if they do not."""
        initial = ",".join(f"{n}=http://127.0.0.1:{self.peer[n]}" for n in self.names)
        token = f"{self.dir.name}-{os.getpid()}-{time.time_ns()}"
        for n in self.names:
            member = Process(self.argv(n, initial, token), self.dir / f"{n}.out.log", env=etcd_env(), name=n)
            self.members[n] = member
            member.start()
        try:
            self.endpoints().leader(timeout)
        except Timeout as e:
            raise RuntimeError(f"{e}\n{self.logs_tail()}") from None

    def client_urls(self) -> list[str]:
        """``http://127.0.0.1:PORT`` of every member's client port."""
        return [f"http://127.0.0.1:{self.client[n]}" for n in self.names]

    def endpoints(self) -> ApiEndpoints:
        """The members' client endpoints: gateway and gRPC on one port each."""
        return ApiEndpoints(
            system="etcd",
            names=tuple(self.names),
            gateway_urls=tuple(self.client_urls()),
            grpc_addresses=tuple(f"127.0.0.1:{self.client[n]}" for n in self.names),
            directory=self.dir,
        )

    def leader_name(self) -> str | None:
        """The member every member names as leader right now, or None."""
        index = self.endpoints().current_leader()
        return None if index is None else self.names[index]

    def close(self) -> None:
        """Kill every member (SIGKILL to all at once: the cluster is thrown
        away) and remove the directory if this cluster made it."""
        if self._closed:
            return
        self._closed = True
        for member in self.members.values():
            member.signal(signal.SIGKILL)
        for member in self.members.values():
            with contextlib.suppress(Exception):
                member.close()
        self.members.clear()
        untrack(self)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def logs_tail(self, lines: int = 5) -> str:
        """The last lines of every member's logs, for error messages."""
        out = []
        for log in sorted(self.dir.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)
