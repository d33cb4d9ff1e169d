"""DKIM (RFC 6376): signing outgoing messages, verifying incoming ones, key generation.

Ed25519 signatures per RFC 8463, algorithm and key-size rules per RFC 8301. Built on
dkimpy for message parsing, canonicalization and header hashing, with the cryptography
package for RSA and Ed25519. Like mox's dkim package, it depends only on moxtw.dns,
moxtw.smtp and moxtw.message, not on the store or (except ``Signer.from_config``) the
configuration.

- :mod:`moxtw.dkim.keys`: load, generate and describe keys (DNS TXT record).
- :mod:`moxtw.dkim.sign`: :class:`Signer`, :func:`from_domain`.
- :mod:`moxtw.dkim.verify`: :func:`verify`, :func:`verify_async`, :class:`DKIMResult`.
- :mod:`moxtw.dkim.cli`: the ``moxtw dkim gen…`` commands.

Import from the submodules (``from moxtw.dkim.verify import verify``); the package does
not re-export, so ``moxtw.dkim.verify`` stays the module.
"""
