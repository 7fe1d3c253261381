"""A real headless Chromium for page tests, driven by playwright.

Debian's ``chromium`` (``/usr/bin/chromium``; ``.ci/run`` installs it) is
launched through ``executable_path``: playwright never downloads a browser,
so ``playwright install`` is not needed. The profile is a fresh directory
the caller gives (the test's temporary directory).

Playwright's sync API refuses to run on a thread whose asyncio loop runs,
and the tests' Twisted reactor runs one (pytest-twisted, asyncio reactor).
So the browser lives on a thread of its own, and every call goes through
``Browser.run``, which waits for its result (or raises its exception).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Flags that keep a headless Chromium quiet and offline here (no sandbox:
#: CI runs as root).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> str | None:
    """The Chromium binary to drive, or None if this machine has none."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with one page (``width`` x ``height`` CSS pixels).

    ``run(fn)`` calls ``fn(page)`` (a playwright sync ``Page``) on the
    browser's thread. Use as a context manager: leaving it closes the browser
    and its thread."""

    def __init__(self, executable: str, profile: Path, width: int = 1280, height: int = 900) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="chromium")
        self._playwright: Any = None
        self._context: Any = None
        self.page: Any = None
        try:
            self._pool.submit(self._open, executable, profile, width, height).result()
        except BaseException:
            self.close()
            raise

    def _open(self, executable: str, profile: Path, width: int, height: int) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._context = self._playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport={"width": width, "height": height},
        )
        self.page = self._context.pages[0] if self._context.pages else self._context.new_page()

    def run(self, fn: Callable[[Any], T]) -> T:
        return self._pool.submit(fn, self.page).result()

    def close(self) -> None:
        def shut() -> None:
            if self._context is not None:
                self._context.close()
            if self._playwright is not None:
                self._playwright.stop()

        try:
            self._pool.submit(shut).result()
        finally:
            self._pool.shutdown()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
