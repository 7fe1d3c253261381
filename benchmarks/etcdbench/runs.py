# test-case-name: tests.test_vs_etcd_script
"""What the comparison measures: the runs, the two systems, what a cluster
offers the load driver, and which HTTP API a run speaks to a system.

Two groups of runs. ``v0``: issue 6's comparison, each system through its
own API (dkv ``/v0``, etcd its JSON gateway). ``v3``: both systems through
etcd's JSON gateway paths (``/v3/kv/...``), byte-identical requests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

SYSTEMS = ("dkv", "etcd")
#: The run groups --runs accepts besides run names ("targets": the runs
#: issue 16's targets are judged on, ``TARGET_RUNS``).
GROUPS = ("all", "v0", "v3", "targets")
#: Keys under each prefix of the range runs (issue 12: a range of 100 keys).
RANGE_KEYS = 100

_WHAT = {
    "write": "puts of new keys",
    "read": "lin. reads of 1 key",
    "range": f"lin. ranges of {RANGE_KEYS} keys",
    "cas": "CAS txns",
}


@attrs.frozen
class RunSpec:
    """One measured configuration: operation, connections, where they go,
    and the API group (``v0``: each system's own API; ``v3``: etcd's
    paths on both)."""

    name: str
    op: str  # "write", "read", "range" (a prefix of RANGE_KEYS keys) or "cas"
    connections: int
    target: str  # "leader" or "all"
    api: str = "v0"

    def describe(self) -> str:
        where = "leader" if self.target == "leader" else "all 3 nodes"
        what = _WHAT[self.op] if self.api == "v3" else ("writes" if self.op == "write" else "lin. reads")
        return f"{what}, {self.connections} conn, {where}"

    def wire_api(self, own_api: str) -> str:
        """The API this run speaks to a system whose own API is own_api:
        the system's own for a ``v0`` run, etcd's for a ``v3`` run."""
        return "v3" if self.api == "v3" else own_api


RUNS: tuple[RunSpec, ...] = (
    RunSpec("write-1", "write", 1, "leader"),
    RunSpec("write-16", "write", 16, "leader"),
    RunSpec("write-64", "write", 64, "leader"),
    RunSpec("read-1", "read", 1, "leader"),
    RunSpec("read-16", "read", 16, "leader"),
    RunSpec("read-64", "read", 64, "leader"),
    RunSpec("write-64-all", "write", 64, "all"),
    RunSpec("v3-write-1", "write", 1, "leader", "v3"),
    RunSpec("v3-write-16", "write", 16, "leader", "v3"),
    RunSpec("v3-write-64", "write", 64, "leader", "v3"),
    RunSpec("v3-read-1", "read", 1, "leader", "v3"),
    RunSpec("v3-read-16", "read", 16, "leader", "v3"),
    RunSpec("v3-read-64", "read", 64, "leader", "v3"),
    RunSpec("v3-range100-16", "range", 16, "leader", "v3"),
    RunSpec("v3-range100-64", "range", 64, "leader", "v3"),
    RunSpec("v3-cas-16", "cas", 16, "leader", "v3"),
    RunSpec("v3-cas-64", "cas", 64, "leader", "v3"),
)


#: The runs of group "targets": writes and linearizable reads at 1, 16 and
#: 64 connections to the leader, through each system's own API (v0) and
#: through etcd's paths on both (v3).
TARGET_RUNS = tuple(
    f"{prefix}{op}-{conns}" for prefix in ("", "v3-") for op in ("write", "read") for conns in (1, 16, 64)
)


def select_runs(text: str) -> list[RunSpec]:
    """The runs a --runs value names: comma-separated run names and groups
    (``all``, ``v0``, ``v3``, ``targets``), in RUNS order. ValueError on an unknown name
    or when nothing is left."""
    names = {n.strip() for n in text.split(",")} - {""}
    unknown = names - set(GROUPS) - {r.name for r in RUNS}
    if unknown:
        raise ValueError(
            f"unknown runs {sorted(unknown)}; choose from the groups {list(GROUPS)} "
            f"or the runs {[r.name for r in RUNS]}"
        )
    chosen = [
        r
        for r in RUNS
        if r.name in names or r.api in names or "all" in names or ("targets" in names and r.name in TARGET_RUNS)
    ]
    if not chosen:
        raise ValueError("--runs names no run")
    return chosen


def needs_v3(runs: Sequence[RunSpec]) -> bool:
    """Whether any of the runs speaks etcd's API to both systems."""
    return any(r.api == "v3" for r in runs)


class BenchCluster(Protocol):
    """A local 3-member cluster of one system, in a temporary directory
    removed by ``close()`` (also on leaving a ``with`` block)."""

    system: str
    #: The system's own HTTP API: "v0" (dkv) or "v3" (etcd's gateway).
    own_api: str

    def __enter__(self) -> BenchCluster: ...

    def __exit__(self, *exc: object) -> None: ...

    def start(self, timeout: float = 60.0) -> None:
        """Start every member and wait for a leader; RuntimeError (with the
        logs' tails) if none comes."""

    def client_urls(self) -> list[str]:
        """http://host:port of every member's client API."""

    def leader_url(self) -> str:
        """The client URL of the current leader."""

    def member_pids(self) -> dict[str, int]:
        """The process id of every running member (for their CPU time)."""

    def leader_member(self) -> str:
        """The current leader's member name (node id)."""

    def follower_member(self) -> str:
        """A voting member that is not the leader."""

    def progress(self, member: str) -> tuple[int, int] | None:
        """(commit index, applied index) of member's Raft log, or None if it
        does not answer."""

    def pause(self, member: str) -> None:
        """SIGSTOP member (it keeps its sockets)."""

    def resume(self, member: str) -> None:
        """SIGCONT a paused member."""

    def grpc_address(self, role: str) -> str:
        """host:port of the gRPC services (etcd's API) of the current leader
        (role "leader") or of a follower (role "follower")."""

    def close(self) -> None:
        """Stop every member and remove the data."""
