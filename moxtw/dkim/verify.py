"""DKIM verification (RFC 6376 6, RFC 8463 for ed25519, RFC 8301 for algorithm rules).

:func:`verify` checks every DKIM-Signature header field of a message (up to a limit) and
returns one :class:`DKIMResult` per field, top to bottom, with RFC 8601 result tokens.
It blocks (DNS lookups through the ``txt_lookup`` it is given, hashing): run it in the
resolver's thread pool, as :func:`verify_async` does. Hostile or garbled signatures give
"permerror" results; nothing here raises for bad input.

Verify only checks signatures; whether the signing domain matters for the message (DMARC
alignment with the From domain) is for the caller.
"""

import base64
import binascii
import re
import time
from dataclasses import dataclass
from typing import Callable, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim import crypto as dkim_crypto
from dkim.util import DuplicateTag, InvalidTagValueList, parse_tag_value
from twisted.logger import Logger

from moxtw.dkim import canon
from moxtw.dns import DNSError, InvalidName, NoRecords, NotFound, TemporaryFailure, normalize

log = Logger(namespace="moxtw.dkim")

__all__ = [
    "PASS", "FAIL", "NEUTRAL", "POLICY", "TEMPERROR", "PERMERROR", "DKIMResult",
    "default_policy", "verify", "verify_async",
]

# RFC 8601 2.7.1 result tokens.
PASS = "pass"
FAIL = "fail"
NEUTRAL = "neutral"
POLICY = "policy"
TEMPERROR = "temperror"
PERMERROR = "permerror"

# RFC 6376 6.1 and 8.4: verifiers MAY limit how many signatures they check.
MAX_SIGNATURES = 10
# Bounds on hostile signatures: the header field length and the h= list length.
MAX_SIGNATURE_FIELD = 16 * 1024
MAX_SIGNED_HEADERS = 256
# RFC 8301 3.2: RSA keys under 1024 bits MUST NOT be accepted; larger than this we
# refuse to spend CPU on (verifiers MUST handle 1024-4096 bits).
MIN_RSA_BITS = 1024
MAX_RSA_BITS = 8192

_ALGORITHMS = {"rsa-sha256": ("rsa", "sha256"), "rsa-sha1": ("rsa", "sha1"),
               "ed25519-sha256": ("ed25519", "sha256")}
_CRYPTO_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
_B64 = re.compile(rb"^[A-Za-z0-9+/]*={0,2}$")
_WS = re.compile(rb"\s+")
# Names after IDNA conversion: letters, digits, hyphens, underscores (selectors), dots.
_DNS_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


@dataclass
class DKIMResult:
    """Outcome for one DKIM-Signature header field.

    ``domain``: d= as a lower-case A-label (as written when invalid); ``selector``: s=;
    ``algorithm``: a=, e.g. "rsa-sha256"; ``result``: an RFC 8601 token; ``reason``:
    human-readable detail (also set for some passes, e.g. sha1); ``identity``: i= or "";
    ``header_b``: the start of b= for the header.b property (RFC 6008), unique among the
    message's signatures; ``key_type``/``key_bits``: of the DNS key when it was parsed.
    """

    domain: str
    selector: str
    algorithm: str
    result: str
    reason: str = ""
    identity: str = ""
    header_b: str = ""
    key_type: Optional[str] = None
    key_bits: Optional[int] = None


class _Result(Exception):
    """Ends the checks of one signature with a result."""

    def __init__(self, result, reason):
        super().__init__(reason)
        self.result = result
        self.reason = reason


def _text(value, limit=255):
    """Tag value bytes as printable text for results and logs: whitespace removed,
    control characters dropped, cut at ``limit``."""
    s = _WS.sub(b"", value or b"").decode("utf-8", "replace")
    s = "".join(c for c in s if c.isprintable())
    return s[:limit]


def default_policy(tags):
    """mox's default: refuse l= (RFC 6376 8.2: unsigned appended content) and signatures
    that do not sign Subject. Returns a reason to refuse, or None."""
    if b"l" in tags:
        return "l= (body length limit) not accepted"
    names = {n.strip().lower() for n in tags[b"h"].split(b":")}
    if b"subject" not in names:
        return "Subject header not signed"
    return None


_psl = None


