"""TLS on real processes: a 3-node cluster with client TLS (client
certificates required) and peer mutual TLS, each from its own CA.

Clients (dkv.client over treq, gRPC, etcdctl, dkvctl) work with the CA and
a client certificate, and fail without; plain HTTP and plaintext gRPC fail
cleanly; the peer protocol refuses certificates of the wrong CA or naming
the wrong host, and a node with such a certificate cannot join; SIGHUP
reloads the certificates without a restart."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys

import grpc
import pytest
import pytest_twisted
from cryptography import x509

from dkv.client import Client, ClientTls
from dkv.pb import etcd_rpc_pb2, etcd_rpc_pb2_grpc, raft_pb2, raft_pb2_grpc
from dkv.testing.certs import CertificateAuthority, ClusterCerts
from dkv.testing.cluster import Cluster
from dkv.testing.etcd_cluster import etcd_env, etcdctl_binary
from dkv.testing.launcher import child_env
from dkv.testing.poll import wait_until
from dkv.testing.rest_client import http_request

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> ClusterCerts:
    return ClusterCerts(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def cluster(certs, tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("cluster"), tls=certs) as c:
        c.start()
        c.wait_settled()
        yield c


def rest_url(cluster: Cluster, node: str) -> str:
    return f"https://127.0.0.1:{cluster.rest_ports[node]}"


def rpc_address(cluster: Cluster, node: str) -> str:
    return f"127.0.0.1:{cluster.rpc_ports[node]}"


def served_serial(port: int, context: ssl.SSLContext) -> int:
    """The serial number of the certificate a new TLS connection to port sees."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def grpc_context(certs: ClusterCerts) -> ssl.SSLContext:
    context = certs.ssl_context()
    assert context is not None
    context.set_alpn_protocols(["h2"])
    return context


# -- clients ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_client_reads_and_writes_over_https(cluster, certs) -> None:
    from twisted.internet import reactor

    tls = ClientTls(str(certs.client_ca_path), str(certs.client_pair.cert), str(certs.client_pair.key))
    client = Client([rest_url(cluster, i) for i in cluster.ids], reactor=reactor, tls=tls)
    try:
        await client.put(b"tls/a", b"1")
        for node in cluster.ids:  # every node, over HTTPS, linearizable
            one = Client(rest_url(cluster, node), reactor=reactor, tls=tls)
            try:
                kv = await one.get(b"tls/a")
                assert kv is not None and kv.value == b"1"
            finally:
                await one.close()
    finally:
        await client.close()


