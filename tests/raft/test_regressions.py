"""Focused tests for core bugs that the simulation (``test_simulation``) found.

Each test names the seed that found the bug and states the scenario in its
smallest form, so it keeps failing if the bug comes back even when the
simulation's schedule drifts.
"""

from __future__ import annotations

from dkv.raft import Entry, EntryKind, HardState, Member, Membership, RaftConfig, Role
from dkv.raft.messages import AppendEntries, AppendResponse, Heartbeat
from tests.raft.sim import Disk, Net, bootstrap_entry, bootstrap_membership


def test_lost_append_is_retransmitted_without_new_proposals() -> None:
    """Found by test_three_nodes seeds 187 and 270 (liveness after healing).

    Raft §5.3: "If followers crash or run slowly, or if network packets are
    lost, the leader retries AppendEntries RPCs indefinitely (even after it
    has responded to the client) until all followers eventually store all log
    entries." A follower in REPLICATE state whose last append was lost (here:
    the entry and the commit update after it) must get the entry again from
    heartbeat answers alone, not only when a later proposal happens to expose
    the gap."""
    net = Net(("n1", "n2", "n3"), RaftConfig(election_ticks=10, heartbeat_ticks=1))
    leader = net.elect("n1")
    last = leader.log.last_index()
    net.cut("n1", "n3")
    net.propose("n1", b"x")
    net.deliver_all()
    assert leader.log.committed == last + 1  # n1 and n2 are a quorum
    assert net.raft("n3").log.last_index() == last  # both appends to n3 were lost
    net.recover()
    for _ in range(3):
        net.tick_all()
    assert net.applied_data("n3") == [b"x"]
    assert net.raft("n3").log.committed == last + 1


def test_out_of_order_rejection_does_not_stall_replication() -> None:
    """Found by test_three_nodes seed 270: a lagging follower catches up with
    pipelined appends that carry an already-known commit index. Two of them
    arrive in reverse order: the later one is refused (gap), the earlier one
    succeeds, and the leader hears the success first, so the refusal looks
    stale (its index is <= match) and nothing is ever resent."""
    net = Net(("n1", "n2", "n3"), RaftConfig(election_ticks=10, max_append_bytes=1))
    leader = net.elect("n1")
    net.cut("n1", "n3")
    net.propose("n1", b"a", b"b", b"c")
    net.deliver_all()
    assert leader.log.committed == leader.log.last_index() == 5
    net.recover()
    leader.report_unreachable("n3")  # the transport noticed: probe n3 again
    net.tick("n1")

    def appends_to_n3() -> list[AppendEntries]:
        return [m for m in net.queue if isinstance(m, AppendEntries) and m.to == "n3"]

    # The probe finds the gap; n3 gets "a", and pipelining resumes with "b", "c".
    net.deliver_until(lambda: len(appends_to_n3()) == 2)
    to_n3 = net.take(lambda m: isinstance(m, AppendEntries) and m.to == "n3")
    assert [(m.prev_index, len(m.entries), m.commit) for m in to_n3] == [(3, 1, 5), (4, 1, 5)]
    net.step(to_n3[1])  # refused: n3 does not hold 4 yet
    net.step(to_n3[0])  # accepted
    answers = net.take(lambda m: isinstance(m, AppendResponse) and m.frm == "n3")
    assert [m.success for m in answers] == [False, True]
    for m in reversed(answers):
        net.step(m)
    for _ in range(3):
        net.tick_all()
    assert net.applied_data("n3") == [b"a", b"b", b"c"]


def test_nodes_removed_by_uncommitted_changes_still_campaign() -> None:
    """Found by test_membership_changes seeds 183 and 237 (liveness after
    healing): the only nodes with logs up to date enough to win an election
    had each appended, as leader, a change removing itself, and lost
    leadership before it committed. Using its latest configuration (thesis
    §4.1), each thought it was no voter and never campaigned; the remaining
    voter could not win against their logs. The committed configuration
    {n1, n2, n3} was all up and connected, yet no leader ever came.

    The Raft paper (§6) has removed servers keep timing out and starting
    elections; the core lets a node campaign while an uncommitted change
    removes it (it counts votes in its latest configuration, as always)."""
    # No leader leases here, so that votes need no waiting (not what the bug is about).
    net = Net(("n1", "n2", "n3"), RaftConfig(election_ticks=10, check_quorum=False))
    n1 = net.elect("n1")
    net.isolate("n2")
    net.propose("n1", b"a")
    net.deliver_all()
    assert n1.log.committed == 3  # on n1 and n3; n2 stops at 2
    net.isolate("n1")
    n1.propose_membership(n1.membership.remove("n1"))  # index 4, term 2: only n1 has it
    net.deliver_all()

    # n3 wins term 3 with n2's vote (n1's log beats n3's), but its appends
    # never reach n2; it then appends a change removing itself.
    net.recover()
    net.isolate("n1")
    net.ignore(AppendEntries)
    net.ignore(Heartbeat)
    n3 = net.elect("n3")
    n3.propose_membership(n3.membership.remove("n3"))  # index 5, term 3: only n3 has it
    net.deliver_all()
    assert net.log_terms("n1") == [1, 2, 2, 2]
    assert net.log_terms("n2") == [1, 2]
    assert net.log_terms("n3") == [1, 2, 2, 3, 3]
    # Both lose leadership (a restart is the shortest way to say so).
    for nid in ("n1", "n3"):
        net.crash(nid)
        assert net.restart(nid).role is Role.FOLLOWER

    net.recover()
    for _ in range(30 * net.config.election_ticks):
        net.tick_all()
        leader = next((r for r in map(net.raft, ("n1", "n2")) if r.role is Role.LEADER), None)
        if leader is not None and leader.membership_at(leader.log.committed).voters == {"n1", "n2"}:
            break
    else:
        states = {i: (net.raft(i).role.value, net.raft(i).term) for i in net.nodes}
        raise AssertionError(f"no leader of the committed configuration {{n1, n2}}: {states}")
    net.propose(leader.id, b"x")
    net.deliver_all()
    assert net.applied_data("n1")[-1] == net.applied_data("n2")[-1] == b"x"


def test_membership_follows_a_truncation_that_replaces_a_config_entry() -> None:
    """Found by test_membership_changes seed 31 (Leader Completeness): a node
    held an uncommitted configuration at index i, a new leader replaced it
    with a different configuration at the same index i, and the node went on
    using the old one (its decoded configuration was cached by index only).
    It then counted the vote of a removed node and won an election without a
    committed entry."""
    base = bootstrap_membership(("n1", "n2", "n3"))
    removes_n2 = base.remove("n2")
    adds_n4 = base.add(Member("n4", "n4.test:7000", voter=False))

    def disk_with(term: int, config: Membership) -> Disk:
        log = [bootstrap_entry(("n1", "n2", "n3")), Entry(2, term, EntryKind.CONFIG, config.encode())]
        return Disk(HardState(term, "", 1), log, [])

    net = Net(
        ("n1", "n2", "n3", "n4"),
        disks={
            "n1": disk_with(3, adds_n4),
            "n2": disk_with(3, adds_n4),
            "n3": disk_with(2, removes_n2),
            "n4": Disk(),
        },
    )
    n3 = net.raft("n3")
    assert n3.membership == removes_n2  # what it holds at index 2 (term 2), uncommitted
    net.elect("n1")  # n1's index 2 (term 3) wins
    net.tick_all(2)
    assert n3.log.entry(2).term == 3
    assert n3.membership == adds_n4
    assert n3.membership.voters == {"n1", "n2", "n3"}
