# test-case-name: tests.test_membership,tests.test_replication
"""Membership bookkeeping of the driver: peer links, and noticing our removal.

``PeerLinks`` keeps the transport's peers in line with the configurations:
the members of the latest configuration and of the committed one (until a
change commits, a member it removes may still be, or talk to, the leader that
replicates it), plus, for a while, members that just left: the messages that
tell them they were removed must still reach them.

``RemovalWatch`` decides when this node stops because it was removed
(thesis §4.2.2): once the applied configuration no longer lists it, after one
that did, or when the leader told it so (NotMember: the core then is certain that the latest
configuration it knows of leaves it out) and no leader contacted it for a
grace period since (a notice can be overtaken by a change that added it back).
Only configurations the cluster sent count as listing it: a node that joined
starts from the configuration in the AddMember answer (at index 0, in no
log), and a leader may then send it a snapshot from before its addition (its
store lags its applied index by the held writes, and it replicates to a new
member once the change is in its log, before it applies it). Such a snapshot
leaves it out without removing it.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from dkv.logs import logger
from dkv.raft.membership import Membership
from dkv.transport import Transport

#: How long the link to a member that left the configuration stays open.
DEPARTED_LINK_SECONDS = 10.0

log = logger("dkv.replication")


class PeerLinks:
    def __init__(self, transport: Transport, clock: IReactorTime) -> None:
        self._transport = transport
        self._clock = clock
        self._known: tuple[Membership, Membership] | None = None
        #: Members that left the configuration: id -> (address, keep link until).
        self._departed: dict[str, tuple[str, float]] = {}

    def sync(self, latest: Membership, committed: Membership) -> None:
        """Call after anything may have changed the configurations (cheap
        when nothing did)."""
        now = self._clock.seconds()
        expired = [i for i, (_, until) in self._departed.items() if until <= now]
        if (latest, committed) == self._known and not expired:
            return
        addresses = {m.id: m.address for m in committed.members}
        addresses.update((m.id, m.address) for m in latest.members)
        if self._known is not None:
            for m in self._known[0].members + self._known[1].members:
                if m.id not in addresses and m.id not in self._departed:
                    self._departed[m.id] = (m.address, now + DEPARTED_LINK_SECONDS)
        for i in expired:
            del self._departed[i]
        for i, (address, _) in self._departed.items():
            addresses.setdefault(i, address)
        self._known = (latest, committed)
        self._transport.set_peers(addresses)


class RemovalWatch:
    def __init__(
        self, node_id: str, clock: IReactorTime, grace_seconds: float, on_removed: Callable[[], None]
    ) -> None:
        self._node_id = node_id
        self._clock = clock
        self._grace = grace_seconds
        self._on_removed = on_removed
        self._was_member = False
        self._told_at: float | None = None
        self.removed = False

    def check(self, applied: Membership, applied_index: int, told_removed: bool) -> None:
        """applied: the configuration in force at applied_index (the applied
        index); told_removed: the core's ``removed`` (a leader said so and
        none contacted us since). Calls on_removed once, when we are out."""
        if self.removed:
            return
        if applied_index > 0 and self._node_id in applied.ids:
            self._was_member = True
        if not told_removed:
            self._told_at = None
        elif self._told_at is None:
            self._told_at = self._clock.seconds()
            log.info("the leader says this node is no member; stopping unless a leader contacts it")
        told = self._told_at is not None and self._clock.seconds() - self._told_at >= self._grace
        if told or (self._was_member and applied.members and self._node_id not in applied.ids):
            self.removed = True
            log.warn("this node was removed from the cluster; stopping")
            self._on_removed()
