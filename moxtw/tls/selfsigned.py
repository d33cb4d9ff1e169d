"""Self-signed CA and server certificate for ``moxtw localserve``.

On first start :func:`ensure_localserve_cert` creates, in the TLS directory:

- ``ca.crt``, ``ca.key``: a CA (ECDSA P-256, valid 10 years) that users may add to a test
  client's trust store;
- ``localhost.crt``, ``localhost.key``: a server certificate (ECDSA P-256, valid about 2
  years) signed by that CA, with the host names and IP addresses as subjectAltNames
  (RFC 5280 4.2.1.6) and the serverAuth extended key usage; ``localhost.crt`` holds the
  leaf followed by the CA certificate, the chain a TLS server sends (RFC 8446 4.4.2).

Later calls reuse the files. The leaf is regenerated when it is missing, unreadable,
expires within 30 days, lacks a requested name, or was not signed by the current CA; the
CA is regenerated (and with it the leaf) when it is missing, unreadable or expires within
30 days. Files are written atomically (temporary file, fsync, rename, fsync of the
directory), keys with mode 0600.

:func:`server_context_factory` turns such a pair into Twisted TLS server options, the
same as for every listener (:func:`moxtw.tls.server_context_factory`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import time
from typing import Callable, Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.ssl import CertificateOptions

from moxtw import durable, tls

__all__ = [
    "ensure_localserve_cert",
    "server_context_factory",
    "load_pem_chain",
    "CA_VALIDITY",
    "LEAF_VALIDITY",
    "RENEW_BEFORE",
]

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=730)
RENEW_BEFORE = datetime.timedelta(days=30)
# Start validity a little in the past so clients with a slow clock accept the cert.
BACKDATE = datetime.timedelta(hours=1)

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
LEAF_CERT = "localhost.crt"
LEAF_KEY = "localhost.key"


def _write_atomic(path: str, data: bytes, mode: int) -> None:
    """Write data to path via a temporary file, fsync, rename and directory fsync."""
    durable.write_atomic(path, data, mode)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_ca(now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "moxtw localserve"),
            x509.NameAttribute(NameOID.COMMON_NAME, "moxtw localserve CA"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        # RFC 5280 4.2.1.9, 4.2.1.3: a CA that signs only end-entity certificates.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _san(hostnames: Sequence[str], ips: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    return x509.SubjectAlternativeName(names)


def _make_leaf(
    now: datetime.datetime,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    hostnames: Sequence[str],
    ips: Sequence[str],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    cn = hostnames[0] if hostnames else ips[0]
    not_after = min(now + LEAF_VALIDITY, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # RFC 5280 4.2.1.6: names go in subjectAltName; RFC 6125 6.4.4 ignores the CN.
        .add_extension(_san(hostnames, ips), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def load_pem_chain(data: bytes) -> list[x509.Certificate]:
    """All certificates in a PEM file, in order."""
    return x509.load_pem_x509_certificates(data)


def _load_pair(cert_path: str, key_path: str):
    """The first certificate and the key in the files, or None if missing or unreadable."""
    cdata, kdata = _read(cert_path), _read(key_path)
    if cdata is None or kdata is None:
        return None
    try:
        cert = load_pem_chain(cdata)[0]
        key = serialization.load_pem_private_key(kdata, password=None)
    except ValueError:
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        return None
    return cert, key


def _expiring(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_after_utc - RENEW_BEFORE <= now or cert.not_valid_before_utc > now


def _leaf_ok(
    leaf: x509.Certificate,
    ca_cert: x509.Certificate,
    now: datetime.datetime,
    hostnames: Iterable[str],
    ips: Iterable[str],
) -> bool:
    if _expiring(leaf, now) or leaf.issuer != ca_cert.subject:
        return False
    try:
        leaf.verify_directly_issued_by(ca_cert)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    have_dns = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    have_ips = set(san.get_values_for_type(x509.IPAddress))
    return all(h.lower() in have_dns for h in hostnames) and all(
        ipaddress.ip_address(ip) in have_ips for ip in ips
    )


def ensure_localserve_cert(
    tls_dir: str,
    hostnames: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1", "::1"),
    clock: Callable[[], float] = time.time,
    leaf_name: str = "localhost",
) -> tuple[str, str, str]:
    """Create or reuse the localserve CA and server certificate in tls_dir.

    ``leaf_name``: base name of the server certificate files (``<leaf_name>.crt`` and
    ``.key``); the quickstart names them after the host.

    Returns (cert_path, key_path, ca_path): the leaf+CA chain, the leaf key and the CA
    certificate. Blocking file and key work; run at startup, before the reactor serves."""
    if not hostnames and not ips:
        raise ValueError("need at least one host name or IP address")
    durable.make_dirs(tls_dir)
    now = datetime.datetime.fromtimestamp(clock(), datetime.timezone.utc)
    ca_cert_path = os.path.join(tls_dir, CA_CERT)
    ca_key_path = os.path.join(tls_dir, CA_KEY)
    cert_path = os.path.join(tls_dir, f"{leaf_name}.crt")
    key_path = os.path.join(tls_dir, f"{leaf_name}.key")

    ca = _load_pair(ca_cert_path, ca_key_path)
    if ca is None or _expiring(ca[0], now):
        ca = _make_ca(now)
        # The key first: a crash in between leaves a CA cert without matching key, which
        # the next start detects and replaces.
        _write_atomic(ca_key_path, _key_pem(ca[1]), durable.FILE_MODE)
        # Private like everything in the data directory (issue 10), the certificates too.
        ca_pem = ca[0].public_bytes(serialization.Encoding.PEM)
        _write_atomic(ca_cert_path, ca_pem, durable.FILE_MODE)
    ca_cert, ca_key = ca

    leaf = _load_pair(cert_path, key_path)
    if leaf is None or not _leaf_ok(leaf[0], ca_cert, now, hostnames, ips):
        cert, key = _make_leaf(now, ca_cert, ca_key, hostnames, ips)
        chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
            serialization.Encoding.PEM
        )
        _write_atomic(key_path, _key_pem(key), durable.FILE_MODE)
        _write_atomic(cert_path, chain, durable.FILE_MODE)
    return cert_path, key_path, ca_cert_path


def server_context_factory(cert_path: str, key_path: str) -> CertificateOptions:
    """The server options of every listener: see :func:`moxtw.tls.server_context_factory`."""
    return tls.server_context_factory(cert_path, key_path)
