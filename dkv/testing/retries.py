# test-case-name: tests.test_fault_retries
"""Retrying writes whose outcome is unknown, with their idempotency key.

Every write of the fault workload carries a fresh ``Idempotency-Key`` (the
same on each retry of that write). When an attempt ends ``unknown`` (504 /
etcd's ``request timed out``, a connection lost or timed out after the
request was sent), the client sends the same request with the same key again,
to another node, up to ``write_attempts`` attempts in all and only while the
write's deadline has not passed. dkv answers a retry with the outcome the
write was first applied with (same revision) and applies nothing twice, so a
retry turns an unknown outcome into a known one.

What a retry's answer means for the write (``retried``), given that an
earlier attempt may already have been applied:

``ok``
    the write took effect once (now, or earlier: the answer is the original
    one).
``fail``
    only a refusal of the request itself (a 4xx other than 408, 422 and
    429): the node refused it, or remembers that it was applied as an error
    and changed nothing.
``unknown``
    anything else, including what on a first attempt means "certainly not
    applied" (nothing sent, 503 ``no leader``): *this* attempt took no
    effect, but an earlier one still may have.

The history records the write once: invoked when the first attempt was sent,
completed when the last answer came, with the last attempt's outcome.
``RetryCounts`` sums up what the retries achieved.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from dkv.testing.gateway import Answer

__all__ = ["RetryCounts", "retried"]

#: 4xx answers to a retry that say nothing about an earlier attempt: the
#: request did not arrive in time (408), the key was met with another
#: request (422: a harness bug, never a proof of "not applied"), too many
#: requests (429).
_NOT_A_REFUSAL = frozenset({408, 422, 429})


def retried(answer: Answer, status: int | str) -> Answer:
    """The write's outcome after a retry answered ``answer`` (classified by
    the first-attempt rules) with HTTP ``status`` (or the harness's marker
    for "nothing sent" / "answer lost"), by the rules of the module
    docstring."""
    if answer.outcome != "fail":
        return answer
    if isinstance(status, int) and 400 <= status < 500 and status not in _NOT_A_REFUSAL:
        return answer
    note = "retry not applied, an earlier attempt may have been"
    return attrs.evolve(answer, outcome="unknown", detail=f"{answer.detail} ({note})".strip())


@attrs.frozen(kw_only=True)
class RetryCounts:
    """What the retries did, over the writes (and cas) of one run.

    ``unknown_first``: writes whose first attempt ended unknown; of those,
    ``retried_ok`` and ``retried_fail`` became known by retrying and
    ``still_unknown`` stayed unknown (attempts or deadline exhausted), so
    ``retried_known + still_unknown == unknown_first``. ``attempts`` maps a
    number of attempts to how many writes took that many."""

    writes: int = 0
    unknown_first: int = 0
    retried_ok: int = 0
    retried_fail: int = 0
    still_unknown: int = 0
    attempts: dict[int, int] = attrs.field(factory=dict)

    @property
    def retried_known(self) -> int:
        return self.retried_ok + self.retried_fail

    @classmethod
    def of(cls, writes: Iterable[tuple[bool, str, int]]) -> RetryCounts:
        """From (unknown at the first attempt, final outcome, attempts) of
        every write."""
        n = unknown_first = ok = fail = unknown = 0
        attempts: dict[int, int] = {}
        for first_unknown, outcome, tries in writes:
            n += 1
            attempts[tries] = attempts.get(tries, 0) + 1
            if not first_unknown:
                continue
            unknown_first += 1
            if outcome == "ok":
                ok += 1
            elif outcome == "fail":
                fail += 1
            else:
                unknown += 1
        return cls(
            writes=n,
            unknown_first=unknown_first,
            retried_ok=ok,
            retried_fail=fail,
            still_unknown=unknown,
            attempts=dict(sorted(attempts.items())),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "writes": self.writes,
            "unknown_first": self.unknown_first,
            "retried_known": self.retried_known,
            "retried_ok": self.retried_ok,
            "retried_fail": self.retried_fail,
            "still_unknown": self.still_unknown,
            "attempts": {str(k): v for k, v in self.attempts.items()},
        }

    def render(self) -> str:
        """One line for people."""
        tries = ", ".join(f"{k}: {v}" for k, v in self.attempts.items())
        return (
            f"write retries: {self.unknown_first} of {self.writes} writes unknown at the first attempt; "
            f"retries made {self.retried_known} known ({self.retried_ok} ok, {self.retried_fail} fail), "
            f"{self.still_unknown} still unknown (writes by attempts: {tries or 'none'})"
        )
