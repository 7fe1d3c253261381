"""The fault suite in CI: a short run of every nemesis schedule, and crash recovery.

Each schedule runs ``dkv.testing.torture.run_torture`` (three real nodes, ten
clients on five keys, faults every few seconds, then a healed tail) and
asserts that every check passed -- convergence, acknowledged writes,
nothing phantom, failed writes invisible, linearizability, HashKV equal on
every node, no write applied twice (clients retry writes of unknown outcome
with their idempotency key, and the summary's retry counts add up), clean
node logs, recovery after healing -- that faults were
really injected, and that the history holds what such a run must (many
``ok`` reads and writes, and some operations the faults made ``fail`` or
``unknown``). Two schedules run again with the ``txn`` workload (etcd's
gateway: compare-and-swap Txns, reads at a revision, compactions), whose
revisions are checked too. On a failure the
assertion shows the summary with the checker's explanation, and the run's
files (history, fault log, node logs) stay in the test's ``tmp_path``.

Seeds are fixed per schedule (``DKV_TORTURE_SEED`` adds an offset, to try
others); timing is real, so a seed does not replay a run exactly.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from dkv.testing.checks import final_checks
from dkv.testing.cluster import Cluster
from dkv.testing.history import read_history, write_history
from dkv.testing.nemesis import SCHEDULES
from dkv.testing.poll import Timeout, wait_until
from dkv.testing.rest_client import b64
from dkv.testing.torture import TortureConfig, TortureResult, run_torture
from dkv.testing.workload import Workload, WorkloadConfig

pytestmark = pytest.mark.process

#: Seconds of workload per schedule, of which TAIL are healed.
RUN_SECONDS = 32.0
TAIL_SECONDS = 6.0
SEED_OFFSET = int(os.environ.get("DKV_TORTURE_SEED", "0"))

#: What each schedule must have made clients see besides ``ok``.
_NOT_OK_EXPECTED = {
    # A killed node refuses connections: certainly-not-applied failures.
    "kill-leader": ("fail",),
    "kill-random": ("fail",),
    # A paused node answers nothing until it runs again: client timeouts,
    # or a late 503/504; either way some operation did not succeed.
    "pause": ("fail", "unknown"),
    "partition": ("fail", "unknown"),
    "isolate-leader": ("fail", "unknown"),
    "flaky": ("fail", "unknown"),
    "mix": ("fail", "unknown"),
    # None: requests wait out a transfer (held until the new leader takes
    # them), so no client need notice; that leadership moved shows instead.
    "transfer-leader": (),
    # A removed node stops: refused connections until it is back.
    "membership": ("fail",),
    # None: a wall clock stepped or racing troubles nobody (the nodes keep
    # time on the monotonic clock); nothing to see but the checks passing.
    "clock": None,
}


#: Known node bugs, by the check that shows them: a run whose only failures
#: are these is an expected failure, with this reason; any other failed check
#: still fails the test.
#: Node bugs the suite found, by check name, while they are open (none now:
#: "removed-stop" and "closed-store-read" were fixed; their reproductions
#: below run as plain tests).
KNOWN_BUGS: dict[str, str] = {}


#: Where a run that did not pass is copied (history, faults, summary, node
#: logs; not the dbs), since pytest keeps only its last few tmp dirs.
ARTIFACTS = Path(os.environ.get("DKV_FAULT_ARTIFACTS", Path(tempfile.gettempdir()) / "dkv-fault-artifacts"))


def keep_artifacts(result: TortureResult) -> str:
    """Copy a run that did not pass out of pytest's tmp dirs; where to."""
    dest = ARTIFACTS / f"{result.config.nemesis}-seed{result.config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    shutil.copytree(result.config.out, dest, ignore=shutil.ignore_patterns("*.db", "*.db-lock", "*.db.removed-*"))
    return f"\nthe run's files are kept in {dest}"


