# test-case-name: tests.test_linearizability
"""Client histories: what each client asked for, when, and what it was told.

A history is a sequence of ``Op`` values, one per client request, in any
order. Each records the invocation and completion times read from one
monotonic clock shared by all clients, and what the client learnt:

``ok``
    the request took effect exactly once, somewhere between ``invoke`` and
    ``complete``; for a read, ``result`` is the value it returned (``None``:
    the key was absent).
``fail``
    the request certainly did not take effect (for example a request rejected
    before it was proposed).
``unknown``
    the request may or may not have taken effect, at any time after
    ``invoke`` (a timeout, a lost connection, a crash): its completion is
    treated as +infinity whatever ``complete`` says.

Histories are stored as JSON lines, one object per operation, with byte
strings in base64, so a failing run can be written to disk and re-checked.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from collections.abc import Iterable
from typing import Any, Literal

import attrs

from dkv.api.b64 import encode as b64_encode

__all__ = [
    "Kind",
    "Op",
    "Outcome",
    "dumps_history",
    "loads_history",
    "op_from_json",
    "op_to_json",
    "read_history",
    "write_history",
]

Kind = Literal["read", "write", "cas"]
Outcome = Literal["ok", "fail", "unknown"]

KINDS: tuple[Kind, ...] = ("read", "write", "cas")
OUTCOMES: tuple[Outcome, ...] = ("ok", "fail", "unknown")

_optional_bytes = attrs.validators.optional(attrs.validators.instance_of(bytes))


def _to_time(value: float | int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"a timestamp must be a number, not {value!r}")
    return float(value)


def _to_optional_time(value: float | int | None) -> float | None:
    return None if value is None else _to_time(value)


@attrs.frozen(slots=True, kw_only=True)
class Op:
    """One client request against one key of a read/write/compare-and-swap register.

    ``value`` is the value written (for ``cas`` the new value; ``None`` writes
    the key as absent), ``expected`` the value a ``cas`` requires (``None``:
    absent), and ``result`` the value an ``ok`` read returned (``None``:
    absent). Fields that do not apply to ``kind`` are ignored by the checker.

    A ``cas`` sets the key to ``value`` if it holds ``expected``, atomically;
    an ``ok`` one says whether it did in ``swapped`` (etcd's Txn
    ``succeeded``). ``swapped`` False: the key held something else, and
    ``result`` is what it held (the cas read it; a cas that did not swap
    changed nothing); such a cas was answered and carries information, it is
    not a ``fail``. For a ``cas`` that swapped, ``result`` may record what the
    key held just after it (its ``value``); the checker does not need it.
    ``swapped`` is True for every other operation.

    ``invoke`` and ``complete`` are finite readings of one monotonic clock;
    ``complete`` is ``None`` if the client never heard back. An ``ok`` or
    ``fail`` operation must have completed, and never before it was invoked.
    """

    process: int = attrs.field(validator=attrs.validators.instance_of(int))
    kind: Kind = attrs.field(validator=attrs.validators.in_(KINDS))
    key: bytes = attrs.field(validator=attrs.validators.instance_of(bytes))
    invoke: float = attrs.field(converter=_to_time)
    outcome: Outcome = attrs.field(validator=attrs.validators.in_(OUTCOMES))
    complete: float | None = attrs.field(default=None, converter=_to_optional_time)
    value: bytes | None = attrs.field(default=None, validator=_optional_bytes)
    expected: bytes | None = attrs.field(default=None, validator=_optional_bytes)
    result: bytes | None = attrs.field(default=None, validator=_optional_bytes)
    swapped: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        if not self.swapped and (self.kind != "cas" or self.outcome != "ok"):
            raise ValueError(f"only an ok cas can be answered as not swapped, not an {self.outcome} {self.kind}")
        if not math.isfinite(self.invoke):
            raise ValueError(f"invoke must be finite, not {self.invoke!r}")
        if self.complete is None:
            if self.outcome != "unknown":
                raise ValueError(f"an {self.outcome!r} operation must have a completion time")
        elif not math.isfinite(self.complete) or self.complete < self.invoke:
            raise ValueError(
                f"complete ({self.complete!r}) must be finite and not before invoke "
                f"({self.invoke!r})"
            )


    @property
    def sets_value(self) -> bool:
        """Whether the request asked to set the key to ``value``: a write, or
        a cas not answered as not swapped (whatever its outcome)."""
        return self.kind == "write" or (self.kind == "cas" and self.swapped)


def _b64(value: bytes | None) -> str | None:
    return None if value is None else b64_encode(value)


def _unb64(value: Any, field: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field}: expected a base64 string or null, not {value!r}")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError(f"{field}: invalid base64 {value!r}") from e


_FIELDS = ("process", "kind", "key", "value", "expected", "invoke", "complete", "outcome", "result", "swapped")
_BYTES_FIELDS = ("key", "value", "expected", "result")
_REQUIRED = ("process", "kind", "key", "invoke", "outcome")


def op_to_json(op: Op) -> str:
    """Encode one operation as a single line of JSON (no trailing newline)."""
    obj: dict[str, Any] = {
        "process": op.process,
        "kind": op.kind,
        "key": _b64(op.key),
        "value": _b64(op.value),
        "expected": _b64(op.expected),
        "invoke": op.invoke,
        "complete": op.complete,
        "outcome": op.outcome,
        "result": _b64(op.result),
    }
    if op.kind == "cas":
        obj["swapped"] = op.swapped
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def op_from_json(line: str) -> Op:
    """Decode one line written by ``op_to_json``; raise ``ValueError`` if malformed.

    ``value``, ``expected``, ``complete`` and ``result`` may be left out
    (meaning null), and ``swapped`` (meaning true); unknown fields are rejected.
    """
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, not {type(obj).__name__}")
    unknown = set(obj) - set(_FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    missing = [f for f in _REQUIRED if f not in obj]
    if missing:
        raise ValueError(f"missing fields {missing}")
    kwargs: dict[str, Any] = {f: obj.get(f) for f in _FIELDS}
    for f in _BYTES_FIELDS:
        kwargs[f] = _unb64(kwargs[f], f)
    if kwargs["swapped"] is None:
        kwargs["swapped"] = True
    try:
        return Op(**kwargs)
    except TypeError as e:
        raise ValueError(str(e)) from e


def dumps_history(ops: Iterable[Op]) -> str:
    """Encode a history as JSON lines, one operation per line, in the given order."""
    return "".join(op_to_json(op) + "\n" for op in ops)


def loads_history(text: str) -> list[Op]:
    """Decode JSON lines written by ``dumps_history``, keeping their order.

    Blank lines are skipped. Raise ``ValueError`` naming the line of the first
    malformed operation.
    """
    ops = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            ops.append(op_from_json(line))
        except ValueError as e:
            raise ValueError(f"line {lineno}: {e}") from e
    return ops


def write_history(path: str | os.PathLike[str], ops: Iterable[Op]) -> None:
    """Write a history to ``path`` as UTF-8 JSON lines, replacing the file."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(dumps_history(ops))


def read_history(path: str | os.PathLike[str]) -> list[Op]:
    """Read a history written by ``write_history``; see ``loads_history`` for errors."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return loads_history(text)
    except ValueError as e:
        raise ValueError(f"{os.fspath(path)}: {e}") from e
