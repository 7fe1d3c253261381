# test-case-name: tests.test_fault_checks
"""The transactional workload's requests on etcd's JSON gateway, and what
their answers tell.

The bodies are etcd 3.4's gateway JSON (``POST /v3/kv/...``: bytes in
base64, int64 as strings). A compare-and-swap is one Txn on one key::

    compare: value == expected        (or version == 0: expected absent)
    success: put key new; range key   (the answer shows the value it left)
    failure: range key                (the answer shows the value found)

so its answer says whether it swapped (``succeeded``) and what the key
holds now. ``classify`` turns an answer (an HTTP status and its JSON) into
an ``Answer``: the outcome by the workload's rules (``dkv.testing.workload``),
the value shown, and the revisions the answer reported:

``ok``       200 with the documented JSON.
``fail``     certainly not applied: any 4xx (etcd's request checks, a store
             refusal, ``OUT_OF_RANGE`` for a read below the compacted
             revision or beyond the current one), or 503 with code 14 and
             ``etcdserver: no leader`` (dkv answers it only for requests it
             never proposed).
``unknown``  maybe applied: 503 ``etcdserver: request timed out`` (proposed,
             fate unknown) or any other 5xx, or a 200 whose JSON is not the
             documented one.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

import attrs

from dkv.api.b64 import encode as b64_encode
from dkv.testing.history import Outcome

__all__ = [
    "Answer",
    "NO_LEADER",
    "V3Kind",
    "cas_body",
    "classify",
    "compact_body",
    "delete_body",
    "put_body",
    "range_body",
]

#: What the request was: a range, a put, a delete, a compare-and-swap Txn,
#: a compaction.
V3Kind = Literal["read", "put", "delete", "cas", "compact"]

#: etcd's message for "nothing was proposed, retry" (code 14, UNAVAILABLE);
#: the same code with ``etcdserver: request timed out`` means "maybe applied".
NO_LEADER = "etcdserver: no leader"

#: etcd's message for a read at a revision beyond the current one.
FUTURE_REVISION = "etcdserver: mvcc: required revision is a future revision"
#: etcd's message for a read below the compacted revision.
COMPACTED = "etcdserver: mvcc: required revision has been compacted"


def range_body(key: bytes, revision: int | None = None, serializable: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64_encode(key)}
    if revision is not None:
        body["revision"] = str(revision)
    if serializable:
        body["serializable"] = True
    return body


def put_body(key: bytes, value: bytes) -> dict[str, Any]:
    return {"key": b64_encode(key), "value": b64_encode(value)}


def delete_body(key: bytes) -> dict[str, Any]:
    return {"key": b64_encode(key)}


def cas_body(key: bytes, expected: bytes | None, new: bytes) -> dict[str, Any]:
    """The Txn that sets key to new if it holds expected (None: if it does
    not exist), and reads the key in either branch."""
    k = b64_encode(key)
    if expected is None:
        compare = {"key": k, "target": "VERSION", "result": "EQUAL", "version": "0"}
    else:
        compare = {"key": k, "target": "VALUE", "result": "EQUAL", "value": b64_encode(expected)}
    read = {"request_range": {"key": k}}
    return {
        "compare": [compare],
        "success": [{"request_put": put_body(key, new)}, read],
        "failure": [read],
    }


def compact_body(revision: int) -> dict[str, Any]:
    return {"revision": str(revision)}


@attrs.frozen(kw_only=True)
class Answer:
    """What one answer tells.

    ``result`` is the key's value the answer shows (a range's, a cas's: None
    if absent); ``swapped`` whether a cas swapped (True for anything else);
    ``revision`` the answer's ``header.revision`` (an ok answer only);
    ``mod_revision`` the revision that wrote the value shown (a range, a
    cas), or that this request created (a put; a delete that deleted the
    key; None for a delete of an absent key, which creates none), None if
    unknown. ``detail`` is the error or a note for people; ``message`` is
    etcd's error message of an error answer."""

    outcome: Outcome
    result: bytes | None = None
    swapped: bool = True
    revision: int | None = None
    mod_revision: int | None = None
    detail: str = ""
    message: str = ""


class _Malformed(ValueError):
    pass


def _int(value: Any) -> int:
    """An int64 of the JSON (a string, or a number); 0 when left out."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _Malformed(f"not an integer: {value!r}")
    try:
        return int(value)
    except ValueError:
        raise _Malformed(f"not an integer: {value!r}") from None


def _shown(range_response: Any, key: bytes) -> tuple[bytes | None, int | None]:
    """(value, mod_revision) of key in a RangeResponse's JSON; (None, None)
    if the key is absent."""
    if not isinstance(range_response, dict):
        raise _Malformed("the range answer is not an object")
    kvs = range_response.get("kvs") or []
    if not isinstance(kvs, list) or len(kvs) > 1:
        raise _Malformed(f"expected at most one key, got {kvs!r}"[:200])
    if not kvs:
        return None, None
    kv = kvs[0]
    try:
        if base64.b64decode(kv["key"], validate=True) != key:
            raise _Malformed(f"the answer shows another key, {kv['key']!r}")
        value = base64.b64decode(kv.get("value", ""), validate=True)
    except (KeyError, TypeError, ValueError) as e:
        raise _Malformed(f"bad key or value: {e}") from None
    mod = _int(kv.get("mod_revision"))
    if mod <= 0:
        raise _Malformed(f"mod_revision {mod}")
    return value, mod


def _ok(kind: V3Kind, key: bytes, data: Any) -> Answer:
    if not isinstance(data, dict) or not isinstance(data.get("header"), dict):
        raise _Malformed("no header")
    revision = _int(data["header"].get("revision"))
    if revision <= 0:
        raise _Malformed(f"header.revision {revision}")
    if kind == "read":
        value, mod = _shown(data, key)
        return Answer(outcome="ok", result=value, revision=revision, mod_revision=mod)
    if kind == "put":
        return Answer(outcome="ok", revision=revision, mod_revision=revision)
    if kind == "delete":
        deleted = _int(data.get("deleted"))
        return Answer(outcome="ok", revision=revision, mod_revision=revision if deleted else None)
    if kind == "compact":
        return Answer(outcome="ok", revision=revision)
    succeeded = data.get("succeeded", False)
    responses = data.get("responses")
    if not isinstance(succeeded, bool) or not isinstance(responses, list) or not responses:
        raise _Malformed("no succeeded flag or no responses")
    last = responses[-1]
    if not isinstance(last, dict) or "response_range" not in last:
        raise _Malformed("the txn's last response is not its range")
    value, mod = _shown(last["response_range"], key)
    return Answer(outcome="ok", result=value, swapped=succeeded, revision=revision, mod_revision=mod)


def classify(kind: V3Kind, key: bytes, status: int, data: Any) -> Answer:
    """The ``Answer`` of one HTTP answer (status and decoded JSON) to a
    request of ``kind`` on ``key``, by the rules in the module docstring."""
    if status == 200:
        try:
            return _ok(kind, key, data)
        except _Malformed as e:
            shown = json.dumps(data, separators=(",", ":"))[:200]
            return Answer(outcome="unknown", detail=f"malformed 200 answer ({e}): {shown}")
    detail = json.dumps(data, separators=(",", ":"))[:200]
    message = ""
    code = None
    if isinstance(data, dict):
        message = str(data.get("message") or data.get("error") or "")
        code = data.get("code")
    if 400 <= status < 500 or (status == 503 and code == 14 and message == NO_LEADER):
        return Answer(outcome="fail", detail=detail, message=message)
    return Answer(outcome="unknown", detail=detail, message=message)
