"""The DNS records a configured domain needs, for ``moxtw config dnsrecords``, the
quickstart and the DNS check.

:func:`domain_records` returns :class:`Record` values (the same value types the resolver
returns: ``MX``, ``SRV``, ``TLSA``, str for TXT/CNAME/A/AAAA/PTR/CAA), each with a note
saying why it is there; :func:`zone_text` renders them as zone-file lines. Records for
what this version does not serve yet (MTA-STS policies, autoconfig) are listed as
comments, so nobody publishes a promise the server does not keep.
"""

import hashlib
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from moxtw.dkim.keys import parse_private_key, txt_strings
from moxtw.dns import MX, SRV, TLSA, normalize
from moxtw.mtasts.policy import txt_record
from moxtw.tls import acme
from moxtw.tls.certstore import cert_names

# RFC 6186 3.1 / RFC 8314 5.1: SRV records for the client services, "." for none.
CLIENT_SERVICES = (
    ("_submissions._tcp", "Submissions"),
    ("_submission._tcp", "Submission"),
    ("_imaps._tcp", "IMAPS"),
    ("_imap._tcp", "IMAP"),
)
NOT_OFFERED = (("_pop3._tcp", "POP3"), ("_pop3s._tcp", "POP3S"))


@dataclass(frozen=True)
class Record:
    """One resource record: ``name`` an A-label domain without trailing dot."""

    name: str
    rdtype: str
    value: object
    note: str = ""
    # True when the record needs DNSSEC on the zone to mean anything (TLSA).
    dnssec: bool = False
    # True for a record published ahead of a key change (the next host key's TLSA): it
    # matches nothing served yet.
    standby: bool = False


@dataclass(frozen=True)
class Pending:
    """A record that belongs to a feature this version does not serve yet."""

    text: str
    why: str


def public_listener(static):
    """The listener other servers connect to: "public" if present, else the first with
    SMTP enabled, else the first."""
    if "public" in static.Listeners:
        return "public", static.Listeners["public"]
    for name, lst in static.Listeners.items():
        if lst.SMTP.Enabled:
            return name, lst
    name = next(iter(static.Listeners))
    return name, static.Listeners[name]


def listener_ips(lst):
    """The listener's public IPs (NATIPs when set), without the unspecified addresses."""
    ips = list(lst.NATIPs) or list(lst.IPs)
    return [str(ip) for ip in ips if not ipaddress.ip_address(str(ip)).is_unspecified]


def _cert_spki_sha256(path):
    """(SHA-256 of the leaf's SubjectPublicKeyInfo, its DNS names)."""
    with open(path, "rb") as f:
        data = f.read()
    cert = x509.load_pem_x509_certificate(data)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest(), cert_names(cert)


def dkim_record(config_path, selector):
    """The TXT value for a DKIM selector's key file (RFC 6376 3.6.1)."""
    with open(config_path(selector.PrivateKeyFile), "rb") as f:
        return parse_private_key(f.read()).dns_record


