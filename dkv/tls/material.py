# test-case-name: tests.test_tls_files
"""Reading one side's TLS files and checking them, so that a node refuses
to start with one clear line rather than fail at its first handshake.

Checked: every file exists and is readable; the certificate file holds PEM
certificates (the node's first, then any intermediates); the key file holds
an unencrypted PEM private key that belongs to that first certificate; the
CA file holds PEM certificates.
"""

from __future__ import annotations

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from dkv.config import TlsFiles

__all__ = ["TlsError", "TlsMaterial", "load_material"]


class TlsError(Exception):
    """A TLS file that cannot be used; the message is one line naming the
    flag and the file."""


@attrs.frozen
class TlsMaterial:
    """One side's files as read: PEM bytes for gRPC, parsed objects for
    Twisted and the peer checks."""

    files: TlsFiles
    cert_pem: bytes
    key_pem: bytes
    #: The trusted CAs' PEM (b"" when no CA file is given).
    ca_pem: bytes
    chain: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes
    cas: tuple[x509.Certificate, ...]

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]


def _read(flag: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TlsError(f"--{flag} {path}: {e.strerror or e}") from None


def _certificates(flag: str, path: str, data: bytes) -> tuple[x509.Certificate, ...]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TlsError(f"--{flag} {path}: no PEM certificate in it")
    return tuple(certs)


def _public(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_material(files: TlsFiles) -> TlsMaterial:
    """Read and check files; raises TlsError."""
    p = files.flag_prefix
    cert_pem = _read(f"{p}cert-file", files.cert_file)
    key_pem = _read(f"{p}key-file", files.key_file)
    ca_pem = _read(f"{p}trusted-ca-file", files.trusted_ca_file) if files.trusted_ca_file else b""
    chain = _certificates(f"{p}cert-file", files.cert_file, cert_pem)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise TlsError(f"--{p}key-file {files.key_file}: the key is encrypted; give it unencrypted") from None
    except Exception as e:  # noqa: BLE001 - cryptography raises several kinds for bad input
        raise TlsError(f"--{p}key-file {files.key_file}: not a PEM private key ({type(e).__name__})") from None
    if _public(key.public_key()) != _public(chain[0].public_key()):
        raise TlsError(
            f"--{p}key-file {files.key_file} does not match the certificate in --{p}cert-file {files.cert_file}"
        )
    cas = _certificates(f"{p}trusted-ca-file", files.trusted_ca_file, ca_pem) if ca_pem else ()
    return TlsMaterial(files, cert_pem, key_pem, ca_pem, chain, key, cas)
