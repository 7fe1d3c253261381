"""Real ``dkv`` processes on loopback for process tests, with a proxy on every peer link.

Synchronous on purpose: tests drive the processes with plain calls and poll
with deadlines; nothing here needs a reactor in the test process.

    with Cluster(tmp_path, ["a", "b", "c"]) as c:
        c.start()
        leader = c.leader()
        assert c.put(leader, b"k", b"v")[0] == 200
        c.partition([leader], [x for x in c.ids if x != leader])
        ...

Every node runs ``sys.executable -m dkv.cli`` (the same interpreter and the
same ``dkv`` package as the test), in its own session (process group), with
free ports chosen at run time, its db and log in the cluster's directory.
Node ``a`` reaches peer ``b`` through the proxy of the directed link a->b
(``--peer-route``), so links can be partitioned, cut one way, delayed or made
flaky without touching the nodes. Clients talk to each node's REST port
directly.

Every process started is killed (its whole process group) when the cluster
closes: on leaving the ``with`` block (also on an exception or Ctrl-C), at
interpreter exit (``atexit``), and on SIGTERM to the test process while a
cluster is open. When the block is left with an exception, the tail of every
node's log is printed to stderr, so a failing test shows what the nodes did.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import dkv
from dkv.api.b64 import encode as b64_encode
from dkv.testing.proxy import Proxy, ProxyHub

T = TypeVar("T")

#: The directory holding the ``dkv`` package the test imported; children get
#: it on PYTHONPATH so they run the same code.
_PACKAGE_ROOT = str(Path(dkv.__file__).resolve().parent.parent)


# -- small helpers -----------------------------------------------------------------


class Timeout(AssertionError):
    """A poll ran out of time."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.05,
) -> T:
    """Call predicate until it returns something truthy (returned), or raise
    Timeout after ``timeout`` seconds. Exceptions from predicate count as
    "not yet"; the last one is named in the Timeout."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except (OSError, http.client.HTTPException, ValueError) as e:
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise Timeout(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)  # poll


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct ports that were free a moment ago (held together while
    chosen, so they differ from each other)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def b64(data: bytes | str) -> str:
    """data (text as UTF-8) as the API writes base64."""
    return b64_encode(data.encode() if isinstance(data, str) else data)


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def http_request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    timeout: float = 10.0,
    host: str = "127.0.0.1",
) -> tuple[int, Any]:
    """One HTTP request on a fresh connection: (status, decoded JSON body).

    A body that is not JSON comes back as ``{"raw": text}``. Connection
    errors and timeouts raise (OSError / http.client.HTTPException)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if payload is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"raw": raw.decode("utf-8", "replace")}
        return resp.status, data
    finally:
        conn.close()


def tail(path: str | Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.splitlines()[-lines:])


# -- cleanup of everything started -----------------------------------------------

_live: weakref.WeakSet[Any] = weakref.WeakSet()
_live_lock = threading.Lock()
_previous_sigterm: Any = None


def _close_all() -> None:
    for owner in list(_live):
        with contextlib.suppress(Exception):
            owner.close()


atexit.register(_close_all)


def _on_sigterm(signum: int, frame: Any) -> None:
    _close_all()
    raise SystemExit(128 + signum)


def _track(owner: Any) -> None:
    global _previous_sigterm
    with _live_lock:
        _live.add(owner)
        if (
            _previous_sigterm is None
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)
        ):
            _previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)


def _untrack(owner: Any) -> None:
    global _previous_sigterm
    with _live_lock:
        _live.discard(owner)
        if (
            not _live
            and _previous_sigterm is not None
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is _on_sigterm
        ):
            signal.signal(signal.SIGTERM, _previous_sigterm)
            _previous_sigterm = None


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a dkv child process: the test's, without any
    ``DKV_*`` variable, unbuffered, with this ``dkv`` package first on the
    path; then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DKV_")}
    env["PYTHONUNBUFFERED"] = "1"
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
    env.update(extra or {})
    return env


# -- one process --------------------------------------------------------------------


