"""Scenario tests named after the sections of the Raft paper ("In Search of an
Understandable Consensus Algorithm", extended version) and of Diego Ongaro's
thesis ("Consensus: Bridging Theory and Practice") that they check.

Each test quotes the sentence it is about. They run on ``sim.Net``: a network
that moves only when told (``deliver_all``), with every node driven by the
core's contract and Raft's invariants checked after every delivery.
"""

from __future__ import annotations

import pytest

from dkv.raft import (
    Entry,
    EntryKind,
    HardState,
    Member,
    MembershipError,
    ProposalDropped,
    Raft,
    RaftConfig,
    Role,
)
from dkv.raft.messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    InstallSnapshot,
    RequestVote,
    TimeoutNow,
    VoteResponse,
)
from tests.raft.sim import Disk, Net, bootstrap_entry

IDS = ("n1", "n2", "n3")


def disk(term: int, *entries: tuple[int, bytes], vote: str = "", ids: tuple[str, ...] = IDS) -> Disk:
    """A node's disk after some history: the bootstrap entry, then entries
    given as (term, data) from index 2 on; only the bootstrap is committed."""
    log = [bootstrap_entry(ids)] + [
        Entry(i, t, EntryKind.NORMAL, data) for i, (t, data) in enumerate(entries, start=2)
    ]
    return Disk(HardState(term, vote, 1), log, [])


# -- §5.2 Leader election ------------------------------------------------------------


def test_5_2_leader_election_a_candidate_wins_with_a_majority() -> None:
    """§5.2: "A candidate wins an election if it receives votes from a majority
    of the servers in the full cluster for the same term." """
    net = Net(IDS)
    net.isolate("n3")
    n1 = net.elect("n1")  # n1 and n2 are a majority of three
    assert (n1.role, n1.term) == (Role.LEADER, 2)
    assert net.raft("n2").leader == "n1"
    assert net.raft("n3").leader is None


def test_5_2_leader_election_no_majority_no_leader() -> None:
    """§5.2: "The third possible outcome is that a candidate neither wins nor
    loses the election" -- alone, n1 keeps trying and never leads."""
    net = Net(IDS)
    net.isolate("n1")
    net.tick("n1", 100)
    net.deliver_all()
    assert net.raft("n1").role is not Role.LEADER


def test_5_2_each_server_votes_for_at_most_one_candidate_per_term() -> None:
    """§5.2: "Each server will vote for at most one candidate in a given term,
    on a first-come-first-served basis" -- and the vote is durable (Figure 2:
    votedFor is persistent state), so a restart does not free it."""
    net = Net(IDS, RaftConfig(pre_vote=False))
    n1 = net.raft("n1")
    ask = dict(term=2, last_index=1, last_term=1)
    net.step(RequestVote(frm="n2", to="n1", **ask))
    net.step(RequestVote(frm="n3", to="n1", **ask))
    answers = net.take(lambda m: isinstance(m, VoteResponse))
    assert [(m.to, m.granted) for m in answers] == [("n2", True), ("n3", False)]
    assert net.nodes["n1"].disk.hard_state == HardState(2, "n2", 1)

    net.crash("n1")
    n1 = net.restart("n1")
    assert (n1.term, n1.vote) == (2, "n2")
    net.step(RequestVote(frm="n3", to="n1", **ask))
    assert [m.granted for m in net.take(lambda m: isinstance(m, VoteResponse))] == [False]


def test_5_2_a_leader_that_learns_a_later_term_reverts_to_follower() -> None:
    """§5.2 (and §5.1): "If a candidate or leader discovers that its term is
    out of date, it immediately reverts to follower state." """
    net = Net(IDS)
    n1 = net.elect("n1")
    net.isolate("n1")
    net.tick("n2", 2 * net.config.election_ticks)  # n2 leaves n1's lease
    net.tick("n3", net.config.election_ticks)
    n2 = net.elect("n2")
    assert n1.role is Role.LEADER and n2.term > n1.term  # two leaders, two terms
    net.recover()
    net.tick("n2")  # a heartbeat of the new term reaches n1
    net.deliver_all()
    assert (n1.role, n1.term, n1.leader) == (Role.FOLLOWER, n2.term, "n2")


# -- §5.3 Log replication ------------------------------------------------------------


def test_5_3_log_replication_commits_and_applies_in_order_everywhere() -> None:
    """§5.3: "Once the entry has been safely replicated [...], the leader
    applies the entry to its state machine" and "Once a follower learns that
    a log entry is committed, it applies the entry to its local state machine
    (in log order)." """
    net = Net(IDS)
    n1 = net.elect("n1")
    net.propose("n1", b"a")
    net.propose("n1", b"b", b"c")
    net.deliver_all()
    assert n1.log.committed == n1.log.last_index() == 5
    assert net.applied_data("n1") == [b"a", b"b", b"c"]
    net.tick("n1")  # followers learn the final commit index from a heartbeat
    net.deliver_all()
    for nid in IDS:
        assert net.applied_data(nid) == [b"a", b"b", b"c"]


