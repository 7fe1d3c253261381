"""What the dkv.client compatibility tests share: a client on the test's
reactor for a cluster under test, the check that skips the dkv parameter
where dkv does not serve a service yet, etcdctl as a long-running child
whose output is read back, and async polling."""

from __future__ import annotations

import contextlib
import http.client
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from dkv.client import Client
from dkv.testing.etcd_cluster import INSTALL_HINT, ApiEndpoints, etcd_env, etcdctl_binary
from dkv.testing.process import Process


def client_for(api: ApiEndpoints, endpoints: list[str] | None = None, **options: Any) -> Client:
    """A dkv.client Client on the test's reactor for every gateway of api."""
    from twisted.internet import reactor  # installed by pytest-twisted, never at import

    return Client(endpoints or list(api.gateway_urls), reactor=reactor, **options)


def _status_of(url: str, path: str, body: Any, stream: bool = False) -> tuple[int, Any]:
    """The status and the decoded body; for a stream, the body only when
    the status is not 200 (a stream is never read)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
    try:
        conn.request("POST", path, body=json.dumps(body).encode())
        resp = conn.getresponse()
        if resp.status == 200 and stream:
            return 200, None
        raw = resp.read()
        with contextlib.suppress(ValueError):
            return resp.status, json.loads(raw)
        return resp.status, raw.decode("utf-8", "replace")
    finally:
        conn.close()


def require_watch(api: ApiEndpoints) -> None:
    """Skip on dkv while it answers 404 for /v3/watch (its Watch service is
    another branch's work); run on etcd."""
    if api.system != "dkv":
        return
    try:
        status, _ = _status_of(api.gateway_urls[0], "/v3/watch", {"create_request": {"key": "cHJvYmU="}}, True)
    except TimeoutError:
        status = 200  # a stream that sends nothing yet: served
    if status == 404:
        pytest.skip("dkv answers 404 for /v3/watch: its Watch service is not merged yet")


def require_leases(api: ApiEndpoints) -> None:
    """Skip on dkv while it answers 404 for /v3/lease/grant (its Lease
    service is another branch's work); run on etcd."""
    if api.system != "dkv":
        return
    status, answer = _status_of(api.gateway_urls[0], "/v3/lease/grant", {"TTL": "60"})
    if status == 404:
        pytest.skip("dkv answers 404 for /v3/lease/grant: its Lease service is not merged yet")
    if status == 200 and isinstance(answer, dict) and answer.get("ID"):
        _status_of(api.gateway_urls[0], "/v3/lease/revoke", {"ID": answer["ID"]})


def require_watch_and_leases(api: ApiEndpoints) -> None:
    """Both of the above: what the recipes (sessions, waiting) need."""
    require_watch(api)
    require_leases(api)


def etcdctl_child(api: ApiEndpoints, log: Path, *args: str) -> Process:
    """etcdctl with args against every member, started in the background;
    its output (stdout and stderr) goes to log."""
    binary = etcdctl_binary()
    if binary is None:
        pytest.skip(f"etcdctl is not installed ({INSTALL_HINT})")
    argv = [binary, "--endpoints", api.etcdctl_endpoints, *args]
    child = Process(argv, log, env=etcd_env() | {"ETCDCTL_API": "3"}, name="etcdctl")
    child.start()
    return child


def printed(child: Process) -> list[str]:
    """The lines a child printed so far (without the harness's notes)."""
    return [line for line in child.log_text().splitlines() if not line.startswith("=== harness:")]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition") -> None:
    """Await check() on the reactor until it is true, failing after timeout
    seconds (a poll with a deadline, for states only the cluster can tell)."""
    from twisted.internet import reactor, task  # installed by pytest-twisted, never at import

    deadline = reactor.seconds() + timeout
    while not await check():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await task.deferLater(reactor, 0.02, lambda: None)  # poll
