"""dkvctl's etcd requests and answers without a server: which API a
command speaks, the arguments of get, put and del as gateway bodies, the
transaction syntax, and the answers as dkvctl prints them."""

from __future__ import annotations

import base64

import pytest

from dkv.ctl import parser, speaks_v3
from dkv.ctl_etcd import (
    delete_lines,
    hash_line,
    hashkv_line,
    human_bytes,
    put_lines,
    range_lines,
    status_line,
    txn_lines,
)
from dkv.ctl_requests import TXN_SYNTAX, parse_compare, parse_op, parse_txn, prefix_end
from dkv.ctl_transport import CtlError


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def cli(*argv: str):
    return parser().parse_args(list(argv))


# -- which API a command speaks -----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "v3"),
    [
        (["get", "k"], False),
        (["get", "k", "--serializable"], False),
        (["put", "k", "v"], False),
        (["delete", "k"], False),
        (["del", "k"], False),
        (["status"], False),
        (["get", "k", "z"], True),
        (["get", "k", "--prefix"], True),
        (["get", "k", "--from-key"], True),
        (["get", "k", "--limit", "1"], True),
        (["get", "k", "--rev", "3"], True),
        (["get", "k", "--sort-by", "modify"], True),
        (["get", "k", "--order", "descend"], True),
        (["get", "k", "--keys-only"], True),
        (["get", "k", "--count-only"], True),
        (["put", "k", "v", "--prev-kv"], True),
        (["del", "k", "--prefix"], True),
        (["delete", "k", "--prev-kv"], True),
        (["--v3", "get", "k"], True),
        (["--v3", "put", "k", "v"], True),
        (["txn"], True),
        (["compact", "3"], True),
        (["hash"], True),
        (["hashkv"], True),
        (["endpoint", "status"], True),
    ],
)
def test_plain_put_get_delete_stay_on_v0_and_etcd_options_choose_v3(argv: list[str], v3: bool) -> None:
    assert speaks_v3(cli(*argv)) is v3


# -- get, put, del ----------------------------------------------------------------------------


def test_prefix_end_is_etcds() -> None:
    assert prefix_end(b"foo") == b"fop"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"a\xfe\xff\xff") == b"a\xff"
    assert prefix_end(b"\xff\xff") == b"\x00"


def test_get_options_as_a_range_request() -> None:
    assert parse_op("get foo", False) == {"request_range": {"key": b64("foo")}}
    assert parse_op("get foo zoo", False) == {"request_range": {"key": b64("foo"), "range_end": b64("zoo")}}
    assert parse_op("get foo --prefix", False) == {"request_range": {"key": b64("foo"), "range_end": b64("fop")}}
    assert parse_op("get foo --from-key", False) == {"request_range": {"key": b64("foo"), "range_end": "AA=="}}
    everything = {"request_range": {"key": "AA==", "range_end": "AA=="}}
    assert parse_op("get '' --prefix", False) == everything
    assert parse_op("get '' --from-key", False) == everything
    full = parse_op(
        "get foo --prefix --limit 2 --rev 7 --sort-by modify --order descend --keys-only --count-only --serializable",
        False,
    )
    assert full == {
        "request_range": {
            "key": b64("foo"), "range_end": b64("fop"), "limit": 2, "revision": 7, "sort_target": "MOD",
            "sort_order": "DESCEND", "serializable": True, "keys_only": True, "count_only": True,
        }
    }  # fmt: skip


def test_put_and_del_as_requests() -> None:
    assert parse_op('put k "two words"', False) == {"request_put": {"key": b64("k"), "value": b64("two words")}}
    assert parse_op("put k v --prev-kv", False)["request_put"]["prev_kv"] is True
    assert parse_op("del k --prefix --prev-kv", False) == {
        "request_delete_range": {"key": b64("k"), "range_end": b64("l"), "prev_kv": True}
    }
    assert parse_op("delete k", False) == {"request_delete_range": {"key": b64("k")}}


