# test-case-name: tests.test_process,tests.test_config
"""The one place that wires a node: ``build(config)`` returns its service tree.

    NodeService (MultiService)     checks its ports are free, then starts:
      TlsService                   reads the TLS files (if any); reloads them on SIGHUP
      StoreService                 opens LMDB, bootstraps / joins / recovers
      ReplicationService           the driver (Raft core, persist/send/apply)
      GrpcServerService            the RPC port: dkv.v0 KV and Cluster, the peer protocol
      TCPServer                    (--peer-transport twisted) the peer port: the native
                                   peer protocol (over peer TLS with --peer-cert-file)
      AutoPromote                  (--auto-promote) asks to become a voter
      TCPServer                    the REST port: the front door (over TLS with --cert-file)
      TCPServer                    (--metrics-port) /metrics and the probes, apart
      SystemdNotify                tells systemd READY / STATUS / WATCHDOG / STOPPING
                                   ($NOTIFY_SOCKET; a no-op without it)

Children start in that order and stop in reverse, so the store closes last.
Everything is built when ``build`` runs; the store opens and the ports bind
in ``privilegedStartService`` (after twistd may have forked). A failure then
raises ``StartupError`` with one line for the operator; the service tree
never exits the process itself.

Import this module only once the asyncio reactor is installed (``dkv.tap``
does it first): Klein, which the REST port uses, imports the reactor.
"""

from __future__ import annotations

import gc
import os
import random
import socket
from typing import Any

from twisted.application import internet
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.task import LoopingCall
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from dkv.aio import deferred_from
from dkv.api import etcd_grpc, grpc_cluster, grpc_kv
from dkv.api.front_door import FrontDoorSettings, front_door
from dkv.api.routes import OPERATIONS_ROUTES
from dkv.auto_compaction import AutoCompaction, AutoCompactor
from dkv.config import PEER_PORT_OFFSET, NodeConfig, host_port
from dkv.disk_full import disk_full_line, is_disk_full
from dkv.errors import StartupError
from dkv.grpc_metrics import MetricsInterceptor
from dkv.grpc_server import GrpcServerService
from dkv.logs import logger, set_level
from dkv.metrics import NodeMetrics
from dkv.node import Node
from dkv.node_metrics import node_state
from dkv.raft.membership import Member, Membership
from dkv.replication import DriverConfig, ReplicationService
from dkv.storage import NodeStore, PersistentState, StorageError
from dkv.storage.disk_faults import install_from_environ
from dkv.storage.lmdb_store import LmdbStore
from dkv.storage.service import StoreService
from dkv.systemd_notify import SystemdNotify, notifier_from_env, watchdog_interval
from dkv.tls import NodeTls
from dkv.tls.peer_guard import PeerGuard
from dkv.tls.peer_port import PeerPortTls
from dkv.tls.rest import tls_factory
from dkv.tls.service import TlsService
from dkv.transport.cluster_client import ClusterClient, join_cluster
from dkv.transport.grpc_peer import GrpcTransport
from dkv.transport.snapshots import SnapshotReceiver, send_snapshot
from dkv.transport.twisted_peer import PeerSettings, TwistedTransport
from dkv.watch import WatchSettings

log = logger("dkv")

#: The listen backlog of the REST, metrics and peer ports: connections the
#: kernel completes and queues while the node has not accepted them yet (it
#: caps the number at net.core.somaxconn). Twisted's default, 50, let a burst
#: of clients connecting at once (wrk's 256 or 1,024 connections) overflow
#: the queue: the kernel dropped the overflow's handshakes, and their first
#: requests waited for a SYN retransmission, 1 s and more. etcd (Go) listens
#: with somaxconn.
LISTEN_BACKLOG = 4096

__all__ = ["NodeService", "build"]


