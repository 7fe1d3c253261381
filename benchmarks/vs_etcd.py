"""dkv against etcd on the same machine, with the same load generator.

    python benchmarks/vs_etcd.py                       # all runs, 2 rounds, scale figures at 1M keys
    python benchmarks/vs_etcd.py --duration 10 --rounds 2 --skip-scale
    python benchmarks/vs_etcd.py --skip-compare --scale 200000

Needs the etcd and wrk binaries (``apt-get install etcd-server wrk``) and,
for the chart only, matplotlib (``pip install '.[bench]'``).

Comparison. For each round and each system in turn (dkv, etcd, dkv, etcd,
...: machine drift hits both), a fresh 3-member cluster is started on free
loopback ports in a temporary directory, 1000 keys are written for the
read runs, then every run is measured with wrk (2 threads, the Lua script
``vs_etcd.lua`` beside this file) after a short warm-up that is not
counted; then the cluster is stopped and its data removed. The two systems
never run at the same time. Runs:

    write-1, write-16, write-64   puts of new unique keys to the leader, 1/16/64 connections
    read-1, read-64               linearizable reads of prepopulated keys from the leader
    write-64-all                  puts over 64 connections split across all 3 members
                                  (3 wrk processes at once; throughputs add up, latency
                                  is the worst p50/p99 of the three)

dkv is driven through ``POST /v0/kv`` and ``GET /v0/kv/key/{b64}``, etcd
through its JSON gateway ``POST /v3/kv/put`` and ``POST /v3/kv/range``
(linearizable by default). Keys are 8 bytes, values 256 bytes (options).
Each figure is the median over rounds; the spread is (max - min) / median.
Any non-2xx answer, socket error or read that found nothing makes the run
fail: the table is printed, then the script exits 1.

Scale (``--scale N``, ``--skip-scale``). N unique keys are written into a
fresh 3-node dkv cluster with wrk (64 connections to the leader), then it
reports the resident memory of every node, how long a killed follower takes
to be back and caught up, and how long a new (4th) node joining with an
empty db takes to catch up by snapshot.

Results go to ``--out`` (default ``benchmarks/results/``): ``vs_etcd.json``
(every raw wrk result, the summary, the scale figures and machine
information) and ``vs_etcd.png`` (throughput and p99 per run).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import http.client
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LUA_SCRIPT = HERE / "vs_etcd.lua"
RESULT_MARK = "VS_ETCD_RESULT "
TOOLS_HINT = "apt-get install etcd-server wrk"
CHART_HINT = "pip install '.[bench]'"
SYSTEMS = ("dkv", "etcd")


@dataclass(frozen=True)
class RunSpec:
    """One measured configuration: operation, connections, where they go."""

    name: str
    op: str  # "write" or "read"
    connections: int
    target: str  # "leader" or "all"

    def describe(self) -> str:
        where = "leader" if self.target == "leader" else "all 3 nodes"
        what = "writes" if self.op == "write" else "lin. reads"
        return f"{what}, {self.connections} conn, {where}"


RUNS: tuple[RunSpec, ...] = (
    RunSpec("write-1", "write", 1, "leader"),
    RunSpec("write-16", "write", 16, "leader"),
    RunSpec("write-64", "write", 64, "leader"),
    RunSpec("read-1", "read", 1, "leader"),
    RunSpec("read-64", "read", 64, "leader"),
    RunSpec("write-64-all", "write", 64, "all"),
)


# -- processes -------------------------------------------------------------------


class Interrupted(Exception):
    """SIGTERM or SIGHUP: stop like on Ctrl-C."""


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


class Processes:
    """Every child process this script starts, so that all of them are
    stopped on any exit: normal, error, Ctrl-C or SIGTERM.

    Children run in their own session (a terminal's Ctrl-C does not reach
    them directly); they are stopped here, in order, by process group."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()

    def spawn(
        self,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        capture: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start argv; its output goes to log (appended), to a pipe if
        capture, or nowhere."""
        out: Any = subprocess.DEVNULL
        log_file = None
        if capture:
            out = subprocess.PIPE
        elif log is not None:
            log_file = out = open(log, "ab")  # noqa: SIM115 - closed right after the fork
        try:
            proc = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=cwd, start_new_session=True,
            )
        finally:
            if log_file is not None:
                log_file.close()
        with self._lock:
            self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Send sig to proc's process group, wait, SIGKILL if it lingers."""
        if proc.poll() is None:
            _signal_group(proc, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
        with self._lock:
            if proc in self._procs:
                self._procs.remove(proc)

    def stop_all(self) -> None:
        """Stop every process still known (SIGTERM first, then SIGKILL)."""
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        with self._lock:
            self._procs = [p for p in self._procs if p.poll() is None]


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


PROCS = Processes()


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held together while chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def child_env(drop_prefixes: Sequence[str] = ("DKV_", "ETCD_", "ETCDCTL_")) -> dict[str, str]:
    """This environment without variables that would configure the servers
    behind our back."""
    return {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_prefixes))}


