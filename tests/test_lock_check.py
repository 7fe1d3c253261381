"""The lock check (``dkv.testing.lock_check``) on hand-made histories."""

from __future__ import annotations

from pathlib import Path

from dkv.testing.lock_check import Attempt, Hold, check_holds, read_attempts, write_attempts


def hold(
    client: int, acquired: float, ended: float, renewals: list[float], ttl: float = 2.0, end: str = "released"
) -> Hold:
    return Hold(
        client=client, key=f"k{client}", lease=client + 1, ttl=ttl, acquired=acquired, ended=ended,
        end=end, renewals=renewals,  # type: ignore[arg-type]
    )  # fmt: skip


def attempt(h: Hold) -> Attempt:
    return Attempt(
        client=h.client, started=h.renewals[0], finished=h.ended, contended=False, outcome="acquired", hold=h
    )


def test_overlapping_safe_intervals_are_a_violation() -> None:
    a = hold(0, acquired=1.0, ended=3.0, renewals=[0.5, 1.0, 1.5, 2.0, 2.5])
    b = hold(1, acquired=2.5, ended=4.0, renewals=[1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
    verdict = check_holds([attempt(a), attempt(b)])
    assert not verdict.ok
    assert verdict.violations == [(a, b)]
    assert "client 0" in verdict.explain() and "client 1" in verdict.explain()


def test_a_holder_whose_lease_lapsed_does_not_overlap_a_later_holder() -> None:
    # Renewals stop at 1.0: the lease may have expired at 3.0, though the
    # holder only noticed at 3.5; the next holder acquired at 3.2.
    a = hold(0, acquired=0.5, ended=3.5, renewals=[0.0, 0.5, 1.0], end="lease-lost")
    assert a.lease_bound == 3.0
    b = hold(1, acquired=3.2, ended=4.0, renewals=[2.0, 2.5, 3.0, 3.5])
    verdict = check_holds([attempt(a), attempt(b)])
    assert verdict.ok
    assert verdict.figures["holds_ended_by_lease_loss"] == 1
    assert verdict.figures["holds_whose_lease_may_have_lapsed"] == 1
    assert verdict.figures["acquisitions"] == 2


def test_a_gap_in_renewals_bounds_the_lease_at_the_first_gap() -> None:
    # 0.0 -> alive till 2.0; 2.5 was sent after that: the lease may have
    # expired at 2.0 although later renewals were answered.
    a = hold(0, acquired=0.1, ended=5.0, renewals=[0.0, 2.5, 3.0])
    assert a.lease_bound == 2.0 and a.safe_until == 2.0


def test_a_hold_acquired_after_its_lease_may_have_lapsed_is_never_safe() -> None:
    a = hold(0, acquired=3.0, ended=3.5, renewals=[0.0])
    b = hold(1, acquired=3.1, ended=3.4, renewals=[3.0])
    verdict = check_holds([attempt(a), attempt(b)])
    assert not a.safe and verdict.ok
    assert verdict.figures["holds_acquired_after_a_possible_lapse"] == 1


def test_back_to_back_holds_pass_and_round_trip_through_a_file(tmp_path: Path) -> None:
    a = hold(0, acquired=1.0, ended=2.0, renewals=[0.5, 1.0, 1.5])
    b = hold(1, acquired=2.0, ended=2.5, renewals=[1.0, 1.5, 2.0])
    attempts = [attempt(a), attempt(b), Attempt(client=2, started=0.0, finished=1.0, contended=True, outcome="error")]
    verdict = check_holds(attempts)
    assert verdict.ok and verdict.figures["contended_attempts"] == 1
    write_attempts(tmp_path / "locks.jsonl", attempts)
    assert read_attempts(tmp_path / "locks.jsonl") == attempts
