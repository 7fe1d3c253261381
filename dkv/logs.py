# test-case-name: tests.test_config
"""Logging through ``twisted.logger`` with one level for the whole node.

dkv's loggers publish through ``observer``, a filter in front of Twisted's
global publisher, so ``--log-level`` applies to dkv's messages under twistd
as well; the ``dkv`` command filters Twisted's own messages the same way.

``--log-format json`` writes one JSON object per line instead of text
(``json_line`` says which fields); ``log_observer`` picks the observer.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogPublisher,
    textFileLogObserver,
)
from twisted.python.failure import Failure
from zope.interface import provider

#: The values of ``--log-format``.
FORMATS = ("text", "json")

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


def log_observer(format: str, stream: IO[str] = sys.stdout) -> ILogObserver:
    """The node's observer for ``--log-format`` (precondition: format in
    FORMATS), filtered by ``--log-level``."""
    if format == "json":
        return FilteringLogObserver(json_observer(stream), [predicate])
    return stream_observer(stream)


def json_observer(stream: IO[str]) -> ILogObserver:
    """Writes every event as ``json_line`` and a newline, flushed."""

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        stream.write(json_line(event) + "\n")
        stream.flush()

    return observe


#: Keys of Twisted's legacy (``twisted.python.log``) events that are not the
#: event's own fields.
_LEGACY_KEYS = frozenset({"message", "format", "system", "isError", "time", "why", "failure", "printed", "logLevel"})


def json_line(event: dict[str, Any]) -> str:
    """One event as one line of JSON (never a newline inside):

    - ``time``: RFC 3339, UTC, microseconds (``2024-05-01T12:00:00.123456Z``);
    - ``level``: debug, info, warn, error or critical;
    - ``logger``: the namespace (``dkv.replication``; Twisted's own modules
      by their names; ``log_legacy`` for old-style messages);
    - ``message``: the formatted message, as the text format prints it;
    - the event's own fields whose values are strings, numbers, booleans or
      null (``log.info("... {peer}", peer=p)`` gives ``"peer": p``; others
      are left out: the message carries them);
    - ``exception``, ``exception_type`` and ``traceback`` when the event
      carries a failure: the whole traceback is one string field, never
      lines of its own.
    """
    when = event.get("log_time")
    if not isinstance(when, (int, float)):
        when = datetime.now(UTC).timestamp()
    level = event.get("log_level")
    failure = event.get("log_failure")
    legacy_failure = event.get("failure") if event.get("isError") else None
    if failure is None and isinstance(legacy_failure, Failure):
        failure = legacy_failure
        message = str(event.get("why") or "Unhandled error")
    else:
        message = formatEvent(event)
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "level": getattr(level, "name", "info"),
        "logger": str(event.get("log_namespace", "")),
        "message": message,
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _LEGACY_KEYS or key in record:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            record[key] = str(value)  # JSON has no NaN or Infinity
        elif value is None or isinstance(value, (str, int, float, bool)):
            record[key] = value
    system = event.get("log_system")
    if isinstance(system, str) and system not in ("-", ""):
        record.setdefault("system", system)
    if isinstance(failure, Failure):
        record["exception"] = failure.getErrorMessage()
        record["exception_type"] = failure.type.__name__ if isinstance(failure.type, type) else str(failure.type)
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, ensure_ascii=False)
