# test-case-name: tests.test_rest
"""base64 as grpc-gateway (protobuf's JSON mapping) reads and writes bytes:
standard or URL-safe alphabet, with or without padding, accepted; standard
with padding written."""

from __future__ import annotations

import base64
import binascii
import re

from dkv.errors import InvalidArgument

_VALID = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")


def standard(text: str) -> bytes | None:
    """The bytes text spells in the common spelling (standard alphabet,
    padded), in one C call; None if it is spelled otherwise or is not
    base64 (the caller's general path decides)."""
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def decode(text: str, what: str) -> bytes:
    """The bytes text spells; raises InvalidArgument naming what."""
    if isinstance(text, str):
        data = standard(text)
        if data is not None:
            return data
    return _decode_any(text, what)


def _decode_any(text: str, what: str) -> bytes:
    """decode, for either alphabet, with or without padding."""
    if not isinstance(text, str):
        raise InvalidArgument(f"{what} must be a base64 string")
    if not _VALID.match(text):
        raise InvalidArgument(f"{what} is not valid base64")
    std = text.rstrip("=").replace("-", "+").replace("_", "/")
    if len(std) % 4 == 1:
        raise InvalidArgument(f"{what} is not valid base64")
    try:
        return base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{what} is not valid base64") from None


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_bytes(data: bytes) -> bytes:
    """``encode``, as ASCII bytes."""
    return binascii.b2a_base64(data, newline=False)
