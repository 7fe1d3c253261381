"""The keep-alive loop on a fake clock: renewals every ttl/3, the lease lost
when the server says it is gone or when no renewal got through for a TTL."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task

from dkv.client import KeepAlive, NotFound, SessionExpired, Unreachable


class FakeClient:
    """Answers keep-alives from a script: an int TTL or an exception."""

    def __init__(self, clock: task.Clock, answers: list[Any]) -> None:
        self.transport = type("T", (), {"clock": clock})()
        self.answers = answers
        self.calls: list[tuple[float, int]] = []

    def keep_alive_once(self, lease_id: int, timeout: float | None = None) -> defer.Deferred[int]:
        self.calls.append((self.transport.clock.seconds(), lease_id))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return defer.fail(answer) if isinstance(answer, Exception) else defer.succeed(answer)


def test_renews_every_third_of_the_ttl_until_stopped() -> None:
    clock = task.Clock()
    client = FakeClient(clock, [9])
    loop = KeepAlive(client, 0xABC, 9).start()  # type: ignore[arg-type]
    clock.pump([1.0] * 10)
    assert [t for t, _ in client.calls] == [0.0, 3.0, 6.0, 9.0]
    assert loop.renewals == 4 and loop.expires_at == 18.0 and not loop.lost.called
    loop.stop()
    clock.pump([3.0] * 3)
    assert len(client.calls) == 4 and not loop.running


def test_the_lease_is_lost_when_the_server_no_longer_knows_it() -> None:
    clock = task.Clock()
    client = FakeClient(clock, [6, NotFound("etcdserver: requested lease not found", 5)])
    loop = KeepAlive(client, 1, 6).start()  # type: ignore[arg-type]
    clock.advance(2)
    assert isinstance(loop.lost.result, NotFound) and not loop.running


def test_failed_renewals_are_retried_until_the_ttl_runs_out() -> None:
    clock = task.Clock()
    client = FakeClient(clock, [6, Unreachable("down")])
    loop = KeepAlive(client, 1, 6).start()  # type: ignore[arg-type]
    clock.pump([2.0, 2.0])  # renewed at 0, failed at 2 and 4
    assert not loop.lost.called and loop.running
    clock.pump([2.0])  # at 6 the lease renewed at 0 has run out
    assert isinstance(loop.lost.result, SessionExpired) and not loop.running
    assert [t for t, _ in client.calls] == [0.0, 2.0, 4.0, 6.0]
