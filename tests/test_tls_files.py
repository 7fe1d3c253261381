"""TLS configuration: which flag combinations are refused, and the one-line
start-up errors for files that cannot be used; the peer protocol's
certificate checks; the test CA helper."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography import x509
from twisted.python import usage

from dkv.config import ConfigError, TlsFiles, parse_tls
from dkv.errors import StartupError
from dkv.options import Options
from dkv.testing.certs import CertificateAuthority, ClusterCerts
from dkv.testing.launcher import child_env, free_node_ports
from dkv.tls import NodeTls, TlsError, load_material
from dkv.tls.peer_guard import cert_refusal, host_of, names_host
from dkv.tls.service import TlsService


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in [v for v in os.environ if v.startswith("DKV_")]:
        monkeypatch.delenv(var)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("unit CA")


def base(tmp_path) -> list[str]:
    return ["--node-id", "a", "--db-path", str(tmp_path / "a.db"), "--cluster", "a@127.0.0.1:7070"]


def parse(args: list[str]) -> Options:
    options = Options()
    options.parseOptions(args)
    return options


# -- flag combinations ------------------------------------------------------------------


def test_no_tls_flags_means_plaintext(tmp_path) -> None:
    c = parse(base(tmp_path))["config"]
    assert c.client_tls is None and c.peer_tls is None


def test_flags_and_variables_become_tls_files(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DKV_CERT_FILE", "s.crt")
    monkeypatch.setenv("DKV_KEY_FILE", "s.key")
    monkeypatch.setenv("DKV_TRUSTED_CA_FILE", "ca.crt")
    monkeypatch.setenv("DKV_CLIENT_CERT_AUTH", "true")
    monkeypatch.setenv("DKV_PEER_CERT_FILE", "p.crt")
    c = parse([*base(tmp_path), "--peer-key-file", "p.key", "--peer-trusted-ca-file", "pca.crt"])["config"]
    assert c.client_tls == TlsFiles("s.crt", "s.key", "ca.crt", True, "")
    # Peers always present and check certificates (--peer-client-cert-auth is implied).
    assert c.peer_tls == TlsFiles("p.crt", "p.key", "pca.crt", True, "peer-")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cert-file", "s.crt"], "--cert-file given without --key-file"),
        (["--key-file", "s.key"], "--key-file given without --cert-file"),
        (["--cert-file", "s.crt", "--key-file", "s.key", "--client-cert-auth"],
         "--client-cert-auth needs --trusted-ca-file"),
        (["--client-cert-auth"], "--client-cert-auth needs --cert-file and --key-file"),
        (["--trusted-ca-file", "ca.crt"], "--trusted-ca-file needs --cert-file and --key-file"),
        (["--peer-cert-file", "p.crt"], "--peer-cert-file given without --peer-key-file"),
        (["--peer-cert-file", "p.crt", "--peer-key-file", "p.key"], "--peer-cert-file needs --peer-trusted-ca-file"),
        (
            ["--cert-file", "s.crt", "--key-file", "s.key", "--peer-cert-file", "p.crt", "--peer-key-file", "p.key",
             "--peer-trusted-ca-file", "pca.crt"],
            "with peer TLS, --cert-file needs --trusted-ca-file",
        ),
    ],
)  # fmt: skip
def test_combinations_that_cannot_work_are_refused(tmp_path, args, message) -> None:
    with pytest.raises(usage.UsageError) as e:
        parse([*base(tmp_path), *args])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_parse_tls_alone() -> None:
    assert parse_tls("", "", "", False) is None
    with pytest.raises(ConfigError):
        parse_tls("", "k", "", False, peer=True)


# -- the files --------------------------------------------------------------------------


def test_good_files_load(tmp_path, ca) -> None:
    pair = ca.write_pair(tmp_path, "node")
    m = load_material(TlsFiles(str(pair.cert), str(pair.key), str(ca.write(tmp_path / "ca.crt")), True))
    assert m.certificate.subject.rfc4514_string() == "CN=node"
    assert m.cas == (ca.certificate,)


def _error(files: TlsFiles) -> str:
    with pytest.raises(TlsError) as e:
        load_material(files)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_missing_file(tmp_path, ca) -> None:
    pair = ca.write_pair(tmp_path, "node")
    assert _error(TlsFiles(str(tmp_path / "nope.crt"), str(pair.key))) == (
        f"--cert-file {tmp_path / 'nope.crt'}: No such file or directory"
    )
    peer = TlsFiles(str(pair.cert), str(pair.key), str(tmp_path / "x"), True, "peer-")
    assert "--peer-trusted-ca-file" in _error(peer)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path, ca) -> None:
    pair = ca.write_pair(tmp_path, "node")
    pair.key.chmod(0)
    assert "Permission denied" in _error(TlsFiles(str(pair.cert), str(pair.key)))


def test_not_pem(tmp_path, ca) -> None:
    pair = ca.write_pair(tmp_path, "node")
    junk = tmp_path / "junk"
    junk.write_text("hello\n")
    assert _error(TlsFiles(str(junk), str(pair.key))) == f"--cert-file {junk}: no PEM certificate in it"
    assert "not a PEM private key" in _error(TlsFiles(str(pair.cert), str(junk)))
    assert "no PEM certificate" in _error(TlsFiles(str(pair.cert), str(pair.key), str(junk), True))


def test_key_that_does_not_match_the_certificate(tmp_path, ca) -> None:
    one = ca.write_pair(tmp_path, "one")
    two = ca.write_pair(tmp_path, "two")
    message = _error(TlsFiles(str(one.cert), str(two.key), "", False, "peer-"))
    assert message == f"--peer-key-file {two.key} does not match the certificate in --peer-cert-file {one.cert}"


def test_the_service_turns_a_bad_file_into_a_startup_error(tmp_path, ca) -> None:
    one = ca.write_pair(tmp_path, "one")
    two = ca.write_pair(tmp_path, "two")
    service = TlsService(NodeTls(TlsFiles(str(one.cert), str(two.key)), None), reactor=None)
    with pytest.raises(StartupError, match="does not match"):
        service.privilegedStartService()


def test_a_failed_reload_keeps_the_material_in_use(tmp_path, ca) -> None:
    pair = ca.write_pair(tmp_path, "node")
    tls = NodeTls(TlsFiles(str(pair.cert), str(pair.key)), None)
    tls.load()
    serial = tls.client.certificate.serial_number
    ca.write_pair(tmp_path, "other")
    (tmp_path / "other.key").replace(pair.key)  # the key no longer matches
    assert tls.reload() is False
    assert tls.client.certificate.serial_number == serial and tls.generation == 1
    ca.write_pair(tmp_path, "node")  # a new matching pair
    assert tls.reload() is True
    assert tls.client.certificate.serial_number != serial and tls.generation == 2


def test_the_node_refuses_to_start_with_one_line(tmp_path, ca) -> None:
    """``dkv`` with a certificate and a key that do not match: exit 1 and
    one line naming both files, before anything is opened."""
    one = ca.write_pair(tmp_path, "one")
    two = ca.write_pair(tmp_path, "two")
    [(rpc, rest)] = free_node_ports(1)
    argv = [
        sys.executable, "-m", "dkv.cli", "--node-id", "a", "--db-path", str(tmp_path / "a.db"),
        "--cluster", f"a@127.0.0.1:{rpc}", "--rpc-port", str(rpc), "--rest-port", str(rest),
        "--cert-file", str(one.cert), "--key-file", str(two.key),
    ]  # fmt: skip
    done = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"dkv: --key-file {two.key} does not match the certificate in --cert-file {one.cert}"
    ]
    assert not (tmp_path / "a.db").exists()


# -- the peer protocol's checks --------------------------------------------------------


def test_cert_refusal(ca) -> None:
    other = CertificateAuthority.create("other CA")
    mine, _ = ca.issue("b", ["127.0.0.1"])
    theirs, _ = other.issue("b", ["127.0.0.1"])
    assert cert_refusal(mine, [other.certificate, ca.certificate])[0] == ""
    assert "not issued by the peer CA" in cert_refusal(theirs, [ca.certificate])[0]
    assert cert_refusal(b"", [ca.certificate]) == ("no client certificate", None)


def test_names_host(ca) -> None:
    pem, _ = ca.issue("b", ["10.0.0.2", "node-b.example", "::1"])
    cert = x509.load_pem_x509_certificate(pem)
    assert names_host(cert, "10.0.0.2") and names_host(cert, "NODE-B.example") and names_host(cert, "::1")
    assert not names_host(cert, "10.0.0.3") and not names_host(cert, "node-c.example")
    assert host_of("10.0.0.2:7070") == "10.0.0.2" and host_of("[::1]:7070") == "::1"
    bare = x509.load_pem_x509_certificate(ca.issue("nobody", [])[0])
    assert not names_host(bare, "10.0.0.2")


def test_cluster_certs_use_two_cas(tmp_path) -> None:
    certs = ClusterCerts(tmp_path)
    args = certs.node_args("a")
    assert "--client-cert-auth" in args and "--peer-trusted-ca-file" in args
    peer = x509.load_pem_x509_certificate(certs.peer_pair("a").cert.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_pair("a").cert.read_bytes())
    assert peer.issuer != server.issuer
    assert names_host(peer, "127.0.0.1") and names_host(server, "localhost")


# -- small pieces ------------------------------------------------------------------------


def test_the_rest_tls_factory_refuses_what_the_front_door_refuses(tmp_path, ca) -> None:
    from twisted.internet.protocol import Factory

    from dkv.tls.rest import tls_factory

    class Full(Factory):
        def buildProtocol(self, addr):  # noqa: N802
            return None

    pair = ca.write_pair(tmp_path, "node")
    tls = NodeTls(TlsFiles(str(pair.cert), str(pair.key)), None)
    tls.load()
    assert tls_factory(Full(), tls).buildProtocol(None) is None


def test_rest_options_follow_reloads(tmp_path, ca) -> None:
    pair = ca.write_pair(tmp_path, "node")
    tls = NodeTls(TlsFiles(str(pair.cert), str(pair.key), str(ca.write(tmp_path / "ca.crt")), True), None)
    tls.load()
    first = tls.rest_options()
    assert tls.rest_options() is first  # made once per generation
    ca.write_pair(tmp_path, "node")
    assert tls.reload() and tls.rest_options() is not first


def test_rpc_port_credentials_follow_the_sides(tmp_path, ca) -> None:
    peer_ca = CertificateAuthority.create("peer CA")
    client = ca.write_pair(tmp_path, "client-side")
    peer = peer_ca.write_pair(tmp_path, "peer-side")
    client_files = TlsFiles(str(client.cert), str(client.key), str(ca.write(tmp_path / "ca.crt")), False)
    peer_files = TlsFiles(str(peer.cert), str(peer.key), str(peer_ca.write(tmp_path / "pca.crt")), True, "peer-")
    plain = NodeTls(None, None)
    assert plain.rpc_server_credentials() is None and plain.peer_channel_credentials() is None
    both = NodeTls(client_files, peer_files)
    both.load()
    # Peer TLS makes the port ask every caller for a certificate, of either CA.
    assert both.rpc_requires_client_cert
    assert both._rpc_roots() == ca.pem + peer_ca.pem
    assert both._rpc_identity().files == client_files  # clients see the client-side certificate
    assert both._fetch() is not None and both._fetch() is None  # new configuration once per reload
    client_only = NodeTls(client_files, None)
    client_only.load()
    assert not client_only.rpc_requires_client_cert
    assert client_only.peer_channel_credentials() is not None


def test_dkvctl_tls_files(tmp_path, ca) -> None:
    from dkv.ctl_transport import CtlError, ssl_context

    pair = ca.write_pair(tmp_path, "me")
    assert ssl_context(None, None, None) is None
    assert ssl_context(str(ca.write(tmp_path / "ca.crt")), str(pair.cert), str(pair.key)) is not None
    with pytest.raises(CtlError, match="--cert and --key together"):
        ssl_context(None, str(pair.cert), None)
    with pytest.raises(CtlError, match="cannot use the TLS files"):
        ssl_context(str(tmp_path / "missing.crt"), None, None)
