# test-case-name: tests.test_metrics
"""A node's metrics and their names, in Prometheus' text format.

Names mirror etcd's with ``etcd_`` -> ``dkv_``, so an etcd dashboard needs
only a rename; request metrics follow go-grpc-prometheus (which etcd uses)
for gRPC. Each node has its own ``CollectorRegistry`` (several nodes may
run in one test process); ``NodeMetrics.render()`` is its exposition,
written by ``prometheus_client``.

Three kinds of instruments, by how often they move:

- **Read at scrape time** (``NodeState``): gauges of the node's state
  (leader, indexes, db size, keys, watchers, leases) and the counters that
  their owners keep as plain integers (leader changes, failed proposals,
  snapshots, peer bytes). The node's ``read_state`` callable is asked for a
  ``NodeState`` when a scrape comes, on the reactor thread, and nothing is
  pushed on every change.
- **Per request** (``RequestMeter``): a handled-request counter and a
  latency histogram for the REST port and the gRPC server. These sit on
  the write path, so they are plain integers in dicts (about a µs a
  request), folded into metric families at scrape time. They are touched
  on the reactor thread only.
- **Disk commits** (``DurationHistogram``): one observation per store
  transaction, on the reactor's thread or the LMDB writer's, so on every
  write's path at low concurrency: plain numbers under one lock, folded
  into a histogram family at scrape time.
- **Peer round trips**: ``prometheus_client`` histograms (labelled by peer;
  one observation per heartbeat answer).

A leaf: it imports nothing of dkv, so any layer may be given a
``NodeMetrics`` or a part of it.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import attrs
from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

# No ``*_created`` series (etcd has none; they double the exposition). A
# process-wide switch of prometheus_client; dkv sets it once, here.
disable_created_metrics()

#: The Content-Type of ``render()``: Prometheus' text format 0.0.4.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: Seconds: disk commits (etcd's wal fsync and backend commit buckets, 1 ms to ~8 s).
DISK_BUCKETS = tuple(0.001 * 2**i for i in range(14))
#: Seconds: peer round trips (etcd's: 0.1 ms to ~0.8 s).
RTT_BUCKETS = tuple(0.0001 * 2**i for i in range(14))
#: Seconds: request handling (0.5 ms to 10 s).
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@attrs.frozen
class NodeState:
    """What a scrape reads of the node (see the README's metrics table for
    each value's meaning)."""

    has_leader: bool = False
    is_leader: bool = False
    leader_changes: int = 0
    #: The commit and applied indexes: etcd exposes them as the gauges
    #: proposals_committed_total and proposals_applied_total.
    committed_index: int = 0
    applied_index: int = 0
    proposals_pending: int = 0
    proposals_failed: int = 0
    db_size: int = 0
    db_size_in_use: int = 0
    keys: int = 0
    watchers: int = 0
    leases: int = 0
    snapshots_saved: int = 0
    snapshots_installed: int = 0
    #: Bytes of Raft messages sent to / received from each peer.
    peer_sent: Mapping[str, int] = attrs.field(factory=dict)
    peer_received: Mapping[str, int] = attrs.field(factory=dict)
    #: Requests refused by auth (``dkv.auth``), by reason: ``no_user``,
    #: ``bad_token``, ``denied``, ``authenticate`` (a wrong password).
    auth_failures: Mapping[str, int] = attrs.field(factory=dict)
    #: Requests refused by admission control (``dkv.replication.admission``),
    #: by reason: ``pending_proposals``, ``pending_reads``, ``apply_gap``.
    requests_refused: Mapping[str, int] = attrs.field(factory=dict)


class RequestMeter:
    """A handled-request counter (labels + a code label) and a latency
    histogram (labels without the code), kept as plain integers.

    ``observe(key, code, seconds)`` takes the label values as a tuple (the
    caller keeps one per route or method, so nothing is built per request).
    Use it on one thread (the reactor's)."""

    def __init__(
        self,
        counter: tuple[str, str],
        histogram: tuple[str, str],
        labels: Sequence[str],
        code_label: str,
        buckets: Sequence[float] = REQUEST_BUCKETS,
    ) -> None:
        self._counter_name, self._counter_help = counter
        self._hist_name, self._hist_help = histogram
        self._labels = list(labels)
        self._code_label = code_label
        self._bounds = list(buckets)
        #: labels + (code,) -> requests handled
        self._counts: dict[tuple[str, ...], int] = {}
        #: labels -> [count per bucket (the last: above every bound)..., sum of seconds]
        self._hists: dict[tuple[str, ...], list[float]] = {}

    def observe(self, key: tuple[str, ...], code: str, seconds: float) -> None:
        counted = key + (code,)
        counts = self._counts
        counts[counted] = counts.get(counted, 0) + 1
        hist = self._hists.get(key)
        if hist is None:
            hist = self._hists[key] = [0] * (len(self._bounds) + 1) + [0.0]
        hist[bisect.bisect_left(self._bounds, seconds)] += 1
        hist[-1] += seconds

    def count(self, key: tuple[str, ...], code: str) -> int:
        """Requests handled with these labels and code so far."""
        return self._counts.get(key + (code,), 0)

    def collect(self) -> Iterator[Metric]:
        counter = CounterMetricFamily(
            self._counter_name, self._counter_help, labels=[*self._labels, self._code_label]
        )
        for labels, n in self._counts.items():
            counter.add_metric(list(labels), n)
        yield counter
        hist = HistogramMetricFamily(self._hist_name, self._hist_help, labels=self._labels)
        for labels, cells in self._hists.items():
            hist.add_metric(list(labels), _cumulative(self._bounds, cells), cells[-1])
        yield hist


class DurationHistogram:
    """An unlabelled histogram of seconds, observed on any thread: bucket
    counts and the sum as plain numbers under one lock (about a µs an
    observation; ``prometheus_client``'s Histogram takes a lock for the sum
    and another for the bucket, several µs). A collector: its family is
    built at scrape time, as ``prometheus_client`` would expose it."""

    def __init__(self, name: str, doc: str, buckets: Sequence[float]) -> None:
        self._name = name
        self._doc = doc
        self._bounds = list(buckets)
        self._lock = threading.Lock()
        #: [count per bucket (the last: above every bound)..., sum of seconds]
        self._cells: list[float] = [0] * (len(self._bounds) + 1) + [0.0]

    def observe(self, seconds: float) -> None:
        at = bisect.bisect_left(self._bounds, seconds)  # a bucket counts what is <= its bound
        with self._lock:
            cells = self._cells
            cells[at] += 1
            cells[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cells = list(self._cells)
        buckets = _cumulative(self._bounds, cells)
        yield HistogramMetricFamily(self._name, self._doc, buckets=buckets, sum_value=cells[-1])


def _cumulative(bounds: Sequence[float], cells: Sequence[float]) -> list[tuple[str, float]]:
    """(le, count) per bucket, cumulative as Prometheus' buckets are, from
    cells: a count per bound, one above every bound, then the sum (not
    read)."""
    running = 0.0
    buckets: list[tuple[str, float]] = []
    for bound, cell in zip([*(_bound(b) for b in bounds), "+Inf"], cells[:-1], strict=True):
        running += cell
        buckets.append((bound, running))
    return buckets


def _bound(value: float) -> str:
    return repr(float(value))


#: The reasons ``dkv_auth_failures_total`` counts (each is always shown).
_AUTH_REASONS = ("no_user", "bad_token", "denied", "authenticate")


class _StateCollector:
    """The scrape-time families of ``NodeState``."""

    def __init__(self, read: Callable[[], NodeState | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        state = self._read()
        if state is None:  # the node is not serving yet (or any more)
            return
        yield _gauge("dkv_server_has_leader", "Whether or not a leader exists: 1 is existence, 0 is not.",
                     int(state.has_leader))
        yield _gauge("dkv_server_is_leader", "Whether or not this member is a leader: 1 if is, 0 otherwise.",
                     int(state.is_leader))
        yield _counter("dkv_server_leader_changes_seen", "The number of leader changes seen.", state.leader_changes)
        yield _gauge("dkv_server_proposals_committed_total",
                     "The total number of consensus proposals committed (the commit index, as etcd's).",
                     state.committed_index)
        yield _gauge("dkv_server_proposals_applied_total",
                     "The total number of consensus proposals applied (the applied index, as etcd's).",
                     state.applied_index)
        yield _gauge("dkv_server_proposals_pending", "The current number of pending proposals to commit.",
                     state.proposals_pending)
        yield _counter("dkv_server_proposals_failed", "The total number of failed proposals seen.",
                       state.proposals_failed)
        yield _gauge("dkv_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated "
                     "in bytes.", state.db_size)
        yield _gauge("dkv_mvcc_db_total_size_in_use_in_bytes",
                     "Total size of the underlying database logically in use in bytes.", state.db_size_in_use)
        yield _gauge("dkv_debugging_mvcc_keys_total", "Total number of keys.", state.keys)
        yield _gauge("dkv_debugging_mvcc_watcher_total", "Total number of watchers.", state.watchers)
        yield _gauge("dkv_debugging_lease_total", "Total number of leases in the applied state.", state.leases)
        yield _counter("dkv_snapshot_save", "Snapshots this member took (log compactions).", state.snapshots_saved)
        yield _counter("dkv_snapshot_install", "Snapshots this member received from a leader and installed.",
                       state.snapshots_installed)
        yield _by_peer("dkv_network_peer_sent_bytes", "The total number of bytes sent to peers.", "To",
                       state.peer_sent)
        yield _by_peer("dkv_network_peer_received_bytes", "The total number of bytes received from peers.", "From",
                       state.peer_received)
        failures = CounterMetricFamily("dkv_auth_failures", "Requests refused by authentication or authorization "
                                       "(401 / 403 / etcd's auth errors), by reason.", labels=["reason"])
        for reason in _AUTH_REASONS:
            failures.add_metric([reason], state.auth_failures.get(reason, 0))
        yield failures
        refused = CounterMetricFamily("dkv_server_requests_refused", "Requests refused by admission control "
                                      "(429 / RESOURCE_EXHAUSTED: too many requests), by the bound they passed.",
                                      labels=["reason"])
        for reason, count in sorted(state.requests_refused.items()):
            refused.add_metric([reason], count)
        yield refused


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _by_peer(name: str, doc: str, label: str, values: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for peer, n in sorted(values.items()):
        family.add_metric([peer], n)
    return family


class _Meters:
    """The request meters as one collector."""

    def __init__(self, meters: Iterable[RequestMeter]) -> None:
        self._meters = list(meters)

    def collect(self) -> Iterator[Metric]:
        for meter in self._meters:
            yield from meter.collect()


class NodeMetrics:
    """One node's registry and instruments. ``read_state`` is set by the
    wiring (``dkv.node_tree``); until it is, the state families are absent."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        registry = self.registry
        self.read_state: Callable[[], NodeState | None] = lambda: None
        self.wal_fsync = DurationHistogram(
            "dkv_disk_wal_fsync_duration_seconds",
            "The latency distributions of the commits of log appends (LMDB transaction with fsync).",
            DISK_BUCKETS,
        )
        self.backend_commit = DurationHistogram(
            "dkv_disk_backend_commit_duration_seconds",
            "The latency distributions of the commits of applied entries to the state (LMDB transaction).",
            DISK_BUCKETS,
        )
        registry.register(self.wal_fsync)
        registry.register(self.backend_commit)
        self.peer_rtt = Histogram(
            "dkv_network_peer_round_trip_time_seconds",
            "Round-Trip-Time histogram between peers (a heartbeat and its answer).",
            ["To"],
            buckets=RTT_BUCKETS,
            registry=registry,
        )
        self.http = RequestMeter(
            ("dkv_http_requests", "Requests answered on the REST port, by API, route and HTTP status."),
            ("dkv_http_request_duration_seconds",
             "Seconds from a request's first byte to its answer's last (a stream's whole life)."),
            ["api", "route"],
            "code",
        )
        self.grpc = RequestMeter(
            ("dkv_grpc_server_handled", "RPCs completed on the server, regardless of success or failure."),
            ("dkv_grpc_server_handling_seconds",
             "Histogram of response latency (seconds) of gRPC that had been application-level handled by the "
             "server."),
            ["grpc_type", "grpc_service", "grpc_method"],
            "grpc_code",
        )
        registry.register(_StateCollector(lambda: self.read_state()))
        registry.register(_Meters([self.http, self.grpc]))
        registry.register(_Started(self))
        #: RPCs started, by (grpc_type, grpc_service, grpc_method).
        self.grpc_started_counts: dict[tuple[str, str, str], int] = {}

    def observe_commit(self, seconds: float, wrote_log: bool, applied: bool) -> None:
        """One store transaction committed in seconds: it appended to the
        log (or wrote the hard state), applied entries, or both (dkv commits
        both in one LMDB transaction: one fsync)."""
        if wrote_log:
            self.wal_fsync.observe(seconds)
        if applied:
            self.backend_commit.observe(seconds)

    def grpc_started_inc(self, key: tuple[str, str, str]) -> None:
        counts = self.grpc_started_counts
        counts[key] = counts.get(key, 0) + 1

    def render(self) -> bytes:
        """The exposition of every family, in Prometheus' text format
        (``CONTENT_TYPE``). Call it on the reactor thread."""
        return generate_latest(self.registry)


class _Started:
    def __init__(self, metrics: NodeMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        family = CounterMetricFamily("dkv_grpc_server_started", "RPCs started on the server.", labels=labels)
        for key, n in self._metrics.grpc_started_counts.items():
            family.add_metric(list(key), n)
        yield family
