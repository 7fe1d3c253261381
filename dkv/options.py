# test-case-name: tests.test_config
"""Command-line options of ``dkv`` and ``twistd dkv``: flags, ``DKV_*`` variables
and the checks that need neither the network nor the disk.

Every flag ``--foo-bar`` also reads ``DKV_FOO_BAR``; a flag wins over its
variable. ``postOptions`` turns them into a ``NodeConfig`` and makes sure the
asyncio reactor is the one installed (gRPC's asyncio API and Twisted share
that one loop).
"""

from __future__ import annotations

import os
from typing import Any

from twisted.python import usage

from dkv import asyncio_reactor
from dkv.config import (
    DEFAULT_PEER_TRANSPORT,
    DEFAULT_QUOTA_BYTES,
    PEER_PORT_OFFSET,
    PEER_TRANSPORTS,
    Admission,
    ClusterSpec,
    ConfigError,
    Limits,
    NodeConfig,
    TlsFiles,
    check_db_path,
    host_port,
    parse_address,
    parse_auto_compaction,
    parse_cluster,
    parse_peer_port_routes,
    parse_port,
    parse_routes,
    parse_tls,
)
from dkv.logs import FORMATS, LEVELS
from dkv.raft import RaftConfig
from dkv.raft.membership import NODE_ID


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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds (0 or more), got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"expected a number of seconds (0 or more), got {text!r}")
    return value