def test_5_3_a_follower_forwards_proposals_to_the_leader() -> None:
    """§8 (client interaction): "If the client's first choice is not the
    leader, that server will [...] supply information about the most recent
    leader" -- here the follower forwards the proposal itself."""
    net = Net(IDS)
    net.elect("n1")
    net.propose("n3", b"via-n3")
    net.deliver_all()
    assert net.applied_data("n1") == [b"via-n3"]


def test_5_3_the_leader_retries_until_followers_store_every_entry() -> None:
    """§5.3: "If followers crash or run slowly, or if network packets are
    lost, the leader retries AppendEntries RPCs indefinitely (even after it
    has responded to the client) until all followers eventually store all log
    entries." """
    net = Net(IDS)
    n1 = net.elect("n1")
    net.isolate("n3")
    for p in (b"a", b"b", b"c"):
        net.propose("n1", p)
    net.deliver_all()
    assert net.applied_data("n1") == [b"a", b"b", b"c"]  # n1 and n2 suffice
    assert net.raft("n3").log.last_index() == 2
    net.recover()
    net.tick_all(3)
    assert net.raft("n3").log.last_index() == n1.log.last_index()
    assert net.applied_data("n3") == [b"a", b"b", b"c"]


def test_5_3_the_leader_overwrites_conflicting_entries_with_fast_backtracking() -> None:
    """§5.3: "the leader handles inconsistencies by forcing the followers' logs
    to duplicate its own" -- and, from the optimisation described there: "the
    follower can include the term of the conflicting entry and the first
    index it stores for that term. With this information, the leader can
    decrement nextIndex to bypass all of the conflicting entries in that term;
    one AppendEntries RPC will be required for each term with conflicting
    entries, rather than one RPC per entry." """
    stale = [(2, b"x%d" % i) for i in range(10)] + [(3, b"y%d" % i) for i in range(10)]
    real = [(4, b"a%d" % i) for i in range(20)]
    net = Net(
        IDS,
        disks={
            # n1 and n2 share the real history; n3 led terms 2 and 3 alone.
            "n1": disk(4, *real),
            "n2": disk(4, *real),
            "n3": disk(4, *stale),
        },
    )
    net.isolate("n3")
    n1 = net.elect("n1")
    net.recover()
    before = len(net.delivered)
    net.tick("n1")
    net.deliver_all()
    rejections = [
        m
        for m in net.delivered[before:]
        if isinstance(m, AppendResponse) and m.frm == "n3" and not m.success
    ]
    assert len(rejections) == 2  # one per conflicting term, not one per entry (20)
    assert net.log_terms("n3") == net.log_terms("n1") == [1] + [4] * 20 + [5]
    assert [e.data for e in net.nodes["n3"].disk.log[1:21]] == [d for _, d in real]
    assert n1.log.committed == 22


def test_5_3_a_shorter_follower_log_is_caught_up_from_its_end() -> None:
    """§5.3, same optimisation: a follower that lacks entries tells the leader
    where its log ends, so one rejection suffices whatever the gap."""
    long_history = [(2, b"e%d" % i) for i in range(30)]
    net = Net(
        IDS,
        disks={"n1": disk(2, *long_history), "n2": disk(2, *long_history), "n3": disk(2)},
    )
    net.isolate("n3")
    net.elect("n1")
    net.recover()
    before = len(net.delivered)
    net.tick("n1")
    net.deliver_all()
    rejections = [
        m for m in net.delivered[before:] if isinstance(m, AppendResponse) and not m.success
    ]
    assert len(rejections) == 1
    assert net.log_terms("n3") == net.log_terms("n1")


# -- §5.4 Safety ---------------------------------------------------------------------


def test_5_4_1_election_restriction_denies_votes_to_stale_logs() -> None:
    """§5.4.1: "the voter denies its vote if its own log is more up-to-date
    than that of the candidate." n3 missed entries of term 2; n1 and n2 refuse
    to elect it, however often it tries."""
    net = Net(
        IDS,
        RaftConfig(pre_vote=False, check_quorum=False),
        disks={"n1": disk(2, (2, b"a")), "n2": disk(2, (2, b"a")), "n3": disk(2)},
    )
    for _ in range(5):
        net.tick("n3", 2 * net.config.election_ticks)
        net.deliver_all()
    assert net.raft("n3").role is not Role.LEADER
    votes = [m for m in net.delivered if isinstance(m, VoteResponse) and m.to == "n3"]
    assert votes and not any(m.granted for m in votes)
    n1 = net.elect("n1")  # whereas an up-to-date candidate wins
    assert n1.log.entry(2).data == b"a"


