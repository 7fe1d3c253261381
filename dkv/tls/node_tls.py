# test-case-name: tests.test_tls_files,tests.test_tls_process
"""A node's TLS state: the material of both sides as last read, and what
each port and each outgoing channel is built from.

The RPC port carries both the client gRPC API and the peer protocol, so its
TLS serves both sides (until peers get a port of their own):

- it presents the client certificate (``--cert-file``) when client TLS is
  on, else the peer certificate;
- it asks every caller for a certificate whenever peer TLS is on (or
  ``--client-cert-auth``), and trusts the client CA (``--trusted-ca-file``)
  and the peer CA both: a client with a client-CA certificate and a peer
  with a peer-CA one are both let in (so with peer TLS on, gRPC clients
  need a certificate even without ``--client-cert-auth``; the REST port is
  not affected);
- the peer protocol itself (``dkv.raft.v0.Raft`` and ``dkv.v0.Cluster``'s
  membership calls) then checks in its handlers that the caller's
  certificate was issued by the peer CA and names the member's host
  (``dkv.tls.peer_guard``).

Peers dial each other with the peer certificate and check the server's
certificate, and that it names the host they dial, against the peer CA,
plus the client CA when client TLS is on (the RPC port presents the client
certificate then). Without peer TLS but with client TLS, peers dial with the
client side's files, so that ``--client-cert-auth`` lets them in.

``reload()`` reads every file again (SIGHUP): if all of them are usable
they replace the old material at once and ``generation`` grows; new REST
connections, new gRPC handshakes and new peer channels use the new
certificates, connections open already keep theirs. If any file is not
usable, nothing changes and the reason is logged.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from OpenSSL import crypto
from twisted.internet import ssl

from dkv.config import TlsFiles
from dkv.logs import logger
from dkv.tls.material import TlsError, TlsMaterial, load_material

__all__ = ["NodeTls"]

log = logger("dkv.tls")


class NodeTls:
    """Both sides' material; empty until ``load``."""

    def __init__(self, client: TlsFiles | None, peer: TlsFiles | None) -> None:
        self.client_files = client
        self.peer_files = peer
        self.client: TlsMaterial | None = None
        self.peer: TlsMaterial | None = None
        #: Grows by one at every successful (re)load.
        self.generation = 0
        #: Called after a successful reload (e.g. to drop cached channels).
        self.on_reload: list[Callable[[], None]] = []
        self._rest_options: tuple[int, ssl.CertificateOptions] | None = None
        self._fetched = 0

    @property
    def enabled(self) -> bool:
        return self.client_files is not None or self.peer_files is not None

    @property
    def rest_enabled(self) -> bool:
        return self.client_files is not None

    def load(self) -> None:
        """Read every file; raises TlsError (the node does not start)."""
        client = load_material(self.client_files) if self.client_files else None
        peer = load_material(self.peer_files) if self.peer_files else None
        self.client, self.peer = client, peer
        self.generation += 1

    def reload(self) -> bool:
        """Read every file again; True if the new material is in use."""
        try:
            self.load()
        except TlsError as e:
            log.error("TLS reload refused, keeping the certificates in use: {e}", e=e)
            return False
        log.info("TLS certificates reloaded (generation {g}): {what}", g=self.generation, what=self.describe())
        for callback in self.on_reload:
            callback()
        return True

    def describe(self) -> str:
        parts = []
        for side, m in (("client", self.client), ("peer", self.peer)):
            if m is not None:
                parts.append(f"{side} cert serial {m.certificate.serial_number:x}")
        return ", ".join(parts) or "no TLS"

    # -- the RPC port (server) ------------------------------------------------------------

    def _rpc_identity(self) -> TlsMaterial:
        identity = self.client or self.peer
        if identity is None:
            raise RuntimeError("TLS material not loaded")
        return identity

    @property
    def rpc_requires_client_cert(self) -> bool:
        return self.peer_files is not None or bool(self.client_files and self.client_files.client_cert_auth)

    def _rpc_roots(self) -> bytes | None:
        roots = b""
        if self.client is not None:
            roots += self.client.ca_pem
        if self.peer is not None:
            roots += self.peer.ca_pem
        return roots or None

    def rpc_server_configuration(self) -> grpc.ServerCertificateConfiguration:
        me = self._rpc_identity()
        pairs = [(me.key_pem, me.cert_pem)]
        return grpc.ssl_server_certificate_configuration(pairs, root_certificates=self._rpc_roots())

    def rpc_server_credentials(self) -> grpc.ServerCredentials | None:
        """The RPC port's credentials (None: plaintext); they follow reloads."""
        if not self.enabled:
            return None
        self._fetched = self.generation
        return grpc.dynamic_ssl_server_credentials(
            self.rpc_server_configuration(), self._fetch, require_client_authentication=self.rpc_requires_client_cert
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC asks before each handshake (on its own thread): the new
        configuration after a reload, else None (keep the current one)."""
        generation = self.generation
        if generation == self._fetched:
            return None
        self._fetched = generation
        return self.rpc_server_configuration()

    # -- dialling peers (client) ---------------------------------------------------------

    def peer_channel_credentials(self) -> grpc.ChannelCredentials | None:
        """What this node dials its peers' RPC ports with (None: plaintext)."""
        if self.peer is not None:
            roots = self.peer.ca_pem + (self.client.ca_pem if self.client is not None else b"")
            return grpc.ssl_channel_credentials(roots, self.peer.key_pem, self.peer.cert_pem)
        if self.client is not None:
            return grpc.ssl_channel_credentials(self.client.ca_pem or None, self.client.key_pem, self.client.cert_pem)
        return None

    # -- the REST port ------------------------------------------------------------------

    def rest_options(self) -> ssl.CertificateOptions:
        """The REST port's TLS options for a new connection (made once per
        generation)."""
        cached = self._rest_options
        if cached is not None and cached[0] == self.generation:
            return cached[1]
        m = self.client
        if m is None:
            raise RuntimeError("no client TLS material loaded")
        auth = m.files.client_cert_auth
        x509s = [crypto.X509.from_cryptography(c) for c in m.chain]
        options = ssl.CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(m.key),  # type: ignore[arg-type]
            certificate=x509s[0],
            extraCertChain=x509s[1:],
            verify=auth,
            requireCertificate=auth,
            caCerts=[crypto.X509.from_cryptography(c) for c in m.cas] if auth else None,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            # ALPN: the front door speaks HTTP/1.1 (a client offering ALPN got an internal error without it)
            acceptableProtocols=[b"http/1.1"],
        )
        self._rest_options = (self.generation, options)
        return options
