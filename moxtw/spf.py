"""SPF: is the connecting IP allowed to send for a domain (RFC 7208).

Records are evaluated by pyspf. pyspf does its DNS through the module-level function
``spf.DNSLookup``; on import this module replaces it, once, with a dispatcher that serves
each lookup from the resolver of the check running in the current thread (set for the
duration of :func:`check_host_sync`). Checks for different messages can run concurrently
in the resolver's thread pool, each with its own resolver, and pyspf never reaches the
system resolver: a lookup outside a check is a temporary error.

:func:`check` evaluates both identities of RFC 7208 2.3 (HELO) and 2.4 (MAIL FROM) in the
resolver's thread pool; :func:`check_host_sync` is RFC 7208 4's check_host() for code
already running there.
"""

import contextlib
import dataclasses
import ipaddress
import re
import threading
from dataclasses import dataclass

import spf as pyspf
from twisted.internet import defer
from twisted.logger import Logger

from moxtw.dns.base import normalize
from moxtw.dns.types import DNSError, NoRecords, NotFound, TemporaryFailure

log = Logger(namespace="moxtw.spf")

# RFC 8601 2.7.2 / RFC 7208 2.6 result tokens.
NONE = "none"
NEUTRAL = "neutral"
PASS = "pass"
FAIL = "fail"
SOFTFAIL = "softfail"
TEMPERROR = "temperror"
PERMERROR = "permerror"
RESULTS = frozenset({NONE, NEUTRAL, PASS, FAIL, SOFTFAIL, TEMPERROR, PERMERROR})

IDENTITY_MAILFROM = "mailfrom"
IDENTITY_HELO = "helo"

# RFC 7208 4.6.4: a check MAY be limited in time, to at least 20 seconds.
MAX_CHECK_SECONDS = 20

# Text from DNS ends up in SMTP replies, headers and logs: keep it short and printable.
MAX_TEXT = 512
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")


def _printable(text, limit=MAX_TEXT):
    text = _UNPRINTABLE.sub(" ", str(text)).strip()
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


# -- pyspf's DNS, served by our resolver

_current = threading.local()


def _txt_bytes(answer):
    """TXT records as bytes, one per record: the raw bytes when the resolver kept them."""
    raw = answer.raw
    if len(raw) == len(answer.records):
        out = []
        for item in raw:
            if isinstance(item, bytes):
                out.append(item)
            elif isinstance(item, (tuple, list)) and all(isinstance(s, bytes) for s in item):
                out.append(b"".join(item))
            else:
                break
        else:
            return out
    return [r.encode("utf-8") for r in answer.records]


def _dns_lookup(name, qtype, strict=True, timeout=None):
    """Replacement for ``spf.DNSLookup``: ``[((name, qtype), value), ...]``, values as
    pyspf's own dnspython driver gives them; no records is ``[]`` (pyspf counts void
    lookups itself, RFC 7208 4.6.4); a temporary failure raises ``spf.TempError``."""
    resolver = getattr(_current, "resolver", None)
    if resolver is None:
        raise pyspf.TempError("DNS lookup outside an SPF check (no resolver)")
    qtype = str(qtype).upper()
    if qtype == "SPF":
        # RFC 7208 3.1/14.1: the SPF RR type is obsolete; never query it.
        return []
    try:
        answer = resolver.lookup_sync(name, qtype)
    except (NotFound, NoRecords):
        return []
    except TemporaryFailure as e:
        raise pyspf.TempError(f"DNS {qtype} {name}: {e.text or e.describe}") from None
    except DNSError:
        # InvalidName: a name no DNS lookup can answer, e.g. from a macro expansion.
        return []
    except Exception as e:
        # A resolver bug must not be blamed on the domain's record.
        log.failure("spf: lookup {qtype} {name}", qtype=qtype, name=name)
        raise pyspf.TempError(f"DNS {qtype} {name}: {e!r}") from None
    key = (name, qtype)
    if qtype == "TXT":
        return [(key, [b]) for b in _txt_bytes(answer)]
    if qtype == "MX":
        return [(key, (mx.preference, mx.host)) for mx in answer.records]
    return [(key, value) for value in answer.records]


