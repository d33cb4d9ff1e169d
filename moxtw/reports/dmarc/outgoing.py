"""Outgoing DMARC aggregate reports (RFC 7489 7.2): composing them.

The evaluations they are made of are kept by ``moxtw.reports.dmarc.evaluations``.
Per policy domain, evaluations are grouped into reporting periods on UTC hour boundaries:
a day, or the record's ``ri`` with a minimum of one hour (rounded to 1, 2, 3, 4, 6, 8 or
12 hours so periods tile the day). Once a period has ended, :meth:`EvaluationStore.prepare_reports`
aggregates its evaluations into rows with counts, writes the XML of appendix C, gzips it,
and builds the report message of 7.2.1.1 for the ``rua`` destinations that are allowed:
not on the suppression list, and for destinations outside the policy domain's
organizational domain, confirmed by a ``<policy-domain>._report._dmarc.<rua-domain>`` TXT
record (7.1). Queueing the messages is the caller's job; :meth:`EvaluationStore.mark_sent`
then removes the evaluations that were reported.
"""

import functools
import gzip
import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email import policy as _email_policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from xml.etree import ElementTree as ET

from twisted.internet import defer
from twisted.logger import Logger

from moxtw.dns.base import normalize
from moxtw.dns.types import DNSError, NoRecords, NotFound, TemporaryFailure
from moxtw.reports.dmarc.parse import (
    AuthResults,
    DKIMAuthResult,
    Identifiers,
    PolicyEvaluated,
    PolicyOverrideReason,
    PolicyPublished,
    Record,
    Row,
    SPFAuthResult,
)
from moxtw.reports.received import from_unix
from moxtw.smtp.address import AddressError, parse_address

log = Logger(namespace="moxtw.reports.dmarc")

DEFAULT_INTERVAL = 86400  # RFC 7489 6.3 ri default: one day
INTERVAL_HOURS = (1, 2, 3, 4, 6, 8, 12, 24)  # divisors of a day, so periods tile it
MAX_DESTINATIONS = 4  # RFC 7489 6.2: receivers MUST support at least two rua URIs
# A report whose external destination check fails temporarily is retried for this long
# after its period ended; then that destination is skipped.
TEMPFAIL_RETRY = timedelta(hours=24)
REPORT_VERSION = "1.0"

# Value sets of the appendix C schema; other values are mapped onto them when writing.
DISPOSITIONS = frozenset({"none", "quarantine", "reject"})
DKIM_RESULTS = frozenset({"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"})
SPF_RESULTS = frozenset({"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"})
SPF_ALIASES = {"hardfail": "fail", "unknown": "temperror", "error": "permerror"}
SPF_SCOPES = frozenset({"helo", "mfrom"})
OVERRIDE_TYPES = frozenset({
    "forwarded", "sampled_out", "trusted_forwarder", "mailing_list", "local_policy", "other",
})


# -- values


@dataclass(frozen=True)
class Destination:
    """A report address from a ``rua`` URI, with its size limit in bytes (RFC 7489 6.2)."""

    address: str  # localpart@domain, domain in A-labels
    domain: str
    max_size: int | None = None


@dataclass(frozen=True)
class Evaluation:
    """One stored DMARC evaluation of an incoming message."""

    id: int
    policy_domain: str
    evaluated: datetime
    interval_hours: int
    addresses: tuple  # rua URIs
    policy_published: PolicyPublished
    source_ip: str
    disposition: str
    dkim_aligned: str  # pass, fail
    spf_aligned: str
    reasons: tuple  # ((type, comment), ...)
    envelope_to: str
    envelope_from: str
    header_from: str
    dkim_results: tuple  # ((domain, selector, result, human_result), ...)
    spf_results: tuple  # ((domain, scope, result), ...)


@dataclass(frozen=True)
class DueReport:
    """A reporting period of a domain that has ended: [begin, end), aware datetimes.
    ``addresses`` are the rua URIs of the domain's most recent evaluation."""

    domain: str
    begin: datetime
    end: datetime
    interval_hours: int
    addresses: tuple
    evaluations: int
    last_evaluation_id: int