def test_b64_keys_and_values_are_decoded_first() -> None:
    key, zero, one = b64(b"a\xff"), b64(b"\x00"), b64(b"\x01")
    assert parse_op(f"get {key} --prefix", True) == {"request_range": {"key": key, "range_end": b64(b"b")}}
    assert parse_op(f"put {zero} {one}", True) == {"request_put": {"key": zero, "value": one}}
    with pytest.raises(CtlError, match="key is not valid base64") as err:
        parse_op("get not*base64", True)
    assert err.value.exit_code == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("get k --prefix --from-key", "--prefix and --from-key cannot be used together"),
        ("get k z --prefix", "a range END cannot be used with --prefix or --from-key"),
        ("get k --sort-by size", "invalid choice: 'SIZE'"),
        ("get k --limit many", "invalid int value: 'many'"),
        ("put k", "the following arguments are required: value"),
        ("watch k", "unknown operation 'watch': want get, put or del"),
        ('put k "unclosed', "No closing quotation"),
    ],
)
def test_bad_operations_are_refused(line: str, message: str) -> None:
    with pytest.raises(CtlError, match=message) as err:
        parse_op(line, False)
    assert err.value.exit_code == 1


# -- compares and transactions ------------------------------------------------------------


def test_compares_on_every_target_with_every_operator() -> None:
    assert parse_compare('value("k") = "v"', False) == {
        "key": b64("k"), "target": "VALUE", "result": "EQUAL", "value": b64("v")
    }  # fmt: skip
    assert parse_compare('version("k") != "2"', False) == {
        "key": b64("k"), "target": "VERSION", "result": "NOT_EQUAL", "version": 2
    }  # fmt: skip
    assert parse_compare("create(k) == 0", False)["create_revision"] == 0
    assert parse_compare("mod(k) < 9", False) == {"key": b64("k"), "target": "MOD", "result": "LESS", "mod_revision": 9}
    assert parse_compare("lease(k)>7", False) == {"key": b64("k"), "target": "LEASE", "result": "GREATER", "lease": 7}
    assert parse_compare('MOD("a", "b") > 3', False) == {
        "key": b64("a"), "range_end": b64("b"), "target": "MOD", "result": "GREATER", "mod_revision": 3
    }  # fmt: skip
    assert parse_compare('value("a)b") != "x y"', False)["key"] == b64("a)b")
    assert parse_compare('value("k") = ""', False)["value"] == ""
    assert parse_compare("value(a:b/c-d@e) = x", False)["key"] == b64("a:b/c-d@e")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('value("k") =', "not a compare"),
        ('value("k") >= 3', "not a compare"),
        ("value k = v", "not a compare"),
        ('size("k") = 3', "unknown compare target 'size'"),
        ('mod("k") = "three"', "mod compares with a number, not 'three'"),
        ('value("k) = "v"', "No closing quotation"),
    ],
)
def test_bad_compares_are_refused(line: str, message: str) -> None:
    with pytest.raises(CtlError, match=message):
        parse_compare(line, False)


TXN = """\
# configuration: swap v1 for v2
value("config") = "v1"
mod("config") < 7

put config v2
get config --prefix

get config
"""


def test_a_transaction_in_three_sections() -> None:
    assert parse_txn(TXN) == {
        "compare": [
            {"key": b64("config"), "target": "VALUE", "result": "EQUAL", "value": b64("v1")},
            {"key": b64("config"), "target": "MOD", "result": "LESS", "mod_revision": 7},
        ],
        "success": [
            {"request_put": {"key": b64("config"), "value": b64("v2")}},
            {"request_range": {"key": b64("config"), "range_end": b64("confih")}},
        ],
        "failure": [{"request_range": {"key": b64("config")}}],
    }


def test_the_example_in_the_help_is_this_transaction() -> None:
    block = TXN_SYNTAX.split("otherwise:\n\n")[1].split("\n\nA compare")[0]
    assert parse_txn("\n".join(line[4:] for line in block.splitlines())) == parse_txn(TXN)


def test_sections_may_be_empty_and_trailing_blank_lines_do_not_count() -> None:
    assert parse_txn("") == {}
    assert parse_txn("\nput a b\n") == {"success": [{"request_put": {"key": b64("a"), "value": b64("b")}}]}
    assert parse_txn("\n\ndel a\n\n\n\n") == {"failure": [{"request_delete_range": {"key": b64("a")}}]}
    assert parse_txn('mod("a") > 1\n') == {
        "compare": [{"key": b64("a"), "target": "MOD", "result": "GREATER", "mod_revision": 1}]
    }
    assert parse_txn("  \t\n   put a b  \n") == parse_txn("\nput a b\n")  # blank means white space only