# Installed once, for every thread: pyspf looks the name up in its module at call time.
pyspf.DNSLookup = _dns_lookup


@contextlib.contextmanager
def _using(resolver):
    previous = getattr(_current, "resolver", None)
    _current.resolver = resolver
    try:
        yield
    finally:
        _current.resolver = previous


# -- results


@dataclass(frozen=True)
class SPFResult:
    """The result of one check_host() evaluation.

    ``result``: an RFC 7208 2.6 token (see :data:`RESULTS`). ``identity``: "mailfrom" or
    "helo". ``domain``: the domain checked (A-label; "" when none could be used).
    ``sender``: the <sender> of check_host(), "postmaster@<domain>" without a local part.
    ``explanation``: for "fail" only, the expanded exp= text (RFC 7208 6.2) or a default.
    ``mechanism``: the directive that matched, as written in the record ("" when none did,
    e.g. for the default neutral). ``reason``: why, for permerror/temperror/none.
    """

    result: str
    identity: str = IDENTITY_MAILFROM
    domain: str = ""
    sender: str = ""
    ip: str = ""
    helo: str = ""
    explanation: str = ""
    mechanism: str = ""
    reason: str = ""

    def received_spf(self, receiver=None):
        """The value of a Received-SPF header field (RFC 7208 9.1), one line."""
        parts = [self.result, f"({_comment(self._comment_text(receiver))})"]
        pairs = [("client-ip", self.ip), ("envelope-from", self.sender), ("helo", self.helo),
                 ("identity", self.identity)]
        if receiver:
            pairs.append(("receiver", receiver))
        if self.mechanism:
            pairs.append(("mechanism", self.mechanism))
        if self.reason and self.result in (PERMERROR, TEMPERROR):
            pairs.append(("problem", self.reason))
        parts.append(" ".join(f"{k}={_quote_value(v)};" for k, v in pairs if v))
        return " ".join(parts)

    def received_spf_header(self, receiver=None):
        """``Received-SPF: ...\\r\\n``, ready to prepend to a message."""
        return f"Received-SPF: {self.received_spf(receiver)}\r\n"

    def _comment_text(self, receiver):
        who = f"{receiver}: " if receiver else ""
        domain = self.domain or "(none)"
        if self.result == PASS:
            return f"{who}domain {domain} designates {self.ip} as permitted sender"
        if self.result == FAIL:
            return f"{who}domain {domain} does not designate {self.ip} as permitted sender"
        if self.result == SOFTFAIL:
            return f"{who}domain {domain} discourages use of {self.ip} as sender"
        if self.result == NEUTRAL:
            return f"{who}{self.ip} is neither permitted nor denied by domain {domain}"
        if self.result == NONE:
            return f"{who}no SPF policy for domain {domain}"
        if self.result == TEMPERROR:
            return f"{who}temporary error evaluating SPF for domain {domain}"
        return f"{who}permanent error in SPF record of domain {domain}"


@dataclass(frozen=True)
class SPFResults:
    """Both identities: ``mailfrom`` (RFC 7208 2.4; postmaster@HELO for the null sender)
    and ``helo`` (RFC 7208 2.3)."""

    mailfrom: SPFResult
    helo: SPFResult


_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def _quote_value(value):
    # RFC 7208 9.1: key=value with value a dot-atom or a quoted-string (RFC 5322 3.2.4).
    value = _printable(value)
    if _DOT_ATOM.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text):
    # RFC 5322 3.2.2: ctext excludes "(", ")" and "\", which are quoted-pairs inside.
    return re.sub(r"([()\\])", r"\\\1", _printable(text))


# -- check_host


def _usable_domain(domain):
    """``domain`` as an A-label, or None when check_host() must return "none" for it
    (RFC 7208 4.3: malformed or not multi-label; 2.3: an address literal)."""
    if not domain or domain.startswith("["):
        return None
    try:
        name = normalize(domain)
    except DNSError:
        return None
    if "." not in name:
        return None
    return name


def _client_ip(ip):
    addr = ipaddress.ip_address(str(ip))
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr


def check_host_sync(resolver, ip, mailfrom_domain, sender, helo, *, identity=IDENTITY_MAILFROM,
                    receiver=None):
    """check_host(<ip>, <domain>, <sender>) of RFC 7208 4, blocking: run it in the resolver's
    thread pool (``resolver.run``). ``helo`` is the HELO/EHLO name (the %{h} macro),
    ``identity`` only labels the result. Raises ValueError for an invalid ``ip``; anything
    wrong with DNS records is a result, never an exception."""
    addr = _client_ip(ip)
    ipstr = str(addr)
    local, _, sender_domain = (sender or "").rpartition("@")
    local = local or "postmaster"  # RFC 7208 4.3: a sender without local-part
    domain = _usable_domain(mailfrom_domain)
    if domain is None:
        return SPFResult(NONE, identity, "", sender or "", ipstr, helo or "",
                         reason="no valid domain to check")
    sender_domain = _usable_domain(sender_domain) or domain
    sender = f"{local}@{sender_domain}"

    try:
        q = pyspf.query(i=ipstr, s=sender, h=helo or "unknown", receiver=receiver or None,
                        strict=True, querytime=MAX_CHECK_SECONDS)
        # RFC 7208 4.1/7.3: <domain> (%{d}) may differ from the sender's domain (%{o});
        # and the local-part may itself contain "@" (pyspf splits at the first one).
        q.l, q.o, q.d, q.s = local, sender_domain, domain, sender
        with _using(resolver):
            result, _code, text = q.check()
    except Exception as e:
        log.failure("spf: evaluating {domain} for {ip}", domain=domain, ip=ipstr)
        return SPFResult(PERMERROR, identity, domain, sender, ipstr, helo or "",
                         reason=_printable(f"internal error evaluating record: {e!r}"))

    if result not in RESULTS:
        result, text = PERMERROR, f"unexpected SPF result {result!r}"
    explanation = reason = ""
    if result == FAIL:
        explanation = _printable(text)  # RFC 7208 6.2: explanations are for "fail" only
    elif result in (PERMERROR, TEMPERROR):
        for prefix in ("SPF Permanent Error: ", "SPF Temporary Error: "):
            if text.startswith(prefix):
                text = text[len(prefix):]
        reason = _printable(text)
    elif result == NONE:
        reason = "no SPF record"
    mechanism = _printable(q.mechanism or "") if result not in (PERMERROR, TEMPERROR) else ""
    out = SPFResult(result, identity, domain, sender, ipstr, helo or "", explanation,
                    mechanism, reason)
    log.debug("spf {identity} {domain} for {ip}: {result} {mechanism} {reason}",
              identity=identity, domain=domain, ip=ipstr, result=result, mechanism=mechanism,
              reason=reason)
    return out


def check_sync(resolver, ip, mailfrom, helo, *, receiver=None):
    """Blocking :func:`check`, for the resolver's thread pool."""
    helo = helo or ""
    helo_result = check_host_sync(resolver, ip, helo, f"postmaster@{helo}", helo,
                                  identity=IDENTITY_HELO, receiver=receiver)
    if not mailfrom:
        # RFC 7208 2.4: with a null reverse-path, MAIL FROM is postmaster@<HELO identity>.
        return SPFResults(dataclasses.replace(helo_result, identity=IDENTITY_MAILFROM),
                          helo_result)
    _, _, domain = mailfrom.rpartition("@")
    mailfrom_result = check_host_sync(resolver, ip, domain, mailfrom, helo,
                                      identity=IDENTITY_MAILFROM, receiver=receiver)
    return SPFResults(mailfrom_result, helo_result)


def check(resolver, ip, mailfrom, helo, *, receiver=None) -> defer.Deferred:
    """Evaluate SPF for the MAIL FROM (RFC 7208 2.4; ``mailfrom`` "" for the null sender)
    and the HELO identity (RFC 7208 2.3) of a connection from ``ip``, in the resolver's
    thread pool. Deferred[:class:`SPFResults`]. ``receiver`` (our host name) is the %{r}
    macro in explanations."""
    return resolver.run(check_sync, resolver, ip, mailfrom, helo, receiver=receiver)
