# test-case-name: tests.test_etcd_json
"""etcd 3.4's JSON gateway mapping (/v3/...), as pure functions: a request
body into an etcd request message, a response message or an error into the
bytes etcd's gateway (grpc-gateway v1 with ``JSONPb{OrigName: true}``)
answers with. No HTTP here: the REST layer routes and calls these.

The mapping is protobuf's JSON mapping (``google.protobuf.json_format``;
``dkv.api.proto_json`` gives the same answers faster for the common
messages):

* field names as written in the .proto (``create_revision``, ``raft_term``,
  ``peerURLs``); requests may also use the lowerCamelCase names;
* int64 and uint64 as strings (``"revision":"3"``); requests accept strings
  or numbers; bytes as standard base64 (requests also take URL-safe or
  unpadded base64);
* enums by name (``"sort_order":"DESCEND"``; an event's type PUT, the zero
  value, is omitted); requests accept names or numbers;
* default values omitted: a range that finds nothing answers only its
  header; a nested message that is present but empty is ``{}``.

Adjustments to match the gateway byte for byte (Go's encoders, not
protobuf's rules):

* compact output (no spaces), fields in field-number order;
* strings escaped as Go's encoding/json escapes them: ``<``, ``>``, ``&``,
  U+2028 and U+2029 as ``\\u003c`` ..., control characters other than
  ``\\n \\r \\t`` as ``\\u00XX``; other characters as UTF-8;
* requests are read as Go's json.Decoder reads them: an empty body is an
  empty request, anything after the first JSON value is ignored, a repeated
  field name keeps its last value, unknown fields are ignored; a body cut
  short is refused with Go's "unexpected EOF", other malformed JSON with
  Go's "invalid character ..." phrasing (code 3, INVALID_ARGUMENT).
  Messages for well-formed JSON of the wrong shape (a number where bytes
  belong) are protobuf's, not Go's.

Errors are ``{"error": M, "message": M, "code": C}`` (in that order: the
field order of grpc-gateway's errorBody) with the HTTP status grpc-gateway v1
gives code C (``http_status``).
"""

from __future__ import annotations

import json
import re
from binascii import b2a_base64
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from dkv.api import b64, proto_json
from dkv.mvcc.errors import Code, EtcdError
from dkv.pb.etcd_kv_pb2 import KeyValue
from dkv.pb.etcd_rpc_pb2 import PutResponse, RangeResponse, ResponseHeader

M = TypeVar("M", bound=Message)

#: grpc-gateway v1's HTTPStatusFromCode (etcd 3.4 vendors grpc-gateway v1).
#: Measured against etcd 3.4.23: 3 -> 400, 5 -> 404, 11 -> 400.
_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 408,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.UNAUTHENTICATED: 401,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 412,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
}


class MalformedRequest(Exception):
    """A body the gateway cannot read into the request message; etcd's
    gateway answers it with code 3 (INVALID_ARGUMENT)."""

    code = Code.INVALID_ARGUMENT

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def parse_request(body: bytes, message_type: type[M]) -> M:
    """The request message a JSON body means. Raises MalformedRequest."""
    message = message_type()
    text = body.decode("utf-8", errors="replace").lstrip(" \t\r\n")
    if not text:
        return message
    try:
        value, _end = _DECODER.raw_decode(text)
    except json.JSONDecodeError as error:
        raise MalformedRequest(_go_syntax_error(error)) from None
    if value is None:
        return message
    if not isinstance(value, dict):
        raise MalformedRequest(
            f"json: cannot unmarshal {_go_kind(value)} into Go value of type map[string]json.RawMessage"
        )
    fast = proto_json.from_dict(value, message_type)
    if fast is not None:
        return fast
    try:
        json_format.ParseDict(_known_fields(value, message.DESCRIPTOR), message)
    except json_format.ParseError as error:
        raise MalformedRequest(str(error)) from None
    return message


