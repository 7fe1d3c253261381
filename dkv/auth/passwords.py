# test-case-name: tests.auth.test_passwords
"""Password hashes: salted ``hashlib.scrypt``, as one self-describing string.

    scrypt$<n>$<r>$<p>$<salt, base64>$<hash, base64>

The node that receives a UserAdd or UserChangePassword hashes the password
before proposing the write (``dkv.auth.node_auth``), so the plaintext never
enters the log and replicas never repeat the work; Authenticate verifies on
the node that serves it. Neither function logs anything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

#: scrypt's cost parameters (RFC 7914's interactive-login choice: ~16 MiB, tens of ms).
N, R, P = 1 << 14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
_SCHEME = "scrypt"


def hash_password(password: str, *, salt: bytes | None = None, n: int = N, r: int = R, p: int = P) -> str:
    """The stored form of password, with a fresh random salt unless one is given."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = _scrypt(password, salt, n, r, p)
    return "$".join((_SCHEME, str(n), str(r), str(p), _b64(salt), _b64(digest)))


def verify_password(password: str, stored: str) -> bool:
    """Whether password hashes to stored (constant-time compare). A stored
    string that is not ours (empty: a user without a password) never
    matches."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, expected = base64.b64decode(parts[4]), base64.b64decode(parts[5])
        digest = _scrypt(password, salt, n, r, p, len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


def is_hash(stored: str) -> bool:
    """Whether stored has the form ``hash_password`` makes."""
    parts = stored.split("$")
    return len(parts) == 6 and parts[0] == _SCHEME


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int = HASH_BYTES) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + (1 << 20), dklen=length
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
