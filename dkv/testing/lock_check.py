# test-case-name: tests.test_lock_check
"""The lock workload's history, and its check: no two holders overlap.

A holder of a lease-bound lock (etcd's recipe: a key under the lock's
prefix, attached to the holder's lease, the lowest create revision holds)
is only safe while its lease lives, as etcd's own Jepsen analysis says: the
server deletes the key when the lease expires and the next waiter acquires,
whatever the old holder believes. So each ``Hold`` records, on the
workload's clock (``time.monotonic()``):

``acquired``    when the answer that showed the holder's key lowest arrived
                (the holder knows it holds from then on);
``renewals``    the send times of the grant and of every keep-alive request
                whose answer said the lease lives (TTL > 0), in order;
``ended``       when the holder stopped holding: the release's invocation
                (before its delete and revoke are sent), or when the holder
                saw that its lease might have lapsed;
``ttl``         the lease's TTL in seconds, as granted.

A request sent at ``s`` and answered "alive" was renewed by the leader at
or after ``s``, so the lease lives at least until ``s + ttl``; a lease can
only have expired at ``r + ttl`` for a renewal ``r`` not followed by
another renewal sent before ``r + ttl``. The earliest such moment after
``acquired`` is ``lease_bound``, and the holder's SAFE interval is
``[acquired, min(ended, lease_bound))``. The check: no two holds' safe
intervals overlap. A holder whose lease may have lapsed while it believed
it held is only counted until the lapse, so a successor that acquired after
the expiry is no violation.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

__all__ = ["Attempt", "Hold", "LockVerdict", "check_holds", "read_attempts", "write_attempts"]

#: How a hold ended: released by its holder, its lease maybe lapsed (the
#: holder noticed), or the run stopped while it held.
HoldEnd = Literal["released", "lease-lost", "stopped"]

#: How an attempt to acquire ended: it acquired (then ``hold`` is set); its
#: lease lapsed or its key vanished while it waited; a request failed and it
#: gave up (it starts again with a new lease); the run stopped.
AttemptOutcome = Literal["acquired", "lease-lost", "error", "stopped"]


def _floats(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@attrs.frozen(kw_only=True)
class Hold:
    """One holder's tenure (see the module docstring)."""

    client: int
    key: str
    lease: int
    ttl: float
    acquired: float
    ended: float
    end: HoldEnd
    renewals: tuple[float, ...] = attrs.field(converter=_floats)

    @property
    def lease_bound(self) -> float:
        """The earliest moment at which the lease may have expired on the
        server: ``r + ttl`` for the first renewal ``r`` not followed by
        another sent before then (-inf without renewals). Before
        ``acquired`` it makes the hold unsafe from the start."""
        bound = float("-inf")
        for sent in sorted(self.renewals):
            if bound != float("-inf") and sent >= bound:
                break  # a gap: the lease may have expired at ``bound``
            bound = max(bound, sent + self.ttl)
        return bound

    @property
    def safe_until(self) -> float:
        return min(self.ended, self.lease_bound)

    @property
    def safe(self) -> bool:
        """Whether the safe interval is not empty."""
        return self.safe_until > self.acquired

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self) | {"renewals": list(self.renewals)}


@attrs.frozen(kw_only=True)
class Attempt:
    """One try to acquire: ``started`` (lease grant sent), ``finished``,
    whether it found the lock ``contended`` (another key lowest at its first
    look), ``outcome``, and the ``hold`` if it acquired."""

    client: int
    started: float
    finished: float
    contended: bool
    outcome: AttemptOutcome
    detail: str = ""
    hold: Hold | None = None

    def to_json(self) -> dict[str, Any]:
        out = attrs.asdict(self, recurse=False)
        out["hold"] = None if self.hold is None else self.hold.to_json()
        return out


def attempt_from_json(data: dict[str, Any]) -> Attempt:
    hold = data.get("hold")
    return Attempt(**{**data, "hold": None if hold is None else Hold(**hold)})


def write_attempts(path: Path, attempts: Sequence[Attempt]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for a in attempts:
            f.write(json.dumps(a.to_json(), separators=(",", ":")) + "\n")


def read_attempts(path: Path) -> list[Attempt]:
    return [attempt_from_json(json.loads(line)) for line in path.read_text().splitlines() if line]


@attrs.frozen(kw_only=True)
class LockVerdict:
    """The check's finding: ``violations`` (pairs of overlapping holds, the
    first acquired first) and the figures of the run."""

    violations: list[tuple[Hold, Hold]]
    figures: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.violations

    def explain(self) -> str:
        lines = []
        for a, b in self.violations[:10]:
            lines.append(
                f"client {a.client} held {a.key} (lease {a.lease:x}) safely from {a.acquired:.3f} to "
                f"{a.safe_until:.3f} ({a.end}), but client {b.client} acquired {b.key} (lease {b.lease:x}) "
                f"at {b.acquired:.3f}, {a.safe_until - b.acquired:.3f}s before"
            )
        if len(self.violations) > 10:
            lines.append(f"... and {len(self.violations) - 10} more")
        return "\n".join(lines)


def check_holds(attempts: Sequence[Attempt]) -> LockVerdict:
    """Check that no two holds' safe intervals overlap; count what happened."""
    holds = sorted((a.hold for a in attempts if a.hold is not None), key=lambda h: h.acquired)
    safe = [h for h in holds if h.safe]
    violations: list[tuple[Hold, Hold]] = []
    for i, a in enumerate(safe):
        for b in safe[i + 1 :]:
            if b.acquired >= a.safe_until:
                continue
            violations.append((a, b))
    ends = Counter(h.end for h in holds)
    lapsed = sum(1 for h in holds if h.lease_bound < h.ended)
    outcomes = Counter(a.outcome for a in attempts)
    figures = {
        "attempts": len(attempts),
        "acquisitions": len(holds),
        "contended_attempts": sum(1 for a in attempts if a.contended),
        "attempts_by_outcome": dict(sorted(outcomes.items())),
        "holds_by_end": dict(sorted(ends.items())),
        "holds_ended_by_lease_loss": ends.get("lease-lost", 0),
        "holds_whose_lease_may_have_lapsed": lapsed,
        "holds_acquired_after_a_possible_lapse": len(holds) - len(safe),
        "safe_seconds_held": round(sum(h.safe_until - h.acquired for h in safe), 3),
        "violations": len(violations),
    }
    return LockVerdict(violations=violations, figures=figures)
