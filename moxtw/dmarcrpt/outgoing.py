"""Outgoing DMARC aggregate reports (RFC 7489 7.2).

Every DMARC evaluation of an incoming message for a domain whose record asks for
aggregate reports (``rua``) is stored in ``data/dmarceval.db`` (:class:`EvaluationStore`).
Per policy domain, evaluations are grouped into reporting periods on UTC hour boundaries:
a day, or the record's ``ri`` with a minimum of one hour (rounded to 1, 2, 3, 4, 6, 8 or
12 hours so periods tile the day). Once a period has ended, :meth:`prepare_reports`
aggregates its evaluations into rows with counts, writes the XML of appendix C, gzips it,
and builds the report message of 7.2.1.1 for the ``rua`` destinations that are allowed:
not on the suppression list, and for destinations outside the policy domain's
organizational domain, confirmed by a ``<policy-domain>._report._dmarc.<rua-domain>`` TXT
record (7.1). Queueing the messages is the caller's job; :meth:`mark_sent` then removes
the evaluations that were reported.
"""

import dataclasses
import functools
import gzip
import ipaddress
import json
import re
import secrets
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email import policy as _email_policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from xml.etree import ElementTree as ET

from twisted.internet import defer
from twisted.logger import Logger

from moxtw.dmarcrpt import evalschema
from moxtw.db import Database
from moxtw.reportdb import from_unix, to_unix
from moxtw.dmarcrpt.parse import (
    AuthResults, DateRange, DKIMAuthResult, Feedback, Identifiers, PolicyEvaluated,
    PolicyOverrideReason, PolicyPublished, Record, ReportMetadata, Row, SPFAuthResult,
)
from moxtw.dns.base import normalize
from moxtw.dns.types import DNSError, NoRecords, NotFound, TemporaryFailure
from moxtw.smtp.address import AddressError, parse_address

log = Logger(namespace="moxtw.dmarcrpt")

DB_NAME = "dmarceval.db"
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


def _dmarc_result(value):
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
        add(ev, "dkim", _dmarc_result(pe.dkim))
        add(ev, "spf", _dmarc_result(pe.spf))
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


def _policy_json(pp, policy_domain):
    if isinstance(pp, PolicyPublished):
        out = dataclasses.asdict(pp)
    else:
        known = {f.name for f in dataclasses.fields(PolicyPublished)}
        out = {k: v for k, v in dict(pp).items() if k in known}
    if not out.get("domain"):
        out["domain"] = policy_domain
    for key in ("adkim", "aspf", "p", "sp"):
        out[key] = str(out.get(key) or "").lower()
    return out


def _evaluation(r):
    return Evaluation(
        id=r["id"],
        policy_domain=r["policy_domain"],
        evaluated=from_unix(r["evaluated"]),
        interval_hours=r["interval_hours"],
        addresses=tuple(json.loads(r["addresses"])),
        policy_published=PolicyPublished(**json.loads(r["policy_published"])),
        source_ip=r["source_ip"],
        disposition=r["disposition"],
        dkim_aligned=r["dkim_aligned"],
        spf_aligned=r["spf_aligned"],
        reasons=tuple(tuple(x) for x in json.loads(r["reasons"])),
        envelope_to=r["envelope_to"],
        envelope_from=r["envelope_from"],
        header_from=r["header_from"],
        dkim_results=tuple(tuple(x) for x in json.loads(r["dkim_results"])),
        spf_results=tuple(tuple(x) for x in json.loads(r["spf_results"])),
    )


def _suppression_entry(entry):
    entry = entry.strip().lower()
    if entry.startswith("mailto:"):
        entry = entry[len("mailto:"):]
    if not entry or entry.startswith("@") or entry.endswith("@"):
        raise ValueError(f"invalid suppression entry {entry!r}")
    if "@" in entry:
        addr = parse_address(entry)
        return addr.ascii_domain().lower()
    return normalize(entry)


def _is_suppressed(dest, entries):
    address = dest.address.lower()
    domain = dest.domain.lower()
    for entry in entries:
        if "@" in entry:
            if entry == address:
                return True
        elif domain == entry or domain.endswith("." + entry):
            return True
    return False


