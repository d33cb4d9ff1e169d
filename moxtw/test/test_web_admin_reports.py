"""The admin report pages and API: DMARC aggregate reports (RFC 7489 7.2) and SMTP TLS
reports (RFC 8460) received over real SMTP at the domain's reporting addresses, the DMARC
evaluations kept for our outgoing reports (recorded for that incoming mail, the reporter
publishing rua in the loopback DNS), summaries per domain and day, report details, and
markup from strangers (org names, failure details) escaped. Also the report stores' query
functions the pages use (``ReportDB.domains``, ``EvaluationStore.pending``)."""

import gzip
import json
import smtplib
import time
from datetime import datetime, timedelta, timezone

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from moxtw.reports.dmarc import received as dmarcdb
from moxtw.reports.dmarc.evaluations import EvaluationStore
from moxtw.reports.dmarc.parse import parse_feedback
from moxtw.test import test_dmarcrpt, test_tlsrpt
from moxtw.test.test_web_admin_queue import AdminQueueTestBase

HOSTILE_ORG = "<script>alert('org')</script> Reporter & Co"


def dmarc_xml(begin, org=HOSTILE_ORG, report_id="r1", domain="example.org"):
    rec = ("<record><row><source_ip>{ip}</source_ip><count>{n}</count><policy_evaluated>"
           "<disposition>{disp}</disposition><dkim>{dkim}</dkim><spf>{spf}</spf></policy_evaluated></row>"
           "<identifiers><header_from>example.org</header_from></identifiers><auth_results><spf>"
           "<domain>example.org</domain><result>{spf}</result></spf></auth_results></record>")
    records = (rec.format(ip="192.0.2.1", n=5, disp="none", dkim="pass", spf="pass")
               + rec.format(ip="198.51.100.7", n=3, disp="reject", dkim="fail", spf="fail")
               + rec.format(ip="192.0.2.1", n=2, disp="none", dkim="fail", spf="pass"))
    org_xml = org.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<feedback><report_metadata><org_name>{org_xml}</org_name>'
            f"<email>dmarc@reporter.example</email><report_id>{report_id}</report_id><date_range>"
            f"<begin>{begin}</begin><end>{begin + 86399}</end></date_range></report_metadata>"
            f"<policy_published><domain>{domain}</domain><p>reject</p></policy_published>{records}"
            "</feedback>").encode()


def tls_json(start, org=HOSTILE_ORG):
    day = datetime.fromtimestamp(start, timezone.utc).strftime("%Y-%m-%d")
    report = json.loads(json.dumps(test_tlsrpt.RFC_EXAMPLE))
    report["organization-name"] = org
    report["date-range"] = {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"}
    report["policies"][0]["policy"]["policy-domain"] = "example.org"
    report["policies"][0]["policy"]["mx-host"] = ["mail.example.org"]
    report["policies"][0]["failure-details"][0]["additional-information"] = "<img src=x onerror=alert(2)>"
    return json.dumps(report).encode()


class ReportsMixin:
    # The reporter asks for DMARC aggregate reports: its message's evaluation is kept.
    extra_dns = {("_dmarc.reporter.example", "TXT"): ["v=DMARC1; p=none; rua=mailto:dmarc@reporter.example"]}

    def deliver(self, rcpt, msg):
        def send():
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=30) as s:
                s.ehlo("mx.reporter.example")
                return s.sendmail("noreply@reporter.example", [rcpt], msg)

        return threads.deferToThread(send)

    @defer.inlineCallbacks
    def wait_for(self, fn):
        deadline = time.monotonic() + 20
        while True:
            value = yield fn()
            if value or time.monotonic() > deadline:
                return value
            yield task.deferLater(reactor, 0.05, lambda: None)


