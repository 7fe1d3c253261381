"""dkvctl against a real 3-node cluster: tables for people, --json for scripts."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from dkv.ctl import CtlError, parser, run
from dkv.testing.cluster import Cluster
from dkv.testing.poll import wait_until

pytestmark = pytest.mark.process


def ctl(endpoint: str, *args: str) -> str:
    out = io.StringIO()
    run(parser().parse_args(["--endpoint", endpoint, *args]), out)
    return out.getvalue()


def test_dkvctl_end_to_end() -> None:
    with Cluster() as cluster:
        cluster.start()
        leader = cluster.leader(timeout=20)
        follower = next(n for n in "abc" if n != leader)
        ep = f"127.0.0.1:{cluster.rest_ports[follower]}"
        assert ctl(ep, "put", "hello", "world") == "OK\n"
        assert ctl(ep, "get", "hello") == "world\n"
        assert ctl(ep, "get", "--serializable", "hello") == "world\n"
        assert json.loads(ctl(ep, "--json", "get", "hello")) == {"key": "aGVsbG8=", "value": "d29ybGQ="}
        assert ctl(ep, "--b64", "get", "aGVsbG8=") == "d29ybGQ=\n"
        assert ctl(ep, "delete", "hello") == "OK\n"
        with pytest.raises(CtlError, match="key not found") as err:
            ctl(ep, "get", "hello")
        assert err.value.exit_code == 1

        status = ctl(ep, "status")
        assert f"id:             {follower}" in status and "MATCH" in status
        assert json.loads(ctl(ep, "--json", "status"))["leader_id"] == leader

        table = ctl(ep, "members", "list").splitlines()
        assert table[0].split() == ["ID", "ADDRESS", "ROLE", "LEADER"]
        assert any(line.split()[0] == leader and line.rstrip().endswith("*") for line in table[1:])

        added = json.loads(ctl(ep, "--json", "members", "add", "d", "127.0.0.1:1", "--learner"))
        assert {"id": "d", "address": "127.0.0.1:1", "voter": False} in added["members"]
        with pytest.raises(CtlError, match="has not caught up"):
            ctl(ep, "members", "promote", "d")
        assert "d" not in ctl(ep, "members", "remove", "d")

        target = next(n for n in "abc" if n not in (leader, follower))
        assert ctl(ep, "leader", "transfer", target) == f"leader: {target}\n"
        assert cluster.leader(timeout=10) == target


def test_dkvctl_leader_transfer_during_an_election_waits_for_the_leader() -> None:
    """A node that knows no leader holds a transfer (or membership change)
    until one is elected, as it holds writes, instead of refusing at once."""
    with Cluster(request_timeout=15.0) as cluster:
        cluster.start()
        leader = cluster.leader(timeout=20)
        survivor, other = (n for n in "abc" if n != leader)
        cluster.stop(leader)
        cluster.stop(other)
        wait_until(
            lambda: cluster.status(survivor)[1]["leader_id"] == "", timeout=15, what=f"{survivor} to know no leader"
        )
        ep = f"127.0.0.1:{cluster.rest_ports[survivor]}"
        with ThreadPoolExecutor(1) as pool:
            transfer = pool.submit(ctl, ep, "leader", "transfer", survivor)
            cluster.start_node(other)
            assert transfer.result(timeout=60) == f"leader: {survivor}\n"
        assert cluster.leader(timeout=10, among=(survivor, other)) == survivor


def test_dkvctl_command_reports_unreachable_and_refusals() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dkv.ctl", "--endpoint", "127.0.0.1:1", "status"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith("dkvctl: cannot reach 127.0.0.1:1")
