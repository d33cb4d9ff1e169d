"""The DMARC evaluations of incoming mail, kept for outgoing aggregate reports (RFC 7489 7.2).

Every DMARC evaluation of an incoming message for a domain whose record asks for
aggregate reports (``rua``) is stored in ``data/dmarceval.db`` (:class:`EvaluationStore`),
with the suppression list of report destinations. :meth:`EvaluationStore.prepare_reports`
turns the evaluations of ended periods into report messages (composed by
``moxtw.reports.dmarc.outgoing``); :meth:`EvaluationStore.mark_sent` removes the
evaluations that were reported once the messages are queued.
"""

import dataclasses
import json
import secrets

from twisted.internet import defer
from twisted.logger import Logger

from moxtw.db import Database
from moxtw.dns.base import normalize
from moxtw.dns.types import TemporaryFailure
from moxtw.reports.dmarc import evalschema
from moxtw.reports.dmarc.outgoing import (
    DEFAULT_INTERVAL,
    MAX_DESTINATIONS,
    REPORT_VERSION,
    TEMPFAIL_RETRY,
    DueReport,
    Evaluation,
    OutgoingReport,
    Suppression,
    aggregate,
    aligned_result,
    compose_message,
    external_destination_allowed,
    feedback_xml,
    gzip_report,
    interval_hours,
    organizational_domain,
    parse_rua,
)
from moxtw.reports.dmarc.parse import DateRange, Feedback, PolicyPublished, ReportMetadata
from moxtw.reports.received import from_unix, to_unix
from moxtw.smtp.address import parse_address

log = Logger(namespace="moxtw.reports.dmarc")

DB_NAME = "dmarceval.db"


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
                "dkim_aligned": aligned_result(dkim_aligned),
                "spf_aligned": aligned_result(spf_aligned),
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

    def pending(self):
        """What the stored evaluations would report, per policy domain, by domain: dicts
        with ``domain``, ``evaluations``, ``first``/``last`` (aware datetimes),
        ``interval_hours`` and ``addresses`` (of the newest evaluation), and the counts of
        DMARC ``pass``/``fail`` (RFC 7489 3.1: pass when DKIM or SPF is aligned and
        passes). Deferred[list[dict]]."""
        def q(conn):
            out = []
            rows = conn.execute(
                "SELECT policy_domain, COUNT(*), MIN(evaluated), MAX(evaluated), MAX(id),"
                " SUM(dkim_aligned = 'pass' OR spf_aligned = 'pass')"
                " FROM evaluation GROUP BY policy_domain ORDER BY policy_domain").fetchall()
            for domain, count, first, last, max_id, passed in rows:
                hours, addresses = conn.execute(
                    "SELECT interval_hours, addresses FROM evaluation WHERE id = ?", (max_id,)).fetchone()
                out.append({"domain": domain, "evaluations": count, "first": from_unix(first),
                            "last": from_unix(last), "interval_hours": hours,
                            "addresses": json.loads(addresses), "pass": passed or 0,
                            "fail": count - (passed or 0)})
            return out

        return self._read(q)

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