def http_json(method: str, url: str, body: Any = None, timeout: float = 2.0) -> tuple[int, Any]:
    """One request; returns (status, decoded JSON or None). Raises OSError
    when nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Poll check until it is true; return the seconds it took. Raise
    RuntimeError after timeout."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# -- clusters --------------------------------------------------------------------


class Cluster:
    """A local 3-member cluster of one system in a temporary directory."""

    system = ""

    def __init__(self, base_dir: Path | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"vs-etcd-{self.system}-", dir=base_dir))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        raise NotImplementedError

    def client_urls(self) -> list[str]:
        """http://host:port of every member's client API."""
        raise NotImplementedError

    def leader_url(self) -> str:
        """The client URL of the current leader."""
        raise NotImplementedError

    def put_request(self, key_b64: str, value_b64: str) -> tuple[str, str, bytes]:
        """(method, path, body) of a put in this system's HTTP API."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every member and remove the data."""
        for proc in self.procs.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        for proc in self.procs.values():
            PROCS.stop(proc)
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs_tail(self, lines: int = 5) -> str:
        """The last lines of every member's log, for error messages."""
        out = []
        for log in sorted(self.dir.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)


class EtcdCluster(Cluster):
    """Three etcd members: free client and peer ports, a new cluster,
    default snapshot settings, warn-level logs in files."""

    system = "etcd"

    def __init__(self, etcd: str, base_dir: Path | None) -> None:
        super().__init__(base_dir)
        self.etcd = etcd
        ports = free_ports(6)
        self.names = ["e0", "e1", "e2"]
        self.client = {n: ports[2 * i] for i, n in enumerate(self.names)}
        self.peer = {n: ports[2 * i + 1] for i, n in enumerate(self.names)}

    def start(self, timeout: float = 60.0) -> None:
        initial = ",".join(f"{n}=http://127.0.0.1:{self.peer[n]}" for n in self.names)
        token = f"vs-etcd-{os.getpid()}-{time.time_ns()}"
        for n in self.names:
            log = self.dir / f"{n}.log"
            argv = [
                self.etcd,
                "--name", n,
                "--data-dir", str(self.dir / f"{n}.etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{self.client[n]}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.client[n]}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.peer[n]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer[n]}",
                "--initial-cluster", initial,
                "--initial-cluster-state", "new",
                "--initial-cluster-token", token,
                "--logger", "zap",
                "--log-outputs", str(log),
                "--log-level", "warn",
            ]
            self.procs[n] = PROCS.spawn(argv, log=self.dir / f"{n}.out.log", env=child_env())
        try:
            wait_until("etcd to elect a leader", lambda: self._leader_name() is not None, timeout)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{self.logs_tail()}") from None

    def client_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.client[n]}" for n in self.names]

    def _status(self, name: str) -> dict[str, Any] | None:
        try:
            code, body = http_json("POST", f"http://127.0.0.1:{self.client[name]}/v3/maintenance/status", {}, 1.0)
        except OSError:
            return None
        return body if code == 200 and isinstance(body, dict) else None

    def _leader_name(self) -> str | None:
        """The member every member names as leader, or None."""
        statuses = {n: self._status(n) for n in self.names}
        if not all(statuses.values()):
            return None
        leaders = {s.get("leader") for s in statuses.values() if s}
        if len(leaders) != 1 or leaders & {None, "0", 0}:
            return None
        leader = leaders.pop()
        for n, s in statuses.items():
            if s and s.get("header", {}).get("member_id") == leader:
                return n
        return None

    def leader_url(self) -> str:
        name = self._leader_name()
        if name is None:
            raise RuntimeError("etcd has no leader")
        return f"http://127.0.0.1:{self.client[name]}"

    def put_request(self, key_b64: str, value_b64: str) -> tuple[str, str, bytes]:
        return "POST", "/v3/kv/put", json.dumps({"key": key_b64, "value": value_b64}).encode()


