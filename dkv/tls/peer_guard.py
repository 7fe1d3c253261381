# test-case-name: tests.test_tls_files,tests.test_tls_process
"""The peer protocol's own check of its caller, with peer TLS on.

The RPC port's TLS lets in certificates of the client CA and of the peer CA
(``dkv.tls.node_tls``), so the handlers of the peer protocol (the
``dkv.raft.v0.Raft`` service and the membership calls of ``dkv.v0.Cluster``)
check more before doing anything:

- the caller's certificate was issued (directly) by a CA of
  ``--peer-trusted-ca-file``, else UNAUTHENTICATED;
- it names, as a SAN (DNS name or IP address), the host of the member the
  caller says it is (the sender of Raft messages, the node asking to join),
  else PERMISSION_DENIED.

Each refusal is logged, once per caller address and reason (a refused peer
retries every second).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from grpc import aio

from dkv.logs import logger
from dkv.tls.node_tls import NodeTls

__all__ = ["PeerGuard", "cert_refusal", "host_of", "names_host"]

log = logger("dkv.tls")

_MAX_LOGGED = 1024


def host_of(address: str) -> str:
    """The host of HOST:PORT (without an IPv6 address's brackets)."""
    host = address.rpartition(":")[0] if ":" in address else address
    return host.strip("[]")


def names_host(cert: x509.Certificate, host: str) -> bool:
    """Whether cert's subject alternative names include host (an IP
    address SAN for an address, a DNS name SAN, case-insensitively, for a
    name)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host.lower().rstrip(".") in (n.lower().rstrip(".") for n in sans.get_values_for_type(x509.DNSName))
    return ip in sans.get_values_for_type(x509.IPAddress)


def issued_by(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def cert_refusal(pem: bytes | None, cas: Sequence[x509.Certificate]) -> tuple[str, x509.Certificate | None]:
    """("", cert) if pem is a certificate issued by one of cas, else (the
    reason, None)."""
    if not pem:
        return "no client certificate", None
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return "an unreadable client certificate", None
    if not issued_by(cert, cas):
        return f"a certificate ({cert.subject.rfc4514_string()}) not issued by the peer CA", None
    return "", cert


class PeerGuard:
    """Checks callers of the peer protocol; lets everyone in while peer TLS
    is off. ``member_address`` gives a member's HOST:PORT by id (None for
    one not in the configuration)."""

    def __init__(self, tls: NodeTls, member_address: Callable[[str], str | None]) -> None:
        self._tls = tls
        self._member_address = member_address
        self._logged: set[tuple[str, str]] = set()

    @property
    def active(self) -> bool:
        return self._tls.peer is not None

    def _cas(self) -> tuple[x509.Certificate, ...]:
        return self._tls.peer.cas if self._tls.peer is not None else ()

    async def admit(
        self,
        context: aio.ServicerContext,
        method: str,
        *,
        member_id: str | None = None,
        address: str | None = None,
    ) -> None:
        """Return if the caller may call method, else end the call with
        UNAUTHENTICATED or PERMISSION_DENIED (logged). With member_id (or
        address) its certificate must also name that member's host."""
        if not self.active:
            return
        auth = context.auth_context() or {}
        pems = auth.get("x509_pem_cert") or [b""]
        reason, cert = cert_refusal(pems[0], self._cas())
        if cert is None:
            await self._refuse(context, method, grpc.StatusCode.UNAUTHENTICATED, f"{reason}")
            return
        if member_id is not None:
            address = self._member_address(member_id)
            if address is None:
                await self._refuse(
                    context, method, grpc.StatusCode.PERMISSION_DENIED, f"{member_id!r} is not a member here"
                )
                return
        if address is not None and not names_host(cert, host_of(address)):
            who = f"member {member_id!r}" if member_id is not None else "the member"
            await self._refuse(
                context, method, grpc.StatusCode.PERMISSION_DENIED,
                f"the certificate ({cert.subject.rfc4514_string()}) does not name {host_of(address)}, "
                f"the host of {who}",
            )  # fmt: skip

    async def _refuse(self, context: aio.ServicerContext, method: str, code: grpc.StatusCode, reason: str) -> None:
        peer = context.peer() or "?"
        key = (peer.rpartition(":")[0], reason)
        if key not in self._logged:
            if len(self._logged) >= _MAX_LOGGED:
                self._logged.clear()
            self._logged.add(key)
            log.warn("refused peer call {method} from {peer}: {reason}", method=method, peer=peer, reason=reason)
        await context.abort(code, f"peer TLS: {reason}")
