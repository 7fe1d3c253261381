# test-case-name: tests.compat.test_etcdctl_nospace
"""The space quota's recovery path, step by step, as an operator drives it
with etcdctl: fill until the NOSPACE alarm, then reads, deletes,
compaction, defragment and disarm work, writes resume, and every member has
the same HashKV.

``run_steps`` runs the steps against any cluster that speaks etcd's v3 API
(dkv or etcd: ``ApiEndpoints``) and returns one ``StepResult`` each; it
stops at the first failure (later steps depend on it). The compat test
(``tests/compat/test_etcdctl_nospace.py``, a 768 KiB quota) asserts them;
the command runs them on a fresh 3-node dkv cluster with a larger quota and
prints each with PASS or FAIL (too long for CI)::

    python -m dkv.testing.nospace_scenario --quota 64MiB

Exit status 0 when every step passed, 1 otherwise, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from dkv.testing.etcd_cluster import INSTALL_HINT, ApiEndpoints, etcd_env, etcdctl_binary
from dkv.testing.poll import wait_until
from dkv.testing.process import Exited, run_to_exit

if TYPE_CHECKING:
    from dkv.testing.cluster import Cluster

NOSPACE = "etcdserver: mvcc: database space exceeded"
#: etcdctl's ``alarm list`` / ``alarm disarm``: a line per alarm (each member
#: that found its db over the quota raised its own).
ALARMS = re.compile(r"(memberID:\d+ alarm:NOSPACE \n)+")


class StepFailed(AssertionError):
    """A step's check failed; its message says what was seen."""


@attrs.frozen
class StepResult:
    name: str
    passed: bool
    detail: str
    seconds: float

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name:<44} {self.seconds:7.1f} s  {self.detail}"


@attrs.frozen
class Settings:
    #: The value of each filling put (etcd's own test uses large values too).
    value_bytes: int = 16 * 1024
    #: Give up filling after this many puts (the quota never refused one).
    max_puts: int = 400
    #: How long to wait for the cluster to agree (alarm listed, HashKV).
    settle_seconds: float = 30.0


def etcdctl(api: ApiEndpoints, *args: str, endpoints: str | None = None, timeout: float = 60.0) -> Exited:
    """etcdctl (v3 API) with args against every member (or endpoints)."""
    binary = etcdctl_binary()
    if binary is None:
        raise FileNotFoundError(f"etcdctl is not installed ({INSTALL_HINT})")
    argv = [binary, "--endpoints", endpoints or api.etcdctl_endpoints, "--command-timeout", "30s", *args]
    return run_to_exit(argv, env=etcd_env() | {"ETCDCTL_API": "3"}, timeout=timeout)


def ok(done: Exited) -> str:
    """The standard output of a command that must succeed."""
    if done.returncode != 0:
        raise StepFailed(f"exit {done.returncode}; stderr: {done.stderr.strip()}; stdout: {done.stdout.strip()}")
    return done.stdout


def error_lines(done: Exited) -> list[str]:
    """The ``Error: ...`` lines etcdctl wrote (without its client's log lines)."""
    return [line for line in done.stderr.splitlines() if line.startswith("Error:")]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise StepFailed(what)


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    try:
        wait_until(predicate, timeout, what)
    except (AssertionError, TimeoutError) as e:
        raise StepFailed(str(e)) from None


