"""Tests for moxtw.reports.tls.parse and moxtw.reports.tls.received: incoming SMTP TLS reports (RFC 8460).

The fixture reports in moxtw/test/data/ follow the shapes Google and Microsoft send.
Hostile input has its own test case class, HostileInputTests.
"""

import gzip
import json
import os
import sqlite3
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage

from twisted.internet import defer, task
from twisted.trial import unittest

from moxtw.reports.tls import received as rptdb
from moxtw.reports.tls import parse
from moxtw.reports.tls.parse import Report, ReportError, parse_message, parse_report

DATA = os.path.join(os.path.dirname(__file__), "data")
T0 = 1_790_150_000  # 2026-09-23T07:53:20Z
UTC = timezone.utc

# RFC 8460 4.4's example report (with the RFC's spacing in additional-information).
RFC_EXAMPLE = {
    "organization-name": "Company-X",
    "date-range": {"start-datetime": "2016-04-01T00:00:00Z",
                   "end-datetime": "2016-04-01T23:59:59Z"},
    "contact-info": "sts-reporting@company-x.example",
    "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
    "policies": [{
        "policy": {
            "policy-type": "sts",
            "policy-string": ["version: STSv1", "mode: testing",
                              "mx: *.mail.company-y.example", "max_age: 86400"],
            "policy-domain": "company-y.example",
            "mx-host": ["*.mail.company-y.example"],
        },
        "summary": {"total-successful-session-count": 5326,
                    "total-failure-session-count": 303},
        "failure-details": [
            {"result-type": "certificate-expired", "sending-mta-ip": "2001:db8:abcd:0012::1",
             "receiving-mx-hostname": "mx1.mail.company-y.example", "failed-session-count": 100},
            {"result-type": "starttls-not-supported", "sending-mta-ip": "2001:db8:abcd:0013::1",
             "receiving-mx-hostname": "mx2.mail.company-y.example",
             "receiving-ip": "203.0.113.56", "failed-session-count": 200,
             "additional-information": "https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported"},
            {"result-type": "validation-failure", "sending-mta-ip": "198.51.100.62",
             "receiving-ip": "203.0.113.58",
             "receiving-mx-hostname": "mx-backup.mail.company-y.example",
             "failed-session-count": 3, "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"},
        ],
    }],
}