@dataclass(frozen=True)
class OutgoingReport:
    """A composed report message, ready to be queued from ``mail_from`` to each of
    ``to_addresses``; pass it to :meth:`EvaluationStore.mark_sent` once queued."""

    to_addresses: tuple
    message_bytes: bytes
    domain: str
    mail_from: str
    report_id: str
    begin: datetime
    end: datetime
    last_evaluation_id: int


@dataclass(frozen=True)
class Suppression:
    """A suppression list entry: an address or a domain (with its subdomains)."""

    entry: str
    created: datetime
    until: datetime | None = None
    comment: str = ""


# -- helpers without state


def interval_hours(ri):
    """Reporting interval in hours for a record's ``ri`` (seconds; RFC 7489 6.3): at
    least 1, at most 24, rounded down to a divisor of 24."""
    try:
        hours = int(ri) // 3600
    except (TypeError, ValueError):
        hours = DEFAULT_INTERVAL // 3600
    hours = min(max(hours, 1), 24)
    return max(h for h in INTERVAL_HOURS if h <= hours)


_SIZE = re.compile(r"^(\d{1,15})([kmgt]?)$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_rua(uri):
    """The :class:`Destination` of a ``rua`` URI (RFC 7489 6.2, 6.4:
    ``mailto:addr[!size[kmgt]]``), or None for other schemes and invalid addresses."""
    text = uri.strip()
    max_size = None
    head, bang, size = text.rpartition("!")
    if bang:
        m = _SIZE.match(size)
        if m:
            # RFC 7489 6.4: units are powers of two.
            max_size = int(m.group(1)) * _UNITS[m.group(2).lower()]
            text = head
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.strip().lower() != "mailto":
        return None
    # RFC 6068: percent-encoded, may carry ?headers, which are not used here.
    rest = urllib.parse.unquote(rest.split("?", 1)[0]).strip()
    try:
        addr = parse_address(rest)
    except AddressError:
        return None
    if addr.domain.is_literal:
        return None
    return Destination(address=addr.ascii_domain(), domain=addr.domain.ascii, max_size=max_size)


@functools.lru_cache(maxsize=1)
def _psl():
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


@functools.lru_cache(maxsize=4096)
def organizational_domain(domain):
    """RFC 7489 3.2: the registrable domain (public suffix plus one label)."""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


def external_destination_allowed(resolver, policy_domain, rua_domain):
    """RFC 7489 7.1: whether ``rua_domain`` accepts reports about ``policy_domain``, per a
    TXT record starting with ``v=DMARC1`` at ``<policy-domain>._report._dmarc.<rua-domain>``.

    Deferred[bool]: False when there is no such record (NotFound, NoRecords, a name too
    long); fails with :class:`TemporaryFailure` when the answer should be asked again
    later."""
    try:
        name = f"{normalize(policy_domain)}._report._dmarc.{normalize(rua_domain)}"
        d = resolver.txt(name)
    except DNSError:
        return defer.succeed(False)

    def answered(answer):
        for record in answer.records:
            first = record.split(";", 1)[0].replace(" ", "").replace("\t", "")
            if first == "v=DMARC1":
                return True
        return False

    def failed(f):
        if f.check(TemporaryFailure):
            return f
        if f.check(NotFound, NoRecords, DNSError):
            return False
        return f

    return d.addCallbacks(answered, failed)


def aligned_result(value):
    return "pass" if str(value).lower() == "pass" or value is True else "fail"


def _dkim_result(value):
    value = (value or "").lower()
    if value in DKIM_RESULTS:
        return value
    return "temperror" if value.startswith("temp") else "permerror"


def _spf_result(value):
    value = (value or "").lower()
    value = SPF_ALIASES.get(value, value)
    return value if value in SPF_RESULTS else "permerror"


def _source_ip(text):
    # The schema's IPAddress pattern only knows the full 8-group IPv6 form.
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    return ip.exploded if ip.version == 6 else str(ip)


def aggregate(evaluations):
    """RFC 7489 7.2: rows for evaluations with identical content, with counts, in the
    order each first appeared. ``evaluations``: iterable of :class:`Evaluation`."""
    counts = {}
    for e in evaluations:
        key = (e.source_ip, e.disposition, e.dkim_aligned, e.spf_aligned, e.reasons,
               e.envelope_to, e.envelope_from, e.header_from, e.dkim_results, e.spf_results)
        counts[key] = counts.get(key, 0) + 1
    records = []
    for key, count in counts.items():
        (ip, disposition, dkim, spf, reasons, env_to, env_from, header_from, dkim_results,
         spf_results) = key
        records.append(Record(
            row=Row(
                source_ip=ip, count=count,
                policy_evaluated=PolicyEvaluated(
                    disposition=disposition, dkim=dkim, spf=spf,
                    reasons=[PolicyOverrideReason(t, c) for t, c in reasons]),
            ),
            identifiers=Identifiers(header_from=header_from, envelope_from=env_from,
                                    envelope_to=env_to),
            auth_results=AuthResults(
                dkim=[DKIMAuthResult(domain=d, selector=s, result=r, human_result=h)
                      for d, s, r, h in dkim_results],
                spf=[SPFAuthResult(domain=d, scope=s, result=r) for d, s, r in spf_results],
            ),
        ))
    return records


def feedback_xml(feedback):
    """The XML (bytes, UTF-8) of an aggregate report per RFC 7489 appendix C: elements in
    schema order, values mapped onto the schema's value sets, required elements present."""
    root = ET.Element("feedback")

    def add(parent, name, text=None):
        el = ET.SubElement(parent, name)
        if text is not None:
            el.text = str(text)
        return el

    add(root, "version", feedback.version or REPORT_VERSION)
    md = feedback.report_metadata
    m = add(root, "report_metadata")
    add(m, "org_name", md.org_name)
    add(m, "email", md.email)
    if md.extra_contact_info:
        add(m, "extra_contact_info", md.extra_contact_info)
    add(m, "report_id", md.report_id)
    dr = add(m, "date_range")
    add(dr, "begin", int(md.date_range.begin))
    add(dr, "end", int(md.date_range.end))
    for error in md.errors:
        add(m, "error", error)

    pp = feedback.policy_published
    p = add(root, "policy_published")
    add(p, "domain", pp.domain)
    if pp.adkim in ("r", "s"):
        add(p, "adkim", pp.adkim)
    if pp.aspf in ("r", "s"):
        add(p, "aspf", pp.aspf)
    policy = pp.p if pp.p in DISPOSITIONS else "none"
    add(p, "p", policy)
    add(p, "sp", pp.sp if pp.sp in DISPOSITIONS else policy)  # RFC 7489 6.3: sp defaults to p
    add(p, "pct", 100 if pp.pct is None else pp.pct)  # 6.3: pct defaults to 100
    add(p, "fo", pp.fo or "0")  # 6.3: fo defaults to 0

    for rec in feedback.records:
        r = add(root, "record")
        row = add(r, "row")
        add(row, "source_ip", _source_ip(rec.row.source_ip))
        add(row, "count", rec.row.count)
        pe = rec.row.policy_evaluated
        ev = add(row, "policy_evaluated")
        add(ev, "disposition", pe.disposition if pe.disposition in DISPOSITIONS else "none")
        add(ev, "dkim", aligned_result(pe.dkim))
        add(ev, "spf", aligned_result(pe.spf))
        for reason in pe.reasons:
            re_el = add(ev, "reason")
            add(re_el, "type", reason.type if reason.type in OVERRIDE_TYPES else "other")
            if reason.comment:
                add(re_el, "comment", reason.comment)
        ids = rec.identifiers
        i = add(r, "identifiers")
        if ids.envelope_to:
            add(i, "envelope_to", ids.envelope_to)
        add(i, "envelope_from", ids.envelope_from)
        add(i, "header_from", ids.header_from)
        a = add(r, "auth_results")
        for dk in rec.auth_results.dkim:
            d = add(a, "dkim")
            add(d, "domain", dk.domain)
            if dk.selector:
                add(d, "selector", dk.selector)
            add(d, "result", _dkim_result(dk.result))
            if dk.human_result:
                add(d, "human_result", dk.human_result)
        spf = rec.auth_results.spf or [
            # The schema requires an SPF result; without one, say "none" for the
            # MAIL FROM domain (or the From domain for the null reverse-path).
            SPFAuthResult(domain=ids.envelope_from or ids.header_from, scope="mfrom", result="none")
        ]
        for sp in spf:
            s = add(a, "spf")
            add(s, "domain", sp.domain)
            add(s, "scope", sp.scope if sp.scope in SPF_SCOPES else "mfrom")
            add(s, "result", _spf_result(sp.result))
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True) + b"\n"