def test_5_4_1_log_comparison_by_last_term_then_length() -> None:
    """§5.4.1: "If the logs have last entries with different terms, then the
    log with the later term is more up-to-date. If the logs end with the same
    term, then whichever log is longer is more up-to-date." n1's single entry
    of term 3 beats n2's two entries of term 2."""
    net = Net(
        IDS,
        RaftConfig(pre_vote=False),
        disks={
            "n1": disk(3, (3, b"new")),
            "n2": disk(3, (2, b"old"), (2, b"older")),
            "n3": disk(3),
        },
    )
    net.isolate("n3")
    n1 = net.elect("n1")
    net.deliver_all()
    assert n1.role is Role.LEADER
    assert net.log_terms("n2") == [1, 3, 4]  # its term-2 entries were overwritten


def test_5_4_2_commit_only_current_term_entries_by_counting_replicas() -> None:
    """§5.4.2 (Figure 8): "Raft never commits log entries from previous terms
    by counting replicas. Only log entries from the leader's current term are
    committed by counting replicas."

    n1 (leading term 4) replicates its entry of term 2 to n2: a majority now
    holds it, yet it is not committed. Good thing: n1 crashes before its own
    no-op spreads, n3 (whose log ends in term 3) wins and overwrites it."""
    net = Net(
        IDS,
        RaftConfig(max_append_bytes=1),  # one entry per append
        disks={
            "n1": disk(3, (2, b"from-term-2")),
            "n2": disk(3, vote="n3"),
            "n3": disk(3, (3, b"from-term-3"), vote="n3"),
        },
    )
    net.isolate("n3")
    net.ignore(AppendEntries)
    n1 = net.elect("n1")
    assert (n1.term, n1.log.last_index()) == (4, 3)  # 2: the old entry, 3: its no-op
    net.recover()
    net.isolate("n3")
    net.tick("n1")  # heartbeat; n2's answer makes n1 probe: n2 has only entry 1
    net.deliver_until(lambda: n1.status().match.get("n2", 0) == 2)
    assert net.raft("n2").log.entry(2).data == b"from-term-2"  # on a majority now...
    assert n1.log.committed == 1  # ...and still not committed
    net.crash("n1")
    net.take(lambda m: m.frm == "n1")  # its no-op dies with it

    net.recover()
    net.isolate("n1")
    net.tick("n2", net.config.election_ticks)
    net.campaign("n3")  # PreVote for term 4 fails (n2 is in term 4 already) but n3 learns the term
    n3 = net.elect("n3")  # its PreVote for term 5 and its vote in term 5 succeed
    assert (n3.role, n3.term) == (Role.LEADER, 5)
    net.tick("n3")
    net.deliver_all()
    assert net.raft("n2").log.entry(2).data == b"from-term-3"
    assert n3.log.committed == n3.log.last_index()


def test_5_4_2_an_old_term_entry_commits_with_the_current_term_entry() -> None:
    """§5.4.2: "once an entry from the current term has been committed in this
    way, then all prior entries are committed indirectly because of the Log
    Matching Property." """
    net = Net(IDS, disks={"n1": disk(2, (2, b"old")), "n2": disk(2), "n3": disk(2)})
    n1 = net.elect("n1")
    net.tick("n1")
    net.deliver_all()
    assert n1.log.committed == 3
    assert all(net.applied_data(nid) == [b"old"] for nid in IDS)


# -- thesis §6.4 ReadIndex -----------------------------------------------------------


def test_thesis_6_4_read_index_waits_for_a_quorum_round() -> None:
    """Thesis §6.4: "The leader needs to make sure it hasn't been superseded
    by a newer leader of which it is unaware. It issues a new round of
    heartbeats and waits for their acknowledgments from a majority of the
    cluster." """
    net = Net(IDS)
    n1 = net.elect("n1")
    net.propose("n1", b"a")
    net.deliver_all()
    net.isolate("n1")
    ctx = net.read_index("n1")
    net.tick("n1", 3)
    net.deliver_all()
    assert net.read_states["n1"] == []  # nobody confirmed n1 is still leader
    net.recover()
    net.tick("n1")
    net.deliver_all()
    [rs] = net.read_states["n1"]
    assert (rs.ctx, rs.index) == (ctx, n1.log.committed)


def test_thesis_6_4_a_deposed_leader_serves_no_reads() -> None:
    """Thesis §6.4 again: a leader cut off while a newer leader commits must
    not answer with its stale commit index; its reads fail once it learns."""
    net = Net(IDS)
    net.elect("n1")
    net.isolate("n1")
    net.tick("n2", 2 * net.config.election_ticks)
    net.tick("n3", net.config.election_ticks)
    n2 = net.elect("n2")
    net.propose("n2", b"new")
    net.deliver_all()
    ctx = net.read_index("n1")  # n1 still believes it leads
    net.tick("n1")
    net.deliver_all()
    assert net.read_states["n1"] == []
    net.recover()
    net.tick("n1")  # its heartbeats meet the newer term
    net.deliver_all()
    assert net.read_states["n1"] == [] and net.failed_reads["n1"] == [ctx]
    net.tick("n2")  # n1 learns who leads now
    net.deliver_all()
    later = net.read_index("n1")  # a follower's read goes to the leader
    net.deliver_all()
    net.tick("n2")
    net.deliver_all()
    [rs] = net.read_states["n1"]
    assert (rs.ctx, rs.index) == (later, n2.log.committed)