def _public_suffix(domain):
    global _psl
    try:
        if _psl is None:
            from publicsuffixlist import PublicSuffixList

            _psl = PublicSuffixList()
        return _psl.is_public(domain)
    except ImportError:  # pragma: no cover - publicsuffixlist is a dependency
        return False


def _decode_b64(value, tag):
    data = _WS.sub(b"", value)
    if not data or not _B64.match(data) or len(data) % 4:
        raise _Result(PERMERROR, f"{tag}= is not valid base64")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _Result(PERMERROR, f"{tag}= is not valid base64") from None


def _check_signature_tags(tags, now):
    """RFC 6376 6.1.1: checks on the signature field alone. Returns (key_type,
    hash_name, domain, selector, canonicalization policy, h= names)."""
    # RFC 6376 6.1.1: required tags.
    missing = [t.decode() for t in (b"v", b"a", b"b", b"bh", b"d", b"h", b"s") if t not in tags]
    if missing:
        raise _Result(PERMERROR, f"missing required tag(s): {', '.join(missing)}")
    # RFC 6376 3.5 v=: must be 1.
    if tags[b"v"] != b"1":
        raise _Result(PERMERROR, f"unsupported version v={_text(tags[b'v'], 20)}")
    algorithm = tags[b"a"].lower().decode("ascii", "replace")
    if algorithm not in _ALGORITHMS:
        raise _Result(PERMERROR, f"unknown algorithm a={_text(tags[b'a'], 40)}")
    key_type, hash_name = _ALGORITHMS[algorithm]
    try:
        policy = canon.CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple").lower())
    except canon.InvalidCanonicalizationPolicyError:
        c = _text(tags.get(b"c"), 40)
        raise _Result(PERMERROR, f"unknown canonicalization c={c}") from None
    try:
        domain = normalize(tags[b"d"].decode("utf-8"))
        selector = normalize(tags[b"s"].decode("utf-8"))
    except (UnicodeDecodeError, InvalidName):
        raise _Result(PERMERROR, "invalid d= domain or s= selector") from None
    if not _DNS_NAME.fullmatch(domain) or not _DNS_NAME.fullmatch(selector):
        raise _Result(PERMERROR, "invalid d= domain or s= selector")
    # RFC 6376 6.1.1: h= must include From.
    names = [n.strip().lower() for n in re.split(rb"\s*:\s*", tags[b"h"].strip())]
    if len(names) > MAX_SIGNED_HEADERS:
        raise _Result(PERMERROR, f"too many header fields in h= ({len(names)})")
    if b"from" not in names:
        raise _Result(PERMERROR, "From header not signed")
    if not all(names):
        raise _Result(PERMERROR, "malformed h=")
    # RFC 6376 3.5 q=: colon-separated methods, dns/txt is the only one defined.
    if b"q" in tags:
        methods = [m.strip().lower() for m in tags[b"q"].split(b":")]
        if b"dns/txt" not in methods:
            raise _Result(PERMERROR, f"no supported query method in q={_text(tags[b'q'], 40)}")
    # RFC 6376 6.1.1: the i= domain must be d= or a subdomain of it.
    if b"i" in tags:
        ident = tags[b"i"]
        idomain = ident.rpartition(b"@")[2]
        try:
            idomain = normalize(idomain.decode("utf-8"))
        except (UnicodeDecodeError, InvalidName):
            raise _Result(PERMERROR, "invalid i= identity") from None
        if b"@" not in ident or not (idomain == domain or idomain.endswith("." + domain)):
            raise _Result(PERMERROR, "i= domain is not d= or a subdomain of it")
    # RFC 6376 3.5 t=, x=: decimal timestamps; x= after t=.
    timestamp = expires = None
    for tag in (b"t", b"x", b"l"):
        if tag in tags and not re.fullmatch(rb"[0-9]{1,12}", tags[tag]):
            raise _Result(PERMERROR, f"{tag.decode()}= is not a valid number")
    if b"t" in tags:
        timestamp = int(tags[b"t"])
    if b"x" in tags:
        expires = int(tags[b"x"])
        if timestamp is not None and expires <= timestamp:
            raise _Result(PERMERROR, "x= expiration is not after t= timestamp")
        # RFC 6376 6.1.1: verifiers MAY treat expired signatures as PERMFAIL (mox does).
        if expires < now:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
            raise _Result(PERMERROR, f"signature expired at {when}")
    # Syntax of b= and bh=.
    _decode_b64(tags[b"b"], "b")
    _decode_b64(tags[b"bh"], "bh")
    return key_type, hash_name, domain, selector, policy, names


