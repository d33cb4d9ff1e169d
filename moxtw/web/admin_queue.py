"""What the admin pages show and do about the queue, the reports and the DNSBLs (mox's
admin "Queue", "DMARC", "TLS reports" and "DNSBL" pages); ``moxtw.web.admin`` only routes.

:class:`QueueReports` works on the queue (``moxtw.queue``: list with filters; hold,
unhold, reschedule, fail with a DSN to the sender as ``moxtw queue fail`` does (RFC 3464),
drop; a message's raw data, bounded), on the hold rules of domains.toml (QueueHoldRules:
new messages matching a rule start on hold), on the report stores of
``moxtw.reports.service.ReportsService`` (received DMARC aggregate reports, RFC 7489 7.2;
the evaluations kept for our outgoing ones; received SMTP TLS reports, RFC 8460) and on
the DNSBL lookups of ``moxtw.dnsbl`` (RFC 5782) for our listener IPs.

Everything here comes from strangers at some point (report fields, envelope addresses,
subjects): values are returned as plain data and only rendered by autoescaping
templates or JSON; input from the admin is checked and bounded (:class:`HTTPError` 400).
"""

import ipaddress
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import tomlkit
from twisted.internet import defer, threads
from twisted.logger import Logger

from moxtw import dnsbl
from moxtw.admin import configedit
from moxtw.ctl import CtlError, parse_time
from moxtw.dnsblmonitor import monitored_zones
from moxtw.queue.model import EntryNotFound
from moxtw.smtp.address import parse_domain
from moxtw.web.base import HTTPError

log = Logger(namespace="moxtw.web")

ACTIONS = ("hold", "unhold", "reschedule", "fail", "drop")
MAX_LISTED = 500  # queue entries on a page or in an API answer
MAX_FILTER = 256  # characters of one filter field
MAX_RAW = 1024 * 1024  # bytes of a message shown by the raw view
MAX_REPORTS = 1000  # reports read for a summary
MAX_DAYS = 366
MAX_DNSBL_LOOKUPS = 200
FILTER_FIELDS = ("sender", "recipient", "domain", "held", "older", "newer")
FAIL_REASON = "delivery failed by the administrator"


@dataclass(frozen=True)
class QueueFilter:
    """Queue entries to list or act on. ``sender``/``recipient``: substrings of the
    addresses (case-insensitive); ``domain``: the recipient domain or a parent of it;
    ``held``: True, False or None (either); ``older``/``newer``: durations ("1h", "2d")
    the entry was queued at least/less than ago."""

    sender: str = ""
    recipient: str = ""
    domain: str = ""
    held: bool | None = None
    older: str = ""
    newer: str = ""

    def empty(self):
        return self == QueueFilter()

    def query(self):
        """The filter as form fields (for links and hidden fields)."""
        out = {k: getattr(self, k) for k in ("sender", "recipient", "domain", "older", "newer")
               if getattr(self, k)}
        if self.held is not None:
            out["held"] = "yes" if self.held else "no"
        return out


def _duration(text, name):
    """Seconds of "90s", "30m", "1h", "2d" (also with a leading "+")."""
    text = text.strip()
    if not text:
        return None
    now = datetime(2000, 1, 1, tzinfo=timezone.utc)
    try:
        if not text.lstrip("+")[-1:].isalpha():
            raise CtlError("no unit")
        return (parse_time(text if text.startswith("+") else "+" + text, now) - now).total_seconds()
    except (CtlError, OverflowError, ValueError):
        raise HTTPError(400, f"{name}: a duration like 30m, 1h or 2d") from None


