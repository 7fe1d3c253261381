# test-case-name: tests.auth.test_tokens
"""etcd's ``simple`` tokens: random strings the members remember.

``Authenticate`` answers a token of 16 random letters, a dot and the index
of the log entry that issued it (``"aBcDeFgHiJkLmNoP.7"``, etcd's shape).
The node that verified the password draws the letters (``new_prefix``) and
proposes them; every member ``register``s the token when it applies that
entry (as etcd's members do with theirs), so a client may use it on any
member. A member that has not applied that entry yet waits until it has
before it looks the token up (``issued_at`` gives the index; etcd's members
wait the same way). Tokens live in memory only: a restarted member knows
none of the tokens applied before it stopped and answers ``invalid auth
token``, on which etcdctl and clientv3 re-authenticate -- except, after a
crash, those its db had yet to store the apply of (the last 20 ms or so,
``held_apply``): it applies those entries again, and so re-learns them,
as an etcd member does with the entries after its last backend commit. A token is valid
for ``ttl`` seconds after its last use on each member (each use extends it
there, as etcd's do). It names its user and the password hash it was
issued against, so a password change or a deleted user ends it
(``dkv.auth.node_auth`` checks); disabling auth forgets every token. The
clock is a parameter.
"""

from __future__ import annotations

import random
import string

import attrs
from twisted.internet.interfaces import IReactorTime

#: etcd's default ``--auth-token-ttl``: 300 seconds.
DEFAULT_TTL = 300.0
_LETTERS = string.ascii_letters
_LENGTH = 16


def token_of(prefix: str, index: int) -> str:
    """The token a prefix makes when the entry at index issues it."""
    return f"{prefix}.{index}"


def issued_at(token: str) -> int | None:
    """The index of the entry that issued token (None: not a token's shape)."""
    _, dot, index = token.rpartition(".")
    return int(index) if dot and index.isdigit() and len(index) < 20 else None


@attrs.define
class _Entry:
    user: str
    password_hash: bytes
    expires: float


@attrs.define
class SimpleTokens:
    clock: IReactorTime
    ttl: float = DEFAULT_TTL
    rng: random.Random = attrs.field(factory=random.SystemRandom)
    _entries: dict[str, _Entry] = attrs.field(factory=dict, init=False)

    def new_prefix(self) -> str:
        """The random part of a new token."""
        return "".join(self.rng.choice(_LETTERS) for _ in range(_LENGTH))

    def register(self, token: str, user: str, password_hash: bytes) -> str:
        """Make token (``token_of``) valid for user, who proved the password
        of password_hash; token."""
        now = self.clock.seconds()
        self._sweep(now)
        self._entries[token] = _Entry(user, password_hash, now + self.ttl)
        return token

    def lookup(self, token: str) -> tuple[str, bytes] | None:
        """(user, password hash at issue) of a live token, its life extended
        to ``ttl`` from now; None for an unknown or expired one."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        now = self.clock.seconds()
        if entry.expires <= now:
            del self._entries[token]
            return None
        entry.expires = now + self.ttl
        return entry.user, entry.password_hash

    def revoke(self, token: str) -> None:
        self._entries.pop(token, None)

    def clear(self) -> None:
        self._entries.clear()

    def __contains__(self, token: str) -> bool:
        return token in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def _sweep(self, now: float) -> None:
        for token in [t for t, e in self._entries.items() if e.expires <= now]:
            del self._entries[token]
