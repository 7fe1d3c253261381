"""dkv.memory_debug: opt-in tracemalloc dumps on SIGUSR2."""

from __future__ import annotations

import os
import re
import signal
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from dkv import memory_debug


@pytest.fixture
def restore_tracing() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGUSR2)
    was_tracing = tracemalloc.is_tracing()
    yield
    signal.signal(signal.SIGUSR2, previous)
    if not was_tracing:
        tracemalloc.stop()


def test_without_the_variable_nothing_is_installed(tmp_path: Path, restore_tracing: None) -> None:
    before = signal.getsignal(signal.SIGUSR2)
    for environ in ({}, {memory_debug.ENV: ""}, {memory_debug.ENV: "0"}):
        assert memory_debug.install(tmp_path / "a.db", environ) is None
    assert signal.getsignal(signal.SIGUSR2) == before
    assert list(tmp_path.iterdir()) == []


def test_sigusr2_writes_numbered_dumps_beside_the_db_each_compared_with_the_last(
    tmp_path: Path, restore_tracing: None
) -> None:
    dumper = memory_debug.install(tmp_path / "a.db", {memory_debug.ENV: "4"})
    assert dumper is not None and tracemalloc.is_tracing()
    os.kill(os.getpid(), signal.SIGUSR2)
    first = tmp_path / f"a.db.memory-{os.getpid()}-1.txt"
    assert first.exists()
    kept = [[bytearray(1000)] for _ in range(2000)]  # ~2 MB held between the dumps
    os.kill(os.getpid(), signal.SIGUSR2)
    second = (tmp_path / f"a.db.memory-{os.getpid()}-2.txt").read_text()
    assert second.startswith("traced ")
    growth = second.split("-- top 30 allocation growth by line since dump 1\n", 1)[1].splitlines()[0]
    assert "test_memory_debug.py" in growth
    assert 1950 <= float(re.search(r"\(\+([0-9.]+) KiB\)", growth).group(1)) <= 2300  # type: ignore[union-attr]
    grown_types = second.split("most grown since dump 1\n", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"^\+20\d\d builtins\.list ", grown_types, re.MULTILINE), grown_types
    assert "since dump" not in first.read_text()  # the first has nothing to compare with
    del kept
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, f"a.db.memory-{os.getpid()}-2.txt"])


def test_malloc_info_reads_glibc_figures() -> None:
    info = memory_debug.malloc_info()
    if not info:
        pytest.skip("no glibc mallinfo2 here")
    assert info["arena"] >= info["uordblks"] > 0