def test_thesis_6_4_a_new_leader_reads_only_after_committing_in_its_term() -> None:
    """Thesis §6.4: "If the leader has not yet marked an entry from its current
    term committed, it waits until it has done so. [...] it commits a blank
    no-op entry into the log at the start of its term." """
    net = Net(IDS)
    net.ignore(AppendEntries)  # the no-op cannot commit yet
    n1 = net.elect("n1")
    assert n1.log.committed < n1.log.last_index()
    net.read_index("n1")
    net.tick("n1")
    net.deliver_all()  # a quorum answers the heartbeats: still no read
    assert net.read_states["n1"] == []
    net.recover()
    net.tick("n1")
    net.deliver_all()  # the no-op commits, then a fresh round confirms the read
    [rs] = net.read_states["n1"]
    assert rs.index == n1.log.committed == n1.log.last_index()


def test_thesis_6_4_acks_of_an_earlier_round_do_not_confirm_a_later_read() -> None:
    """Thesis §6.4: the heartbeat round must start after the read arrived; an
    acknowledgement of a heartbeat sent before it proves nothing about "now"."""
    net = Net(IDS)
    n1 = net.elect("n1")
    net.tick("n1")  # a heartbeat round goes out...
    early = net.take(lambda m: isinstance(m, Heartbeat))
    for m in early:
        net.step(m)  # ...and is answered, but the answers are held back
    answers = net.take(lambda m: m.to == "n1")
    net.read_index("n1")
    for m in answers:
        net.step(m)
    assert net.read_states["n1"] == []
    net.deliver_all()
    net.tick("n1")
    net.deliver_all()
    assert [rs.index for rs in net.read_states["n1"]] == [n1.log.committed]


# -- thesis §9.6 PreVote, §4.2.3 disruptive servers, §6.2 CheckQuorum ------------------


def test_thesis_9_6_prevote_a_rejoining_node_does_not_disrupt_the_leader() -> None:
    """Thesis §9.6: "a candidate would first ask other servers whether its
    log was up-to-date enough to get their vote. Only if the candidate
    believed it could get votes from a majority of the cluster would it
    increment its term and start a normal election." """
    net = Net(IDS)
    n1 = net.elect("n1")
    term = n1.term
    net.isolate("n3")
    net.tick("n3", 20 * net.config.election_ticks)
    net.deliver_all()
    assert net.raft("n3").term == term  # it never raised its term
    net.recover()
    net.tick_all(3)
    assert (n1.role, n1.term) == (Role.LEADER, term)
    assert net.raft("n3").leader == "n1"


def test_thesis_9_6_a_prevote_changes_nobody_s_term() -> None:
    """Thesis §9.6: the candidate only increments its term once it "believed it
    could get votes from a majority of the cluster"; so asking changes no
    term at all, neither the asker's nor the voter's."""
    net = Net(IDS)
    n1 = net.raft("n1")
    net.step(RequestVote(frm="n3", to="n1", term=7, last_index=1, last_term=1, pre_vote=True))
    [answer] = net.take(lambda m: isinstance(m, VoteResponse))
    assert (answer.granted, answer.term, answer.pre_vote) == (True, 7, True)
    assert (n1.term, n1.vote) == (1, "")
    n3 = net.raft("n3")
    net.tick("n3", 2 * net.config.election_ticks)
    assert n3.role is Role.PRE_CANDIDATE and n3.term == 1


def test_thesis_9_6_without_prevote_a_rejoining_node_forces_an_election() -> None:
    """The contrast (thesis §9.6): without PreVote (and without leases), a
    partitioned server keeps incrementing its term, and when it rejoins the
    leader learns the higher term and steps down."""
    net = Net(IDS, RaftConfig(pre_vote=False, check_quorum=False))
    n1 = net.elect("n1")
    term = n1.term
    net.isolate("n3")
    net.tick("n3", 3 * net.config.election_ticks)
    net.deliver_all()
    assert net.raft("n3").term > term
    net.recover()
    net.tick("n1")
    net.deliver_all()
    assert n1.term > term and n1.role is Role.FOLLOWER