@attrs.define
class _Scenario:
    api: ApiEndpoints
    settings: Settings
    value: str = attrs.field(init=False)
    filled: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self.value = "v" * self.settings.value_bytes

    def members(self) -> range:
        return range(len(self.api.names))

    def put(self, key: str, member: int = 0) -> tuple[int, object]:
        return self.api.gateway("/v3/kv/put", {"key": _b64(key), "value": _b64(self.value)}, member=member)

    def listed(self, member: int) -> str:
        return ok(etcdctl(self.api, "alarm", "list", endpoints=self.api.grpc_addresses[member]))

    # -- the steps, in order ---------------------------------------------------------

    def fill(self) -> str:
        for n in range(self.settings.max_puts):
            status, answer = self.put(f"big/{n:06d}")
            if status != 200:
                break
        else:
            raise StepFailed(f"the quota never refused a write in {self.settings.max_puts} puts")
        self.filled = n
        _check(n > 0, "the very first put was refused")
        _check(
            (status, answer) == (429, {"error": NOSPACE, "message": NOSPACE, "code": 8}),
            f"put #{n + 1} answered {status} {answer!r}",
        )
        refused = error_lines(etcdctl(self.api, "put", "small", "x"))
        _check(refused == [f"Error: {NOSPACE}"], f"etcdctl put answered {refused}")
        return f"{n} puts of {self.settings.value_bytes} bytes, put #{n + 1} refused with {NOSPACE!r}"

    def alarm_everywhere(self) -> str:
        def same_alarms() -> bool:
            seen = {self.listed(m) for m in self.members()}
            return len(seen) == 1 and ALARMS.fullmatch(seen.pop()) is not None

        _wait(same_alarms, self.settings.settle_seconds, "the same NOSPACE alarms listed on every member")
        for member in self.members():
            status, _ = self.put("refused", member)
            _check(status == 429, f"a growing put on member {self.api.names[member]} answered {status}")
        status, _ = self.api.gateway("/v3/lease/grant", {"TTL": 60}, member=len(self.api.names) - 1)
        _check(status == 429, f"a lease grant answered {status}")
        return f"listed on every member: {self.listed(0).strip()!r}; every member refuses puts and lease grants"

    def read(self) -> str:
        got = ok(etcdctl(self.api, "get", "big/000000", "--print-value-only"))
        _check(got == self.value + "\n", f"etcdctl get answered {len(got)} bytes")
        for member in self.members():
            status, answer = self.api.gateway(
                "/v3/kv/range", {"key": _b64("big/"), "range_end": _b64("big0"), "count_only": True}, member=member
            )
            _check(status == 200, f"a range on {self.api.names[member]} answered {status}")
        return "etcdctl get and a range on every member"

    def delete(self) -> str:
        deleted = int(ok(etcdctl(self.api, "del", "--prefix", "big/")))
        # dkv: the refused write was certainly not applied (etcd 3.4 now and then applies it anyway)
        _check(
            deleted == self.filled if self.api.system == "dkv" else deleted >= self.filled,
            f"deleted {deleted}, filled {self.filled}",
        )
        return f"etcdctl del --prefix big/: {deleted} keys"

    def compact(self) -> str:
        revision = int(self.api.ok("/v3/kv/range", {"key": _b64("x")})["header"]["revision"])
        got = ok(etcdctl(self.api, "compact", str(revision), "--physical"))
        _check(got == f"compacted revision {revision}\n", f"etcdctl compact answered {got!r}")
        return f"etcdctl compact {revision} --physical"

    def defragment(self) -> str:
        got = ok(etcdctl(self.api, "defrag"))
        _check(got.count("Finished defragmenting") == len(self.api.names), f"etcdctl defrag answered {got!r}")
        return "etcdctl defrag on every member"

    def disarm(self) -> str:
        disarmed = ok(etcdctl(self.api, "alarm", "disarm"))
        _check(ALARMS.fullmatch(disarmed) is not None, f"etcdctl alarm disarm answered {disarmed!r}")
        _wait(
            lambda: all(self.listed(m) == "" for m in self.members()),
            self.settings.settle_seconds,
            "no alarm listed on any member",
        )
        return f"disarmed {disarmed.count('NOSPACE')} alarm(s); none listed on any member"

    def writes_resume(self) -> str:
        _check(ok(etcdctl(self.api, "put", "small", "x")) == "OK\n", "etcdctl put after the disarm")
        _check(ok(etcdctl(self.api, "get", "small", "--print-value-only")) == "x\n", "etcdctl get small")
        for member in self.members():
            status, answer = self.put(f"after/{member}", member)
            _check(status == 200, f"a put via {self.api.names[member]} answered {status} {answer!r}")
        return "etcdctl put, and a put via every member"

    def same_hashkv(self) -> str:
        def hashes() -> set[str]:
            out = ok(etcdctl(self.api, "endpoint", "hashkv"))
            return {line.split(", ")[1] for line in out.splitlines()}

        _wait(lambda: len(hashes()) == 1, self.settings.settle_seconds, "equal HashKV on every member")
        if self.api.system == "dkv":  # (etcd 3.4's gateway has no HashKV)
            seen = {self.api.ok("/v3/maintenance/hashkv", {}, member=m)["hash"] for m in self.members()}
            _check(len(seen) == 1, f"the gateway's HashKV differs: {seen}")
        return f"etcdctl endpoint hashkv: {hashes().pop()} on every member"