class ReportPagesTests(ReportsMixin, AdminQueueTestBase):
    @defer.inlineCallbacks
    def test_dmarc_reports_received_over_smtp(self):
        begin = int(time.time()) - 2 * 86400
        begin -= begin % 86400
        msg = test_dmarcrpt.report_message(
            [("application/gzip", "reporter.example!example.org!1.xml.gz", gzip.compress(dmarc_xml(begin)))],
            from_addr="noreply@reporter.example")
        yield self.deliver("dmarc-reports@example.org", msg)
        [stored] = yield self.wait_for(lambda: self.root.reports.dmarc.list())
        self.assertEqual(stored.org_name, HOSTILE_ORG)
        day = datetime.fromtimestamp(begin, timezone.utc).strftime("%Y-%m-%d")
        r, content = yield self.get("/api/reports/dmarc")
        self.assertEqual(r.code, 200, content)
        d = json.loads(content)
        [g] = d["groups"]
        self.assertEqual((g["domain"], g["day"], g["messages"], g["pass"], g["fail"]), ("example.org", day, 10, 7, 3))
        self.assertEqual(g["dispositions"], {"none": 7, "reject": 3})
        self.assertEqual(g["sources"], [{"ip": "192.0.2.1", "messages": 7}, {"ip": "198.51.100.7", "messages": 3}])
        self.assertEqual(g["orgs"], [HOSTILE_ORG])
        self.assertEqual([x["domain"] for x in d["domains"]], ["example.org"])
        r, content = yield self.get("/api/reports/dmarc?domain=other.example")
        self.assertEqual(json.loads(content)["groups"], [])
        # The page and the report's page: markup from the reporter escaped.
        for path in ("/reports/dmarc", f"/reports/dmarc/report?id={stored.id}"):
            r, content = yield self.get(path)
            self.assertEqual(r.code, 200, path)
            self.assertIn(b"&lt;script&gt;alert(&#39;org&#39;)&lt;/script&gt; Reporter &amp; Co", content)
            self.assertNotIn(b"<script>alert", content)
        self.assertIn(b"198.51.100.7", content)
        r, content = yield self.get(f"/api/reports/dmarc/report?id={stored.id}")
        rep = json.loads(content)
        self.assertEqual((rep["org"], rep["policy"]["p"], len(rep["records"])), (HOSTILE_ORG, "reject", 3))
        # The reporter's own message was evaluated for our outgoing reports to it.
        r, content = yield self.get("/api/reports/evaluations")
        [p] = json.loads(content)["domains"]
        self.assertEqual((p["domain"], p["evaluations"], p["addresses"]),
                         ("reporter.example", 1, ["mailto:dmarc@reporter.example"]))
        r, content = yield self.get("/reports/evaluations?domain=reporter.example")
        self.assertEqual(r.code, 200)
        self.assertIn(b"reporter.example", content)
        self.assertIn(b'id="domain-evaluations"', content)

    @defer.inlineCallbacks
    def test_tls_reports_received_over_smtp(self):
        start = int(time.time()) - 86400
        msg = test_tlsrpt.report_message([("application/tlsrpt+gzip", "r.json.gz", gzip.compress(tls_json(start)))],
                                         from_addr="noreply@reporter.example")
        yield self.deliver("tls-reports@example.org", msg)
        [stored] = yield self.wait_for(lambda: self.root.reports.tlsrpt.list())
        r, content = yield self.get("/api/reports/tls")
        self.assertEqual(r.code, 200, content)
        [g] = json.loads(content)["groups"]
        self.assertEqual((g["domain"], g["success"], g["failure"]), ("example.org", 5326, 303))
        self.assertEqual(g["failures"][0], {"result_type": "starttls-not-supported", "sessions": 200})
        for path in ("/reports/tls", f"/reports/tls/report?id={stored.id}"):
            r, content = yield self.get(path)
            self.assertEqual(r.code, 200, path)
            self.assertIn(b"&lt;script&gt;alert(&#39;org&#39;)&lt;/script&gt;", content)
            self.assertNotIn(b"<script>alert", content)
        self.assertIn(b"&lt;img src=x onerror=alert(2)&gt;", content)
        self.assertNotIn(b"<img src=x", content)
        self.assertIn(b"certificate-expired", content)
        r, content = yield self.get(f"/api/reports/tls/report?id={stored.id}")
        rep = json.loads(content)
        self.assertEqual(len(rep["policies"][0]["failure_details"]), 3)

    @defer.inlineCallbacks
    def test_hostile_and_missing(self):
        for path, code in (("/api/reports/dmarc/report?id=999", 404), ("/api/reports/dmarc/report?id=x", 400),
                           ("/api/reports/tls/report?id=" + "9" * 40, 400), ("/reports/tls/report?id=%ff", 400),
                           ("/api/reports/dmarc?days=0", 400), ("/api/reports/dmarc?days=100000", 400),
                           ("/api/reports/tls?domain=" + "d" * 1000, 400), ("/reports/dmarc?days=-1", 400),
                           ("/api/reports/dmarc/report", 400)):
            r, content = yield self.get(path)
            self.assertEqual(r.code, code, (path, content))
        # A domain with markup is shown escaped (it matches nothing).
        r, content = yield self.get("/reports/tls?domain=%3Cb%3Ex")
        self.assertEqual(r.code, 200)
        self.assertIn(b"&lt;b&gt;x", content)
        self.assertNotIn(b"<b>x", content)
        # Empty stores.
        for path in ("/reports/dmarc", "/reports/tls", "/reports/evaluations"):
            r, content = yield self.get(path)
            self.assertEqual(r.code, 200, path)


