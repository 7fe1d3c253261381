# test-case-name: tests.test_launcher,tests.test_faults
"""Real ``dkv`` processes on loopback: a cluster for process tests, the fault
suite and the benchmarks, with a proxy on every peer link.

Synchronous on purpose: tests drive the processes with plain calls and poll
with deadlines; nothing here needs a reactor in the test process.

    with Cluster(tmp_path, ["a", "b", "c"]) as c:
        c.start()
        leader = c.leader()
        assert c.put(leader, b"k", b"v")[0] == 200
        c.partition([leader], [x for x in c.ids if x != leader])
        ...

Every node is a ``dkv.testing.launcher.NodeProcess``: ``sys.executable -m
dkv.cli`` (the same interpreter and the same ``dkv`` package as the caller),
in its own session (process group), with free ports chosen at run time (an
RPC, a REST and, on the default native peer protocol, a peer port), its
db and log in the cluster's directory. Node ``a`` reaches peer ``b`` through
the proxy of the directed link a->b (``--peer-route``), so links can be
partitioned, cut one way, delayed or made flaky without touching the nodes;
``proxy_links=False`` (the benchmarks) lets nodes dial each other directly.
Clients talk to each node's REST port directly.

Every process started is killed (its whole process group) when the cluster
closes: on leaving the ``with`` block (also on an exception or Ctrl-C), at
interpreter exit (``atexit``), and on SIGTERM to the test process while a
cluster is open (see ``dkv.testing.process``). When the block is left with
an exception, the tail of every node's log is printed to stderr, so a
failing test shows what the nodes did.

The harness's smaller parts are importable from here too (``NodeProcess``,
``free_ports``, ``free_node_ports``, ``wait_until``, ``http_request``, ``b64`` ...); they live in
``launcher``, ``process``, ``poll`` and ``rest_client``.
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dkv.config import DEFAULT_PEER_TRANSPORT, PEER_PORT_OFFSET
from dkv.testing.certs import ClusterCerts
from dkv.testing.launcher import (
    NodeConfig,
    NodeProcess,
    child_env,
    dkv_command,
    free_node_ports,
    free_ports,
    twistd_command,
)
from dkv.testing.poll import Timeout, wait_until
from dkv.testing.process import Process, tail, track, untrack
from dkv.testing.proxy import Link, Proxy, ProxyHub, ProxyPair
from dkv.testing.rest_client import b64, http_request, unb64

__all__ = [
    "Cluster", "NodeConfig", "NodeProcess", "Process", "Timeout", "agreed_leader", "b64", "child_env",
    "dkv_command", "free_node_ports", "free_ports", "http_request", "tail", "twistd_command", "unb64", "wait_until",
]  # fmt: skip

#: The node's own default request timeout (README), for clients' socket timeouts.
_NODE_REQUEST_TIMEOUT = 5.0


def agreed_leader(statuses: Mapping[str, Mapping[str, Any] | None]) -> str | None:
    """The leader if, in these ``/v0/status`` answers (None: no answer),
    exactly one node says it leads and every other one follows it in the
    same term; else None (also when any node did not answer)."""
    if not statuses or any(st is None for st in statuses.values()):
        return None
    leaders = [i for i, st in statuses.items() if st and st["role"] == "leader"]
    if len(leaders) != 1:
        return None
    lid = leaders[0]
    term = statuses[lid]["term"]  # type: ignore[index]
    for i, st in statuses.items():
        if i != lid and (st is None or st["leader_id"] != lid or st["term"] != term):
            return None
    return lid


# -- a cluster ------------------------------------------------------------------------


class Cluster:
    """N real nodes on loopback, a proxy on each directed peer link.

    ``start()`` starts every node (or ``start_node(id)`` one at a time, in any
    order); ``ids`` are the bootstrap voters, ``nodes`` every node started,
    those ``add_node`` joined too. Timings default to fast ones for tests
    (``tick_ms=50``, ``election_ticks=10``: an election timeout of 0.5-1 s)
    and a request timeout of 2 s; None leaves a setting to the node's
    default. Nodes are configured with flags, or with ``DKV_*`` variables
    when ``configure_with="env"``; ``env`` adds variables (e.g. GRPC_TRACE)
    and ``extra_args`` flags to every node. ``proxy_links=False``: no
    proxies, peers dial each other directly (no link faults). ``tls``: the
    nodes run with the TLS flags of these certificates
    (``dkv.testing.certs.ClusterCerts``), and REST requests go over HTTPS
    with its client certificate when client TLS is on. ``peer_transport``:
    the nodes' ``--peer-transport``, by default the node's own default
    (``twisted``, each peer port derived as RPC port + 2); ``"grpc"`` passes
    ``--peer-transport grpc``."""

    def __init__(
        self,
        directory: str | Path | None = None,
        ids: Sequence[str] = ("a", "b", "c"),
        *,
        tick_ms: int | None = 50,
        election_ticks: int | None = 10,
        heartbeat_ticks: int | None = 1,
        request_timeout: float | None = 2.0,
        log_level: str | None = "info",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        configure_with: str = "flags",
        seed: int = 0,
        proxy_links: bool = True,
        tls: ClusterCerts | None = None,
        peer_transport: str = DEFAULT_PEER_TRANSPORT,
    ) -> None:
        if configure_with not in ("flags", "env"):
            raise ValueError(f"configure_with must be 'flags' or 'env', not {configure_with!r}")
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
        self.configure_with = configure_with
        self.env = dict(env or {})
        #: What every node is told besides its identity, ports and peers (NodeConfig fields).
        self.node_settings: dict[str, Any] = dict(
            log_level=log_level, tick_ms=tick_ms, election_ticks=election_ticks, heartbeat_ticks=heartbeat_ticks,
            request_timeout=request_timeout, extra_args=tuple(extra_args),
        )  # fmt: skip
        #: The cluster's certificates (``dkv.testing.certs``); None: no TLS.
        self.tls = tls
        self.ssl_context = tls.ssl_context() if tls is not None else None
        self._closed = False
        track(self)
        self.hub = ProxyHub(seed) if proxy_links else None
        #: "twisted" (the default): each node listens on its RPC port + 2 as
        #: its peer port (``peer_ports``; derived, as a user's node does, so
        #: ``free_node_ports`` keeps it free), and each link is a ``ProxyPair``
        #: (the peer port's proxy, and the RPC port's for the calls nodes
        #: forward), faulted together; "grpc" (``--peer-transport grpc``):
        #: Raft messages take the RPC port.
        self.peer_transport = peer_transport
        twisted = peer_transport == "twisted"
        pairs = free_node_ports(len(self.ids))
        self.rpc_ports = {i: pairs[n][0] for n, i in enumerate(self.ids)}
        self.rest_ports = {i: pairs[n][1] for n, i in enumerate(self.ids)}
        self.peer_ports = {i: self.rpc_ports[i] + PEER_PORT_OFFSET for i in self.ids} if twisted else {}
        self.cluster_spec = ",".join(f"{i}@127.0.0.1:{self.rpc_ports[i]}" for i in self.ids)
        #: links[(a, b)]: the proxy a dials to reach b (none without proxy_links).
        self.links: dict[tuple[str, str], Link] = {}
        if self.hub is not None:
            taken = {p for rpc, rest in pairs for p in (rpc, rest, rpc + PEER_PORT_OFFSET)}
            self._make_links(self.hub, taken)
        self.nodes: dict[str, NodeProcess] = {}
        if peer_transport != DEFAULT_PEER_TRANSPORT:
            self.node_settings["peer_transport"] = peer_transport
        for i in self.ids:
            if twisted:
                routes = ",".join(self._twisted_route(i, b) for b in self.ids if (i, b) in self.links)
            else:
                routes = ",".join(f"{b}=127.0.0.1:{self.links[(i, b)].port}" for b in self.ids if (i, b) in self.links)
            self._add(i, self.rpc_ports[i], self.rest_ports[i], cluster=self.cluster_spec, peer_route=routes or None)

    @classmethod
    def for_benchmark(
        cls,
        directory: str | Path | None = None,
        ids: Sequence[str] = ("a", "b", "c"),
        peer_transport: str = DEFAULT_PEER_TRANSPORT,
        extra_args: Sequence[str] = (),
    ) -> Cluster:
        """A cluster as a user runs one: the node's default timings, peers
        dialling each other directly (no proxies), warn-level logs;
        extra_args: flags for every node (e.g. a larger space quota)."""
        return cls(
            directory, ids, tick_ms=None, election_ticks=None, heartbeat_ticks=None, request_timeout=None,
            log_level="warn", proxy_links=False, peer_transport=peer_transport, extra_args=extra_args,
        )  # fmt: skip

    def _twisted_route(self, a: str, b: str) -> str:
        """a's --peer-route to b: both of b's ports, through the link's proxies."""
        link = self.links[(a, b)]
        assert isinstance(link, ProxyPair)
        return f"{b}=127.0.0.1:{link.second.port}/{link.first.port}"

    def _make_links(self, hub: ProxyHub, taken: set[int]) -> None:
        for a in self.ids:
            for b in self.ids:
                if a != b:
                    proxy = self._free_proxy(hub, self.peer_ports.get(b) or self.rpc_ports[b], f"{a}->{b}", taken)
                    if b in self.peer_ports:
                        rpc = self._free_proxy(hub, self.rpc_ports[b], f"{a}->{b} rpc", taken)
                        self.links[(a, b)] = ProxyPair(proxy, rpc)
                    else:
                        self.links[(a, b)] = proxy

    @staticmethod
    def _free_proxy(hub: ProxyHub, target: int, name: str, taken: set[int]) -> Proxy:
        proxy = hub.proxy(target, name=name)
        while proxy.port in taken:  # the kernel reused a node's port: take another
            spare = proxy
            proxy = hub.proxy(target, name=name)
            hub._call(spare._close)
        taken.add(proxy.port)
        return proxy

    def _add(self, node_id: str, rpc_port: int, rest_port: int, **settings: Any) -> NodeProcess:
        if self.tls is not None:  # TLS flags first, so that extra_args can override them
            extra = settings.get("extra_args", self.node_settings["extra_args"])
            settings["extra_args"] = (*self.tls.node_args(node_id), *extra)
        config = NodeConfig(
            node_id=node_id, rpc_port=rpc_port, rest_port=rest_port, db_path=self.dir / f"{node_id}.db",
            **{**self.node_settings, **settings},
        )  # fmt: skip
        node = NodeProcess.from_config(
            config, self.dir / f"{node_id}.log", style=self.configure_with, env=self.env, cwd=self.dir
        )
        node.ssl_context = self.ssl_context
        self.nodes[node_id] = node
        self.rpc_ports[node_id] = rpc_port
        self.rest_ports[node_id] = rest_port
        return node

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
        if self.hub is not None:
            with contextlib.suppress(Exception):
                self.hub.close()
        untrack(self)
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
        """Start one node; unless ``wait`` is false, wait until it answers REST."""
        self.nodes[node_id].start()
        if wait:
            self.nodes[node_id].wait_ready(timeout)

    def add_node(
        self,
        node_id: str,
        join_via: str,
        *extra_args: str,
        auto_promote: bool = False,
        wait: bool = True,
        timeout: float = 30.0,
    ) -> NodeProcess:
        """Start a new node with an empty db that joins through member
        ``join_via`` (``--join`` its RPC port), on free ports, with the
        cluster's settings and ``extra_args``. It dials its peers directly
        (the proxies cover only the bootstrap nodes) and is not one of
        ``ids``. With the native peer protocol every peer port is the
        default, the RPC port + 2 (``free_node_ports`` keeps the new one
        free): it finds the members, and they find it, with no route."""
        [(rpc, rest)] = free_node_ports(1)
        if self.peer_transport == "twisted":
            self.peer_ports[node_id] = rpc + PEER_PORT_OFFSET
        node = self._add(
            node_id, rpc, rest, join=f"127.0.0.1:{self.rpc_ports[join_via]}", auto_promote=auto_promote,
            extra_args=(*self.node_settings["extra_args"], *extra_args),
        )  # fmt: skip
        self.start_node(node_id, wait, timeout)
        return node

    def rejoin_empty(self, node_id: str, join_via: str) -> None:
        """Make the next start of this (stopped) node join through member
        ``join_via`` and promote itself, instead of bootstrapping: for a
        removed node whose db was moved away."""
        self.nodes[node_id].reconfigure(cluster=None, join=f"127.0.0.1:{self.rpc_ports[join_via]}", auto_promote=True)

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
            self.nodes[i].signal(signal.SIGKILL)
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

    def _proxied(self) -> dict[tuple[str, str], Link]:
        if self.hub is None:
            raise RuntimeError("this cluster has no proxies on its peer links (proxy_links=False)")
        return self.links

    def link(self, a: str, b: str) -> Link:
        """The proxy a dials to reach b."""
        return self._proxied()[(a, b)]

    def partition(self, *groups: Iterable[str], mode: str = "blackhole") -> None:
        """Split the nodes into groups: links within a group pass, links
        between groups (both ways) are blackholed (or refused with
        mode="refuse"). Nodes not named form one more group.
        ``partition(["a"], ["b", "c"])`` or ``partition([["a"], ["b", "c"]])``."""
        if len(groups) == 1 and groups[0] and all(not isinstance(g, str) for g in groups[0]):
            groups = tuple(groups[0])
        sets = [set(g) for g in groups]
        named = set().union(*sets) if sets else set()
        unknown = named - set(self.ids)
        if unknown:
            raise ValueError(f"unknown node ids {sorted(unknown)}")
        rest = set(self.ids) - named
        if rest:
            sets.append(rest)
        group_of = {i: n for n, g in enumerate(sets) for i in g}
        for (a, b), proxy in self._proxied().items():
            if group_of[a] == group_of[b]:
                proxy.pass_through()
            else:
                self._fault(proxy, mode)

    def cut(self, a: str, b: str, mode: str = "blackhole") -> None:
        """Break only the direction a->b (what a sends to b)."""
        self._fault(self.link(a, b), mode)

    def isolate(self, node_id: str, mode: str = "blackhole") -> None:
        """Cut every link to and from node_id."""
        self.partition([node_id], [i for i in self.ids if i != node_id], mode=mode)

    def heal(self) -> None:
        """Every link passes again (no delay, no flakiness)."""
        for proxy in self._proxied().values():
            proxy.pass_through()

    def delay_link(self, a: str, b: str, seconds: float, jitter: float = 0.0, both: bool = False) -> None:
        self.link(a, b).delay(seconds, jitter)
        if both:
            self.link(b, a).delay(seconds, jitter)

    def flaky_link(self, a: str, b: str, drop_probability: float, both: bool = False) -> None:
        self.link(a, b).flaky(drop_probability)
        if both:
            self.link(b, a).flaky(drop_probability)

    @staticmethod
    def _fault(proxy: Link, mode: str) -> None:
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
        return (self.request_timeout or _NODE_REQUEST_TIMEOUT) + 5.0

    def request(
        self, node_id: str, method: str, path: str, body: Any = None, timeout: float | None = None
    ) -> tuple[int, Any]:
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
        return agreed_leader(self.statuses(ids))

    def leader(self, timeout: float = 15.0, among: Iterable[str] | None = None) -> str:
        """Poll until one leader is agreed on (see current_leader); its id."""
        ids = None if among is None else list(among)
        return wait_until(
            lambda: self.current_leader(ids), timeout, f"one agreed leader among {ids or 'running nodes'}"
        )

    def wait_settled(self, timeout: float = 30.0) -> str:
        """Poll until the running nodes agree on one leader and each has
        applied index 2 or more (in a new cluster: the bootstrap
        configuration and the first leader's entry), so that writes go
        straight through; the leader's id."""

        def settled() -> str | None:
            sts = self.statuses()
            lid = agreed_leader(sts)
            return lid if lid and all(st and st["applied_index"] >= 2 for st in sts.values()) else None

        return wait_until(settled, timeout, "the cluster to settle under one leader")

    def wait_applied(self, node_id: str, index: int, timeout: float = 15.0) -> dict[str, Any]:
        """Poll until the node has applied at least index."""
        return wait_until(
            lambda: (st := self.nodes[node_id].try_status()) and st["applied_index"] >= index and st,
            timeout,
            f"{node_id} to apply index {index}",
        )

    def put_retry(
        self, key: bytes | str, value: bytes | str, timeout: float = 15.0, via: Sequence[str] | None = None
    ) -> str:
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
        """The tail of every node's log, with its state, for a failure report."""
        parts = [f"\n===== dkv cluster in {self.dir} ====="]
        for i, node in self.nodes.items():
            state = "running" if node.alive else f"exited {node.returncode}"
            if node.paused:
                state = "paused"
            parts.append(f"----- {i} (pid {node.pid}, {state}), last {lines} lines of {node.log_path} -----")
            parts.append(node.log_tail(lines))
        return "\n".join(parts) + "\n"