def fixture(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


def report_message(attachments, from_addr="noreply-smtp-tls-reporting@google.com"):
    """An RFC 8460 5.3 shaped message: multipart/report; report-type="tlsrpt"."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = from_addr
    msg["To"] = "tls-reports@example.org"
    msg["Subject"] = "Report Domain: example.org Submitter: google.com Report-ID: <x>"
    msg["TLS-Report-Domain"] = "example.org"
    msg["TLS-Report-Submitter"] = "google.com"
    msg.set_content("This is an aggregate TLS report from google.com")
    for ctype, filename, data in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    msg.replace_header("Content-Type", msg["Content-Type"].replace(
        "multipart/mixed", 'multipart/report; report-type="tlsrpt"'))
    return msg.as_bytes()


def doc(value):
    return json.dumps(value).encode()


def with_change(change):
    value = json.loads(json.dumps(RFC_EXAMPLE))
    change(value)
    return doc(value)


class ReportTests(unittest.SynchronousTestCase):

    def test_rfc_example(self):
        r = parse_report(doc(RFC_EXAMPLE))
        self.assertEqual(r.organization_name, "Company-X")
        self.assertEqual(r.contact_info, "sts-reporting@company-x.example")
        self.assertEqual(r.report_id, "5065427c-23d3-47ca-b6e0-946ea0e8c4be")
        self.assertEqual(r.date_range.start, datetime(2016, 4, 1, tzinfo=UTC))
        self.assertEqual(r.date_range.end, datetime(2016, 4, 1, 23, 59, 59, tzinfo=UTC))
        (res,) = r.policies
        self.assertEqual(res.policy.type, "sts")
        self.assertEqual(res.policy.domain, "company-y.example")
        self.assertEqual(res.policy.mx_host, ["*.mail.company-y.example"])
        self.assertEqual(len(res.policy.string), 4)
        self.assertEqual(res.summary, parse.Summary(5326, 303))
        self.assertEqual([d.result_type for d in res.failure_details],
                         ["certificate-expired", "starttls-not-supported", "validation-failure"])
        self.assertEqual(res.failure_details[1].receiving_ip, "203.0.113.56")
        self.assertEqual(res.failure_details[2].failure_reason_code,
                         "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED")
        self.assertEqual(r.domains(), ["company-y.example"])

    def test_google(self):
        r = parse_report(fixture("tlsrpt-google.json"))
        self.assertEqual(r.organization_name, "Google Inc.")
        self.assertEqual(r.contact_info, "smtp-tls-reporting@google.com")
        (res,) = r.policies
        self.assertEqual(res.policy.type, "sts")
        self.assertEqual(res.policy.mx_host, [])
        self.assertEqual(res.summary.total_successful_session_count, 118)
        (fd,) = res.failure_details
        self.assertEqual((fd.result_type, fd.failed_session_count, fd.receiving_mx_hostname),
                         ("certificate-expired", 2, "mail.example.org"))

    def test_microsoft(self):
        r = parse_report(fixture("tlsrpt-microsoft.json"))
        self.assertEqual(r.organization_name, "Microsoft Corporation")
        tlsa, nopolicy = r.policies
        self.assertEqual(tlsa.policy.type, "tlsa")
        self.assertEqual(tlsa.policy.mx_host, ["mail.example.org"])
        self.assertEqual(tlsa.failure_details, [])
        self.assertEqual(nopolicy.policy.type, "no-policy-found")
        # mx-host as a plain string, as some reporters send it.
        self.assertEqual(nopolicy.policy.mx_host, ["mx.sub.example.org"])
        fd = nopolicy.failure_details[0]
        self.assertEqual(fd.receiving_mx_helo, "mx.sub.example.org")
        self.assertEqual(fd.additional_information, "https://aka.ms/tlsrpt")
        self.assertEqual(r.domains(), ["example.org", "sub.example.org"])

    def test_gzip(self):
        data = fixture("tlsrpt-microsoft.json")
        self.assertEqual(parse_report(gzip.compress(data)), parse_report(data))

    def test_json_round_trip(self):
        for data in (doc(RFC_EXAMPLE), fixture("tlsrpt-google.json"), fixture("tlsrpt-microsoft.json")):
            r = parse_report(data)
            again = Report.from_json(json.loads(json.dumps(r.to_json())))
            self.assertEqual(again, r)
        self.assertEqual(parse_report(doc(RFC_EXAMPLE)).to_json()["policies"][0]["failure-details"][0],
                         RFC_EXAMPLE["policies"][0]["failure-details"][0])

    def test_time_offsets(self):
        r = parse_report(with_change(lambda v: v["date-range"].update({
            "start-datetime": "2016-04-01T02:00:00+02:00",
            "end-datetime": "2016-04-01T23:59:59.999Z"})))
        self.assertEqual(r.date_range.start, datetime(2016, 4, 1, tzinfo=UTC))
        self.assertEqual(r.date_range.end.second, 59)

    def test_lenient(self):
        """Missing contact-info, summary or failure-details are tolerated; policy types
        and result types are lower-cased."""
        def change(v):
            del v["contact-info"]
            p = v["policies"][0]
            del p["summary"]
            p["policy"]["policy-type"] = "STS"
            p["failure-details"][0]["result-type"] = "Certificate-Expired"
        r = parse_report(with_change(change))
        self.assertEqual(r.contact_info, "")
        self.assertEqual(r.policies[0].summary, parse.Summary(0, 0))
        self.assertEqual(r.policies[0].policy.type, "sts")
        self.assertEqual(r.policies[0].failure_details[0].result_type, "certificate-expired")

    def test_bom(self):
        data = b"\xef\xbb\xbf" + fixture("tlsrpt-google.json")
        self.assertEqual(parse_report(data).organization_name, "Google Inc.")


class MessageTests(unittest.SynchronousTestCase):

    def test_google_tlsrpt_gzip(self):
        data = fixture("tlsrpt-google.json")
        msg = report_message([("application/tlsrpt+gzip",
                               "google.com!example.org!1790035200!1790121599!001.json.gz",
                               gzip.compress(data))])
        self.assertEqual(parse_message(msg), parse_report(data))

    def test_microsoft_tlsrpt_gzip(self):
        data = fixture("tlsrpt-microsoft.json")
        msg = report_message([("application/tlsrpt+gzip",
                               "microsoft.com!example.org!1790035200!1790121599.json.gz",
                               gzip.compress(data))], from_addr="tlsrpt-noreply@microsoft.com")
        self.assertEqual(parse_message(msg).organization_name, "Microsoft Corporation")

    def test_tlsrpt_json(self):
        msg = report_message([("application/tlsrpt+json", "report.json", doc(RFC_EXAMPLE))])
        self.assertEqual(parse_message(msg).organization_name, "Company-X")

    def test_octet_stream_by_name(self):
        msg = report_message([("application/octet-stream", "r.json.gz",
                               gzip.compress(doc(RFC_EXAMPLE)))])
        self.assertEqual(parse_message(msg).organization_name, "Company-X")

    def test_no_report(self):
        self.assertIsNone(parse_message(report_message([])))
        self.assertIsNone(parse_message(report_message([("image/png", "x.png", b"\x89PNG")])))

    def test_malformed_raises(self):
        msg = report_message([("application/tlsrpt+gzip", "r.json.gz", b"\x1f\x8b\x08\x00garbage")])
        e = self.assertRaises(ReportError, parse_message, msg)
        self.assertIn("r.json.gz", str(e))

    def test_bad_then_good(self):
        msg = report_message([("application/tlsrpt+json", "bad.json", b"{"),
                              ("application/tlsrpt+json", "good.json", doc(RFC_EXAMPLE))])
        self.assertEqual(parse_message(msg).organization_name, "Company-X")


class HostileInputTests(unittest.SynchronousTestCase):
    """Reports are untrusted: every problem ends in ReportError, quickly."""

    def test_gzip_bomb(self):
        bomb = gzip.compress(b"{" + b" " * (parse.MAX_REPORT_SIZE + 10))
        self.assertLess(len(bomb), 100_000)
        e = self.assertRaises(ReportError, parse_report, bomb)
        self.assertIn("larger than", str(e))

    def test_plain_too_large(self):
        self.assertRaises(ReportError, parse_report, doc(RFC_EXAMPLE), 100)

    def test_truncated_gzip(self):
        data = gzip.compress(fixture("tlsrpt-microsoft.json"))
        for cut in (2, 10, len(data) // 2, len(data) - 1):
            self.assertRaises(ReportError, parse_report, data[:cut])

    def test_not_json(self):
        for data in (b"", b"<feedback/>", b"{", b"[]", b"null", b"42", b'"x"', b"\x00\x01"):
            self.assertRaises(ReportError, parse_report, data)

    def test_deep_nesting(self):
        e = self.assertRaises(ReportError, parse_report, b"[" * 200_000 + b"]" * 200_000)
        self.assertIn("deep", str(e))

    def test_nan_infinity(self):
        for constant in ("NaN", "Infinity", "-Infinity"):
            data = doc(RFC_EXAMPLE).replace(b"5326", constant.encode())
            self.assertRaises(ReportError, parse_report, data)

    def test_invalid_utf8(self):
        data = doc(RFC_EXAMPLE).replace(b"Company-X", b"Company-\xff")
        e = self.assertRaises(ReportError, parse_report, data)
        self.assertIn("UTF-8", str(e))

    def test_huge_and_wrong_counts(self):
        for value in (2**63, -1, 10**400, 1.5, True, "12", [1], 1e300):
            def change(v, value=value):
                v["policies"][0]["summary"]["total-successful-session-count"] = value
            e = self.assertRaises(ReportError, parse_report, with_change(change))
            self.assertIn("total-successful-session-count", str(e))
        data = doc(RFC_EXAMPLE).replace(b"5326", b"9" * 5000)
        self.assertRaises(ReportError, parse_report, data)

    def test_wrong_types(self):
        changes = [
            lambda v: v.update({"policies": {}}),
            lambda v: v.update({"policies": ["x"]}),
            lambda v: v.update({"date-range": "yesterday"}),
            lambda v: v.update({"organization-name": 5}),
            lambda v: v["policies"][0].update({"policy": None}),
            lambda v: v["policies"][0].update({"failure-details": {}}),
            lambda v: v["policies"][0].update({"failure-details": [5]}),
            lambda v: v["policies"][0]["policy"].update({"mx-host": [1]}),
            lambda v: v["policies"][0]["policy"].update({"policy-string": {"a": 1}}),
        ]
        for change in changes:
            self.assertRaises(ReportError, parse_report, with_change(change))

    def test_missing_required(self):
        changes = [
            lambda v: v.pop("organization-name"),
            lambda v: v.pop("report-id"),
            lambda v: v.pop("date-range"),
            lambda v: v.pop("policies"),
            lambda v: v["date-range"].pop("end-datetime"),
            lambda v: v["policies"][0]["policy"].pop("policy-domain"),
            lambda v: v["policies"][0]["policy"].pop("policy-type"),
            lambda v: v["policies"][0]["failure-details"][0].pop("result-type"),
            lambda v: v.update({"report-id": "  "}),
        ]
        for change in changes:
            self.assertRaises(ReportError, parse_report, with_change(change))

    def test_bad_times(self):
        for value in ("yesterday", "2016-13-01T00:00:00Z", "", "2016-04-01T25:00:00Z"):
            def change(v, value=value):
                v["date-range"]["start-datetime"] = value
            self.assertRaises(ReportError, parse_report, with_change(change))

    def test_too_many_policies(self):
        def change(v):
            v["policies"] = v["policies"] * (parse.MAX_POLICIES + 1)
        self.assertRaises(ReportError, parse_report, with_change(change))


class ReportDBTests(unittest.TestCase):
    """moxtw.reports.tls.received: storing received reports in data/tlsrpt.db."""

    @defer.inlineCallbacks
    def setUp(self):
        self.data_dir = self.mktemp()
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.db = rptdb.ReportDB(self.data_dir, clock=self.clock)
        yield self.db.open()
        self.addCleanup(self.db.close)

    @defer.inlineCallbacks
    def test_add_get(self):
        r = parse_report(fixture("tlsrpt-microsoft.json"))
        id = yield self.db.add(r, "tlsrpt-noreply@microsoft.com", "example.org")
        stored = yield self.db.get(id)
        self.assertEqual(stored.report, r)
        self.assertEqual(stored.org_name, "Microsoft Corporation")
        self.assertEqual(stored.report_id, "133713600000000000+example.org")
        self.assertEqual(stored.domain, "example.org")
        self.assertEqual(stored.from_address, "tlsrpt-noreply@microsoft.com")
        self.assertEqual(stored.begin, datetime(2026, 9, 22, tzinfo=UTC))
        self.assertEqual(stored.end, datetime(2026, 9, 22, 23, 59, 59, tzinfo=UTC))
        self.assertEqual(stored.received, datetime.fromtimestamp(T0, UTC))
        none = yield self.db.get(id + 1)
        self.assertIsNone(none)

    @defer.inlineCallbacks
    def test_duplicates_and_list(self):
        g = parse_report(fixture("tlsrpt-google.json"))
        a = yield self.db.add(g, "g@google.com", "example.org")
        b = yield self.db.add(g, "g@google.com", "example.org")
        self.assertEqual(a, b)
        c = yield self.db.add(parse_report(doc(RFC_EXAMPLE)), "x@company-x.example",
                              "company-y.example")
        all_ = yield self.db.list()
        self.assertEqual([s.id for s in all_], [a, c])
        mine = yield self.db.list(domain="COMPANY-Y.example")
        self.assertEqual([s.id for s in mine], [c])
        old = yield self.db.list(end=datetime(2020, 1, 1, tzinfo=UTC))
        self.assertEqual([s.id for s in old], [c])
        recent = yield self.db.list(start=datetime(2026, 9, 22, 12, tzinfo=UTC))
        self.assertEqual([s.id for s in recent], [a])
        removed = yield self.db.remove(c)
        self.assertTrue(removed)
        all_ = yield self.db.list()
        self.assertEqual([s.id for s in all_], [a])

    @defer.inlineCallbacks
    def test_persistent_and_wal(self):
        id = yield self.db.add(parse_report(fixture("tlsrpt-google.json")), "g@google.com",
                               "example.org")
        yield self.db.close()
        conn = sqlite3.connect(os.path.join(self.data_dir, "tlsrpt.db"))
        try:
            self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")
            self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], rptdb.schema.LATEST)
            stored_json = json.loads(conn.execute("SELECT report FROM report").fetchone()[0])
            self.assertEqual(stored_json["organization-name"], "Google Inc.")  # RFC 8460 names
        finally:
            conn.close()
        db = rptdb.ReportDB(self.data_dir, clock=self.clock)
        yield db.open()
        self.addCleanup(db.close)
        stored = yield db.get(id)
        self.assertEqual(stored.report.organization_name, "Google Inc.")
