"""TLS: certificates and the server configuration of every TLS listener.

Static key/certificate pairs, ACME (RFC 8555), SNI selection, and for localserve a
self-signed CA with a server certificate (:mod:`moxtw.tls.selfsigned`).

:func:`server_context_factory` builds the one server configuration used by all
listeners, implicit TLS (Submissions, IMAPS, the HTTPS listeners) and STARTTLS (SMTP,
Submission, IMAP) alike: Mozilla's "intermediate" profile. TLS 1.2 and 1.3 only
(RFC 8996 deprecates 1.0 and 1.1); for TLS 1.2 only ECDHE key exchange with AEAD ciphers
(AES-GCM, ChaCha20-Poly1305; RFC 7525 4.2): no CBC, no RSA key exchange, no DHE. TLS 1.3
suites are all AEAD with (EC)DHE, OpenSSL's defaults are kept.
"""

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion

__all__ = ["server_context_factory", "server_options", "TLS12_CIPHERS", "MIN_VERSION"]

MIN_VERSION = TLSVersion.TLSv1_2

# Mozilla intermediate, TLS 1.2 part (https://ssl-config.mozilla.org/, guideline 5.7):
# forward secrecy and AEAD only, ECDSA and RSA certificates.
TLS12_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
])

_ACCEPTABLE = None


def _acceptable_ciphers():
    global _ACCEPTABLE
    if _ACCEPTABLE is None:
        _ACCEPTABLE = AcceptableCiphers.fromOpenSSLCipherString(TLS12_CIPHERS)
    return _ACCEPTABLE


def server_context_factory(cert_path, key_path):
    """TLS server options for a PEM chain file (leaf first) and its PEM key. Usable with
    SSL4ServerEndpoint, TLSMemoryBIOFactory and ITLSTransport.startTLS."""
    with open(cert_path, "rb") as f:
        chain = x509.load_pem_x509_certificates(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not chain:
        raise ValueError(f"{cert_path}: no certificate")
    return server_options(chain, key)


def server_options(chain, key):
    """TLS server options for a chain of ``cryptography`` certificates (leaf first) and
    its private key, e.g. certificates from ACME kept in memory."""
    # pyOpenSSL (>= 24.3) takes cryptography objects and deprecates its own X509/PKey;
    # CertificateOptions passes them through to the context unchanged.
    return CertificateOptions(
        privateKey=key,
        certificate=chain[0],
        extraCertChain=list(chain[1:]),
        raiseMinimumTo=MIN_VERSION,
        acceptableCiphers=_acceptable_ciphers(),
    )