STEPS: Sequence[tuple[str, Callable[[_Scenario], str]]] = (
    ("fill until the NOSPACE alarm", _Scenario.fill),
    ("the alarm is on every member", _Scenario.alarm_everywhere),
    ("reads work", _Scenario.read),
    ("deletes work", _Scenario.delete),
    ("compaction works", _Scenario.compact),
    ("defragment works", _Scenario.defragment),
    ("disarm works", _Scenario.disarm),
    ("writes resume", _Scenario.writes_resume),
    ("HashKV is equal on every member", _Scenario.same_hashkv),
)


def run_steps(
    api: ApiEndpoints, settings: Settings = Settings(), report: Callable[[StepResult], None] = lambda r: None
) -> list[StepResult]:
    """Run the steps in order against api; stop at the first that fails.
    Each result is also given to report as soon as it is known."""
    scenario = _Scenario(api, settings)
    results: list[StepResult] = []
    for name, step in STEPS:
        started = time.monotonic()
        try:
            detail, passed = step(scenario), True
        except (AssertionError, OSError, ValueError) as e:
            detail, passed = f"{type(e).__name__}: {e}", False
        result = StepResult(name, passed, detail, time.monotonic() - started)
        results.append(result)
        report(result)
        if not passed:
            break
    return results


def assert_passed(results: Sequence[StepResult]) -> None:
    """Raise AssertionError naming the first failed step (for tests)."""
    failed = [r for r in results if not r.passed]
    if failed or len(results) != len(STEPS):
        raise AssertionError("\n".join(r.line() for r in results))


def api_of(cluster: Cluster) -> ApiEndpoints:
    """The etcd v3 API endpoints of a dkv test cluster's members."""
    return ApiEndpoints(
        system="dkv",
        names=tuple(cluster.ids),
        gateway_urls=tuple(f"http://127.0.0.1:{cluster.rest_ports[i]}" for i in cluster.ids),
        grpc_addresses=tuple(f"127.0.0.1:{cluster.rpc_ports[i]}" for i in cluster.ids),
        directory=cluster.dir,
    )


# -- the command --------------------------------------------------------------------------


_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 1000, "mb": 1000**2, "gb": 1000**3}


def parse_size(text: str) -> int:
    """'64MiB', '768KiB', '1048576' -> bytes (ValueError if not a size)."""
    found = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if found is None or found.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (e.g. 64MiB, 768KiB, 1048576)")
    return int(found.group(1)) * _UNITS[found.group(2).lower()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dkv.testing.nospace_scenario",
        description="Fill a fresh 3-node dkv cluster until the NOSPACE alarm, then check with etcdctl that reads, "
        "deletes, compaction, defragment and disarm work, writes resume and HashKV is equal on every member.",
    )
    parser.add_argument("--quota", default="64MiB", help="--quota-backend-bytes of every node (default 64MiB)")
    parser.add_argument("--value-bytes", type=int, default=16 * 1024, help="size of each filling value")
    parser.add_argument("--dir", default=None, help="directory for the nodes' dbs and logs (default: a temp dir)")
    parser.add_argument("extra", nargs="*", help="more flags for every node (after --)")
    args = parser.parse_args(argv)
    try:
        quota = parse_size(args.quota)
    except ValueError as e:
        parser.error(str(e))
    if etcdctl_binary() is None:
        print(f"etcdctl is not installed ({INSTALL_HINT})", file=sys.stderr)
        return 2
    from dkv.testing.cluster import Cluster

    flags = ["--quota-backend-bytes", str(quota), *args.extra]
    settings = Settings(value_bytes=args.value_bytes, max_puts=2 * quota // args.value_bytes + 1000, settle_seconds=60)
    print(f"3-node dkv cluster, --quota-backend-bytes {quota} ({args.quota}), values of {args.value_bytes} bytes")
    started = time.monotonic()
    with Cluster(args.dir, request_timeout=5.0, extra_args=flags) as cluster:
        cluster.start()
        leader = cluster.wait_settled(timeout=60)
        print(f"cluster up in {time.monotonic() - started:.1f} s (leader {leader}; dir {cluster.dir})", flush=True)
        results = run_steps(api_of(cluster), settings, lambda r: print(r.line(), flush=True))
        sizes = []
        for member, status in zip(cluster.ids, api_of(cluster).statuses(), strict=True):
            if status is not None:
                sizes.append(f"{member}: dbSize {status.get('dbSize')} dbSizeInUse {status.get('dbSizeInUse')}")
        print("after: " + "; ".join(sizes))
    passed = sum(r.passed for r in results)
    verdict = "PASS" if passed == len(STEPS) else "FAIL"
    print(f"{verdict}: {passed}/{len(STEPS)} steps passed in {time.monotonic() - started:.1f} s")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
