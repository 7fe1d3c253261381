# test-case-name: tests.test_transport
"""Conversion between the core's message values and the ``dkv.raft.v0`` protobufs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

from dkv.pb import raft_pb2 as pb
from dkv.raft import messages as m
from dkv.raft.membership import Membership, MembershipError

#: EntryKind by wire value: a dict lookup, cheaper than the enum's call.
_KINDS = {k.value: k for k in m.EntryKind}


def entries_from_pb(entries: Iterable[pb.Entry]) -> tuple[m.Entry, ...]:
    """The core's entries of an AppendEntries' batch (the hot path of every
    follower: no per-entry call). Raises DecodeError on an unknown kind."""
    entry, kinds = m.Entry, _KINDS
    try:
        return tuple([entry(e.index, e.term, kinds[e.kind], e.data) for e in entries])
    except KeyError as e:
        raise DecodeError(f"unknown entry kind {e.args[0]!r}") from None


# message class -> (oneof field name, simple field names)
_SIMPLE: dict[type[m.Message], tuple[str, tuple[str, ...]]] = {
    m.RequestVote: ("request_vote", ("last_index", "last_term", "pre_vote", "transfer")),
    m.VoteResponse: ("vote_response", ("granted", "pre_vote")),
    m.AppendResponse: (
        "append_response",
        ("success", "index", "hint_index", "hint_term", "seq"),
    ),
    m.Heartbeat: ("heartbeat", ("commit", "seq")),
    m.HeartbeatResponse: ("heartbeat_response", ("seq",)),
    m.ProposeRejected: ("propose_rejected", ("ctx",)),
    m.ReadIndexRequest: ("read_index_request", ("ctx",)),
    m.ReadIndexResponse: ("read_index_response", ("ctx", "index", "ok")),
    m.TimeoutNow: ("timeout_now", ()),
}


def _pb_name(field: str) -> str:
    return "".join(part.capitalize() for part in field.split("_"))


#: message class -> (oneof field name, its protobuf class, simple field names): looked up once per message.
_SIMPLE_PB: dict[type[m.Message], tuple[str, Any, tuple[str, ...]]] = {
    cls: (field, getattr(pb, _pb_name(field)), names) for cls, (field, names) in _SIMPLE.items()
}
_BY_FIELD = {field: (cls, names) for cls, (field, names) in _SIMPLE.items()}


def message_to_pb(msg: m.Message) -> pb.Message:
    simple = _SIMPLE_PB.get(type(msg))
    if simple is not None:
        field, body_type, names = simple
        body = body_type(**{n: getattr(msg, n) for n in names})
        # "from" is a Python keyword: the fields go in as a dict.
        return pb.Message(**{"from": msg.frm, "to": msg.to, "term": msg.term, field: body})
    out = pb.Message(to=msg.to, term=msg.term)
    setattr(out, "from", msg.frm)
    if isinstance(msg, m.AppendEntries):
        body = out.append_entries
        body.prev_index = msg.prev_index
        body.prev_term = msg.prev_term
        body.commit = msg.commit
        body.seq = msg.seq
        body.commit_only = msg.commit_only
        add = body.entries.add  # built in place: no message to copy in
        for e in msg.entries:
            add(index=e.index, term=e.term, kind=cast(Any, e.kind), data=e.data)
    elif isinstance(msg, m.Propose):
        out.propose.ctx = msg.ctx
        out.propose.payloads.extend(msg.payloads)
    elif isinstance(msg, m.NotMember):
        out.not_member.config_index = msg.config_index
        out.not_member.membership.MergeFromString(msg.membership.encode())
    else:
        raise TypeError(f"not a Raft message: {type(msg).__name__}")
    return out


class DecodeError(ValueError):
    pass


def message_from_pb(p: pb.Message) -> m.Message:
    kind = p.WhichOneof("body")
    if kind == "append_entries":
        a = p.append_entries
        return m.AppendEntries(
            frm=getattr(p, "from"),
            to=p.to,
            term=p.term,
            prev_index=a.prev_index,
            prev_term=a.prev_term,
            entries=entries_from_pb(a.entries),
            commit=a.commit,
            seq=a.seq,
            commit_only=a.commit_only,
        )
    simple = _BY_FIELD.get(kind) if kind is not None else None
    if simple is not None:
        cls, names = simple
        body = getattr(p, kind)
        fields = {n: getattr(body, n) for n in names}
        return cls(frm=getattr(p, "from"), to=p.to, term=p.term, **fields)
    if kind == "propose":
        return m.Propose(
            frm=getattr(p, "from"), to=p.to, term=p.term, ctx=p.propose.ctx, payloads=tuple(p.propose.payloads)
        )
    if kind == "not_member":
        membership = Membership.decode(p.not_member.membership.SerializeToString())
        return m.NotMember(
            frm=getattr(p, "from"), to=p.to, term=p.term, config_index=p.not_member.config_index, membership=membership
        )
    raise DecodeError(f"unknown message body {kind!r}")


def batch_to_pb(cluster_id: str, frm: str, messages: Iterable[m.Message]) -> pb.Batch:
    fields: dict[str, Any] = {"cluster_id": cluster_id, "from": frm, "messages": [message_to_pb(x) for x in messages]}
    return pb.Batch(**fields)  # "from" is a Python keyword: the fields go in as a dict


def messages_from_batch(batch: pb.Batch, on_error: Callable[[Exception], None]) -> list[m.Message]:
    out = []
    for p in batch.messages:
        try:
            out.append(message_from_pb(p))
        except (DecodeError, MembershipError, ValueError) as e:
            on_error(e)
    return out