def gzip_report(xml):
    """Gzip a report (RFC 7489 7.2.1.1: application/gzip); reproducible (mtime 0)."""
    return gzip.compress(xml, compresslevel=9, mtime=0)


def report_filename(receiver, policy_domain, begin, end, report_id, extension="xml.gz"):
    """RFC 7489 7.2.1.1: ``receiver!policy-domain!begin!end!unique-id.xml.gz``."""
    return f"{receiver}!{policy_domain}!{int(begin)}!{int(end)}!{report_id}.{extension}"


def report_subject(policy_domain, submitter, report_id):
    """RFC 7489 7.2.1.1 Subject."""
    return f"Report Domain: {policy_domain} Submitter: {submitter} Report-ID: <{report_id}>"


def compose_message(from_address, to_addresses, policy_domain, submitter, report_id, begin,
                    end, report_gz, receiver, date=None, message_id=None):
    """The report message of RFC 7489 7.2.1.1 (bytes, CRLF): a text part and the gzipped
    XML as an ``application/gzip`` attachment. ``begin``/``end``: Unix seconds as in the
    report's date_range; ``receiver``: our domain, the first part of the file name."""
    msg = EmailMessage(policy=_email_policy.SMTP)
    msg["From"] = from_address
    msg["To"] = ", ".join(to_addresses)
    subject = report_subject(policy_domain, submitter, report_id)
    if not subject.isascii():
        msg["Subject"] = subject  # RFC 2047-encoded by the email package
    msg["Date"] = format_datetime(date or datetime.now(timezone.utc))
    msg["Message-ID"] = message_id or make_msgid(domain=receiver)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834 5
    first = from_unix(begin).strftime("%Y-%m-%d %H:%M:%S")
    last = from_unix(end).strftime("%Y-%m-%d %H:%M:%S")
    msg.set_content(
        f"This is a DMARC aggregate report (RFC 7489) for {policy_domain},\r\n"
        f"covering {first} to {last} UTC, from {submitter}.\r\n"
        f"Report-ID: {report_id}\r\n")
    msg.add_attachment(report_gz, maintype="application", subtype="gzip",
                       filename=report_filename(receiver, policy_domain, begin, end, report_id))
    data = msg.as_bytes()
    if subject.isascii():
        # The email package folds a long Subject right after "Subject:"; fold between
        # the parts instead, which reads better and keeps the value without a leading space.
        data = data.replace(b"\r\nDate: ", b"\r\n" + _fold("Subject: " + subject) + b"Date: ", 1)
    return data


def _fold(line, width=78):
    """RFC 5322 2.2.3: fold a header line at spaces, lines at most ``width`` when possible."""
    out, current = [], ""
    for word in line.split(" "):
        if current and len(current) + 1 + len(word) > width:
            out.append(current)
            current = " " + word
        else:
            current = f"{current} {word}" if current else word
    out.append(current)
    return "\r\n".join(out).encode("ascii") + b"\r\n"


# -- the store