def test_errors_name_the_line() -> None:
    with pytest.raises(CtlError, match=r"^txn line 2: not a compare") as err:
        parse_txn('mod("a") > 1\nput a b\n')
    assert err.value.exit_code == 1
    with pytest.raises(CtlError, match=r"^txn line 4: unknown operation 'watch'"):
        parse_txn('mod("a") > 1\n\nput a b\nwatch a\n')
    with pytest.raises(CtlError, match=r"^txn line 7: more than three sections"):
        parse_txn("\nput a b\n\nput a c\n\n\nput a d\n")


# -- answers as printed ---------------------------------------------------------------------


def kv(key: str, value: str, **fields: str) -> dict[str, str]:
    return {"key": b64(key), "value": b64(value), **fields}


def test_ranges_puts_and_deletes_print_like_etcdctl() -> None:
    answer = {"kvs": [kv("a", "1"), {"key": b64("b")}, kv("c", "\u00e9"), {"key": b64(b"\xff"), "value": b64(b"\xfe")}]}
    assert range_lines(answer, {}, False) == ["a", "1", "b", "", "c", "\u00e9", "base64:/w==", "base64:/g=="]
    assert range_lines(answer, {"keys_only": True}, False) == ["a", "b", "c", "base64:/w=="]
    assert range_lines(answer, {}, True)[:2] == [b64("a"), b64("1")]
    assert range_lines({"count": "4"}, {"count_only": True}, False) == ["4"]
    assert range_lines({}, {"count_only": True}, False) == ["0"]  # the gateway omits a zero count
    assert range_lines({"header": {}}, {}, False) == []
    assert put_lines({}, False) == ["OK"]
    assert put_lines({"prev_kv": kv("a", "0")}, False) == ["OK", "a", "0"]
    assert delete_lines({}, False) == ["0"]
    assert delete_lines({"deleted": "2", "prev_kvs": [kv("a", "1"), kv("b", "2")]}, False) == ["2", "a", "1", "b", "2"]


def test_a_transaction_prints_its_branch_and_each_answer_after_a_blank_line() -> None:
    txn = parse_txn('value("a") = "1"\n\nput a 2\nget a --keys-only\ndel b\n\nget a --count-only\n')
    answer = {
        "succeeded": True,
        "responses": [
            {"response_put": {"header": {"revision": "5"}}},
            {"response_range": {"kvs": [{"key": b64("a")}], "count": "1"}},
            {"response_delete_range": {"deleted": "1"}},
        ],
    }
    assert txn_lines(answer, txn, False) == ["SUCCESS", "", "OK", "", "a", "", "1"]
    failed = {"responses": [{"response_range": {"count": "1"}}]}
    assert txn_lines(failed, txn, False) == ["FAILURE", "", "1"]


def test_status_and_hash_rows() -> None:
    status = {
        "header": {"member_id": "255"}, "version": "3.4.23", "dbSize": "20480", "leader": "255",
        "raftIndex": "8", "raftTerm": "2", "raftAppliedIndex": "8",
    }  # fmt: skip
    assert status_line("127.0.0.1:2379", status) == "127.0.0.1:2379, ff, 3.4.23, 20 kB, true, false, 2, 8, 8, "
    follower = status | {"leader": "1", "isLearner": True, "errors": ["a", "b"]}
    assert status_line("x", follower) == "x, ff, 3.4.23, 20 kB, false, true, 2, 8, 8, a, b"
    assert [human_bytes(n) for n in (0, 9, 10, 999, 1000, 1500, 20480, 10**6, 25 * 10**8)] == [
        "0 B", "9 B", "10 B", "999 B", "1.0 kB", "1.5 kB", "20 kB", "1.0 MB", "2.5 GB",
    ]  # fmt: skip
    assert hash_line("e", {"hash": 12}) == "e, 12"
    assert hashkv_line("e", {"hash": 12, "compact_revision": "3"}) == "e, 12, 3"
    assert hashkv_line("e", {}) == "e, 0, 0"
