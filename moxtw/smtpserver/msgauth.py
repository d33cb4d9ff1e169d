"""Authentication of incoming messages: iprev, SPF, DKIM and DMARC together, the
Authentication-Results header (RFC 8601) and the facts kept for reputation.

:func:`authenticate` runs the DNS-based checks for one message concurrently (all work
in the resolver's thread pool, never on the reactor) and returns :class:`AuthResults`.
"""

import re
from dataclasses import dataclass, field

from twisted.logger import Logger

from moxtw import dmarc, dnsbl, iprev
from moxtw import message as msgparse
from moxtw import spf
from moxtw.dkim.verify import verify_async
from moxtw.smtpserver.submission import fields, split_header

log = Logger(namespace="moxtw.smtpserver")

# RFC 2045 5.1 tspecials: a value containing one (or space, controls) is quoted.
_TSPECIALS = set('()<>@,;:\\"/[]?= \t')


def ar_value(v):
    """An RFC 8601 value: a token when possible, else a quoted-string (RFC 2045)."""
    v = str(v)
    if v and all(0x20 < ord(ch) < 0x7F and ch not in _TSPECIALS for ch in v):
        return v
    v = re.sub(r"[\x00-\x1f\x7f]", " ", v)
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text):
    text = re.sub(r"[\x00-\x1f\x7f()\\]", " ", str(text)).strip()
    return f" ({text})" if text else ""


@dataclass
class AuthResults:
    iprev: object = None  # iprev.IprevResult
    spf: object = None  # spf.SPFResults
    dkim: list = field(default_factory=list)  # [dkim.verify.DKIMResult]
    dmarc: object = None  # dmarc.DMARCResult
    from_localpart: str = ""
    from_domain: str = ""
    spf_domain: str = ""  # the domain SPF evaluated for MAIL FROM (HELO for <>)
    from_fields: int = 1  # From header fields in the message
    from_addresses: int = 1  # addresses in the (first) From field

    @property
    def single_from(self):
        """Exactly one From field with exactly one address: the only shape DMARC can
        evaluate (RFC 7489 6.6.1)."""
        return self.from_fields == 1 and self.from_addresses == 1

    def methods(self):
        """The resinfo parts of Authentication-Results, one per method/signature."""
        out = []
        if self.iprev is not None:
            r = self.iprev
            out.append(f"iprev={r.result} policy.iprev={ar_value(r.ip)}" + _comment(r.name or r.reason))
        for d in self.dkim:
            part = f"dkim={d.result}"
            if d.result != "pass" and d.reason:
                part += f" reason={ar_value(d.reason[:200])}"
            part += f" header.d={ar_value(d.domain)}"
            if d.selector:
                part += f" header.s={ar_value(d.selector)}"
            if d.algorithm:
                part += f" header.a={ar_value(d.algorithm)}"
            if d.header_b:
                part += f" header.b={ar_value(d.header_b)}"
            out.append(part)
        if not self.dkim:
            out.append("dkim=none")
        if self.spf is not None:
            m = self.spf.mailfrom
            part = f"spf={m.result}"
            if self.spf_domain:
                part += f" smtp.mailfrom={ar_value(self.spf_domain)}"
            out.append(part)
            h = self.spf.helo
            if h is not None and h.domain:
                out.append(f"spf={h.result} smtp.helo={ar_value(h.domain)}")
        if self.dmarc is not None and self.from_domain:
            part = f"dmarc={self.dmarc.result}"
            if self.dmarc.result == "fail":
                part += f" reason={ar_value('p=' + (self.dmarc.published_policy or 'none'))}"
            part += f" header.from={ar_value(self.from_domain)}"
            out.append(part)
        return out

    def header(self, hostname):
        """The Authentication-Results header field (RFC 8601 2.2), one result per line."""
        methods = self.methods()
        if not methods:
            return f"Authentication-Results: {hostname}; none\r\n".encode("utf-8")
        return (f"Authentication-Results: {hostname};\r\n\t" + ";\r\n\t".join(methods) + "\r\n").encode("utf-8")

    def verified_domains(self):
        """Domains verified by SPF (MAIL FROM) or a passing DKIM signature."""
        out = set()
        if self.spf is not None and self.spf.mailfrom.result == "pass" and self.spf_domain:
            out.add(self.spf_domain.lower())
        for d in self.dkim:
            if d.result == "pass":
                out.add(d.domain.lower())
        return out

    def facts(self):
        """Fields for moxtw.store.DeliveryFacts."""
        org = dmarc.organizational_domain(self.from_domain) if self.from_domain else ""
        spf_result = self.spf.mailfrom.result if self.spf is not None else ""
        dkim_domains = tuple(sorted({d.domain for d in self.dkim if d.result == "pass"}))
        helo_ok = self.spf is not None and self.spf.helo is not None and self.spf.helo.result == "pass"
        return dict(
            msgfrom_localpart=self.from_localpart,
            msgfrom_domain=self.from_domain,
            msgfrom_org_domain=org,
            ehlo_validated=helo_ok,
            mailfrom_validated=spf_result == "pass",
            msgfrom_validated=self.dmarc is not None and self.dmarc.result == "pass",
            spf_result=spf_result,
            dkim_domains=dkim_domains,
            dmarc_result=self.dmarc.result if self.dmarc is not None else "",
            iprev_result=self.iprev.result if self.iprev is not None else "",
        )