def assert_sensible(result: TortureResult) -> None:
    report = result.render()
    if not result.ok:
        report += keep_artifacts(result)
    failed = {c.name for c in result.checks if not c.passed}
    if failed and not result.errors and failed <= set(KNOWN_BUGS):
        pytest.xfail("; ".join(KNOWN_BUGS[name] for name in sorted(failed)) + "\n" + report)
    assert result.ok, report
    # A removal takes longest: the node stops, restarts empty, catches up.
    least = 2 if result.config.nemesis == "membership" else 3
    assert result.injected >= least, f"only {result.injected} faults injected\n{report}"
    counts = result.counts()
    ok = {kind: by.get("ok", 0) for kind, by in counts.items()}
    assert ok.get("read", 0) >= 200, f"too few ok reads\n{report}"
    assert ok.get("write", 0) + ok.get("cas", 0) >= 200, f"too few ok writes\n{report}"
    expected_not_ok = _NOT_OK_EXPECTED[result.config.nemesis]
    if expected_not_ok:
        not_ok = sum(counts[k].get(o, 0) for k in counts for o in expected_not_ok)
        assert not_ok >= 1, f"the faults never troubled a client\n{report}"
    elif expected_not_ok is not None:
        leaders = {e.nodes for e in result.events if e.action == "note" and e.detail.startswith("leader is ")}
        assert len(leaders) >= 2, f"leadership never moved\n{report}"
    for op in result.ops:
        if op.outcome == "ok" and op.kind in ("read", "cas"):
            assert op.result is None or op.result.startswith(b"c"), op
    # The files on disk hold the same run.
    out = result.config.out
    assert read_history(out / "history.jsonl") == result.ops
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True and summary["faults_injected"] == result.injected
    assert summary["operations_checked"] == result.verdict.ops_checked  # type: ignore[union-attr]
    faults = [json.loads(line) for line in (out / "faults.jsonl").read_text().splitlines()]
    assert faults[-1]["action"] == "heal", faults[-1]
    # Writes of unknown outcome were retried with their idempotency key, and
    # none was applied twice (the store's history holds each value once).
    assert result.check("applied-once") is not None and result.check("applied-once").passed, report
    retries = summary["retries"]
    assert retries["retried_known"] + retries["still_unknown"] == retries["unknown_first"], retries
    assert retries["retried_ok"] + retries["retried_fail"] == retries["retried_known"], retries
    assert sum(n for tries, n in retries["attempts"].items() if int(tries) > 1) == retries["unknown_first"], retries
    assert sum(retries["attempts"].values()) == retries["writes"], retries


@pytest.mark.parametrize("nemesis", SCHEDULES)
def test_schedule(tmp_path, nemesis: str) -> None:
    seed = SEED_OFFSET + 100 + SCHEDULES.index(nemesis)
    result = run_torture(
        TortureConfig(out=tmp_path / nemesis, nemesis=nemesis, time=RUN_SECONDS, tail=TAIL_SECONDS, seed=seed)
    )
    assert_sensible(result)
    actions = {e.action for e in result.events}
    expected = {
        "kill-leader": {"kill", "restart"},
        "kill-random": {"kill", "restart"},
        "pause": {"pause", "resume"},
        "partition": {"partition", "heal"},
        "isolate-leader": {"isolate", "heal"},
        "flaky": {"flaky", "heal"},
        "mix": {"heal"},
        "transfer-leader": {"transfer"},
        "membership": {"remove", "rejoin"},
        "clock": {"clock", "clock-reset"},
    }[nemesis]
    assert expected <= actions, (expected, actions)


@pytest.mark.parametrize("nemesis", ["mix", "membership"])
def test_txn_schedule(tmp_path, nemesis: str) -> None:
    """The txn workload: every check above, and the revisions the answers
    reported agree, follow real time, and every read at a revision shows
    what the key held then -- across faults, snapshot installs (a
    membership change brings a node back empty) and compactions."""
    seed = SEED_OFFSET + 200 + SCHEDULES.index(nemesis)
    result = run_torture(
        TortureConfig(
            out=tmp_path / nemesis, nemesis=nemesis, time=RUN_SECONDS, tail=TAIL_SECONDS, seed=seed, workload="txn"
        )
    )
    assert_sensible(result)
    report = result.render()
    txn = result.txn_counts()
    assert txn["cas"].get("swapped", 0) >= 50 and txn["cas"].get("not swapped", 0) >= 50, report
    assert txn["reads at a revision"].get("ok", 0) >= 100, report
    assert txn.get("compactions", {}).get("ok", 0) >= 1, report
    checked = {c.name for c in result.checks if c.passed}
    assert {"hash-kv", "revisions", "read-at-revision"} <= checked, report
    if nemesis == "membership":  # the node that rejoins empty needs entries compacted away
        assert result.snapshots["installed"] >= 1, report


def test_crash_recovery_every_node_killed_during_write_burst(tmp_path) -> None:
    """kill -9 every node at once while ten clients write, three times;
    restart them all: every acknowledged write is there (or overwritten by a
    later write), every node holds the same state, and the history -- writes,
    then final reads -- is linearizable.

    A node keeps everything it must not lose (log, term and vote, applied
    state, its index) in one LMDB file, every change one transaction
    committed with fsync; it writes no other file (the ``-lock`` file is
    LMDB's reader table, and the db's flock only excludes a second
    process). So a crash at any instant leaves a state some committed
    transaction wrote."""
    with Cluster(tmp_path) as c:
        c.start()
        c.leader()
        workload = Workload(c.rest_ports, WorkloadConfig(clients=10, keys=400, read_ratio=0.0), seed=SEED_OFFSET + 7)
        workload.start()
        try:
            for n in range(3):
                workload.wait_for_ok("write", 300 * (n + 1), timeout=60)
                c.kill_all()
                c.start()
                c.leader(timeout=30)
            workload.wait_for_ok("write", 300 * 3 + 100, timeout=60)
        finally:
            workload.stop()
        ops = workload.ops
        checks, verdict, state = final_checks(c, ops, workload.keys)
        report = "\n".join(f"{ch.name}: {ch.ok} {ch.detail}" for ch in checks)
        if not all(ch.passed for ch in checks):
            write_history(tmp_path / "history.jsonl", ops)
            dest = ARTIFACTS / f"crash-recovery-{time.strftime('%Y%m%d-%H%M%S')}"
            shutil.copytree(tmp_path, dest, ignore=shutil.ignore_patterns("*.db", "*.db-lock"))
            report += f"\nlogs and history kept in {dest}"
        assert all(ch.passed for ch in checks), report
        counts = workload.counts()
        assert counts[("write", "ok")] >= 1000, counts
        assert counts[("write", "fail")] + counts[("write", "unknown")] >= 1, counts
        assert all(node.starts == 4 for node in c.nodes.values())


