"""DKIM signing (RFC 6376 5, RFC 8463 for ed25519) of outgoing messages.

A :class:`Signer` holds a domain's selectors with their keys, loaded once from the domain's
DKIM configuration. ``Signer.sign(message)`` returns the DKIM-Signature header fields to
prepend to the message, one per selector in the configured Sign order; the message itself
is not changed. Signing is CPU work: callers run it in a thread.
"""

import base64
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Optional

import idna

from moxtw.config import types as config_types
from moxtw.dkim import canon
from moxtw.dkim.keys import PrivateKey, load_private_key
from moxtw.message.address import parse_address_list
from moxtw.smtp.address import AddressError, parse_domain

__all__ = [
    "DEFAULT_HEADERS", "DEFAULT_HEADERS_IF_PRESENT", "SignError", "SelectorKey", "Signer",
    "signature_header", "from_domain",
]

# Signed by default (mox's set plus MIME-Version and Content-Transfer-Encoding): the
# addressing fields, date and subject, message references, and how the body is parsed
# (RFC 6376 5.4.1 and 8.15). With sealing, absent ones are signed as absent, so they
# cannot be added later without breaking the signature.
DEFAULT_HEADERS = (
    "From", "To", "Cc", "Bcc", "Reply-To", "References", "In-Reply-To", "Subject", "Date",
    "Message-ID", "Content-Type", "Content-Transfer-Encoding", "MIME-Version",
)
# Signed by default only when present: relays and mailing lists may add these
# (RFC 6376 5.4.1 recommends signing them when they are there).
DEFAULT_HEADERS_IF_PRESENT = (
    "Sender", "List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post",
    "List-Subscribe", "List-Post", "List-Owner", "List-Archive",
)

# Lines of the generated header are kept under this many characters (RFC 5322 2.1.1
# recommends 78).
LINE_WIDTH = 78


class SignError(ValueError):
    """The message cannot be signed (malformed header, not exactly one From)."""


@dataclass(frozen=True)
class SelectorKey:
    """One configured selector ready for signing. ``name``: the selector as it goes in s=
    (ASCII); ``headers``: configured names, empty for the defaults; ``expiration``: seconds
    a signature stays valid, or None."""

    name: str
    key: PrivateKey
    hash: str = "sha256"
    header_relaxed: bool = False
    body_relaxed: bool = False
    headers: tuple = ()
    seal: bool = True
    expiration: Optional[int] = None


def _ascii_domain(name):
    if name.isascii():
        return name.lower()
    return idna.encode(name, uts46=True).decode("ascii")


def signed_header_names(sel, present):
    """The h= list for a message whose header field names are counted in ``present``
    (lower-case name -> count).

    Each header is listed once per instance in the message (RFC 6376 5.4.2: instances are
    signed from the bottom up). When sealing, each is listed once more: the extra
    instance is "signed as absent", so adding one later breaks the signature (RFC 6376
    5.4.2, 8.15). With the default set, headers in DEFAULT_HEADERS_IF_PRESENT are only
    listed (and sealed) when present.
    """
    if sel.headers:
        always, if_present = list(sel.headers), []
    else:
        always, if_present = list(DEFAULT_HEADERS), list(DEFAULT_HEADERS_IF_PRESENT)
    names, seen = [], set()
    for name in always + [n for n in if_present if present.get(n.lower())]:
        if name.lower() not in seen:
            seen.add(name.lower())
            names.append(name)
    result = []
    for name in names:
        result += [name] * present.get(name.lower(), 0)
    if sel.seal:
        result += names
    return result


def _fold(units):
    """Join header units into folded lines. ``units``: (text, separator) pairs; the
    separator goes before the text when it stays on the same line, a fold (CRLF SP) when
    it does not fit."""
    lines = ["DKIM-Signature:"]
    for text, sep in units:
        if len(lines[-1]) + len(sep) + len(text) > LINE_WIDTH and lines[-1].strip():
            lines.append(" " + text)
        else:
            lines[-1] += sep + text
    return "\r\n".join(lines)


