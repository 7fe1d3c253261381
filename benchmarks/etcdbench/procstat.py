# test-case-name: tests.test_vs_etcd_script
"""What a process costs, from ``/proc``: its CPU time and its resident
memory, and the CPU time of a group of processes (a cluster's members)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process pid (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14 and 15


def group_cpu_seconds(pids: Mapping[str, int]) -> dict[str, float]:
    """cpu_seconds of each named process; a process that is gone is left out."""
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = cpu_seconds(pid)
        except OSError:
            continue
    return out


def cpu_used(before: Mapping[str, float], after: Mapping[str, float]) -> float:
    """CPU-seconds used between two ``group_cpu_seconds`` readings, summed
    over the processes present in both."""
    return sum(after[n] - before[n] for n in before if n in after)


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of pid in MiB from /proc/PID/status: ``rss_mb`` (VmRSS)
    and its parts ``rss_anon_mb`` (heap and stacks) and ``rss_file_mb``
    (file pages mapped in: for dkv mostly LMDB's read-only memory map of the
    db, page cache the kernel can reclaim). Empty if the process is gone."""
    fields = {"VmRSS:": "rss_mb", "RssAnon:": "rss_anon_mb", "RssFile:": "rss_file_mb"}
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            words = line.split()
            if words and words[0] in fields:
                out[fields[words[0]]] = int(words[1]) / 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out
