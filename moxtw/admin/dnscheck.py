"""``moxtw config dnscheck DOMAIN``: what DNS serves for a configured domain, compared
with what it needs (moxtw.admin.records), one result per check with ok, warning or error
and what to change.

:func:`check_domain` takes a blocking ``lookup(name, rdtype) -> Answer`` (the resolver's
``lookup_sync``): the command line calls it directly, a web page would call it in a
thread. Lookups go through moxtw's own resolver, the one delivery uses.
"""

import ipaddress
from dataclasses import dataclass

from moxtw.admin import records as rec
from moxtw.dns import DNSError, NoRecords, NotFound, normalize
from moxtw.mtasts.policy import txt_record as mtasts_txt

OK, WARNING, ERROR = "ok", "warning", "error"


@dataclass(frozen=True)
class Result:
    check: str
    status: str
    message: str


class _Checker:
    def __init__(self, lookup):
        self._lookup = lookup
        self.results = []
        self.authentic = []

    def add(self, check, status, message):
        self.results.append(Result(check, status, message))

    def get(self, name, rdtype):
        """(records, error text): records () when there are none; error text for a
        lookup that failed (not for "none")."""
        try:
            answer = self._lookup(name, rdtype)
        except (NotFound, NoRecords):
            return (), None
        except DNSError as e:
            return None, f"{rdtype} lookup of {name} failed: {e}"
        self.authentic.append(answer.authentic)
        return answer.records, None


def _versioned(c, what, name, version):
    """The TXT records at ``name`` starting with ``version`` (e.g. "v=dmarc1", compared
    without spaces, case-insensitively), or None after adding the lookup's error."""
    got, err = c.get(name, "TXT")
    if err:
        c.add(what, ERROR, err)
        return None
    return [t for t in got if t.replace(" ", "").lower().startswith(version)]


def _tag_value(text, tag):
    """Value of ``tag=`` in a tag=value list (DKIM, DMARC, TLSRPT records)."""
    for part in text.split(";"):
        k, _, v = part.strip().partition("=")
        if k.strip().lower() == tag:
            return "".join(v.split())
    return None


def check_domain(static, dynamic, config_path, domain, lookup, ips=None, data_dir=None):
    """The results for ``domain`` (a key of Domains), in the order of the records.
    ``data_dir``: where ACME keeps the host keys (the TLSA records to expect)."""
    c = _Checker(lookup)
    dom = dynamic.Domains[domain]
    d = normalize(str(domain))
    host = normalize(str(static.Hostname))
    _, lst = rec.public_listener(static)
    want_ips = list(ips) if ips is not None else rec.listener_ips(lst)
    found_ips = _check_ips(c, host, want_ips)
    _check_mx(c, d, host)
    _check_spf(c, d, host, want_ips or found_ips)
    _check_dkim(c, dom, d, config_path)
    _check_dmarc(c, dom, d)
    if dom.TLSRPT is not None:
        _check_tlsrpt(c, d)
    _check_mtasts(c, dom, d)
    _check_unserved(c, d)
    _check_srv(c, lst, d, host)
    _check_dane(c, static, config_path, host, want_ips, data_dir)
    return c.results


def _check_ips(c, host, want_ips):
    """A/AAAA of the host name and the PTR of each address; the addresses found."""
    found_ips = []
    for rdtype in ("A", "AAAA"):
        got, err = c.get(host, rdtype)
        if err:
            c.add("IPs", ERROR, err)
        found_ips += list(got or ())
    if not found_ips:
        c.add("IPs", ERROR, f"{host} has no A or AAAA records: add them for {', '.join(want_ips) or 'this machine'}")
    else:
        missing = [ip for ip in want_ips if ip not in found_ips]
        extra = [ip for ip in found_ips if want_ips and ip not in want_ips]
        if missing:
            c.add("IPs", ERROR, f"{host} lacks {', '.join(missing)} (has {', '.join(found_ips)})")
        elif extra:
            c.add("IPs", WARNING, f"{host} also resolves to {', '.join(extra)}, not listened on")
        else:
            c.add("IPs", OK, f"{host} resolves to {', '.join(found_ips)}")
    for ip in found_ips:
        name = ipaddress.ip_address(ip).reverse_pointer
        got, err = c.get(name, "PTR")
        if err:
            c.add("PTR", ERROR, err)
        elif host in got:
            c.add("PTR", OK, f"{ip} has reverse name {host}")
        else:
            have = ", ".join(got) if got else "none"
            c.add("PTR", ERROR, f"{ip} has reverse name {have}: ask your hosting provider to set it to {host}")
    return found_ips