def test_thesis_4_2_3_votes_are_ignored_while_a_leader_is_heard() -> None:
    """Thesis §4.2.3: "if a server receives a RequestVote request within the
    minimum election timeout of hearing from a current leader, it does not
    update its term or grant its vote." (PreVote off, to reach this check.)"""
    net = Net(IDS, RaftConfig(pre_vote=False))
    n1 = net.elect("n1")
    net.step(RequestVote(frm="n3", to="n2", term=n1.term + 5, last_index=99, last_term=99))
    assert net.raft("n2").term == n1.term
    assert not [m for m in net.queue if isinstance(m, VoteResponse)]


def test_thesis_6_2_check_quorum_a_leader_that_hears_no_majority_steps_down() -> None:
    """Thesis §6.2: "a leader steps down if an election timeout elapses
    without a successful round of heartbeats to a majority of its cluster;
    this allows clients to retry their requests with another server." """
    net = Net(IDS)
    n1 = net.elect("n1")
    net.isolate("n1")
    net.tick("n1", 2 * net.config.election_ticks)
    net.deliver_all()
    assert n1.role is Role.FOLLOWER and n1.leader is None
    with pytest.raises(ProposalDropped):
        n1.propose([b"x"])


def test_thesis_6_2_check_quorum_a_leader_with_a_majority_stays() -> None:
    net = Net(IDS)
    n1 = net.elect("n1")
    net.isolate("n3")
    for _ in range(5 * net.config.election_ticks):
        net.tick("n1")
        net.deliver_all()
    assert n1.role is Role.LEADER


# -- thesis §3.10 leadership transfer --------------------------------------------------


def test_thesis_3_10_leadership_transfer() -> None:
    """Thesis §3.10: "The prior leader stops accepting new client requests",
    "fully updates the target server's log to match its own", then "sends a
    TimeoutNow request to the target server. This request has the same effect
    as the target server's election timer firing"."""
    net = Net(IDS)
    n1 = net.elect("n1")
    net.isolate("n3")
    net.propose("n1", b"a", b"b")
    net.deliver_all()
    net.recover()
    assert n1.transfer_leadership("n3") == "n3"  # n3 lags: it is caught up first
    with pytest.raises(ProposalDropped):
        n1.propose([b"refused"])
    net.tick("n1")
    net.deliver_all()
    n3 = net.raft("n3")
    assert any(isinstance(m, TimeoutNow) for m in net.delivered)
    assert (n3.role, n3.term, n1.role, n1.leader) == (Role.LEADER, 3, Role.FOLLOWER, "n3")
    net.propose("n3", b"c")
    net.deliver_all()
    assert net.applied_data("n3") == [b"a", b"b", b"c"]


def test_thesis_3_10_a_transfer_that_does_not_finish_is_abandoned() -> None:
    """Thesis §3.10: "If the transfer does not complete after about an
    election timeout, the prior leader aborts the transfer and resumes
    accepting client requests." """
    net = Net(IDS)
    n1 = net.elect("n1")
    net.isolate("n3")
    n1.transfer_leadership("n3")
    for _ in range(net.config.election_ticks):
        net.tick("n1")
        net.deliver_all()
    assert n1.role is Role.LEADER
    net.propose("n1", b"accepted")
    net.deliver_all()
    assert net.applied_data("n1") == [b"accepted"]


# -- §7 Log compaction ----------------------------------------------------------------


def _lagging_follower(payloads: int = 10) -> tuple[Net, Raft]:
    """n1 leads; n3 was cut off while n1 committed and applied payloads
    entries with n2, then n1 compacted its log up to its applied index."""
    net = Net(IDS)
    n1 = net.elect("n1")
    net.isolate("n3")
    for i in range(payloads):
        net.propose("n1", b"e%d" % i)
    net.deliver_all()
    net.tick("n1")
    net.deliver_all()
    meta = net.compact("n1")
    assert meta.index == n1.log.applied == n1.log.last_index() == payloads + 2
    assert n1.log.first_index() == meta.index + 1  # the log holds nothing now
    assert net.raft("n3").log.last_index() == 2
    return net, n1


def _committed(commit: int, term: int, entries: list[tuple[int, bytes]]) -> Disk:
    """A disk like ``disk(term, *entries)`` on which entries up to commit
    are known committed (by n1, which led term ``term``)."""
    d = disk(term, *entries)
    d.hard_state = HardState(term, "n1", commit)
    return d


def _snapshots(net: Net) -> list[InstallSnapshot]:
    return [m for m in net.delivered if isinstance(m, InstallSnapshot)]