def test_rest_negotiates_http_1_1_with_clients_offering_alpn(cluster, certs) -> None:
    """Browsers and curl offer h2 and http/1.1: the port picks http/1.1."""
    context = certs.ssl_context()
    assert context is not None
    context.set_alpn_protocols(["h2", "http/1.1"])
    node = cluster.nodes["c"]
    assert http_request(node.rest_port, "GET", "/v0/status", context=context)[0] == 200
    curl = shutil.which("curl")
    if curl is not None:
        done = subprocess.run(
            [curl, "-sS", "--cacert", str(certs.client_ca_path), "--cert", str(certs.client_pair.cert),
             "--key", str(certs.client_pair.key), f"https://localhost:{node.rest_port}/v0/status"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0 and json.loads(done.stdout)["id"] == "c", done.stderr


def test_rest_refuses_plain_http_and_clients_without_a_certificate(cluster, certs) -> None:
    port = cluster.rest_ports["a"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /v0/status HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while chunk := s.recv(4096):  # the node closes the connection
            received += chunk
    assert b"HTTP/1.1 200" not in received
    no_cert = ssl.create_default_context(cafile=str(certs.client_ca_path))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with no_cert.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET /v0/status HTTP/1.1\r\nHost: x\r\n\r\n")
                if not tls.recv(4096):
                    raise ConnectionError("closed")
    assert cluster.status("a")[0] == 200  # still serving


def test_grpc_over_tls_and_not_without(cluster, certs) -> None:
    with grpc.secure_channel(rpc_address(cluster, "b"), certs.grpc_credentials()) as channel:
        kv = etcd_rpc_pb2_grpc.KVStub(channel)
        kv.Put(etcd_rpc_pb2.PutRequest(key=b"tls/grpc", value=b"2"), timeout=10)
        got = kv.Range(etcd_rpc_pb2.RangeRequest(key=b"tls/grpc"), timeout=10)
        assert got.kvs[0].value == b"2"
    plain = grpc.insecure_channel(rpc_address(cluster, "b"))
    no_cert = grpc.secure_channel(rpc_address(cluster, "b"), grpc.ssl_channel_credentials(certs.client_ca.pem))
    for channel in (plain, no_cert):
        with channel:
            with pytest.raises(grpc.RpcError) as e:
                etcd_rpc_pb2_grpc.KVStub(channel).Range(etcd_rpc_pb2.RangeRequest(key=b"tls/grpc"), timeout=5)
            assert e.value.code() is grpc.StatusCode.UNAVAILABLE


def test_etcdctl_with_cacert_cert_and_key(cluster, certs) -> None:
    binary = etcdctl_binary()
    if binary is None:
        pytest.skip("etcdctl is not installed")
    endpoints = ",".join(f"https://{rpc_address(cluster, i)}" for i in cluster.ids)
    tls = ["--cacert", str(certs.client_ca_path), "--cert", str(certs.client_pair.cert),
           "--key", str(certs.client_pair.key)]  # fmt: skip

    def etcdctl(*args: str) -> str:
        done = subprocess.run(
            [binary, "--endpoints", endpoints, *tls, "--command-timeout", "20s", *args],
            env=etcd_env() | {"ETCDCTL_API": "3"}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert etcdctl("put", "tls/ctl", "3").strip() == "OK"
    assert etcdctl("get", "tls/ctl").split() == ["tls/ctl", "3"]
    members = json.loads(etcdctl("member", "list", "-w", "json"))["members"]
    assert len(members) == 3
    assert all(url.startswith("https://") for m in members for url in m["clientURLs"])
    statuses = json.loads(etcdctl("endpoint", "status", "-w", "json"))
    assert len(statuses) == 3 and len({s["Status"]["leader"] for s in statuses}) == 1
    # --cluster dials the members' client URLs (https://) from MemberList
    assert len(json.loads(etcdctl("endpoint", "status", "--cluster", "-w", "json"))) == 3
    # Without a client certificate the RPC port lets nothing through.
    done = subprocess.run(
        [binary, "--endpoints", endpoints, "--cacert", str(certs.client_ca_path), "--command-timeout", "3s",
         "--dial-timeout", "3s", "get", "tls/ctl"],
        env=etcd_env() | {"ETCDCTL_API": "3"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0


def test_dkvctl_with_cacert_cert_and_key(cluster, certs) -> None:
    endpoints = ",".join(f"127.0.0.1:{cluster.rest_ports[i]}" for i in cluster.ids)
    tls = ["--cacert", str(certs.client_ca_path), "--cert", str(certs.client_pair.cert),
           "--key", str(certs.client_pair.key)]  # fmt: skip

    def dkvctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "dkv.ctl", "--endpoints", endpoints, *args],
            env=child_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert not check or done.returncode == 0, done.stderr
        return done

    assert dkvctl(*tls, "put", "tls/dkvctl", "4").stdout == "OK\n"
    assert dkvctl(*tls, "get", "tls/dkvctl").stdout == "4\n"
    assert dkvctl(*tls, "get", "tls/dkvctl", "--prefix").stdout == "tls/dkvctl\n4\n"
    assert "role:" in dkvctl(*tls, "status").stdout
    refused = dkvctl("--cacert", str(certs.client_ca_path), "get", "tls/dkvctl", check=False)
    assert refused.returncode == 2, refused.stderr


# -- the peer protocol ------------------------------------------------------------------


def _raft_stream(address: str, credentials: grpc.ChannelCredentials, cluster_id: str, sender: str) -> None:
    batch = raft_pb2.Batch(cluster_id=cluster_id)
    setattr(batch, "from", sender)
    with grpc.secure_channel(address, credentials) as channel:
        raft_pb2_grpc.RaftStub(channel).Stream(iter([batch]), timeout=10)


def test_raft_refuses_callers_without_a_fitting_peer_certificate(cluster, certs, tmp_path) -> None:
    status = cluster.status("a")[1]
    cluster_id = status.get("cluster_id", "")
    address = rpc_address(cluster, "a")
    # The tools' client certificate: the RPC port lets it in, the Raft service does not.
    with pytest.raises(grpc.RpcError) as e:
        _raft_stream(address, certs.grpc_credentials(), cluster_id, "b")
    assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "not issued by the peer CA" in (e.value.details() or "")
    # A peer-CA certificate for another host, claiming to be member b.
    elsewhere = certs.peer_ca.write_pair(tmp_path, "elsewhere", ["10.9.9.9"])
    creds = grpc.ssl_channel_credentials(
        certs.client_ca.pem, elsewhere.key.read_bytes(), elsewhere.cert.read_bytes()
    )
    with pytest.raises(grpc.RpcError) as e:
        _raft_stream(address, creds, cluster_id, "b")
    assert e.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "does not name 127.0.0.1" in (e.value.details() or "")
    # A certificate of a CA the node does not know: the handshake itself fails.
    foreign = CertificateAuthority.create("foreign CA").write_pair(tmp_path, "foreign")
    creds = grpc.ssl_channel_credentials(certs.client_ca.pem, foreign.key.read_bytes(), foreign.cert.read_bytes())
    with pytest.raises(grpc.RpcError) as e:
        _raft_stream(address, creds, cluster_id, "b")
    assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert "refused peer call Raft/Stream" in cluster.nodes["a"].log_text()
    cluster.put_retry("tls/after-refusals", "5")  # the cluster goes on


def test_a_node_with_a_peer_certificate_of_another_ca_cannot_join(cluster, certs) -> None:
    wrong = certs.client_ca.write_pair(certs.directory, "wrong-peer")
    node = cluster.add_node(
        "x", cluster.ids[0], "--peer-cert-file", str(wrong.cert), "--peer-key-file", str(wrong.key), wait=False
    )
    wait_until(lambda: not node.alive, 60, "the node with the wrong peer certificate to give up")
    assert node.returncode == 1
    assert "cannot join the cluster" in node.log_text() and "UNAUTHENTICATED" in node.log_text()
    # One that does not trust the members' certificates gives up at once, saying why. (Peers
    # check a member's certificate against both CAs: with client TLS on, the RPC port presents
    # the client-side certificate; see the README's "TLS".)
    unknown = CertificateAuthority.create("unknown CA").write(certs.directory / "unknown-ca.crt")
    node = cluster.add_node(
        "y", cluster.ids[0], "--peer-trusted-ca-file", str(unknown), "--trusted-ca-file", str(unknown), wait=False
    )
    wait_until(lambda: not node.alive, 60, "the node that trusts no member to give up")
    assert node.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in node.log_text()
    members = cluster.request(cluster.ids[0], "GET", "/v0/members")[1]["members"]
    assert not {"x", "y"} & {m["id"] for m in members}


def test_a_node_with_a_good_peer_certificate_joins(cluster) -> None:
    node = cluster.add_node("d", cluster.ids[1], timeout=60)
    cluster.put_retry("tls/joined", "6")
    wait_until(lambda: (st := node.try_status()) and st["applied_index"] >= 3 and st, 60, "d to catch up")
    members = cluster.request("a", "GET", "/v0/members")[1]["members"]
    assert any(m["id"] == "d" and not m["voter"] for m in members), members


# -- reloading ---------------------------------------------------------------------------


def test_sighup_reloads_the_certificates(cluster, certs) -> None:
    node = cluster.nodes["a"]
    rest, rpc = cluster.rest_ports["a"], cluster.rpc_ports["a"]
    context = certs.ssl_context()
    assert context is not None
    old = served_serial(rest, context)
    assert served_serial(rpc, grpc_context(certs)) == old
    # New files (new serial numbers) under the same names, then SIGHUP.
    server = certs.server_pair("a")
    new_pem, new_key = certs.client_ca.issue("a-server")
    server.cert.write_bytes(new_pem)
    server.key.write_bytes(new_key)
    peer = certs.peer_pair("a")
    peer_pem, peer_key = certs.peer_ca.issue("a-peer")
    peer.cert.write_bytes(peer_pem)
    peer.key.write_bytes(peer_key)
    new = x509.load_pem_x509_certificate(new_pem).serial_number
    new_peer = x509.load_pem_x509_certificate(peer_pem).serial_number
    node.signal(signal.SIGHUP)
    wait_until(lambda: served_serial(rest, context) == new, 30, "new REST connections to see the new certificate")
    wait_until(lambda: served_serial(rpc, grpc_context(certs)) == new, 30, "the RPC port to serve the new certificate")
    assert f"peer cert serial {new_peer:x}" in node.log_text()
    cluster.put_retry("tls/reloaded", "7", via=["a"])
    # A reload with a key that does not match is refused; the node keeps its certificates.
    server.key.write_bytes(certs.client_ca.issue("other")[1])
    node.signal(signal.SIGHUP)
    wait_until(lambda: "TLS reload refused" in node.log_text(), 30, "the refused reload to be logged")
    assert served_serial(rest, context) == new
    assert node.alive and cluster.status("a")[0] == 200
