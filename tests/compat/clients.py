"""Running the command-line clients against a cluster under test, and
making their output comparable across clusters."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

import pytest

from dkv.testing.etcd_cluster import INSTALL_HINT, ApiEndpoints, etcd_env, etcdctl_binary
from dkv.testing.launcher import child_env
from dkv.testing.process import Exited, run_to_exit


def etcdctl(api: ApiEndpoints, *args: str, stdin: str | None = None, endpoints: str | None = None) -> Exited:
    """etcdctl (v3 API) with ``args``, against every member (or
    ``endpoints``), reading ``stdin``."""
    binary = etcdctl_binary()
    if binary is None:
        pytest.skip(f"etcdctl is not installed ({INSTALL_HINT})")
    argv = [binary, "--endpoints", endpoints or api.etcdctl_endpoints, "--command-timeout", "10s", *args]
    return run_to_exit(argv, env=etcd_env() | {"ETCDCTL_API": "3"}, stdin=stdin, timeout=30)


def dkvctl(api: ApiEndpoints, *args: str, stdin: str | None = None, endpoints: str | None = None) -> Exited:
    """dkvctl (this checkout's) with ``args`` against every member's
    gateway (or ``endpoints``), reading ``stdin``."""
    argv = [sys.executable, "-m", "dkv.ctl", "--endpoint", endpoints or ",".join(api.gateway_urls), *args]
    return run_to_exit(argv, env=child_env(), stdin=stdin, timeout=30)


def put_all(client: Callable[..., Exited], api: ApiEndpoints, *pairs: tuple[str, str]) -> None:
    """``client(api, "put", key, value)`` for each pair; each must print OK."""
    for key, value in pairs:
        assert ok(client(api, "put", key, value)) == "OK\n"


def ok(done: Exited) -> str:
    """The standard output of a command that must succeed."""
    assert done.returncode == 0, f"exit {done.returncode}; stderr: {done.stderr}; stdout: {done.stdout}"
    return done.stdout


def error_lines(done: Exited) -> list[str]:
    """The ``Error: ...`` lines etcdctl wrote (without its client's log lines)."""
    return [line for line in done.stderr.splitlines() if line.startswith("Error:")]


#: The numbers of a response header that differ between clusters (and
#: elections), in etcdctl's JSON and in the gateway's (``"raft_term":2``,
#: ``"raft_term": "2"``).
_HEADER_IDS = re.compile(r'("(?:cluster_id|member_id|raft_term)":\s*"?)\d+')


def without_header_ids(text: str) -> str:
    """JSON text with the header's cluster id, member id and raft term
    replaced by 0: what is left is the same on any cluster that gives the
    same answers."""
    return _HEADER_IDS.sub(r"\g<1>0", text)