class StoreQueryTests(unittest.TestCase):
    """The query functions the report pages added to the stores."""

    @defer.inlineCallbacks
    def test_dmarc_domains(self):
        db = dmarcdb.ReportDB(self.mktemp())
        yield db.open()
        self.addCleanup(db.close)
        self.assertEqual((yield db.domains()), [])
        for i, (domain, begin) in enumerate((("b.example", 1_790_000_000), ("a.example", 1_790_000_000),
                                             ("b.example", 1_790_100_000))):
            fb = parse_feedback(dmarc_xml(begin, org="Org", report_id=f"id{i}", domain=domain))
            yield db.add(fb, "r@reporter.example", domain)
        got = yield db.domains()
        self.assertEqual([(d, n) for d, n, _ in got], [("a.example", 1), ("b.example", 2)])
        self.assertEqual(got[1][2], datetime.fromtimestamp(1_790_100_000 + 86399, timezone.utc))

    @defer.inlineCallbacks
    def test_pending_evaluations(self):
        store = EvaluationStore(self.mktemp())
        yield store.open()
        self.addCleanup(store.close)
        self.assertEqual((yield store.pending()), [])
        t0 = datetime(2026, 9, 1, tzinfo=timezone.utc)
        policy = {"domain": "example.org", "p": "reject"}
        for i, (dkim, spf) in enumerate((("pass", "fail"), ("fail", "fail"), ("fail", "pass"))):
            yield store.add_evaluation("example.org", policy, "192.0.2.1", "none", dkim, spf, "example.org",
                                       rua=["mailto:a@example.org"], evaluated=t0 + timedelta(hours=i))
        yield store.add_evaluation("other.example", policy, "192.0.2.2", "none", "pass", "pass", "other.example",
                                   rua=["mailto:b@other.example"], ri=3600, evaluated=t0)
        yield store.add_evaluation("no-rua.example", policy, "192.0.2.2", "none", "pass", "pass",
                                   "no-rua.example", rua=[], evaluated=t0)  # not kept
        got = yield store.pending()
        self.assertEqual([(p["domain"], p["evaluations"], p["pass"], p["fail"], p["interval_hours"]) for p in got],
                         [("example.org", 3, 2, 1, 24), ("other.example", 1, 1, 0, 1)])
        self.assertEqual((got[0]["first"], got[0]["last"]), (t0, t0 + timedelta(hours=2)))
        self.assertEqual(got[0]["addresses"], ["mailto:a@example.org"])
