"""etcd's simple tokens on a fake clock."""

from __future__ import annotations

import random
import re

from twisted.internet.task import Clock

from dkv.auth.tokens import SimpleTokens


def tokens(ttl: float = 300.0) -> tuple[SimpleTokens, Clock]:
    clock = Clock()
    return SimpleTokens(clock, ttl, random.Random(7)), clock


def test_a_token_names_its_user_and_has_etcds_shape() -> None:
    t, _ = tokens()
    token = t.issue("alice", b"hash")
    assert re.fullmatch(r"[A-Za-z]{16}\.1", token)
    assert t.lookup(token) == ("alice", b"hash")
    assert t.lookup("nope.1") is None
    assert t.issue("bob", b"h2") != token


def test_a_token_expires_ttl_after_its_last_use() -> None:
    t, clock = tokens(ttl=10)
    token = t.issue("alice", b"hash")
    clock.advance(9)
    assert t.lookup(token) is not None  # the use extends it to t=19
    clock.advance(9)
    assert t.lookup(token) is not None  # t=18; now to t=28
    clock.advance(10)
    assert t.lookup(token) is None
    assert len(t) == 0


def test_issuing_sweeps_expired_tokens_and_clear_forgets_all() -> None:
    t, clock = tokens(ttl=5)
    t.issue("a", b"")
    clock.advance(6)
    kept = t.issue("b", b"")
    assert len(t) == 1
    t.revoke(kept)
    assert t.lookup(kept) is None
    t.issue("c", b"")
    t.clear()
    assert len(t) == 0