def test_7_a_follower_far_behind_gets_a_snapshot_then_entries() -> None:
    """§7: "the leader must occasionally send snapshots to followers that lag
    behind. This happens when the leader has already discarded the next log
    entry that it needs to send to a follower." Then the follower's log
    starts after the snapshot, and it gets later entries by AppendEntries.
    The snapshot survives a restart (the log's base and the state are on
    disk)."""
    net, n1 = _lagging_follower()
    net.recover()
    net.tick_all(3)
    [snap] = _snapshots(net)
    assert (snap.frm, snap.to, snap.meta.index, snap.meta.term) == ("n1", "n3", 12, n1.term)
    assert net.snapshot_outcomes == [(snap, "restore")]
    n3 = net.raft("n3")
    assert (n3.log.first_index(), n3.log.last_index(), n3.log.applied) == (13, 12, 12)
    assert net.nodes["n3"].disk.snapshot == snap.meta
    assert net.applied_data("n3") == net.applied_data("n1") == [b"e%d" % i for i in range(10)]
    assert n1.status().match["n3"] == 12  # the follower acknowledged the snapshot's index

    before = len(net.delivered)
    net.propose("n1", b"after")
    net.deliver_all()
    net.tick_all(2)
    appends = [m for m in net.delivered[before:] if isinstance(m, AppendEntries) and m.to == "n3"]
    assert appends[0].prev_index == 12 and appends[0].entries  # entries after the snapshot
    assert _snapshots(net) == [snap]
    assert net.applied_data("n3")[-1] == b"after"
    assert n3.log.first_index() == 13 and n3.log.entry(13).data == b"after"

    net.crash("n3")
    n3 = net.restart("n3")
    assert (n3.log.snapshot_index, n3.log.snapshot_term) == (12, snap.meta.term)
    assert n3.log.applied == 13 and n3.membership == n1.membership
    net.tick_all(2)
    assert net.applied_data("n3") == net.applied_data("n1")


def test_7_a_stale_snapshot_is_ignored() -> None:
    """A snapshot that arrives after the follower already committed past it
    (a retransmission, a slow transfer) changes nothing: the follower keeps
    its log and state and tells the leader where it stands."""
    net, n1 = _lagging_follower()
    net.recover()
    net.tick("n1")
    net.deliver_until(lambda: any(isinstance(m, InstallSnapshot) for m in net.queue))
    [snap] = net.take(lambda m: isinstance(m, InstallSnapshot))
    net.step(snap)
    net.deliver_all()
    net.propose("n1", b"after")
    net.deliver_all()
    net.tick_all(2)
    n3 = net.raft("n3")
    assert n3.log.committed == 13 > snap.meta.index
    state = list(net.nodes["n3"].disk.applied)
    log = (n3.log.first_index(), n3.log.last_index())

    net.step(snap, report=False)  # the same snapshot once more, late
    assert net.snapshot_outcomes[-1] == (snap, "stale")
    [answer] = net.take(lambda m: isinstance(m, AppendResponse) and m.frm == "n3")
    assert (answer.success, answer.index) == (True, 13)
    assert net.nodes["n3"].disk.applied == state
    assert (n3.log.first_index(), n3.log.last_index()) == log


def test_7_a_snapshot_from_a_deposed_leader_is_ignored() -> None:
    """Figure 13, InstallSnapshot RPC: "Reply immediately if term <
    currentTerm." A snapshot n1 sent while it led arrives after n2 won a
    later term: n3 ignores it (and does not answer)."""
    net, n1 = _lagging_follower(3)
    net.recover()
    net.tick("n1")
    net.deliver_until(lambda: any(isinstance(m, InstallSnapshot) for m in net.queue))
    [snap] = net.take(lambda m: isinstance(m, InstallSnapshot))
    net.isolate("n1")
    net.tick("n3", net.config.election_ticks)  # past n1's lease
    net.deliver_all()
    n2 = net.elect("n2")
    net.tick_all(2)
    n3 = net.raft("n3")
    assert n2.term > snap.term and n3.term == n2.term
    assert net.applied_data("n3") == [b"e0", b"e1", b"e2"]  # from n2's log
    state, log = list(net.nodes["n3"].disk.applied), net.log_terms("n3")
    net.step(snap, report=False)
    assert net.snapshot_outcomes[-1] == (snap, "stale-term")
    assert not [m for m in net.queue if m.frm == "n3"]
    assert net.nodes["n3"].disk.applied == state and net.log_terms("n3") == log
    assert n3.leader == "n2"