class EvaluationStore(Database):
    """DMARC evaluations and the report suppression list (``data/dmarceval.db``).

    ``open()`` before use, ``close()`` at the end; all methods return Deferreds. ``clock``
    (an ``IReactorTime``) gives the default evaluation time."""

    db_name = DB_NAME
    schema = evalschema
    thread_name = "dmarceval"

    # -- evaluations

    def add_evaluation(self, policy_domain, policy_published, source_ip, disposition,
                       dkim_aligned, spf_aligned, header_from, envelope_from="",
                       envelope_to="", dkim_results=(), spf_results=(), rua=(),
                       ri=DEFAULT_INTERVAL, reasons=(), evaluated=None):
        """Record the DMARC evaluation of one incoming message.

        ``policy_domain``: where the DMARC record was found; ``policy_published``: a
        :class:`PolicyPublished` (or dict) of that record; ``disposition``: none,
        quarantine or reject as applied; ``dkim_aligned``/``spf_aligned``: "pass"/"fail"
        (or bool) for the aligned results; ``header_from``, ``envelope_from`` (MAIL FROM
        domain, "" for the null sender), ``envelope_to``: domains; ``dkim_results``:
        ``(domain, selector, result[, human_result])`` per signature; ``spf_results``:
        ``(domain, scope, result)`` with scope helo/mfrom; ``rua``: the record's rua URIs;
        ``ri``: its interval in seconds; ``reasons``: ``(type, comment)`` overrides;
        ``evaluated``: aware datetime, default now.

        Deferred[int | None]: the evaluation's id; None (nothing stored) without rua."""
        try:
            addresses = [u.strip() for u in rua if u and u.strip()]
            if not addresses:
                return defer.succeed(None)
            dkim = []
            for t in dkim_results:
                t = tuple(t)
                if len(t) == 3:
                    t = t + ("",)
                sig_domain, selector, result, human = t
                dkim.append([str(sig_domain), str(selector or ""), str(result).lower(),
                             str(human or "")])
            spf = [[str(d), str(s or "mfrom").lower(), str(r).lower()] for d, s, r in spf_results]
            row = {
                "policy_domain": (domain := normalize(policy_domain)),
                "evaluated": to_unix(evaluated if evaluated is not None else self.now()),
                "interval_hours": interval_hours(ri),
                "addresses": json.dumps(addresses),
                "policy_published": json.dumps(_policy_json(policy_published, domain)),
                "source_ip": str(source_ip),
                "disposition": str(disposition).lower(),
                "dkim_aligned": _dmarc_result(dkim_aligned),
                "spf_aligned": _dmarc_result(spf_aligned),
                "reasons": json.dumps([[str(t).lower(), str(c or "")] for t, c in reasons]),
                "envelope_to": str(envelope_to or "").lower(),
                "envelope_from": str(envelope_from or "").lower(),
                "header_from": str(header_from).lower(),
                "dkim_results": json.dumps(dkim),
                "spf_results": json.dumps(spf),
            }
        except Exception:
            return defer.fail()
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        values = list(row.values())
        return self._write(lambda conn: conn.execute(
            f"INSERT INTO evaluation ({names}) VALUES ({marks})", values).lastrowid)

    def evaluations(self, domain=None, begin=None, end=None):
        """Stored evaluations, oldest first: of ``domain`` if given, evaluated in
        [``begin``, ``end``) if given. Deferred[list[Evaluation]]."""
        where, args = [], []
        if domain is not None:
            where.append("policy_domain = ?")
            args.append(normalize(domain))
        if begin is not None:
            where.append("evaluated >= ?")
            args.append(to_unix(begin))
        if end is not None:
            where.append("evaluated < ?")
            args.append(to_unix(end))
        sql = "SELECT * FROM evaluation"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        return self._read(lambda conn: [_evaluation(r) for r in conn.execute(sql, args)])

    def remove_evaluations(self, domain):
        """Remove all evaluations of a policy domain. Deferred[int]: how many."""
        name = normalize(domain)
        return self._write(lambda conn: conn.execute(
            "DELETE FROM evaluation WHERE policy_domain = ?", (name,)).rowcount)

    def due_reports(self, now=None):
        """Reporting periods that have ended by ``now`` (aware datetime, default the
        clock) and have evaluations, per policy domain, oldest first. A domain's most
        recent evaluation decides its interval and destinations. Deferred[list[DueReport]]."""
        now_ts = to_unix(now if now is not None else self.now())

        def due(conn):
            out = []
            latest = conn.execute(
                "SELECT e.policy_domain, e.interval_hours, e.addresses FROM evaluation e"
                " JOIN (SELECT MAX(id) AS id FROM evaluation GROUP BY policy_domain) m"
                " ON e.id = m.id ORDER BY e.policy_domain").fetchall()
            for domain, hours, addresses in latest:
                secs = hours * 3600
                slots = conn.execute(
                    "SELECT CAST(evaluated / ? AS INTEGER) AS slot, COUNT(*), MAX(id)"
                    " FROM evaluation WHERE policy_domain = ? GROUP BY slot ORDER BY slot",
                    (secs, domain)).fetchall()
                for slot, count, max_id in slots:
                    begin = slot * secs
                    if begin + secs > now_ts:
                        continue
                    out.append(DueReport(
                        domain=domain, begin=from_unix(begin), end=from_unix(begin + secs),
                        interval_hours=hours, addresses=tuple(json.loads(addresses)),
                        evaluations=count, last_evaluation_id=max_id))
            out.sort(key=lambda d: (d.begin, d.domain))
            return out

        return self._read(due)

    def compose_report(self, domain, begin, end, org_name, reporter_email, report_id,
                       extra_contact_info="", last_evaluation_id=None):
        """The aggregate report XML (bytes) of ``domain`` for evaluations in [``begin``,
        ``end``) (aware datetimes or Unix seconds), up to ``last_evaluation_id`` if given;
        the report's date_range ends at ``end`` - 1 s, the last second covered.
        ``org_name``, ``reporter_email``, ``extra_contact_info``: report_metadata.
        Deferred[bytes]; fails with ValueError when there are no evaluations."""
        d = self.evaluations(domain, begin, end)

        def composed(evaluations):
            if last_evaluation_id is not None:
                # As mark_sent removes: evaluations stored after due_reports wait.
                evaluations = [e for e in evaluations if e.id <= last_evaluation_id]
            if not evaluations:
                raise ValueError(f"no evaluations for {domain} in this period")
            feedback = Feedback(
                version=REPORT_VERSION,
                report_metadata=ReportMetadata(
                    org_name=org_name, email=reporter_email, report_id=report_id,
                    date_range=DateRange(int(to_unix(begin)), int(to_unix(end)) - 1),
                    extra_contact_info=extra_contact_info or ""),
                # The record as last seen in the period.
                policy_published=evaluations[-1].policy_published,
                records=aggregate(evaluations),
            )
            return feedback_xml(feedback)

        return d.addCallback(composed)

    def mark_sent(self, report):
        """Remove the evaluations reported in ``report`` (an :class:`OutgoingReport` or
        :class:`DueReport`) after the caller queued it. Deferred[int]: how many."""
        args = (report.domain, to_unix(report.begin), to_unix(report.end),
                report.last_evaluation_id)
        return self._write(lambda conn: conn.execute(
            "DELETE FROM evaluation WHERE policy_domain = ? AND evaluated >= ?"
            " AND evaluated < ? AND id <= ?", args).rowcount)

    def prepare_reports(self, now, resolver, org_name, reporter_email, receiver=None,
                        extra_contact_info="", make_report_id=None):
        """Compose the messages of all due reports (see :meth:`due_reports`), everything
        short of queueing them. Deferred[list[OutgoingReport]].

        ``org_name`` is the Submitter (RFC 7489 7.2.1.1: a domain, e.g. our host name),
        ``reporter_email`` the From address, ``receiver`` the first part of the file
        name (default: the domain of ``reporter_email``). ``make_report_id(due_report)``
        may supply report IDs (letters, digits, dots, dashes).

        Destinations on the suppression list, outside the policy domain's
        organizational domain without a confirming DNS record (RFC 7489 7.1), or with a
        size limit below the message are left out; periods without any destination
        left have their evaluations removed here. A period whose DNS check failed
        temporarily is left for a later call (for up to TEMPFAIL_RETRY)."""
        return defer.Deferred.fromCoroutine(self._prepare_reports(
            now, resolver, org_name, reporter_email, receiver, extra_contact_info,
            make_report_id))

    async def _prepare_reports(self, now, resolver, org_name, reporter_email, receiver,
                               extra_contact_info, make_report_id):
        now = from_unix(to_unix(now))
        if receiver is None:
            receiver = reporter_email.rpartition("@")[2].lower()
        due = await self.due_reports(now)
        suppressed = [s.entry for s in await self.suppressions(now)]
        out = []
        for report in due:
            destinations = await self._destinations(report, resolver, suppressed, now)
            if destinations is None:
                continue  # temporary DNS failure: try again later
            if not destinations:
                log.info("no allowed destinations for dmarc report about {domain}, "
                         "dropping {n} evaluations", domain=report.domain, n=report.evaluations)
                await self.mark_sent(report)
                continue
            report_id = make_report_id(report) if make_report_id else (
                f"{int(to_unix(report.begin))}.{secrets.token_hex(6)}")
            xml = await self.compose_report(report.domain, report.begin, report.end, org_name,
                                            reporter_email, report_id, extra_contact_info,
                                            report.last_evaluation_id)
            gz = gzip_report(xml)

            def message(dests):
                return compose_message(
                    reporter_email, [d.address for d in dests], report.domain, org_name,
                    report_id, int(to_unix(report.begin)), int(to_unix(report.end)) - 1, gz,
                    receiver, date=now)

            msg = message(destinations)
            # RFC 7489 6.2: no report larger than a destination's size limit.
            fitting = [d for d in destinations if d.max_size is None or len(msg) <= d.max_size]
            if not fitting:
                log.info("dmarc report about {domain} too large for its destinations, "
                         "dropping {n} evaluations", domain=report.domain, n=report.evaluations)
                await self.mark_sent(report)
                continue
            if len(fitting) != len(destinations):
                msg = message(fitting)
            out.append(OutgoingReport(
                to_addresses=tuple(d.address for d in fitting), message_bytes=msg,
                domain=report.domain, mail_from=reporter_email, report_id=report_id,
                begin=report.begin, end=report.end,
                last_evaluation_id=report.last_evaluation_id))
        return out

    async def _destinations(self, report, resolver, suppressed, now):
        """Allowed destinations of a due report; None to try again later."""
        seen = set()
        dests = []
        for uri in report.addresses:
            dest = parse_rua(uri)
            if dest is None or dest.address.lower() in seen:
                continue
            seen.add(dest.address.lower())
            dests.append(dest)
            if len(dests) >= MAX_DESTINATIONS:
                break
        allowed = []
        for dest in dests:
            if _is_suppressed(dest, suppressed):
                continue
            if organizational_domain(dest.domain) != organizational_domain(report.domain):
                try:
                    ok = await external_destination_allowed(resolver, report.domain, dest.domain)
                except TemporaryFailure:
                    if now - report.end < TEMPFAIL_RETRY:
                        return None
                    ok = False
                except Exception:
                    log.failure("checking external dmarc report destination {dest}",
                                dest=dest.address)
                    ok = False
                if not ok:
                    log.info("external destination {dest} does not accept dmarc reports "
                             "about {domain}", dest=dest.address, domain=report.domain)
                    continue
            allowed.append(dest)
        return allowed

    # -- suppression list

    def add_suppression(self, entry, until=None, comment=""):
        """Suppress reports to an address (``dmarc@example.org``) or a domain with its
        subdomains (``example.org``), until ``until`` (aware datetime) or removal. An
        existing entry is replaced. Deferred[str]: the normalised entry."""
        try:
            key = _suppression_entry(entry)
            row = (key, to_unix(self.now()), None if until is None else to_unix(until),
                   str(comment))
        except Exception:
            return defer.fail()

        def insert(conn):
            conn.execute("INSERT OR REPLACE INTO suppression (entry, created, until, comment)"
                         " VALUES (?, ?, ?, ?)", row)
            return key

        return self._write(insert)

    def remove_suppression(self, entry):
        """Remove an entry from the suppression list. Deferred[bool]: whether it existed."""
        try:
            key = _suppression_entry(entry)
        except Exception:
            return defer.fail()
        return self._write(lambda conn: conn.execute(
            "DELETE FROM suppression WHERE entry = ?", (key,)).rowcount > 0)

    def suppressions(self, now=None):
        """The suppression list, by entry; with ``now``, only entries in force then.
        Deferred[list[Suppression]]."""
        sql = "SELECT * FROM suppression"
        args = []
        if now is not None:
            sql += " WHERE until IS NULL OR until > ?"
            args.append(to_unix(now))
        sql += " ORDER BY entry"

        def read(conn):
            return [Suppression(entry=r["entry"], created=from_unix(r["created"]),
                                until=None if r["until"] is None else from_unix(r["until"]),
                                comment=r["comment"])
                    for r in conn.execute(sql, args)]

        return self._read(read)
