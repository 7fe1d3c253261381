"""Focused tests for core bugs that the simulation (``test_simulation``) found.

Each test names the seed that found the bug and states the scenario in its
smallest form, so it keeps failing if the bug comes back even when the
simulation's schedule drifts.
"""

from __future__ import annotations

import random

import pytest

from dkv.raft import (
    Entry,
    EntryKind,
    HardState,
    Member,
    Membership,
    ProposalDropped,
    Raft,
    RaftConfig,
    Role,
)
from dkv.raft.messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    NotMember,
    Propose,
    ProposeRejected,
    ReadIndexResponse,
    RequestVote,
    VoteResponse,
)
from tests.raft.sim import Disk, Net, bootstrap_entry, bootstrap_membership

IDS = ("n1", "n2", "n3")


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
    §4.1), each thought it was no voter and never campaigned, and the other
    voters could not win against their logs, although the committed
    configuration was all up and connected.

    The Raft paper (§6) has removed servers keep timing out and starting
    elections; the core lets a node campaign while an uncommitted change
    removes it (counting votes in its latest configuration, as always).

    The smallest case: two voters. n1 appends "remove n1", which n2 never
    gets, and CheckQuorum makes n1 step down. n2 cannot win (n1's log is
    longer) and, before the fix, n1 never tried."""
    net = Net(("n1", "n2"))
    n1 = net.elect("n1")
    net.cut("n1", "n2")
    n1.propose_membership(n1.membership.remove("n1"))
    net.tick_all(2 * net.config.election_ticks)
    assert n1.role is Role.FOLLOWER  # CheckQuorum: it cannot hear n2
    assert n1.membership.voters == {"n2"}  # its latest configuration, uncommitted

    net.recover()
    for _ in range(20 * net.config.election_ticks):
        net.tick_all()
        n2 = net.raft("n2")
        if n2.role is Role.LEADER and n2.membership_at(n2.log.committed).voters == {"n2"}:
            break
    else:
        states = {i: (net.raft(i).role.value, net.raft(i).term) for i in net.nodes}
        raise AssertionError(f"the removal never completed: {states}")
    net.propose("n2", b"x")
    net.deliver_all()
    assert net.applied_data("n2") == [b"x"]


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


def test_no_membership_change_before_the_leader_commits_in_its_term() -> None:
    """Seen while reading the core, then found by the simulation as well
    (test_random_membership_changes seed 263, Leader Completeness): the
    single-server change bug that Diego Ongaro described on raft-dev in 2015.

    From C = {n1..n4}: n1 (term 2) appends C1 = C + n5 and only n5 gets it.
    n2 wins term 3 with n3 and n4, and at once appends C2 = C - n4, which n3
    stores: under C2, {n2, n3} is a majority, so C2 and n2's no-op commit.
    n1 then wins term 4 under C1 with n4 and n5 (a majority of C1 that misses
    both n2 and n3) and overwrites the committed entries.

    The fix: a leader proposes no change until an entry of its own term is
    committed (that entry needs a majority of C, which blocks n1's path)."""
    quorum_of_four = ("n1", "n2", "n3", "n4")
    net = Net(
        quorum_of_four + ("n5",),
        disks={**{i: Disk.bootstrapped(quorum_of_four) for i in quorum_of_four}, "n5": Disk()},
    )
    n1 = net.elect("n1")
    for other in ("n2", "n3", "n4"):
        net.cut("n1", other)
    n1.propose_membership(n1.membership.add(Member("n5", "n5.test:7000")))
    net.tick("n1", 2)
    net.deliver_all()
    assert net.log_terms("n5") == [1, 2, 2] and n1.log.committed == 2  # C1: n1 and n5 only
    net.crash("n1")

    net.recover()
    net.isolate("n1")
    net.isolate("n5")
    for voter in ("n3", "n4"):
        net.tick(voter, net.config.election_ticks)  # past n1's lease
    net.ignore(AppendEntries)
    net.ignore(Heartbeat)
    n2 = net.elect("n2")  # term 3, with n3 and n4
    net.recover()
    net.isolate("n1")
    net.isolate("n5")
    net.cut("n2", "n4")
    with pytest.raises(ProposalDropped):  # its no-op needs n4 as well
        n2.propose_membership(n2.membership.remove("n4"))
    net.tick("n2")
    net.deliver_all()
    assert n2.log.committed == 2

    # n1 comes back beside n4 and n5 and wins term 4 under C1 -- harmless
    # now: nothing of term 3 was committed. (Before the fix, the invariants
    # stopped here: n1 led term 4 without n2's committed entries.)
    net.recover()
    net.isolate("n2")
    net.cut("n1", "n3")
    net.cut("n3", "n4")
    net.cut("n3", "n5")
    n1 = net.restart("n1")
    for _ in range(4):
        net.tick("n4", net.config.election_ticks)
        net.tick("n5", net.config.election_ticks)
        net.campaign("n1")
        if n1.role is Role.LEADER:
            break
    assert n1.role is Role.LEADER
    net.tick("n1")
    net.deliver_all()
    assert n1.log.committed == n1.log.last_index()


def test_a_lagging_member_does_not_stop_a_readded_voter() -> None:
    """Found by the simulation (test_random_membership_changes seeds 13, 16,
    24, 35, 49 and test_snapshots_with_random_membership_changes seeds 2, 5,
    23, 25, 26 at 132e256: a member of the newest committed configuration
    was told NotMember and stopped; before the simulation stopped removed
    nodes as the product's driver does, this showed as the liveness failures
    of test_random_membership_changes seeds 38 and 41). Fixed by 93204c1
    (only the leader tells, and only a notice of the current term counts).

    n5 is down while n1 removes it (C1, committed; n4 learns that) and adds
    it back as a voter (C2, committed by n1, n2, n3 while n4 is cut off).
    n5 restarts with its old log (latest configuration C0 at index 1) and
    campaigns; n4, whose committed configuration C1 leaves n5 out, hears it
    first. n4 knows nothing of C2, so what it says must not stop n5."""
    net = Net(("n1", "n2", "n3", "n4", "n5"))
    n1 = net.elect("n1")
    net.crash("n5")  # down through both changes
    c1 = n1.membership.remove("n5")
    n1.propose_membership(c1)
    net.deliver_all()
    net.tick_all(1)
    n4 = net.raft("n4")
    assert n4.membership_at(n4.log.committed) == c1
    net.isolate("n4")  # n4 misses the re-add
    c2 = c1.add(Member("n5", "n5.test:7000"))
    n1.propose_membership(c2)
    net.deliver_all()
    net.tick_all(1)
    assert n1.membership_at(n1.log.committed) == c2 and n4.membership == c1

    net.recover()
    for other in ("n1", "n2", "n3"):
        net.cut("n5", other)  # its vote requests reach n4 first
    n5 = net.restart("n5")
    assert n5.membership.is_voter("n5") and n5.log.last_index() == 2
    net.tick("n5", 2 * net.config.election_ticks)
    net.deliver_all()
    assert not n5.removed, "n5, a voter of the committed configuration C2, concluded it was removed"


def test_a_notice_delayed_past_a_readd_does_not_stop_the_member() -> None:
    """Found by test_snapshots_with_random_membership_changes seed 23 at
    93204c1 (a member of the newest committed configuration stopped); fixed
    by 3ea4241: a notice only makes the node passive, the next message from
    a leader clears it, and the driver stops a node only if no leader
    contacted it for two election timeouts.

    n3 never hears that n1 removed it (C1) and campaigns; the leader n1
    answers NotMember, true when sent. The notice is delayed in the network
    while n1 adds n3 back as a learner (C2, committed). When it arrives, n3
    (whose log still ends with C0) believes it -- same term, and C1's index
    is above its own latest configuration's -- but the leader, replicating
    C2 to it, clears that at once."""
    net = Net(IDS)
    n1 = net.elect("n1")
    net.isolate("n3")  # n3 never hears of its removal
    c1 = n1.membership.remove("n3")
    n1.propose_membership(c1)
    net.deliver_all()
    net.tick_all(net.config.election_ticks)
    assert n1.membership_at(n1.log.committed) == c1
    net.recover()
    n3 = net.raft("n3")
    net.tick("n3", 2 * net.config.election_ticks)  # it campaigns
    net.step(net.take(lambda m: isinstance(m, RequestVote) and m.to == "n1")[-1])
    [notice] = net.take(lambda m: isinstance(m, NotMember))  # delayed in the network
    net.cut("n1", "n3")
    c2 = c1.add(Member("n3", "n3.test:7000", voter=False))
    n1.propose_membership(c2)
    net.deliver_all()
    net.tick("n1")
    net.deliver_all()
    assert n1.membership_at(n1.log.committed) == c2
    assert notice.term == n3.term
    net.step(notice)
    assert n3.removed  # passive for now: it must not campaign on its old configuration
    net.recover()
    net.tick("n1")
    net.deliver_all()
    assert not n3.removed, "n3, a learner of the committed configuration C2, still thinks it was removed"
    assert n3.membership == c2


def _move_to_next_term(net: Net, nid: str, candidate: str) -> None:
    """nid hears a (transfer) vote request of the next term from candidate."""
    raft = net.raft(nid)
    raft.step(
        RequestVote(
            frm=candidate,
            to=nid,
            term=raft.term + 1,
            last_index=raft.log.last_index(),
            last_term=raft.log.last_term(),
            transfer=True,
        )
    )


def test_read_confirmed_by_the_old_leader_counts_after_a_term_change() -> None:
    """Found by the transfer-leader fault schedule (reads that waited for
    their deadline at every transfer): n3 forwards a read, n1 confirms it,
    but before the answer arrives n3 hears of the next term. The answer is
    still a valid read index (confirmed by a quorum after the request), so it
    must be used, not dropped as stale."""
    net = Net(IDS, RaftConfig(election_ticks=10, heartbeat_ticks=1))
    leader = net.elect("n1")
    ctx = net.read_index("n3")
    net.deliver_until(lambda: any(isinstance(m, ReadIndexResponse) and m.to == "n3" for m in net.queue))
    [answer] = net.take(lambda m: isinstance(m, ReadIndexResponse) and m.to == "n3")
    assert answer.ok and answer.term == leader.term
    _move_to_next_term(net, "n3", "n2")
    assert net.raft("n3").term == answer.term + 1
    net.step(answer)
    assert [rs.ctx for rs in net.read_states["n3"]] == [ctx]


def test_refused_forward_counts_after_a_term_change() -> None:
    """Same schedule, writes: n1, handing leadership over, refuses n3's
    forwarded proposal, and n3 hears of the next term before the refusal.
    The refusal must still reach the driver (it retries), not be dropped."""
    net = Net(IDS, RaftConfig(election_ticks=10, heartbeat_ticks=1))
    leader = net.elect("n1")
    n3 = net.raft("n3")
    n3.propose([b"x"], ctx=41)
    net.drive("n3")
    [forward] = net.take(lambda m: isinstance(m, Propose) and m.to == "n1")
    leader.transfer_leadership("n2")
    leader.step(forward)
    [refusal] = [m for m in leader.take_outbox().messages if isinstance(m, ProposeRejected)]
    _move_to_next_term(net, "n3", "n2")
    n3.step(refusal)
    assert n3.take_outbox().failed_proposals == (41,)


# -- found by a review of the core against the paper (issue 10) -------------------


def _lone_voter_with_a_learner() -> Net:
    """Voter a (its durable term is 2) and learner l, both holding entry 1."""
    members = Membership((Member("a", "a.test:7000"), Member("l", "l.test:7000", voter=False)))
    config = Entry(1, 1, EntryKind.CONFIG, members.encode())
    disks = {
        "a": Disk(HardState(term=2, vote="a", commit=1), [config], []),
        "l": Disk(HardState(term=2, vote="", commit=1), [config], []),
    }
    return Net(("a", "l"), RaftConfig(election_ticks=10, heartbeat_ticks=1), disks=disks)


def _win_alone(net: Net, nid: str) -> None:
    raft = net.raft(nid)
    for _ in range(2 * net.config.election_ticks):
        if raft.role is Role.LEADER:
            return
        net.tick(nid)
    assert raft.role is Role.LEADER


def test_a_lone_voter_sends_nothing_of_its_term_before_the_term_is_durable() -> None:
    """Issue 10, bug 1 (Log Matching). A lone voter wins by its own vote at
    once, before its new term and vote are on disk. Its no-op and X (term 3)
    reached learner l while the write was still under way; a crashed before
    it finished, came back in term 2, won term 3 again and wrote Y at the
    same (index, term): l kept X, a applied Y. Rule now (etcd's, in the
    core's contract): no message of a term leaves before the term is on disk.
    The sim's invariants check it on every send ("Durable term")."""
    net = _lone_voter_with_a_learner()
    net.hold_disk("a")  # a slow fsync: the Ready with term 3 stays outstanding
    _win_alone(net, "a")
    a = net.raft("a")
    assert a.term == 3
    net.propose("a", b"X")
    net.deliver_all()
    assert not [m for m in net.delivered if m.frm == "a" and m.term == 3], "term 3 left a before its disk held it"
    assert net.raft("l").log.last_index() == 1
    net.crash("a")  # before the write: term 3, the no-op and X are lost
    net.held_disks.discard("a")
    assert net.restart("a").term == 2
    _win_alone(net, "a")
    assert net.raft("a").term == 3
    net.propose("a", b"Y")
    net.deliver_all()
    net.tick_all(3)
    assert net.applied_data("a") == net.applied_data("l") == [b"Y"]


def test_a_leader_counts_the_refusal_of_a_read_it_forwarded_as_a_follower() -> None:
    """Issue 10, bug 3 (liveness). n2 forwards a read to n1; n1 hands its
    leadership to n2, and on hearing of term 3 fails the read it still held
    with ReadIndexResponse(term 3, ok=False). n2, now leader in term 3, used
    to drop answers of its own term: the read waited for its deadline."""
    net = Net(IDS, RaftConfig(election_ticks=10, heartbeat_ticks=1))
    n1 = net.elect("n1")
    ctx = net.read_index("n2")
    [request] = net.take(lambda m: m.to == "n1")
    net.step(request)  # n1 registers it and starts a read round...
    net.take(lambda m: m.frm == "n1")  # ...whose messages are lost
    n1.transfer_leadership("n2")
    net.drive("n1")
    net.deliver_all()
    assert net.raft("n2").role is Role.LEADER and net.raft("n2").term == 3
    assert net.failed_reads["n2"] == [ctx]  # the driver retries it on n2 itself


def test_a_leader_counts_the_refusal_of_a_proposal_it_forwarded_as_a_follower() -> None:
    """Issue 10, bug 3, for writes: n2 forwarded a proposal to n1 and then
    became leader of term 3; n1 (by then a follower in term 3) refuses the
    forward with ProposeRejected(term 3). n2 used to drop it (a 504 at the
    deadline for a write that certainly was not appended)."""
    net = Net(IDS, RaftConfig(election_ticks=10, heartbeat_ticks=1))
    n1 = net.elect("n1")
    n2 = net.raft("n2")
    n2.propose([b"x"], ctx=41)
    net.drive("n2")
    [forward] = net.take(lambda m: isinstance(m, Propose))
    n1.transfer_leadership("n2")
    net.drive("n1")
    net.deliver_all()
    assert n2.role is Role.LEADER and n2.term == 3
    net.step(forward)  # the stale forward reaches n1, a follower of term 3 now
    net.deliver_all()
    assert net.failed_proposals["n2"] == [41]


@pytest.mark.parametrize("pre_vote", [False, True])
def test_a_candidate_counts_no_election_time_before_its_term_is_durable(pre_vote: bool) -> None:
    """Issue 15 (found in a real cluster, reproduced by
    ``test_driver_simulation``'s slow-disk test). A member whose disk takes
    an election timeout per write started its next campaign before the vote
    requests of the last one had left (they wait for the term and vote on
    disk, thesis §3.8 / rule 1); each abandoned term's late requests reset the
    other members' timers, and no leader was ever elected. The campaign only
    begins for the others when its requests leave, so its timeout runs from
    then (Raft §5.2: "If election timeout elapses without winning, start a
    new election" -- an election not yet started cannot have timed out)."""
    raft = Raft(
        "n1",
        RaftConfig(election_ticks=10, heartbeat_ticks=1, pre_vote=pre_vote),
        random.Random(1),
        hard_state=HardState(term=1, vote="", commit=1),
        entries=[bootstrap_entry(IDS)],
        first_election_ticks=2,
    )
    for _ in range(40):
        if raft.role is Role.CANDIDATE:
            break
        raft.tick()
        for m in raft.take_outbox().messages:  # grant the PreVotes, if any
            if isinstance(m, RequestVote) and m.pre_vote:
                raft.step(VoteResponse(frm=m.to, to="n1", term=m.term, granted=True, pre_vote=True))
    assert raft.role is Role.CANDIDATE and raft.term == 2
    assert not [m for m in raft.take_outbox().messages if isinstance(m, RequestVote) and not m.pre_vote]
    for _ in range(100):  # the disk is slow: ten election timeouts pass
        raft.tick()
    assert raft.role is Role.CANDIDATE and raft.term == 2, "campaigned again before the first campaign began"
    rd = raft.ready()  # the term and vote are written: the requests leave now
    raft.advance(rd)
    sent = [m for m in (*rd.messages, *raft.take_outbox().messages) if isinstance(m, RequestVote)]
    assert {m.to for m in sent} == {"n2", "n3"} and {m.term for m in sent} == {2}
    for _ in range(40):  # now unanswered, it times out and campaigns again
        raft.tick()
    assert raft.term > 2 or raft.role is Role.PRE_CANDIDATE


def test_an_acknowledgement_of_replaced_entries_never_leaves() -> None:
    """Found by the driver simulation (test_one_voter_driver_with_learners
    seed 23, once applied writes were held between transactions): a
    follower acknowledges entries appended while a Ready is on its way to
    disk; the acknowledgement waits for the next Ready. A newer leader
    replaced those entries meanwhile, so the next Ready did not hold them,
    yet the old acknowledgement left after it -- a promise about entries the
    disk never had, which the old leader could count towards a commit."""
    f = Raft(
        "f",
        RaftConfig(),
        random.Random(1),
        hard_state=HardState(1, "", 1),
        entries=(bootstrap_entry(("a", "b", "f")),),
    )
    f.step(AppendEntries(frm="a", to="f", term=3, prev_index=1, prev_term=1, entries=(Entry(2, 3),), commit=1))
    first = f.ready()  # entry 2 on its way to disk
    assert [m.index for m in first.messages if isinstance(m, AppendResponse)] == [2]
    f.step(AppendEntries(frm="a", to="f", term=3, prev_index=2, prev_term=3, entries=(Entry(3, 3),), commit=1))
    # b, leader of term 4, never had a's entry 3: its own replaces it.
    f.step(AppendEntries(frm="b", to="f", term=4, prev_index=2, prev_term=3, entries=(Entry(3, 4),), commit=1))
    f.advance(first)
    second = f.ready()
    assert [e.term for e in second.entries] == [4]
    acks = [(m.to, m.term, m.index) for m in second.messages if isinstance(m, AppendResponse) and m.success]
    assert acks == [("b", 4, 3)]
