# test-case-name: tests.test_faults,tests.test_lock_faults
"""The one timeline of a fault run, shared by ``dkv.testing.torture`` and
``dkv.testing.lock_torture`` (and the soak): start the workload, let it warm
up, run the nemesis until the healed tail, heal everything, run the tail,
stop the workload. (A module of its own: ``torture`` dispatches to
``lock_torture``, so the lock run cannot import it back.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from dkv.testing.nemesis import Nemesis

__all__ = ["Schedule", "Startable", "run_schedule"]


class Startable(Protocol):
    """A workload: ``stop`` raises RuntimeError for a client that broke."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Schedule(Protocol):
    """The timings of a run (``TortureConfig`` has them), in seconds."""

    @property
    def time(self) -> float: ...

    @property
    def tail(self) -> float: ...

    @property
    def warmup(self) -> float: ...


def run_schedule(
    workload: Startable,
    nemesis: Nemesis,
    cfg: Schedule,
    errors: list[str],
    progress: Callable[[str], None] = lambda s: None,
) -> float | None:
    """Run workload for ``cfg.time`` seconds from now: faults from
    ``cfg.warmup`` until ``cfg.tail`` seconds before the end, then a final
    heal. What goes wrong (the nemesis or a client broke, a node would not
    come back) is appended to errors. The ``time.monotonic()`` of the final
    heal; None if the run never got there. The workload is stopped however
    this ends."""
    heal_time: float | None = None
    t0 = time.monotonic()
    workload.start()
    try:
        time.sleep(cfg.warmup)  # schedule
        nemesis.start()
        time.sleep(max(0.0, t0 + cfg.time - cfg.tail - time.monotonic()))  # schedule
        try:
            nemesis.stop()
        except RuntimeError as e:
            errors.append(str(e))
        try:
            nemesis.heal_all()
        except Exception as e:  # noqa: BLE001 - a node that will not come back is a finding
            errors.append(f"final heal failed: {e}")
        heal_time = time.monotonic()
        progress(f"healed after {nemesis.injected} faults; healed tail of {cfg.tail:g}s")
        time.sleep(cfg.tail)  # schedule
    finally:
        try:
            workload.stop()
        except RuntimeError as e:
            errors.append(str(e))
    return heal_time