def test_7_a_snapshot_of_a_prefix_of_the_follower_log_keeps_later_entries() -> None:
    """§7: "If instead the follower receives a snapshot that describes a
    prefix of its log (due to retransmission or by mistake), then log entries
    covered by the snapshot are deleted but entries following the snapshot
    are still valid and must be retained." n3 holds entries 2..9 of term 2
    but knows only entry 1 committed; n1, which led term 2, applied up to 6.
    The snapshot at (6, t2) matches n3's log: n3 keeps every entry (applying
    its own up to 6; the core does not delete the covered ones, the driver's
    next compaction will) and learns the commit index."""
    history = [(2, b"a%d" % i) for i in range(8)]
    net = Net(
        IDS,
        disks={"n1": _committed(6, 2, history), "n2": _committed(6, 2, history), "n3": disk(2, *history)},
    )
    net.drive("n1")
    assert net.applied_data("n1") == [b"a0", b"a1", b"a2", b"a3", b"a4"]
    snap = net.snapshot_message("n1", "n3")
    assert (snap.meta.index, snap.meta.term) == (6, 2)
    net.step(snap, report=False)
    assert net.snapshot_outcomes == [(snap, "fast-forward")]
    n3 = net.raft("n3")
    assert (n3.log.first_index(), n3.log.last_index(), n3.log.committed) == (1, 9, 6)
    assert net.nodes["n3"].disk.snapshot.index == 0  # nothing installed
    assert net.applied_data("n3") == net.applied_data("n1")
    [answer] = net.take(lambda m: isinstance(m, AppendResponse) and m.frm == "n3")
    assert (answer.success, answer.index) == (True, 6)


def test_7_a_snapshot_with_new_information_replaces_the_whole_log() -> None:
    """§7: "If the snapshot contains new information not already in the
    recipient's log, the follower discards its entire log; it is all
    superseded by the snapshot and may possibly have uncommitted entries
    that conflict with the snapshot." n3's entries 2..9 are of term 2; n1
    committed and applied entries of term 3 up to 6."""
    real = [(3, b"r%d" % i) for i in range(8)]
    stale = [(2, b"s%d" % i) for i in range(8)]
    net = Net(
        IDS, disks={"n1": _committed(6, 3, real), "n2": _committed(6, 3, real), "n3": disk(2, *stale)}
    )
    net.drive("n1")
    snap = net.snapshot_message("n1", "n3")
    assert (snap.meta.index, snap.meta.term) == (6, 3)
    net.step(snap, report=False)
    assert net.snapshot_outcomes == [(snap, "restore")]
    n3 = net.raft("n3")
    assert (n3.log.first_index(), n3.log.last_index(), n3.log.committed, n3.term) == (7, 6, 6, 3)
    assert net.nodes["n3"].disk.snapshot == snap.meta  # installed with the Ready
    assert net.nodes["n3"].disk.log == []
    assert net.applied_data("n3") == net.applied_data("n1") == [b"r%d" % i for i in range(5)]
    assert n3.membership == snap.meta.membership  # Figure 13: "load snapshot's cluster configuration"


def test_7_an_install_is_durable_only_with_its_ready() -> None:
    """The contract: a restored snapshot becomes the node's state when the
    Ready that carries it is written. Until then nothing that depends on it
    leaves the node, and a crash forgets it (the snapshot is sent again)."""
    net, n1 = _lagging_follower(4)
    net.recover()
    net.tick("n1")
    net.deliver_until(lambda: any(isinstance(m, InstallSnapshot) for m in net.queue))
    [snap] = net.take(lambda m: isinstance(m, InstallSnapshot))
    net.hold_disk("n3")
    net.step(snap)
    n3 = net.raft("n3")
    assert n3.log.snapshot_index == 6  # restored in memory...
    assert net.nodes["n3"].disk.snapshot.index == 0  # ...not on disk
    assert not [m for m in net.queue if isinstance(m, AppendResponse) and m.frm == "n3"]
    net.crash("n3")
    n3 = net.restart("n3")
    assert n3.log.snapshot_index == 0 and n3.log.last_index() == 2
    net.release_disk("n3")
    net.tick_all(3)
    assert [m.meta.index for m in _snapshots(net)] == [6, 6]  # sent again after n1 probed
    assert net.nodes["n3"].disk.snapshot.index == 6
    assert net.applied_data("n3") == net.applied_data("n1")


def test_7_a_new_server_gets_the_state_and_configuration_by_snapshot() -> None:
    """Thesis §4.2.1 with §7: a server added after the leader compacted its
    log cannot be caught up from the log; it joins with an empty log (and the
    configuration that added it), gets a snapshot, then entries, and can be
    promoted."""
    net = Net(IDS)
    n1 = net.elect("n1")
    net.propose("n1", b"before")
    net.deliver_all()
    net.compact("n1")
    added = n1.membership.add(Member("n4", "n4.test:7000", voter=False))
    n1.propose_membership(added)
    net.deliver_all()
    assert n1.membership_at(n1.log.committed) == added
    n4 = net.join("n4", added)
    assert (n4.log.last_index(), n4.membership) == (0, added)
    net.tick_all(3)
    [snap] = _snapshots(net)
    assert snap.to == "n4" and snap.meta.membership == added
    assert n4.log.snapshot_index == snap.meta.index
    assert net.applied_data("n4") == [b"before"]

    n1.propose_membership(added.promote("n4"))
    net.deliver_all()
    net.tick_all(2)
    assert n4.membership.voters == {"n1", "n2", "n3", "n4"}
    net.isolate("n2")
    net.isolate("n3")  # n1 and n4 alone are no majority of four
    net.propose("n1", b"needs-three")
    net.deliver_all()
    assert b"needs-three" not in net.applied_data("n1")
    net.recover()
    net.tick_all(2)
    assert net.applied_data("n4") == [b"before", b"needs-three"]


