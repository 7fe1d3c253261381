"""Options: flags, DKV_* variables (flags win), and clear configuration errors."""

from __future__ import annotations

import pytest
from twisted.python import usage

from dkv.config import Admission, ConfigError, parse_cluster, parse_routes
from dkv.options import Options

CLUSTER = "a@127.0.0.1:7070,b@127.0.0.1:8080,c@127.0.0.1:9090"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for var in [v for v in os.environ if v.startswith("DKV_")]:
        monkeypatch.delenv(var)


def parse(args: list[str]) -> Options:
    options = Options()
    options.parseOptions(args)
    return options


def test_flags(tmp_path) -> None:
    o = parse(
        ["--node-id", "a", "--rpc-port", "7070", "--rest-port", "7071", "--db-path", str(tmp_path / "a.db"),
         "--cluster", CLUSTER, "--log-level", "debug"]
    )
    c = o["config"]
    assert (c.node_id, c.rpc_port, c.rest_port, c.log_level) == ("a", 7070, 7071, "debug")
    assert c.listen_host == "127.0.0.1"
    assert [m.id for m in c.cluster.members] == ["a", "b", "c"]
    assert c.cluster.first == "a"
    assert c.request_timeout == 5.0
    assert c.limits.max_key_bytes == 4096 and c.limits.max_body_bytes == 1536 * 1024


