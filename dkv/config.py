# test-case-name: tests.test_config
"""A node's configuration: its values and the rules for parsing them.

``Options`` (``dkv.options``) turns flags and ``DKV_*`` variables into a
``NodeConfig``; the functions here hold the rules so they can be tested
without a reactor. A leaf: it imports nothing of dkv but the pure core's
values, so anything may import it.
"""

from __future__ import annotations

import hashlib
import os
import re

import attrs

from dkv.raft import RaftConfig
from dkv.raft.membership import NODE_ID, Member, Membership

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)$")


class ConfigError(ValueError):
    """Configuration that cannot work; the message says what is wrong."""


#: etcd's default space quota (its DefaultQuotaBytes): 2 GiB.
DEFAULT_QUOTA_BYTES = 2 << 30


@attrs.frozen
class Limits:
    """What every API refuses beyond (413 / RESOURCE_EXHAUSTED)."""

    max_key_bytes: int = 4096
    #: The largest REST body (and gRPC message) accepted.
    max_body_bytes: int = 1536 * 1024
    #: The most operations in one etcd Txn (``--max-txn-ops``, as etcd).
    max_txn_ops: int = 128
    #: Seconds of log time a write's outcome is remembered under its
    #: idempotency key (``--idempotency-window``; 0: keys are ignored).
    idempotency_window: float = 600.0
    #: Seconds an auth token lives after its last use (``--auth-token-ttl``, as etcd).
    auth_token_ttl: float = 300.0
    #: The db's space quota (``--quota-backend-bytes``, as etcd): a write
    #: that grows the db past it raises the NOSPACE alarm (``dkv.quota``).
    quota_backend_bytes: int = DEFAULT_QUOTA_BYTES


@attrs.frozen
class Admission:
    """Admission control (``dkv.replication.admission``): past these bounds
    new work is refused at once (429 / RESOURCE_EXHAUSTED, etcd's
    ``etcdserver: too many requests``) instead of queued."""

    #: Writes taken by this node and not yet answered (``--max-pending-proposals``),
    #: forwarded ones included.
    max_pending_proposals: int = 1024
    #: Linearizable reads waiting for a ReadIndex round or for the apply
    #: (``--max-pending-reads``).
    max_pending_reads: int = 4096
    #: Committed entries not yet applied here beyond which writes are refused
    #: (``--max-apply-gap``; etcd's maxGapBetweenApplyAndCommitIndex, 5000).
    max_apply_gap: int = 5000
    #: The most the queueing-delay target may be, in seconds
    #: (``--max-queue-delay``; 0: no delay bound). New writes (and
    #: linearizable reads) are refused while the oldest one waiting on this
    #: node has waited past the target: a bound on queueing delay rather
    #: than on queue length, as CoDel's, so the requests admitted under
    #: overload are answered about as fast as without it.
    max_queue_delay: float = 0.25
    #: The least the target may be (``--min-queue-delay``): the target is
    #: ``queue_delay_factor`` times the fastest write answered lately (about
    #: one commit round trip, ``dkv.replication.admission``), clamped to
    #: [min_queue_delay, max_queue_delay].
    min_queue_delay: float = 0.02
    #: Target = this many times the fastest recent write. No flag.
    queue_delay_factor: float = 4.0
    #: Seconds over which the fastest write is taken (the minimum of the
    #: last one to two windows). No flag.
    queue_delay_window: float = 10.0
    #: The delay bound applies only while at least this many requests of
    #: its kind wait (as CoDel never drops from a near-empty queue): a few
    #: writes waiting long on a slow disk or a dead leader are not overload,
    #: and keep waiting for their deadline as before; nor is a client's
    #: closed loop of up to this many connections. No flag.
    queue_delay_min_pending: int = 80
    #: Bytes of Raft messages queued for one peer (``--max-peer-queue-bytes``):
    #: beyond it messages are dropped and the core probes the peer again (or
    #: sends it a snapshot once the entries it needs are compacted).
    max_peer_queue_bytes: int = 32 << 20


