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

from dkv.api import b64

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


# -- messages to JSON text -------------------------------------------------------------------

#: How to_json writes a field's value (a repeated field: each of its values, in a list).
_INT64_TEXT, _NUMBER, _BOOL, _BYTES, _STRING, _ENUM, _MESSAGE = range(7)
#: One field as to_json writes it: its name, '"name":', how, whether it is
#: repeated, whether it has presence (set or not, whatever its value: a
#: message, a oneof member, a proto3 optional), and its enum's names.
_Field = tuple[str, str, int, bool, bool, "dict[int, str] | None"]
#: Message type -> its fields in field number order (ListFields' order).
_json_writers: dict[Descriptor, list[_Field] | None] = {}


class _NotPlain(Exception):
    """A message to_dict hands to json_format: to_json answers None."""


def to_json(message: Message, string: Callable[[str], str]) -> str | None:
    """``to_dict(message)`` as compact JSON text (string(s): the JSON literal
    of a string value), or None if to_dict would ask json_format for any
    part of it."""
    try:
        return _message_json(message, string)
    except _NotPlain:
        return None


def _message_json(message: Message, string: Callable[[str], str]) -> str:
    descriptor = message.DESCRIPTOR
    try:
        fields = _json_writers[descriptor]
    except KeyError:
        fields = _json_writers[descriptor] = _json_writer(descriptor)
    if fields is None:
        raise _NotPlain
    parts = []
    # The fields ListFields would list: those with presence that are set,
    # the others when not empty (zero, false, empty); read by name, which
    # costs less than ListFields' descriptors and tuples.
    for name, prefix, how, repeated, presence, names in fields:
        if presence:
            if not message.HasField(name):
                continue
            value = getattr(message, name)
        else:
            value = getattr(message, name)
            if not value:
                continue
        if repeated:
            parts.append(prefix + "[" + ",".join([_value_json(v, how, names, string) for v in value]) + "]")
        elif how == _INT64_TEXT:
            parts.append(f'{prefix}"{value}"')
        elif how == _BYTES:
            parts.append(f'{prefix}"{_b64(value)}"')  # base64 needs no escapes
        else:
            parts.append(prefix + _value_json(value, how, names, string))
    return "{" + ",".join(parts) + "}"


def _value_json(value: Any, how: int, names: dict[int, str] | None, string: Callable[[str], str]) -> str:
    if how == _MESSAGE:
        return _message_json(value, string)
    if how == _INT64_TEXT:
        return f'"{value}"'
    if how == _BYTES:
        return f'"{_b64(value)}"'
    if how == _NUMBER:
        return str(value)
    if how == _BOOL:
        return "true" if value else "false"
    if how == _ENUM:
        assert names is not None
        return string(names[value]) if value in names else str(value)
    return string(value)


def _json_writer(descriptor: Descriptor) -> list[_Field] | None:
    """The fields of a message type _writer finds plain (a message field's
    own type is looked up when it is written)."""
    if _writer(descriptor) is None:
        return None
    fields: list[_Field] = []
    for field in sorted(descriptor.fields, key=lambda f: f.number):
        kind = field.cpp_type
        names = None
        if kind == FieldDescriptor.CPPTYPE_MESSAGE:
            how = _MESSAGE
        elif kind == FieldDescriptor.CPPTYPE_ENUM:
            how, names = _ENUM, {v.number: v.name for v in field.enum_type.values}
        elif kind == FieldDescriptor.CPPTYPE_STRING:
            how = _BYTES if field.type == FieldDescriptor.TYPE_BYTES else _STRING
        elif kind == FieldDescriptor.CPPTYPE_BOOL:
            how = _BOOL
        elif kind in _INT64:
            how = _INT64_TEXT
        else:
            how = _NUMBER
        presence = field.has_presence and not field.is_repeated
        fields.append((field.name, '"' + field.name + '":', how, field.is_repeated, presence, names))
    return fields


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
    data = b64.standard(value)  # the bytes json_format finds in it too
    if data is not None:
        return data
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
