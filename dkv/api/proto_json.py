# test-case-name: tests.test_proto_json
"""protobuf's JSON mapping for the messages the gateway's hot paths carry,
without ``google.protobuf.json_format``'s generic machinery: the same
answers, several times cheaper.

``to_dict(message)`` is ``json_format.MessageToDict(message,
preserving_proto_field_name=True)`` for every message (set fields in field
number order; int64 kinds as strings, bytes as standard base64, enums by
name), done with a converter per field built once per message type. A
float, map or well-known-type field makes it hand the message to
json_format (etcd's messages have none).

``from_dict(value, message_type)`` builds the message a JSON object means
when every field in it is a scalar that json_format would read one way:
integers as numbers or strings, booleans, and bytes as base64 strings,
converted exactly as json_format converts them. Anything else (a nested
message, an enum, a repeated or null field, the same field under both of
its names, a value json_format would refuse) answers None, and the caller
asks json_format, which gives the same message or its own error.
``tests/test_proto_json.py`` checks both against json_format on random
messages and bodies.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

_INT = frozenset(
    {FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT32,
     FieldDescriptor.CPPTYPE_UINT64}
)  # fmt: skip
_INT64 = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})

# -- messages to JSON values ----------------------------------------------------------------

Convert = Callable[[Any], Any]
#: Message type -> field number -> (JSON name, converter of the field's value).
_writers: dict[Descriptor, dict[int, tuple[str, Convert]] | None] = {}


def to_dict(message: Message) -> dict[str, Any]:
    """``MessageToDict(message, preserving_proto_field_name=True)``."""
    fields = _writer(message.DESCRIPTOR)
    if fields is None:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        name, convert = fields[field.number]
        out[name] = convert(value)
    return out


def _writer(descriptor: Descriptor) -> dict[int, tuple[str, Convert]] | None:
    try:
        return _writers[descriptor]
    except KeyError:
        pass
    fields: dict[int, tuple[str, Convert]] | None = {}
    for field in descriptor.fields:
        convert = _value_writer(field)
        if convert is None or fields is None:
            fields = None
            break
        if field.is_repeated:
            convert = _each(convert)
        fields[field.number] = (field.name, convert)
    if descriptor.full_name.startswith("google.protobuf."):
        fields = None  # well-known types have JSON forms of their own
    _writers[descriptor] = fields
    return fields


def _each(convert: Convert) -> Convert:
    return lambda values: [convert(v) for v in values]


def _value_writer(field: FieldDescriptor) -> Convert | None:
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        # to_dict looks the nested type up when it converts (types may nest
        # themselves: a Txn's ops hold Txns).
        return None if field.message_type.GetOptions().map_entry else to_dict
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        names = {v.number: v.name for v in field.enum_type.values}
        if any(v.GetOptions().ListFields() for v in field.enum_type.values) or field.enum_type.is_closed:
            return None
        return lambda number: names.get(number, number)
    if kind == FieldDescriptor.CPPTYPE_STRING:
        return _b64 if field.type == FieldDescriptor.TYPE_BYTES else str
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return bool
    if kind in _INT64:
        return str
    if kind in _INT:
        return _same
    return None  # floats: json_format's special values


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _same(value: Any) -> Any:
    return value


# -- JSON objects to messages ---------------------------------------------------------------

Read = Callable[[Any], Any]
#: Message type -> JSON name (proto and lowerCamelCase) -> (field name, reader).
_readers: dict[Descriptor, dict[str, tuple[str, Read]]] = {}


class _Refused(Exception):
    """A value the fast path leaves to json_format."""


def from_dict(value: dict[str, Any], message_type: type[M]) -> M | None:
    """The message value means, or None when json_format must decide."""
    readers = _readers.get(message_type.DESCRIPTOR)
    if readers is None:
        readers = _readers[message_type.DESCRIPTOR] = _reader(message_type.DESCRIPTOR)
    fields: dict[str, Any] = {}
    try:
        for name, item in value.items():
            found = readers.get(name)
            if found is None:
                return None  # unknown, or not a plain scalar
            field, read = found
            if field in fields:
                return None  # under both names: json_format's error
            fields[field] = read(item)
        return message_type(**fields)
    except Exception:  # noqa: BLE001 - json_format says what is wrong with it
        return None


def _reader(descriptor: Descriptor) -> dict[str, tuple[str, Read]]:
    readers: dict[str, tuple[str, Read]] = {}
    for field in descriptor.fields:
        if field.is_repeated:
            continue
        read = _value_reader(field)
        if read is not None:
            readers[field.name] = readers[field.json_name] = (field.name, read)
    return readers


def _value_reader(field: FieldDescriptor) -> Read | None:
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_STRING and field.type == FieldDescriptor.TYPE_BYTES:
        return _read_bytes
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return _read_bool
    if kind in _INT:
        return _read_int
    return None


def _read_bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise _Refused
    encoded = value.encode("utf-8")
    # json_format pads to a multiple of 4 (a whole group when there is none
    # missing) and decodes with either alphabet.
    return base64.urlsafe_b64decode(encoded + b"=" * (4 - len(encoded) % 4))


def _read_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Refused
    return value


def _read_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str) and " " in value):
        raise _Refused
    return int(value)
