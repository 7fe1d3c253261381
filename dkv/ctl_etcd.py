# test-case-name: tests.test_ctl_requests,tests.compat.test_dkvctl
"""``dkvctl``'s etcd-style commands: requests to etcd's v3 JSON gateway
(``POST /v3/...``, the paths etcd serves on its client port and dkv on its
REST port), answers printed as etcdctl's simple format prints them, or, with
``--json``, the gateway's answer as it came.

    get KEY [END] [--prefix|--from-key] [--limit N] [--rev N] [--sort-by T]
        [--order O] [--keys-only] [--count-only] [--serializable]
                                 each key, then its value, a line each
    put KEY VALUE [--prev-kv]    OK (then the previous key and value)
    del KEY [END] [--prefix|--from-key] [--prev-kv]
                                 how many were deleted (then each key and value)
    txn                          SUCCESS or FAILURE, then each operation's output
                                 after a blank line (syntax: ``dkvctl txn --help``)
    compact REV                  compacted revision REV
    hash                         ENDPOINT, HASH for every endpoint (Maintenance.Hash)
    hashkv [--rev N]             ENDPOINT, HASH, COMPACT_REVISION for every endpoint
                                 (Maintenance.HashKV at /v3/maintenance/hashkv; etcd
                                 3.4's gateway does not route it: its HTTP rule repeats
                                 Hash's path, where Hash answers)
    alarm list                   memberID:ID alarm:TYPE for every active alarm
    alarm disarm                 the same for each alarm it cleared (a DEACTIVATE
                                 for each listed alarm, as etcdctl's)
    endpoint status              ENDPOINT, ID, VERSION, DB SIZE, IS LEADER,
                                 IS LEARNER, RAFT TERM, RAFT INDEX,
                                 RAFT APPLIED INDEX, ERRORS for every endpoint

Keys and values are printed as UTF-8 text, as ``base64:...`` when they are
not, and as base64 with ``--b64``. Member ids are printed in hex, as etcdctl
does.
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from dkv.ctl_requests import delete_request, parse_txn, put_request, range_request
from dkv.ctl_transport import CtlError, request


def show(b64_text: str, is_b64: bool) -> str:
    """How a key or value (base64 in the JSON answer) is printed."""
    if is_b64:
        return b64_text
    raw = base64.b64decode(b64_text)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return "base64:" + b64_text


def _kv_lines(kvs: Sequence[dict[str, Any]], b64: bool, keys_only: bool = False) -> list[str]:
    lines = []
    for kv in kvs:
        lines.append(show(kv.get("key", ""), b64))
        if not keys_only:
            lines.append(show(kv.get("value", ""), b64))
    return lines


def range_lines(answer: dict[str, Any], request: dict[str, Any], b64: bool) -> list[str]:
    """A RangeResponse: each key and value; only the keys for keys_only,
    only the count for count_only."""
    if request.get("count_only"):
        return [str(answer.get("count", "0"))]
    return _kv_lines(answer.get("kvs", []), b64, keys_only=bool(request.get("keys_only")))


def put_lines(answer: dict[str, Any], b64: bool) -> list[str]:
    """A PutResponse: OK, then the previous key and value if asked for and there."""
    prev = answer.get("prev_kv")
    return ["OK", *(_kv_lines([prev], b64) if prev else [])]


def delete_lines(answer: dict[str, Any], b64: bool) -> list[str]:
    """A DeleteRangeResponse: how many keys were deleted, then each if asked for."""
    return [str(answer.get("deleted", "0")), *_kv_lines(answer.get("prev_kvs", []), b64)]


def txn_lines(answer: dict[str, Any], txn: dict[str, Any], b64: bool) -> list[str]:
    """A TxnResponse: SUCCESS or FAILURE, then a blank line and the output of
    each operation of the branch that ran."""
    succeeded = bool(answer.get("succeeded"))
    ops = txn.get("success" if succeeded else "failure", [])
    lines = ["SUCCESS" if succeeded else "FAILURE"]
    for op, response in zip(ops, answer.get("responses", []), strict=False):
        lines.append("")
        if "response_range" in response:
            lines += range_lines(response["response_range"], op.get("request_range", {}), b64)
        elif "response_put" in response:
            lines += put_lines(response["response_put"], b64)
        elif "response_delete_range" in response:
            lines += delete_lines(response["response_delete_range"], b64)
        else:
            lines.append(json.dumps(response))
    return lines


def human_bytes(size: int) -> str:
    """A byte count as etcdctl prints a db size: SI units, ``20 kB``, ``1.5 MB``."""
    if size < 10:
        return f"{size} B"
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    value = float(size)
    unit = 0
    while value >= 1000 and unit < len(units) - 1:
        value /= 1000
        unit += 1
    text = f"{value:.0f}" if value >= 10 or unit == 0 else f"{value:.1f}"
    return f"{text} {units[unit]}"


def _hex_id(decimal: Any) -> str:
    return format(int(decimal or 0), "x")


def status_line(endpoint: str, answer: dict[str, Any]) -> str:
    """One member's StatusResponse as etcdctl's ``endpoint status`` row."""
    member = answer.get("header", {}).get("member_id", "0")
    fields = [
        endpoint,
        _hex_id(member),
        answer.get("version", ""),
        human_bytes(int(answer.get("dbSize", 0))),
        str(answer.get("leader", "0") == member).lower(),
        str(bool(answer.get("isLearner", False))).lower(),
        str(answer.get("raftTerm", "0")),
        str(answer.get("raftIndex", "0")),
        str(answer.get("raftAppliedIndex", "0")),
        ", ".join(answer.get("errors", [])),
    ]
    return ", ".join(fields)


def hash_line(endpoint: str, answer: dict[str, Any]) -> str:
    return f"{endpoint}, {answer.get('hash', 0)}"


def hashkv_line(endpoint: str, answer: dict[str, Any]) -> str:
    return f"{hash_line(endpoint, answer)}, {answer.get('compact_revision', '0')}"


def alarm_lines(answer: dict[str, Any]) -> list[str]:
    """An AlarmResponse as etcdctl prints it: ``memberID:ID alarm:TYPE ``
    (etcdctl ends the line with a space)."""
    return [f"memberID:{a.get('memberID', '0')} alarm:{a.get('alarm', 'NONE')} " for a in answer.get("alarms", [])]


def _disarm(call: Callable[[str, dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """etcdctl's ``alarm disarm``: list the alarms, then DEACTIVATE each;
    the alarms cleared, as one AlarmResponse."""
    cleared: list[dict[str, Any]] = []
    for alarm in call("/v3/maintenance/alarm", {}).get("alarms", []):
        body = {"action": "DEACTIVATE", "memberID": alarm.get("memberID", "0"), "alarm": alarm.get("alarm", "NONE")}
        cleared += call("/v3/maintenance/alarm", body).get("alarms", [])
    return {"alarms": cleared}


def _each_endpoint(
    args: argparse.Namespace, path: str, body: dict[str, Any], line: Callable[[str, dict[str, Any]], str], out: TextIO
) -> None:
    """Ask every endpoint; print a line (or, with --json, a JSON list) of
    the answers; then fail with the first endpoint that did not answer."""
    answers, failures = [], []
    for endpoint in args.endpoints:
        try:
            tls = getattr(args, "tls", None)
            answers.append((endpoint, request([endpoint], "POST", path, body, timeout=args.timeout, tls=tls)))
        except CtlError as e:
            failures.append(e)
    if args.json:
        out.write(json.dumps([{"endpoint": ep, "answer": answer} for ep, answer in answers]) + "\n")
    else:
        for endpoint, answer in answers:
            out.write(line(endpoint, answer) + "\n")
    if failures:
        raise failures[0]


def run(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> None:
    """Run the etcd-style command args name."""
    b64 = args.b64

    def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
        return request(args.endpoints, "POST", path, body, timeout=args.timeout, tls=getattr(args, "tls", None))

    def emit(answer: dict[str, Any], lines: list[str]) -> None:
        if args.json:
            out.write(json.dumps(answer) + "\n")
        elif lines:
            out.write("\n".join(lines) + "\n")

    command = args.command
    if command == "get":
        body = range_request(args, b64)
        answer = call("/v3/kv/range", body)
        emit(answer, range_lines(answer, body, b64))
    elif command == "put":
        answer = call("/v3/kv/put", put_request(args, b64))
        emit(answer, put_lines(answer, b64))
    elif command in ("delete", "del"):
        answer = call("/v3/kv/deleterange", delete_request(args, b64))
        emit(answer, delete_lines(answer, b64))
    elif command == "txn":
        txn = parse_txn(stdin.read(), b64)
        answer = call("/v3/kv/txn", txn)
        emit(answer, txn_lines(answer, txn, b64))
    elif command == "compact":
        answer = call("/v3/kv/compaction", {"revision": args.revision})
        emit(answer, [f"compacted revision {args.revision}"])
    elif command == "hash":
        _each_endpoint(args, "/v3/maintenance/hash", {}, hash_line, out)
    elif command == "hashkv":
        _each_endpoint(args, "/v3/maintenance/hashkv", {"revision": args.rev} if args.rev else {}, hashkv_line, out)
    elif command == "alarm":
        answer = call("/v3/maintenance/alarm", {}) if args.action == "list" else _disarm(call)
        emit(answer, alarm_lines(answer))
    elif command == "endpoint":
        _each_endpoint(args, "/v3/maintenance/status", {}, status_line, out)
    else:
        raise ValueError(f"not an etcd-style command: {command}")