class DkvCluster(Cluster):
    """dkv nodes run as ``python -m dkv.cli`` with flags, on free ports,
    warn-level logs in files; three voters, more may join."""

    system = "dkv"

    def __init__(self, base_dir: Path | None, python: str = sys.executable, extra_flags: Sequence[str] = ()) -> None:
        super().__init__(base_dir)
        self.python = python
        self.extra_flags = list(extra_flags)
        self.rpc: dict[str, int] = {}
        self.rest: dict[str, int] = {}
        self.voters = ["a", "b", "c"]
        for n, port in zip(self.voters, _pairs(free_ports(6))):
            self.rpc[n], self.rest[n] = port

    def _argv(self, node: str, join: str | None) -> list[str]:
        argv = [
            self.python, "-m", "dkv.cli",
            "--node-id", node,
            "--rpc-port", str(self.rpc[node]),
            "--rest-port", str(self.rest[node]),
            "--db-path", str(self.dir / f"{node}.db"),
            "--log-level", "warn",
            *self.extra_flags,
        ]
        if join:
            argv += ["--join", join]
        else:
            argv += ["--cluster", ",".join(f"{n}@127.0.0.1:{self.rpc[n]}" for n in self.voters)]
        return argv

    def spawn(self, node: str, join: str | None = None) -> subprocess.Popen[bytes]:
        """Start (or restart) node; a new node id gets free ports and joins
        through the member at join (HOST:RPC_PORT)."""
        if node not in self.rpc:
            self.rpc[node], self.rest[node] = free_ports(2)
        proc = PROCS.spawn(self._argv(node, join), log=self.dir / f"{node}.log", env=child_env(), cwd=REPO)
        self.procs[node] = proc
        return proc

    def kill(self, node: str, sig: int = signal.SIGKILL) -> None:
        """Stop node with sig and wait for it to be gone."""
        PROCS.stop(self.procs.pop(node), sig)

    def start(self, timeout: float = 60.0) -> None:
        for n in self.voters:
            self.spawn(n)

        def ready() -> bool:
            sts = [self.status(n) for n in self.voters]
            return all(s and s.get("leader_id") and s.get("applied_index", 0) >= 2 for s in sts) and (
                len({s["leader_id"] for s in sts if s}) == 1
            )

        try:
            wait_until("dkv to elect a leader", ready, timeout)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{self.logs_tail()}") from None

    def status(self, node: str) -> dict[str, Any] | None:
        """GET /v0/status of node, or None if it does not answer."""
        try:
            code, body = http_json("GET", f"http://127.0.0.1:{self.rest[node]}/v0/status", None, 1.0)
        except OSError:
            return None
        return body if code == 200 and isinstance(body, dict) else None

    def leader(self) -> str:
        """The leader's node id, as the members see it."""
        for n in self.procs:
            s = self.status(n)
            if s and s.get("leader_id") in self.rest:
                return str(s["leader_id"])
        raise RuntimeError("dkv has no leader")

    def client_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.rest[n]}" for n in self.voters]

    def leader_url(self) -> str:
        return f"http://127.0.0.1:{self.rest[self.leader()]}"

    def put_request(self, key_b64: str, value_b64: str) -> tuple[str, str, bytes]:
        return "POST", "/v0/kv", json.dumps({"key": key_b64, "value": value_b64}).encode()


def _pairs(items: Sequence[int]) -> Iterator[tuple[int, int]]:
    for i in range(0, len(items), 2):
        yield items[i], items[i + 1]


# -- load ------------------------------------------------------------------------


def key_bytes(tag: int, thread: int, counter: int, key_size: int) -> bytes:
    """The key layout of vs_etcd.lua: tag, thread index, big-endian counter."""
    return bytes([tag, thread]) + counter.to_bytes(key_size - 2, "big")


def prepopulate(cluster: Cluster, nkeys: int, key_size: int, value_size: int, workers: int = 8) -> float:
    """Write keys 0..nkeys-1 of the read runs (tag 0, thread 0) to the leader
    over a few keep-alive connections; returns the seconds it took. Raises
    RuntimeError on any non-2xx answer."""
    url = urllib.parse.urlsplit(cluster.leader_url())
    value = base64.b64encode(os.urandom(value_size)).decode()
    errors: list[str] = []

    def worker(w: int) -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        try:
            for i in range(w, nkeys, workers):
                key = base64.b64encode(key_bytes(0, 0, i, key_size)).decode()
                method, path, body = cluster.put_request(key, value)
                conn.request(method, path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = resp.read()
                if not 200 <= resp.status < 300:
                    errors.append(f"{resp.status} {payload[:200]!r}")
                    return
        except OSError as e:
            errors.append(repr(e))
        finally:
            conn.close()

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(min(workers, nkeys))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"prepopulating {cluster.system} failed: {errors[0]}")
    return time.monotonic() - start