def _parse_key_record(text):
    """Tags of a key record (RFC 6376 3.6.1), or None if it is not one."""
    try:
        tags = parse_tag_value(text.encode("utf-8").strip())
    except (InvalidTagValueList, UnicodeError):
        return None
    if not tags:
        return None
    # RFC 6376 3.6.1 v=: if present it must be first and DKIM1; other records are ignored.
    if b"v" in tags and (tags[b"v"] != b"DKIM1" or next(iter(tags)) != b"v"):
        return None
    if b"p" not in tags:
        return None
    return tags


def _lookup_key(txt_lookup, selector, domain):
    name = f"{selector}._domainkey.{domain}"
    try:
        records = list(txt_lookup(name))
    except (NotFound, NoRecords):
        # RFC 6376 6.1.2 step 3: no key record is PERMFAIL.
        raise _Result(PERMERROR, f"no key: no DKIM record at {name}") from None
    except TemporaryFailure as e:
        # RFC 6376 6.1.2 step 2: the query failed to respond, TEMPFAIL.
        raise _Result(TEMPERROR, f"looking up key at {name}: {e.describe}") from None
    except InvalidName:
        raise _Result(PERMERROR, f"invalid key record name {name}") from None
    except DNSError as e:
        raise _Result(TEMPERROR, f"looking up key at {name}: {e.describe}") from None
    # RFC 6376 3.6.2.2: multiple records give undefined results; use the first valid one.
    for text in records:
        tags = _parse_key_record(text)
        if tags is not None:
            return tags
    if not records:
        raise _Result(PERMERROR, f"no key: no DKIM record at {name}")
    # RFC 6376 6.1.2 step 5: key syntax error.
    raise _Result(PERMERROR, f"key record syntax error at {name}")


def _public_key(tags, key_type, hash_name, identity_domain, domain):
    """Check the key record against the signature (RFC 6376 6.1.2 steps 6-8, 3.6.1) and
    return (public key object, bits)."""
    k = tags.get(b"k", b"rsa").lower()
    # RFC 6376 6.1.2 step 6: h= in the key limits the hash algorithms.
    if b"h" in tags:
        allowed = {h.strip().lower() for h in tags[b"h"].split(b":")}
        if hash_name.encode() not in allowed:
            raise _Result(PERMERROR, f"key does not allow hash {hash_name}")
    # RFC 6376 3.6.1 s=: the key must be for email (or all services).
    if b"s" in tags:
        services = {s.strip().lower() for s in tags[b"s"].split(b":")}
        if not services & {b"*", b"email"}:
            raise _Result(PERMERROR, "key is not for email (s= service type)")
    # RFC 6376 3.6.1 t=s: i= must use exactly the d= domain.
    flags = {f.strip().lower() for f in tags.get(b"t", b"").split(b":")}
    if b"s" in flags and identity_domain is not None and identity_domain != domain:
        raise _Result(PERMERROR, "key requires i= domain to equal d= (t=s)")
    # RFC 6376 6.1.2 step 7 (3.6.1 p=): an empty p= is a revoked key, PERMFAIL.
    p = _WS.sub(b"", tags[b"p"])
    if not p:
        raise _Result(PERMERROR, "key revoked (empty p=)")
    # RFC 6376 6.1.2 step 8: the key type must match the signature algorithm.
    if k != key_type.encode():
        raise _Result(PERMERROR, f"key type k={_text(k, 20)} does not match algorithm {key_type}")
    raw = _decode_b64(p, "key p")
    if key_type == "ed25519":
        # RFC 8463 4.2: the raw 32-byte public key.
        if len(raw) != 32:
            raise _Result(PERMERROR, "key syntax error: ed25519 key is not 32 bytes")
        return ed25519.Ed25519PublicKey.from_public_bytes(raw), 256
    # RFC 6376 3.6.1: DER SubjectPublicKeyInfo; dkimpy also reads a bare RSAPublicKey.
    try:
        pk = dkim_crypto.parse_public_key(raw)
        n, e = pk["modulus"], pk["publicExponent"]
    except Exception:
        raise _Result(PERMERROR, "key syntax error: cannot parse RSA public key") from None
    bits = n.bit_length()
    if bits < MIN_RSA_BITS:
        # RFC 8301 3.2: MUST NOT consider signatures with keys under 1024 bits valid.
        raise _Result(PERMERROR, f"RSA key of {bits} bits is too weak, need {MIN_RSA_BITS}")
    if bits > MAX_RSA_BITS:
        raise _Result(PERMERROR, f"RSA key of {bits} bits is over the {MAX_RSA_BITS} accepted")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key(), bits
    except ValueError:
        raise _Result(PERMERROR, "key syntax error: invalid RSA public key") from None


