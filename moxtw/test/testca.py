"""Certificates for TLS tests: a CA (optionally with an intermediate), leaves for given
names, self-signed leaves, expired ones; and Twisted server options serving a chain.
Keys are P-256 (fast to make)."""

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import crypto
from twisted.internet import ssl

DAY = datetime.timedelta(days=1)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


class Issuer:
    """A certificate with its key that can sign others."""

    def __init__(self, cert, key):
        self.cert, self.key = cert, key


def _builder(subject, issuer_name, public_key, not_before, not_after):
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after))


def make_ca(name="moxtw test CA", issuer=None, path_length=None):
    """A CA, self-signed or (``issuer``) an intermediate signed by another Issuer."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    b = _builder(subject, issuer.cert.subject if issuer else subject, key.public_key(), _now() - DAY, _now() + 30 * DAY)
    b = b.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                      crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
    cert = b.sign(issuer.key if issuer else key, hashes.SHA256())
    return Issuer(cert, key)


def make_leaf(names, issuer=None, expired=False):
    """A server certificate for DNS ``names``: signed by ``issuer``, or self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    start, end = (_now() - 10 * DAY, _now() - DAY) if expired else (_now() - DAY, _now() + 30 * DAY)
    b = _builder(subject, issuer.cert.subject if issuer else subject, key.public_key(), start, end)
    b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    cert = b.sign(issuer.key if issuer else key, hashes.SHA256())
    return Issuer(cert, key)


def server_options(leaf, chain=()):
    """Twisted CertificateOptions presenting ``leaf`` and then the ``chain`` certificates."""
    return ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(leaf.key),
        certificate=crypto.X509.from_cryptography(leaf.cert),
        extraCertChain=[crypto.X509.from_cryptography(c.cert) for c in chain],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


def write_ca(directory, issuer, name="ca.pem"):
    """The CA certificate as a PEM file; its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(issuer.cert.public_bytes(serialization.Encoding.PEM))
    return path


def spki(cert):
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def der(cert):
    return cert.public_bytes(serialization.Encoding.DER)
