# test-case-name: tests.test_config
"""The one wiring place: ``Options`` and ``makeService`` for ``twistd dkv`` and ``dkv``.

Every flag ``--foo-bar`` also reads ``DKV_FOO_BAR``; a flag wins over its
variable. ``postOptions`` checks everything that can be checked without
touching the network or the disk, and installs Twisted's asyncio reactor
(gRPC's asyncio API and Twisted share that one loop). ``DkvService`` opens
the store and binds the ports in ``privilegedStartService``, after twistd
may have forked; any failure there is one line and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sys
from typing import Any

from twisted.application import internet
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.python import usage
from twisted.python.failure import Failure

from dkv.config import (
    ClusterSpec,
    ConfigError,
    NodeConfig,
    check_db_path,
    parse_address,
    parse_cluster,
    parse_routes,
    parse_port,
)
from dkv.logs import LEVELS, logger, set_level
from dkv.node import Limits
from dkv.raft import RaftConfig
from dkv.raft.membership import NODE_ID

log = logger("dkv")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise ValueError(f"expected a positive whole number, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"expected a positive number, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        return parse_port(text)
    except ConfigError as e:
        raise ValueError(str(e)) from None


_positive_int.coerceDoc = "A positive whole number."  # type: ignore[attr-defined]
_positive_float.coerceDoc = "A positive number."  # type: ignore[attr-defined]
_port.coerceDoc = "A TCP port, 1-65535."  # type: ignore[attr-defined]


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run one dkv node. Every option --foo-bar can also be set with the "
        "environment variable DKV_FOO_BAR; the option wins."
    )
    optParameters: list[list[Any]] = [
        ["node-id", None, None, "This node's id; must appear in --cluster."],
        ["cluster", None, "", "Bootstrap cluster, ID@HOST:RPC_PORT,... The first member gets the first chance to lead. Only read when the db is empty."],
        ["rpc-port", None, 7070, "Port for gRPC: the KV API and the peer protocol.", _port],
        ["rest-port", None, 7071, "Port for the REST API.", _port],
        ["db-path", None, None, "LMDB file for this node's data, e.g. a.db."],
        ["listen-host", None, "127.0.0.1", "Address the RPC and REST ports listen on."],
        ["log-level", None, "info", "debug, info, warn, error or critical."],
        ["join", None, "", "HOST:RPC_PORT of any member: join that cluster as a learner (only read when the db is empty)."],
        ["advertise-host", None, "", "Host other nodes reach this node's RPC port at (default: --listen-host)."],
        ["peer-route", None, "", "ID=HOST:PORT,... reach these peers at these addresses instead of the ones in the cluster configuration (NAT, tunnels, fault-injection tests)."],
        ["request-timeout", None, 5.0, "Seconds a client request may wait for the cluster.", _positive_float],
        ["max-key-size", None, 4096, "Largest key in bytes.", _positive_int],
        ["max-body-size", None, 1536 * 1024, "Largest REST body / gRPC message in bytes.", _positive_int],
        ["max-connections", None, 10_000, "REST connections open at once; newer ones are refused.", _positive_int],
        ["idle-timeout", None, 60.0, "Seconds a REST connection may stay open with nothing to do.", _positive_float],
        ["read-timeout", None, 30.0, "Seconds a REST request may take to arrive, headers and body.", _positive_float],
        ["tick-ms", None, 100, "Raft tick in milliseconds.", _positive_int],
        ["election-ticks", None, 10, "Ticks without a leader before an election.", _positive_int],
        ["heartbeat-ticks", None, 1, "Ticks between leader heartbeats.", _positive_int],
        ["max-inflight", None, 64, "Unacknowledged appends to one follower (pipelining depth); lower means fewer, larger batches.", _positive_int],
        ["snapshot-entries", None, 10_000, "Compact the log every this many applied entries.", _positive_int],
        ["snapshot-keep-entries", None, 5_000, "Log entries kept behind the applied index when compacting, for slow followers.", _positive_int],
    ]

    optFlags: list[list[Any]] = [
        ["auto-promote", None, "After joining, become a voter on our own once caught up."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self._env_errors: list[str] = []
        for long, _short, _doc in self.optFlags:
            var = "DKV_" + long.upper().replace("-", "_")
            if var in os.environ:
                raw = os.environ[var].strip().lower()
                if raw in ("1", "true", "yes", "on"):
                    self[long] = 1
                elif raw not in ("0", "false", "no", "off", ""):
                    self._env_errors.append(f"{var}={os.environ[var]!r}: expected true or false")
        for long, _short, _default, _doc, *coerce in self.optParameters:
            var = "DKV_" + long.upper().replace("-", "_")
            if var in os.environ:
                raw = os.environ[var]
                try:
                    self[long] = coerce[0](raw) if coerce else raw
                except ValueError as e:
                    self._env_errors.append(f"{var}={raw!r}: {e}")

    def postOptions(self) -> None:
        if self._env_errors:
            raise usage.UsageError(self._env_errors[0])
        try:
            self["config"] = self._node_config()
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        install_asyncio_reactor()

    def _node_config(self) -> NodeConfig:
        node_id = self["node-id"]
        if not node_id:
            raise ConfigError("no node id: set --node-id or DKV_NODE_ID")
        if not NODE_ID.match(node_id):
            raise ConfigError(f"node id {node_id!r}: use letters, digits, '_', '.', '-' (max 64)")
        if not self["db-path"]:
            raise ConfigError("no db path: set --db-path or DKV_DB_PATH (a file such as a.db)")
        check_db_path(self["db-path"])
        level = self["log-level"].lower()
        if level not in LEVELS:
            raise ConfigError(f"log level {self['log-level']!r}: use one of {', '.join(LEVELS)}")
        cluster: ClusterSpec | None = None
        if self["cluster"].strip():
            cluster = parse_cluster(self["cluster"])
            if all(m.id != node_id for m in cluster.members):
                raise ConfigError(f"node id {node_id!r} is not in the cluster {str(cluster)!r}")
        routes = parse_routes(self["peer-route"]) if self["peer-route"].strip() else {}
        join = None
        if self["join"].strip():
            host, port = parse_address(self["join"].strip(), "join")
            join = host_port(host, port)
        advertise = self["advertise-host"].strip() or self["listen-host"]
        if advertise in ("0.0.0.0", "::", ""):
            raise ConfigError("listening on all addresses: set --advertise-host to the address peers should use")
        if cluster is None and join is None:
            pass  # fine if the db already holds a node; checked at start-up
        if cluster is not None and join is not None:
            raise ConfigError("give either --cluster (a new cluster) or --join (an existing one), not both")
        if self["rpc-port"] == self["rest-port"]:
            raise ConfigError(f"rpc port and rest port are both {self['rpc-port']}")
        if self["heartbeat-ticks"] >= self["election-ticks"]:
            raise ConfigError("heartbeat ticks must be fewer than election ticks")
        return NodeConfig(
            node_id=node_id,
            db_path=self["db-path"],
            listen_host=self["listen-host"],
            rpc_port=self["rpc-port"],
            rest_port=self["rest-port"],
            cluster=cluster,
            peer_routes=routes,
            log_level=level,
            request_timeout=self["request-timeout"],
            tick_seconds=self["tick-ms"] / 1000.0,
            raft=RaftConfig(
                election_ticks=self["election-ticks"],
                heartbeat_ticks=self["heartbeat-ticks"],
                max_inflight=self["max-inflight"],
                defer_commit=True,
            ),
            limits=Limits(max_key_bytes=self["max-key-size"], max_body_bytes=self["max-body-size"]),
            snapshot_entries=self["snapshot-entries"],
            snapshot_keep=self["snapshot-keep-entries"],
            join=join,
            advertise=host_port(advertise, self["rpc-port"]),
            auto_promote=bool(self["auto-promote"]),
            max_connections=self["max-connections"],
            idle_timeout=self["idle-timeout"],
            read_timeout=self["read-timeout"],
        )


def install_asyncio_reactor() -> None:
    """Install Twisted's asyncio reactor unless one is already installed;
    refuse any other reactor (gRPC's asyncio API must share the loop)."""
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor
        from twisted.internet.asyncioreactor import AsyncioSelectorReactor

        if not isinstance(reactor, AsyncioSelectorReactor):
            raise usage.UsageError(
                f"dkv needs Twisted's asyncio reactor, but {type(reactor).__name__} is installed: "
                "run twistd without -r, or with -r asyncio"
            )
        return
    from twisted.internet import asyncioreactor

    asyncioreactor.install()  # a new loop, also set as asyncio's current loop


class StartupError(Exception):
    """The node cannot start; the message is the one line the operator sees."""


def check_port_free(host: str, port: int, what: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise StartupError(f"cannot listen on {what} port {host}:{port}: {e.strerror}") from None


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _StoreService(Service):
    """Closes the store last (it is added first, and stopped after the rest)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.store.close()


class DkvService(MultiService):
    """One node. Children are built in privilegedStartService (after any
    daemon fork) in dependency order; MultiService stops them in reverse."""

    def __init__(self, config: NodeConfig, reactor: Any = None) -> None:
        super().__init__()
        self.config = config
        self._reactor = reactor
        self.node: Any = None
        self._store: Any = None
        self._cluster_text = ""

    def privilegedStartService(self) -> None:
        try:
            self._build()
            try:
                super().privilegedStartService()
            except CannotListenError as e:
                raise StartupError(f"cannot listen on rest port {e.interface}:{e.port}: {e.socketError}") from None
        except StartupError as e:
            self._close_store_now()
            raise SystemExit(f"dkv: {e}") from None

    def startService(self) -> None:
        c = self.config
        _tune_gc()
        log.info(
            "dkv node {id} starting: rpc {rpc}, rest {rest}, db {db}, cluster {cluster}",
            id=c.node_id,
            rpc=host_port(c.listen_host, c.rpc_port),
            rest=host_port(c.listen_host, c.rest_port),
            db=c.db_path,
            cluster=self._cluster_text,
        )
        try:
            super().startService()
        except SystemExit:  # e.g. the gRPC port was taken since it was checked
            self._close_store_now()
            raise

    def _close_store_now(self) -> None:
        if self._store is not None:
            self._store.close_now()
            self._store = None

    def _build(self) -> None:
        from twisted.internet import reactor as global_reactor

        from dkv.api import grpc_cluster, grpc_kv
        from dkv.raft.membership import Member, Membership
        from dkv.transport.cluster_client import ClusterClient, join_cluster
        from dkv.api.front_door import FrontDoorSettings, front_door
        from dkv.grpc_server import GrpcServerService
        from dkv.node import Node
        from dkv.replication import ReplicationService
        from dkv.storage import StorageError
        from dkv.storage.lmdb_store import LmdbStore
        from dkv.transport.grpc_peer import GrpcTransport
        from dkv.transport.snapshots import SnapshotReceiver, send_snapshot

        reactor = self._reactor or global_reactor
        c = self.config
        set_level(c.log_level)
        check_port_free(c.listen_host, c.rpc_port, "rpc")
        check_port_free(c.listen_host, c.rest_port, "rest")
        try:
            store = LmdbStore.open(c.db_path, reactor)
        except StorageError as e:
            raise StartupError(str(e)) from None
        try:
            state = store.load()
            if state is None and c.cluster is not None:
                state = store.bootstrap(c.cluster.cluster_id(), c.cluster.membership)
                self._cluster_text = str(c.cluster)
            elif state is None and c.join is not None:
                try:
                    cluster_id, members = join_cluster(
                        c.join, c.node_id, c.advertise, timeout=max(30.0, 6 * c.request_timeout)
                    )
                except RuntimeError as e:
                    raise StartupError(f"cannot join the cluster via {c.join}: {e}") from None
                state = store.initialize(cluster_id, Membership(tuple(Member(*m) for m in members)))
                self._cluster_text = f"joined via {c.join} (cluster id {cluster_id}) as a learner"
            elif state is None:
                raise StartupError(
                    f"db path {c.db_path} holds no data and no cluster is given: set --cluster "
                    "(DKV_CLUSTER) to bootstrap a new cluster, or --join to join one"
                )
            else:
                self._cluster_text = f"(from the db; cluster id {state.cluster_id})"
        except StartupError:
            store.close_now()
            raise
        self._store = store
        first_election_ticks = None
        if c.cluster is not None and c.cluster.first == c.node_id:
            # The first listed node gets the first chance to lead a new
            # cluster (the core uses this only until a leader has written).
            first_election_ticks = max(2, c.raft.election_ticks // 3)

        _StoreService(store).setServiceParent(self)
        transport = GrpcTransport(
            c.node_id,
            routes=c.peer_routes,
            cluster_id=lambda: state.cluster_id,
            on_receive=lambda msgs: replication.receive(msgs),
            on_unreachable=lambda peer: replication.unreachable(peer),
        )
        replication = ReplicationService(
            node_id=c.node_id,
            state=state,
            store=store,
            transport=transport,
            clock=reactor,
            raft_config=c.raft,
            tick_seconds=c.tick_seconds,
            request_timeout=c.request_timeout,
            rng=random.Random(),
            first_election_ticks=first_election_ticks,
            on_fatal=lambda failure: _fatal(reactor, failure),
            on_removed=lambda: reactor.callLater(0, reactor.stop),
            snapshot_entries=c.snapshot_entries,
            snapshot_keep=c.snapshot_keep,
            snapshot_sender=lambda peer, snap, term: Deferred.fromFuture(
                asyncio.ensure_future(
                    send_snapshot(transport.address_of(peer) or "", state.cluster_id, c.node_id, term, snap)
                )
            ),
        )
        transport.snapshot_receiver = SnapshotReceiver(
            c.node_id,
            lambda: state.cluster_id,
            lambda: store,
            replication.receive,
            busy=lambda: replication.installing_snapshot,
        )
        replication.setServiceParent(self)
        cluster_client = ClusterClient(c.request_timeout)
        self.node = node = Node(replication, store, c.limits, cluster_client, transport.address_of)
        GrpcServerService(
            c.listen_host,
            c.rpc_port,
            registrations=[
                transport.register,
                lambda server: grpc_kv.register(server, node),
                lambda server: grpc_cluster.register(server, node),
            ],
            max_message_bytes=c.limits.max_body_bytes + 64 * 1024,
            on_start=transport.start,
            on_stop=lambda: asyncio.gather(transport.stop(), cluster_client.close()),
        ).setServiceParent(self)
        if c.auto_promote:
            _AutoPromote(node, c.node_id, reactor).setServiceParent(self)
        settings = FrontDoorSettings(
            max_connections=c.max_connections, idle_timeout=c.idle_timeout, read_timeout=c.read_timeout
        )
        rest = internet.TCPServer(c.rest_port, front_door(node, reactor, settings), interface=c.listen_host)
        rest.setServiceParent(self)


class _AutoPromote(Service):
    """A node that joined as a learner asks to become a voter every second
    until it is one (the leader refuses until it has caught up)."""

    def __init__(self, node: Any, node_id: str, clock: Any) -> None:
        self._node = node
        self._id = node_id
        self._clock = clock
        self._loop: Any = None

    def startService(self) -> None:
        from twisted.internet.task import LoopingCall

        super().startService()
        self._loop = LoopingCall(self._try)
        self._loop.clock = self._clock
        self._loop.start(1.0, now=False).addErrback(lambda f: log.failure("auto-promote", f))

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _try(self) -> Deferred[None] | None:
        me = next((m for m in self._node.members()["members"] if m["id"] == self._id), None)
        if me is None:
            return None
        if me["voter"]:
            self._loop.stop()
            return None
        d = self._node.promote_member(self._id)
        d.addCallbacks(
            lambda _: log.info("promoted {id} to voter", id=self._id),
            lambda f: log.debug("not promoted yet: {why}", why=f.getErrorMessage()),
        )
        return d


def _tune_gc() -> None:
    """Python's cyclic collector paused the reactor for tens of ms under load.
    Everything alive after start-up (modules, services) moves to the
    permanent generation, never scanned again, and collections run less
    often (young every 10k net allocations, the oldest every 100 middle
    ones). With requests no longer kept alive past their answer
    (``ReplicationService._new_request``), p99 at 64 connections is ~17 ms
    for writes and ~6 ms for linearizable reads. A node is the only tenant
    of its process."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)


def _fatal(reactor: Any, failure: Failure) -> None:
    """A node that cannot persist or whose core failed must not go on."""
    reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
    if reactor.running:
        reactor.stop()


def makeService(options: Options) -> IService:  # noqa: N802 - twistd's name
    return DkvService(options["config"])