class NodeProcess:
    """A process in its own session, its output appended to ``log_path``.

    ``argv`` and ``env`` are used for every (re)start. ``env`` is added to a
    copy of the test's environment from which every ``DKV_*`` variable was
    removed, with PYTHONUNBUFFERED=1 so a SIGKILL loses no log line."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: str | Path,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        rest_port: int | None = None,
        name: str = "node",
    ) -> None:
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.env = dict(env or {})
        self.cwd = str(cwd) if cwd is not None else None
        self.rest_port = rest_port
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.starts = 0

    def __repr__(self) -> str:
        return f"<NodeProcess {self.name} pid={self.pid} rest={self.rest_port}>"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def full_env(self) -> dict[str, str]:
        return child_env(self.env)

    def start(self) -> None:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        _track(self)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"=== harness: start #{self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.full_env(),
                cwd=self.cwd,
                start_new_session=True,
            )
        self.paused = False

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the whole process group and reap it."""
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.paused = False
        self._note(f"killed (exit {self.proc.returncode})")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM; SIGKILL if still running after timeout. The exit status."""
        if self.proc is None:
            return None
        if self.paused:
            self.resume()
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._note(f"did not stop within {timeout}s of SIGTERM; killing")
            self.kill()
        self._note(f"stopped (exit {self.proc.returncode})")
        return self.proc.returncode

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True
        self._note("paused (SIGSTOP)")

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False
        self._note("resumed (SIGCONT)")

    def close(self) -> None:
        if self.alive:
            self.kill()
        _untrack(self)

    def _note(self, text: str) -> None:
        with contextlib.suppress(OSError), open(self.log_path, "ab") as log:
            log.write(f"=== harness: {self.name} {text}\n".encode())

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    # -- HTTP ---------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        if self.rest_port is None:
            raise RuntimeError(f"{self.name} has no REST port")
        return http_request(self.rest_port, method, path, body, timeout)

    def try_status(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The node's /v0/status, or None if it does not answer (down, paused)."""
        if not self.alive or self.paused:
            return None
        try:
            code, body = self.request("GET", "/v0/status", timeout=timeout)
        except (OSError, http.client.HTTPException):
            return None
        return body if code == 200 else None

    def wait_ready(self, timeout: float = 20.0) -> dict[str, Any]:
        """Poll until the REST API answers /v0/status; fail at once if the
        process exits."""

        def ready() -> dict[str, Any] | None:
            if not self.alive:
                raise Timeout(
                    f"{self.name} exited with status {self.returncode} while starting; log:\n{self.log_tail()}"
                )
            return self.try_status(timeout=1.0)

        try:
            return wait_until(ready, timeout, f"{self.name} to answer on REST port {self.rest_port}")
        except Timeout as e:
            raise Timeout(f"{e}\nlog of {self.name}:\n{self.log_tail()}") from None


# -- a cluster ------------------------------------------------------------------------


