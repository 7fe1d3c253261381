# test-case-name: tests.test_peer_tls
"""Peer TLS (mTLS) on the native peer protocol's port (``--peer-transport
twisted``), through Twisted's TLS, with the same files as the gRPC peer
TLS (``--peer-cert-file``, ``--peer-key-file``, ``--peer-trusted-ca-file``).

- The peer port presents the peer certificate and requires the dialler's,
  issued by the peer CA; the listener then checks, at the hello, that the
  certificate names the host of the member the dialler says it is (as
  ``dkv.tls.peer_guard`` does on the RPC port).
- A node dials its peers with the peer certificate and checks that the
  listener's certificate was issued by the peer CA and names the host it
  dials (``service_identity``).

Without peer TLS the peer port is plaintext, also when client TLS is on
(the RPC port's TLS covers clients; peer traffic is a separate port an
operator firewalls). Options are made once per TLS generation, so a reload
(SIGHUP) reaches new connections; open ones keep their session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from dkv.tls.node_tls import NodeTls
from dkv.tls.peer_guard import cert_refusal, host_of, names_host

__all__ = ["PeerPortTls"]


def _x509(cert: object) -> crypto.X509:
    return crypto.X509.from_cryptography(cert)  # type: ignore[arg-type]


class PeerPortTls:
    """The peer port's TLS, from a node's TLS state."""

    def __init__(self, tls: NodeTls, member_address: Callable[[str], str | None]) -> None:
        self._tls = tls
        self._member_address = member_address
        self._server: tuple[int, ssl.CertificateOptions] | None = None
        self._private: tuple[int, ssl.PrivateCertificate, Any] | None = None

    @property
    def active(self) -> bool:
        return self._tls.peer is not None

    def server_creator(self) -> IOpenSSLServerConnectionCreator:
        """Makes each accepted connection's TLS from the options in force."""
        return _CurrentServerOptions(self)

    def server_options(self) -> ssl.CertificateOptions:
        m = self._tls.peer
        if m is None:
            raise RuntimeError("no peer TLS material loaded")
        cached = self._server
        if cached is not None and cached[0] == self._tls.generation:
            return cached[1]
        x509s = [_x509(c) for c in m.chain]
        options = ssl.CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(m.key),  # type: ignore[arg-type]
            certificate=x509s[0],
            extraCertChain=x509s[1:],
            verify=True,
            requireCertificate=True,
            caCerts=[_x509(c) for c in m.cas],
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        )
        self._server = (self._tls.generation, options)
        return options

    def client_creator(self, host: str) -> IOpenSSLClientConnectionCreator | None:
        """How to dial a peer at host (None: plaintext, peer TLS is off)."""
        m = self._tls.peer
        if m is None:
            return None
        cached = self._private
        if cached is None or cached[0] != self._tls.generation:
            mine = ssl.PrivateCertificate.fromCertificateAndKeyPair(
                ssl.Certificate(_x509(m.chain[0])),
                ssl.KeyPair(crypto.PKey.from_cryptography_key(m.key)),  # type: ignore[arg-type]
            )
            roots = ssl.trustRootFromCertificates([ssl.Certificate(_x509(c)) for c in m.cas])
            cached = self._private = (self._tls.generation, mine, roots)
        assert cached is not None
        return ssl.optionsForClientTLS(host, trustRoot=cached[2], clientCertificate=cached[1])

    def check(self) -> Callable[[bytes | None, str], str] | None:
        """The listener's check of a dialler's certificate (None: peer TLS off)."""
        if self._tls.peer is None:
            return None
        return self._refusal

    def _refusal(self, pem: bytes | None, member_id: str) -> str:
        m = self._tls.peer
        reason, cert = cert_refusal(pem, m.cas if m is not None else ())
        if cert is None:
            return f"peer TLS: {reason}"
        address = self._member_address(member_id)
        if address is None:
            return f"peer TLS: {member_id!r} is not a member here"
        if not names_host(cert, host_of(address)):
            return (
                f"peer TLS: the certificate ({cert.subject.rfc4514_string()}) does not name "
                f"{host_of(address)}, the host of member {member_id!r}"
            )
        return ""


@implementer(IOpenSSLServerConnectionCreator)
class _CurrentServerOptions:
    def __init__(self, tls: PeerPortTls) -> None:
        self._tls = tls

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:  # noqa: N802, N803
        return self._tls.server_options().serverConnectionForTLS(tlsProtocol)