def signature_header(headers, body, *, domain, selector, key, hash_name="sha256",
                     header_relaxed=False, body_relaxed=False, signed_headers,
                     timestamp, expiration=None, body_hashes=None):
    """One DKIM-Signature header field (bytes, CRLF-terminated) for a parsed message.

    ``signed_headers`` is the exact h= list. ``domain`` and ``selector`` are ASCII.
    ``body_hashes`` is an optional dict caching body hashes across selectors.
    """
    algorithm = f"{key.algorithm}-{hash_name}"
    if key.algorithm == "ed25519" and hash_name != "sha256":
        raise SignError("ed25519 signs with sha256 only (RFC 8463 3)")
    policy = canon.canon_policy(header_relaxed, body_relaxed)
    cache_key = (body_relaxed, hash_name)
    if body_hashes is not None and cache_key in body_hashes:
        bh = body_hashes[cache_key]
    else:
        bh = canon.body_hash(body, policy, hash_name)
        if body_hashes is not None:
            body_hashes[cache_key] = bh
    c = policy.to_c_value().decode("ascii")

    units = [("v=1;", " "), (f"a={algorithm};", " "), (f"c={c};", " "), (f"d={domain};", " "),
             (f"s={selector};", " "), (f"t={int(timestamp)};", " ")]
    if expiration is not None:
        # RFC 6376 3.5 x=: absolute expiry, later than t=.
        units.append((f"x={int(timestamp) + max(1, int(expiration))};", " "))
    # RFC 6376 3.5 h=: FWS is allowed around the colons, so fold there when needed.
    for i, name in enumerate(signed_headers):
        text = name + (";" if i == len(signed_headers) - 1 else ":")
        units.append(((("h=" + text) if i == 0 else text), " " if i == 0 else ""))
    units.append((f"bh={base64.b64encode(bh).decode('ascii')};", " "))
    # b= starts on a line of its own so the value can be appended without refolding.
    head = _fold(units) + "\r\n b="
    value = head[len("DKIM-Signature:"):].encode("ascii")
    digest = canon.data_hash(headers, [n.encode("ascii") for n in signed_headers],
                             (b"DKIM-Signature", value), policy, hash_name)
    b = base64.b64encode(key.sign_digest(digest, hash_name)).decode("ascii")
    # RFC 6376 3.5 b=: FWS is allowed anywhere in the base64 value.
    first = LINE_WIDTH - len(" b=")
    chunks = [b[:first]] + [b[i:i + LINE_WIDTH - 1] for i in range(first, len(b), LINE_WIDTH - 1)]
    return (head + "\r\n ".join(chunks) + "\r\n").encode("ascii")


class Signer:
    """Signs messages for one domain with the selectors of its DKIM Sign list."""

    def __init__(self, domain, selectors):
        self.domain = _ascii_domain(domain)
        self.selectors = list(selectors)

    @classmethod
    def from_config(cls, domain, dkim_config, config_dir):
        """A Signer for ``domain`` from its ``DKIMConfig``; key files (relative to
        ``config_dir``) are read now. Raises ValueError naming the selector or file."""
        selectors = []
        for name in dkim_config.Sign:
            try:
                key_name = config_types.parse_domain(name)
            except ValueError:
                key_name = name
            sel = dkim_config.Selectors.get(key_name)
            if sel is None:
                raise ValueError(f"domain {domain}: unknown DKIM selector {name!r} in Sign")
            key = load_private_key(os.path.join(config_dir, sel.PrivateKeyFile))
            if key.algorithm == "ed25519" and sel.Hash != "sha256":
                raise ValueError(
                    f"domain {domain}: selector {name}: ed25519 keys sign with sha256 only")
            expiration = None
            if sel.Expiration is not None and sel.Expiration.total_seconds() > 0:
                expiration = max(1, int(sel.Expiration.total_seconds()))
            selectors.append(SelectorKey(
                name=_ascii_domain(key_name), key=key, hash=sel.Hash,
                header_relaxed=sel.Canonicalization.HeaderRelaxed,
                body_relaxed=sel.Canonicalization.BodyRelaxed,
                headers=tuple(sel.Headers), seal=not sel.DontSealHeaders,
                expiration=expiration,
            ))
        return cls(domain, selectors)

    def sign(self, message, now=None):
        """The DKIM-Signature header fields (bytes, CRLF, folded) to prepend to
        ``message``, one per selector; b"" without selectors. Raises SignError."""
        if not self.selectors:
            return b""
        try:
            headers, body = canon.parse_message(message)
        except canon.MessageError as e:
            raise SignError(str(e)) from None
        present = Counter(name.decode("ascii").lower() for name, _ in headers)
        # RFC 5322 3.6: exactly one From; DKIM requires it signed (RFC 6376 5.4).
        if present.get("from", 0) != 1:
            raise SignError(
                f"message has {present.get('from', 0)} From header fields, need exactly 1")
        timestamp = int(time.time() if now is None else now)
        body_hashes = {}
        out = []
        for sel in self.selectors:
            out.append(signature_header(
                headers, body, domain=self.domain, selector=sel.name, key=sel.key,
                hash_name=sel.hash, header_relaxed=sel.header_relaxed,
                body_relaxed=sel.body_relaxed, signed_headers=signed_header_names(sel, present),
                timestamp=timestamp, expiration=sel.expiration, body_hashes=body_hashes,
            ))
        return b"".join(out)


def from_domain(message):
    """The domain of the single address in the message's From header, lower-case
    (U-labels for IDNA domains, as domains are configured); None when there is not
    exactly one From field with exactly one address."""
    end = message.find(b"\n\n")
    end2 = message.find(b"\r\n\r\n")
    cands = [e for e in (end, end2) if e >= 0]
    head = message[:min(cands)] if cands else message
    values, current = [], None
    for line in head.split(b"\n"):
        line = line.rstrip(b"\r")
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        current = None
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"from":
            current = [value]
            values.append(current)
    if len(values) != 1:
        return None
    addrs = parse_address_list(b"\r\n".join(values[0]))
    if len(addrs) != 1 or not addrs[0].domain:
        return None
    try:
        return parse_domain(addrs[0].domain).unicode
    except AddressError:
        return None
