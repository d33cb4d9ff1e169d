"""DANE for outgoing SMTP (RFC 7672): which TLSA records apply, and whether a server's
certificate chain matches them.

The queue's direct delivery (``moxtw.queue.outbound``) asks :func:`tlsa_for_host` for an
MX host whose MX and address lookups were DNSSEC-authentic. Usable records make TLS
mandatory; :func:`verify_chain` then decides over the chain the server presented (by the
TLS client of ``moxtw.tls.policyclient``). Only DANE-TA(2) and DANE-EE(3) are used: the
PKIX usages 0 and 1 are ignored for SMTP (RFC 7672 3.1.3).
"""

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import crypto

from moxtw import dns

USAGE_DANE_TA = 2
USAGE_DANE_EE = 3
SELECTOR_CERT = 0
SELECTOR_SPKI = 1
MATCH_FULL = 0
MATCH_SHA256 = 1
MATCH_SHA512 = 2
_DIGEST_SIZES = {MATCH_SHA256: 32, MATCH_SHA512: 64}


class TLSALookupFailed(Exception):
    """The TLSA lookup failed temporarily or was bogus: RFC 7672 2.2 says not to
    deliver to this host now (neither with nor without TLS)."""


@dataclass(frozen=True)
class DANEHost:
    """The DANE state of one MX host: ``records`` the usable TLSA records (TLS and a
    matching chain required), ``all_unusable`` when authentic TLSA records exist but none
    is usable (RFC 7672 3.1: TLS still mandatory, without authentication). ``base`` is
    the TLSA base domain (the host after CNAMEs, RFC 7672 2.2.3), sent as SNI; ``names``
    the names a DANE-TA chain's leaf may carry (RFC 7672 3.2.2)."""

    host: str
    base: str
    records: tuple
    all_unusable: bool
    names: tuple


def usable(record):
    """RFC 7672 3.1.3 and 6698 2.1: usages 2 and 3, selectors 0 and 1, matching types 0
    to 2, and digest data of the right size."""
    if record.usage not in (USAGE_DANE_TA, USAGE_DANE_EE):
        return False
    if record.selector not in (SELECTOR_CERT, SELECTOR_SPKI):
        return False
    if record.mtype == MATCH_FULL:
        return len(record.data) > 0
    size = _DIGEST_SIZES.get(record.mtype)
    return size is not None and len(record.data) == size


async def tlsa_for_host(resolver, host, port=25, canonical=None):
    """The :class:`DANEHost` of ``host``, or None when DANE does not apply (no TLSA
    records, or not DNSSEC-authentic). Raises :class:`TLSALookupFailed` for a
    temporary failure (SERVFAIL is also how a validating resolver says "bogus")."""
    host = dns.normalize(host)
    # RFC 7672 2.2.2: the CNAME-expanded name first, then the original one.
    names = list(dict.fromkeys([dns.normalize(canonical or host), host]))
    answer = None
    for base in names:
        try:
            answer = await resolver.tlsa(base, port)
            break
        except (dns.NotFound, dns.NoRecords):
            continue
        except dns.DNSError as e:
            raise TLSALookupFailed(f"TLSA lookup for _{port}._tcp.{base}: {e}") from None
    if answer is None:
        return None
    if not answer.authentic:
        # RFC 7672 2.2: TLSA records that are not DNSSEC-secure are not used.
        return None
    records = tuple(r for r in answer.records if usable(r))
    names = tuple(dict.fromkeys([base, dns.normalize(host)]))
    return DANEHost(dns.normalize(host), base, records, not records and bool(answer.records), names)


def _selected(cert, selector):
    if selector == SELECTOR_SPKI:
        return cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_bytes(serialization.Encoding.DER)


def matches(record, cert):
    """Whether ``cert`` (cryptography x509) matches one TLSA record (RFC 6698 2.1)."""
    data = _selected(cert, record.selector)
    if record.mtype == MATCH_SHA256:
        data = hashlib.sha256(data).digest()
    elif record.mtype == MATCH_SHA512:
        data = hashlib.sha512(data).digest()
    return data == record.data


def name_matches(cert, names):
    """RFC 7672 3.2.3 with RFC 6125: a DNS subjectAltName equal to one of ``names``, or
    a wildcard covering one label; without DNS SANs, the subject CN."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dnsnames = sans.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dnsnames = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    wanted = [n.lower().rstrip(".") for n in names]
    for pattern in dnsnames:
        p = pattern.lower().rstrip(".")
        for name in wanted:
            if p == name:
                return True
            if p.startswith("*.") and "." in name and name.split(".", 1)[1] == p[2:]:
                return True
    return False


def verify_chain(chain, dane_host, now=None):
    """Decide over the chain a server presented (cryptography certificates, leaf first).

    Returns ``(ok, reason)``. DANE-EE(3): the leaf matches, nothing else is checked
    (RFC 7672 3.1.1: no name or expiry checks). DANE-TA(2): some certificate of the
    chain matches and is a trust anchor from which the leaf's chain verifies, and the
    leaf carries one of the host's names (RFC 7672 3.1.2, 3.2)."""
    if not chain:
        return False, "no certificate presented"
    leaf = chain[0]
    ee = [r for r in dane_host.records if r.usage == USAGE_DANE_EE]
    if any(matches(r, leaf) for r in ee):
        return True, "DANE-EE match"
    ta = [r for r in dane_host.records if r.usage == USAGE_DANE_TA]
    anchors = [c for c in chain[1:] if any(matches(r, c) for r in ta)]
    if not anchors and any(matches(r, leaf) for r in ta):
        # RFC 7671 5.2.2: a TA record may also match a server that presents its
        # self-issued anchor as the only certificate.
        anchors = [leaf]
    if not anchors:
        return False, "no TLSA record matches the certificate chain"
    if not name_matches(leaf, dane_host.names):
        return False, f"certificate is not for {', '.join(dane_host.names)}"
    if anchors == [leaf]:
        return True, "DANE-TA match"
    for anchor in anchors:
        if _chain_verifies(leaf, chain[1:], anchor):
            return True, "DANE-TA match"
    return False, "certificate chain does not verify to the TLSA trust anchor"


def _chain_verifies(leaf, intermediates, anchor):
    store = crypto.X509Store()
    store.add_cert(crypto.X509.from_cryptography(anchor))
    # The anchor need not be self-signed (RFC 7671 5.2.2): a partial chain ends at it.
    store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
    untrusted = [crypto.X509.from_cryptography(c) for c in intermediates if c is not anchor]
    ctx = crypto.X509StoreContext(store, crypto.X509.from_cryptography(leaf), chain=untrusted)
    try:
        ctx.verify_certificate()
    except crypto.X509StoreContextError:
        return False
    return True


__all__ = ["DANEHost", "TLSALookupFailed", "matches", "name_matches", "tlsa_for_host", "usable", "verify_chain"]