def _verify_one(headers, body, sig_header, txt_lookup, now, policy_fn, body_hashes, res,
                localserve):
    """Check one signature, filling ``res`` as facts become known. Returns a note for a
    pass; raises _Result for anything else."""
    value = sig_header[1]
    if len(value) > MAX_SIGNATURE_FIELD:
        raise _Result(PERMERROR, f"DKIM-Signature field longer than {MAX_SIGNATURE_FIELD} bytes")
    try:
        tags = parse_tag_value(value)
    except InvalidTagValueList as e:
        kind = "duplicate tag" if isinstance(e, DuplicateTag) else "malformed tag list"
        detail = _text(str(e.args[0] if e.args else "").encode(), 40)
        raise _Result(PERMERROR, f"{kind}: {detail}") from None
    res.domain = _text(tags.get(b"d"))
    res.selector = _text(tags.get(b"s"))
    res.algorithm = _text(tags.get(b"a"), 40).lower()
    res.identity = _text(tags.get(b"i"))
    res.header_b = _text(tags.get(b"b"), 1024)

    key_type, hash_name, domain, selector, policy, names = _check_signature_tags(tags, now)
    res.domain, res.selector = domain, selector
    # mox: a public suffix (a TLD) signing speaks for nobody (RFC 6376 6.1.1: verifiers
    # MAY refuse signatures for other reasons). localserve signs as "localhost".
    if _public_suffix(domain) and not (localserve and domain == "localhost"):
        raise _Result(PERMERROR, f"signing domain {domain} is a public suffix")
    # RFC 6376 6.1.1: a local policy may refuse acceptable signatures.
    reason = policy_fn(tags) if policy_fn is not None else None
    if reason:
        raise _Result(POLICY, reason)

    identity_domain = None
    if b"i" in tags:
        identity_domain = normalize(tags[b"i"].rpartition(b"@")[2].decode("utf-8"))
    key_tags = _lookup_key(txt_lookup, selector, domain)
    testing = b"y" in {f.strip().lower() for f in key_tags.get(b"t", b"").split(b":")}
    try:
        public_key, bits = _public_key(key_tags, key_type, hash_name, identity_domain, domain)
        res.key_type, res.key_bits = key_type, bits

        # RFC 6376 6.1.3: body hash first (cached per canonicalization and hash).
        length = int(tags[b"l"]) if b"l" in tags else None
        cache_key = (policy.body_algorithm.name, hash_name, length)
        if cache_key not in body_hashes:
            try:
                body_hashes[cache_key] = canon.body_hash(body, policy, hash_name, length)
            except ValueError as e:
                raise _Result(PERMERROR, str(e)) from None
        if body_hashes[cache_key] != _decode_b64(tags[b"bh"], "bh"):
            raise _Result(FAIL, "body hash does not match")

        digest = canon.data_hash(headers, names, sig_header, policy, hash_name)
        signature = _decode_b64(tags[b"b"], "b")
        try:
            if key_type == "rsa":
                public_key.verify(signature, digest, padding.PKCS1v15(),
                                  Prehashed(_CRYPTO_HASHES[hash_name]()))
            else:
                # RFC 8463 3: Ed25519 (PureEdDSA) over the SHA-256 data hash.
                public_key.verify(signature, digest)
        except InvalidSignature:
            raise _Result(FAIL, "signature does not verify") from None
    except _Result as r:
        if testing and r.result in (FAIL, PERMERROR):
            # RFC 6376 3.6.1 t=y: failures of a testing key must not be held against
            # the message: reported as neutral.
            raise _Result(NEUTRAL, f"key in testing mode (t=y): {r.reason}") from None
        raise
    notes = []
    if hash_name == "sha1":
        # RFC 8301 3.1 says rsa-sha1 MUST NOT be used; accepted as mox does, but noted.
        notes.append("rsa-sha1 is deprecated (RFC 8301 3.1)")
    if testing:
        notes.append("key in testing mode (t=y)")
    return "; ".join(notes)


