"""Shared fixtures (never import the reactor, or klein which imports it, at module
level: pytest-twisted installs the asyncio reactor after conftest is imported).

Shared fixtures: a real single-node stack (LMDB store, replication, REST
site and gRPC server on free ports) running on the test's asyncio reactor;
and ``procs``, the child processes a test starts, closed whatever happens."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterator

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer, task

from dkv.api import etcd_grpc, grpc_kv
from dkv.config import Limits
from dkv.grpc_server import GrpcServerService
from dkv.node import Node
from dkv.raft import RaftConfig, Role
from dkv.raft.membership import Member, Membership
from dkv.replication import DriverConfig, ReplicationService
from dkv.storage.lmdb_store import LmdbStore
from dkv.testing.process import Process


@pytest.fixture(autouse=True, scope="session")
def monotonic_reactor_clock() -> None:
    """The tests' reactor keeps time as a node's does: its ``seconds()`` is
    the event loop's monotonic clock (``dkv.asyncio_reactor``). Set once,
    before any test schedules a timer, rather than by whichever test first
    parses a node's options (which would switch it under the timers and
    gRPC waits of the tests that ran before)."""
    from twisted.internet import reactor

    from dkv import asyncio_reactor

    asyncio_reactor.use_monotonic_clock(reactor)  # type: ignore[arg-type]


class NullTransport:
    """A single node has no peers."""

    def send(self, messages: object) -> None:
        pass

    def set_peers(self, addresses: object) -> None:
        pass


@attrs.define
class Stack:
    node: Node
    replication: ReplicationService
    store: LmdbStore
    rest_url: str
    rpc_address: str


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll predicate on the reactor until true, failing after timeout seconds."""
    from twisted.internet import reactor

    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await task.deferLater(reactor, 0.01, lambda: None)  # poll


#: The two ways the REST API is served: the front door (the REST port of a
#: node) and the Klein site behind twisted.web's own HTTP channel.
REST_STACKS = ("front-door", "klein")


def rest_factory(node: object, rest: str = "front-door", routes: tuple | None = None) -> object:
    """The factory to listen with for REST stack rest (one of REST_STACKS),
    serving routes (the product's table unless given)."""
    from twisted.internet import reactor  # installed by pytest-twisted, never at import

    from dkv.api.front_door import FrontDoorSettings, front_door  # klein imports the reactor
    from dkv.api.rest import RestApi
    from dkv.api.routes import ROUTES

    if rest == "klein":
        return RestApi(node, routes or ROUTES).site()  # type: ignore[arg-type]
    assert rest == "front-door", rest
    return front_door(node, reactor, FrontDoorSettings(), routes or ROUTES)  # type: ignore[arg-type]


async def start_stack(
    tmp_path, limits: Limits = Limits(), request_timeout: float = 5.0, rest: str = "front-door"
) -> tuple[Stack, list]:
    from twisted.internet import reactor  # installed by pytest-twisted, never at import

    store = LmdbStore.open(str(tmp_path / "node.db"), reactor)
    membership = Membership((Member("a", "127.0.0.1:1"),))
    state = store.load() or store.bootstrap("test-cluster", membership)
    replication = ReplicationService(
        node_id="a",
        state=state,
        store=store,
        transport=NullTransport(),
        clock=reactor,
        rng=random.Random(1),
        config=DriverConfig(
            raft=RaftConfig(election_ticks=10, heartbeat_ticks=1),
            tick_seconds=0.01,
            request_timeout=request_timeout,
            first_election_ticks=1,
        ),
    )
    replication.startService()
    node = Node(replication, store, limits)
    port = reactor.listenTCP(0, rest_factory(node, rest), interface="127.0.0.1")
    grpc_service = GrpcServerService(
        "127.0.0.1",
        0,
        [lambda s: grpc_kv.register(s, node), lambda s: etcd_grpc.register(s, node)],
        max_message_bytes=limits.max_body_bytes,
    )
    grpc_service.startService()
    await wait_for(lambda: replication.raft.role is Role.LEADER and replication.applied >= 2, what="leadership")
    stack = Stack(
        node, replication, store, f"http://127.0.0.1:{port.getHost().port}", f"127.0.0.1:{grpc_service.port}"
    )
    return stack, [port.stopListening, grpc_service.stopService, replication.stopService, store.close]


@pytest_twisted.async_yield_fixture
async def stack(tmp_path) -> AsyncIterator[Stack]:
    s, stoppers = await start_stack(tmp_path)
    try:
        yield s
    finally:
        for stop in stoppers:
            await defer.maybeDeferred(stop)


@pytest.fixture
def procs() -> Iterator[list[Process]]:
    """Processes (``Process``, ``NodeProcess``) a test appends here: each is
    closed -- killed if it still runs -- at the end, whatever happened."""
    made: list[Process] = []
    yield made
    for p in made:
        p.close()
