# test-case-name: tests.test_ctl,tests.compat.test_dkvctl
"""``dkvctl``: operate a dkv cluster over REST, from any node.

    dkvctl [--endpoint HOST:PORT[,HOST:PORT...]] [--cacert F --cert F --key F] [--json] [--b64] status
    dkvctl members list | add ID ADDRESS [--learner] | remove ID | promote ID
    dkvctl leader transfer [TO]
    dkvctl put KEY VALUE | get KEY [--serializable] | delete KEY
    dkvctl get KEY [END] [--prefix|--from-key] [--limit N] [--rev N]
                   [--sort-by KEY|VERSION|CREATE|MODIFY|VALUE] [--order ASCEND|DESCEND]
                   [--keys-only] [--count-only]
    dkvctl put KEY VALUE --prev-kv | del KEY [END] [--prefix|--from-key] [--prev-kv]
    dkvctl txn < FILE | compact REV | hash | hashkv [--rev N] | endpoint status | alarm list|disarm
    dkvctl watch KEY [END] [--prefix] [--rev N] [--prev-kv]
    dkvctl lock NAME [--ttl N] [-- COMMAND ARGS...]
    dkvctl snapshot save FILE | snapshot status FILE [--skip-hash-check]

The endpoint is a node's REST address (default ``$DKV_ENDPOINT`` or
127.0.0.1:7071); several, comma-separated, are tried in order: the next when
one cannot be reached. ``--cacert``, ``--cert`` and ``--key`` (etcdctl's
names; or ``$DKVCTL_CACERT``, ``$DKVCTL_CERT``, ``$DKVCTL_KEY``) speak HTTPS
to a node with TLS: trust that CA, present that client certificate; an
endpoint without a scheme is then ``https``. Keys and values are text (UTF-8) unless ``--b64``
says they are base64 already. Tables are for people; ``--json`` prints the
node's JSON answer for scripts. Exit status: 0 on success, 1 when the node
refused (its error is printed) or dkvctl could not read what it was given,
2 when it could not be reached.

Two APIs. ``put``, ``get`` and ``delete`` (or ``del``) without etcd's
options speak dkv's own ``/v0`` and print as they always have: ``OK``, the
value alone, a missing key is an error. With any option only etcd has (a
range END, ``--prefix``, ``--from-key``, ``--limit``, ``--rev``,
``--sort-by``, ``--order``, ``--keys-only``, ``--count-only``,
``--prev-kv``), or with ``--v3``, they speak etcd's v3 JSON gateway and print
as etcdctl does (``dkv.ctl_etcd``): each key and its value, nothing for a
missing key, ``del`` prints how many keys it deleted. ``txn``, ``compact``,
``hash``, ``hashkv``, ``endpoint status`` and ``alarm`` always speak the v3 gateway, so
they work against etcd too (except ``hashkv``: etcd 3.4's gateway routes no
HashKV); ``hash``, ``hashkv`` and ``endpoint status`` ask every endpoint.

``watch`` and ``lock`` run until done or interrupted, on ``dkv.client``
(``dkv.ctl_stream``): they print and behave as etcdctl's, and fail over
between the endpoints.

``snapshot save`` writes a checked backup of an endpoint's db to a file, and
``snapshot status`` says what a backup holds (``dkv.ctl_snapshot``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import urllib.parse
from typing import Any, TextIO

from dkv import ctl_etcd, ctl_snapshot, ctl_stream, ctl_transport
from dkv.api.b64 import encode as b64_encode
from dkv.ctl_requests import TXN_SYNTAX, add_del_arguments, add_get_arguments, add_put_arguments, uses_etcd_options
from dkv.ctl_transport import CtlError, split_endpoints, ssl_context

__all__ = ["CtlError", "main", "parser", "run"]


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dkvctl", description="Operate a dkv cluster over REST.")
    p.add_argument(
        "--endpoint", "--endpoints", dest="endpoint", default=os.environ.get("DKV_ENDPOINT", "127.0.0.1:7071"),
        help="a node's REST address; several, comma-separated, are tried in order",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the node's JSON answer")
    p.add_argument("--b64", action="store_true", help="keys and values are given and shown as base64")
    p.add_argument("--v3", action="store_true", help="put, get and delete speak etcd's v3 gateway without its options")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer")
    # (dest names apart from the commands' KEY argument)
    p.add_argument(
        "--cacert", dest="tls_cacert", default=os.environ.get("DKVCTL_CACERT"),
        help="HTTPS: trust the CA certificates in this file",
    )  # fmt: skip
    p.add_argument(
        "--cert", dest="tls_cert", default=os.environ.get("DKVCTL_CERT"), help="HTTPS: present this client certificate"
    )
    p.add_argument("--key", dest="tls_key", default=os.environ.get("DKVCTL_KEY"), help="HTTPS: the key of --cert")
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
    add_put_arguments(sub.add_parser("put", help="write a key"))
    add_get_arguments(sub.add_parser("get", help="read a key, or a range of keys"))
    add_del_arguments(sub.add_parser("delete", aliases=["del"], help="delete a key, or a range of keys"))
    sub.add_parser(
        "txn", help="a transaction read from standard input", description=TXN_SYNTAX,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub.add_parser("compact", help="forget the history before a revision").add_argument("revision", type=int)
    sub.add_parser("hash", help="each endpoint's hash of its whole store (etcd's Maintenance.Hash)")
    sub.add_parser("hashkv", help="each endpoint's hash of the keyspace's history").add_argument(
        "--rev", type=int, default=0, help="as of revision N (default: the newest)"
    )
    alarm = sub.add_parser("alarm", help="list or disarm alarms (NOSPACE)").add_subparsers(dest="action", required=True)
    alarm.add_parser("list", help="the active alarms")
    alarm.add_parser("disarm", help="clear every active alarm (writes resume)")
    endpoint = sub.add_parser("endpoint", help="each endpoint's state").add_subparsers(dest="action", required=True)
    endpoint.add_parser("status", help="version, db size, leadership, raft term and index")
    ctl_stream.add_watch_arguments(sub.add_parser("watch", help="print each change of a key or range till interrupted"))
    ctl_stream.add_lock_arguments(
        sub.add_parser("lock", help="hold a lock (etcd's, as etcdctl lock), running a command meanwhile")
    )
    ctl_snapshot.add_arguments(sub.add_parser("snapshot", help="back up an endpoint's db, or inspect a backup"))
    return p


#: Commands that run on a reactor until done or interrupted (dkv.ctl_stream).
STREAM_COMMANDS = ("watch", "lock")
#: Commands that always speak etcd's v3 gateway.
V3_COMMANDS = ("txn", "compact", "hash", "hashkv", "endpoint", "alarm")


def speaks_v3(args: argparse.Namespace) -> bool:
    """Whether args go to etcd's v3 gateway rather than dkv's /v0."""
    command = "delete" if args.command == "del" else args.command
    return command in V3_COMMANDS or (
        command in ("put", "get", "delete") and (args.v3 or uses_etcd_options(command, args))
    )


def run(args: argparse.Namespace, out: TextIO, stdin: TextIO | None = None) -> None:
    args.endpoints = split_endpoints(args.endpoint)
    args.tls = ssl_context(args.tls_cacert, args.tls_cert, args.tls_key)
    request = functools.partial(ctl_transport.request, tls=args.tls)
    if args.command in STREAM_COMMANDS:
        ctl_stream.run(args)
        return
    if args.command == "snapshot":
        ctl_snapshot.run(args, out)
        return
    if speaks_v3(args):
        ctl_etcd.run(args, out, sys.stdin if stdin is None else stdin)
        return
    ep, t = args.endpoints, args.timeout
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
        out.write(json.dumps(answer) + "\n" if args.json else ctl_etcd.show(answer["value"], args.b64) + "\n")
    else:
        answer = request(ep, "DELETE", f"/v0/kv/key/{key}", timeout=t)
        out.write(json.dumps(answer) + "\n" if args.json else "OK\n")


#: dkvctl's options that take a value (they come before the command).
_VALUED_OPTIONS = ("--endpoint", "--endpoints", "--timeout", "--cacert", "--cert", "--key")


def _command_index(argv: list[str]) -> int:
    """Where the command (the first argument that is not an option or an
    option's value) is in argv; -1 if there is none."""
    i = 0
    while i < len(argv):
        if argv[i] in _VALUED_OPTIONS:
            i += 2
        elif argv[i].startswith("-"):
            i += 1
        else:
            return i
    return -1


def parse(argv: list[str]) -> argparse.Namespace:
    """argv's arguments; for ``lock``, everything after the first ``--`` is
    the command to run (its options are not dkvctl's)."""
    at = _command_index(argv)
    if at >= 0 and argv[at] == "lock" and "--" in argv[at:]:
        split = argv.index("--", at)
        args = parser().parse_args(argv[:split])
        args.exec_command = [*args.exec_command, *argv[split + 1 :]]
        return args
    return parser().parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        run(args, sys.stdout)
    except CtlError as e:
        sys.stderr.write(f"dkvctl: {e}\n")
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
