# test-case-name: tests.test_tls_files
"""Certificates made at run time for tests: a CA, and certificates it signs
for hosts (SANs), usable as TLS servers and clients.

    ca = CertificateAuthority.create("test CA")
    cert_pem, key_pem = ca.issue("node-a", ["127.0.0.1", "localhost"])
    paths = ca.write_pair(tmp_path, "a", ["127.0.0.1", "localhost"])  # a.crt, a.key

Keys are EC P-256 (fast to make); certificates are valid from an hour ago
for a week, each with a random serial number. For tests only: the keys are
written unencrypted.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertPaths", "CertificateAuthority", "ClusterCerts", "san_entries"]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def san_entries(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Each host as an IP address SAN if it is one, else as a DNS name."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


@attrs.frozen
class CertPaths:
    """Where a certificate and its key were written."""

    cert: Path
    key: Path


@attrs.frozen
class CertificateAuthority:
    """A self-signed CA that issues certificates."""

    name: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, name: str = "dkv test CA") -> CertificateAuthority:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),  # fmt: skip
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(name, key, cert)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for common_name, naming hosts as SANs,
        for both TLS server and client use."""
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName(san_entries(hosts)), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def write(self, path: Path) -> Path:
        """The CA's certificate written to path."""
        path.write_bytes(self.pem)
        return path

    def write_pair(self, directory: Path, stem: str, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> CertPaths:
        """Issue a certificate for hosts and write ``stem.crt`` and
        ``stem.key`` into directory (replacing them if present)."""
        cert, key = self.issue(stem, hosts)
        paths = CertPaths(directory / f"{stem}.crt", directory / f"{stem}.key")
        paths.cert.write_bytes(cert)
        paths.key.write_bytes(key)
        return paths


@attrs.define
class ClusterCerts:
    """The certificates of a test cluster with TLS, written into directory:
    a client CA and a peer CA (two different CAs, as an operator would keep
    them), for each node a server certificate for its client ports and a
    peer certificate, and a client certificate for tools (``client.crt``).
    Every certificate names 127.0.0.1 and localhost.

    ``client``: serve the REST port and the gRPC API over TLS;
    ``client_cert_auth``: clients must present ``client.crt``; ``peer``:
    mutual TLS between peers."""

    directory: Path
    client: bool = True
    client_cert_auth: bool = True
    peer: bool = True
    client_ca: CertificateAuthority = attrs.field(factory=lambda: CertificateAuthority.create("dkv test client CA"))
    peer_ca: CertificateAuthority = attrs.field(factory=lambda: CertificateAuthority.create("dkv test peer CA"))

    def __attrs_post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.client_ca.write(self.client_ca_path)
        self.peer_ca.write(self.peer_ca_path)
        self.client_ca.write_pair(self.directory, "client")

    @property
    def client_ca_path(self) -> Path:
        return self.directory / "client-ca.crt"

    @property
    def peer_ca_path(self) -> Path:
        return self.directory / "peer-ca.crt"

    @property
    def client_pair(self) -> CertPaths:
        """The tools' client certificate (issued by the client CA)."""
        return CertPaths(self.directory / "client.crt", self.directory / "client.key")

    def server_pair(self, node_id: str) -> CertPaths:
        return CertPaths(self.directory / f"{node_id}-server.crt", self.directory / f"{node_id}-server.key")

    def peer_pair(self, node_id: str) -> CertPaths:
        return CertPaths(self.directory / f"{node_id}-peer.crt", self.directory / f"{node_id}-peer.key")

    def node_args(self, node_id: str) -> list[str]:
        """The TLS flags of node_id, its certificates issued (once)."""
        args: list[str] = []
        if self.client:
            pair = self.server_pair(node_id)
            if not pair.cert.exists():
                self.client_ca.write_pair(self.directory, f"{node_id}-server")
            args += ["--cert-file", str(pair.cert), "--key-file", str(pair.key)]
            args += ["--trusted-ca-file", str(self.client_ca_path)]
            if self.client_cert_auth:
                args.append("--client-cert-auth")
        if self.peer:
            pair = self.peer_pair(node_id)
            if not pair.cert.exists():
                self.peer_ca.write_pair(self.directory, f"{node_id}-peer")
            args += ["--peer-cert-file", str(pair.cert), "--peer-key-file", str(pair.key)]
            args += ["--peer-trusted-ca-file", str(self.peer_ca_path), "--peer-client-cert-auth"]
        return args

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context for the REST port (trusting the client CA,
        presenting ``client.crt``); None when the REST port is plaintext."""
        if not self.client:
            return None
        context = ssl.create_default_context(cafile=str(self.client_ca_path))
        context.load_cert_chain(str(self.client_pair.cert), str(self.client_pair.key))
        return context

    def grpc_credentials(self) -> Any:
        """``grpc.ChannelCredentials`` for the RPC port as a client with
        client TLS on: trusting the client CA, presenting ``client.crt``."""
        import grpc

        if not self.client:
            raise ValueError("the RPC port serves clients over TLS only with client TLS on")
        roots = self.client_ca.pem
        return grpc.ssl_channel_credentials(
            roots, self.client_pair.key.read_bytes(), self.client_pair.cert.read_bytes()
        )
