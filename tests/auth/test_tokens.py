"""etcd's simple tokens on a fake clock."""

from __future__ import annotations

import random
import re

from twisted.internet.task import Clock

from dkv.auth.tokens import SimpleTokens, issued_at, token_of


def tokens(ttl: float = 300.0) -> tuple[SimpleTokens, Clock]:
    clock = Clock()
    return SimpleTokens(clock, ttl, random.Random(7)), clock


def issue(t: SimpleTokens, user: str, password_hash: bytes, index: int = 1) -> str:
    return t.register(token_of(t.new_prefix(), index), user, password_hash)


def test_a_token_names_its_user_and_has_etcds_shape() -> None:
    t, _ = tokens()
    token = t.register(token_of(t.new_prefix(), 12), "alice", b"hash")
    assert re.fullmatch(r"[A-Za-z]{16}\.12", token)
    assert issued_at(token) == 12
    assert t.lookup(token) == ("alice", b"hash")
    assert t.lookup("nope.1") is None
    assert issue(t, "bob", b"h2") != token
    assert [issued_at(x) for x in ("abc", "abc.", "abc.x1", "a.b.3", "x." + "9" * 30)] == [None, None, None, 3, None]


def test_a_token_expires_ttl_after_its_last_use() -> None:
    t, clock = tokens(ttl=10)
    token = issue(t, "alice", b"hash")
    clock.advance(9)
    assert t.lookup(token) is not None  # the use extends it to t=19
    clock.advance(9)
    assert t.lookup(token) is not None  # t=18; now to t=28
    clock.advance(10)
    assert t.lookup(token) is None
    assert len(t) == 0


def test_issuing_sweeps_expired_tokens_and_clear_forgets_all() -> None:
    t, clock = tokens(ttl=5)
    issue(t, "a", b"")
    clock.advance(6)
    kept = issue(t, "b", b"")
    assert len(t) == 1
    t.revoke(kept)
    assert t.lookup(kept) is None
    issue(t, "c", b"")
    t.clear()
    assert len(t) == 0
