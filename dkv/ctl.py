# test-case-name: tests.test_ctl
"""``dkvctl``: operate a dkv cluster over REST, from any node.

    dkvctl [--endpoint HOST:PORT] [--json] status
    dkvctl members list | add ID ADDRESS [--learner] | remove ID | promote ID
    dkvctl leader transfer [TO]
    dkvctl put KEY VALUE | get KEY [--serializable] | delete KEY

The endpoint is a node's REST address (default ``$DKV_ENDPOINT`` or
127.0.0.1:7071). Keys and values are text (UTF-8) unless ``--b64`` says they
are base64 already. Tables are for people; ``--json`` prints the node's JSON
answer for scripts. Exit status: 0 on success, 1 when the node refused
(its error is printed), 2 when it could not be reached.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TextIO

from dkv.api.b64 import encode as b64_encode


class CtlError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _url(endpoint: str, path: str) -> str:
    base = endpoint if "://" in endpoint else f"http://{endpoint}"
    return base.rstrip("/") + path


def request(endpoint: str, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(_url(endpoint, path), data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            answer = json.loads(e.read())
            message = f"{answer.get('error', e.reason)} (HTTP {e.code}, code {answer.get('code')})"
        except ValueError:
            message = f"HTTP {e.code} {e.reason}"
        raise CtlError(message, 1) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CtlError(f"cannot reach {endpoint}: {reason}", 2) from None


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _members_table(view: dict[str, Any], out: TextIO) -> None:
    rows = [["ID", "ADDRESS", "ROLE", "LEADER"]]
    for m in view["members"]:
        rows.append(
            [
                m["id"],
                m["address"],
                "voter" if m["voter"] else "learner",
                "*" if m["id"] == view.get("leader_id") else "",
            ]
        )
    _table(rows, out)


def _encode(text: str, is_b64: bool) -> str:
    if is_b64:
        return text
    return b64_encode(text.encode())


def _decode(b64: str, is_b64: bool) -> str:
    if is_b64:
        return b64
    raw = base64.b64decode(b64)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return "base64:" + b64


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dkvctl", description="Operate a dkv cluster over REST.")
    p.add_argument("--endpoint", default=os.environ.get("DKV_ENDPOINT", "127.0.0.1:7071"), help="a node's REST address")
    p.add_argument("--json", action="store_true", help="print the node's JSON answer")
    p.add_argument("--b64", action="store_true", help="keys and values are given and shown as base64")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="this node's view of the cluster")
    members = sub.add_parser("members", help="list or change members").add_subparsers(dest="action", required=True)
    members.add_parser("list")
    add = members.add_parser("add", help="add a member (use --learner for a new node)")
    add.add_argument("id")
    add.add_argument("address", help="its RPC address, HOST:PORT")
    add.add_argument("--learner", action="store_true")
    members.add_parser("remove").add_argument("id")
    members.add_parser("promote").add_argument("id")
    leader = sub.add_parser("leader", help="leadership").add_subparsers(dest="action", required=True)
    leader.add_parser("transfer", help="hand leadership to TO (default: the most up-to-date voter)").add_argument(
        "to", nargs="?"
    )
    put = sub.add_parser("put")
    put.add_argument("key")
    put.add_argument("value")
    get = sub.add_parser("get")
    get.add_argument("key")
    get.add_argument("--serializable", action="store_true", help="read this node's local state")
    sub.add_parser("delete").add_argument("key")
    return p


def run(args: argparse.Namespace, out: TextIO) -> None:
    ep, t = args.endpoint, args.timeout
    if args.command == "status":
        st = request(ep, "GET", "/v0/status", timeout=t)
        if args.json:
            out.write(json.dumps(st) + "\n")
            return
        for field in (
            "id",
            "role",
            "term",
            "leader_id",
            "commit_index",
            "applied_index",
            "first_index",
            "last_index",
            "snapshot_index",
        ):
            out.write(f"{field + ':':16}{st[field]}\n")
        rows = [["ID", "ADDRESS", "ROLE", "MATCH"]]
        for m in st["members"]:
            rows.append([m["id"], m["address"], "voter" if m["voter"] else "learner", str(m["match_index"])])
        out.write("\n")
        _table(rows, out)
        return
    if args.command == "members":
        if args.action == "list":
            view = request(ep, "GET", "/v0/members", timeout=t)
        elif args.action == "add":
            body = {"id": args.id, "address": args.address, "learner": args.learner}
            view = request(ep, "POST", "/v0/members", body, timeout=t)
        elif args.action == "remove":
            view = request(ep, "DELETE", f"/v0/members/{urllib.parse.quote(args.id, safe='')}", timeout=t)
        else:
            view = request(ep, "POST", f"/v0/members/{urllib.parse.quote(args.id, safe='')}/promote", timeout=t)
        if args.json:
            out.write(json.dumps(view) + "\n")
        else:
            _members_table(view, out)
        return
    if args.command == "leader":
        answer = request(ep, "POST", "/v0/leader/transfer", {"to": args.to} if args.to else {}, timeout=t)
        out.write(json.dumps(answer) + "\n" if args.json else f"leader: {answer['leader_id']}\n")
        return
    key = urllib.parse.quote(_encode(args.key, args.b64), safe="")
    if args.command == "put":
        answer = request(
            ep,
            "POST",
            "/v0/kv",
            {"key": _encode(args.key, args.b64), "value": _encode(args.value, args.b64)},
            timeout=t,
        )
        out.write(json.dumps(answer) + "\n" if args.json else "OK\n")
    elif args.command == "get":
        query = "?consistency=serializable" if args.serializable else ""
        answer = request(ep, "GET", f"/v0/kv/key/{key}{query}", timeout=t)
        out.write(json.dumps(answer) + "\n" if args.json else _decode(answer["value"], args.b64) + "\n")
    else:
        answer = request(ep, "DELETE", f"/v0/kv/key/{key}", timeout=t)
        out.write(json.dumps(answer) + "\n" if args.json else "OK\n")


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        run(args, sys.stdout)
    except CtlError as e:
        sys.stderr.write(f"dkvctl: {e}\n")
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