def _skip_cfws(v, i):
    """Index after comments and folding whitespace at ``i`` (RFC 5322 3.2.2)."""
    while i < len(v):
        if v[i:i + 1] in (b" ", b"\t", b"\r", b"\n"):
            i += 1
        elif v[i:i + 1] == b"(":
            depth = 0
            while i < len(v):
                c = v[i:i + 1]
                if c == b"\\":
                    i += 2
                    continue
                if c == b"(":
                    depth += 1
                elif c == b")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        else:
            break
    return i


def authserv_id(value):
    """The authserv-id of an Authentication-Results value, lower case, without a trailing
    dot: a token or quoted-string after optional CFWS (RFC 8601 2.2)."""
    i = _skip_cfws(value, 0)
    if value[i:i + 1] == b'"':
        out = bytearray()
        i += 1
        while i < len(value) and value[i:i + 1] != b'"':
            if value[i:i + 1] == b"\\":
                i += 1
            out += value[i:i + 1]
            i += 1
        ident = bytes(out)
    else:
        ident = re.split(rb"[;\s(]", value[i:], maxsplit=1)[0]
    return ident.strip().lower().rstrip(b".")


def strip_own_authres(data, hostname):
    """``data`` without Authentication-Results fields claiming our authserv-id: only our
    own results may carry it (RFC 8601 5). Unchanged (same object) when there are none."""
    header, sep, body = split_header(data)
    if b"authentication-results" not in header.lower():
        return data
    ours = hostname.lower().rstrip(".").encode("utf-8")
    kept = []
    removed = 0
    for f in fields(header):
        name, colon, value = f.partition(b":")
        if colon and name.strip().lower() == b"authentication-results":
            if authserv_id(value) == ours:
                removed += 1
                continue
        kept.append(f)
    if not removed:
        return data
    out = b"".join(kept)
    if out and not out.endswith(b"\n"):
        out += b"\r\n"
    return out.rstrip(b"\r\n") + sep + body if sep else out + body


def from_header(data):
    """(number of From header fields, [(localpart, lower-case domain)] of the addresses
    of the first one). DMARC needs exactly one field with one address (RFC 7489 6.6.1)."""

    # Only the header section is needed: parsing a large body would cost more than the
    # DKIM check.
    header = split_header(data[:1024 * 1024])[0]
    raw = [f for f in fields(header) if f.partition(b":")[0].strip().lower() == b"from"]
    if not raw:
        return 0, []
    try:
        addrs = msgparse.parse_address_list(raw[0].partition(b":")[2].strip())
    except Exception:
        return len(raw), []
    return len(raw), [(a.localpart, str(a.domain).lower()) for a in addrs]


def from_address(data):
    """(localpart, lower-case domain) of the single From address, or ("", "")."""
    n, addrs = from_header(data)
    if n != 1 or len(addrs) != 1:
        return "", ""
    return addrs[0]


async def authenticate(resolver, *, remote_ip, ehlo, mailfrom, data, localserve=False):
    """Run iprev, SPF and DKIM concurrently, then DMARC. Never raises for bad input or
    DNS trouble: each result says temperror/permerror instead."""
    mailfrom_domain = mailfrom.rpartition("@")[2] if mailfrom else ""
    d_iprev = _safe(iprev.check(resolver, remote_ip), "iprev")
    d_spf = _safe(spf.check(resolver, remote_ip, mailfrom, ehlo), "spf")
    d_dkim = _safe(verify_async(resolver, data, localserve=localserve), "dkim")
    d_from = resolver.run(from_header, data)
    results = AuthResults()
    results.iprev = await d_iprev
    results.spf = await d_spf
    results.dkim = (await d_dkim) or []
    results.from_fields, addrs = await d_from
    results.from_addresses = len(addrs)
    if results.from_fields == 1 and len(addrs) == 1:
        results.from_localpart, results.from_domain = addrs[0]
    results.spf_domain = mailfrom_domain or (ehlo or "")
    if results.from_domain:
        spf_res = results.spf.mailfrom if results.spf is not None else "none"
        results.dmarc = await _safe(
            dmarc.evaluate(resolver, results.from_domain, spf_res, results.spf_domain, results.dkim),
            "dmarc",
        )
    return results


def _safe(d, what):
    def failed(f):
        log.failure("{what} check failed", f, what=what)
        return None

    return d.addErrback(failed)


dnsbl_listed = dnsbl.listed  # the first zone listing an IP: (zone, reason) or None


__all__ = ["AuthResults", "ar_value", "authenticate", "dnsbl_listed", "from_address", "strip_own_authres"]