def test_environment_variables(tmp_path, monkeypatch) -> None:
    env = {
        "DKV_NODE_ID": "b", "DKV_RPC_PORT": "8080", "DKV_REST_PORT": "8081",
        "DKV_DB_PATH": str(tmp_path / "b.db"), "DKV_CLUSTER": CLUSTER, "DKV_LOG_LEVEL": "warn",
        "DKV_REQUEST_TIMEOUT": "2.5", "DKV_LISTEN_HOST": "0.0.0.0", "DKV_ADVERTISE_HOST": "10.0.0.2",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    c = parse([])["config"]
    assert (c.node_id, c.rpc_port, c.rest_port, c.log_level) == ("b", 8080, 8081, "warn")
    assert c.request_timeout == 2.5 and c.listen_host == "0.0.0.0"
    assert c.advertise == "10.0.0.2:8080"


def test_flags_win_over_variables(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DKV_NODE_ID", "b")
    monkeypatch.setenv("DKV_RPC_PORT", "8080")
    monkeypatch.setenv("DKV_CLUSTER", CLUSTER)
    monkeypatch.setenv("DKV_DB_PATH", str(tmp_path / "x.db"))
    c = parse(["--node-id", "a", "--rpc-port", "7070"])["config"]
    assert (c.node_id, c.rpc_port) == ("a", 7070)


def test_every_flag_has_a_variable(tmp_path, monkeypatch) -> None:
    """Each --foo-bar is read from DKV_FOO_BAR (checked by setting all of them)."""
    values = {
        "node-id": "a", "cluster": CLUSTER, "rpc-port": "7170", "rest-port": "7171",
        "db-path": str(tmp_path / "a.db"), "listen-host": "127.0.0.2", "log-level": "error",
        "peer-route": "b=127.0.0.1:9999", "request-timeout": "3", "max-key-size": "100",
        "max-body-size": "1000", "tick-ms": "20", "election-ticks": "7", "heartbeat-ticks": "2",
        "snapshot-entries": "50", "snapshot-keep-entries": "10", "advertise-host": "127.0.0.3",
        "join": "", "max-inflight": "8", "max-connections": "50", "idle-timeout": "2.5", "read-timeout": "1.5",
        "max-txn-ops": "7", "auto-compaction-mode": "revision", "auto-compaction-retention": "1000",
        "idempotency-window": "0",
        "watch-progress-notify-interval": "2.5", "metrics-port": "7172",
        "log-format": "json",
        "auth-token-ttl": "60.0", "quota-backend-bytes": "524288",
        "cert-file": "s.crt", "key-file": "s.key", "trusted-ca-file": "ca.crt",
        "peer-cert-file": "p.crt", "peer-key-file": "p.key", "peer-trusted-ca-file": "pca.crt",
        "max-pending-proposals": "11", "max-pending-reads": "12", "max-apply-gap": "13",
        "max-peer-queue-bytes": "14000", "max-watch-pending-events": "15", "max-queue-delay": "0.5",
        "min-queue-delay": "0.03", "queue-delay-factor": "2.5", "queue-delay-min-pending": "64",
        "peer-transport": "grpc", "peer-port": "7180",
    }
    flags = {p[0] for p in Options.optParameters}
    assert flags == set(values), "update this test when adding an option"
    assert {f[0] for f in Options.optFlags} == {"auto-promote", "client-cert-auth", "peer-client-cert-auth"}
    monkeypatch.setenv("DKV_AUTO_PROMOTE", "true")
    monkeypatch.setenv("DKV_CLIENT_CERT_AUTH", "true")
    monkeypatch.setenv("DKV_PEER_CLIENT_CERT_AUTH", "true")
    for flag, value in values.items():
        monkeypatch.setenv("DKV_" + flag.upper().replace("-", "_"), value)
    o = parse([])
    for flag, value in values.items():
        assert str(o[flag]) == value or o[flag] == type(o[flag])(value), flag
    assert o["config"].auto_promote is True
    assert (o["config"].max_connections, o["config"].idle_timeout, o["config"].read_timeout) == (50, 2.5, 1.5)
    assert o["config"].limits.max_txn_ops == 7
    assert o["config"].limits.idempotency_window == 0.0
    assert o["config"].limits.auth_token_ttl == 60.0
    assert o["config"].limits.quota_backend_bytes == 524288
    assert o["config"].auto_compaction == ("revision", 1000.0)
    assert o["config"].watch_progress_interval == 2.5
    assert o["config"].admission == Admission(
        max_pending_proposals=11, max_pending_reads=12, max_apply_gap=13, max_peer_queue_bytes=14000,
        max_queue_delay=0.5, min_queue_delay=0.03, queue_delay_factor=2.5, queue_delay_min_pending=64,
    )
    assert o["config"].watch_max_pending_events == 15
    assert (o["config"].peer_transport, o["config"].effective_peer_port) == ("grpc", 7180)
    assert o["config"].log_format == "json"
    assert o["config"].metrics_port == 7172
    assert o["config"].client_tls.client_cert_auth and o["config"].peer_tls.key_file == "p.key"


@pytest.mark.parametrize(
    ("mode", "retention", "expected"),
    [("periodic", "1h", 3600.0), ("periodic", "30m", 1800.0), ("periodic", "90s", 90.0), ("periodic", "2", 7200.0),
     ("periodic", "0", 0.0), ("revision", "500", 500.0), ("Periodic", "0.5h", 1800.0)],
)  # fmt: skip
def test_auto_compaction_retention(mode: str, retention: str, expected: float) -> None:
    from dkv.config import parse_auto_compaction

    assert parse_auto_compaction(mode, retention) == (mode.lower(), expected)


@pytest.mark.parametrize(
    ("mode", "retention", "message"),
    [("hourly", "1h", "use periodic or revision"), ("periodic", "1d", "duration"), ("revision", "1h", "whole number")],
)
def test_bad_auto_compaction_is_refused(mode: str, retention: str, message: str) -> None:
    from dkv.config import ConfigError, parse_auto_compaction

    with pytest.raises(ConfigError, match=message):
        parse_auto_compaction(mode, retention)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster", CLUSTER], "no node id"),
        (["--node-id", "d", "--cluster", CLUSTER], "'d' is not in the cluster"),
        (["--node-id", "a", "--cluster", "a@127.0.0.1"], "expected HOST:PORT"),
        (["--node-id", "a", "--cluster", "a127.0.0.1:7070"], "not ID@HOST:PORT"),
        (["--node-id", "a", "--cluster", "a@127.0.0.1:7070,a@127.0.0.1:8080"], "twice"),
        (["--node-id", "a", "--cluster", "a@127.0.0.1:99999"], "1 to 65535"),
        (["--node-id", "a", "--cluster", CLUSTER, "--rpc-port", "x"], "1 to 65535"),
        (["--node-id", "a", "--cluster", CLUSTER, "--log-level", "loud"], "log level"),
        (["--node-id", "a b", "--cluster", CLUSTER], "node id"),
        (["--node-id", "a", "--cluster", CLUSTER, "--rpc-port", "7071", "--rest-port", "7071"], "both 7071"),
        (["--node-id", "a", "--cluster", CLUSTER, "--join", "127.0.0.1:7070"], "not both"),
        (["--node-id", "a", "--cluster", CLUSTER, "--metrics-port", "7071"], "metrics port and rest port"),
        (["--node-id", "a", "--cluster", CLUSTER, "--metrics-port", "7070"], "metrics port and rpc port"),
        (["--node-id", "a", "--cluster", CLUSTER, "--metrics-port", "0"], "1 to 65535"),
        (["--node-id", "d", "--join", "127.0.0.1"], "expected HOST:PORT"),
        (["--node-id", "d", "--join", "127.0.0.1:7070", "--listen-host", "0.0.0.0"], "advertise-host"),
    ],
)
def test_bad_configuration_is_one_clear_error(tmp_path, args, message) -> None:
    with pytest.raises(usage.UsageError, match=message):
        parse([*args, "--db-path", str(tmp_path / "a.db")])


def test_missing_db_path(tmp_path) -> None:
    with pytest.raises(usage.UsageError, match="no db path"):
        parse(["--node-id", "a", "--cluster", CLUSTER])


