# test-case-name: tests.test_soak
"""What a soak run samples every few seconds, on a thread of its own.

For each node: its process's resident memory (``VmRSS`` of
``/proc/PID/status``, and its two parts ``RssAnon`` -- heap, stacks: what
the process itself holds -- and ``RssFile`` -- pages of mapped files, above
all the LMDB db, which the kernel drops under memory pressure and reads
back), its open file descriptors (the entries of
``/proc/PID/fd``) and the size of its db file; for the cluster: the ok
operations the workload completed in the interval and their p99 latency;
and every new warning-level line of each node's log (``#warn]``,
``#error]``, ``#critical]`` or a traceback), read as it appears. Every
sample carries the ``time.monotonic()`` it was taken at (the history's and
the nemesis's clock), never a log line's own timestamp: a node under a
clock fault writes wrong ones. A node that is down has no process sample;
a restarted node is a new process (``pid``), so growth is judged per
process.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from dkv.testing.cluster import Cluster
from dkv.testing.workload import Request

__all__ = ["LogLine", "NodeSample", "Sampler", "Tick", "p99", "proc_memory"]

#: A log line at warning level or above (twisted.logger's ``[namespace#level]``).
WARNING_LINE = re.compile(r"#(warn|error|critical)\]|Traceback \(most recent call last\)")


@attrs.frozen
class NodeSample:
    node: str
    pid: int | None
    rss_kib: int | None
    fds: int | None
    db_bytes: int | None
    rss_anon_kib: int | None = None
    rss_file_kib: int | None = None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class Tick:
    """One sampling instant: ``time`` (monotonic), ``since`` (the previous
    tick's time), per-node samples, and the workload's ok operations that
    completed in (since, time] with their p99 latency in ms."""

    time: float
    since: float
    nodes: tuple[NodeSample, ...]
    ok_ops: int
    p99_ms: float | None

    @property
    def throughput(self) -> float:
        return self.ok_ops / max(1e-9, self.time - self.since)

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "since": self.since,
            "nodes": [n.to_json() for n in self.nodes],
            "ok_ops": self.ok_ops,
            "throughput": round(self.throughput, 2),
            "p99_ms": self.p99_ms,
        }


@attrs.frozen
class LogLine:
    """A warning-level line of node's log, first seen between monotonic
    ``since`` and ``time``."""

    node: str
    since: float
    time: float
    text: str


def p99(values: Sequence[float]) -> float | None:
    """The 99th percentile (nearest rank) of values; None if there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * 0.99 + 0.5) - 1))]


#: The fields of ``/proc/PID/status`` sampled, in KiB.
_MEMORY_FIELDS = ("VmRSS", "RssAnon", "RssFile")


def proc_memory(pid: int) -> dict[str, int]:
    """``VmRSS``, ``RssAnon`` and ``RssFile`` of pid in KiB, those that
    could be read (none for a process that is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in _MEMORY_FIELDS:
                    out[name] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def _fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Sampler:
    """Samples cluster every ``interval`` seconds until ``stop()``;
    ``requests`` gives the workload's requests so far (ok operations are
    counted by their completion time). ``ticks`` and ``log_lines`` are
    what it saw."""

    def __init__(self, cluster: Cluster, requests: Callable[[], list[Request]], interval: float = 5.0) -> None:
        self.cluster = cluster
        self.requests = requests
        self.interval = interval
        self.ticks: list[Tick] = []
        self.log_lines: list[LogLine] = []
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, str] = {}
        self._seen_requests = 0
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._last = time.monotonic()
        self._skip_old_log_lines()
        self._thread = threading.Thread(target=self._run, name="dkv-soak-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60.0)
        self.sample()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):  # schedule
                self.sample()
        except BaseException as e:  # noqa: BLE001 - reported by the soak's summary
            self.error = e

    def _skip_old_log_lines(self) -> None:
        """Lines before the run (start-up) are not the soak's."""
        for i in self.cluster.ids:
            path = self.cluster.dir / f"{i}.log"
            self._offsets[i] = path.stat().st_size if path.exists() else 0

    def sample(self) -> Tick:
        now = time.monotonic()
        since = self._last
        nodes = []
        for i in self.cluster.ids:
            node = self.cluster.node(i)
            pid = node.pid if node.alive else None
            memory = proc_memory(pid) if pid is not None else {}
            fds = _fds(pid) if pid is not None else None
            db = self.cluster.dir / f"{i}.db"
            try:
                size: int | None = db.stat().st_size
            except OSError:
                size = None
            nodes.append(
                NodeSample(
                    node=i,
                    pid=pid,
                    rss_kib=memory.get("VmRSS"),
                    fds=fds,
                    db_bytes=size,
                    rss_anon_kib=memory.get("RssAnon"),
                    rss_file_kib=memory.get("RssFile"),
                )
            )
        requests = self.requests()
        fresh = requests[self._seen_requests :]
        done = [r for r in fresh if r.op.complete is not None]
        # A request is appended when it completes: count each once, by its completion.
        self._seen_requests = len(requests)
        ok = [r for r in done if r.op.outcome == "ok"]
        latencies = [1000.0 * (r.op.complete - r.op.invoke) for r in ok if r.op.complete is not None]
        tick = Tick(time=now, since=since, nodes=tuple(nodes), ok_ops=len(ok), p99_ms=p99(latencies))
        self.ticks.append(tick)
        for i in self.cluster.ids:
            self._scan_log(i, since, now)
        self._last = now
        return tick

    def _scan_log(self, node: str, since: float, now: float) -> None:
        path = Path(self.cluster.dir / f"{node}.log")
        try:
            with open(path, "rb") as f:
                f.seek(self._offsets.get(node, 0))
                data = f.read()
        except OSError:
            return
        self._offsets[node] = self._offsets.get(node, 0) + len(data)
        text = self._partial.pop(node, "") + data.decode("utf-8", "replace")
        lines = text.split("\n")
        if lines and lines[-1]:
            self._partial[node] = lines[-1]  # not complete yet
        for line in lines[:-1]:
            if WARNING_LINE.search(line):
                self.log_lines.append(LogLine(node=node, since=since, time=now, text=line.rstrip()))