def _bytes_or_default(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a number of bytes (0: the default), got {text!r}") from None
    if value < 0:
        raise ValueError(f"expected a number of bytes (0: the default), got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        return parse_port(text)
    except ConfigError as e:
        raise ValueError(str(e)) from None


def _port_or_zero(text: str) -> int:
    return 0 if text.strip() == "0" else _port(text)


_positive_int.coerceDoc = "A positive whole number."  # type: ignore[attr-defined]
_positive_float.coerceDoc = "A positive number."  # type: ignore[attr-defined]
_port.coerceDoc = "A TCP port, 1-65535."  # type: ignore[attr-defined]
_seconds.coerceDoc = "Seconds, 0 or more."  # type: ignore[attr-defined]
_port_or_zero.coerceDoc = "A TCP port, 1-65535 (0: the default)."  # type: ignore[attr-defined]
_bytes_or_default.coerceDoc = "Bytes, 0 or more (0: the default)."  # type: ignore[attr-defined]


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run one dkv node. Every option --foo-bar can also be set with the "
        "environment variable DKV_FOO_BAR; the option wins."
    )
    optParameters: list[list[Any]] = [
        ["node-id", None, None, "This node's id; must appear in --cluster."],
        [
            "cluster",
            None,
            "",
            "Bootstrap cluster, ID@HOST:RPC_PORT,... The first member gets the first chance to lead. "
            "Only read when the db is empty.",
        ],
        [
            "rpc-port",
            None,
            7070,
            "Port for gRPC: the KV API and joins (and Raft messages with --peer-transport grpc).",
            _port,
        ],
        ["rest-port", None, 7071, "Port for the REST API.", _port],
        [
            "metrics-port",
            None,
            None,
            "Also serve /metrics, /health, /livez and /readyz on this plain HTTP port (on --listen-host).",
            _port,
        ],
        ["db-path", None, None, "LMDB file for this node's data, e.g. a.db."],
        ["listen-host", None, "127.0.0.1", "Address the RPC and REST ports listen on."],
        ["log-level", None, "info", "debug, info, warn, error or critical."],
        ["log-format", None, "text", "text, or json: one JSON object per line."],
        [
            "join",
            None,
            "",
            "HOST:RPC_PORT of any member: join that cluster as a learner (only read when the db is empty).",
        ],
        ["advertise-host", None, "", "Host other nodes reach this node's RPC port at (default: --listen-host)."],
        [
            "peer-route",
            None,
            "",
            "ID=HOST:PORT[/PEER_PORT],... reach these peers at these addresses instead of the ones in the cluster "
            "configuration (NAT, tunnels, fault-injection tests); /PEER_PORT: their peer port "
            "(--peer-transport twisted) is there on that host.",
        ],
        [
            "peer-transport",
            None,
            DEFAULT_PEER_TRANSPORT,
            "How Raft messages travel between members: twisted (the native peer protocol on --peer-port) "
            "or grpc (on the RPC port). All members must use the same.",
        ],
        [
            "peer-port",
            None,
            0,
            "Port of the native peer protocol (--peer-transport twisted, the default); default: the RPC port + 2.",
            _port_or_zero,
        ],
        ["request-timeout", None, 5.0, "Seconds a client request may wait for the cluster.", _positive_float],
        ["max-key-size", None, 4096, "Largest key in bytes.", _positive_int],
        ["max-body-size", None, 1536 * 1024, "Largest REST body / gRPC message in bytes.", _positive_int],
        ["max-connections", None, 10_000, "REST connections open at once; newer ones are refused.", _positive_int],
        ["idle-timeout", None, 60.0, "Seconds a REST connection may stay open with nothing to do.", _positive_float],
        ["read-timeout", None, 30.0, "Seconds a REST request may take to arrive, headers and body.", _positive_float],
        [
            "watch-progress-notify-interval",
            None,
            600.0,
            "Seconds between the progress notifications of a watcher that asked for them.",
            _positive_float,
        ],
        ["max-txn-ops", None, 128, "Most operations in one etcd Txn.", _positive_int],
        [
            "idempotency-window",
            None,
            600.0,
            "Seconds of leader-stamped log time a write's outcome is remembered under its Idempotency-Key "
            "(0: keys are ignored).",
            _seconds,
        ],
        [
            "auth-token-ttl",
            None,
            300.0,
            "Seconds an auth token (Authenticate) stays valid after its last use, as etcd's --auth-token-ttl.",
            _positive_float,
        ],
        [
            "quota-backend-bytes",
            None,
            0,
            "Space quota of the db in bytes, as etcd's: past it the NOSPACE alarm is raised and writes that "
            "grow the db are refused (0: etcd's default, 2 GiB).",
            _bytes_or_default,
        ],
        ["auto-compaction-mode", None, "periodic", "periodic or revision, as etcd's."],
        [
            "auto-compaction-retention",
            None,
            "0",
            "History kept: periodic: a duration (1h, 30m, 90s; a bare number is hours); "
            "revision: a number of revisions. 0: never compact automatically.",
        ],
        ["tick-ms", None, 100, "Raft tick in milliseconds.", _positive_int],
        ["election-ticks", None, 10, "Ticks without a leader before an election.", _positive_int],
        ["heartbeat-ticks", None, 1, "Ticks between leader heartbeats.", _positive_int],
        [
            "max-inflight",
            None,
            64,
            "Unacknowledged appends to one follower (pipelining depth); lower means fewer, larger batches.",
            _positive_int,
        ],
        ["snapshot-entries", None, 10_000, "Compact the log every this many applied entries.", _positive_int],
        [
            "snapshot-keep-entries",
            None,
            5_000,
            "Log entries kept behind the applied index when compacting, for slow followers.",
            _positive_int,
        ],
    ]

    optParameters += [
        [
            "max-pending-proposals",
            None,
            1024,
            "Writes this node may have waiting for the cluster (forwarded ones included); "
            "more are refused at once with 429 / RESOURCE_EXHAUSTED (too many requests).",
            _positive_int,
        ],
        [
            "max-pending-reads",
            None,
            4096,
            "Linearizable reads this node may have waiting for a ReadIndex round or the apply; "
            "more are refused at once with 429 / RESOURCE_EXHAUSTED.",
            _positive_int,
        ],
        [
            "max-apply-gap",
            None,
            5000,
            "Writes are refused with 429 / RESOURCE_EXHAUSTED while this node's applied index trails "
            "the commit index by more than this many entries (etcd's 5000).",
            _positive_int,
        ],
        [
            "max-queue-delay",
            None,
            0.25,
            "The most the queueing-delay target may be, in seconds: new writes (reads) are refused at "
            "once with 429 / RESOURCE_EXHAUSTED while the oldest one waiting on this node has waited past "
            "the target (while --queue-delay-min-pending or more wait; writes: and a leader is known). "
            "The target is 4x the fastest write answered in the last 10 to 20 s, clamped to --min-queue-delay .. this "
            "(0: no such bound).",
            _seconds,
        ],
        [
            "min-queue-delay",
            None,
            0.02,
            "The least the queueing-delay target may be, in seconds (see --max-queue-delay).",
            _seconds,
        ],
        [
            "queue-delay-factor",
            None,
            4.0,
            "The queueing-delay target is this many times the fastest write answered in the last 10 to "
            "20 s (see --max-queue-delay).",
            _positive_float,
        ],
        [
            "queue-delay-min-pending",
            None,
            80,
            "The queueing-delay bound refuses new writes (reads) only while at least this many wait on "
            "this node (see --max-queue-delay).",
            _positive_int,
        ],
        [
            "max-peer-queue-bytes",
            None,
            32 << 20,
            "Bytes of Raft messages queued for one peer; beyond it the oldest are dropped and the "
            "peer is probed again (or sent a snapshot).",
            _positive_int,
        ],
        [
            "max-watch-pending-events",
            None,
            1024,
            "Events one watcher may have waiting in its stream; a slower watcher is moved to the "
            "unsynced group and catches up from the store.",
            _positive_int,
        ],
    ]

    optParameters += [
        ["cert-file", None, "", "TLS certificate (PEM, chain) of the client ports: REST and gRPC on the RPC port."],
        ["key-file", None, "", "Private key (PEM) of --cert-file."],
        ["trusted-ca-file", None, "", "CA certificates (PEM) that client certificates must be signed by."],
        ["peer-cert-file", None, "", "TLS certificate (PEM) this node presents to its peers, naming its host."],
        ["peer-key-file", None, "", "Private key (PEM) of --peer-cert-file."],
        ["peer-trusted-ca-file", None, "", "CA certificates (PEM) that peers' certificates must be signed by."],
    ]

    optFlags: list[list[Any]] = [
        ["auto-promote", None, "After joining, become a voter on our own once caught up."],
        ["client-cert-auth", None, "Clients must present a certificate signed by --trusted-ca-file."],
        ["peer-client-cert-auth", None, "Peers must present certificates (always on with --peer-cert-file)."],
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
        try:
            asyncio_reactor.require()
        except asyncio_reactor.WrongReactor as e:
            raise usage.UsageError(str(e)) from None

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
        log_format = self["log-format"].strip().lower()
        if log_format not in FORMATS:
            raise ConfigError(f"log format {self['log-format']!r}: use one of {', '.join(FORMATS)}")
        cluster: ClusterSpec | None = None
        if self["cluster"].strip():
            cluster = parse_cluster(self["cluster"])
            if all(m.id != node_id for m in cluster.members):
                raise ConfigError(f"node id {node_id!r} is not in the cluster {str(cluster)!r}")
        routes = parse_routes(self["peer-route"]) if self["peer-route"].strip() else {}
        peer_port_routes = parse_peer_port_routes(self["peer-route"]) if self["peer-route"].strip() else {}
        transport = self["peer-transport"].strip().lower()
        if transport not in PEER_TRANSPORTS:
            raise ConfigError(f"peer transport {self['peer-transport']!r}: use one of {', '.join(PEER_TRANSPORTS)}")
        peer_port = self["peer-port"] or self["rpc-port"] + PEER_PORT_OFFSET
        if transport == "twisted":
            clash = [n for n in ("rpc", "rest", "metrics") if self[f"{n}-port"] == peer_port]
            if clash:
                which = "--peer-port" if self["peer-port"] else f"the RPC port + {PEER_PORT_OFFSET}"
                raise ConfigError(
                    f"peer port {peer_port} ({which}) is also the {clash[0]} port: move the {clash[0]} port, "
                    "or set --peer-port to a free one (the other members then need --peer-route "
                    "ID=HOST:RPC_PORT/PEER_PORT to it), or use --peer-transport grpc"
                )
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
        if self["metrics-port"] in (self["rpc-port"], self["rest-port"]):
            which = "rpc" if self["metrics-port"] == self["rpc-port"] else "rest"
            raise ConfigError(f"metrics port and {which} port are both {self['metrics-port']}")
        if self["heartbeat-ticks"] >= self["election-ticks"]:
            raise ConfigError("heartbeat ticks must be fewer than election ticks")
        client_tls, peer_tls = self._tls()
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
            limits=Limits(
                max_key_bytes=self["max-key-size"],
                max_body_bytes=self["max-body-size"],
                max_txn_ops=self["max-txn-ops"],
                idempotency_window=self["idempotency-window"],
                auth_token_ttl=self["auth-token-ttl"],
                quota_backend_bytes=self["quota-backend-bytes"] or DEFAULT_QUOTA_BYTES,
            ),
            auto_compaction=parse_auto_compaction(self["auto-compaction-mode"], self["auto-compaction-retention"]),
            snapshot_entries=self["snapshot-entries"],
            snapshot_keep=self["snapshot-keep-entries"],
            join=join,
            advertise=host_port(advertise, self["rpc-port"]),
            auto_promote=bool(self["auto-promote"]),
            max_connections=self["max-connections"],
            idle_timeout=self["idle-timeout"],
            read_timeout=self["read-timeout"],
            watch_progress_interval=self["watch-progress-notify-interval"],
            log_format=log_format,
            metrics_port=self["metrics-port"],
            client_tls=client_tls,
            peer_tls=peer_tls,
            peer_transport=transport,
            peer_port=self["peer-port"],
            peer_port_routes=peer_port_routes,
            admission=Admission(
                max_pending_proposals=self["max-pending-proposals"],
                max_pending_reads=self["max-pending-reads"],
                max_apply_gap=self["max-apply-gap"],
                max_queue_delay=self["max-queue-delay"],
                min_queue_delay=self["min-queue-delay"],
                queue_delay_factor=self["queue-delay-factor"],
                queue_delay_min_pending=self["queue-delay-min-pending"],
                max_peer_queue_bytes=self["max-peer-queue-bytes"],
            ),
            watch_max_pending_events=self["max-watch-pending-events"],
        )

    def _tls(self) -> tuple[TlsFiles | None, TlsFiles | None]:
        client = parse_tls(self["cert-file"], self["key-file"], self["trusted-ca-file"], bool(self["client-cert-auth"]))
        peer = parse_tls(
            self["peer-cert-file"], self["peer-key-file"], self["peer-trusted-ca-file"],
            bool(self["peer-client-cert-auth"]), peer=True,
        )  # fmt: skip
        if client is not None and peer is not None and not client.trusted_ca_file:
            raise ConfigError(
                "with peer TLS, --cert-file needs --trusted-ca-file: the RPC port presents --cert-file, "
                "and peers check it against the peer and client CAs"
            )
        return client, peer