def test_removed_follower_stops_under_load() -> None:
    """Remove a follower through the leader while ten clients write and read:
    the removed node must learn that its removal committed and stop (as the
    membership process tests expect), every time.

    Found by the ``membership`` schedule: about half of the removals leave
    the follower running, ``role: pre-candidate``, its commit index short of
    its last index, whose last entry is the configuration without it."""
    stuck = []
    for attempt in range(3):
        with Cluster() as c:
            c.start()
            leader = c.leader()
            workload = Workload(c.rest_ports, WorkloadConfig(clients=10), seed=SEED_OFFSET + attempt)
            workload.start()
            try:
                workload.wait_for_ok("write", 200, timeout=30)
                victim = next(i for i in c.ids if i != leader)
                code, body = c.request(leader, "DELETE", f"/v0/members/{victim}")
                assert code == 200, body
                try:
                    wait_until(lambda v=victim: not c.node(v).alive, 10, f"{victim} to stop")
                except Timeout:
                    stuck.append((attempt, victim, c.node(victim).try_status()))
            finally:
                workload.stop()
    assert not stuck, f"removed followers still running 10 s after their removal: {stuck}"


def test_stopping_node_never_answers_500() -> None:
    """SIGTERM a follower while clients on keep-alive connections read from
    it: each request gets an answer (at worst a retryable 503) or a closed
    connection, never a 500
    (found by the ``membership`` schedule, where removed nodes stop)."""
    with Cluster() as c:
        c.start()
        leader = c.leader()
        c.put_retry("k", "v")
        victim = next(i for i in c.ids if i != leader)
        port = c.rest_ports[victim]
        stop = threading.Event()
        statuses: list[int] = []

        def reader() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            while not stop.is_set():
                try:
                    conn.request("GET", f"/v0/kv/key/{b64('k')}?consistency=serializable")
                    resp = conn.getresponse()
                    resp.read()
                    statuses.append(resp.status)
                except (OSError, http.client.HTTPException):
                    conn.close()
                    if not c.node(victim).alive:
                        return
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

        threads = [threading.Thread(target=reader, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(statuses) >= 100, 10, "reads to flow")
        c.stop(victim)
        stop.set()
        for t in threads:
            t.join(10)
        # 503 ("node is shutting down") is a retryable answer; 500 never is.
        errors = [s for s in statuses if s >= 500 and s != 503]
        log = c.node(victim).log_text()
        assert not errors and "closed/deleted/dropped" not in log, (
            f"{len(errors)} answers >= 500 of {len(statuses)} while {victim} stopped; log:\n{c.log_tail(victim, 30)}"
        )


def test_schedule_with_peer_tls(tmp_path) -> None:
    """One schedule with mutual TLS between peers (certificates of a CA
    made for the run): the links reconnect through faults over TLS, a
    restarted node rejoins, and every check holds."""
    nemesis = "mix"
    seed = SEED_OFFSET + 300
    result = run_torture(
        TortureConfig(
            out=tmp_path / "tls", nemesis=nemesis, time=RUN_SECONDS, tail=TAIL_SECONDS, seed=seed, peer_tls=True
        )
    )
    assert_sensible(result)
    assert "--peer-tls" in TortureConfig(out=tmp_path, peer_tls=True).command()


def test_schedule_on_the_grpc_peer_transport(tmp_path) -> None:
    """One schedule with --peer-transport grpc (the other tests run the
    default, the native peer protocol, whose links' proxies cut the peer
    port and the RPC port together): every check holds."""
    seed = SEED_OFFSET + 400
    result = run_torture(
        TortureConfig(
            out=tmp_path / "grpc", nemesis="mix", time=RUN_SECONDS, tail=TAIL_SECONDS, seed=seed,
            peer_transport="grpc",
        )
    )  # fmt: skip
    assert_sensible(result)
    assert "--peer-transport grpc" in TortureConfig(out=tmp_path, peer_transport="grpc").command()
    assert "--peer-transport" not in TortureConfig(out=tmp_path).command()
