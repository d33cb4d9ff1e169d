"""Message parsing, canonicalization and hashing shared by signing and verification.

Built on dkimpy's parser (``dkim.rfc822_parse``), canonicalization algorithms
(RFC 6376 3.4) and header selection and hashing (RFC 6376 3.7, 5.4.2), so signer and
verifier hash exactly the same bytes.
"""

import hashlib

import dkim
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError

HASHES = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}

__all__ = [
    "HASHES", "MessageError", "InvalidCanonicalizationPolicyError", "canon_policy",
    "parse_message", "body_hash", "data_hash",
]


class MessageError(ValueError):
    """The message header cannot be parsed."""


def parse_message(message):
    """Split a message into ``[[name, value], ...]`` header fields (values as written,
    CRLF-terminated) and the body with CRLF line endings. Bare LF is accepted."""
    try:
        return dkim.rfc822_parse(message)
    except dkim.MessageFormatError as e:
        raise MessageError(f"malformed message header: {str(e)[:200]}") from None
    except IndexError:
        # dkimpy: a continuation line before the first field.
        raise MessageError("malformed message header: starts with a continuation line") from None


def canon_policy(header_relaxed, body_relaxed):
    names = (b"relaxed" if header_relaxed else b"simple", b"relaxed" if body_relaxed else b"simple")
    return CanonicalizationPolicy.from_c_value(b"/".join(names))


def body_hash(body, policy, hash_name, length=None):
    """Hash of the canonicalized body (RFC 6376 3.7), cut at ``length`` (l=) if given.
    ValueError when l= is beyond the body."""
    canonical = policy.canonicalize_body(body)
    if length is not None:
        if length > len(canonical):
            raise ValueError(f"l={length} is beyond the body of {len(canonical)} bytes")
        canonical = canonical[:length]
    return HASHES[hash_name](canonical).digest()


def data_hash(headers, include, sig_header, policy, hash_name):
    """Hash of the signed header fields plus the DKIM-Signature field with an empty b=
    (RFC 6376 3.7). ``headers`` as from parse_message, ``include`` the h= names (any
    case), ``sig_header`` the (name, value) of the signature field as written; dkimpy
    removes its b= value and picks header instances from the bottom (RFC 6376 5.4.2)."""
    h = HASHES[hash_name]()
    names = [n.lower() for n in include]
    # Only fields named in h= matter; filtering first bounds the work on messages with
    # many header fields (the selection scans them per name).
    wanted = set(names)
    canonical = policy.canonicalize_headers([f for f in headers if f[0].lower() in wanted])
    dkim.hash_headers(h, policy, canonical, names, tuple(sig_header), None)
    return h.digest()
