# test-case-name: tests.test_vs_etcd_script
"""The load driver: wrk with ``load.lua`` (beside this file) against a
system's HTTP API, the jobs it is given, its parsed results, and one
measured run (warm-up, then the counted part)."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from dkv.testing.process import Process
from dkv.testing.rest_client import b64, http_request
from etcdbench.procstat import cpu_used, group_cpu_seconds
from etcdbench.runs import RANGE_KEYS, BenchCluster, RunSpec

LUA_SCRIPT = Path(__file__).resolve().parent / "load.lua"
#: What the Lua done() prints before its result's JSON.
RESULT_MARK = "VS_ETCD_RESULT "


def key_bytes(tag: int, thread: int, counter: int, key_size: int) -> bytes:
    """The key layout of load.lua: tag, thread index, big-endian counter."""
    return bytes([tag, thread]) + counter.to_bytes(key_size - 2, "big")


def range_prefix(prefix: int, key_size: int) -> bytes:
    """The prefix of the range runs' keys number prefix (load.lua): 0x00
    0x01, then prefix big-endian; one byte short of a key."""
    return b"\x00\x01" + prefix.to_bytes(key_size - 3, "big")


#: (method, path, body) of one HTTP request.
Request = tuple[str, str, bytes]


def put_request(api: str, key: bytes, value: bytes) -> Request:
    """A put of key in API v0 (dkv's own) or v3 (etcd's gateway): the same
    JSON body on either path."""
    path = "/v0/kv" if api == "v0" else "/v3/kv/put"
    return "POST", path, json.dumps({"key": b64(key), "value": b64(value)}).encode()


def range_keys_request(prefix: int, key_size: int, value: bytes) -> Request:
    """One v3 txn that puts the RANGE_KEYS keys under range prefix number
    prefix (one revision for all of them)."""
    base = range_prefix(prefix, key_size)
    puts = [{"request_put": {"key": b64(base + bytes([j])), "value": b64(value)}} for j in range(RANGE_KEYS)]
    return "POST", "/v3/kv/txn", json.dumps({"success": puts}).encode()


def send_all(
    url: str,
    requests: Sequence[Request],
    what: str,
    workers: int = 8,
    more_headers: Callable[[], Mapping[str, str]] | None = None,
) -> float:
    """Send the requests over a few keep-alive connections to url
    (http://host:port), each worker taking every workers-th; the seconds
    it took. more_headers, if given, is called for each request and its
    headers are sent with it (a fresh ``Idempotency-Key`` each, say).
    Raises RuntimeError ("{what} failed: ...") on a non-2xx answer or a
    connection error."""
    where = urllib.parse.urlsplit(url)
    errors: list[str] = []

    def worker(w: int) -> None:
        conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=30)
        try:
            for method, path, body in requests[w::workers]:
                headers = {"Content-Type": "application/json"}
                if more_headers is not None:
                    headers.update(more_headers())
                conn.request(method, path, body, headers)
                resp = conn.getresponse()
                payload = resp.read()
                if not 200 <= resp.status < 300:
                    errors.append(f"{method} {path}: {resp.status} {payload[:200]!r}")
                    return
                if errors:
                    return
        except (OSError, http.client.HTTPException) as e:
            errors.append(repr(e))
        finally:
            conn.close()

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(min(workers, len(requests)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{what} failed: {errors[0]}")
    return time.monotonic() - start


def prepopulate(cluster: BenchCluster, nkeys: int, key_size: int, value_size: int) -> float:
    """Write keys 0..nkeys-1 of the read runs (tag 0, thread 0) to the
    leader through the system's own API; returns the seconds it took.
    Raises RuntimeError on any non-2xx answer."""
    value = os.urandom(value_size)
    reqs = [put_request(cluster.own_api, key_bytes(0, 0, i, key_size), value) for i in range(nkeys)]
    return send_all(cluster.leader_url(), reqs, f"prepopulating {cluster.system}")


def prepopulate_ranges(cluster: BenchCluster, prefixes: int, key_size: int, value_size: int) -> float:
    """Write RANGE_KEYS keys under each of the range runs' prefixes, one v3
    txn per prefix, to the leader; returns the seconds it took."""
    value = os.urandom(value_size)
    reqs = [range_keys_request(p, key_size, value) for p in range(prefixes)]
    return send_all(cluster.leader_url(), reqs, f"prepopulating {cluster.system}'s range keys")


def v3_probe(url: str) -> str | None:
    """None if the server at url answers ``POST /v3/kv/range`` with a 200
    (it serves etcd's JSON gateway), else why not, in a few words."""
    where = urllib.parse.urlsplit(url)
    try:
        status, body = http_request(
            where.port or 80, "POST", "/v3/kv/range", {"key": "AA=="}, timeout=5.0, host=where.hostname or "127.0.0.1"
        )
    except (OSError, http.client.HTTPException) as e:
        return f"POST /v3/kv/range failed: {e!r}"
    if status == 200:
        return None
    return f"POST /v3/kv/range answered {status} {json.dumps(body)[:80]}"


@attrs.frozen(kw_only=True)
class WrkJob:
    """What one wrk process is asked to do."""

    url: str
    system: str  # a label: dkv or etcd
    api: str  # what load.lua speaks: v0 (dkv's own API) or v3 (etcd's gateway)
    op: str  # write, read, range, cas or load
    connections: int
    threads: int
    duration: int  # seconds
    timeout: int  # seconds, wrk's per-request timeout
    key_size: int
    value_size: int
    tag: int
    nkeys: int = 0  # read: the prepopulated keys; range: the prepopulated prefixes
    quota: int = 0
    done_dir: str = "-"
    range_keys: int = RANGE_KEYS

    def argv(self, wrk: str) -> list[str]:
        """The wrk command line."""
        return [
            wrk, "-t", str(self.threads), "-c", str(self.connections), "-d", f"{self.duration}s",
            "--timeout", f"{self.timeout}s", "-s", str(LUA_SCRIPT), self.url, "--",
            self.api, self.op, str(self.key_size), str(self.value_size), str(self.tag),
            str(self.nkeys), str(self.quota), self.done_dir, str(self.range_keys),
        ]  # fmt: skip

    def process(self, wrk: str) -> Process:
        """wrk for this job, its output captured (not started)."""
        return Process(self.argv(wrk), capture=True, name=f"wrk {self.system} {self.api} {self.op}")


def parse_wrk_output(text: str) -> dict[str, Any]:
    """The result line the Lua done() printed, as a dict with derived
    fields: rejected (the 429 answers among the non-2xx, 0 if not
    reported), duration_s, socket_errors, throughput (2xx answers per second,
    failed compare-and-swaps included), cas_succeeded_per_s,
    cas_failed_per_s, p50_ms, p99_ms. Raises ValueError when there is none."""
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_MARK):
            raw: dict[str, Any] = json.loads(line[len(RESULT_MARK):])
            break
    else:
        raise ValueError(f"no {RESULT_MARK.strip()} line in wrk output:\n{text[-2000:]}")
    errors = raw["errors"]
    raw.setdefault("rejected", 0)  # 429 answers, also counted in non2xx
    duration = raw["duration_us"] / 1e6
    raw["duration_s"] = duration
    raw["socket_errors"] = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    raw["throughput"] = raw["ok"] / duration if duration > 0 else 0.0
    raw["cas_succeeded_per_s"] = raw["cas_succeeded"] / duration if duration > 0 else 0.0
    raw["cas_failed_per_s"] = raw["cas_failed"] / duration if duration > 0 else 0.0
    raw["p50_ms"] = raw["latency_us"]["p50"] / 1000
    raw["p99_ms"] = raw["latency_us"]["p99"] / 1000
    return raw


def combine(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sum parallel wrk results: counts and throughputs add up; p50/p99 are
    the worst of the parts (also kept: the request-weighted mean of the
    parts' percentiles, an estimate, in p50_ms_weighted/p99_ms_weighted)."""
    total = sum(p["requests"] for p in parts)

    def weighted(field: str) -> float:
        if total == 0:
            return 0.0
        return float(sum(p[field] * p["requests"] for p in parts) / total)

    return {
        "requests": total,
        "ok": sum(p["ok"] for p in parts),
        "non2xx": sum(p["non2xx"] for p in parts),
        "rejected": sum(p.get("rejected", 0) for p in parts),
        "misses": sum(p["misses"] for p in parts),
        "cas_succeeded": sum(p["cas_succeeded"] for p in parts),
        "cas_failed": sum(p["cas_failed"] for p in parts),
        "socket_errors": sum(p["socket_errors"] for p in parts),
        "throughput": sum(p["throughput"] for p in parts),
        "cas_succeeded_per_s": sum(p["cas_succeeded_per_s"] for p in parts),
        "cas_failed_per_s": sum(p["cas_failed_per_s"] for p in parts),
        "p50_ms": max(p["p50_ms"] for p in parts),
        "p99_ms": max(p["p99_ms"] for p in parts),
        "p50_ms_weighted": weighted("p50_ms"),
        "p99_ms_weighted": weighted("p99_ms"),
        "error_sample": next((p["error_sample"] for p in parts if p.get("error_sample")), ""),
    }


def split_connections(total: int, ways: int) -> list[int]:
    """total connections over ways processes, as even as possible."""
    return [total // ways + (1 if i < total % ways else 0) for i in range(ways)]


def run_wrk(wrk: str, jobs: Sequence[WrkJob]) -> list[dict[str, Any]]:
    """Run the jobs' wrk processes at the same time; their parsed results."""
    procs = [job.process(wrk) for job in jobs]
    results = []
    try:
        for proc in procs:
            proc.start()
        for job, proc in zip(jobs, procs, strict=True):
            text = proc.output(timeout=job.duration + job.timeout + 60)
            if proc.returncode != 0:
                raise RuntimeError(f"wrk exited with {proc.returncode}:\n{text[-2000:]}")
            results.append(parse_wrk_output(text))
    finally:
        for proc in procs:
            proc.close()
    return results


class Tags:
    """Hands out the first key byte, unique per wrk process against one
    cluster (0 is the prepopulated keys)."""

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last += 1
        if self.last > 255:
            raise RuntimeError("more than 255 wrk processes against one cluster")
        return self.last


def measure(cluster: BenchCluster, spec: RunSpec, args: argparse.Namespace, tags: Tags) -> dict[str, Any]:
    """Warm up, then measure one run against cluster; the raw and combined
    results, with the CPU-seconds all members used during the measured part
    (``members_cpu_s``) and per 10,000 answered requests (``cpu_s_per_10k``)."""
    urls = [cluster.leader_url()] if spec.target == "leader" else cluster.client_urls()
    leader_before = cluster.leader_url()
    api = spec.wire_api(cluster.own_api)
    nkeys = args.range_prefixes if spec.op == "range" else args.read_keys

    def jobs(duration: int) -> list[WrkJob]:
        return [
            WrkJob(
                url=url, system=cluster.system, api=api, op=spec.op, connections=conns,
                threads=min(args.threads, conns), duration=duration, timeout=args.wrk_timeout,
                key_size=args.key_size, value_size=args.value_size, tag=tags.next(), nkeys=nkeys,
            )
            for url, conns in zip(urls, split_connections(spec.connections, len(urls)), strict=True)
        ]  # fmt: skip

    warmup = combine(run_wrk(args.wrk, jobs(args.warmup))) if args.warmup > 0 else None
    load_before = os.getloadavg()
    pids = cluster.member_pids()
    cpu_before = group_cpu_seconds(pids)
    parts = run_wrk(args.wrk, jobs(args.duration))
    cpu_after = group_cpu_seconds(pids)
    result = combine(parts)
    cpu_s = cpu_used(cpu_before, cpu_after)
    leader_after = cluster.leader_url()
    result.update(
        members_cpu_s=cpu_s,
        # CPU-seconds of all members per 10,000 answered requests (the whole
        # measured window's CPU, idle time included, over the 2xx answers).
        cpu_s_per_10k=cpu_s / result["ok"] * 10_000 if result["ok"] else None,
    )
    result.update(
        run=spec.name,
        system=cluster.system,
        api=api,
        parts=parts,
        warmup=warmup,
        loadavg_before=load_before,
        leader_changed=leader_before != leader_after,
    )
    return result


def run_has_errors(result: dict[str, Any]) -> bool:
    """Any non-2xx answer, socket error or wrong read (a read that found
    nothing, a range short of its keys, a txn answer without the key's
    revision). A failed compare-and-swap is an answer, not an error."""
    return bool(result["non2xx"] or result["socket_errors"] or result["misses"])
