"""What the comparison measures: the runs, the two systems, and what the
load driver needs from a system's cluster."""

from __future__ import annotations

from typing import Protocol

import attrs

SYSTEMS = ("dkv", "etcd")


@attrs.frozen
class RunSpec:
    """One measured configuration: operation, connections, where they go."""

    name: str
    op: str  # "write" or "read"
    connections: int
    target: str  # "leader" or "all"

    def describe(self) -> str:
        where = "leader" if self.target == "leader" else "all 3 nodes"
        what = "writes" if self.op == "write" else "lin. reads"
        return f"{what}, {self.connections} conn, {where}"


RUNS: tuple[RunSpec, ...] = (
    RunSpec("write-1", "write", 1, "leader"),
    RunSpec("write-16", "write", 16, "leader"),
    RunSpec("write-64", "write", 64, "leader"),
    RunSpec("read-1", "read", 1, "leader"),
    RunSpec("read-64", "read", 64, "leader"),
    RunSpec("write-64-all", "write", 64, "all"),
)


class BenchCluster(Protocol):
    """A local 3-member cluster of one system, in a temporary directory
    removed by ``close()`` (also on leaving a ``with`` block)."""

    system: str

    def __enter__(self) -> BenchCluster: ...

    def __exit__(self, *exc: object) -> None: ...

    def start(self, timeout: float = 60.0) -> None:
        """Start every member and wait for a leader; RuntimeError (with the
        logs' tails) if none comes."""

    def client_urls(self) -> list[str]:
        """http://host:port of every member's client API."""

    def leader_url(self) -> str:
        """The client URL of the current leader."""

    def put_request(self, key_b64: str, value_b64: str) -> tuple[str, str, bytes]:
        """(method, path, body) of a put in this system's HTTP API."""

    def close(self) -> None:
        """Stop every member and remove the data."""