@dataclass
class WrkJob:
    """What one wrk process is asked to do."""

    url: str
    system: str
    op: str  # write, read or load
    connections: int
    threads: int
    duration: int  # seconds
    timeout: int  # seconds, wrk's per-request timeout
    key_size: int
    value_size: int
    tag: int
    nkeys: int = 0
    quota: int = 0
    done_dir: str = "-"

    def argv(self, wrk: str) -> list[str]:
        """The wrk command line."""
        return [
            wrk, "-t", str(self.threads), "-c", str(self.connections), "-d", f"{self.duration}s",
            "--timeout", f"{self.timeout}s", "-s", str(LUA_SCRIPT), self.url, "--",
            self.system, self.op, str(self.key_size), str(self.value_size), str(self.tag),
            str(self.nkeys), str(self.quota), self.done_dir,
        ]


def parse_wrk_output(text: str) -> dict[str, Any]:
    """The result line the Lua done() printed, as a dict with derived
    fields: duration_s, socket_errors, throughput (2xx answers per second),
    p50_ms, p99_ms. Raises ValueError when there is none."""
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_MARK):
            raw = json.loads(line[len(RESULT_MARK):])
            break
    else:
        raise ValueError(f"no {RESULT_MARK.strip()} line in wrk output:\n{text[-2000:]}")
    errors = raw["errors"]
    duration = raw["duration_us"] / 1e6
    raw["duration_s"] = duration
    raw["socket_errors"] = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    raw["throughput"] = raw["ok"] / duration if duration > 0 else 0.0
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
        return sum(p[field] * p["requests"] for p in parts) / total

    return {
        "requests": total,
        "ok": sum(p["ok"] for p in parts),
        "non2xx": sum(p["non2xx"] for p in parts),
        "misses": sum(p["misses"] for p in parts),
        "socket_errors": sum(p["socket_errors"] for p in parts),
        "throughput": sum(p["throughput"] for p in parts),
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
    procs = [PROCS.spawn(job.argv(wrk), capture=True) for job in jobs]
    results = []
    try:
        for job, proc in zip(jobs, procs):
            out, _ = proc.communicate(timeout=job.duration + job.timeout + 60)
            text = out.decode(errors="replace")
            if proc.returncode != 0:
                raise RuntimeError(f"wrk exited with {proc.returncode}:\n{text[-2000:]}")
            results.append(parse_wrk_output(text))
    finally:
        for proc in procs:
            PROCS.stop(proc, signal.SIGKILL)
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


def measure(cluster: Cluster, spec: RunSpec, args: argparse.Namespace, tags: Tags) -> dict[str, Any]:
    """Warm up, then measure one run against cluster; the raw and combined
    results."""
    urls = [cluster.leader_url()] if spec.target == "leader" else cluster.client_urls()
    leader_before = cluster.leader_url()

    def jobs(duration: int) -> list[WrkJob]:
        return [
            WrkJob(
                url=url, system=cluster.system, op=spec.op, connections=conns,
                threads=min(args.threads, conns), duration=duration, timeout=args.wrk_timeout,
                key_size=args.key_size, value_size=args.value_size, tag=tags.next(), nkeys=args.read_keys,
            )
            for url, conns in zip(urls, split_connections(spec.connections, len(urls)))
        ]

    warmup = combine(run_wrk(args.wrk, jobs(args.warmup))) if args.warmup > 0 else None
    load_before = os.getloadavg()
    parts = run_wrk(args.wrk, jobs(args.duration))
    result = combine(parts)
    leader_after = cluster.leader_url()
    result.update(
        run=spec.name,
        system=cluster.system,
        parts=parts,
        warmup=warmup,
        loadavg_before=load_before,
        leader_changed=leader_before != leader_after,
    )
    return result


def run_has_errors(result: dict[str, Any]) -> bool:
    """Any non-2xx answer, socket error or empty read."""
    return bool(result["non2xx"] or result["socket_errors"] or result["misses"])


# -- summary and output ------------------------------------------------------------


def summarize(results: Sequence[dict[str, Any]], runs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    """Per run and system: the median over rounds of throughput, p50, p99,
    their min and max, and the spread (max - min) / median of throughput;
    plus the dkv/etcd ratios of the medians."""
    rows = []
    for spec in runs:
        row: dict[str, Any] = {"run": spec.name, "describe": spec.describe()}
        for system in SYSTEMS:
            mine = [r for r in results if r["run"] == spec.name and r["system"] == system]
            if not mine:
                row[system] = None
                continue
            agg: dict[str, Any] = {"rounds": len(mine), "errors": sum(run_has_errors(r) for r in mine)}
            for field in ("throughput", "p50_ms", "p99_ms"):
                values = [r[field] for r in mine]
                med = statistics.median(values)
                agg[field] = med
                agg[f"{field}_min"] = min(values)
                agg[f"{field}_max"] = max(values)
                agg[f"{field}_spread"] = (max(values) - min(values)) / med if med else 0.0
            row[system] = agg
        d, e = row["dkv"], row["etcd"]
        row["throughput_ratio"] = ratio(d and d["throughput"], e and e["throughput"])
        row["p99_ratio"] = ratio(d and d["p99_ms"], e and e["p99_ms"])
        rows.append(row)
    return rows


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r: float | None) -> str:
    """A ratio as '0.12x' (two significant figures for small ones)."""
    if r is None:
        return "n/a"
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.3f}x"


