"""The OpenAPI document of the REST port (``dkv.api.openapi``): every route
of ``ROUTES`` is in it with every method, answers name their schemas, and
the schemas accept what etcd's gateway and dkv really answer (samples from
etcd 3.4 and dkv's own shapes). ``tests/test_schemathesis.py`` checks a live
cluster against it."""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import pytest

from dkv.api import openapi, routes
from dkv.api.routes import ROUTES


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi.document(ROUTES)


def validates(doc: dict[str, Any], schema: dict[str, Any], instance: Any) -> bool:
    root = {**schema, "components": doc["components"]}
    return jsonschema_rs.Draft4Validator(root).is_valid(instance)


def response_schema(doc: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    answer = doc["paths"][path][method]["responses"][str(status)]
    return answer["content"]["application/json"]["schema"]


def test_every_route_and_method_is_described(doc: dict[str, Any]) -> None:
    for route in ROUTES:
        path = openapi.openapi_path(route.pattern)
        assert path in doc["paths"], f"route {route.name} ({route.pattern}) is missing from the OpenAPI document"
        for method in route.methods:
            operation = doc["paths"][path].get(method.lower())
            assert operation is not None, f"{method} {path} is missing"
            assert operation["responses"], f"{method} {path} describes no answer"


def test_an_undescribed_route_cannot_be_served() -> None:
    extra = routes.Route("new", ("GET",), "/v0/new", lambda node, call: {})
    with pytest.raises(KeyError):
        openapi.document((*ROUTES, extra))


def test_health_probes_and_metrics_are_described(doc: dict[str, Any]) -> None:
    for path in ("/health", "/livez", "/readyz", "/metrics"):
        assert "get" in doc["paths"][path]
    assert validates(doc, response_schema(doc, "/health", "get", 200), {"health": "true"})
    assert validates(doc, response_schema(doc, "/health", "get", 503), {"health": "false", "reason": "no leader"})
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_paths_use_openapi_parameters() -> None:
    assert openapi.openapi_path("/v0/kv/key/<rest:b64key>") == "/v0/kv/key/{b64key}"
    assert openapi.openapi_path("/v0/members/<node_id>/promote") == "/v0/members/{node_id}/promote"
    assert openapi.openapi_path("/v3/kv/range") == "/v3/kv/range"


def test_every_operation_id_is_unique_and_every_ref_resolves(doc: dict[str, Any]) -> None:
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    text = json.dumps(doc)
    for name in {part.split('"')[0] for part in text.split('"#/components/schemas/')[1:]}:
        assert name in doc["components"]["schemas"], name


def test_errors_are_dkv_errors_on_v0_and_etcd_errors_on_v3(doc: dict[str, Any]) -> None:
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            for status, answer in operation["responses"].items():
                if int(status) < 400 or status == "413" or path in ("/health", "/livez", "/readyz"):
                    continue
                schema = answer["content"]["application/json"]["schema"]
                expected = "EtcdError" if path.startswith("/v3/") else "DkvError"
                assert schema == {"$ref": f"#/components/schemas/{expected}"}, (path, status)


ETCD_SAMPLES = {
    # etcd 3.4.23's gateway answers (see the etcd gateway facts).
    "/v3/kv/put": {"header": {"cluster_id": "9283402572641457184", "member_id": "1279009630658182889",
                              "revision": "3", "raft_term": "2"},
                   "prev_kv": {"key": "Zm9v", "create_revision": "2", "mod_revision": "2", "version": "1",
                               "value": "YmFy"}},
    "/v3/kv/range": {"header": {"revision": "3"}, "kvs": [{"key": "Zm9v", "create_revision": "2",
                                                           "mod_revision": "3", "version": "2", "value": "YmF6"}],
                     "count": "1"},
    "/v3/kv/txn": {"header": {"revision": "4"}, "succeeded": True,
                   "responses": [{"response_put": {"header": {"revision": "4"}}}]},
    "/v3/kv/deleterange": {"header": {"revision": "5"}, "deleted": "1", "prev_kvs": [{"key": "Zm9v"}]},
    "/v3/cluster/member/list": {"header": {"cluster_id": "1"}, "members": [
        {"ID": "1279009630658182889", "name": "default", "peerURLs": ["http://127.0.0.1:2480"],
         "clientURLs": ["http://127.0.0.1:2479"]}]},
    "/v3/maintenance/status": {"header": {}, "version": "3.4.23", "dbSize": "20480", "leader": "1",
                               "raftIndex": "8", "raftTerm": "2", "raftAppliedIndex": "8", "dbSizeInUse": "16384"},
    "/v3/lease/grant": {"header": {}, "ID": "4533332883009431053", "TTL": "30"},
    "/v3/lease/keepalive": {"result": {"header": {}, "ID": "1", "TTL": "30"}},
}  # fmt: skip


@pytest.mark.parametrize("path", sorted(ETCD_SAMPLES))
def test_etcd_answers_match_the_schemas(doc: dict[str, Any], path: str) -> None:
    assert validates(doc, response_schema(doc, path, "post", 200), ETCD_SAMPLES[path])


def test_schemas_refuse_what_the_gateway_never_writes(doc: dict[str, Any]) -> None:
    schema = response_schema(doc, "/v3/kv/range", "post", 200)
    assert not validates(doc, schema, {"count": 1}), "int64 is a string"
    assert not validates(doc, schema, {"kvs": [{"key": "not base64!"}]})
    assert not validates(doc, schema, {"Count": "1"}), "no other field"
    error = response_schema(doc, "/v3/kv/range", "post", 400)
    assert validates(doc, error, {"error": "etcdserver: key is not provided", "message": "x", "code": 3})
    assert not validates(doc, error, {"error": "x", "code": 3})


def test_requests_take_etcd_json(doc: dict[str, Any]) -> None:
    body = doc["paths"]["/v3/kv/txn"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    txn = {
        "compare": [{"key": "Zm9v", "target": "VALUE", "result": "EQUAL", "value": "YmF6"}],
        "success": [{"request_put": {"key": "Zm9v", "value": "cXV4", "lease": "0"}}],
        "failure": [{"request_range": {"key": "Zm9v", "limit": 1}}],
    }
    assert validates(doc, body, txn)


def test_v0_answers_match_the_schemas(doc: dict[str, Any]) -> None:
    assert validates(doc, response_schema(doc, "/v0/kv", "post", 200), {})
    assert validates(doc, response_schema(doc, "/v0/kv/key/{b64key}", "get", 200), {"key": "aw==", "value": ""})
    assert validates(
        doc, response_schema(doc, "/v0/kv/key/{b64key}", "get", 404), {"error": "key not found", "code": 5}
    )
    status = {
        "id": "a", "role": "leader", "term": 2, "leader_id": "a", "commit_index": 5, "applied_index": 5,
        "stored_index": 5, "last_index": 5, "first_index": 1, "snapshot_index": 0,
        "members": [{"id": "a", "address": "127.0.0.1:7070", "voter": True, "match_index": 5}],
    }  # fmt: skip
    assert validates(doc, response_schema(doc, "/v0/status", "get", 200), status)


def test_served_document_is_the_document(doc: dict[str, Any]) -> None:
    answer = routes.openapi_document(None, None)  # type: ignore[arg-type]
    assert answer.status == 200
    assert json.loads(answer.body) == json.loads(json.dumps(doc))