def parse_filter(fields):
    """A :class:`QueueFilter` from form or query fields; HTTPError 400 for bad values."""
    values = {}
    for key in FILTER_FIELDS:
        value = fields.get(key, "")
        if not isinstance(value, str) or len(value) > MAX_FILTER:
            raise HTTPError(400, f"{key}: at most {MAX_FILTER} characters")
        values[key] = value.strip()
    held = {"": None, "any": None, "yes": True, "1": True, "true": True, "no": False, "0": False,
            "false": False}.get(values["held"].lower(), "bad")
    if held == "bad":
        raise HTTPError(400, "held: yes, no or any")
    domain = values["domain"].lower().rstrip(".")
    if domain:
        try:
            domain = parse_domain(domain).unicode
        except Exception:
            raise HTTPError(400, "domain: not a valid domain name") from None
    for key in ("older", "newer"):
        _duration(values[key], key)
    return QueueFilter(sender=values["sender"], recipient=values["recipient"], domain=domain, held=held,
                       older=values["older"], newer=values["newer"])


def _matches(entry, f, now):
    if f.sender and f.sender.lower() not in entry.sender.lower():
        return False
    if f.recipient and f.recipient.lower() not in entry.recipient.lower():
        return False
    if f.domain:
        d = entry.recipient_domain.lower()
        if d != f.domain and not d.endswith("." + f.domain):
            return False
    age = (now - entry.queued).total_seconds()
    older, newer = _duration(f.older, "older"), _duration(f.newer, "newer")
    if older is not None and age < older:
        return False
    if newer is not None and age >= newer:
        return False
    return True


def entry_json(e):
    """A queue entry as shown: the fields of ``GET /admin/api/queue``."""
    return {"id": e.id, "from": e.sender, "to": e.recipient, "account": e.sender_account,
            "attempts": e.attempts, "queued": e.queued.isoformat(), "next_attempt": e.next_attempt.isoformat(),
            "hold": e.hold, "last_error": e.last_error, "size": e.size, "subject": e.subject,
            "message_id": e.message_id, "is_dsn": e.is_dsn}


def _utc_day(t):
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d")


