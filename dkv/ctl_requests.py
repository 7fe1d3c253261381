# test-case-name: tests.test_ctl_requests
"""``dkvctl``'s words turned into etcd v3 requests, as the JSON gateway
reads them (``POST /v3/kv/...`` bodies: bytes as base64, enums by name).
Pure: no I/O here.

The arguments of ``get``, ``put`` and ``del`` are declared once
(``add_get_arguments`` ...) and serve both the command line and the lines of
a transaction.

The transaction syntax (``dkvctl txn`` reads it from standard input) is
etcdctl's ``txn -i``; ``TXN_SYNTAX`` says it (``dkvctl txn --help`` prints
it).
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from dkv.api.b64 import decode as b64_decode
from dkv.api.b64 import encode as b64_encode
from dkv.ctl_transport import REFUSED, CtlError
from dkv.errors import InvalidArgument

#: The transaction syntax, for people (``dkvctl txn --help``).
TXN_SYNTAX = """\
Reads a transaction from standard input, in etcdctl's txn -i syntax:
compares, a blank line, the operations run if every compare holds, a blank
line, the operations run otherwise:

    value("config") = "v1"
    mod("config") < 7

    put config v2
    get config --prefix

    get config

A compare is TARGET(KEY) OP VALUE or TARGET(KEY, END) OP VALUE (every key
in [KEY, END) must satisfy it); TARGET is value, version, create, mod or
lease; OP is = (or ==), !=, < or >; VALUE is bytes for value and a number
for the others (create("k") = 0: the key does not exist). An operation is
a put, get or del line with the command's own arguments and options (get k
--prefix --limit 2). Words are quoted as in a POSIX shell (put k "two
words"); with --b64 keys and values are base64; a line starting with # is a
comment; a section may be empty; blank lines after the last section are
ignored. Prints SUCCESS or FAILURE, then each operation's output after a
blank line.
"""

#: --sort-by's words (etcdctl's) and the RangeRequest.SortTarget they mean.
SORT_TARGETS = {"KEY": "KEY", "VERSION": "VERSION", "CREATE": "CREATE", "MODIFY": "MOD", "VALUE": "VALUE"}
SORT_ORDERS = ("ASCEND", "DESCEND")

#: A compare's target word -> (Compare.CompareTarget, the field holding its value).
COMPARE_TARGETS = {
    "value": ("VALUE", "value"),
    "version": ("VERSION", "version"),
    "create": ("CREATE", "create_revision"),
    "mod": ("MOD", "mod_revision"),
    "lease": ("LEASE", "lease"),
}
COMPARE_RESULTS = {"=": "EQUAL", "==": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}

#: Per command, the options that only etcd's API has: using one of them
#: (or a range END) makes get/put/delete speak the v3 gateway.
ETCD_OPTIONS = {
    "get": ("end", "prefix", "from_key", "limit", "rev", "sort_by", "order", "keys_only", "count_only"),
    "put": ("prev_kv",),
    "delete": ("end", "prefix", "from_key", "prev_kv"),
}


# -- the arguments, declared once -------------------------------------------------------


def _range_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("key")
    p.add_argument("end", nargs="?", help="end of the range [KEY, END)")
    p.add_argument("--prefix", action="store_true", help="every key starting with KEY")
    p.add_argument("--from-key", action="store_true", help="every key >= KEY")


def add_get_arguments(p: argparse.ArgumentParser) -> None:
    _range_arguments(p)
    p.add_argument("--limit", type=int, default=0, help="at most N keys")
    p.add_argument("--rev", type=int, default=0, help="as of revision N")
    p.add_argument("--sort-by", type=str.upper, choices=list(SORT_TARGETS), help="sort on this")
    p.add_argument("--order", type=str.upper, choices=SORT_ORDERS, help="sort order")
    p.add_argument("--keys-only", action="store_true", help="only the keys")
    p.add_argument("--count-only", action="store_true", help="only how many keys")
    p.add_argument("--serializable", action="store_true", help="read this node's local state")


def add_put_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("key")
    p.add_argument("value")
    p.add_argument("--prev-kv", action="store_true", help="show the key's previous value")


def add_del_arguments(p: argparse.ArgumentParser) -> None:
    _range_arguments(p)
    p.add_argument("--prev-kv", action="store_true", help="show the deleted keys and values")


def uses_etcd_options(command: str, args: argparse.Namespace) -> bool:
    """Whether args use an option only etcd's API has."""
    return any(getattr(args, name, None) for name in ETCD_OPTIONS.get(command, ()))


# -- requests -----------------------------------------------------------------------------


def to_bytes(text: str, b64: bool, what: str = "key") -> bytes:
    """A key or value as given: UTF-8 text, or base64 with ``--b64``."""
    if not b64:
        return text.encode()
    try:
        return b64_decode(text, what)
    except InvalidArgument as e:
        raise CtlError(str(e), REFUSED) from None


def prefix_end(key: bytes) -> bytes:
    """The range end that makes [key, end) every key starting with key:
    key with its last byte below 0xFF plus one (trailing 0xFF dropped), or
    ``\\0`` (every key from key on) when there is no such byte."""
    stripped = key.rstrip(b"\xff")
    if not stripped:
        return b"\x00"
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _span(args: argparse.Namespace, b64: bool) -> dict[str, str]:
    """key and range_end of a get or del, as etcdctl sets them (an empty
    key with --prefix or --from-key means every key)."""
    key = to_bytes(args.key, b64)
    if args.prefix and args.from_key:
        raise CtlError("--prefix and --from-key cannot be used together", REFUSED)
    if args.end is not None and (args.prefix or args.from_key):
        raise CtlError("a range END cannot be used with --prefix or --from-key", REFUSED)
    end: bytes | None = None
    if args.prefix:
        key, end = (key, prefix_end(key)) if key else (b"\x00", b"\x00")
    elif args.from_key:
        key, end = (key or b"\x00"), b"\x00"
    elif args.end is not None:
        end = to_bytes(args.end, b64)
    span = {"key": b64_encode(key)}
    if end is not None:
        span["range_end"] = b64_encode(end)
    return span


def range_request(args: argparse.Namespace, b64: bool) -> dict[str, Any]:
    """The RangeRequest of a get."""
    request: dict[str, Any] = _span(args, b64)
    if args.limit:
        request["limit"] = args.limit
    if args.rev:
        request["revision"] = args.rev
    if args.sort_by:
        request["sort_target"] = SORT_TARGETS[args.sort_by]
    if args.order:
        request["sort_order"] = args.order
    for flag in ("serializable", "keys_only", "count_only"):
        if getattr(args, flag):
            request[flag] = True
    return request


def put_request(args: argparse.Namespace, b64: bool) -> dict[str, Any]:
    """The PutRequest of a put."""
    request: dict[str, Any] = {
        "key": b64_encode(to_bytes(args.key, b64)),
        "value": b64_encode(to_bytes(args.value, b64, "value")),
    }
    if args.prev_kv:
        request["prev_kv"] = True
    return request


def delete_request(args: argparse.Namespace, b64: bool) -> dict[str, Any]:
    """The DeleteRangeRequest of a del."""
    request: dict[str, Any] = _span(args, b64)
    if args.prev_kv:
        request["prev_kv"] = True
    return request


# -- transactions -------------------------------------------------------------------------


class _OpParser(argparse.ArgumentParser):
    """argparse for one operation line: errors raise instead of exiting."""

    def error(self, message: str) -> Any:
        raise CtlError(message, REFUSED)


def _op_parser() -> _OpParser:
    p = _OpParser(prog="txn", add_help=False)
    ops = p.add_subparsers(dest="op", required=True, parser_class=_OpParser)
    add_get_arguments(ops.add_parser("get", add_help=False))
    add_put_arguments(ops.add_parser("put", add_help=False))
    add_del_arguments(ops.add_parser("del", aliases=["delete"], add_help=False))
    return p


_OPS = _op_parser()


def parse_op(line: str, b64: bool) -> dict[str, Any]:
    """One operation line as a RequestOp."""
    words = _words(line)
    if not words or words[0] not in ("get", "put", "del", "delete"):
        raise CtlError(f"unknown operation {words[0] if words else ''!r}: want get, put or del", REFUSED)
    args = _OPS.parse_args(words)
    if args.op == "get":
        return {"request_range": range_request(args, b64)}
    if args.op == "put":
        return {"request_put": put_request(args, b64)}
    return {"request_delete_range": delete_request(args, b64)}


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as e:
        raise CtlError(str(e), REFUSED) from None


def _compare_tokens(line: str) -> list[str]:
    """The words and punctuation of a compare: ``value("k") != "v"`` ->
    ``["value", "(", "k", ")", "!=", "v"]``."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="()=!<>,")
    lexer.wordchars += ":@%+^&[]{}|;$?*~#"  # bare keys need no quotes
    tokens = []
    try:
        for token in lexer:
            if token and set(token) <= set("()=!<>,") and token not in COMPARE_RESULTS:
                tokens += _split_punctuation(token)
            else:
                tokens.append(token)
    except ValueError as e:
        raise CtlError(str(e), REFUSED) from None
    return tokens


def _split_punctuation(run: str) -> list[str]:
    """A run of punctuation shlex kept together (``")!="``) cut into tokens."""
    tokens = []
    while run:
        size = 2 if run[:2] in ("!=", "==") else 1
        tokens.append(run[:size])
        run = run[size:]
    return tokens


def parse_compare(line: str, b64: bool) -> dict[str, Any]:
    """One compare line as a Compare."""
    tokens = _compare_tokens(line)
    shape = "TARGET(KEY) OP VALUE or TARGET(KEY, END) OP VALUE"
    if len(tokens) == 6 and tokens[1] == "(" and tokens[3] == ")":
        target, key, end, op, value = tokens[0], tokens[2], None, tokens[4], tokens[5]
    elif len(tokens) == 8 and tokens[1] == "(" and tokens[3] == "," and tokens[5] == ")":
        target, key, end, op, value = tokens[0], tokens[2], tokens[4], tokens[6], tokens[7]
    else:
        raise CtlError(f"not a compare: want {shape}", REFUSED)
    if target.lower() not in COMPARE_TARGETS:
        raise CtlError(f"unknown compare target {target!r}: want one of {', '.join(COMPARE_TARGETS)}", REFUSED)
    if op not in COMPARE_RESULTS:
        raise CtlError(f"unknown comparison {op!r}: want one of =, !=, <, >", REFUSED)
    name, field = COMPARE_TARGETS[target.lower()]
    compare: dict[str, Any] = {"key": b64_encode(to_bytes(key, b64)), "target": name, "result": COMPARE_RESULTS[op]}
    if end is not None:
        compare["range_end"] = b64_encode(to_bytes(end, b64))
    if name == "VALUE":
        compare[field] = b64_encode(to_bytes(value, b64, "value"))
    else:
        try:
            compare[field] = int(value)
        except ValueError:
            raise CtlError(f"{target} compares with a number, not {value!r}", REFUSED) from None
    return compare


def parse_txn(text: str, b64: bool = False) -> dict[str, Any]:
    """A transaction in the syntax above as a TxnRequest. Raises CtlError
    naming the line it could not read."""
    sections: list[list[dict[str, Any]]] = [[], [], []]
    section = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            section += 1
            continue
        if line.startswith("#"):
            continue
        if section > 2:
            raise CtlError(f"txn line {number}: more than three sections (compares, success, failure)", REFUSED)
        try:
            sections[section].append(parse_compare(line, b64) if section == 0 else parse_op(line, b64))
        except CtlError as e:
            raise CtlError(f"txn line {number}: {e}", REFUSED) from None
    compare, success, failure = sections
    request: dict[str, Any] = {}
    for name, items in (("compare", compare), ("success", success), ("failure", failure)):
        if items:
            request[name] = items
    return request
