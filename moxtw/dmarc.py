"""DMARC: is the domain in the From header authenticated, and what does its owner ask for
when it is not (RFC 7489).

:func:`parse_record` parses a ``_dmarc`` TXT record, :func:`lookup_sync` finds the policy
for a From domain (falling back to its organizational domain, found with the ICANN section
of the Public Suffix List), and :func:`evaluate` combines it with the SPF and DKIM results
of a message: identifier alignment, the policy for subdomains and pct sampling.
"""

import functools
import random
import re
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger

from moxtw.dns.base import normalize
from moxtw.dns.types import DNSError, InvalidName, NoRecords, NotFound, TemporaryFailure

log = Logger(namespace="moxtw.dmarc")

# RFC 7489 11.2: Authentication-Results tokens.
NONE = "none"
PASS = "pass"
FAIL = "fail"
TEMPERROR = "temperror"
PERMERROR = "permerror"

# RFC 7489 6.3 p/sp values.
POLICY_NONE = "none"
POLICY_QUARANTINE = "quarantine"
POLICY_REJECT = "reject"
POLICIES = (POLICY_NONE, POLICY_QUARANTINE, POLICY_REJECT)

ALIGN_RELAXED = "r"
ALIGN_STRICT = "s"

# RFC 7489 6.2: size suffixes of a reporting URI, powers of two.
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

MAX_TXT = 4096  # longer TXT sets are hostile, not policies


class ParseError(ValueError):
    """A malformed DMARC record: "permerror" (RFC 7489 11.2)."""


@dataclass(frozen=True)
class URI:
    """A reporting URI (RFC 7489 6.2): ``address`` (e.g. "mailto:dmarc@example.com") and an
    optional size limit, ``max_size`` in ``unit`` ("", "k", "m", "g", "t")."""

    address: str
    max_size: int = 0
    unit: str = ""

    @property
    def max_bytes(self):
        """The size limit in bytes, 0 for none."""
        return self.max_size * _UNITS[self.unit]

    def __str__(self):
        text = self.address.replace(",", "%2C").replace("!", "%21")
        return f"{text}!{self.max_size}{self.unit}" if self.max_size else text


@dataclass(frozen=True)
class Record:
    """A parsed DMARC policy record (RFC 7489 6.3), defaults filled in. ``sp`` is "" when
    the record has none (``p`` then applies to subdomains too). ``assumed_none``: the record
    had no valid p or sp but valid rua, so p=none is assumed (RFC 7489 6.6.3 step 6)."""

    v: str = "DMARC1"
    p: str = POLICY_NONE
    sp: str = ""
    pct: int = 100
    adkim: str = ALIGN_RELAXED
    aspf: str = ALIGN_RELAXED
    rua: tuple = ()
    ruf: tuple = ()
    ri: int = 86400
    fo: tuple = ("0",)
    rf: tuple = ("afrf",)
    assumed_none: bool = False

    def subdomain_policy(self):
        return self.sp or self.p

    def __str__(self):
        parts = [f"v={self.v}", f"p={self.p}"]
        if self.sp:
            parts.append(f"sp={self.sp}")
        if self.rua:
            parts.append("rua=" + ",".join(str(u) for u in self.rua))
        if self.ruf:
            parts.append("ruf=" + ",".join(str(u) for u in self.ruf))
        for tag, default in (("adkim", "r"), ("aspf", "r"), ("pct", 100), ("ri", 86400)):
            if getattr(self, tag) != default:
                parts.append(f"{tag}={getattr(self, tag)}")
        if self.fo != ("0",):
            parts.append("fo=" + ":".join(self.fo))
        if self.rf != ("afrf",):
            parts.append("rf=" + ":".join(self.rf))
        return "; ".join(parts)


# -- parsing

_WSP = " \t"
# RFC 7489 6.4: dmarc-version = "v" *WSP "=" *WSP %x44 %x4d %x41 %x52 %x43 %x31
_VERSION = re.compile(r"[vV][ \t]*=[ \t]*DMARC1[ \t]*(;|$)")
_TAGNAME = re.compile(r"[A-Za-z0-9]+")  # RFC 6376 3.2 tag-name, minus "_" we never define
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")  # RFC 3986 3.1
_URI = re.compile(r"(?P<uri>[^!]+)(?:!(?P<size>[0-9]{1,15})(?P<unit>[kKmMgGtT]?))?")
_KEYWORD = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?")  # RFC 5321 4.1.2 Keyword