def _set_header_b(results):
    """RFC 6008 2: header.b is at least 8 characters, more when needed to be unique."""
    full = [r.header_b for r in results]
    for i, r in enumerate(results):
        others = [b for j, b in enumerate(full) if j != i and b]
        n = 8
        while n < len(full[i]) and any(o.startswith(full[i][:n]) for o in others):
            n += 1
        r.header_b = full[i][:n]


def verify(message, txt_lookup: Callable[[str], list], now=None,
           max_signatures=MAX_SIGNATURES, policy=default_policy, localserve=False):
    """Verify each DKIM-Signature field of ``message`` (bytes), top to bottom.

    ``txt_lookup(name) -> list[str]`` returns TXT records and raises moxtw.dns errors.
    ``now``: time for the x= check (default: the current time). Fields beyond
    ``max_signatures`` get result "policy" without being checked. ``policy(tags) ->
    reason|None`` may refuse signatures (result "policy"); None accepts all.
    ``localserve``: accept signatures by d=localhost (otherwise refused as a public
    suffix). Blocking; never raises for bad input.
    """
    now = time.time() if now is None else now
    try:
        headers, body = canon.parse_message(message)
    except canon.MessageError as e:
        return _unparsable(message, str(e))
    results = []
    body_hashes = {}
    sig_headers = [(n, v) for n, v in headers if n.lower() == b"dkim-signature"]
    for i, sig_header in enumerate(sig_headers):
        res = DKIMResult(domain="", selector="", algorithm="", result=PERMERROR)
        if i >= max_signatures:
            # RFC 6376 6.1: verifiers MAY limit the number of signatures checked (8.4).
            try:
                tags = parse_tag_value(sig_header[1][:MAX_SIGNATURE_FIELD])
            except InvalidTagValueList:
                tags = {}
            res.domain, res.selector = _text(tags.get(b"d")), _text(tags.get(b"s"))
            res.algorithm = _text(tags.get(b"a"), 40).lower()
            res.identity = _text(tags.get(b"i"))
            res.header_b = _text(tags.get(b"b"), 1024)
            res.result = POLICY
            res.reason = f"not checked: more than {max_signatures} signatures"
            results.append(res)
            continue
        try:
            res.reason = _verify_one(headers, body, sig_header, txt_lookup, now, policy,
                                     body_hashes, res, localserve)
            res.result = PASS
        except _Result as r:
            res.result, res.reason = r.result, r.reason
        except Exception as e:
            # dkimpy or cryptography choking on hostile input: never escape.
            log.info("dkim: unexpected error verifying signature: {err}", err=repr(e)[:200])
            res.result, res.reason = PERMERROR, f"cannot process signature ({type(e).__name__})"
        results.append(res)
    _set_header_b(results)
    return results


def _unparsable(message, reason):
    """Results for a message whose header cannot be parsed: one permerror per field that
    looks like a DKIM-Signature, so the failure is still reported."""
    m = re.search(rb"\r?\n\r?\n", message)
    head = message[:m.start()] if m else message
    count = len(re.findall(rb"(?im)^dkim-signature[ \t]*:", head))
    return [DKIMResult(domain="", selector="", algorithm="", result=PERMERROR, reason=reason)
            for _ in range(count)]


def txt_lookup_for(resolver):
    """A blocking ``txt_lookup`` on ``resolver.lookup_sync``, for code in its pool."""

    def lookup(name):
        return list(resolver.lookup_sync(name, "TXT").records)

    return lookup


def verify_async(resolver, message, now=None, clock=None, **kwargs):
    """:func:`verify` run in the resolver's thread pool with its lookups; a Deferred
    firing with the list of DKIMResult. The time is ``now``, else ``clock.seconds()``
    (an IReactorTime), else the current time. Other arguments as for verify."""
    if now is None and clock is not None:
        now = clock.seconds()
    return resolver.run(verify, message, txt_lookup_for(resolver), now, **kwargs)