def parse_range_of_key(body: bytes) -> tuple[bytes, bool] | None:
    """(key, serializable) of a Range body that asks for one key and sets
    no option but ``serializable`` (``{"key": ...}``: the hot read of
    clients), as ``parse_request`` reads it; None for any other body,
    which ``parse_request`` reads then (its errors included)."""
    try:
        value = _DECODER.decode(body.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError too
        return None
    if type(value) is not dict:
        return None
    key = value.get("key")
    serializable = value.get("serializable", False)
    if type(key) is not str or type(serializable) is not bool or len(value) != 1 + ("serializable" in value):
        return None
    data = b64.standard(key)
    return (data, serializable) if data else None


def format_response(message: Message) -> bytes:
    """The gateway's JSON for a response message."""
    return _message_text(message).encode("utf-8")


def format_range_of_key(header: tuple[int, int, int, int], record: bytes | None) -> bytes:
    """``format_response`` of the RangeResponse that answers a Range of one
    key with no option: header (cluster_id, member_id, revision, raft_term),
    and the key's KeyValue, encoded (None: the key has none), written
    without the message."""
    kv = KeyValue.FromString(record) if record is not None else None
    text = _header_text(*header)
    if text is None or (kv is not None and not (kv.key and kv.create_revision and kv.mod_revision and kv.version)):
        # A zero is left out of the text: the message's own writer knows how.
        cluster_id, member_id, revision, raft_term = header
        response = RangeResponse(
            header=ResponseHeader(cluster_id=cluster_id, member_id=member_id, revision=revision, raft_term=raft_term),
            kvs=[kv] if kv is not None else [],
            count=1 if kv is not None else 0,
        )
        return format_response(response)
    if kv is None:
        return (text + "}").encode("ascii")
    fields = (
        f'"key":"{b2a_base64(kv.key, newline=False).decode("ascii")}","create_revision":"{kv.create_revision}",'
        f'"mod_revision":"{kv.mod_revision}","version":"{kv.version}"'
    )
    if kv.value:
        fields += f',"value":"{b2a_base64(kv.value, newline=False).decode("ascii")}"'
    if kv.lease:
        fields += f',"lease":"{kv.lease}"'
    return f'{text},"kvs":[{{{fields}}}],"count":"1"}}'.encode("ascii")


def format_put_response(response: PutResponse) -> bytes:
    """``format_response(response)``, written directly when its header is
    all it holds (a Put that did not ask for the previous version)."""
    header = response.header
    text = _header_text(header.cluster_id, header.member_id, header.revision, header.raft_term)
    if text is None or response.HasField("prev_kv"):
        return format_response(response)
    return (text + "}").encode("ascii")


def _header_text(cluster_id: int, member_id: int, revision: int, raft_term: int) -> str | None:
    """The start of a response's JSON up to its header's end (``{"header":
    {...}``), or None if a field is 0 (left out: ``format_response`` knows
    how)."""
    if not (cluster_id and member_id and revision and raft_term):
        return None
    return (
        f'{{"header":{{"cluster_id":"{cluster_id}","member_id":"{member_id}",'
        f'"revision":"{revision}","raft_term":"{raft_term}"}}'
    )


def format_stream_result(message: Message) -> bytes:
    """One message of a streaming response (Watch, LeaseKeepAlive,
    Snapshot): ``{"result": ...}`` and a newline, as the gateway streams."""
    return ('{"result":' + _message_text(message) + "}\n").encode("utf-8")


def _message_text(message: Message) -> str:
    """message's JSON text: written directly (``proto_json.to_json``), or
    from its dict when to_json leaves it to json_format."""
    text = proto_json.to_json(message, _go_string)
    return _go_string(_to_dict(message)) if text is None else text


def format_error(code: int, message: str) -> tuple[int, bytes]:
    """(HTTP status, body) of the gateway's answer to a gRPC error."""
    return http_status(code), _dumps({"error": message, "message": message, "code": int(code)})


def format_etcd_error(error: EtcdError | MalformedRequest) -> tuple[int, bytes]:
    return format_error(error.code, error.message)


def http_status(code: int) -> int:
    """The HTTP status grpc-gateway v1 answers a gRPC code with."""
    try:
        return _HTTP_STATUS[Code(code)]
    except ValueError:
        return 500


def _known_fields(value: dict, descriptor: Descriptor) -> dict:
    """value without the fields the message does not have, at every depth
    (Go's decoder skips them; json_format's ignore_unknown_fields would
    also let unknown enum names through, which Go refuses)."""
    known = {}
    for name, item in value.items():
        field = descriptor.fields_by_name.get(name) or _by_json_name(descriptor).get(name)
        if field is None:
            continue
        if field.message_type is not None:
            if isinstance(item, dict):
                item = _known_fields(item, field.message_type)
            elif isinstance(item, list):
                item = [_known_fields(x, field.message_type) if isinstance(x, dict) else x for x in item]
        known[name] = item
    return known


def _by_json_name(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    return {field.json_name: field for field in descriptor.fields}


def _to_dict(message: Message) -> dict:
    return proto_json.to_dict(message)


#: What Go's encoding/json escapes that Python's json does not (or not the
#: same way). An escaped backslash is matched first, so "\\\\b" stays.
_GO_ESCAPES = re.compile(r"\\\\|\\b|\\f|[<>&\u2028\u2029]")
_GO_ESCAPE = {"\\b": "\\u0008", "\\f": "\\u000c", "<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
              "\u2028": "\\u2028", "\u2029": "\\u2029"}  # fmt: skip


#: A text without any of these needs no substitution (base64 never has them);
#: looking for them is much cheaper than running the pattern over the text.
_GO_SPECIAL = ("\\", "<", ">", "&", "\u2028", "\u2029")


#: One of each, built once (``json.dumps`` with options builds an encoder per call).
_DECODER = json.JSONDecoder()
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _dumps(value: object) -> bytes:
    return _go_string(value).encode("utf-8")


def _go_string(value: object) -> str:
    """value's JSON text as Go's encoding/json writes it (for a string: its
    literal; ``proto_json.to_json`` writes the string values with it)."""
    text = _ENCODER.encode(value)
    if any(char in text for char in _GO_SPECIAL):
        text = _GO_ESCAPES.sub(lambda m: _GO_ESCAPE.get(m.group(0), m.group(0)), text)
    return text


def _go_syntax_error(error: json.JSONDecodeError) -> str:
    """Go's json.Decoder message for the syntax error Python found."""
    rest = error.doc[error.pos :]
    if not rest or error.msg.startswith("Unterminated string") or any(w.startswith(rest) for w in _LITERALS):
        return "unexpected EOF"
    char = _go_quote_char(error.doc[error.pos])
    if error.msg.startswith("Expecting property name"):
        return f"invalid character {char} looking for beginning of object key string"
    if error.msg == "Expecting ':' delimiter":
        return f"invalid character {char} after object key"
    if error.msg == "Expecting ',' delimiter":
        return f"invalid character {char} after {'array element' if _in_array(error) else 'object key:value pair'}"
    return f"invalid character {char} looking for beginning of value"


_LITERALS = ("null", "true", "false")


def _in_array(error: json.JSONDecodeError) -> bool:
    """Whether the innermost open bracket before the error is '['."""
    depth = 0
    for char in reversed(_without_strings(error.doc[: error.pos])):
        if char in "]}":
            depth += 1
        elif char in "[{":
            if depth == 0:
                return char == "["
            depth -= 1
    return False


def _without_strings(text: str) -> str:
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def _go_quote_char(char: str) -> str:
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    return "'" + json.dumps(char, ensure_ascii=False)[1:-1] + "'"


def _go_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array"