def fmt_rate(agg: dict[str, Any] | None) -> str:
    """Median throughput with its spread over rounds, e.g. '1,234 ±3%'."""
    if agg is None:
        return "-"
    text = f"{agg['throughput']:,.0f}"
    if agg["rounds"] > 1:
        text += f" ±{agg['throughput_spread'] * 50:.0f}%"
    return text


def fmt_ms(value: float | None) -> str:
    """Milliseconds with a precision that suits the size."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as an aligned text table."""
    header = ["run", "", "dkv req/s", "etcd req/s", "dkv/etcd", "dkv p50", "etcd p50", "dkv p99", "etcd p99", "p99 dkv/etcd"]
    lines = [header]
    for row in rows:
        d, e = row["dkv"], row["etcd"]
        flag = "ERRORS" if (d and d["errors"]) or (e and e["errors"]) else ""
        lines.append([
            row["run"], row["describe"], fmt_rate(d), fmt_rate(e), fmt_ratio(row["throughput_ratio"]),
            fmt_ms(d and d["p50_ms"]), fmt_ms(e and e["p50_ms"]), fmt_ms(d and d["p99_ms"]), fmt_ms(e and e["p99_ms"]),
            fmt_ratio(row["p99_ratio"]) + (f"  {flag}" if flag else ""),
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append("req/s: median over rounds, ± half the range; latencies in ms (median over rounds of wrk's p50/p99);")
    out.append("write-64-all: 3 wrk processes, throughputs summed, latency = worst of the three.")
    return "\n".join(out)


def write_chart(rows: Sequence[dict[str, Any]], path: Path) -> bool:
    """Grouped bars of throughput and p99 per run (whiskers: min..max over
    rounds). False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    names = [r["run"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.38
    for ax, field, title in ((axes[0], "throughput", "throughput (req/s, higher is better)"),
                             (axes[1], "p99_ms", "p99 latency (ms, lower is better)")):
        for k, (system, color) in enumerate((("dkv", "#3b7dd8"), ("etcd", "#e0892b"))):
            xs, ys, lo, hi = [], [], [], []
            for i, row in enumerate(rows):
                agg = row[system]
                if agg is None:
                    continue
                xs.append(i + (k - 0.5) * width)
                ys.append(agg[field])
                lo.append(agg[field] - agg[f"{field}_min"])
                hi.append(agg[f"{field}_max"] - agg[field])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=system, color=color)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    axes[1].set_yscale("log")
    axes[1].yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes[1].yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    axes[1].yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.suptitle("dkv vs etcd, 3 nodes on one machine (median over rounds, whiskers min..max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def have_matplotlib() -> bool:
    """Whether the chart can be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _first_line(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return ""


def machine_info(etcd: str, wrk: str, tmp_base: Path | None) -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    tmp = Path(tmp_base or tempfile.gettempdir()).resolve()
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": cpu,
        "memory_mb": mem_kb // 1024,
        "kernel": f"{platform.system()} {platform.release()} {platform.version()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "etcd_version": _first_line([etcd, "--version"]),
        "wrk_version": _first_line([wrk, "-v"]),
        "dkv_commit": _git("rev-parse", "HEAD"),
        "dkv_code_modified": bool(_git("status", "--porcelain", "--", "dkv")),
        "data_dir_base": str(tmp),
        "data_dir_filesystem": _filesystem(tmp),
        "loadavg_start": os.getloadavg(),
    }


def _filesystem(path: Path) -> str:
    """The type of the filesystem path is on (from /proc/mounts)."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            mount, fstype = fields[1], fields[2]
            if str(path).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    except (OSError, IndexError):
        pass
    return kind


# -- scale -------------------------------------------------------------------------


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of pid in MiB from /proc/PID/status: ``rss_mb`` (VmRSS)
    and its parts ``rss_anon_mb`` (heap and stacks) and ``rss_file_mb``
    (file pages mapped in: mostly LMDB's read-only memory map of the db, page
    cache the kernel can reclaim). Empty if the process is gone."""
    fields = {"VmRSS:": "rss_mb", "RssAnon:": "rss_anon_mb", "RssFile:": "rss_file_mb"}
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            words = line.split()
            if words and words[0] in fields:
                out[fields[words[0]]] = int(words[1]) / 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out


def _node_line(node: str, info: dict[str, Any]) -> str:
    """A node's scale figures: role, memory, db file."""
    text = f"RSS {info['rss_mb']:.0f} MiB" if info.get("rss_mb") is not None else "RSS n/a"
    if info.get("rss_anon_mb") is not None and info.get("rss_file_mb") is not None:
        text += f" ({info['rss_anon_mb']:.0f} anon, {info['rss_file_mb']:.0f} file-mapped)"
    return f"node {node} ({info['role']}): {text}, db file {info['db_file_mb']:.0f} MiB"


def scale_phase(args: argparse.Namespace) -> dict[str, Any]:
    """Load args.scale keys into a fresh dkv cluster, then measure memory,
    follower restart and catch-up by snapshot of a new node."""
    n = args.scale
    out: dict[str, Any] = {"keys_requested": n, "connections": args.scale_connections}
    with DkvCluster(args.tmp_dir) as c:
        c.start()
        leader = c.leader()
        out["leader"] = leader
        base = c.status(leader)["commit_index"]  # type: ignore[index]
        done_dir = c.dir / "load-done"
        done_dir.mkdir()
        threads = min(args.threads, args.scale_connections)
        quota = math.ceil(n / threads)
        cap = args.scale_timeout
        job = WrkJob(
            url=f"http://127.0.0.1:{c.rest[leader]}", system="dkv", op="load",
            connections=args.scale_connections, threads=threads, duration=cap, timeout=args.wrk_timeout,
            key_size=args.key_size, value_size=args.value_size, tag=1, quota=quota, done_dir=str(done_dir),
        )
        print(f"scale: loading {n:,} keys into dkv ({args.scale_connections} connections to the leader) ...", flush=True)
        start = time.monotonic()
        wrk = PROCS.spawn(job.argv(args.wrk), capture=True)
        last_report = start
        while len(list(done_dir.iterdir())) < threads and wrk.poll() is None and time.monotonic() - start < cap:
            time.sleep(0.1)
            if time.monotonic() - last_report >= 15:
                last_report = time.monotonic()
                s = c.status(leader)
                if s:
                    print(f"  ... {s['commit_index'] - base:,} entries committed after {last_report - start:.0f}s", flush=True)
        load_s = time.monotonic() - start
        if wrk.poll() is None:
            wrk.send_signal(signal.SIGINT)  # wrk prints its results (done()) on SIGINT
        text, _ = wrk.communicate(timeout=60)
        PROCS.stop(wrk)
        res = parse_wrk_output(text.decode(errors="replace"))
        out["load"] = {
            "seconds": load_s, "keys_written": res["ok"], "keys_per_s": res["ok"] / load_s, "wrk": res,
            "all_threads_done": len(list(done_dir.iterdir())) >= threads,
        }
        print(f"  loaded {res['ok']:,} keys in {load_s:.1f}s ({res['ok'] / load_s:,.0f} keys/s)", flush=True)
        if run_has_errors(res) or not out["load"]["all_threads_done"]:
            out["error"] = f"load incomplete or with errors: {res['non2xx']} non-2xx, {res['socket_errors']} socket errors"
            return out

        def caught_up(*nodes: str, need_snapshot: bool = False) -> bool:
            """Every node has applied the leader's commit index (asked once)."""
            s = c.status(c.leader())
            commit = int(s["commit_index"]) if s else 1 << 62
            for node in nodes:
                s = c.status(node)
                if not s or s["applied_index"] < commit or (need_snapshot and not s.get("snapshot_index", 0)):
                    return False
            return True

        wait_until("the followers to catch up", lambda: caught_up(*c.voters), 600, 0.2)
        time.sleep(1.0)  # let the last compaction settle before looking at memory
        statuses = {x: c.status(x) for x in c.voters}
        out["nodes"] = {
            x: {
                "role": (statuses[x] or {}).get("role"),
                **memory_mb(c.procs[x].pid),
                "db_file_mb": _file_mb(c.dir / f"{x}.db"),
                "applied_index": (statuses[x] or {}).get("applied_index"),
                "snapshot_index": (statuses[x] or {}).get("snapshot_index"),
            }
            for x in c.voters
        }
        for x, info in out["nodes"].items():
            print(f"  {_node_line(x, info)}", flush=True)

        follower = next(x for x in c.voters if x != c.leader())
        c.kill(follower, signal.SIGKILL)
        start = time.monotonic()
        c.spawn(follower)
        wait_until(f"{follower} to answer", lambda: c.status(follower) is not None, args.scale_wait, 0.02)
        answers = time.monotonic() - start
        wait_until(f"{follower} to catch up", lambda: caught_up(follower), args.scale_wait, 0.02)
        total = time.monotonic() - start
        out["follower_restart"] = {
            "node": follower, "signal": "SIGKILL", "status_answers_s": answers, "caught_up_s": total,
            "rss_mb_after": memory_mb(c.procs[follower].pid).get("rss_mb"),
        }
        print(f"  follower {follower} killed (-9) and restarted: status answers after {answers:.2f}s, "
              f"caught up after {total:.2f}s", flush=True)

        leader = c.leader()
        leader_first_index = (c.status(leader) or {}).get("first_index")
        start = time.monotonic()
        c.spawn("d", join=f"127.0.0.1:{c.rpc[leader]}")
        wait_until("the new node to answer", lambda: c.status("d") is not None, args.scale_wait, 0.02)
        answers = time.monotonic() - start
        wait_until("the new node to catch up by snapshot", lambda: caught_up("d", need_snapshot=True), args.scale_wait, 0.02)
        total = time.monotonic() - start
        sd = c.status("d") or {}
        out["new_node"] = {
            "node": "d", "joined_via": leader, "leader_first_index": leader_first_index,
            "status_answers_s": answers, "caught_up_s": total,
            "snapshot_index": sd.get("snapshot_index"), "applied_index": sd.get("applied_index"),
            **memory_mb(c.procs["d"].pid), "db_file_mb": _file_mb(c.dir / "d.db"),
        }
        print(f"  new node d joined via {leader}: status answers after {answers:.2f}s, caught up by snapshot "
              f"(snapshot_index {sd.get('snapshot_index')}) after {total:.2f}s", flush=True)
    return out


def _file_mb(path: Path) -> float | None:
    """Allocated size on disk of path in MiB (LMDB files are sparse)."""
    try:
        return path.stat().st_blocks * 512 / (1024 * 1024)
    except OSError:
        return None


def format_scale(scale: dict[str, Any]) -> str:
    """The scale figures as a few lines."""
    if "error" in scale and "nodes" not in scale:
        return f"scale: {scale['error']}"
    lines = [f"scale: {scale['load']['keys_written']:,} keys loaded in {scale['load']['seconds']:.1f}s "
             f"({scale['load']['keys_per_s']:,.0f} keys/s, {scale['connections']} connections)"]
    for x, info in scale["nodes"].items():
        lines.append(f"  {_node_line(x, info)}")
    fr = scale.get("follower_restart")
    if fr:
        lines.append(f"  follower restart ({fr['signal']}): answers after {fr['status_answers_s']:.2f}s, "
                     f"caught up after {fr['caught_up_s']:.2f}s")
    nn = scale.get("new_node")
    if nn:
        lines.append(f"  new node catch-up by snapshot: {nn['caught_up_s']:.2f}s "
                     f"(answers after {nn['status_answers_s']:.2f}s, snapshot_index {nn['snapshot_index']})")
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds measured per run (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each run, not counted (default 2; 0: none)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; each runs dkv then etcd on fresh clusters (default 2)")
    ap.add_argument("--runs", default=",".join(r.name for r in RUNS), help="comma-separated runs (default: all)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads per wrk process (default 2)")
    ap.add_argument("--key-size", type=int, default=8, help="key bytes (default 8, at least 6)")
    ap.add_argument("--value-size", type=int, default=256, help="value bytes (default 256)")
    ap.add_argument("--read-keys", type=int, default=1000, help="keys written before the read runs (default 1000)")
    ap.add_argument("--wrk-timeout", type=int, default=10, help="wrk's per-request timeout in seconds (default 10)")
    ap.add_argument("--scale", type=int, default=1_000_000, help="keys for the scale figures (default 1,000,000)")
    ap.add_argument("--scale-connections", type=int, default=64, help="connections loading the scale keys (default 64)")
    ap.add_argument("--scale-timeout", type=int, default=3600, help="seconds allowed for loading the scale keys (default 3600)")
    ap.add_argument("--scale-wait", type=int, default=900, help="seconds allowed for a restart or a catch-up (default 900)")
    ap.add_argument("--skip-scale", action="store_true", help="no scale figures")
    ap.add_argument("--skip-compare", action="store_true", help="only the scale figures")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="output directory (default benchmarks/results/)")
    ap.add_argument("--tmp-dir", type=Path, default=None, help="where the clusters' data go (default: the system temp dir)")
    ap.add_argument("--etcd", default=shutil.which("etcd") or "etcd", help="etcd binary")
    ap.add_argument("--wrk", default=shutil.which("wrk") or "wrk", help="wrk binary")
    args = ap.parse_args(argv)
    known = {r.name for r in RUNS}
    args.run_specs = [r for r in RUNS if r.name in set(filter(None, args.runs.split(",")))]
    unknown = set(filter(None, args.runs.split(","))) - known
    if unknown:
        ap.error(f"unknown runs {sorted(unknown)}; choose from {sorted(known)}")
    if args.key_size < 6:
        ap.error("--key-size must be at least 6 (tag, thread and a 4-byte counter)")
    if min(args.duration, args.rounds, args.threads, args.value_size, args.read_keys, args.scale) < 1:
        ap.error("--duration, --rounds, --threads, --value-size, --read-keys and --scale must be positive")
    if args.skip_scale and args.skip_compare:
        ap.error("--skip-scale and --skip-compare leave nothing to do")
    return args


def missing_tools(args: argparse.Namespace) -> list[str]:
    """The binaries that are not there."""
    return [name for name, path in (("etcd", args.etcd), ("wrk", args.wrk)) if shutil.which(path) is None]


def compare(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    """Every round: each system on a fresh cluster, every run; appends to
    results as it goes (so an interrupted run keeps what it measured)."""
    for rnd in range(1, args.rounds + 1):
        for system in SYSTEMS:
            cluster: Cluster = EtcdCluster(args.etcd, args.tmp_dir) if system == "etcd" else DkvCluster(args.tmp_dir)
            with cluster:
                cluster.start()
                prep = prepopulate(cluster, args.read_keys, args.key_size, args.value_size)
                tags = Tags()
                for spec in args.run_specs:
                    r = measure(cluster, spec, args, tags)
                    r["round"] = rnd
                    r["prepopulate_s"] = prep
                    results.append(r)
                    bad = ""
                    if run_has_errors(r):
                        bad = (f"  ERRORS: {r['non2xx']} non-2xx, {r['socket_errors']} socket, "
                               f"{r['misses']} empty reads {r['error_sample'][:120]}")
                    print(f"round {rnd} {system:4} {spec.name:13} {r['throughput']:>9,.0f} req/s  "
                          f"p50 {fmt_ms(r['p50_ms']):>6} ms  p99 {fmt_ms(r['p99_ms']):>6} ms{bad}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every run was clean, 1 when one had errors,
    2 when a tool is missing, 130 on Ctrl-C."""
    args = parse_args(argv)
    missing = missing_tools(args)
    if missing:
        print(f"vs_etcd: {' and '.join(missing)} not found. Install them with:\n    {TOOLS_HINT}\n"
              "(or give their paths with --etcd / --wrk)", file=sys.stderr)
        return 2
    if not have_matplotlib():
        print(f"note: matplotlib is not installed, so no chart; for it: {CHART_HINT}", flush=True)

    atexit.register(PROCS.stop_all)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)

    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": machine_info(args.etcd, args.wrk, args.tmp_dir),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "run_specs"},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    results: list[dict[str, Any]] = []
    status = 0
    try:
        if not args.skip_compare:
            compare(args, results)
        if not args.skip_scale:
            report["scale"] = scale_phase(args)
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; stopping everything", file=sys.stderr)
        report["interrupted"] = True
        status = 130
    except (RuntimeError, ValueError, OSError) as e:
        print(f"vs_etcd: {e}", file=sys.stderr)
        report["failure"] = str(e)
        status = 1
    finally:
        PROCS.stop_all()

    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["results"] = results
    rows = summarize(results, args.run_specs) if results else []
    report["summary"] = rows
    bad = [f"{r['system']} {r['run']} round {r['round']}" for r in results if run_has_errors(r)]
    report["runs_with_errors"] = bad
    if rows:
        print()
        print(format_table(rows))
    if "scale" in report:
        print()
        print(format_scale(report["scale"]))
        if "error" in report["scale"]:
            status = status or 1
    json_path = args.out / "vs_etcd.json"
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"\nwrote {json_path}")
    if rows:
        png = args.out / "vs_etcd.png"
        if write_chart(rows, png):
            print(f"wrote {png}")
        else:
            print(f"no chart: matplotlib is not installed ({CHART_HINT})")
    if bad:
        print(f"FAILED: runs with errors (non-2xx, socket errors or empty reads): {', '.join(bad)}", file=sys.stderr)
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