class QueueReports:
    """The queue, hold rules, reports and DNSBL status for the admin pages.

    ``current() -> (static, dynamic)``; ``config_dir`` holds domains.toml (hold rules are
    changed there with ``moxtw.admin.configedit``); ``reload_config()`` makes the running
    server use the changed file at once. ``reports``: the ReportsService (None: no
    report pages). ``now()``: an aware datetime (tests)."""

    def __init__(self, queue, queue_service, reports, resolver, current, config_dir, reload_config=None,
                 now=None):
        self.queue = queue
        self.queue_service = queue_service
        self.reports = reports
        self.resolver = resolver
        self.current = current
        self.config_dir = config_dir
        self.reload_config = reload_config
        self._now = now or (lambda: datetime.now(timezone.utc))

    def now(self):
        return self._now()

    # -- queue

    async def entries(self, f):
        """(matching entries, at most MAX_LISTED, by id; total matching)."""
        kw = {} if f.held is None else {"hold": f.held}
        now = self.now()
        matching = [e for e in await self.queue.list(**kw) if _matches(e, f, now)]
        return matching[:MAX_LISTED], len(matching)

    async def list(self, f):
        shown, total = await self.entries(f)
        return {"entries": [entry_json(e) for e in shown], "total": total, "filter": f.query()}

    async def act(self, action, ids, f, fields):
        """Do ``action`` on the entries ``ids`` (a list, or None for all matching ``f``;
        a changing action on the whole queue needs the field all=yes). Returns a dict
        with the ``count`` of entries changed."""
        if action not in ACTIONS:
            raise HTTPError(404, "not found")
        if ids is None:
            if f.empty() and fields.get("all") not in ("yes", "1", "true"):
                raise HTTPError(400, "no filter given: select messages, set a filter, or pass all=yes")
            kw = {} if f.held is None else {"hold": f.held}
            now = self.now()
            entries = [e for e in await self.queue.list(**kw) if _matches(e, f, now)]
        else:
            entries = []
            for i in ids:
                try:
                    entries.append(await self.queue.get(i))
                except EntryNotFound:
                    pass  # delivered or removed meanwhile: not counted
        idlist = [e.id for e in entries]
        out = {}
        if action == "hold":
            n = await self.queue.hold(idlist)
        elif action == "unhold":
            n = await self.queue.unhold(idlist)
        elif action == "reschedule":
            when = self._when(fields.get("when", ""))
            n = await self.queue.schedule(idlist, when)
            out["next_attempt"] = when.isoformat()
        elif action == "drop":
            n = await self.queue.drop(idlist)
        else:
            if self.queue_service is None:
                raise HTTPError(503, "queue service not running")
            reason = (fields.get("reason") or "").strip()[:200] or FAIL_REASON
            # RFC 3464: a failure DSN to the sender where wanted, then the entries go.
            n = len(await self.queue_service.fail(entries, reason))
        if action in ("unhold", "reschedule") and self.queue_service is not None and self.queue_service.running:
            self.queue_service.kick()
        log.info("web admin queue {action}", action=action, ids=",".join(map(str, idlist[:100])), count=n)
        out["count"] = n
        return out

    def _when(self, text):
        """Next attempt of a reschedule: "now" (or empty) or a duration from now."""
        text = (text or "").strip()
        if text in ("", "now"):
            return self.now()
        try:
            return self.now() + timedelta(seconds=_duration(text, "when"))
        except OverflowError:  # valid from 2000 (the check of _duration), beyond year 9999 from now
            raise HTTPError(400, "when: too far in the future") from None

    async def raw(self, id):
        """(message bytes, at most MAX_RAW; whether cut off) of queue entry ``id``."""
        try:
            entry = await self.queue.get(id)
        except EntryNotFound:
            raise HTTPError(404, "no such queue entry") from None

        def read():
            with self.queue.open_message(entry) as f:
                data = entry.msg_prefix + f.read(MAX_RAW + 1)
            return data[:MAX_RAW], len(data) > MAX_RAW

        try:
            return await threads.deferToThread(read)
        except FileNotFoundError:
            raise HTTPError(404, "message file gone (delivered meanwhile?)") from None

    # -- hold rules (domains.toml QueueHoldRules)

    def hold_rules(self):
        _, dynamic = self.current()
        return [{"index": i, "account": r.Account, "sender_domain": str(r.SenderDomain or ""),
                 "recipient_domain": str(r.RecipientDomain or "")}
                for i, r in enumerate(dynamic.QueueHoldRules)]

    async def add_hold_rule(self, fields):
        rule = {}
        for key, name in (("account", "Account"), ("sender_domain", "SenderDomain"),
                          ("recipient_domain", "RecipientDomain")):
            value = (fields.get(key) or "").strip()
            if len(value) > MAX_FILTER:
                raise HTTPError(400, f"{key}: at most {MAX_FILTER} characters")
            if value and key != "account":
                try:
                    value = parse_domain(value.lower().rstrip(".")).unicode
                except Exception:
                    raise HTTPError(400, f"{key}: not a valid domain name") from None
            if value:
                rule[name] = value
        _, dynamic = self.current()
        if "Account" in rule and rule["Account"] not in dynamic.Accounts:
            raise HTTPError(400, "account: no such account")
        if not rule and fields.get("all") not in ("yes", "1", "true"):
            raise HTTPError(400, "an empty rule holds every new message: pass all=yes to mean it")

        def change(doc, cfg):
            if "QueueHoldRules" not in doc:
                doc["QueueHoldRules"] = tomlkit.aot()
            rules = doc["QueueHoldRules"]
            # [[QueueHoldRules]] tables, or an array written as "QueueHoldRules = [...]":
            # that one gets an inline table (a table in it would not be TOML).
            table = tomlkit.table() if isinstance(rules, tomlkit.items.AoT) else tomlkit.inline_table()
            for k, v in rule.items():
                table[k] = v
            rules.append(table)
            return len(cfg.dynamic.QueueHoldRules)

        index = await self._edit(change)
        log.info("web admin hold rule added", rule=json.dumps(rule))
        return {"index": index}

    async def remove_hold_rule(self, fields):
        text = fields.get("index", "")
        if not (isinstance(text, str) and text.isascii() and text.isdigit() and len(text) < 6):
            raise HTTPError(400, "index: the number of a hold rule")
        index = int(text)
        expected = fields.get("rule")  # what the page showed, so a changed list is noticed

        def change(doc, cfg):
            rules = cfg.dynamic.QueueHoldRules
            if index >= len(rules) or "QueueHoldRules" not in doc:
                raise configedit.EditError("no such hold rule (the list changed?)")
            r = rules[index]
            if expected is not None and expected != _rule_key(r):
                raise configedit.EditError("the hold rules changed meanwhile: reload the page")
            del doc["QueueHoldRules"][index]
            return index

        await self._edit(change)
        log.info("web admin hold rule removed", index=index)
        return {"removed": index}

    async def _edit(self, change):
        try:
            result = await threads.deferToThread(configedit.apply, self.config_dir, change)
        except configedit.EditError as e:
            # File names relative to the config directory (as the other admin pages show them).
            text = str(e).replace(os.path.join(self.config_dir, ""), "") if self.config_dir else str(e)
            raise HTTPError(400, text) from None
        if self.reload_config is not None:
            self.reload_config()
        return result

    # -- reports

    def _stores(self):
        if self.reports is None:
            raise HTTPError(404, "reports are not kept by this server")
        return self.reports

    async def _ready(self):
        await self._stores().when_ready()

    def _days(self, fields):
        text = fields.get("days", "") or "30"
        # The length first: int() of more than 4300 digits raises ValueError.
        if not (isinstance(text, str) and len(text) < 4 and text.isascii() and text.isdigit()
                and 0 < int(text) <= MAX_DAYS):
            raise HTTPError(400, f"days: 1 to {MAX_DAYS}")
        return int(text)

    @staticmethod
    def _domain(fields):
        text = (fields.get("domain") or "").strip().lower().rstrip(".")
        if len(text) > MAX_FILTER:
            raise HTTPError(400, f"domain: at most {MAX_FILTER} characters")
        return text or None

    async def dmarc_summary(self, fields):
        """Received DMARC aggregate reports (RFC 7489 7.2) of the last ``days``, per
        domain and UTC day of their period's start: reports, messages, DMARC pass/fail
        counts (RFC 7489 3.1: aligned DKIM or SPF pass), disposition counts, sources."""
        days, domain = self._days(fields), self._domain(fields)
        await self._ready()
        start = self.now() - timedelta(days=days)
        stored = await self.reports.dmarc.list(domain=domain, start=start, limit=MAX_REPORTS)
        groups = {}
        for s in stored:
            g = groups.setdefault((s.domain, _utc_day(s.begin)), {
                "domain": s.domain, "day": _utc_day(s.begin), "reports": [], "messages": 0, "pass": 0,
                "fail": 0, "dispositions": {}, "sources": {}, "orgs": []})
            g["reports"].append({"id": s.id, "org": s.org_name, "report_id": s.report_id,
                                 "begin": s.begin.isoformat(), "end": s.end.isoformat()})
            if s.org_name not in g["orgs"]:
                g["orgs"].append(s.org_name)
            for rec in s.report.records:
                row = rec.row
                n = row.count
                g["messages"] += n
                pe = row.policy_evaluated
                if "pass" in (pe.dkim, pe.spf):
                    g["pass"] += n
                else:
                    g["fail"] += n
                disp = pe.disposition or "none"
                g["dispositions"][disp] = g["dispositions"].get(disp, 0) + n
                g["sources"][row.source_ip] = g["sources"].get(row.source_ip, 0) + n
        out = sorted(groups.values(), key=lambda g: (g["day"], g["domain"]), reverse=True)
        for g in out:
            g["source_count"] = len(g["sources"])
            g["sources"] = [{"ip": ip, "messages": n} for ip, n in
                            sorted(g["sources"].items(), key=lambda x: (-x[1], x[0]))[:20]]
        domains = [{"domain": d, "reports": n, "newest": end.isoformat()}
                   for d, n, end in await self.reports.dmarc.domains()]
        return {"days": days, "domain": domain or "", "groups": out, "domains": domains,
                "truncated": len(stored) >= MAX_REPORTS}

    async def dmarc_report(self, fields):
        s = await self._get_report(self.reports and self.reports.dmarc, fields)
        fb = s.report
        md, pp = fb.report_metadata, fb.policy_published
        records = []
        for rec in fb.records[:1000]:
            row, pe = rec.row, rec.row.policy_evaluated
            records.append({
                "source_ip": row.source_ip, "count": row.count, "disposition": pe.disposition,
                "dkim": pe.dkim, "spf": pe.spf,
                "reasons": [{"type": r.type, "comment": r.comment} for r in pe.reasons],
                "header_from": rec.identifiers.header_from, "envelope_from": rec.identifiers.envelope_from,
                "envelope_to": rec.identifiers.envelope_to,
                "dkim_results": [{"domain": d.domain, "selector": d.selector, "result": d.result}
                                 for d in rec.auth_results.dkim],
                "spf_results": [{"domain": x.domain, "scope": x.scope, "result": x.result}
                                for x in rec.auth_results.spf]})
        return {"id": s.id, "domain": s.domain, "from": s.from_address, "received": s.received.isoformat(),
                "org": md.org_name, "email": md.email, "report_id": md.report_id,
                "begin": s.begin.isoformat(), "end": s.end.isoformat(), "errors": list(md.errors),
                "policy": {"domain": pp.domain, "adkim": pp.adkim, "aspf": pp.aspf, "p": pp.p, "sp": pp.sp,
                           "pct": pp.pct, "fo": pp.fo},
                "records": records, "records_total": len(fb.records)}

    async def _get_report(self, db, fields):
        self._stores()
        text = fields.get("id", "")
        if not (isinstance(text, str) and text.isascii() and text.isdigit() and len(text) < 19):
            raise HTTPError(400, "id: the number of a report")
        await self._ready()
        s = await db.get(int(text))
        if s is None:
            raise HTTPError(404, "no such report")
        return s

    async def evaluations(self, fields):
        """The DMARC evaluations of incoming mail kept for our outgoing aggregate reports
        (RFC 7489 7.2), per policy domain; with ``domain``, also its evaluations (newest
        first, at most 200)."""
        domain = self._domain(fields)
        await self._ready()
        pending = await self.reports.evaluations.pending()
        out = {"domains": [dict(p, first=p["first"].isoformat(), last=p["last"].isoformat()) for p in pending],
               "domain": domain or "", "evaluations": []}
        if domain:
            evs = await self.reports.evaluations.evaluations(domain=domain)
            out["evaluations"] = [{"evaluated": e.evaluated.isoformat(), "source_ip": e.source_ip,
                                   "disposition": e.disposition, "dkim": e.dkim_aligned, "spf": e.spf_aligned,
                                   "header_from": e.header_from, "envelope_from": e.envelope_from,
                                   "envelope_to": e.envelope_to} for e in reversed(evs[-200:])]
        return out

    async def tls_summary(self, fields):
        """Received SMTP TLS reports (RFC 8460 4.4) of the last ``days``, per policy domain
        and UTC day: reports, successful and failed sessions, failures by result type."""
        days, domain = self._days(fields), self._domain(fields)
        await self._ready()
        start = self.now() - timedelta(days=days)
        stored = await self.reports.tlsrpt.list(start=start, limit=MAX_REPORTS)
        groups = {}
        for s in stored:
            for result in s.report.policies:
                pd = (result.policy.domain or s.domain).lower()
                if domain and pd != domain:
                    continue
                g = groups.setdefault((pd, _utc_day(s.begin)), {
                    "domain": pd, "day": _utc_day(s.begin), "reports": [], "success": 0, "failure": 0,
                    "failures": {}, "policy_types": []})
                if not any(r["id"] == s.id for r in g["reports"]):
                    g["reports"].append({"id": s.id, "org": s.org_name, "report_id": s.report_id})
                g["success"] += result.summary.total_successful_session_count
                g["failure"] += result.summary.total_failure_session_count
                if result.policy.type not in g["policy_types"]:
                    g["policy_types"].append(result.policy.type)
                for fd in result.failure_details:
                    g["failures"][fd.result_type] = g["failures"].get(fd.result_type, 0) + fd.failed_session_count
        out = sorted(groups.values(), key=lambda g: (g["day"], g["domain"]), reverse=True)
        for g in out:
            g["failures"] = [{"result_type": k, "sessions": n} for k, n in
                             sorted(g["failures"].items(), key=lambda x: (-x[1], x[0]))]
        return {"days": days, "domain": domain or "", "groups": out, "truncated": len(stored) >= MAX_REPORTS}

    async def tls_report(self, fields):
        s = await self._get_report(self.reports and self.reports.tlsrpt, fields)
        r = s.report
        return {"id": s.id, "domain": s.domain, "from": s.from_address, "received": s.received.isoformat(),
                "org": r.organization_name, "contact": r.contact_info, "report_id": r.report_id,
                "begin": s.begin.isoformat(), "end": s.end.isoformat(),
                "policies": [{
                    "type": p.policy.type, "domain": p.policy.domain, "string": list(p.policy.string)[:50],
                    "mx_host": list(p.policy.mx_host)[:50],
                    "success": p.summary.total_successful_session_count,
                    "failure": p.summary.total_failure_session_count,
                    "failure_details": [{
                        "result_type": d.result_type, "sessions": d.failed_session_count,
                        "sending_mta_ip": d.sending_mta_ip, "receiving_mx_hostname": d.receiving_mx_hostname,
                        "receiving_mx_helo": d.receiving_mx_helo, "receiving_ip": d.receiving_ip,
                        "additional_information": d.additional_information,
                        "failure_reason_code": d.failure_reason_code} for d in p.failure_details[:200]],
                } for p in r.policies[:100]]}

    # -- DNSBL status

    def listener_ips(self):
        """IPs of the listeners with SMTP (NATIPs where set), whether public or not."""
        static, _ = self.current()
        ips = []
        for lst in static.Listeners.values():
            if not lst.SMTP.Enabled:
                continue
            for text in (lst.NATIPs or lst.IPs):
                ip = ipaddress.ip_address(str(text))
                if not ip.is_unspecified and str(ip) not in ips:
                    ips.append(str(ip))
        return ips

    async def dnsbl_status(self):
        """For each zone of MonitorDNSBLs and of the SMTP listeners' DNSBLs and each of our
        listener IPs: is it listed (RFC 5782 2.1: an A record in 127/8 at the reversed IP
        under the zone; the TXT record says why). Lookups run in parallel."""
        static, dynamic = self.current()
        zones, ips = monitored_zones(static, dynamic), self.listener_ips()
        pairs = [(z, ip) for z in zones for ip in ips][:MAX_DNSBL_LOOKUPS]

        async def one(zone, ip):
            try:
                r = await dnsbl.lookup(self.resolver, zone, ip)
            except Exception as e:
                return {"zone": zone, "ip": ip, "status": "temperror", "name": "", "codes": [],
                        "reason": str(e)[:200] or type(e).__name__}
            return {"zone": r.zone, "ip": r.ip, "status": r.status, "name": r.name, "codes": list(r.codes),
                    "reason": r.reason}

        results = await defer.gatherResults([defer.Deferred.fromCoroutine(one(z, ip)) for z, ip in pairs])
        for r in results:
            r["public"] = ipaddress.ip_address(r["ip"]).is_global
        return {"zones": zones, "ips": ips, "results": results}


def _rule_key(r):
    """A hold rule as text, to check that the rule removed is the one shown."""
    return "|".join([r.Account, str(r.SenderDomain or ""), str(r.RecipientDomain or "")])


def rule_key(rule):
    return "|".join([rule["account"], rule["sender_domain"], rule["recipient_domain"]])


__all__ = ["ACTIONS", "MAX_RAW", "QueueFilter", "QueueReports", "entry_json", "parse_filter", "rule_key"]