def is_dmarc_record(text):
    """Whether a TXT record is a DMARC record at all: it starts with "v=DMARC1" (RFC 7489
    6.6.3 step 2: other records are discarded)."""
    return bool(_VERSION.match(text.lstrip(_WSP)))


def _uris(value, tag):
    out = []
    for part in value.split(","):
        part = part.strip(_WSP)
        m = _URI.fullmatch(part)
        if not m or not _SCHEME.fullmatch(m.group("uri")):
            raise ParseError(f"{tag}: invalid URI {part!r}")
        out.append(URI(m.group("uri"), int(m.group("size") or 0), (m.group("unit") or "").lower()))
    return tuple(out)


def _number(value, tag, maximum):
    if not value.isascii() or not value.isdigit() or len(value) > 10 or int(value) > maximum:
        raise ParseError(f"{tag}: invalid number {value!r}")
    return int(value)


def _choice(value, tag, allowed):
    v = value.lower()
    if v not in allowed:
        raise ParseError(f"{tag}: {value!r} is not one of {', '.join(allowed)}")
    return v


def parse_record(text):
    """Parse a DMARC record; ParseError when it is not one or is malformed.

    Tag names and keyword values are case-insensitive; unknown tags are ignored (RFC 7489
    6.3); a tag given twice, a bad value of a known tag or a part without "=" is an error.
    """
    if not isinstance(text, str) or len(text) > MAX_TXT:
        raise ParseError("not a DMARC record (too long)")
    if not is_dmarc_record(text):
        raise ParseError("not a DMARC record: must start with v=DMARC1")
    parts = text.split(";")
    values = {}
    order = []
    for part in parts[1:]:
        part = part.strip(_WSP)
        if not part:
            continue  # trailing or doubled ";": harmless
        name, eq, value = part.partition("=")
        name = name.strip(_WSP)
        if not eq or not _TAGNAME.fullmatch(name):
            raise ParseError(f"malformed tag {part[:40]!r}")
        name = name.lower()
        if name in values or name == "v":
            raise ParseError(f"tag {name} given more than once")
        values[name] = value.strip(_WSP)
        order.append(name)

    kw = {}
    policy_error = None
    # RFC 7489 6.3: "v" and "p" MUST be present, in that order (6.4: p right after v).
    if "p" not in values:
        policy_error = "missing p"
    elif order[0] != "p":
        policy_error = "p must follow v"
    elif values["p"].lower() not in POLICIES:
        policy_error = f"invalid p {values['p'][:20]!r}"
    else:
        kw["p"] = values["p"].lower()
    if "sp" in values:
        if values["sp"].lower() in POLICIES:
            kw["sp"] = values["sp"].lower()
        else:
            policy_error = f"invalid sp {values['sp'][:20]!r}"
    if "rua" in values:
        kw["rua"] = _uris(values["rua"], "rua")
    if "ruf" in values:
        kw["ruf"] = _uris(values["ruf"], "ruf")
    if "pct" in values:
        kw["pct"] = _number(values["pct"], "pct", 100)
    if "ri" in values:
        kw["ri"] = _number(values["ri"], "ri", 0xFFFFFFFF)
    if "adkim" in values:
        kw["adkim"] = _choice(values["adkim"], "adkim", (ALIGN_RELAXED, ALIGN_STRICT))
    if "aspf" in values:
        kw["aspf"] = _choice(values["aspf"], "aspf", (ALIGN_RELAXED, ALIGN_STRICT))
    if "fo" in values:
        kw["fo"] = tuple(_choice(o.strip(_WSP), "fo", ("0", "1", "d", "s"))
                         for o in values["fo"].split(":"))
    if "rf" in values:
        formats = tuple(f.strip(_WSP).lower() for f in values["rf"].split(":"))
        if not all(_KEYWORD.fullmatch(f) for f in formats):
            raise ParseError(f"rf: invalid format list {values['rf'][:40]!r}")
        kw["rf"] = formats
    if policy_error:
        # RFC 7489 6.6.3 step 6: without a valid p/sp, act as p=none if rua has a valid
        # URI; otherwise there is no usable policy.
        if not kw.get("rua"):
            raise ParseError(policy_error + " and no rua")
        kw.pop("sp", None)
        kw["p"] = POLICY_NONE
        kw["assumed_none"] = True
    return Record(**kw)