def _spki_sha256_key(path):
    key = acme.load_key(path)
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def host_records(static, config_path, ips=None, data_dir=None):
    """Records for the host name itself: addresses, reverse names, SPF for the EHLO name
    and DSNs (RFC 7208 2.3), TLS reporting and DANE for the host. ``data_dir``: where
    the host keys generated for ACME are (TLSA records for them)."""
    host = normalize(str(static.Hostname))
    _, lst = public_listener(static)
    ips = list(ips) if ips is not None else listener_ips(lst)
    out = []
    for ip in ips:
        rdtype = "AAAA" if ipaddress.ip_address(ip).version == 6 else "A"
        out.append(Record(host, rdtype, ip, "the host name resolves to this server"))
    for ip in ips:
        out.append(Record(ipaddress.ip_address(ip).reverse_pointer, "PTR", host,
                          "reverse DNS (set at your hosting provider): receivers check it"))
    out.append(Record(host, "TXT", "v=spf1 a -all",
                      "SPF for the host name: used for the EHLO name and for DSNs with an empty MAIL FROM"))
    if static.HostTLSRPT is not None:
        out.append(Record(f"_smtp._tls.{host}", "TXT",
                          f"v=TLSRPTv1; rua=mailto:{static.HostTLSRPT.Localpart}@{host}",
                          "TLS reports (RFC 8460) about connections to this host"))
    if lst.TLS is not None and lst.TLS.KeyCerts:
        # RFC 7672 3.1.1: DANE-EE(3) SPKI(1) SHA-256(1) is what SMTP DANE recommends. One
        # record per certificate that covers the host name (several KeyCerts, chosen by
        # SNI): publishing the next key's record before switching keeps DANE working.
        seen = set()
        for kc in lst.TLS.KeyCerts:
            try:
                digest, names = _cert_spki_sha256(config_path(kc.CertFile))
            except (OSError, ValueError):
                continue
            wildcard = "*." + host.split(".", 1)[1] if "." in host else None
            if digest in seen or (names and host not in names and wildcard not in names):
                continue
            seen.add(digest)
            out.append(Record(f"_25._tcp.{host}", "TLSA", TLSA(3, 1, 1, digest),
                              "DANE (RFC 7672): only with DNSSEC on the zone; update it before the key changes",
                              dnssec=True))
    elif lst.TLS is not None and lst.TLS.ACME is not None:
        # ACME certificates for the host name keep the host key: one record for the
        # current key and one for the next, so a key rollover never breaks DANE.
        paths = acme.host_key_paths(data_dir or "", config_path, lst, acme.listener_hostname(static, lst))
        for i, path in enumerate(paths):
            try:
                digest = _spki_sha256_key(path)
            except (OSError, ValueError, TypeError):
                continue
            which = "current" if i == 0 else "next"
            out.append(Record(f"_25._tcp.{host}", "TLSA", TLSA(3, 1, 1, digest),
                              f"DANE (RFC 7672) for the {which} host key ({path}): only with DNSSEC on the zone",
                              dnssec=True, standby=i > 0))
    return out


def caa_records(static, domain, data_dir=None):
    """RFC 8659 CAA for ``domain``: the CAs of the ACME providers the listeners use, each
    bound to our account (RFC 8657 accounturi) when it is registered, and to the
    validation methods we answer; Let's Encrypt when there is no ACME."""
    out = []
    providers = []
    for lst in static.Listeners.values():
        if lst.TLS is not None and lst.TLS.ACME is not None and lst.TLS.ACME not in providers:
            providers.append(lst.TLS.ACME)
    for provider in providers:
        issuer = acme.issuer_domain(static.ACME[provider])
        if issuer is None:
            continue
        value = issuer
        uri = acme.account_uri(data_dir, provider) if data_dir else None
        if uri:
            value += f"; accounturi={uri}"
        value += "; validationmethods=tls-alpn-01,http-01"
        why = "bound to our account" if uri else "the account is not registered yet: run the server, then print again"
        out.append(Record(domain, "CAA", f'0 issue "{value}"',
                          f"CAA (RFC 8659, RFC 8657): only {issuer} may issue, {why}"))
    if not providers:
        out.append(Record(domain, "CAA", '0 issue "letsencrypt.org"',
                          "CAA (RFC 8659): only Let's Encrypt may issue certificates; adjust for your CA"))
    return out


