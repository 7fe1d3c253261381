"""Unit tests for dkv.api.b64: base64 as grpc-gateway reads and writes bytes."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dkv.api import b64
from dkv.errors import InvalidArgument

# Bytes whose encodings use every awkward character: "+", "/", "-", "_" and padding.
SAMPLES = [
    b"\x00",
    b"A",
    b"AB",
    b"ABC",
    b"\xfb\xef\xbe",  # "++++" / "----"
    b"\xff\xff\xff",  # "////" / "____"
    b"\xfb\xff\xbf\xff",  # "+/+/_w==" ...
    b"hello, world",
    bytes(range(256)),
]


def _variants(data: bytes) -> list[str]:
    """Every spelling of data that decode() must accept."""
    std = base64.b64encode(data).decode()
    url = base64.urlsafe_b64encode(data).decode()
    return sorted({std, std.rstrip("="), url, url.rstrip("=")})


@pytest.mark.parametrize("data", SAMPLES, ids=repr)
def test_decode_accepts_both_alphabets_with_and_without_padding(data: bytes) -> None:
    for text in _variants(data):
        assert b64.decode(text, "key") == data, text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", b""),
        ("QQ", b"A"),
        ("QQ==", b"A"),
        ("QUI", b"AB"),
        ("QUI=", b"AB"),
        ("QUJD", b"ABC"),
        ("++++", b"\xfb\xef\xbe"),
        ("----", b"\xfb\xef\xbe"),
        ("////", b"\xff\xff\xff"),
        ("____", b"\xff\xff\xff"),
        ("+/-_", base64.b64decode("+/+/")),  # alphabets mixed
    ],
)
def test_decode_known_values(text: str, expected: bytes) -> None:
    assert b64.decode(text, "key") == expected


@pytest.mark.parametrize(
    "text",
    [
        "Q",  # one character cannot encode anything
        "QUJDR",  # 5 characters: length % 4 == 1
        "QQ===",  # too much padding
        "Q===",
        "====",
        "QQ==QQ==",  # padding in the middle
        "Q=Q=",
        "QQ ==",  # whitespace
        " QQ==",
        "QQ==\n",
        "QUJD\n",
        "QU\nJD",
        "QUJD\t",
        "QUJ*",  # not in either alphabet
        "QUJ.",
        "QUJ%",
        "QU JD",
        "é",
        "QUJD\x00",
    ],
)
def test_decode_rejects_garbage(text: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        b64.decode(text, "key")
    assert e.value.message == "key is not valid base64"
    assert (e.value.http_status, e.value.grpc_code) == (400, 3)


def test_decode_names_the_field_in_its_error() -> None:
    with pytest.raises(InvalidArgument, match="^value is not valid base64$"):
        b64.decode("!", "value")


@pytest.mark.parametrize("text", [None, 1, 1.5, True, b"QQ==", ["QQ=="], {"k": "QQ=="}])
def test_decode_rejects_non_str(text: object) -> None:
    with pytest.raises(InvalidArgument) as e:
        b64.decode(text, "value")  # type: ignore[arg-type]
    assert e.value.message == "value must be a base64 string"


@pytest.mark.parametrize("data", SAMPLES, ids=repr)
def test_encode_is_standard_with_padding(data: bytes) -> None:
    text = b64.encode(data)
    assert isinstance(text, str)
    assert text == base64.b64encode(data).decode("ascii")
    assert "-" not in text and "_" not in text
    assert len(text) % 4 == 0


def test_encode_empty() -> None:
    assert b64.encode(b"") == ""


@given(st.binary(max_size=300))
def test_round_trip(data: bytes) -> None:
    assert b64.decode(b64.encode(data), "key") == data
    for text in _variants(data):
        assert b64.decode(text, "key") == data


@given(st.text(alphabet="QUJDab+/-_=  \n*é\x00", max_size=12))
def test_the_fast_path_answers_as_the_general_one(text: str) -> None:
    """decode's one C call for the common spelling accepts nothing the
    general path refuses, and decodes what it accepts alike."""
    try:
        expected: bytes | str = b64._decode_any(text, "key")
    except InvalidArgument as e:
        expected = e.message
    try:
        found: bytes | str = b64.decode(text, "key")
    except InvalidArgument as e:
        found = e.message
    assert found == expected


def test_round_trip_random_large() -> None:
    data = os.urandom(100_000)
    assert b64.decode(b64.encode(data), "value") == data
    assert b64.decode(base64.urlsafe_b64encode(data).decode().rstrip("="), "value") == data


@given(st.binary(max_size=300), st.binary(max_size=300))
def test_the_v0_get_answer_is_the_json_of_its_dict(key: bytes, value: bytes) -> None:
    """``GET /v0/kv/key/...`` answers the bytes ``encode_json`` makes of
    ``{"key": ..., "value": ...}``, put together without it."""
    from dkv.api.http_common import encode_json
    from dkv.api.routes import key_value_json

    assert b64.encode_bytes(value) == b64.encode(value).encode()
    assert key_value_json(key, value) == encode_json({"key": b64.encode(key), "value": b64.encode(value)})