def _check_mx(c, d, host):
    got, err = c.get(d, "MX")
    if err:
        c.add("MX", ERROR, err)
        return
    hosts = [mx.host for mx in got]
    if host not in hosts:
        c.add("MX", ERROR, f"no MX record for {d} names {host}: add {d}. MX 10 {host}.")
        return
    others = [h for h in hosts if h != host]
    if others:
        c.add("MX", WARNING, f"MX also names {', '.join(others)}: they must deliver here")
    else:
        c.add("MX", OK, f"MX {host}")


def _check_spf(c, d, host, ips):
    """SPF of the domain (the MX or our IPs allowed) and of the host name (RFC 7208 2.3)."""
    for name, what in ((d, "SPF"), (host, "SPF host")):
        got, err = c.get(name, "TXT")
        if err:
            c.add(what, ERROR, err)
            continue
        spf = [t for t in got if t.lower().startswith("v=spf1")]
        if not spf:
            c.add(what, ERROR, f"no SPF record at {name}")
            continue
        if len(spf) > 1:
            c.add(what, ERROR, f"{len(spf)} SPF records at {name}: RFC 7208 4.5 makes that a permerror; keep one")
            continue
        terms = spf[0].lower().split()
        by_name = ("mx", "+mx") if name == d else ("a", "+a")
        missing = [ip for ip in ips
                   if f"ip{ipaddress.ip_address(ip).version}:{ip}" not in terms and not any(t in terms for t in by_name)]
        if missing:
            c.add(what, ERROR, f"SPF at {name} ({spf[0]}) does not allow {', '.join(missing)}")
        elif not terms[-1].endswith("all"):
            c.add(what, WARNING, f"SPF at {name} has no -all or ~all at the end")
        else:
            c.add(what, OK, spf[0])


def _check_dkim(c, dom, d, config_path):
    for sel_name, sel in dom.DKIM.Selectors.items():
        what = f"DKIM {sel_name}"
        name = f"{normalize(str(sel_name))}._domainkey.{d}"
        try:
            want = rec.dkim_record(config_path, sel)
        except (OSError, ValueError) as e:
            c.add(what, ERROR, f"key file: {e}")
            continue
        got, err = c.get(name, "TXT")
        if err:
            c.add(what, ERROR, err)
            continue
        keys = [t for t in got if _tag_value(t, "p") is not None]
        if not keys:
            c.add(what, ERROR, f"no DKIM record at {name}: add {name}. TXT \"{want}\"")
        elif _tag_value(keys[0], "p") != _tag_value(want, "p"):
            c.add(what, ERROR, f"the key at {name} is not this selector's key: replace it with \"{want}\"")
        else:
            c.add(what, OK, f"key at {name} matches")


def _check_dmarc(c, dom, d):
    name = f"_dmarc.{d}"
    dm = _versioned(c, "DMARC", name, "v=dmarc1")
    if dm is None:
        return
    if not dm:
        c.add("DMARC", ERROR, f"no DMARC record at {name}")
    elif len(dm) > 1:
        c.add("DMARC", ERROR, f"{len(dm)} DMARC records at {name} (RFC 7489 6.6.3: none is used)")
    elif (_tag_value(dm[0], "p") or "").lower() == "none":
        c.add("DMARC", WARNING, f"policy p=none at {name}: unauthenticated email using {d} is not rejected")
    elif dom.DMARC is not None and not _tag_value(dm[0], "rua"):
        c.add("DMARC", WARNING, f"no rua= at {name}: reports are configured but not asked for")
    else:
        c.add("DMARC", OK, dm[0])


def _check_tlsrpt(c, d):
    name = f"_smtp._tls.{d}"
    tr = _versioned(c, "TLSRPT", name, "v=tlsrptv1")
    if tr is None:
        return
    if not tr:
        c.add("TLSRPT", ERROR, f"no TLSRPT record at {name}, though TLSRPT is configured")
    elif not _tag_value(tr[0], "rua"):
        c.add("TLSRPT", ERROR, f"TLSRPT record at {name} has no rua=")
    else:
        c.add("TLSRPT", OK, tr[0])