class Cluster:
    """N real nodes on loopback, a proxy on each directed peer link.

    ``start()`` starts every node (or ``start_node(id)`` one at a time, in any
    order). Timings default to fast ones for tests (``tick_ms=50``,
    ``election_ticks=10``: an election timeout of 0.5-1 s) and a request
    timeout of 2 s. Nodes are configured with flags, or with ``DKV_*``
    variables when ``configure_with="env"``; ``env`` adds variables (e.g.
    GRPC_TRACE) and ``extra_args`` flags to every node."""

    def __init__(
        self,
        directory: str | Path | None = None,
        ids: Sequence[str] = ("a", "b", "c"),
        *,
        tick_ms: int = 50,
        election_ticks: int = 10,
        heartbeat_ticks: int = 1,
        request_timeout: float = 2.0,
        log_level: str = "info",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        configure_with: str = "flags",
        seed: int = 0,
    ) -> None:
        if directory is None:
            self._tmp: tempfile.TemporaryDirectory[str] | None = tempfile.TemporaryDirectory(prefix="dkv-cluster-")
            directory = self._tmp.name
        else:
            self._tmp = None
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ids = list(ids)
        self.request_timeout = request_timeout
        self.tick_ms = tick_ms
        self.election_ticks = election_ticks
        self._closed = False
        _track(self)
        self.hub = ProxyHub(seed)
        ports = free_ports(2 * len(self.ids))
        self.rpc_ports = {i: ports[2 * n] for n, i in enumerate(self.ids)}
        self.rest_ports = {i: ports[2 * n + 1] for n, i in enumerate(self.ids)}
        self.cluster_spec = ",".join(f"{i}@127.0.0.1:{self.rpc_ports[i]}" for i in self.ids)
        #: links[(a, b)]: the proxy a dials to reach b.
        self.links: dict[tuple[str, str], Proxy] = {}
        taken = set(ports)
        for a in self.ids:
            for b in self.ids:
                if a != b:
                    proxy = self.hub.proxy(self.rpc_ports[b], name=f"{a}->{b}")
                    while proxy.port in taken:  # the kernel reused a node's port: take another
                        spare = proxy
                        proxy = self.hub.proxy(self.rpc_ports[b], name=f"{a}->{b}")
                        self.hub._call(spare._close)
                    taken.add(proxy.port)
                    self.links[(a, b)] = proxy
        self.nodes: dict[str, NodeProcess] = {}
        for i in self.ids:
            routes = ",".join(f"{b}=127.0.0.1:{self.links[(i, b)].port}" for b in self.ids if b != i)
            settings = {
                "node-id": i,
                "cluster": self.cluster_spec,
                "rpc-port": str(self.rpc_ports[i]),
                "rest-port": str(self.rest_ports[i]),
                "db-path": str(self.dir / f"{i}.db"),
                "log-level": log_level,
                "tick-ms": str(tick_ms),
                "election-ticks": str(election_ticks),
                "heartbeat-ticks": str(heartbeat_ticks),
                "request-timeout": str(request_timeout),
            }
            if routes:
                settings["peer-route"] = routes
            argv = [sys.executable, "-m", "dkv.cli"]
            node_env = dict(env or {})
            if configure_with == "flags":
                for name, value in settings.items():
                    argv += [f"--{name}", value]
            elif configure_with == "env":
                for name, value in settings.items():
                    node_env["DKV_" + name.upper().replace("-", "_")] = value
            else:
                raise ValueError(f"configure_with must be 'flags' or 'env', not {configure_with!r}")
            argv += list(extra_args)
            self.nodes[i] = NodeProcess(
                argv, self.dir / f"{i}.log", env=node_env, cwd=self.dir, rest_port=self.rest_ports[i], name=i
            )

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and not self._closed:
            with contextlib.suppress(Exception):
                sys.stderr.write(self.logs_report())
                sys.stderr.flush()
        self.close()

    def close(self) -> None:
        """Kill every node process (process groups) and close the proxies."""
        if self._closed:
            return
        self._closed = True
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.close()
        with contextlib.suppress(Exception):
            self.hub.close()
        _untrack(self)
        if self._tmp is not None:
            with contextlib.suppress(Exception):
                self._tmp.cleanup()

    def start(self, ids: Iterable[str] | None = None, timeout: float = 30.0) -> None:
        """Start these nodes (all by default) and wait until each answers REST."""
        chosen = list(self.ids if ids is None else ids)
        for i in chosen:
            self.nodes[i].start()
        for i in chosen:
            self.nodes[i].wait_ready(timeout)

    def start_node(self, node_id: str, wait: bool = True, timeout: float = 30.0) -> None:
        self.nodes[node_id].start()
        if wait:
            self.nodes[node_id].wait_ready(timeout)

    def node(self, node_id: str) -> NodeProcess:
        return self.nodes[node_id]

    def kill(self, node_id: str) -> None:
        """SIGKILL (kill -9) the node's process group."""
        self.nodes[node_id].kill()

    def kill_all(self, ids: Iterable[str] | None = None) -> None:
        """SIGKILL these nodes (all by default) at nearly one instant: every
        signal is sent before any process is reaped."""
        chosen = list(self.ids if ids is None else ids)
        for i in chosen:
            self.nodes[i]._signal(signal.SIGKILL)
        for i in chosen:
            self.nodes[i].kill()

    def stop(self, node_id: str, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait; the exit status."""
        return self.nodes[node_id].stop(timeout)

    def restart(self, node_id: str, wait: bool = True, timeout: float = 30.0) -> None:
        """Kill the node if it runs, then start it again on the same db and ports."""
        node = self.nodes[node_id]
        if node.alive:
            node.kill()
        self.start_node(node_id, wait, timeout)

    def pause(self, node_id: str) -> None:
        """SIGSTOP: the process keeps its sockets but does nothing."""
        self.nodes[node_id].pause()

    def resume(self, node_id: str) -> None:
        """SIGCONT."""
        self.nodes[node_id].resume()

    def running(self) -> list[str]:
        """Ids of nodes whose process is alive and not paused."""
        return [i for i in self.ids if self.nodes[i].alive and not self.nodes[i].paused]

    # -- network faults --------------------------------------------------------------

    def link(self, a: str, b: str) -> Proxy:
        """The proxy a dials to reach b."""
        return self.links[(a, b)]

    def partition(self, *groups: Iterable[str], mode: str = "blackhole") -> None:
        """Split the nodes into groups: links within a group pass, links
        between groups (both ways) are blackholed (or refused with
        mode="refuse"). Nodes not named form one more group.
        ``partition(["a"], ["b", "c"])`` or ``partition([["a"], ["b", "c"]])``."""
        if len(groups) == 1 and groups[0] and all(not isinstance(g, str) for g in groups[0]):
            groups = tuple(groups[0])  # type: ignore[assignment]
        sets = [set(g) for g in groups]
        named = set().union(*sets) if sets else set()
        unknown = named - set(self.ids)
        if unknown:
            raise ValueError(f"unknown node ids {sorted(unknown)}")
        rest = set(self.ids) - named
        if rest:
            sets.append(rest)
        group_of = {i: n for n, g in enumerate(sets) for i in g}
        for (a, b), proxy in self.links.items():
            if group_of[a] == group_of[b]:
                proxy.pass_through()
            else:
                self._fault(proxy, mode)

    def cut(self, a: str, b: str, mode: str = "blackhole") -> None:
        """Break only the direction a->b (what a sends to b)."""
        self._fault(self.links[(a, b)], mode)

    def isolate(self, node_id: str, mode: str = "blackhole") -> None:
        """Cut every link to and from node_id."""
        self.partition([node_id], [i for i in self.ids if i != node_id], mode=mode)

    def heal(self) -> None:
        """Every link passes again (no delay, no flakiness)."""
        for proxy in self.links.values():
            proxy.pass_through()

    def delay_link(self, a: str, b: str, seconds: float, jitter: float = 0.0, both: bool = False) -> None:
        self.links[(a, b)].delay(seconds, jitter)
        if both:
            self.links[(b, a)].delay(seconds, jitter)

    def flaky_link(self, a: str, b: str, drop_probability: float, both: bool = False) -> None:
        self.links[(a, b)].flaky(drop_probability)
        if both:
            self.links[(b, a)].flaky(drop_probability)

    @staticmethod
    def _fault(proxy: Proxy, mode: str) -> None:
        if mode == "blackhole":
            proxy.blackhole()
        elif mode in ("refuse", "reset"):
            proxy.refuse()
        else:
            raise ValueError(f"mode must be blackhole or refuse, not {mode!r}")

    # -- client ----------------------------------------------------------------------

    @property
    def client_timeout(self) -> float:
        """Socket timeout for client calls: the request timeout plus a margin."""
        return self.request_timeout + 5.0

    def request(self, node_id: str, method: str, path: str, body: Any = None, timeout: float | None = None) -> tuple[int, Any]:
        return self.nodes[node_id].request(method, path, body, timeout or self.client_timeout)

    def put(self, node_id: str, key: bytes | str, value: bytes | str, timeout: float | None = None) -> tuple[int, Any]:
        return self.request(node_id, "POST", "/v0/kv", {"key": b64(key), "value": b64(value)}, timeout)

    def get(
        self, node_id: str, key: bytes | str, consistency: str | None = None, timeout: float | None = None
    ) -> tuple[int, Any]:
        path = f"/v0/kv/key/{b64(key)}"
        if consistency:
            path += f"?consistency={consistency}"
        return self.request(node_id, "GET", path, None, timeout)

    def get_value(
        self, node_id: str, key: bytes | str, consistency: str | None = None, timeout: float | None = None
    ) -> tuple[int, bytes | None]:
        """(status, decoded value or None)."""
        code, body = self.get(node_id, key, consistency, timeout)
        return code, (unb64(body["value"]) if code == 200 else None)

    def delete(self, node_id: str, key: bytes | str, timeout: float | None = None) -> tuple[int, Any]:
        return self.request(node_id, "DELETE", f"/v0/kv/key/{b64(key)}", None, timeout)

    def status(self, node_id: str, timeout: float = 5.0) -> tuple[int, Any]:
        return self.request(node_id, "GET", "/v0/status", None, timeout)

    def statuses(self, ids: Iterable[str] | None = None) -> dict[str, dict[str, Any] | None]:
        """Status of each (running) node; None for one that does not answer."""
        return {i: self.nodes[i].try_status() for i in (self.running() if ids is None else ids)}

    # -- waiting ---------------------------------------------------------------------

    def current_leader(self, among: Iterable[str] | None = None) -> str | None:
        """The leader if, right now, exactly one of the nodes (default: the
        running ones) says it leads and every other one of them follows it in
        the same term; else None."""
        ids = list(self.running() if among is None else among)
        sts = self.statuses(ids)
        if not ids or any(st is None for st in sts.values()):
            return None
        leaders = [i for i, st in sts.items() if st and st["role"] == "leader"]
        if len(leaders) != 1:
            return None
        lid = leaders[0]
        term = sts[lid]["term"]  # type: ignore[index]
        for i, st in sts.items():
            if i != lid and (st is None or st["leader_id"] != lid or st["term"] != term):
                return None
        return lid

    def leader(self, timeout: float = 15.0, among: Iterable[str] | None = None) -> str:
        """Poll until one leader is agreed on (see current_leader); its id."""
        ids = None if among is None else list(among)
        return wait_until(lambda: self.current_leader(ids), timeout, f"one agreed leader among {ids or 'running nodes'}")

    def wait_applied(self, node_id: str, index: int, timeout: float = 15.0) -> dict[str, Any]:
        """Poll until the node has applied at least index."""
        return wait_until(
            lambda: (st := self.nodes[node_id].try_status()) and st["applied_index"] >= index and st,
            timeout,
            f"{node_id} to apply index {index}",
        )

    def put_retry(self, key: bytes | str, value: bytes | str, timeout: float = 15.0, via: Sequence[str] | None = None) -> str:
        """Write until some node (the agreed leader first, else any in via)
        acknowledges with 200; returns the node that acknowledged. A 503/504
        or connection error is retried (the write may have applied: fine
        for idempotent puts of the same value)."""

        def attempt() -> str | None:
            targets = list(via) if via is not None else self.running()
            lid = self.current_leader(targets)
            for i in ([lid] if lid else []) + [t for t in targets if t != lid]:
                try:
                    code, _ = self.put(i, key, value)
                except (OSError, http.client.HTTPException):
                    continue
                if code == 200:
                    return i
            return None

        return wait_until(attempt, timeout, f"a write of {key!r} to be acknowledged")

    # -- logs -------------------------------------------------------------------------

    def log_tail(self, node_id: str, lines: int = 40) -> str:
        return self.nodes[node_id].log_tail(lines)

    def logs_report(self, lines: int = 40) -> str:
        parts = [f"\n===== dkv cluster in {self.dir} ====="]
        for i in self.ids:
            node = self.nodes[i]
            state = "running" if node.alive else f"exited {node.returncode}"
            if node.paused:
                state = "paused"
            parts.append(f"----- {i} (pid {node.pid}, {state}), last {lines} lines of {node.log_path} -----")
            parts.append(node.log_tail(lines))
        return "\n".join(parts) + "\n"
