# test-case-name: tests.auth.test_tokens
"""etcd's ``simple`` tokens: random strings this node remembers.

``Authenticate`` answers a token of 16 random letters and a counter
(``"aBcDeFgHiJkLmNoP.7"``, etcd's shape). A token is valid on the node that
issued it only (as etcd's simple tokens: clients re-authenticate on another
member when it answers ``invalid auth token``, as etcdctl and clientv3 do),
for ``ttl`` seconds after its last use (each use extends it, as etcd's
do). It names its user and the password hash it was issued against, so a
password change or a deleted user ends it (``dkv.auth.node_auth`` checks);
disabling auth forgets every token. The clock is a parameter.
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
    _counter: int = attrs.field(default=0, init=False)

    def issue(self, user: str, password_hash: bytes) -> str:
        """A fresh token for user (who proved the password of password_hash)."""
        now = self.clock.seconds()
        self._sweep(now)
        self._counter += 1
        token = "".join(self.rng.choice(_LETTERS) for _ in range(_LENGTH)) + f".{self._counter}"
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

    def __len__(self) -> int:
        return len(self._entries)

    def _sweep(self, now: float) -> None:
        for token in [t for t, e in self._entries.items() if e.expires <= now]:
            del self._entries[token]
