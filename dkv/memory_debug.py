# test-case-name: tests.test_memory_debug
"""Opt-in memory tracing, for tests and soaks: never on in production.

With ``DKV_TRACEMALLOC=N`` in a node's environment (N: frames kept per
allocation, at least 1) the node starts ``tracemalloc`` before it builds
anything, and every ``SIGUSR2`` writes ``DB.memory-PID-K.txt`` (DB: its
db file; K = 1, 2, ...) beside its db file: the memory Python has traced, glibc's heap figures
(``mallinfo2``: what the allocator holds from the system and how much of it
is free), the live objects by type, and the allocations (by line) and live
object counts (by type) that grew the most since the previous dump. Two
dumps around a fault say what the fault left behind.

Without the variable, ``install`` does nothing.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import gc
import os
import signal
import tracemalloc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["MemoryDumper", "install", "malloc_info"]

ENV = "DKV_TRACEMALLOC"
TOP = 30


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def malloc_info() -> dict[str, int]:
    """glibc's ``mallinfo2()`` of this process (main arena only: ``arena``
    bytes taken from the system by sbrk, ``uordblks`` in use, ``fordblks``
    free, ``hblkhd`` in mmapped blocks); empty where there is no glibc."""
    path = ctypes.util.find_library("c")
    if path is None:
        return {}
    try:
        libc = ctypes.CDLL(path)
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _Mallinfo2
    info = fn()
    return {field[0]: int(getattr(info, field[0])) for field in _Mallinfo2._fields_}


def _to_file(write: Any, path: Path) -> str:
    """What write(fd) wrote to a scratch file (C-level reports)."""
    with open(path, "w+b") as f:
        write(f.fileno())
        f.flush()
        f.seek(0)
        text = f.read().decode("utf-8", "replace")
    path.unlink()
    return text


def _malloc_arenas(path: Path) -> list[str]:
    """One line per glibc arena (``malloc_info``): bytes taken from the
    system now and at most, and bytes free in it."""
    libc_path = ctypes.util.find_library("c")
    if libc_path is None:
        return []
    libc = ctypes.CDLL(libc_path)
    libc.fdopen.restype = ctypes.c_void_p
    libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fflush.argtypes = [ctypes.c_void_p]

    def write(fd: int) -> None:
        stream = libc.fdopen(os.dup(fd), b"w")
        libc.malloc_info(0, stream)
        libc.fflush(stream)
        libc.fclose.argtypes = [ctypes.c_void_p]
        libc.fclose(stream)

    xml = _to_file(write, path)
    lines, heap = [], "?"
    for line in xml.splitlines():
        line = line.strip()
        if line.startswith("<heap nr="):
            heap = line.split('"')[1]
        elif line.startswith('<system type="current"'):
            current = int(line.split('"')[3])
        elif line.startswith('<system type="max"'):
            most = int(line.split('"')[3])
            lines.append(f"arena {heap}: system {current / 1024:.0f} KiB (max {most / 1024:.0f} KiB)")
            heap = "total"
    return lines


def _type_counts() -> collections.Counter[str]:
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


class MemoryDumper:
    """Writes numbered dumps (``{prefix}K.txt``), each compared with the one before."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.count = 0
        self._snapshot: tracemalloc.Snapshot | None = None
        self._types: collections.Counter[str] = collections.Counter()

    def dump(self) -> Path:
        """Write the next dump; its path."""
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            (
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            )
        )
        types = _type_counts()
        current, peak = tracemalloc.get_traced_memory()
        lines = [f"traced {current / 1024:.0f} KiB (peak {peak / 1024:.0f} KiB)"]
        lines.append("mallinfo2 " + " ".join(f"{k}={v}" for k, v in malloc_info().items()))
        scratch = self.prefix.with_name(f"{self.prefix.name}scratch")
        lines += _malloc_arenas(scratch)
        if self._snapshot is not None:
            lines.append(f"\n-- top {TOP} allocation growth by line since dump {self.count}")
            lines += [str(s) for s in snapshot.compare_to(self._snapshot, "lineno")[:TOP]]
            lines.append(f"\n-- top {TOP // 3} allocation growth by traceback since dump {self.count}")
            for stat in snapshot.compare_to(self._snapshot, "traceback")[: TOP // 3]:
                lines.append(f"{stat.size_diff / 1024:+.1f} KiB, {stat.count_diff:+d} blocks")
                lines += ["    " + line for line in stat.traceback.format()]
            grown = types.copy()
            grown.subtract(self._types)
            lines.append(f"\n-- live objects by type, most grown since dump {self.count}")
            lines += [f"{n:+d} {name} (now {types[name]})" for name, n in grown.most_common(TOP) if n]
        lines.append(f"\n-- top {TOP} allocations by line")
        lines += [str(s) for s in snapshot.statistics("lineno")[:TOP]]
        lines.append(f"\n-- top {TOP} live objects by type")
        lines += [f"{n} {name}" for name, n in types.most_common(TOP)]
        self.count += 1
        path = self.prefix.with_name(f"{self.prefix.name}{self.count}.txt")
        partial = path.with_name(path.name + ".partial")
        partial.write_text("\n".join(lines) + "\n")
        partial.replace(path)  # whole or not there
        self._snapshot, self._types = snapshot, types
        return path


def install(db_path: Path, environ: Mapping[str, str] = os.environ) -> MemoryDumper | None:
    """Start tracing and dump on SIGUSR2 when environ asks (see the module
    docstring); None when it does not."""
    value = environ.get(ENV, "").strip()
    if not value or value == "0":
        return None
    frames = max(1, int(value)) if value.isdigit() else 1
    tracemalloc.start(frames)
    dumper = MemoryDumper(db_path.with_name(f"{db_path.name}.memory-{os.getpid()}-"))

    def on_signal(signum: int, frame: Any) -> None:
        dumper.dump()

    signal.signal(signal.SIGUSR2, on_signal)
    return dumper