def host_port(host: str, port: int) -> str:
    """HOST:PORT, with an IPv6 host in brackets (``[::1]:7070``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_port(text: str, what: str = "port") -> int:
    try:
        port = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number from 1 to 65535, not {text!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{what} must be a number from 1 to 65535, not {text!r}")
    return port


def parse_address(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not _HOST.match(host):
        raise ConfigError(f"{what}: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), parse_port(port, f"{what}: port")


@attrs.frozen
class ClusterSpec:
    """The bootstrap cluster as written: ``id@host:port,...`` in order."""

    members: tuple[Member, ...]

    @property
    def membership(self) -> Membership:
        return Membership(self.members)

    @property
    def first(self) -> str:
        return self.members[0].id

    def cluster_id(self) -> str:
        """Identical on every node bootstrapped from the same member list."""
        return hashlib.sha256(self.membership.encode()).hexdigest()[:16]

    def __str__(self) -> str:
        return ",".join(f"{m.id}@{m.address}" for m in self.members)


def parse_cluster(text: str) -> ClusterSpec:
    """Parse ``a@127.0.0.1:7070,b@127.0.0.1:8080``; raise ConfigError on any flaw."""
    members: list[Member] = []
    for raw in text.split(","):
        item = raw.strip()
        node_id, sep, address = item.partition("@")
        if not sep:
            raise ConfigError(f"cluster entry {item!r} is not ID@HOST:PORT")
        if not NODE_ID.match(node_id):
            raise ConfigError(
                f"cluster entry {item!r}: node id must be letters, digits, '_', '.', '-' (max 64)"
            )
        host, port = parse_address(address, f"cluster entry {item!r}")
        if any(m.id == node_id for m in members):
            raise ConfigError(f"cluster lists node id {node_id!r} twice")
        addr = host_port(host, port)
        if any(m.address == addr for m in members):
            raise ConfigError(f"cluster lists address {addr} twice")
        members.append(Member(node_id, addr, True))
    return ClusterSpec(tuple(members))


def parse_routes(text: str) -> dict[str, str]:
    """Parse ``b=127.0.0.1:9000,c=127.0.0.1:9001`` (peer id -> dial address
    of its RPC port); an item may end in ``/PEER_PORT`` (see
    ``parse_peer_port_routes``)."""
    return {node_id: rpc for node_id, (rpc, _) in _routes(text).items()}


def parse_peer_port_routes(text: str) -> dict[str, str]:
    """The peer-port addresses of ``--peer-route``: ``b=HOST:9000/9005`` dials
    b's RPC port at HOST:9000 and its peer port (``--peer-transport
    twisted``) at HOST:9005; items without ``/PEER_PORT`` are not included
    (their peer port is derived from the RPC port)."""
    return {node_id: peer for node_id, (_, peer) in _routes(text).items() if peer}


def _routes(text: str) -> dict[str, tuple[str, str]]:
    routes: dict[str, tuple[str, str]] = {}
    for raw in text.split(","):
        item = raw.strip()
        node_id, sep, address = item.partition("=")
        if not sep or not NODE_ID.match(node_id):
            raise ConfigError(f"peer route {item!r} is not ID=HOST:PORT[/PEER_PORT]")
        address, slash, peer_port = address.partition("/")
        host, port = parse_address(address, f"peer route {item!r}")
        peer = host_port(host, parse_port(peer_port, f"peer route {item!r}: peer port")) if slash else ""
        routes[node_id] = (host_port(host, port), peer)
    return routes


#: A member's peer port (``--peer-transport twisted``) is its RPC port plus
#: this, unless ``--peer-port`` says otherwise (then the others need a
#: ``--peer-route`` with ``/PEER_PORT`` to it). Not + 1: that is the REST port
#: of the default and documented layouts.
PEER_PORT_OFFSET = 2
PEER_TRANSPORTS = ("grpc", "twisted")
#: The peer transport of a node that is not told one: the native peer
#: protocol; ``grpc`` (Raft messages on the RPC port) stays selectable.
DEFAULT_PEER_TRANSPORT = "twisted"


@attrs.frozen
class TlsFiles:
    """One side's TLS files: the client side (``--cert-file``,
    ``--key-file``, ``--trusted-ca-file``, ``--client-cert-auth``) or the
    peer side (``--peer-...``; peers always present and check certificates).
    Read and checked when the node starts, and again on SIGHUP
    (``dkv.tls``)."""

    cert_file: str
    key_file: str
    trusted_ca_file: str = ""
    #: Require a certificate signed by ``trusted_ca_file`` from every client.
    client_cert_auth: bool = False
    #: How the flags are named in messages: "" (client side) or "peer-".
    flag_prefix: str = ""


def parse_tls(
    cert_file: str, key_file: str, trusted_ca_file: str, client_cert_auth: bool, peer: bool = False
) -> TlsFiles | None:
    """The TLS files of one side, or None when that side is plaintext.
    Raises ConfigError for combinations that cannot work; the files
    themselves are read at start-up (``dkv.tls.material``)."""
    p = "peer-" if peer else ""
    cert, key, ca = cert_file.strip(), key_file.strip(), trusted_ca_file.strip()
    if not (cert or key or ca or client_cert_auth):
        return None
    if bool(cert) != bool(key):
        given, missing = ("cert", "key") if cert else ("key", "cert")
        raise ConfigError(f"--{p}{given}-file given without --{p}{missing}-file: give both")
    if not cert:
        what = f"--{p}trusted-ca-file" if ca else f"--{p}client-cert-auth"
        raise ConfigError(f"{what} needs --{p}cert-file and --{p}key-file (the certificate this node presents)")
    if client_cert_auth and not ca:
        raise ConfigError(f"--{p}client-cert-auth needs --{p}trusted-ca-file (the CA of the client certificates)")
    if peer and not ca:
        raise ConfigError("--peer-cert-file needs --peer-trusted-ca-file (peers check each other's certificates)")
    return TlsFiles(cert, key, ca, client_cert_auth or peer, p)


@attrs.frozen
class NodeConfig:
    node_id: str
    db_path: str
    listen_host: str
    rpc_port: int
    rest_port: int
    cluster: ClusterSpec | None
    peer_routes: dict[str, str]
    log_level: str
    request_timeout: float
    tick_seconds: float
    raft: RaftConfig
    limits: Limits
    snapshot_entries: int = 10_000
    snapshot_keep: int = 5_000
    #: HOST:PORT of a member to join through, for an empty db.
    join: str | None = None
    #: HOST:PORT peers reach our RPC port at.
    advertise: str = ""
    auto_promote: bool = False
    #: The REST port's bounds (dkv.api.front_door.FrontDoorSettings).
    max_connections: int = 10_000
    idle_timeout: float = 60.0
    read_timeout: float = 30.0
    #: Seconds between a watcher's progress notifications (etcd's
    #: --experimental-watch-progress-notify-interval, 10 minutes).
    watch_progress_interval: float = 600.0
    #: (mode, retention): "periodic" and seconds, or "revision" and revisions; 0 is off.
    auto_compaction: tuple[str, float] = ("periodic", 0.0)
    #: "text" or "json" (``--log-format``; ``dkv.logs.log_observer``).
    log_format: str = "text"
    #: A plain HTTP port serving /metrics and the probes apart (etcd's
    #: --listen-metrics-urls); None: only on the REST port.
    metrics_port: int | None = None
    #: TLS of the client ports (REST, and the gRPC API on the RPC port); None: plaintext.
    client_tls: TlsFiles | None = None
    #: Mutual TLS between peers (on the RPC port); None: plaintext.
    peer_tls: TlsFiles | None = None
    #: Admission control's bounds (``--max-pending-proposals`` and friends).
    admission: Admission = Admission()
    #: Events a watcher may have waiting in its stream before it is moved to
    #: the unsynced group (``--max-watch-pending-events``).
    watch_max_pending_events: int = 1024
    #: How Raft messages travel: "twisted" (the peer port) or "grpc" (the RPC port).
    peer_transport: str = DEFAULT_PEER_TRANSPORT
    #: The peer port (``--peer-transport twisted``); 0: RPC port + PEER_PORT_OFFSET.
    peer_port: int = 0
    #: Peer id -> HOST:PORT of its peer port, from ``--peer-route ID=HOST:PORT/PEER_PORT``.
    peer_port_routes: dict[str, str] = attrs.Factory(dict)

    @property
    def effective_peer_port(self) -> int:
        return self.peer_port or self.rpc_port + PEER_PORT_OFFSET


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(h|m|s)?$")


def parse_auto_compaction(mode: str, retention: str) -> tuple[str, float]:
    """etcd's --auto-compaction-mode and --auto-compaction-retention:
    periodic keeps a duration of history (``1h``, ``30m``, ``90s``; a bare
    number is hours, as etcd reads it), revision a number of revisions."""
    mode = mode.strip().lower()
    text = retention.strip().lower()
    if mode == "revision":
        if not text.isdigit():
            raise ConfigError(f"auto-compaction retention {retention!r}: revision mode takes a whole number")
        return mode, float(int(text))
    if mode != "periodic":
        raise ConfigError(f"auto-compaction mode {mode!r}: use periodic or revision")
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"auto-compaction retention {retention!r}: use a duration such as 1h, 30m or 90s")
    number, unit = float(match.group(1)), match.group(2) or "h"
    return mode, number * {"h": 3600, "m": 60, "s": 1}[unit]


def check_db_path(path: str) -> None:
    if os.path.isdir(path):
        raise ConfigError(f"db path {path} is a directory; give a file path such as {path}/node.db")
    parent = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise ConfigError(f"db path {path}: {parent} is not a directory")
    if not os.path.isdir(parent):
        raise ConfigError(f"db path {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (
        os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK)
    ):
        raise ConfigError(f"db path {path} is not writable")