# -- organizational domains


@functools.lru_cache(maxsize=1)
def _psl():
    from publicsuffixlist import PublicSuffixList

    # Only the ICANN section, as mox does (RFC 7489 erratum 6729): private suffixes such
    # as github.io are run by one organization.
    return PublicSuffixList(only_icann=True)


def organizational_domain(domain):
    """The organizational domain of ``domain`` (RFC 7489 3.2): its public suffix plus one
    label; a public suffix is its own. Lower-case A-label; InvalidName if not a name."""
    name = normalize(domain)
    return _psl().privatesuffix(name) or name


def aligned(domain, from_domain, mode):
    """Identifier alignment (RFC 7489 3.1): strict is the same name, relaxed the same
    organizational domain. Invalid names never align."""
    try:
        a, b = normalize(domain), normalize(from_domain)
    except DNSError:
        return False
    if a == b:
        return True
    return mode == ALIGN_RELAXED and organizational_domain(a) == organizational_domain(b)


# -- lookup


FOUND = "found"


@dataclass(frozen=True)
class Lookup:
    """The outcome of policy discovery (RFC 7489 6.6.3). ``status``: "found" when
    ``record`` was found at ``domain`` (the From domain or its organizational domain);
    "none" (no record, or several: ``reason`` says), "temperror" or "permerror" (a
    malformed record) otherwise. ``authentic``: the answer was DNSSEC-validated."""

    status: str
    domain: str
    record: Record = None
    text: str = ""
    authentic: bool = False
    reason: str = ""


def _lookup_one(resolver, domain):
    """The Lookup at ``_dmarc.<domain>``, or None when it has no DMARC record."""
    name = f"_dmarc.{domain}"
    try:
        answer = resolver.lookup_sync(name, "TXT")
    except (NotFound, NoRecords, InvalidName):
        return None
    except TemporaryFailure as e:
        return Lookup(TEMPERROR, domain, reason=f"looking up {name}: {e.describe}")
    records = [t for t in answer.records if is_dmarc_record(t)]  # RFC 7489 6.6.3 step 2
    if not records:
        return None
    if len(records) > 1:
        # RFC 7489 6.6.3 step 5: several records, no DMARC processing.
        return Lookup(NONE, domain, authentic=answer.authentic, reason="multiple DMARC records")
    text = records[0]
    try:
        record = parse_record(text)
    except ParseError as e:
        return Lookup(PERMERROR, domain, text=text, authentic=answer.authentic,
                      reason=f"malformed DMARC record: {e}")
    return Lookup(FOUND, domain, record, text, answer.authentic)


def lookup_sync(resolver, from_domain):
    """Find the DMARC policy of ``from_domain`` (blocking, for the resolver's thread pool):
    ``_dmarc.<from domain>``, else ``_dmarc.<organizational domain>`` (RFC 7489 6.6.3
    steps 1-4). Returns a :class:`Lookup`; InvalidName if ``from_domain`` is no name."""
    domain = normalize(from_domain)
    found = _lookup_one(resolver, domain)
    if found is None:
        org = organizational_domain(domain)
        if org != domain:
            found = _lookup_one(resolver, org)
    if found is None:
        found = Lookup(NONE, domain, reason="no DMARC record")
    log.debug("dmarc lookup {domain}: {status} at {rdomain} {reason}", domain=domain,
              status=found.status, rdomain=found.domain, reason=found.reason)
    return found


# -- evaluation


@dataclass(frozen=True)
class DMARCResult:
    """DMARC evaluation of one message.

    ``result``: "none", "pass", "fail", "temperror" or "permerror" (RFC 7489 11.2).
    ``domain``: the From domain; ``record_domain``: where the record was found;
    ``org_domain``: the organizational domain of the From domain. ``published_policy``:
    p, or sp when the record of the organizational domain applies to a subdomain
    (``is_subdomain_policy``). ``policy``: the disposition (RFC 7489 6.6.4): "none" unless
    the result is "fail"; one step milder when the message was sampled out by pct
    (``sampled`` False). ``reject``: whether the SMTP server should refuse the message:
    like mox, quarantine counts as reject, and a message sampled out is never refused.
    ``aligned_spf``/``aligned_dkim``: an aligned identifier passed.
    """

    result: str
    domain: str
    policy: str = POLICY_NONE
    record: Record = None
    aligned_spf: bool = False
    aligned_dkim: bool = False
    reject: bool = False
    org_domain: str = ""
    is_subdomain_policy: bool = False
    record_domain: str = ""
    published_policy: str = ""
    sampled: bool = True
    authentic: bool = False
    reason: str = ""


