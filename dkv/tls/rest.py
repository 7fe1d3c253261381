# test-case-name: tests.test_tls_process
"""TLS on the REST port: Twisted's TLS (``TLSMemoryBIOFactory``) around the
front door's factory. The front door only writes to its transport, pauses
and resumes it, so it serves over TLS unchanged.

Each new connection asks ``NodeTls.rest_options()`` for its options, so a
reload (SIGHUP) reaches the next connection; open ones keep their session.
A client that does not speak TLS (plain HTTP) fails the handshake and its
connection is closed; the node goes on serving.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

from dkv.tls.node_tls import NodeTls

__all__ = ["tls_factory"]


@implementer(IOpenSSLServerConnectionCreator)
class _CurrentOptions:
    """Makes each server connection from the options in force at the time."""

    def __init__(self, tls: NodeTls) -> None:
        self._tls = tls

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:  # noqa: N802, N803
        return self._tls.rest_options().serverConnectionForTLS(tlsProtocol)


class _TlsFactory(TLSMemoryBIOFactory):
    noisy = False

    def buildProtocol(self, addr: Any) -> TLSMemoryBIOProtocol | None:  # type: ignore[override]  # noqa: N802
        """None (the connection is closed) when the wrapped factory refuses
        it (``--max-connections``)."""
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        return self.protocol(self, inner)


def tls_factory(wrapped: IProtocolFactory, tls: NodeTls) -> TLSMemoryBIOFactory:
    """wrapped, served over TLS with tls's client-side certificate."""
    return _TlsFactory(_CurrentOptions(tls), False, wrapped)
