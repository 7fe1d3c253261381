"""dkv.api.routes' body parsing: a JSON object, read as json.loads reads it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dkv.api.routes import parse_object, parse_put
from dkv.errors import InvalidArgument


def _loads_answer(raw: bytes) -> object:
    """What parse_object must answer: json.loads' object, or the error message."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:
        return f"malformed JSON: {e}"
    return body if isinstance(body, dict) else "body must be a JSON object"


def _answer(raw: bytes) -> object:
    try:
        return parse_object(raw)
    except InvalidArgument as e:
        return e.message


BODIES = st.one_of(
    st.binary(max_size=16).map(lambda b: b"{" + b),
    st.text(max_size=12).map(lambda t: ('{"k":' + json.dumps(t, ensure_ascii=False) + "}").encode()),
    st.sampled_from([b"{}", b'{"a":1} ', b'{"a":1}x', b"{\x00", b'{"a":"\xed\xa0\x80"}', b"\xef\xbb\xbf{}", b"[1]",
                     '{"a":"é"}'.encode("utf-16"), '{"a":2}'.encode("utf-16-le"), b"", b"{"]),  # fmt: skip
)


@settings(max_examples=500, deadline=None)
@given(BODIES)
def test_parse_object_reads_as_json_loads(raw: bytes) -> None:
    assert _answer(raw) == _loads_answer(raw)


def test_parse_put() -> None:
    assert parse_put(b'{"key":"Zm9v","value":"YmFy"}') == (b"foo", b"bar")
    with pytest.raises(InvalidArgument, match="missing field 'value'"):
        parse_put(b'{"key":"Zm9v"}')