_MILDER = {POLICY_REJECT: POLICY_QUARANTINE, POLICY_QUARANTINE: POLICY_NONE,
           POLICY_NONE: POLICY_NONE}


def _token(result):
    """A result token from a string or an object with ``.result`` (SPFResult and the like)."""
    return str(getattr(result, "result", result) or "").lower()


def evaluate_sync(resolver, from_domain, spf_result, spf_domain, dkim_results, *, rng=None):
    """Blocking :func:`evaluate`, for the resolver's thread pool."""
    try:
        domain = normalize(from_domain)
    except DNSError as e:
        return DMARCResult(PERMERROR, str(from_domain), reason=f"invalid From domain: {e.describe}")
    org = organizational_domain(domain)
    found = lookup_sync(resolver, domain)
    base = dict(domain=domain, org_domain=org, record_domain=found.domain,
                authentic=found.authentic, reason=found.reason)
    if found.status != FOUND:
        return DMARCResult(found.status, **base)
    record = found.record
    subdomain = found.domain != domain
    published = record.subdomain_policy() if subdomain else record.p  # RFC 7489 6.3 sp

    spf_token = _token(spf_result)
    spf_aligned = bool(spf_domain) and aligned(spf_domain, domain, record.aspf)
    aligned_spf = spf_aligned and spf_token == "pass"  # RFC 7489 3.1.2, 4.2
    temporary = spf_aligned and spf_token == TEMPERROR
    aligned_dkim = False
    for dkim in dkim_results or ():
        d = getattr(dkim, "domain", "")
        if not d or not aligned(d, domain, record.adkim):  # RFC 7489 3.1.1
            continue
        token = _token(dkim)
        if token == "pass":
            aligned_dkim = True
        elif token == TEMPERROR:
            temporary = True

    if aligned_spf or aligned_dkim:
        result = PASS  # RFC 7489 4.2: one aligned pass is enough
    elif temporary:
        # An aligned identifier could not be checked; a retry may pass.
        result = TEMPERROR
    else:
        result = FAIL
    policy, sampled = POLICY_NONE, True
    if result == FAIL:
        # RFC 7489 6.6.4: apply the policy to pct% of failing messages; the others get
        # the next milder one.
        if record.pct < 100:
            r = rng if rng is not None else random
            sampled = record.pct > 0 and r.randrange(100) < record.pct
        policy = published if sampled else _MILDER[published]
    reject = result == FAIL and sampled and published in (POLICY_QUARANTINE, POLICY_REJECT)
    out = DMARCResult(result, policy=policy, record=record, aligned_spf=aligned_spf,
                      aligned_dkim=aligned_dkim, reject=reject, is_subdomain_policy=subdomain,
                      published_policy=published, sampled=sampled, **base)
    log.debug("dmarc {domain}: {result} policy={policy} reject={reject} record at {rdomain}",
              domain=domain, result=result, policy=policy, reject=reject, rdomain=found.domain)
    return out


def evaluate(resolver, from_domain, spf_result, spf_domain, dkim_results, *,
             rng=None) -> defer.Deferred:
    """Evaluate DMARC for a message whose From header has ``from_domain``, in the
    resolver's thread pool. ``spf_result``: the SPF result token (or an object with
    ``.result``) for ``spf_domain``, the SPF-authenticated domain (MAIL FROM, or HELO for
    the null sender); ``dkim_results``: objects with ``.domain`` (d=) and ``.result``.
    ``rng``: anything with ``randrange(100)`` for pct sampling (default: :mod:`random`).
    Deferred[:class:`DMARCResult`]."""
    return resolver.run(evaluate_sync, resolver, from_domain, spf_result, spf_domain,
                        dkim_results, rng=rng)
