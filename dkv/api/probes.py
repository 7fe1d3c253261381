# test-case-name: tests.test_probes,tests.test_metrics_process
"""The operator's routes: ``GET /metrics`` and the probes ``/health``,
``/livez`` and ``/readyz`` (GET and HEAD; no body is read, nothing is
parsed).

- ``/health`` (etcd's meaning): ``200 {"health":"true"}`` only if this node
  knows a leader and a linearizable read (a ReadIndex round: the leader
  confirms its leadership with a quorum, and this node applies up to the
  read index) completes within the request timeout (``--request-timeout``);
  otherwise ``503 {"health":"false","reason":"..."}``. While a NOSPACE
  alarm is active (``dkv.alarms``) it answers ``503`` with the reason
  ``ALARM NOSPACE``, as etcd's (writes that grow the db are refused).
- ``/livez``: ``200 {"live":"true"}`` while the process serves (no Raft
  round); ``503`` with the reason once the node stopped serving (its store
  failed, or it is shutting down).
- ``/readyz``: ``200 {"ready":"true"}`` when this node knows a leader and
  has applied within ``READY_MAX_LAG`` entries of the highest commit index
  it has heard of (its own as leader, else the leader's, as carried by the
  leader's appends); learners too. Otherwise ``503 {"ready":"false",
  "reason":"..."}``: no leader, a snapshot being installed, or how far
  behind it is.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, TimeoutError
from twisted.python.failure import Failure

from dkv.api.http_common import Call, RawAnswer, encode_json
from dkv.errors import DkvError
from dkv.metrics import CONTENT_TYPE
from dkv.node import Node

#: A node is ready while its applied index is at most this many entries
#: behind the commit index it knows (the learners' promotion rule uses the
#: same bound: ``DriverConfig.promote_lag``).
READY_MAX_LAG = 1000

_HEALTHY = RawAnswer(200, b'{"health":"true"}')
_LIVE = RawAnswer(200, b'{"live":"true"}')
_READY = RawAnswer(200, b'{"ready":"true"}')


def _refusal(field: str, reason: str) -> RawAnswer:
    return RawAnswer(503, encode_json({field: "false", "reason": reason}))


def metrics(node: Node, call: Call) -> RawAnswer:
    """The node's metrics in Prometheus' text format."""
    return RawAnswer(200, node.metrics.render(), CONTENT_TYPE.encode())


def livez(node: Node, call: Call) -> RawAnswer:
    replication = node.replication
    if not replication.running or replication.raft is None:
        return _refusal("live", "the node is not serving")
    if replication.failed:
        return _refusal("live", "the node stopped after a fatal error (see its log)")
    return _LIVE


def readyz(node: Node, call: Call) -> RawAnswer:
    replication = node.replication
    raft = replication.raft
    if not replication.running or raft is None:
        return _refusal("ready", "the node is not serving")
    if raft.leader is None:
        return _refusal("ready", "no leader")
    if replication.installing_snapshot:
        return _refusal("ready", "installing a snapshot from the leader")
    commit = replication.known_commit
    lag = commit - replication.applied
    if lag > READY_MAX_LAG:
        return _refusal(
            "ready",
            f"applied index {replication.applied} is {lag} entries behind the commit index {commit} "
            f"(ready within {READY_MAX_LAG})",
        )
    return _READY


def health(node: Node, call: Call) -> RawAnswer | Deferred[RawAnswer]:
    """etcd's ``GET /health``: a leader is known and a linearizable read
    completes within the request timeout."""
    replication = node.replication
    raft = replication.raft
    if not replication.running or raft is None:
        return _refusal("health", "the node is not serving")
    if raft.leader is None:
        return _refusal("health", "no leader")
    if node.quota.nospace():
        return _refusal("health", "ALARM NOSPACE")
    timeout = replication.config.request_timeout
    d = replication.read_barrier(internal=True)  # a probe is never refused by admission control
    d.addTimeout(timeout, replication.clock)

    def failed(failure: Failure) -> RawAnswer:
        if failure.check(TimeoutError):
            return _refusal("health", f"a linearizable read did not complete within {timeout:g} s")
        if failure.check(DkvError):
            return _refusal("health", f"a linearizable read failed: {failure.getErrorMessage()}")
        return failure  # type: ignore[return-value]  # a bug: answered 500 and logged

    return d.addCallbacks(lambda _: _HEALTHY, failed)
