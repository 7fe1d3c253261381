"""Stacks for the API tests that cannot serve writes: a node with no leader
(503 / UNAVAILABLE) and a leader whose entries never commit (504 /
DEADLINE_EXCEEDED). Like ``tests.conftest.start_stack`` but with a three-voter
membership whose peers do not exist.

Never import the reactor or klein at module level here (see conftest)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from dkv.api import grpc_kv
from dkv.config import Limits
from dkv.grpc_server import GrpcServerService
from dkv.node import Node
from dkv.raft import RaftConfig, Role
from dkv.raft.membership import Member, Membership
from dkv.raft.messages import Message, RequestVote, VoteResponse
from dkv.replication import DriverConfig, ReplicationService
from dkv.storage.lmdb_store import LmdbStore
from tests.conftest import NullTransport, Stack, rest_factory, wait_for

THREE_VOTERS = Membership(
    (Member("a", "127.0.0.1:1"), Member("b", "127.0.0.1:2"), Member("c", "127.0.0.1:3"))
)


class VoteGrantingPeers:
    """Stands in for peers b and c: grants every (pre-)vote that a asks for and
    answers nothing else, so a becomes leader but nothing it appends after
    that ever reaches a majority."""

    def __init__(self) -> None:
        self.replication: ReplicationService | None = None

    def send(self, messages: Sequence[Message]) -> None:
        from twisted.internet import reactor

        replies = [
            VoteResponse(frm=m.to, to=m.frm, term=m.term, granted=True, pre_vote=m.pre_vote)
            for m in messages
            if isinstance(m, RequestVote)
        ]
        if replies and self.replication is not None:
            reactor.callLater(0, self.replication.receive, replies)

    def set_peers(self, addresses: object) -> None:
        pass


async def _start(
    tmp_path,
    transport: NullTransport | VoteGrantingPeers,
    raft_config: RaftConfig,
    limits: Limits,
    request_timeout: float,
    rest: str,
) -> tuple[Stack, list[Callable[[], object]]]:
    """Start store, replication (node "a" of THREE_VOTERS), REST (stack rest,
    one of conftest.REST_STACKS) and gRPC."""
    from twisted.internet import reactor

    store = LmdbStore.open(str(tmp_path / "node.db"), reactor)
    state = store.load() or store.bootstrap("test-cluster", THREE_VOTERS)
    replication = ReplicationService(
        node_id="a",
        state=state,
        store=store,
        transport=transport,
        clock=reactor,
        rng=random.Random(1),
        config=DriverConfig(
            raft=raft_config, tick_seconds=0.01, request_timeout=request_timeout, first_election_ticks=1
        ),
    )
    if isinstance(transport, VoteGrantingPeers):
        transport.replication = replication
    replication.startService()
    node = Node(replication, store, limits)
    port = reactor.listenTCP(0, rest_factory(node, rest), interface="127.0.0.1")
    grpc_service = GrpcServerService(
        "127.0.0.1", 0, [lambda s: grpc_kv.register(s, node)], max_message_bytes=limits.max_body_bytes
    )
    grpc_service.startService()
    stack = Stack(
        node, replication, store, f"http://127.0.0.1:{port.getHost().port}", f"127.0.0.1:{grpc_service.port}"
    )
    return stack, [port.stopListening, grpc_service.stopService, replication.stopService, store.close]


async def start_leaderless_stack(
    tmp_path, limits: Limits = Limits(), request_timeout: float = 0.3, rest: str = "front-door"
) -> tuple[Stack, list[Callable[[], object]]]:
    """Node a of three voters that do not exist: it PreVotes forever (never
    changing term) and no leader is ever known."""
    stack, stoppers = await _start(
        tmp_path, NullTransport(), RaftConfig(election_ticks=10, heartbeat_ticks=1), limits, request_timeout, rest
    )
    await wait_for(lambda: stack.replication.raft.role is Role.PRE_CANDIDATE, what="a pre-candidate")
    # The bootstrap entry is committed: wait until it is applied, so that the
    # tests' before/after index comparisons see only their own effects.
    await wait_for(lambda: stack.replication.applied >= 1, what="the bootstrap entry applied")
    return stack, stoppers


async def start_stuck_leader_stack(
    tmp_path, limits: Limits = Limits(), request_timeout: float = 0.3, rest: str = "front-door"
) -> tuple[Stack, list[Callable[[], object]]]:
    """Node a of three voters, elected by fake votes, whose appends nobody
    acknowledges: every write is proposed and its outcome stays unknown.
    CheckQuorum is off so that a stays leader."""
    stack, stoppers = await _start(
        tmp_path,
        VoteGrantingPeers(),
        RaftConfig(election_ticks=10, heartbeat_ticks=1, check_quorum=False),
        limits,
        request_timeout,
        rest,
    )
    await wait_for(lambda: stack.replication.raft.role is Role.LEADER, what="a fake-elected leader")
    return stack, stoppers