def domain_records(static, dynamic, config_path, domain, ips=None, data_dir=None):
    """Records for ``domain`` (a key of Domains) and the pending ones, as
    ``(records, pending)``. ``config_path(name)`` resolves file names of the config;
    ``data_dir`` has the ACME accounts (CAA accounturi)."""
    dom = dynamic.Domains[domain]
    d = normalize(str(domain))
    host = normalize(str(static.Hostname))
    _, lst = public_listener(static)
    ips = list(ips) if ips is not None else listener_ips(lst)
    out, pending = [], []
    out.append(Record(d, "MX", MX(10, host), "email for the domain goes to this server"))
    spf = ["v=spf1"]
    for ip in ips:
        spf.append(("ip6:" if ipaddress.ip_address(ip).version == 6 else "ip4:") + ip)
    spf += ["mx", "~all"]
    out.append(Record(d, "TXT", " ".join(spf), "SPF (RFC 7208): which IPs send email for the domain"))
    for sel_name, sel in dom.DKIM.Selectors.items():
        try:
            value = dkim_record(config_path, sel)
        except (OSError, ValueError) as e:
            pending.append(Pending(f"{sel_name}._domainkey.{d}. TXT ...", f"key file unreadable: {e}"))
            continue
        used = "signs outgoing email" if sel_name in dom.DKIM.Sign else "not used for signing"
        out.append(Record(f"{normalize(str(sel_name))}._domainkey.{d}", "TXT", value,
                          f"DKIM selector {sel_name} (RFC 6376), {used}"))
    dmarc = "v=DMARC1;p=reject"
    if dom.DMARC is not None:
        rdom = normalize(str(dom.DMARC.Domain or domain))
        dmarc += f";rua=mailto:{dom.DMARC.Localpart}@{rdom}!10m"
    out.append(Record(f"_dmarc.{d}", "TXT", dmarc,
                      "DMARC (RFC 7489): receivers reject unauthenticated email claiming the domain"))
    if dom.TLSRPT is not None:
        rdom = normalize(str(dom.TLSRPT.Domain or domain))
        out.append(Record(f"_smtp._tls.{d}", "TXT", f"v=TLSRPTv1; rua=mailto:{dom.TLSRPT.Localpart}@{rdom}",
                          "TLS reports (RFC 8460) about delivery to the domain"))
    for label, kind in CLIENT_SERVICES:
        svc = getattr(lst, kind)
        if svc.Enabled:
            value = SRV(0, 1, svc.Port, host)
            note = f"{kind} for email clients (RFC 6186)"
        else:
            value = SRV(0, 0, 0, "")
            note = f"{kind} is not offered (RFC 6186 3.4: target '.')"
        out.append(Record(f"{label}.{d}", "SRV", value, note))
    for label, kind in NOT_OFFERED:
        out.append(Record(f"{label}.{d}", "SRV", SRV(0, 0, 0, ""), f"{kind} is not offered"))
    # RFC 8659: only the listed CA may issue certificates for the domain.
    caa = caa_records(static, d, data_dir)
    out.extend(caa)
    if not caa:
        pending.append(Pending(f'{d}. CAA 0 issue "<your CA>"',
                               "set IssuerDomainName of the ACME provider for a CAA record"))
    if dom.MTASTS is not None:
        out.append(Record(f"_mta-sts.{d}", "TXT", txt_record(dom),
                          "MTA-STS (RFC 8461): a new id tells senders to fetch the policy again"))
        out.append(Record(f"mta-sts.{d}", "CNAME", host,
                          "the MTA-STS policy host; its certificate (SNI mta-sts.<domain>) must be valid"))
    else:
        pending.append(Pending(f"_mta-sts.{d}. TXT \"v=STSv1; id=...\" and mta-sts.{d}. CNAME {host}.",
                               "no MTASTS configured for the domain; it needs a CA certificate for mta-sts."
                               f"{d} (TLS.KeyCerts or ACME)"))
    pending.append(Pending(f"autoconfig.{d}. CNAME {host}. and _autodiscover._tcp.{d}. SRV 0 1 443 {host}.",
                           "autoconfig/autodiscover is not served yet"))
    return out, pending


def _quote_txt(value):
    return " ".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in txt_strings(value))


def rdata_text(rec):
    """The record's data in zone-file syntax (RFC 1035 5.1)."""
    v = rec.value
    if rec.rdtype == "MX":
        return f"{v.preference} {v.host + '.' if v.host else '.'}"
    if rec.rdtype == "SRV":
        return f"{v.priority} {v.weight} {v.port} {v.target + '.' if v.target else '.'}"
    if rec.rdtype == "TLSA":
        return f"{v.usage} {v.selector} {v.mtype} {v.data.hex()}"
    if rec.rdtype == "TXT":
        return _quote_txt(v)
    if rec.rdtype in ("CNAME", "PTR"):
        return v + "."
    return str(v)


def zone_text(records, pending=(), ttl=300):
    """Zone-file lines with the notes as comments."""
    lines = []
    for rec in records:
        lines.append(f"; {rec.note}")
        lines.append(f"{rec.name}. {ttl} IN {rec.rdtype} {rdata_text(rec)}")
    for p in pending:
        lines.append(f"; not yet ({p.why}): {p.text}")
    return "\n".join(lines) + "\n"


def config_path_fn(config_dir):
    """``config_path(name)`` for names relative to ``config_dir``."""
    return lambda name: os.path.join(config_dir, name)
