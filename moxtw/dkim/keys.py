"""DKIM private keys: loading PKCS#8 PEM files, generating new keys, DNS key records.

RSA (RFC 6376 3.3.1, at least 1024 bits per RFC 8301 3.2) and Ed25519 (RFC 8463). The
cryptographic operations use ``cryptography`` (OpenSSL); dkimpy's own key format is kept
in :attr:`PrivateKey.dkimpy_key` for code that calls dkimpy directly.
"""

import base64
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

# RFC 8301 3.2: signers MUST use RSA keys of at least 1024 bits, SHOULD use 2048.
MIN_RSA_BITS = 1024
DEFAULT_RSA_BITS = 2048
# Larger keys do not fit DNS TXT records comfortably and only cost CPU.
MAX_RSA_BITS = 8192

_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}


@dataclass(frozen=True)
class PrivateKey:
    """A DKIM signing key.

    ``algorithm``: "rsa" or "ed25519" (the k= of the key record). ``dns_record``: the TXT
    record to publish at ``<selector>._domainkey.<domain>``, e.g. ``v=DKIM1;k=rsa;p=...``.
    ``bits``: key size. ``dkimpy_key``: the key as ``dkim.sign(privkey=...)`` takes it
    (PEM for RSA, the base64 32-byte seed for ed25519, RFC 8463 4.2).
    """

    algorithm: str
    dns_record: str
    bits: int
    dkimpy_key: bytes = field(repr=False)
    crypto: Any = field(repr=False, compare=False)

    def sign_digest(self, digest, hash_name="sha256"):
        """Sign a DKIM data hash (RFC 6376 3.7): RSASSA-PKCS1-v1_5 over the digest for
        rsa, PureEdDSA over the SHA-256 digest bytes for ed25519 (RFC 8463 3)."""
        if self.algorithm == "rsa":
            h = _HASHES[hash_name]()
            return self.crypto.sign(digest, padding.PKCS1v15(), Prehashed(h))
        if hash_name != "sha256":
            raise ValueError("ed25519 signs with sha256 only (RFC 8463 3)")
        return self.crypto.sign(digest)


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def from_crypto_key(key, name="key"):
    """A :class:`PrivateKey` from a ``cryptography`` private key object."""
    if isinstance(key, rsa.RSAPrivateKey):
        bits = key.key_size
        if bits < MIN_RSA_BITS:
            # RFC 8301 3.2: keys under 1024 bits MUST NOT be used for signing.
            raise ValueError(
                f"{name}: RSA key of {bits} bits is too small, need at least {MIN_RSA_BITS}")
        if bits > MAX_RSA_BITS:
            raise ValueError(f"{name}: RSA key of {bits} bits is too large, at most {MAX_RSA_BITS}")
        # RFC 6376 3.6.1: p= is the base64 of the DER SubjectPublicKeyInfo.
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        return PrivateKey("rsa", f"v=DKIM1;k=rsa;p={_b64(spki)}", bits, pem, key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        # RFC 8463 4.2: p= is the base64 of the raw 32-byte public key.
        raw_pub = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        seed = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption())
        return PrivateKey(
            "ed25519", f"v=DKIM1;k=ed25519;p={_b64(raw_pub)}", 256,
            _b64(seed).encode("ascii"), key)
    raise ValueError(f"{name}: unsupported key type {type(key).__name__}, need RSA or ed25519")


def parse_private_key(data, name="key"):
    """Parse PEM private key bytes (PKCS#8; PKCS#1 "RSA PRIVATE KEY" is accepted too).

    Raises ValueError starting with ``name`` for anything that is not an unencrypted RSA
    or ed25519 key.
    """
    if b"ENCRYPTED" in data[:200]:
        raise ValueError(f"{name}: encrypted private keys are not supported")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ValueError(f"{name}: not a PEM private key: {e}") from None
    return from_crypto_key(key, name)


def load_private_key(path):
    """Load the PEM private key file at ``path``; ValueError naming the file on failure."""
    try:
        with open(path, "rb") as f:
            data = f.read(1024 * 1024)
    except OSError as e:
        raise ValueError(f"{path}: cannot read private key: {e.strerror or e}") from None
    return parse_private_key(data, str(path))


def _pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


def generate_rsa(bits=DEFAULT_RSA_BITS):
    """A new RSA private key as PKCS#8 PEM bytes."""
    if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
        raise ValueError(f"RSA key size must be between {MIN_RSA_BITS} and {MAX_RSA_BITS} bits")
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=bits))


def generate_ed25519():
    """A new ed25519 private key as PKCS#8 PEM bytes."""
    return _pem(ed25519.Ed25519PrivateKey.generate())


def txt_strings(record, size=255):
    """Split a TXT record into character-strings of at most ``size`` bytes (RFC 1035
    3.3.14), as zone files and DNS admin panels need for RSA keys."""
    return [record[i:i + size] for i in range(0, len(record), size)] or [""]
