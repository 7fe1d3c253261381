# test-case-name: tests.test_cluster_view
"""``GET /v0/cluster``: the cluster as this node sees it (the status page's data).

The node answers from what it knows. Its own line comes from its Raft status
and store; every other member is asked for etcd's ``Maintenance.Status`` on
its RPC port (``ClusterClient.member_status``), all at once, each within
``MEMBER_TIMEOUT`` seconds. A member that does not answer in time is shown
``reachable: false`` with the reason; it never fails the whole answer.

The answer (every index and size an integer; ``null`` where unknown)::

    {"id", "cluster_id", "role", "term", "leader_id",        this node's view
     "commit_index", "applied_index", "last_index",
     "revision", "db_size", "db_size_in_use",
     "leader_changes",   leaders seen since this node started
     "reads",            reads this node answered since it started (dkv.request_counts)
     "lag_basis",        "match_index" or "applied_index" (see below)
     "members": [{"id", "address", "voter", "self", "reachable", "error",
                  "role", "term", "leader_id", "commit_index", "applied_index",
                  "revision", "db_size", "match_index", "lag"}]}

A member's ``role`` is ``leader``, ``follower`` or ``learner`` as it says
itself (for this node also ``candidate`` or ``pre-candidate``), and its
``leader_id`` the leader it knows (``""``: none). ``lag`` is how far a member
is behind: on the leader, whose Raft state has every member's match index,
the leader's last index minus the member's match index (``lag_basis``
``match_index``); elsewhere the leader's commit index (as the leader
answered it, or the highest one any member answered) minus the member's
applied index (``lag_basis`` ``applied_index``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.python.failure import Failure

from dkv.ids import member_id
from dkv.node import Node
from dkv.raft import Role
from dkv.raft.membership import Member

#: Seconds a member has to answer its status: the page polls every second.
MEMBER_TIMEOUT = 1.0


def cluster_view(node: Node, timeout: float = MEMBER_TIMEOUT) -> Deferred[dict[str, Any]]:
    """The answer of ``GET /v0/cluster`` (never fails: an unreachable member
    is a line of the answer)."""
    st = node.replication.status()
    size, in_use = node.store_size()
    revision = node.revision()
    names = {member_id(m.id): m.id for m in st.membership.members}
    leading = st.role is Role.LEADER
    asks: list[Deferred[dict[str, Any]]] = []
    for m in st.membership.members:
        if m.id == st.id:
            role = st.role.value if m.voter else "learner"
            own = _said(role, st.term, st.leader or "", st.commit, node.replication.applied, revision, size)
            asks.append(succeed(own))
        else:
            asks.append(_ask(node, m, timeout, names))

    def assemble(results: list[tuple[bool, Any]]) -> dict[str, Any]:
        members = []
        for m, (ok, said) in zip(st.membership.members, results, strict=True):
            line: dict[str, Any] = {"id": m.id, "address": m.address, "voter": m.voter, "self": m.id == st.id}
            if ok:
                line.update(reachable=True, error=None, **said)
            else:
                line.update(reachable=False, error=_reason(said), **_UNKNOWN)
            line["match_index"] = st.match.get(m.id) if leading else None
            members.append(line)
        _fill_lag(members, st.last_index if leading else None, st.leader)
        return {
            "id": st.id,
            "cluster_id": node.replication.cluster_id,
            "role": st.role.value,
            "term": st.term,
            "leader_id": st.leader or "",
            "commit_index": st.commit,
            "applied_index": node.replication.applied,
            "last_index": st.last_index,
            "revision": revision,
            "db_size": size,
            "db_size_in_use": in_use,
            "leader_changes": node.replication.leader_changes,
            "reads": node.counts.reads,
            "lag_basis": "match_index" if leading else "applied_index",
            "members": members,
        }

    return DeferredList(asks, consumeErrors=True).addCallback(assemble)


#: What a member says of itself, in this order (all None: it said nothing).
_SAID = ("role", "term", "leader_id", "commit_index", "applied_index", "revision", "db_size")
_UNKNOWN: dict[str, Any] = dict.fromkeys(_SAID)


def _said(
    role: str, term: int, leader_id: str, commit: int, applied: int, revision: int, db_size: int
) -> dict[str, Any]:
    return dict(zip(_SAID, (role, term, leader_id, commit, applied, revision, db_size), strict=True))


def _ask(node: Node, member: Member, timeout: float, names: dict[int, str]) -> Deferred[dict[str, Any]]:
    """What member says of itself (its Maintenance.Status), or a failure."""
    if node.cluster is None:
        return fail(RuntimeError("this node has no client for its peers"))
    address = node.address_of(member.id) or member.address
    me = member_id(member.id)

    def said(r: Any) -> dict[str, Any]:
        role = "leader" if r.leader == me else "learner" if r.isLearner else "follower"
        leader = names.get(r.leader, str(r.leader)) if r.leader else ""
        return _said(role, r.raftTerm, leader, r.raftIndex, r.raftAppliedIndex, r.header.revision, r.dbSize)

    try:
        return node.cluster.member_status(address, timeout).addCallback(said)
    except Exception:  # noqa: BLE001 - a member we cannot even ask is unreachable
        return fail(Failure())


def _reason(failure: Failure) -> str:
    """A short reason a member is unreachable (a gRPC code and its details)."""
    error = failure.value
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    if callable(code) and callable(details):
        text = f"{code().name}: {details() or ''}".rstrip(": ")
    else:
        text = str(error) or type(error).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def _fill_lag(members: list[dict[str, Any]], last_index: int | None, leader: str | None) -> None:
    """Set each member's ``lag`` (see the module's docstring)."""
    if last_index is not None:  # this node leads: it knows every match index
        for line in members:
            match = line["match_index"]
            line["lag"] = max(0, last_index - match) if match is not None else None
        return
    answered = [line for line in members if line["commit_index"] is not None]
    by_leader = [line["commit_index"] for line in answered if line["id"] == leader]
    commits = by_leader or [line["commit_index"] for line in answered]
    reference = max(commits) if commits else None
    for line in members:
        applied = line["applied_index"]
        line["lag"] = max(0, reference - applied) if reference is not None and applied is not None else None
