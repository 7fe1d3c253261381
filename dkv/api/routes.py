# test-case-name: tests.test_rest,tests.test_front_door
"""The REST API's one route table: every route is declared here once, with
its handler.

    POST   /v0/kv                         {"key": b64, "value": b64} -> {}
    GET    /v0/kv/key/{b64key}            [?consistency=serializable] -> {"key", "value"}
    DELETE /v0/kv/key/{b64key}                                       -> {}
    GET    /v0/status                                                -> {...}
    GET    /v0/members                                               -> {"members", "leader_id", "cluster_id"}
    POST   /v0/members                    {"id", "address", "learner"}
    POST   /v0/members/{id}/promote
    DELETE /v0/members/{id}
    POST   /v0/leader/transfer            [{"to": id}]               -> {"leader_id"}
    GET    /v0/watch?key=b64[&prefix=true][&start_revision=N]        -> text/event-stream
    GET    /openapi.json                                             -> this table described (dkv.api.openapi)
    GET    /metrics, /health, /livez, /readyz (and HEAD)             -> see dkv.api.probes
    GET    /v0/cluster                                               -> {... "members": [...]}
    GET    /                                                         -> the status page (HTML)

The Klein app (``dkv.api.rest``) is generated from ``ROUTES``; the front
door (``dkv.api.front_door``) calls the handlers of the routes marked
``fast`` itself, through ``FastRoutes``, and has Klein render every other
request. A handler takes the node and a ``Call`` and returns the JSON body
of a 200 answer (or a Deferred of it); it raises (or fails with) a
``dkv.errors.DkvError`` for any other answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

import attrs

from dkv.api import b64, etcd_gateway, openapi, probes, status_page, watch_gateway, watch_sse
from dkv.api.cluster_view import cluster_view
from dkv.api.http_common import Call, RawAnswer
from dkv.auth.node_auth import v0_error
from dkv.errors import InvalidArgument
from dkv.mvcc.errors import EtcdError
from dkv.node import Node

#: The path converter meaning "the rest of the path": one character or more,
#: "/" included (a standard base64 key may contain "/" and start with it).
#: ``dkv.api.rest`` registers it with werkzeug under this name.
REST_OF_PATH = "rest"

_CONSISTENCY = {"linearizable": True, "serializable": False}


#: node, call -> the JSON body of a 200 answer (or a ``RawAnswer``), or a
#: Deferred of it.
Handler = Callable[[Node, Call], Any]


@attrs.frozen
class Route:
    name: str
    methods: tuple[str, ...]
    #: A werkzeug rule, as Klein takes it.
    pattern: str
    handler: Handler
    #: The front door serves it without twisted.web. Only a literal path, or
    #: a literal prefix followed by ``<rest:NAME>``, can be fast.
    fast: bool = False
    #: Every request of it is a client write: when admission control
    #: refuses writes, the front door answers 429 before it reads the body
    #: (in the handler's own error form: ``answer_error``, if the handler
    #: has one, as etcd's gateway handlers do).
    write: bool = False


# -- body and query parsing ------------------------------------------------------------


_DECODER = json.JSONDecoder()


def parse_object(raw: bytes) -> dict[str, Any]:
    """A JSON object (raises InvalidArgument for anything else)."""
    try:
        if raw[:1] == b"{" and raw[1:2] != b"\x00":
            # What json.loads finds UTF-8 (not UTF-16 or -32, no BOM), read
            # as it reads it, without its detection of the encoding.
            body = _DECODER.decode(raw.decode("utf-8", "surrogatepass"))
        else:
            body = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InvalidArgument(f"malformed JSON: {e}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("body must be a JSON object")
    return body


def _string(body: dict[str, Any], name: str, what: str) -> str:
    if name not in body:
        raise InvalidArgument(f"missing field {name!r}")
    value = body[name]
    if not isinstance(value, str):
        raise InvalidArgument(f"field {name!r} must be {what}")
    return value


def _text(body: dict[str, Any], name: str) -> str:
    value = _string(body, name, "a non-empty string")
    if not value:
        raise InvalidArgument(f"field {name!r} must be a non-empty string")
    return value


def parse_put(raw: bytes) -> tuple[bytes, bytes]:
    """The key and value of a ``POST /v0/kv`` body (raises InvalidArgument)."""
    body = parse_object(raw)
    key = b64.decode(_string(body, "key", "a base64 string"), "key")
    return key, b64.decode(_string(body, "value", "a base64 string"), "value")


def linearizable(values: list[bytes] | None) -> bool:
    """The ``consistency`` query parameter (last value wins; default linearizable)."""
    mode = values[-1].decode("utf-8", "replace").lower() if values else "linearizable"
    if mode not in _CONSISTENCY:
        raise InvalidArgument("consistency must be linearizable or serializable")
    return _CONSISTENCY[mode]


# -- handlers --------------------------------------------------------------------------


def _empty(_: object) -> dict[str, Any]:
    return {}


def put(node: Node, call: Call) -> Any:
    key, value = parse_put(call.body)
    return node.put(key, value, admitted=call.admitted).addCallback(_empty)


def get(node: Node, call: Call) -> Any:
    key = b64.decode(call.params["b64key"], "key")
    d = node.get(key, linearizable=linearizable(call.args.get(b"consistency")))
    return d.addCallback(lambda value: RawAnswer(200, key_value_json(key, value)))


def key_value_json(key: bytes, value: bytes) -> bytes:
    """``{"key": b64, "value": b64}`` as compact JSON (``encode_json`` of
    that dict), put together directly: base64 needs no JSON escaping."""
    return b'{"key":"%s","value":"%s"}' % (b64.encode_bytes(key), b64.encode_bytes(value))


def delete(node: Node, call: Call) -> Any:
    key = b64.decode(call.params["b64key"], "key")
    return node.delete(key).addCallback(_empty)


def empty_key(node: Node, call: Call) -> Any:
    raise InvalidArgument("key must not be empty")


def status(node: Node, call: Call) -> Any:
    return node.status()


def members(node: Node, call: Call) -> Any:
    return node.members()


def _root(node: Node) -> None:
    """Membership and leadership changes need the root role (auth enabled):
    401 / 403 otherwise."""
    try:
        node.authorize_root()
    except EtcdError as e:
        raise v0_error(e) from None


def cluster(node: Node, call: Call) -> Any:
    return cluster_view(node)


def add_member(node: Node, call: Call) -> Any:
    body = parse_object(call.body)
    learner = body.get("learner", False)
    if not isinstance(learner, bool):
        raise InvalidArgument("field 'learner' must be true or false")
    _root(node)
    return node.add_member(_text(body, "id"), _text(body, "address"), learner)


def promote_member(node: Node, call: Call) -> Any:
    _root(node)
    return node.promote_member(call.params["node_id"])


def remove_member(node: Node, call: Call) -> Any:
    _root(node)
    return node.remove_member(call.params["node_id"])


def transfer_leader(node: Node, call: Call) -> Any:
    """Body optional: ``{"to": "b"}``; without a target the most up-to-date
    voter takes over."""
    body = parse_object(call.body) if call.body.strip() else {}
    to = _text(body, "to") if "to" in body else None
    _root(node)
    return node.transfer_leader(to)


_openapi_json: list[bytes] = []


def openapi_document(node: Node, call: Call) -> RawAnswer:
    """``GET /openapi.json``: the OpenAPI document of ``ROUTES`` (built once)."""
    if not _openapi_json:
        _openapi_json.append(openapi.document_bytes(ROUTES))
    return RawAnswer(200, _openapi_json[0])

#: The operator's routes (``dkv.api.probes``), also served alone on
#: ``--metrics-port``: fast, GET and HEAD, no body read.
OPERATIONS_ROUTES: tuple[Route, ...] = (
    Route("metrics", ("GET", "HEAD"), "/metrics", probes.metrics, fast=True),
    Route("health", ("GET", "HEAD"), "/health", probes.health, fast=True),
    Route("livez", ("GET", "HEAD"), "/livez", probes.livez, fast=True),
    Route("readyz", ("GET", "HEAD"), "/readyz", probes.readyz, fast=True),
)

ROUTES: tuple[Route, ...] = (
    Route("put", ("POST",), "/v0/kv", put, fast=True, write=True),
    Route("get", ("GET",), f"/v0/kv/key/<{REST_OF_PATH}:b64key>", get, fast=True),
    Route("delete", ("DELETE",), f"/v0/kv/key/<{REST_OF_PATH}:b64key>", delete, fast=True, write=True),
    Route("empty_key", ("GET", "DELETE"), "/v0/kv/key/", empty_key),
    Route("status", ("GET",), "/v0/status", status),
    Route("members", ("GET",), "/v0/members", members),
    Route("add_member", ("POST",), "/v0/members", add_member),
    Route("promote_member", ("POST",), "/v0/members/<node_id>/promote", promote_member),
    Route("remove_member", ("DELETE",), "/v0/members/<node_id>", remove_member),
    Route("transfer_leader", ("POST",), "/v0/leader/transfer", transfer_leader),
    Route("cluster", ("GET",), "/v0/cluster", cluster),
    Route("status_page", ("GET",), "/", status_page.page),
    # etcd's JSON gateway (dkv.api.etcd_gateway) on the same keyspace.
    *(
        Route(f"etcd{path.replace('/', '_').replace('-', '_')}", ("POST",), path, etcd_gateway.handler_for(path),
              fast=path in etcd_gateway.FAST_PATHS, write=path in etcd_gateway.WRITE_PATHS)
        for path in etcd_gateway.PATHS
    ),
    Route("etcd_snapshot", ("POST",), "/v3/maintenance/snapshot", etcd_gateway.snapshot),
    Route("etcd_lease_keepalive", ("POST",), "/v3/lease/keepalive", etcd_gateway.keep_alive),
    Route("etcd_watch", ("POST",), "/v3/watch", watch_gateway.watch),
    Route("watch", ("GET",), "/v0/watch", watch_sse.watch),
    Route("etcd_version", ("GET",), "/version", etcd_gateway.version),
    Route("openapi", ("GET",), "/openapi.json", openapi_document),
    *OPERATIONS_ROUTES,
)  # fmt: skip


class FastRoutes:
    """The fast routes of a table, matched on a request's raw method and
    path (no query) exactly as Klein matches them: a literal path must be
    equal; ``<rest:NAME>`` takes the rest of the path, percent-decoded
    (Twisted decodes each segment), as UTF-8 text."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._exact: dict[tuple[bytes, bytes], Route] = {}
        self._prefixes: list[tuple[bytes, dict[bytes, Route], str]] = []
        for route in routes:
            if not route.fast:
                continue
            literal, sep, param = route.pattern.partition("<")
            methods = [m.encode("ascii") for m in route.methods]
            if not sep:
                for method in methods:
                    self._exact[(method, literal.encode("ascii"))] = route
                continue
            converter, _, name = param.removesuffix(">").partition(":")
            if converter != REST_OF_PATH or not param.endswith(">") or not name or ">" in param[:-1]:
                raise ValueError(f"route {route.name}: a fast route is a literal path or ends in <{REST_OF_PATH}:NAME>")
            prefix = literal.encode("ascii")
            entry = next((e for e in self._prefixes if e[0] == prefix and e[2] == name), None)
            if entry is None:
                entry = (prefix, {}, name)
                self._prefixes.append(entry)
            for method in methods:
                entry[1][method] = route

    def match(self, method: bytes, path: bytes) -> tuple[Route, dict[str, str]] | None:
        """The fast route for method and path and its path parameters; None
        if no fast route matches (Klein decides then). Raises
        InvalidArgument for a parameter that is not UTF-8, as Klein answers."""
        route = self._exact.get((method, path))
        if route is not None:
            return route, {}
        for prefix, by_method, name in self._prefixes:
            if len(path) > len(prefix) and path.startswith(prefix):
                route = by_method.get(method)
                if route is None:
                    continue
                try:
                    text = unquote_to_bytes(path[len(prefix) :]).decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidArgument("path is not valid UTF-8") from None
                return route, {name: text}
        return None
