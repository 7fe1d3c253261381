# test-case-name: tests.test_config
"""Logging through ``twisted.logger`` with one level for the whole node.

dkv's loggers publish through ``observer``, a filter in front of Twisted's
global publisher, so ``--log-level`` applies to dkv's messages under twistd
as well; the ``dkv`` command filters Twisted's own messages the same way.
"""

from __future__ import annotations

import sys
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    textFileLogObserver,
)

LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}

predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
observer = FilteringLogObserver(globalLogPublisher, [predicate])


def logger(namespace: str) -> Logger:
    return Logger(namespace=namespace, observer=observer)


def set_level(name: str) -> None:
    """Set the level for every message (precondition: name in LEVELS)."""
    predicate.setLogLevelForNamespace("", LEVELS[name.lower()])


def stream_observer(stream: IO[str] = sys.stdout) -> ILogObserver:
    return FilteringLogObserver(textFileLogObserver(stream), [predicate])