def test_db_path_in_missing_directory(tmp_path) -> None:
    with pytest.raises(usage.UsageError, match="does not exist"):
        parse(["--node-id", "a", "--cluster", CLUSTER, "--db-path", str(tmp_path / "no" / "a.db")])


def test_db_path_that_is_a_directory(tmp_path) -> None:
    with pytest.raises(usage.UsageError, match="is a directory"):
        parse(["--node-id", "a", "--cluster", CLUSTER, "--db-path", str(tmp_path)])


def test_bad_variable_names_the_variable(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DKV_RPC_PORT", "seventy")
    with pytest.raises(usage.UsageError, match="DKV_RPC_PORT"):
        parse(["--node-id", "a", "--cluster", CLUSTER, "--db-path", str(tmp_path / "a.db")])


def test_cluster_id_is_the_same_for_the_same_members() -> None:
    a = parse_cluster(CLUSTER)
    b = parse_cluster("c@127.0.0.1:9090,a@127.0.0.1:7070,b@127.0.0.1:8080")
    assert a.cluster_id() == b.cluster_id()
    assert a.first == "a" and b.first == "c"
    assert parse_cluster("a@127.0.0.1:7070").cluster_id() != a.cluster_id()


def test_ipv6_cluster_address() -> None:
    spec = parse_cluster("a@[::1]:7070")
    assert spec.members[0].address == "[::1]:7070"


def test_routes() -> None:
    assert parse_routes("b=127.0.0.1:1,c=localhost:2") == {"b": "127.0.0.1:1", "c": "localhost:2"}
    with pytest.raises(ConfigError):
        parse_routes("b:127.0.0.1:1")


def test_join_and_advertise(tmp_path) -> None:
    c = parse(["--node-id", "d", "--join", "127.0.0.1:7070", "--rpc-port", "10100", "--rest-port", "10101",
               "--db-path", str(tmp_path / "d.db"), "--auto-promote"])["config"]
    assert c.cluster is None and c.join == "127.0.0.1:7070"
    assert c.advertise == "127.0.0.1:10100" and c.auto_promote


def test_idempotency_window(tmp_path) -> None:
    base = ["--node-id", "a", "--cluster", CLUSTER, "--db-path", str(tmp_path / "a.db")]
    assert parse(base)["config"].limits.idempotency_window == 600.0
    assert parse([*base, "--idempotency-window", "2.5"])["config"].limits.idempotency_window == 2.5
    for bad in ("-1", "soon", "inf"):
        with pytest.raises(usage.UsageError):
            parse([*base, "--idempotency-window", bad])


def test_metrics_port(tmp_path) -> None:
    base = ["--node-id", "a", "--cluster", CLUSTER, "--db-path", str(tmp_path / "a.db")]
    assert parse(base)["config"].metrics_port is None
    assert parse([*base, "--metrics-port", "9100"])["config"].metrics_port == 9100


def test_peer_transport_flags(tmp_path) -> None:
    base = ["--node-id", "a", "--db-path", str(tmp_path / "a.db"), "--cluster", "a@127.0.0.1:7070"]
    c = parse(base)["config"]
    assert (c.peer_transport, c.effective_peer_port, c.peer_port_routes) == ("twisted", 7072, {})
    assert parse([*base, "--peer-transport", "grpc"])["config"].peer_transport == "grpc"
    c = parse([*base, "--peer-route", "b=10.0.0.2:7070/9000,c=10.0.0.3:7070"])["config"]
    assert c.peer_routes == {"b": "10.0.0.2:7070", "c": "10.0.0.3:7070"}
    assert c.peer_port_routes == {"b": "10.0.0.2:9000"}
    with pytest.raises(usage.UsageError, match="peer transport 'udp'"):
        parse([*base, "--peer-transport", "udp"])
    with pytest.raises(usage.UsageError, match=r"peer port 7071 \(--peer-port\) is also the rest port"):
        parse([*base, "--peer-port", "7071"])


def test_a_derived_peer_port_on_another_port_is_refused_with_the_way_out(tmp_path) -> None:
    base = ["--node-id", "a", "--db-path", str(tmp_path / "a.db"), "--cluster", "a@127.0.0.1:7070"]
    for flags, which in ((["--rest-port", "7072"], "rest"), (["--metrics-port", "7072"], "metrics")):
        with pytest.raises(usage.UsageError) as e:
            parse([*base, *flags])
        assert str(e.value).startswith(f"peer port 7072 (the RPC port + 2) is also the {which} port:")
        assert "--peer-port" in str(e.value) and "--peer-transport grpc" in str(e.value)
        assert parse([*base, *flags, "--peer-transport", "grpc"])["config"].peer_transport == "grpc"
    assert parse([*base, "--rest-port", "7072", "--peer-port", "7080"])["config"].effective_peer_port == 7080
    with pytest.raises(usage.UsageError, match="peer route"):
        parse([*base, "--peer-route", "b=10.0.0.2:7070/x"])