# -- thesis §4.1-4.2 membership changes --------------------------------------------------


def test_thesis_4_1_single_server_changes_add_promote_remove() -> None:
    """Thesis §4.1: "only one server can be added or removed from the cluster
    at a time", and "a server always uses the latest configuration in its
    log, regardless of whether the entry is committed". A new server first
    joins without a vote and catches up (thesis §4.2.1), then is promoted."""
    ids = IDS + ("n4",)
    disks = {i: Disk.bootstrapped(IDS) for i in IDS}
    net = Net(ids, disks={**disks, "n4": Disk()})  # n4 starts empty, knowing nothing
    n1 = net.elect("n1")
    net.propose("n1", b"before")
    net.deliver_all()

    n1.propose_membership(n1.membership.add(Member("n4", "n4.test:7000", voter=False)))
    assert n1.membership.learners == {"n4"}  # in force as soon as appended
    with pytest.raises(MembershipError):  # one change at a time
        n1.propose_membership(n1.membership.promote("n4"))
    net.deliver_all()
    net.tick_all(2)
    assert net.applied_data("n4") == [b"before"]
    assert net.raft("n4").role is Role.FOLLOWER

    with pytest.raises(MembershipError):  # two voters at once
        n1.propose_membership(n1.membership.promote("n4").remove("n2"))
    n1.propose_membership(n1.membership.promote("n4"))
    net.deliver_all()
    net.tick_all(2)
    assert n1.membership.voters == {"n1", "n2", "n3", "n4"}
    net.isolate("n4")  # now a majority of four takes three
    net.isolate("n3")
    net.propose("n1", b"needs-three")
    net.deliver_all()
    assert b"needs-three" not in net.applied_data("n1")
    net.recover()
    net.tick_all(2)
    assert b"needs-three" in net.applied_data("n4")

    n1.propose_membership(n1.membership.remove("n2"))
    net.deliver_all()
    net.tick_all(2)
    assert all(net.raft(i).membership.voters == {"n1", "n3", "n4"} for i in ("n1", "n3", "n4"))
    net.propose("n1", b"after")
    net.deliver_all()
    net.tick_all(2)
    assert b"after" in net.applied_data("n4")
    assert b"after" not in net.applied_data("n2")


def test_thesis_4_2_2_removing_the_leader() -> None:
    """Paper §6: "the leader steps down (returns to follower state) once it
    has committed the Cnew log entry", and until then "it replicates log
    entries but does not count itself in majorities." """
    net = Net(IDS)
    n1 = net.elect("n1")
    n1.propose_membership(n1.membership.remove("n1"))
    net.deliver_all()
    assert n1.role is Role.FOLLOWER
    net.tick_all(3)  # it handed over with TimeoutNow (thesis §3.10)
    leaders = [i for i in ("n2", "n3") if net.raft(i).role is Role.LEADER]
    assert len(leaders) == 1
    net.propose(leaders[0], b"without-n1")
    net.deliver_all()
    net.tick_all(2)
    assert all(net.applied_data(i) == [b"without-n1"] for i in ("n2", "n3"))
    net.tick_all(5 * net.config.election_ticks)
    assert net.raft("n1").role is Role.FOLLOWER  # it never campaigns again


# -- thesis §10.2.1 writing to the leader's disk in parallel -------------------------------


def test_thesis_10_2_1_the_leader_appends_to_followers_before_its_own_disk() -> None:
    """Thesis §10.2.1: "the leader can write to its disk in parallel with
    replicating to the followers [...]. The leader may even commit an entry
    before it has been written to its own disk, if a majority of followers
    have written it to their disks." """
    net = Net(IDS)
    n1 = net.elect("n1")
    net.hold_disk("n1")
    net.propose("n1", b"a")
    net.deliver_all()
    assert n1.log.stable < n1.log.last_index()  # not on n1's disk...
    assert n1.log.committed == n1.log.last_index()  # ...but committed by n2 and n3
    net.release_disk("n1")
    assert net.applied_data("n1") == [b"a"]


def test_thesis_10_2_1_a_follower_acknowledges_only_what_its_disk_holds() -> None:
    """§5.3 with the core's contract: an append acknowledgement waits for the
    follower's disk (it is a Ready message), so a stalled follower does not
    count towards a commit."""
    net = Net(IDS)
    n1 = net.elect("n1")
    net.hold_disk("n2")
    net.hold_disk("n3")
    net.propose("n1", b"a")
    net.deliver_all()
    assert n1.log.committed < n1.log.last_index()
    net.release_disk("n2")
    net.deliver_all()
    assert n1.log.committed == n1.log.last_index()
