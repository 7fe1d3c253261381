# test-case-name: tests.client.test_client_values
"""The JSON bodies of etcd's KV requests as the gateway reads them: bytes as
base64, int64 as decimal strings, enums by name, defaults left out."""

from __future__ import annotations

from typing import Any

from dkv.client.values import b64, prefix_end

#: RangeRequest.SortTarget names, and the short forms etcdctl takes.
SORT_TARGETS = ("KEY", "VERSION", "CREATE", "MOD", "VALUE")
SORT_ORDERS = ("NONE", "ASCEND", "DESCEND")


def key_range(
    key: bytes, range_end: bytes | None = None, *, prefix: bool = False, from_key: bool = False
) -> dict[str, Any]:
    """``key`` and ``range_end`` for one key, [key, range_end), every key
    under the prefix key, or every key from key on (for an empty key
    either means every key: ``"\\0"`` to ``"\\0"``)."""
    if sum((range_end is not None, prefix, from_key)) > 1:
        raise ValueError("give at most one of range_end, prefix and from_key")
    if (prefix or from_key) and not key:
        key, range_end, prefix, from_key = b"\0", b"\0", False, False  # every key (etcd's client does the same)
    body: dict[str, Any] = {"key": b64(key)}
    if prefix:
        range_end = prefix_end(key)
    elif from_key:
        range_end = b"\0"
    if range_end is not None:
        body["range_end"] = b64(range_end)
    return body


def _put_ints(body: dict[str, Any], **fields: int) -> None:
    for name, value in fields.items():
        if value:
            body[name] = str(value)


def range_request(
    key: bytes,
    range_end: bytes | None = None,
    *,
    prefix: bool = False,
    from_key: bool = False,
    revision: int = 0,
    limit: int = 0,
    sort_target: str | None = None,
    sort_order: str | None = None,
    serializable: bool = False,
    keys_only: bool = False,
    count_only: bool = False,
    min_mod_revision: int = 0,
    max_mod_revision: int = 0,
    min_create_revision: int = 0,
    max_create_revision: int = 0,
) -> dict[str, Any]:
    """A RangeRequest body."""
    body = key_range(key, range_end, prefix=prefix, from_key=from_key)
    _put_ints(
        body,
        revision=revision,
        limit=limit,
        min_mod_revision=min_mod_revision,
        max_mod_revision=max_mod_revision,
        min_create_revision=min_create_revision,
        max_create_revision=max_create_revision,
    )
    if sort_target is not None:
        target = sort_target.upper()
        if target not in SORT_TARGETS:
            raise ValueError(f"sort_target must be one of {', '.join(SORT_TARGETS)}")
        body["sort_target"] = target
    if sort_order is not None:
        order = sort_order.upper()
        if order not in SORT_ORDERS:
            raise ValueError(f"sort_order must be one of {', '.join(SORT_ORDERS)}")
        body["sort_order"] = order
    for flag, on in (("serializable", serializable), ("keys_only", keys_only), ("count_only", count_only)):
        if on:
            body[flag] = True
    return body


def put_request(key: bytes, value: bytes, *, lease: int = 0, prev_kv: bool = False) -> dict[str, Any]:
    """A PutRequest body."""
    body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    _put_ints(body, lease=lease)
    if prev_kv:
        body["prev_kv"] = True
    return body


def delete_request(
    key: bytes, range_end: bytes | None = None, *, prefix: bool = False, from_key: bool = False, prev_kv: bool = False
) -> dict[str, Any]:
    """A DeleteRangeRequest body."""
    body = key_range(key, range_end, prefix=prefix, from_key=from_key)
    if prev_kv:
        body["prev_kv"] = True
    return body


def watch_create_request(
    key: bytes,
    range_end: bytes | None = None,
    *,
    prefix: bool = False,
    from_key: bool = False,
    start_revision: int = 0,
    prev_kv: bool = False,
    no_put: bool = False,
    no_delete: bool = False,
    progress_notify: bool = False,
) -> dict[str, Any]:
    """A WatchCreateRequest body (without its start revision when 0)."""
    body = key_range(key, range_end, prefix=prefix, from_key=from_key)
    _put_ints(body, start_revision=start_revision)
    filters = [name for name, on in (("NOPUT", no_put), ("NODELETE", no_delete)) if on]
    if filters:
        body["filters"] = filters
    if prev_kv:
        body["prev_kv"] = True
    if progress_notify:
        body["progress_notify"] = True
    return body