def _check_mtasts(c, dom, d):
    """The _mta-sts record names the configured policy id (RFC 8461 3.1), and the policy
    host resolves."""
    name = f"_mta-sts.{d}"
    sts = _versioned(c, "MTA-STS", name, "v=stsv1")
    if sts is None:
        return
    if dom.MTASTS is None:
        if sts:
            c.add("MTA-STS", WARNING, f"{name} has a record, but the domain has no MTASTS policy configured")
        else:
            c.add("MTA-STS", OK, "no policy configured or published")
        return
    want = mtasts_txt(dom)
    if len(sts) != 1:
        c.add("MTA-STS", ERROR, f"{len(sts)} MTA-STS records at {name}: publish one, \"{want}\"")
    elif _tag_value(sts[0], "id") != dom.MTASTS.PolicyID:
        c.add("MTA-STS", ERROR, f"{name} has id {_tag_value(sts[0], 'id')}, the policy is "
              f"{dom.MTASTS.PolicyID}: publish \"{want}\"")
    else:
        host_ips = []
        for rdtype in ("A", "AAAA"):
            found, _ = c.get(f"mta-sts.{d}", rdtype)
            host_ips += list(found or ())
        if host_ips:
            c.add("MTA-STS", OK, f"{sts[0]}; policy host mta-sts.{d} resolves")
        else:
            c.add("MTA-STS", ERROR, f"mta-sts.{d} does not resolve: senders cannot fetch the policy")


def _check_unserved(c, d):
    """Autoconfig is not served: records for it send clients nowhere."""
    got, _ = c.get(f"autoconfig.{d}", "CNAME")
    if got:
        c.add("autoconfig", WARNING, f"autoconfig.{d} exists, but this version serves no autoconfig yet")
    else:
        c.add("autoconfig", OK, "none published (this version does not serve autoconfig yet)")


def _check_srv(c, lst, d, host):
    """SRV records for email clients (RFC 6186)."""
    for label, kind in rec.CLIENT_SERVICES:
        svc = getattr(lst, kind)
        name = f"{label}.{d}"
        what = f"SRV {label}"
        got, err = c.get(name, "SRV")
        if err:
            c.add(what, ERROR, err)
        elif svc.Enabled and any(s.target == host and s.port == svc.Port for s in got):
            c.add(what, OK, f"{host}:{svc.Port}")
        elif svc.Enabled:
            c.add(what, WARNING, f"add {name}. SRV 0 1 {svc.Port} {host}. so clients find {kind}")
        elif any(s.target for s in got):
            c.add(what, WARNING, f"{name} points at a service not offered: set it to 0 0 0 .")
        else:
            c.add(what, OK, "not offered")


def _check_dane(c, static, config_path, host, want_ips, data_dir=None):
    """DNSSEC, as the resolver reports it (DNS.TrustAD), and DANE (RFC 7672)."""
    dnssec = bool(c.authentic) and all(c.authentic)
    if dnssec:
        c.add("DNSSEC", OK, "answers are DNSSEC-validated")
    else:
        c.add("DNSSEC", WARNING, "answers are not DNSSEC-validated (or DNS.TrustAD is off): DANE cannot protect "
              "delivery to this host")
    got, err = c.get(f"_25._tcp.{host}", "TLSA")
    wanted = [r for r in rec.host_records(static, config_path, ips=want_ips, data_dir=data_dir)
              if r.rdtype == "TLSA" and not r.standby]
    if err:
        c.add("DANE", ERROR, err)
    elif not got:
        c.add("DANE", WARNING if dnssec else OK,
              f"no TLSA records at _25._tcp.{host}" + (": add one to protect delivery" if dnssec else ""))
    elif any(t == w.value for t in got for w in wanted):
        c.add("DANE", OK if dnssec else WARNING,
              f"TLSA at _25._tcp.{host} matches the certificate" + ("" if dnssec else ", but without DNSSEC"))
    else:
        c.add("DANE", ERROR, f"no TLSA record at _25._tcp.{host} matches the certificate: senders using DANE "
              "will not deliver; update or remove them")


def exit_status(results):
    return 1 if any(r.status == ERROR for r in results) else 0
