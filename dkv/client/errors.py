# test-case-name: tests.client.test_client_http
"""What ``dkv.client`` raises: one base class carrying etcd's gRPC code and
message (and the HTTP status it came with), and a subclass for each case a
caller handles differently.

- ``NoLeader``: the cluster has no leader right now (HTTP 503, code 14);
  nothing was applied, retrying is safe. The client already retried on
  every endpoint until its deadline.
- ``OutcomeUnknown``: a write was sent but no answer came (a timeout, a
  connection cut after sending, HTTP 504) and it could not be retried with
  its idempotency key before the deadline: it may or may not have been
  applied.
- ``Unreachable``: no endpoint could be connected to; nothing was sent.
- ``Compacted``: the revision asked for (a read's or a watch's start) has
  been compacted away; ``compact_revision`` is the oldest one left when
  the server says so.
- ``NotFound``: no such lease (or key, member, path) (HTTP 404, code 5).
"""

from __future__ import annotations

#: gRPC codes (etcd's).
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
OUT_OF_RANGE = 11
UNAVAILABLE = 14


class DkvClientError(Exception):
    """A request failed; ``code`` is etcd's gRPC code (None when the server
    did not give one), ``status`` the HTTP status (None when no answer)."""

    def __init__(self, message: str, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


class NoLeader(DkvClientError):
    """No leader: certainly not applied, safe to retry later."""


class OutcomeUnknown(DkvClientError):
    """A write whose fate is unknown: it may have been applied."""


class Unreachable(DkvClientError):
    """No endpoint could be connected to: nothing was sent."""


class NotFound(DkvClientError):
    """No such lease, key or path."""


class Compacted(DkvClientError):
    """The revision asked for has been compacted."""

    def __init__(
        self, message: str, compact_revision: int = 0, code: int | None = OUT_OF_RANGE, status: int | None = None
    ) -> None:
        super().__init__(message, code, status)
        self.compact_revision = compact_revision


class WatchClosed(DkvClientError):
    """The watch was closed by its owner: no more events."""


class SessionExpired(DkvClientError):
    """A recipe's session lease (and with it the lock or candidacy) is gone."""


class NotLeader(DkvClientError):
    """Election: this candidate is not (or no longer) the leader."""


class NoElectionLeader(DkvClientError):
    """Election: nobody leads it right now."""


def from_answer(status: int, answer: object) -> DkvClientError:
    """The error an HTTP answer other than 200 means: etcd's gateway body is
    ``{"error": M, "message": M, "code": C}``; anything else keeps its text."""
    code: int | None = None
    message = f"HTTP {status}"
    if isinstance(answer, dict):
        raw_code = answer.get("code")
        code = raw_code if isinstance(raw_code, int) else None
        text = answer.get("message") or answer.get("error")
        if isinstance(text, str) and text:
            message = text
    elif isinstance(answer, str) and answer.strip():
        message = answer.strip()
    if code == UNAVAILABLE or status == 503:
        return NoLeader(message, code, status)
    if code == DEADLINE_EXCEEDED or status == 504:
        return OutcomeUnknown(message, code, status)
    if code == OUT_OF_RANGE and "compacted" in message:
        return Compacted(message, code=code, status=status)
    if code == NOT_FOUND or status == 404:
        return NotFound(message, code, status)
    return DkvClientError(message, code, status)
