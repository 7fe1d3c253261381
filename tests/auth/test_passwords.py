"""Password hashes: salted scrypt, verified in constant time."""

from __future__ import annotations

from dkv.auth.passwords import hash_password, is_hash, verify_password

FAST = {"n": 1 << 10}  # the cost parameter travels in the string: tests may pick a cheap one


def test_a_hash_verifies_its_password_and_no_other() -> None:
    stored = hash_password("s3cret", **FAST)
    assert verify_password("s3cret", stored)
    assert not verify_password("s3cret ", stored)
    assert not verify_password("", stored)


def test_the_stored_form_names_scrypt_its_costs_and_never_holds_the_password() -> None:
    stored = hash_password("hunter2")  # the default costs
    assert stored.startswith("scrypt$16384$8$1$")
    assert is_hash(stored)
    assert "hunter2" not in stored
    assert verify_password("hunter2", stored)


def test_each_hash_has_its_own_salt() -> None:
    assert hash_password("same", **FAST) != hash_password("same", **FAST)
    salt = b"0123456789abcdef"
    assert hash_password("same", salt=salt, **FAST) == hash_password("same", salt=salt, **FAST)


def test_a_stored_string_that_is_not_a_hash_never_matches() -> None:
    for stored in ("", "plain", "scrypt$x$8$1$AA==$AA==", "bcrypt$1$2$3$4$5", "scrypt$1024$8$1$!!$!!"):
        assert not verify_password("plain", stored)
        assert not verify_password("", stored)