def build(config: NodeConfig, reactor: Any = None) -> NodeService:
    """The service tree of one node (nothing opened or bound yet)."""
    if reactor is None:
        from twisted.internet import reactor  # installed by dkv.tap before this module was imported
    c = config
    tree = NodeService(c)

    def listen(port: int, factory: IProtocolFactory) -> None:
        """Serve factory on port (at --listen-host, with LISTEN_BACKLOG) in the tree."""
        internet.TCPServer(port, factory, backlog=LISTEN_BACKLOG, interface=c.listen_host).setServiceParent(tree)

    metrics = NodeMetrics()
    tls = NodeTls(c.client_tls, c.peer_tls)
    TlsService(tls, reactor).setServiceParent(tree)
    store = StoreService(lambda: _open_store(c, reactor, metrics), lambda s: _prepare(c, s, tree, tls))
    store.setServiceParent(tree)
    first_election_ticks = None
    if c.cluster is not None and c.cluster.first == c.node_id:
        # The first listed node gets the first chance to lead a new cluster
        # (the core uses this only until a leader has written).
        first_election_ticks = max(2, c.raft.election_ticks // 3)
    transport = GrpcTransport(
        c.node_id,
        routes=c.peer_routes,
        cluster_id=lambda: replication.cluster_id,
        on_receive=lambda msgs: replication.receive(msgs),
        on_unreachable=lambda peer: replication.unreachable(peer),
        on_round_trip=lambda peer, seconds: metrics.peer_rtt.labels(peer).observe(seconds),
        channel_credentials=tls.peer_channel_credentials,
        max_queue_bytes=c.admission.max_peer_queue_bytes,
    )
    # gRPC's Raft service stays on the RPC port (snapshots travel there);
    # with --peer-transport twisted the messages take the peer port instead.
    raft_transport: GrpcTransport | TwistedTransport = transport
    peer_port_tls = PeerPortTls(tls, lambda member: raft_transport.member_address(member))
    if c.peer_transport == "twisted":
        raft_transport = TwistedTransport(
            c.node_id,
            cluster_id=lambda: replication.cluster_id,
            on_receive=lambda msgs: replication.receive(msgs),
            on_unreachable=lambda peer: replication.unreachable(peer),
            reactor=reactor,
            routes=c.peer_routes,
            peer_routes=c.peer_port_routes,
            on_round_trip=lambda peer, seconds: metrics.peer_rtt.labels(peer).observe(seconds),
            client_tls=peer_port_tls.client_creator,
            cert_check=peer_port_tls.check,
            settings=PeerSettings(max_pending_bytes=c.admission.max_peer_queue_bytes),
        )
    guard = PeerGuard(tls, raft_transport.member_address)
    transport.guard = guard
    replication = ReplicationService(
        node_id=c.node_id,
        store=store,
        transport=raft_transport,
        clock=reactor,
        rng=random.Random(),
        config=DriverConfig(
            raft=c.raft,
            tick_seconds=c.tick_seconds,
            request_timeout=c.request_timeout,
            first_election_ticks=first_election_ticks,
            snapshot_entries=c.snapshot_entries,
            snapshot_keep=c.snapshot_keep,
            watch=WatchSettings(
                progress_interval=c.watch_progress_interval, max_pending_events=c.watch_max_pending_events
            ),
            admission=c.admission,
        ),
        on_fatal=lambda failure: _fatal(reactor, failure),
        on_removed=lambda: reactor.callLater(0, reactor.stop),
        snapshot_sender=lambda peer, snap, term: deferred_from(
            raft_transport.send_snapshot(peer, snap, term)
            if isinstance(raft_transport, TwistedTransport)
            else send_snapshot(
                raft_transport.address_of(peer) or "", replication.cluster_id, c.node_id, term, snap,
                tls.peer_channel_credentials(),
            )  # fmt: skip
        ),
    )
    transport.snapshot_receiver = SnapshotReceiver(
        c.node_id,
        lambda: replication.cluster_id,
        lambda: store,
        replication.receive,
        busy=lambda: replication.installing_snapshot,
    )
    if isinstance(raft_transport, TwistedTransport):
        raft_transport.snapshot_receiver = transport.snapshot_receiver
    replication.setServiceParent(tree)
    cluster_client = ClusterClient(c.request_timeout, tls.peer_channel_credentials)
    tls.on_reload.append(cluster_client.drop_channels)
    scheme = "https" if tls.enabled else "http"  # the RPC port serves TLS with either side's TLS
    tree.node = node = Node(
        replication, store, c.limits, cluster_client, raft_transport.address_of, url_scheme=scheme, metrics=metrics
    )
    metrics.read_state = lambda: node_state(node, raft_transport)

    def start_peers() -> None:
        transport.start()
        if isinstance(raft_transport, TwistedTransport):
            raft_transport.start()

    async def stop_peers() -> None:
        if isinstance(raft_transport, TwistedTransport):
            raft_transport.stop()
        await transport.stop()
        await cluster_client.close()

    grpc_server = GrpcServerService(
        c.listen_host,
        c.rpc_port,
        registrations=[
            transport.register,
            lambda server: grpc_kv.register(server, node),
            lambda server: grpc_cluster.register(server, node, guard),
            lambda server: etcd_grpc.register(server, node),
        ],
        max_message_bytes=c.limits.max_body_bytes + 64 * 1024,
        on_start=start_peers,
        on_stop=stop_peers,
        interceptors=[MetricsInterceptor(metrics)],
        credentials=tls.rpc_server_credentials,
    )
    grpc_server.setServiceParent(tree)
    if isinstance(raft_transport, TwistedTransport):
        peer_factory: IProtocolFactory = raft_transport.listener
        if c.peer_tls is not None:
            peer_factory = TLSMemoryBIOFactory(peer_port_tls.server_creator(), False, peer_factory)
        listen(c.effective_peer_port, peer_factory)
    if c.auto_promote:
        AutoPromote(node, c.node_id, reactor).setServiceParent(tree)
    AutoCompactor(node, AutoCompaction(*c.auto_compaction), reactor).setServiceParent(tree)
    settings = FrontDoorSettings(
        max_connections=c.max_connections, idle_timeout=c.idle_timeout, read_timeout=c.read_timeout
    )
    rest: IProtocolFactory = front_door(node, reactor, settings)
    if tls.rest_enabled:
        rest = tls_factory(rest, tls)
    listen(c.rest_port, rest)
    if c.metrics_port is not None:
        listen(c.metrics_port, front_door(node, reactor, settings, OPERATIONS_ROUTES))
    # Last, so it starts when everything else has (and stops first).
    SystemdNotify(
        notifier_from_env(),
        reactor,
        ready=grpc_server.when_started,
        status=lambda: _status_line(c, node),
        watchdog=watchdog_interval(os.environ, os.getpid()),
    ).setServiceParent(tree)
    return tree


def _status_line(c: NodeConfig, node: Node) -> str:
    """The node at a glance, for ``systemctl status``."""
    st = node.status()
    leader = st["leader_id"] or "none"
    return (
        f"serving rest {host_port(c.listen_host, c.rest_port)}, rpc {host_port(c.listen_host, c.rpc_port)}; "
        f"{st['role']}, term {st['term']}, leader {leader}, applied {st['applied_index']}"
    )


class NodeService(MultiService):
    """One node: its children in dependency order (MultiService stops them
    in reverse). ``privilegedStartService`` and ``startService`` raise
    StartupError, with the store closed again, when the node cannot start."""

    def __init__(self, config: NodeConfig) -> None:
        super().__init__()
        self.config = config
        self.node: Node | None = None
        #: How the store came to hold this node, for the start-up log line.
        self.origin = ""

    def _store(self) -> StoreService:
        return next(s for s in self if isinstance(s, StoreService))

    def privilegedStartService(self) -> None:
        c = self.config
        set_level(c.log_level)
        check_port_free(c.listen_host, c.rpc_port, "rpc")
        check_port_free(c.listen_host, c.rest_port, "rest")
        if c.metrics_port is not None:
            check_port_free(c.listen_host, c.metrics_port, "metrics")
        if c.peer_transport == "twisted":
            # a derived peer port is a port the operator never named: say where it comes from
            note = "" if c.peer_port else f" (the RPC port + {PEER_PORT_OFFSET}; --peer-port sets another)"
            check_port_free(c.listen_host, c.effective_peer_port, "peer", note)
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            self._store().close_now()
            what = "metrics" if e.port == c.metrics_port else "rest"
            if c.peer_transport == "twisted" and e.port == c.effective_peer_port:
                what = "peer"
            raise StartupError(f"cannot listen on {what} port {e.interface}:{e.port}: {e.socketError}") from None
        except BaseException:
            self._store().close_now()
            raise

    def startService(self) -> None:
        c = self.config
        _tune_gc()
        peer = ""
        if c.peer_transport == "twisted":
            peer = f", peer {host_port(c.listen_host, c.effective_peer_port)}"
        log.info(
            "dkv node {id} starting: rpc {rpc}{peer}, rest {rest}, db {db}, cluster {cluster}",
            id=c.node_id,
            rpc=host_port(c.listen_host, c.rpc_port),
            peer=peer,
            rest=host_port(c.listen_host, c.rest_port),
            db=c.db_path,
            cluster=self.origin,
        )
        try:
            super().startService()
        except StartupError:  # e.g. the gRPC port was taken since it was checked
            self._store().close_now()
            raise


def check_port_free(host: str, port: int, what: str, note: str = "") -> None:
    """Raise StartupError, one line naming the port (then ``note``), if it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise StartupError(f"cannot listen on {what} port {host}:{port}{note}: {e.strerror}") from None


def _open_store(c: NodeConfig, reactor: Any, metrics: NodeMetrics) -> NodeStore:
    try:
        store = LmdbStore.open(c.db_path, reactor)
    except StorageError as e:
        raise StartupError(str(e)) from None
    except Exception as e:
        if is_disk_full(e):
            raise StartupError(disk_full_line(c.db_path, e)) from None
        raise
    store.on_commit = metrics.observe_commit
    install_from_environ(store)  # tests only (DKV_TESTING_ONLY_FAULTS)
    return store


def _prepare(c: NodeConfig, store: NodeStore, tree: NodeService, tls: NodeTls) -> PersistentState:
    """The store's state: recovered, or a new cluster bootstrapped
    (--cluster), or joined through a member (--join, blocking: it runs
    before the reactor)."""
    try:
        return _prepare_store(c, store, tree, tls)
    except Exception as e:
        if is_disk_full(e):
            raise StartupError(disk_full_line(c.db_path, e)) from None
        raise


def _prepare_store(c: NodeConfig, store: NodeStore, tree: NodeService, tls: NodeTls) -> PersistentState:
    state = store.load()
    if state is not None:
        tree.origin = f"(from the db; cluster id {state.cluster_id})"
        return state
    if c.cluster is not None:
        tree.origin = str(c.cluster)
        return store.bootstrap(c.cluster.cluster_id(), c.cluster.membership)
    if c.join is not None:
        try:
            cluster_id, members = join_cluster(
                c.join, c.node_id, c.advertise, timeout=max(30.0, 6 * c.request_timeout),
                credentials=tls.peer_channel_credentials(),
            )  # fmt: skip
        except RuntimeError as e:
            raise StartupError(f"cannot join the cluster via {c.join}: {e}") from None
        tree.origin = f"joined via {c.join} (cluster id {cluster_id}) as a learner"
        return store.initialize(cluster_id, Membership(tuple(Member(*m) for m in members)))
    raise StartupError(
        f"db path {c.db_path} holds no data and no cluster is given: set --cluster "
        "(DKV_CLUSTER) to bootstrap a new cluster, or --join to join one"
    )


class AutoPromote(Service):
    """A node that joined as a learner asks to become a voter every second
    until it is one (the leader refuses until it has caught up)."""

    def __init__(self, node: Node, node_id: str, clock: Any) -> None:
        self._node = node
        self._id = node_id
        self._clock = clock
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._try)
        self._loop.clock = self._clock
        self._loop.start(1.0, now=False).addErrback(lambda f: log.failure("auto-promote", f))

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _try(self) -> Deferred[Any] | None:
        me = next((m for m in self._node.members()["members"] if m["id"] == self._id), None)
        if me is None:
            return None
        if me["voter"]:
            assert self._loop is not None
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
    ones). With requests no longer kept alive past their answer (see
    ``dkv.replication.requests``), p99 at 64 connections is ~17 ms for writes
    and ~6 ms for linearizable reads. A node is the only tenant of its
    process."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)


def _fatal(reactor: Any, failure: Failure) -> None:
    """A node that cannot persist or whose core failed must not go on."""
    reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
    if reactor.running:
        reactor.stop()
