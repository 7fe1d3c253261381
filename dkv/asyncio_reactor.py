# test-case-name: tests.test_config,tests.test_process
"""dkv runs on Twisted's asyncio reactor: gRPC's asyncio API and Twisted share
one event loop. The reactor must be installed before anything imports
``twisted.internet.reactor`` (Klein does, when it is imported)."""

from __future__ import annotations

import sys

from twisted.internet import asyncioreactor


class WrongReactor(Exception):
    """Another reactor is installed; the message says how to fix it."""


def install() -> None:
    """Install the asyncio reactor unless a reactor is installed already (a
    new loop, also set as asyncio's current loop)."""
    if "twisted.internet.reactor" not in sys.modules:
        asyncioreactor.install()


def require() -> None:
    """Install the asyncio reactor if none is, and refuse any other."""
    install()
    from twisted.internet import reactor  # installed above, or by the caller

    if not isinstance(reactor, asyncioreactor.AsyncioSelectorReactor):
        raise WrongReactor(
            f"dkv needs Twisted's asyncio reactor, but {type(reactor).__name__} is installed: "
            "run twistd without -r, or with -r asyncio"
        )
