# test-case-name: tests.test_openapi
"""The REST port described: an OpenAPI 3 document, served at ``GET /openapi.json``.

It is generated from the route table (``dkv.api.routes.ROUTES``), so no route
can be served undescribed: ``document(routes)`` fails with ``KeyError`` for a
route this module does not describe (``tests/test_openapi.py`` also checks it).

- ``/v0`` operations are described here by hand (``_V0``), with dkv's error
  body ``{"error", "code"}``.
- etcd's JSON gateway (``/v3/...``) is described from etcd's protobuf
  descriptors, as the gateway maps them (``dkv.api.etcd_json``): proto field
  names, 64-bit integers as strings (a request may also send numbers), bytes
  as base64, enums by name (a request may send numbers), default values left
  out (so no response field is required); errors are etcd's
  ``{"error", "message", "code"}`` with grpc-gateway's HTTP status.
- ``/health``, ``/livez``, ``/readyz`` and ``/metrics`` are described even
  where this build does not serve them yet (``EXTRA_PATHS``).

Every answer a route can give is listed with its status and schema; the
front door's own refusals that can meet any request (400 for unparseable
HTTP, 408, 413, 431) are listed on the operations with a body (413) and
otherwise left to the README.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from dkv.api import etcd_gateway
from dkv.pb import etcd_rpc_pb2 as pb

if TYPE_CHECKING:
    from dkv.api.routes import Route

__all__ = ["EXTRA_PATHS", "document", "document_bytes", "openapi_path"]

OPENAPI_VERSION = "3.0.3"

_JSON = "application/json"

# -- shared schemas -----------------------------------------------------------------------

_B64 = {"type": "string", "format": "byte", "description": "bytes, standard base64"}
#: What dkv reads as base64: standard or URL-safe alphabet, padding optional.
_B64_IN = {"type": "string", "pattern": "^[A-Za-z0-9+/_-]*={0,2}$", "description": "bytes, base64"}
_DKV_ERROR = {
    "type": "object",
    "description": "dkv's error: the reason and the gRPC code number.",
    "properties": {"error": {"type": "string"}, "code": {"type": "integer"}},
    "required": ["error", "code"],
    "additionalProperties": False,
}
_ETCD_ERROR = {
    "type": "object",
    "description": "etcd's gateway error: the message twice and the gRPC code number.",
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "code": {"type": "integer"}},
    "required": ["error", "message", "code"],
    "additionalProperties": False,
}
_COMPONENTS: dict[str, Any] = {
    "DkvError": _DKV_ERROR,
    "EtcdError": _ETCD_ERROR,
    "Empty": {"type": "object", "additionalProperties": False},
    "KeyValue": {
        "type": "object",
        "properties": {"key": _B64, "value": _B64},
        "required": ["key", "value"],
        "additionalProperties": False,
    },
    "KeyValueIn": {
        "type": "object",
        "properties": {"key": {**_B64_IN, "minLength": 2}, "value": _B64_IN},
        "required": ["key", "value"],
    },
    "Member": {
        "type": "object",
        "properties": {"id": {"type": "string"}, "address": {"type": "string"}, "voter": {"type": "boolean"}},
        "required": ["id", "address", "voter"],
        "additionalProperties": False,
    },
    "Members": {
        "type": "object",
        "properties": {
            "members": {"type": "array", "items": {"$ref": "#/components/schemas/Member"}},
            "leader_id": {"type": "string", "description": "empty while no leader is known"},
            "cluster_id": {"type": "string"},
        },
        "required": ["members", "leader_id", "cluster_id"],
        "additionalProperties": False,
    },
    "Status": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "role": {"type": "string", "enum": ["follower", "pre-candidate", "candidate", "leader"]},
            "term": {"type": "integer", "minimum": 0},
            "leader_id": {"type": "string"},
            "commit_index": {"type": "integer", "minimum": 0},
            "applied_index": {"type": "integer", "minimum": 0},
            "stored_index": {"type": "integer", "minimum": 0},
            "last_index": {"type": "integer", "minimum": 0},
            "first_index": {"type": "integer", "minimum": 0},
            "snapshot_index": {"type": "integer", "minimum": 0},
            "members": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "address": {"type": "string"},
                        "voter": {"type": "boolean"},
                        "match_index": {"type": "integer", "minimum": 0},
                    },
                    "required": ["id", "address", "voter", "match_index"],
                    "additionalProperties": False,
                },
            },
        },
        "required": [
            "id", "role", "term", "leader_id", "commit_index", "applied_index", "stored_index", "last_index",
            "first_index", "snapshot_index", "members",
        ],
        "additionalProperties": False,
    },
}  # fmt: skip


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _dkv_errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json(_ref("DkvError"), _V0_ERROR_MEANING[s]) for s in statuses}


_V0_ERROR_MEANING = {
    400: "bad request: malformed JSON, missing or mistyped field, bad base64, empty key, bad parameter",
    404: "not found (absent key, no such member)",
    409: "the cluster's state refuses it (e.g. a member already exists)",
    413: "key over --max-key-size or body over --max-body-size",
    422: "Idempotency-Key already used with a different request",
    429: "too many requests (admission control: a bound such as --max-pending-proposals was passed): "
    "certainly not applied; retry after the Retry-After header's seconds",
    503: "no leader (retryable: certainly not applied)",
    504: "outcome unknown (read first, or retry with the same Idempotency-Key)",
    507: "NOSPACE alarm active (the db passed --quota-backend-bytes): certainly not applied; retry after disarm",
}

_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Apply this write at most once: a retry with the same key and request answers the first outcome.",
    "schema": {"type": "string", "maxLength": 256},
}
_B64KEY = {
    "name": "b64key",
    "in": "path",
    "required": True,
    "description": "the key, base64 (standard, URL-escaped, or URL-safe)",
    "schema": {**_B64_IN, "minLength": 2},
}
_NODE_ID = {"name": "node_id", "in": "path", "required": True, "schema": {"type": "string"}}

#: /v0 operations by route name (and method, for a route with several).
_V0: dict[str, dict[str, Any]] = {
    "put": {
        "summary": "Write a key (committed by a majority and applied here before the answer)",
        "parameters": [_IDEMPOTENCY_KEY],
        "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("KeyValueIn")}}},
        "responses": {"200": _json(_ref("Empty"), "written"), **_dkv_errors(400, 413, 422, 429, 503, 504, 507)},
    },
    "get": {
        "summary": "Read a key (linearizable unless consistency=serializable)",
        "parameters": [
            _B64KEY,
            {
                "name": "consistency",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["linearizable", "serializable"]},
            },
        ],
        "responses": {"200": _json(_ref("KeyValue"), "the key and its value"), **_dkv_errors(400, 404, 413, 429, 503)},
    },
    "delete": {
        "summary": "Delete a key (200 also when it is absent)",
        "parameters": [_B64KEY, _IDEMPOTENCY_KEY],
        "responses": {"200": _json(_ref("Empty"), "deleted"), **_dkv_errors(400, 413, 422, 429, 503, 504)},
    },
    "empty_key.GET": {
        "summary": "An empty key is refused",
        "responses": _dkv_errors(400),
    },
    "empty_key.DELETE": {
        "summary": "An empty key is refused",
        "responses": _dkv_errors(400),
    },
    "status": {
        "summary": "This node's Raft status",
        "responses": {"200": _json(_ref("Status"), "the status")},
    },
    "members": {
        "summary": "The cluster's members as this node knows them",
        "responses": {"200": _json(_ref("Members"), "the members")},
    },
    "add_member": {
        "summary": "Add a member (a learner with learner=true)",
        "requestBody": {
            "required": True,
            "content": {
                _JSON: {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string", "minLength": 1},
                            "address": {"type": "string", "minLength": 1, "description": "HOST:RPC_PORT"},
                            "learner": {"type": "boolean", "default": False},
                        },
                        "required": ["id", "address"],
                    }
                }
            },
        },
        "responses": {"200": _json(_ref("Members"), "the new configuration"), **_dkv_errors(400, 409, 413, 503, 504)},
    },
    "promote_member": {
        "summary": "Make a caught-up learner a voter",
        "parameters": [_NODE_ID],
        "responses": {"200": _json(_ref("Members"), "the new configuration"), **_dkv_errors(400, 404, 409, 503, 504)},
    },
    "remove_member": {
        "summary": "Remove a member",
        "parameters": [_NODE_ID],
        "responses": {"200": _json(_ref("Members"), "the new configuration"), **_dkv_errors(400, 404, 409, 503, 504)},
    },
    "transfer_leader": {
        "summary": "Hand leadership to a voter (the most up-to-date one without a body)",
        "requestBody": {
            "required": False,
            "content": {
                _JSON: {"schema": {"type": "object", "properties": {"to": {"type": "string", "minLength": 1}}}}
            },
        },
        "responses": {
            "200": _json(
                {
                    "type": "object",
                    "properties": {"leader_id": {"type": "string"}},
                    "required": ["leader_id"],
                    "additionalProperties": False,
                },
                "the new leader",
            ),
            **_dkv_errors(400, 404, 409, 413, 503, 504),
        },
    },
    "watch": {
        "summary": "Watch a key or range as Server-Sent Events (a stream that does not end by itself)",
        "parameters": [
            {"name": "key", "in": "query", "required": True, "schema": {"type": "string", "format": "byte"}},
            {"name": "prefix", "in": "query", "required": False, "schema": {"type": "boolean"}},
            {"name": "range_end", "in": "query", "required": False, "schema": {"type": "string", "format": "byte"}},
            {"name": "start_revision", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
            {"name": "prev_kv", "in": "query", "required": False, "schema": {"type": "boolean"}},
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {
                "description": "one event per change; each `data:` a JSON object (see the README, Watch)",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_dkv_errors(400),
        },
    },
    "cluster": {
        "summary": "The cluster as this node sees it: its status and every member's (the status page's data)",
        "responses": {
            "200": _json(
                {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "role": {"type": "string"},
                        "term": {"type": "integer"},
                        "leader_id": {"type": "string"},
                        "revision": {"type": "integer"},
                        "reads": {"type": "integer"},
                        "leader_changes": {"type": "integer"},
                        "lag_basis": {"type": "string", "enum": ["match_index", "applied_index"]},
                        "members": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "string"},
                                    "address": {"type": "string"},
                                    "voter": {"type": "boolean"},
                                    "reachable": {"type": "boolean"},
                                    "lag": {"type": ["integer", "null"]},
                                },
                                "required": ["id", "address", "voter", "reachable"],
                            },
                        },
                    },
                    "required": ["id", "role", "term", "leader_id", "members"],
                },
                "this node's view of the cluster (see the README, Status page)",
            ),
            **_dkv_errors(503),
        },
    },
    "status_page": {
        "summary": "The status page: one self-contained HTML page (see the README, Status page)",
        "responses": {"200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}}},
    },
    "openapi": {
        "summary": "This document",
        "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
    },
    "etcd_version": {
        "summary": "The etcd version dkv speaks (clients choose their API paths by it)",
        "responses": {
            "200": _json(
                {
                    "type": "object",
                    "properties": {"etcdserver": {"type": "string"}, "etcdcluster": {"type": "string"}},
                    "required": ["etcdserver", "etcdcluster"],
                    "additionalProperties": False,
                },
                "versions",
            )
        },
    },
}

_HEALTH_OK = {"type": "object", "properties": {"health": {"type": "string", "enum": ["true"]}}, "required": ["health"]}
_HEALTH_BAD = {
    "type": "object",
    "properties": {"health": {"type": "string", "enum": ["false"]}, "reason": {"type": "string"}},
    "required": ["health", "reason"],
}
_PROBE = {"type": "object", "description": "the probe's details (JSON)"}

_HEALTH = {
    "summary": "etcd's health check: this node knows a leader and a linearizable read completes in time",
    "responses": {"200": _json(_HEALTH_OK, "healthy"), "503": _json(_HEALTH_BAD, "unhealthy, and why")},
}

#: The operator's routes (``routes.OPERATIONS_ROUTES``, ``dkv.api.probes``),
#: described here so that a table without them (``--metrics-port``'s has only
#: them) is described alike.
EXTRA_PATHS: dict[str, dict[str, Any]] = {
    "/health": {"get": {"operationId": "health", **_HEALTH}},
    "/livez": {
        "get": {
            "operationId": "livez",
            "summary": "Liveness: the process is serving",
            "responses": {"200": _json(_PROBE, "live"), "503": _json(_PROBE, "not live")},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "Readiness: caught up, applied within N entries of the leader's commit",
            "responses": {"200": _json(_PROBE, "ready"), "503": _json(_PROBE, "not ready, and why")},
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (text exposition format)",
            "responses": {"200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }
    },
}

# -- etcd's gateway, from the protobuf descriptors ------------------------------------------

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
_INT32 = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_SFIXED32,
}
_INT64_TEXT = {"type": "string", "pattern": "^-?[0-9]+$"}
_BASE64_TEXT = {"type": "string", "pattern": "^[A-Za-z0-9+/]*={0,2}$"}


def _message_ref(descriptor: Descriptor, request: bool, schemas: dict[str, Any]) -> dict[str, Any]:
    """A $ref to the schema of a message as the gateway reads it (request)
    or writes it, adding it (and what it uses) to schemas."""
    name = descriptor.full_name + (".in" if request else "")
    if name not in schemas:
        schemas[name] = {}  # placeholder: messages may nest themselves (Txn)
        properties = {f.name: _field_schema(f, request, schemas) for f in descriptor.fields}
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if not request:
            schema["additionalProperties"] = False  # the gateway writes no other field
        schemas[name] = schema
    return _ref(name)


def _field_schema(field: FieldDescriptor, request: bool, schemas: dict[str, Any]) -> dict[str, Any]:
    one = _scalar_schema(field, request, schemas)
    if field.is_repeated:
        return {"type": "array", "items": one}
    return one


def _scalar_schema(field: FieldDescriptor, request: bool, schemas: dict[str, Any]) -> dict[str, Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_MESSAGE:
        return _message_ref(field.message_type, request, schemas)
    if t in _INT64:
        return {"anyOf": [_INT64_TEXT, {"type": "integer"}]} if request else dict(_INT64_TEXT)
    if t in _INT32:
        return {"type": "integer"}
    if t == FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    if t == FieldDescriptor.TYPE_STRING:
        return {"type": "string"}
    if t == FieldDescriptor.TYPE_BYTES:
        return {"type": "string", "format": "byte"} if request else dict(_BASE64_TEXT)
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return {"type": "number"}
    if t == FieldDescriptor.TYPE_ENUM:
        names = {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        return {"anyOf": [names, {"type": "integer"}]} if request else names
    raise ValueError(f"field {field.full_name}: type {t} has no JSON mapping here")


def _method(service: str, method: str) -> tuple[Descriptor, Descriptor]:
    m = pb.DESCRIPTOR.services_by_name[service].methods_by_name[method]
    return m.input_type, m.output_type


#: gRPC codes an etcd RPC may fail with over the gateway -> HTTP status and meaning.
_ETCD_ERROR_MEANING = {
    400: "INVALID_ARGUMENT or OUT_OF_RANGE (e.g. empty key, compacted or future revision, malformed JSON)",
    404: "NOT_FOUND (e.g. no such lease or member)",
    409: "ALREADY_EXISTS or ABORTED",
    412: "FAILED_PRECONDITION (e.g. learner not ready, member exists)",
    429: "RESOURCE_EXHAUSTED: request too large for etcd's limits, or etcdserver: too many requests "
    "(admission control; certainly not applied, retry after Retry-After)",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE: no leader (retryable) or request timed out (retry with the same Idempotency-Key)",
    504: "DEADLINE_EXCEEDED",
}
_WRITE_PATHS = frozenset({"/v3/kv/put", "/v3/kv/deleterange", "/v3/kv/txn", "/v3/kv/compaction"})
_UNIMPLEMENTED_PATHS = frozenset({"/v3/cluster/member/update"})


def _etcd_responses(path: str, ok: dict[str, Any], description: str) -> dict[str, Any]:
    statuses = [400, 404, 409, 412, 429, 503, 504]
    if path in _UNIMPLEMENTED_PATHS:
        statuses.append(501)
    responses: dict[str, Any] = {"200": _json(ok, description)}
    for status in sorted(statuses):
        responses[str(status)] = _json(_ref("EtcdError"), _ETCD_ERROR_MEANING[status])
    responses["413"] = _json(_ref("DkvError"), "body over --max-body-size (refused before it is read)")
    if path == "/v3/watch":
        responses["500"] = _json(
            _ref("EtcdError"),
            "malformed request body: etcd's gateway decodes a stream's body outside the call (UNKNOWN)",
        )
    if path in _WRITE_PATHS:
        responses["422"] = _json(_ref("EtcdError"), "Idempotency-Key already used with a different request")
    return dict(sorted(responses.items()))


def _etcd_operation(
    path: str, service: str, method: str, schemas: dict[str, Any], stream: str | None = None
) -> dict[str, Any]:
    request, response = _method(service, method)
    ok = _message_ref(response, False, schemas)
    if stream is not None:
        ok = {
            "type": "object",
            "properties": {"result": ok},
            "required": ["result"],
            "additionalProperties": False,
            "description": stream,
        }
    operation: dict[str, Any] = {
        "summary": f"etcd {service}.{method}" + (" (a stream: one JSON object per line)" if stream else ""),
        "tags": ["etcd"],
        # An empty body is the empty request, as grpc-gateway reads it.
        "requestBody": {"required": False, "content": {_JSON: {"schema": _message_ref(request, True, schemas)}}},
        "responses": _etcd_responses(path, ok, f"{response.name}, as etcd's gateway writes it"),
    }
    if path in _WRITE_PATHS:
        operation["parameters"] = [_IDEMPOTENCY_KEY]
    return operation


#: Gateway routes that are not plain unary calls: path -> (service, method, what the lines are).
_ETCD_STREAMS = {
    "/v3/maintenance/snapshot": ("Maintenance", "Snapshot", 'one {"result": ...} line per chunk of the file'),
    "/v3/lease/keepalive": ("Lease", "LeaseKeepAlive", 'one {"result": ...} line: the keep-alive\'s answer'),
    "/v3/watch": ("Watch", "Watch", 'one {"result": ...} line per watch response; the stream stays open'),
}


# -- the document -----------------------------------------------------------------------------


def openapi_path(pattern: str) -> str:
    """A werkzeug rule as an OpenAPI path: ``<rest:key>`` and ``<id>`` become ``{key}``, ``{id}``."""
    out, rest = "", pattern
    while "<" in rest:
        before, _, tail = rest.partition("<")
        param, _, rest = tail.partition(">")
        out += before + "{" + param.rpartition(":")[2] + "}"
    return out + rest


def _operation(route: Route, method: str, schemas: dict[str, Any]) -> dict[str, Any]:
    if route.pattern in etcd_gateway.PATHS:
        service, rpc = etcd_gateway.PATHS[route.pattern]
        return _etcd_operation(route.pattern, service, rpc, schemas)
    if route.pattern in _ETCD_STREAMS:
        service, rpc, lines = _ETCD_STREAMS[route.pattern]
        return _etcd_operation(route.pattern, service, rpc, schemas, stream=lines)
    if route.pattern in EXTRA_PATHS:  # the operator's routes (dkv.api.probes), GET and HEAD alike
        described = EXTRA_PATHS[route.pattern]["get"]
        return {key: value for key, value in described.items() if key != "operationId"}
    described = _V0.get(f"{route.name}.{method}") or _V0[route.name]  # KeyError: an undescribed route
    return dict(described)


def document(routes: Iterable[Route]) -> dict[str, Any]:
    """The OpenAPI document of the REST port serving ``routes`` (KeyError
    for a route not described here)."""
    schemas: dict[str, Any] = dict(_COMPONENTS)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        for method in route.methods:
            operation = _operation(route, method, schemas)
            many = len(route.methods) > 1
            operation["operationId"] = f"{route.name}_{method.lower()}" if many else route.name
            paths.setdefault(openapi_path(route.pattern), {})[method.lower()] = operation
    for path, operations in EXTRA_PATHS.items():
        for method, operation in operations.items():
            paths.setdefault(path, {}).setdefault(method, operation)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "dkv REST API",
            "version": "0",
            "description": "dkv's own /v0 API and etcd 3.4's JSON gateway (/v3) on the REST port. "
            "Keys and values are base64. See the README for the semantics.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.items()))},
    }


def document_bytes(routes: Iterable[Route]) -> bytes:
    return json.dumps(document(routes), separators=(",", ":")).encode("utf-8")
