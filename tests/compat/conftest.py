"""The cluster the compatibility tests run against: a fresh 3-member cluster
that speaks etcd's v3 API, once as a real etcd 3.4 and once as dkv.

A test asks for ``v3_cluster`` and receives a
``dkv.testing.etcd_cluster.ApiEndpoints``: ``system`` ("etcd" or "dkv"),
the members' ``names``, ``gateway_urls`` (``http://127.0.0.1:PORT`` of each
member's JSON gateway), ``grpc_addresses`` (``127.0.0.1:PORT`` of each
member's gRPC services; ``etcdctl_endpoints`` joins them), ``directory``,
and helpers: ``gateway(path, body, member)``, ``ok(...)``, ``leader()``,
``member_ids()``. etcd serves the gateway and gRPC on one client port; dkv
serves the gateway on its REST port and gRPC on its RPC port.

The etcd parameter is skipped when etcd is not installed (``.ci/run``
installs it). The dkv parameter is skipped until dkv speaks etcd's API: the
first dkv cluster started is probed (``POST /v3/kv/range {"key":"YQ=="}``
must answer 200) and the answer holds for the session.
``DKV_COMPAT_DKV=1`` runs the dkv parameter without probing (a dkv that
does not answer then fails the tests), ``DKV_COMPAT_DKV=0`` skips it
without starting anything.

Every process started is killed and every directory removed when the test
ends, whatever happened; when the test failed, the tail of every member's
log is printed first (pytest shows it with the failure).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from dkv.testing.cluster import Cluster
from dkv.testing.etcd_cluster import INSTALL_HINT, ApiEndpoints, EtcdCluster, etcd_binary, serves_v3_gateway

SYSTEMS = ("etcd", "dkv")
#: "1": run the dkv parameter without probing; "0": skip it.
DKV_SWITCH = "DKV_COMPAT_DKV"
NOT_YET = "dkv does not speak etcd's v3 API yet"

_failed = pytest.StashKey[bool]()
#: The session's answer to "does dkv speak etcd's v3 API?" once probed.
_dkv_speaks: dict[str, bool] = {}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_failed] = True
    return report


def _dkv_wanted() -> bool:
    setting = os.environ.get(DKV_SWITCH, "")
    if setting not in ("", "0", "1"):
        raise pytest.UsageError(f"{DKV_SWITCH} must be 0 or 1, not {setting!r}")
    return setting != "0" and _dkv_speaks.get("answer", True)


def _etcd(request: pytest.FixtureRequest) -> Iterator[ApiEndpoints]:
    if etcd_binary() is None:
        pytest.skip(f"etcd is not installed ({INSTALL_HINT})")
    with EtcdCluster() as etcd:
        etcd.start()
        yield etcd.endpoints()
        if request.node.stash.get(_failed, False):
            sys.stderr.write(etcd.logs_tail(30) + "\n")


def _dkv(request: pytest.FixtureRequest) -> Iterator[ApiEndpoints]:
    if not _dkv_wanted():
        pytest.skip(NOT_YET)
    with Cluster() as dkv:
        dkv.start()
        dkv.wait_settled()
        api = ApiEndpoints(
            system="dkv",
            names=tuple(dkv.ids),
            gateway_urls=tuple(f"http://127.0.0.1:{dkv.rest_ports[i]}" for i in dkv.ids),
            grpc_addresses=tuple(f"127.0.0.1:{dkv.rpc_ports[i]}" for i in dkv.ids),
            directory=dkv.dir,
        )
        speaks = os.environ.get(DKV_SWITCH) == "1" or serves_v3_gateway(api.gateway_urls[0])
        _dkv_speaks["answer"] = speaks
        if speaks:
            yield api
            if request.node.stash.get(_failed, False):
                sys.stderr.write(dkv.logs_report(30))
    if not speaks:
        pytest.skip(NOT_YET)


@pytest.fixture(params=SYSTEMS)
def v3_cluster(request: pytest.FixtureRequest) -> Iterator[ApiEndpoints]:
    """A fresh 3-member cluster that speaks etcd's v3 API (see above)."""
    yield from (_etcd if request.param == "etcd" else _dkv)(request)
