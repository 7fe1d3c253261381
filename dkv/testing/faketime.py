# test-case-name: tests.test_clock_faults
"""Wall-clock faults for real nodes, with Debian's ``libfaketime``.

``FakeClocks.install(cluster)`` starts every node of the cluster (at its
next start) with ``libfaketime`` preloaded, reading its fake-time spec from
a file of its own (``DIR/<id>.faketime``) at every call
(``FAKETIME_NO_CACHE=1``), with the monotonic clock left alone
(``DONT_FAKE_MONOTONIC=1``; and ``FAKETIME_FORCE_MONOTONIC_FIX=0``, see
``env``). ``set(node, spec)`` then changes that node's
wall clock while it runs:

``+3600`` / ``-3600``  the wall clock is an hour ahead / behind;
``+0 x2``              the wall clock runs twice as fast (from the node's
                       start: it also jumps ahead by the node's uptime);
``+0``                 the real time again.

Only ``CLOCK_REALTIME`` (``time.time()``, ``datetime.now()``) moves; a
rate also shortens the timeouts of poll/epoll/select (the event loop then
wakes early and waits again: its timers still run on the monotonic clock).
Install it with ``apt-get install faketime``; ``library()`` is None when it
is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from dkv.testing.cluster import Cluster

__all__ = ["REAL", "SPECS", "FakeClocks", "for_schedule", "library"]

#: Where Debian's package puts the library (the first found is used).
LIBRARIES = (
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
)
#: The clock faults the nemesis draws from: spec -> what it does.
SPECS = {"+3600": "jumps 1 h ahead", "-3600": "jumps 1 h back", "+0 x2": "runs 2x fast"}
#: The real time.
REAL = "+0"


def library() -> str | None:
    """The path of libfaketime, or None if it is not installed."""
    override = os.environ.get("DKV_TEST_LIBFAKETIME")
    for path in (override, *LIBRARIES) if override else LIBRARIES:
        if path and Path(path).exists():
            return path
    return None


@attrs.define
class FakeClocks:
    """One fake-time file per node under ``dir``; see the module docstring."""

    dir: Path = attrs.field(converter=Path)
    lib: str

    def path(self, node_id: str) -> Path:
        return self.dir / f"{node_id}.faketime"

    def env(self, node_id: str) -> dict[str, str]:
        """The variables that give node_id its fake wall clock."""
        return {
            "LD_PRELOAD": self.lib,
            "FAKETIME_TIMESTAMP_FILE": str(self.path(node_id)),
            "FAKETIME_NO_CACHE": "1",
            "DONT_FAKE_MONOTONIC": "1",
            # libfaketime 0.9.10 otherwise "fixes" pthread_cond_timedwait on
            # the monotonic clock it does not fake: gRPC's waits then stall
            # about a second each (measured: 3 puts a second instead of 150).
            "FAKETIME_FORCE_MONOTONIC_FIX": "0",
        }

    def install(self, cluster: Cluster) -> None:
        """Every node of cluster (at its next start) runs on its fake clock,
        real time for now."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for node_id in cluster.ids:
            self.set(node_id, REAL)
            cluster.node(node_id).add_env(self.env(node_id))

    def set(self, node_id: str, spec: str) -> None:
        """node_id's wall clock follows spec from now (written atomically)."""
        path = self.path(node_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(spec + "\n", encoding="ascii")
        tmp.replace(path)

    def get(self, node_id: str) -> str:
        return self.path(node_id).read_text(encoding="ascii").strip()


def for_schedule(cluster: Cluster, schedule: str, directory: Path) -> FakeClocks | None:
    """Fake clocks installed on cluster (before it starts) when schedule may
    step clocks (``clock``, ``mix``) and libfaketime is installed; None
    otherwise. The ``clock`` schedule without libfaketime is refused."""
    if schedule not in ("clock", "mix"):
        return None
    lib = library()
    if lib is None:
        if schedule == "clock":
            raise RuntimeError("the clock nemesis needs libfaketime: apt-get install faketime")
        return None
    clocks = FakeClocks(directory, lib)
    clocks.install(cluster)
    return clocks
