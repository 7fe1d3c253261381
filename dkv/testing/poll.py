# test-case-name: tests.test_launcher
"""Waiting for state without sleeping blind: poll a predicate until a deadline."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Timeout(AssertionError):
    """A poll ran out of time."""


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.05,
) -> T:
    """Call predicate until it returns something truthy (returned), or raise
    Timeout after ``timeout`` seconds. Exceptions from predicate count as
    "not yet"; the last one is named in the Timeout."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except (OSError, http.client.HTTPException, ValueError) as e:
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise Timeout(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)  # poll
