"""Lookup tools for operators, over the verification modules and moxtw's own resolver:
``moxtw spf lookup|check``, ``dkim lookup|verify``, ``dmarc lookup|verify``, ``dnsbl
check``, ``tlsrpt lookup``. Each returns (exit status, lines); blocking (command line).
(``mtasts lookup`` comes with MTA-STS.)
"""

import ipaddress

from moxtw import dmarc, dnsbl, spf
from moxtw.dkim.verify import txt_lookup_for, verify
from moxtw.dns import DNSError, NoRecords, NotFound, normalize


def _txt(resolver, name, prefix):
    try:
        answer = resolver.lookup_sync(name, "TXT")
    except (NotFound, NoRecords):
        return 1, [f"no TXT records at {name}"]
    except DNSError as e:
        return 1, [f"lookup of {name} failed: {e}"]
    found = [t for t in answer.records if t.replace(" ", "").lower().startswith(prefix)]
    if not found:
        return 1, [f"no {prefix} record at {name} (other TXT records: {len(answer.records)})"]
    lines = list(found)
    if answer.authentic:
        lines.append("(DNSSEC-validated)")
    return 0, lines


def spf_lookup(resolver, domain):
    return _txt(resolver, normalize(domain), "v=spf1")


def spf_check(resolver, ip, mailfrom, helo):
    ipaddress.ip_address(ip)  # ValueError for a bad address
    r = spf.check_sync(resolver, ip, mailfrom, helo)
    lines = []
    for res in (r.mailfrom, r.helo):
        line = f"{res.identity}: {res.result} (domain {res.domain or '-'})"
        if res.mechanism:
            line += f", matched {res.mechanism}"
        if res.reason:
            line += f": {res.reason}"
        if res.explanation:
            line += f"; explanation: {res.explanation}"
        lines.append(line)
    return (0 if r.mailfrom.result == "pass" else 1), lines


def dkim_lookup(resolver, selector, domain):
    return _txt(resolver, f"{normalize(selector)}._domainkey.{normalize(domain)}", "v=dkim1")


def dkim_verify(resolver, message):
    results = verify(message, txt_lookup_for(resolver))
    if not results:
        return 1, ["no DKIM-Signature header"]
    lines = []
    for r in results:
        line = f"{r.result}: d={r.domain} s={r.selector} a={r.algorithm}"
        if r.key_type:
            line += f" key {r.key_type}" + (f"/{r.key_bits}" if r.key_bits else "")
        if r.reason:
            line += f": {r.reason}"
        lines.append(line)
    return (0 if any(r.result == "pass" for r in results) else 1), lines


def dmarc_lookup(resolver, domain):
    found = dmarc.lookup_sync(resolver, domain)
    if found.status != "found":
        return 1, [f"{found.status}: {found.reason} ({found.domain})"]
    return 0, [f"record at _dmarc.{found.domain}: {found.text}" + (" (DNSSEC-validated)" if found.authentic else "")]


def _from_domain(message):
    import email.parser
    import email.utils

    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    msg = email.parser.BytesHeaderParser().parsebytes(head + b"\n\n")
    froms = msg.get_all("from") or []
    addrs = [a for _, a in email.utils.getaddresses([str(f) for f in froms]) if "@" in a]
    if len(addrs) != 1:
        return None
    return addrs[0].rpartition("@")[2]


def dmarc_verify(resolver, ip, mailfrom, helo, message):
    """SPF, DKIM and DMARC of a message as if received from ``ip`` with MAIL FROM and
    EHLO as given."""
    from_domain = _from_domain(message)
    if from_domain is None:
        return 1, ["the message needs exactly one From address"]
    sp = spf.check_sync(resolver, ip, mailfrom, helo)
    dk = verify(message, txt_lookup_for(resolver))
    spf_domain = sp.mailfrom.domain
    res = dmarc.evaluate_sync(resolver, from_domain, sp.mailfrom.result, spf_domain, dk)
    lines = [f"spf: {sp.mailfrom.result} ({spf_domain or '-'})"]
    lines += [f"dkim: {r.result} d={r.domain} s={r.selector}" for r in dk] or ["dkim: none"]
    line = f"dmarc: {res.result} for {res.domain}, policy {res.policy}"
    if res.aligned_spf or res.aligned_dkim:
        line += " (aligned: " + ", ".join(n for n, ok in (("spf", res.aligned_spf), ("dkim", res.aligned_dkim))
                                          if ok) + ")"
    if res.reason:
        line += f": {res.reason}"
    lines.append(line)
    return (0 if res.result == "pass" else 1), lines


def dnsbl_check(resolver, zone, ip):
    ipaddress.ip_address(ip)
    r = dnsbl.lookup_sync(resolver, normalize(zone), ip)
    if r.status == "fail":
        return 1, [f"{ip} is listed in {r.zone} ({', '.join(r.codes)}): {r.reason}"]
    if r.status == "pass":
        return 0, [f"{ip} is not listed in {r.zone}"]
    return 1, [f"{r.status}: {r.reason}"]


def tlsrpt_lookup(resolver, domain):
    return _txt(resolver, f"_smtp._tls.{normalize(domain)}", "v=tlsrptv1")
