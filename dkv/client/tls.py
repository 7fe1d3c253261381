# test-case-name: tests.test_tls_process
"""HTTPS for ``dkv.client``: the CA to trust and the certificate to present
(etcdctl's ``--cacert``, ``--cert``, ``--key``).

    client = Client("https://127.0.0.1:2379", tls=ClientTls("ca.crt", "client.crt", "client.key"))

The server's certificate must name the host of the endpoint (a DNS name or
an IP address SAN), as browsers check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

__all__ = ["ClientTls"]


@implementer(IPolicyForHTTPS)
class _Policy:
    def __init__(self, trust_root: Any, certificate: ssl.PrivateCertificate | None) -> None:
        self._trust_root = trust_root
        self._certificate = certificate

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:  # noqa: N802 - Twisted's name
        return ssl.optionsForClientTLS(
            hostname.decode("ascii"), trustRoot=self._trust_root, clientCertificate=self._certificate
        )


@attrs.frozen
class ClientTls:
    """Files for HTTPS: ``ca_file`` (PEM; default: the system's CAs),
    ``cert_file`` and ``key_file`` (PEM; both or neither)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __attrs_post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("give both a client certificate and its key, or neither")

    def policy(self) -> IPolicyForHTTPS:
        """An ``IPolicyForHTTPS`` for ``twisted.web.client.Agent``."""
        if not self.ca_file and not self.cert_file:
            return BrowserLikePolicyForHTTPS()
        trust: Any = ssl.platformTrust()  # an IOpenSSLTrustRoot
        if self.ca_file:
            pem = Path(self.ca_file).read_bytes()
            trust = ssl.trustRootFromCertificates(
                [ssl.Certificate.loadPEM(block) for block in _pem_blocks(pem, b"CERTIFICATE")]
            )
        certificate = None
        if self.cert_file and self.key_file:
            certificate = ssl.PrivateCertificate.loadPEM(
                Path(self.cert_file).read_bytes() + b"\n" + Path(self.key_file).read_bytes()
            )
        return _Policy(trust, certificate)


def _pem_blocks(data: bytes, label: bytes) -> list[bytes]:
    """Every ``-----BEGIN label-----`` block of data."""
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    blocks = []
    for part in data.split(begin)[1:]:
        body, sep, _ = part.partition(end)
        if sep:
            blocks.append(begin + body + end + b"\n")
    return blocks
