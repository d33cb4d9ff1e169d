"""Tests for moxtw.reports.dmarc.parse and moxtw.reports.dmarc.received: incoming DMARC aggregate reports.

The fixture reports in moxtw/test/data/ are written in the shapes large reporters send
(Google, Outlook.com, Yahoo, Mail.Ru, a DMARCbis-namespaced one). Hostile input has its
own test case class, HostileInputTests.
"""

import base64
import gzip
import io
import os
import sqlite3
import zipfile
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage

from twisted.internet import defer, task
from twisted.trial import unittest

from moxtw.reports.dmarc import received as rptdb
from moxtw.reports.dmarc import parse
from moxtw.reports.dmarc.parse import Feedback, ReportError, parse_feedback, parse_message

DATA = os.path.join(os.path.dirname(__file__), "data")
T0 = 1_790_150_000  # 2026-09-23T07:53:20Z, after the reports' period


def fixture(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


def zipped(name, data, compression=zipfile.ZIP_DEFLATED):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def report_message(attachments, subject="Report Domain: example.org Submitter: google.com",
                   from_addr="noreply-dmarc-support@google.com", body="DMARC report attached."):
    """An email message with a text part and ``attachments``: (content type, filename,
    data) tuples."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = from_addr
    msg["To"] = "dmarc-reports@example.org"
    msg["Subject"] = subject
    msg["Message-ID"] = "<report.1@example.com>"
    msg.set_content(body)
    for ctype, filename, data in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def minimal_report(record="", metadata_extra="", root="feedback", count="1", prolog=""):
    rec = record or (
        "<record><row><source_ip>192.0.2.1</source_ip><count>" + count + "</count>"
        "<policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf>"
        "</policy_evaluated></row><identifiers><header_from>example.org</header_from>"
        "</identifiers><auth_results><spf><domain>example.org</domain><result>pass</result>"
        "</spf></auth_results></record>")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n{prolog}<{root}><report_metadata>'
        "<org_name>Example</org_name><email>r@example.com</email><report_id>1</report_id>"
        f"<date_range><begin>1790035200</begin><end>1790121599</end></date_range>{metadata_extra}"
        "</report_metadata><policy_published><domain>example.org</domain><p>none</p>"
        f"</policy_published>{rec}</{root}>"
    ).encode()


class ProviderReportTests(unittest.SynchronousTestCase):
    """Reports in the shapes of large reporters parse into the expected values."""

    def test_google(self):
        fb = parse_feedback(fixture("dmarc-google.xml"))
        md = fb.report_metadata
        self.assertEqual((md.org_name, md.email, md.report_id),
                         ("google.com", "noreply-dmarc-support@google.com", "17532088215472910364"))
        self.assertEqual(md.extra_contact_info, "https://support.google.com/a/answer/2466580")
        self.assertEqual((md.date_range.begin, md.date_range.end), (1790035200, 1790121599))
        self.assertEqual(md.errors, [])
        self.assertEqual(fb.version, "")
        pp = fb.policy_published
        self.assertEqual((pp.domain, pp.adkim, pp.aspf, pp.p, pp.sp, pp.pct, pp.fo),
                         ("example.org", "r", "r", "reject", "reject", 100, ""))
        self.assertEqual(fb.domain, "example.org")
        self.assertEqual(len(fb.records), 2)
        r0, r1 = fb.records
        self.assertEqual((r0.row.source_ip, r0.row.count), ("192.0.2.25", 14))
        pe = r0.row.policy_evaluated
        self.assertEqual((pe.disposition, pe.dkim, pe.spf, pe.reasons), ("none", "pass", "pass", []))
        self.assertEqual(r0.identifiers.header_from, "example.org")
        self.assertEqual(r0.identifiers.envelope_from, "")
        self.assertEqual(r0.auth_results.dkim,
                         [parse.DKIMAuthResult("example.org", "pass", "2026a", "")])
        self.assertEqual(r0.auth_results.spf, [parse.SPFAuthResult("example.org", "pass", "")])
        self.assertEqual((r1.row.source_ip, r1.row.count), ("2001:db8:4860::1b", 2))
        self.assertEqual(r1.row.policy_evaluated.disposition, "reject")
        self.assertEqual(r1.auth_results.dkim, [])
        self.assertEqual(r1.auth_results.spf[0].result, "softfail")

    def test_microsoft(self):
        fb = parse_feedback(fixture("dmarc-microsoft.xml"))
        self.assertEqual(fb.version, "1.0")
        md = fb.report_metadata
        self.assertEqual((md.org_name, md.email), ("Outlook.com", "dmarcreport@microsoft.com"))
        pp = fb.policy_published
        self.assertEqual((pp.adkim, pp.aspf, pp.p, pp.sp, pp.pct, pp.fo),
                         ("s", "r", "quarantine", "none", 50, "1"))
        r0, r1 = fb.records
        self.assertEqual(r0.identifiers, parse.Identifiers(
            header_from="example.org", envelope_from="example.org", envelope_to="outlook.com"))
        self.assertEqual(r0.auth_results.spf, [parse.SPFAuthResult("example.org", "pass", "mfrom")])
        self.assertEqual(r1.row.policy_evaluated.reasons, [
            parse.PolicyOverrideReason("sampled_out", ""),
            parse.PolicyOverrideReason("local_policy", "arc=pass as.1.arc.example=pass"),
        ])
        self.assertEqual([d.domain for d in r1.auth_results.dkim],
                         ["example.org", "lists.example.net"])
        self.assertEqual(r1.auth_results.dkim[0].human_result, "body hash did not verify")
        self.assertEqual(r1.identifiers.envelope_to, "hotmail.com")

    def test_yahoo(self):
        fb = parse_feedback(fixture("dmarc-yahoo.xml"))
        self.assertEqual(fb.report_metadata.org_name, "Yahoo")
        self.assertEqual(fb.report_metadata.report_id, "1790035200.853246")
        pp = fb.policy_published
        self.assertEqual((pp.p, pp.sp, pp.pct), ("none", "", 100))  # no <sp>
        self.assertEqual(fb.records[0].auth_results.dkim[0].selector, "2026a")

    def test_mailru(self):
        fb = parse_feedback(fixture("dmarc-mailru.xml"))
        self.assertEqual(fb.report_metadata.org_name, "Mail.Ru")
        self.assertEqual(fb.report_metadata.extra_contact_info, "http://help.mail.ru/mail-help")
        self.assertEqual(fb.records[0].row.count, 5)
        self.assertEqual(fb.records[0].auth_results.dkim[0].selector, "")

    def test_dmarcbis_namespace(self):
        """The DMARC 2.0 namespace and DMARCbis-only elements (np, testing, generator,
        extensions) are accepted; the unknown ones are ignored."""
        fb = parse_feedback(fixture("dmarc-dmarcbis.xml"))
        md = fb.report_metadata
        self.assertEqual(md.org_name, "mx.example.net")
        self.assertEqual(md.errors, ["record for 203.0.113.5 truncated"])
        self.assertEqual(fb.policy_published.aspf, "s")
        self.assertIsNone(fb.policy_published.pct)
        rec = fb.records[0]
        self.assertEqual(rec.row.policy_evaluated.reasons,
                         [parse.PolicyOverrideReason("mailing_list", "list.example.net")])
        self.assertEqual([(s.domain, s.scope, s.result) for s in rec.auth_results.spf], [
            ("bounce.example.com", "mfrom", "pass"), ("out.example.com", "helo", "none")])

    def test_namespaces(self):
        """With or without a namespace, default or prefixed, the same report."""
        plain = parse_feedback(minimal_report())
        for ns in ("urn:ietf:params:xml:ns:dmarc-2.0", "http://dmarc.org/dmarc-xml/0.1"):
            doc = minimal_report().replace(b"<feedback>", f'<feedback xmlns="{ns}">'.encode())
            self.assertEqual(parse_feedback(doc), plain)
        doc = minimal_report().decode()
        doc = doc.replace("<feedback>", '<d:feedback xmlns:d="urn:ietf:params:xml:ns:dmarc-2.0">')
        doc = doc.replace("</feedback>", "</d:feedback>")
        self.assertEqual(parse_feedback(doc.encode()), plain)

    def test_tokens_lowercased(self):
        doc = minimal_report().replace(b"<p>none</p>", b"<p>Reject</p><adkim>R</adkim>")
        doc = doc.replace(b"<dkim>pass</dkim>", b"<dkim>PASS</dkim>")
        fb = parse_feedback(doc)
        self.assertEqual((fb.policy_published.p, fb.policy_published.adkim), ("reject", "r"))
        self.assertEqual(fb.records[0].row.policy_evaluated.dkim, "pass")

    def test_junk_pct_ignored(self):
        for pct in (b"150", b"100%", b"", b"-1"):
            doc = minimal_report().replace(b"<p>none</p>", b"<p>none</p><pct>" + pct + b"</pct>")
            self.assertIsNone(parse_feedback(doc).policy_published.pct)

    def test_whitespace_around_values(self):
        doc = minimal_report(count="\n   42  \n")
        self.assertEqual(parse_feedback(doc).records[0].row.count, 42)

    def test_json_round_trip(self):
        for name in ("dmarc-google.xml", "dmarc-microsoft.xml", "dmarc-dmarcbis.xml"):
            fb = parse_feedback(fixture(name))
            self.assertEqual(Feedback.from_json(fb.to_json()), fb)

    def test_compressed(self):
        xml = fixture("dmarc-google.xml")
        expect = parse_feedback(xml)
        self.assertEqual(parse_feedback(gzip.compress(xml)), expect)
        self.assertEqual(parse_feedback(zipped("google.com!example.org!1!2.xml", xml)), expect)
        self.assertEqual(parse_feedback(zipped("r.xml", xml, zipfile.ZIP_STORED)), expect)
        # A zip holding a .xml.gz (seen from small reporters).
        self.assertEqual(parse_feedback(zipped("r.xml.gz", gzip.compress(xml))), expect)
        # A zip with one file whose name does not say .xml.
        self.assertEqual(parse_feedback(zipped("report", xml)), expect)

    def test_latin1_declared(self):
        doc = minimal_report().decode().replace('encoding="UTF-8"', 'encoding="ISO-8859-1"')
        doc = doc.replace("<org_name>Example</org_name>", "<org_name>Société Générale</org_name>")
        fb = parse_feedback(doc.encode("latin-1"))
        self.assertEqual(fb.report_metadata.org_name, "Société Générale")

    def test_utf16(self):
        doc = minimal_report().decode().replace('encoding="UTF-8"', 'encoding="UTF-16"')
        fb = parse_feedback(doc.encode("utf-16"))
        self.assertEqual(fb.policy_published.domain, "example.org")


class MessageTests(unittest.SynchronousTestCase):
    """parse_message finds the report in the message shapes reporters send."""

    def test_google_zip(self):
        xml = fixture("dmarc-google.xml")
        msg = report_message([("application/zip", "google.com!example.org!1790035200!1790121599.zip",
                               zipped("google.com!example.org!1790035200!1790121599.xml", xml))])
        self.assertEqual(parse_message(msg), parse_feedback(xml))

    def test_microsoft_gzip(self):
        xml = fixture("dmarc-microsoft.xml")
        msg = report_message(
            [("application/gzip", "protection.outlook.com!example.org!1790035200!1790121600.xml.gz",
              gzip.compress(xml))],
            subject="Report Domain: example.org Submitter: protection.outlook.com Report-ID: "
                    "6d8a1c0e4f2b4a7c9e1d3b5a7f9c2e4d",
            from_addr="dmarcreport@microsoft.com")
        fb = parse_message(msg)
        self.assertEqual(fb.report_metadata.org_name, "Outlook.com")
        self.assertEqual(len(fb.records), 2)

    def test_yahoo_x_gzip(self):
        xml = fixture("dmarc-yahoo.xml")
        msg = report_message([("application/x-gzip",
                               "yahoo.com!example.org!1790035200!1790121599.xml.gz",
                               gzip.compress(xml))])
        self.assertEqual(parse_message(msg).report_metadata.org_name, "Yahoo")

    def test_octet_stream_by_name(self):
        xml = fixture("dmarc-mailru.xml")
        msg = report_message([("application/octet-stream",
                               "mail.ru!example.org!1790035200!1790121600.xml.zip",
                               zipped("r.xml", xml))])
        self.assertEqual(parse_message(msg).report_metadata.org_name, "Mail.Ru")

    def test_octet_stream_without_report_name_ignored(self):
        msg = report_message([("application/octet-stream", "logo.png", b"\x89PNG....")])
        self.assertIsNone(parse_message(msg))

    def test_text_xml(self):
        xml = fixture("dmarc-dmarcbis.xml")
        msg = report_message([("text/xml", "report.xml", xml)])
        self.assertEqual(parse_message(msg).report_metadata.report_id, "example.net-20260922-0001")

    def test_mislabelled_compression(self):
        """Labelled gzip, actually zip: content decides."""
        xml = fixture("dmarc-google.xml")
        msg = report_message([("application/gzip", "report.xml.gz", zipped("r.xml", xml))])
        self.assertEqual(parse_message(msg), parse_feedback(xml))

    def test_whole_message_is_report(self):
        xml = fixture("dmarc-yahoo.xml")
        msg = (b"From: dmarchelp@yahooinc.com\r\nTo: r@example.org\r\nSubject: Report\r\n"
               b"MIME-Version: 1.0\r\nContent-Type: application/gzip\r\n"
               b"Content-Transfer-Encoding: base64\r\n\r\n"
               + base64.encodebytes(gzip.compress(xml)).replace(b"\n", b"\r\n"))
        self.assertEqual(parse_message(msg).report_metadata.org_name, "Yahoo")

    def test_forwarded_report(self):
        gz = gzip.compress(fixture("dmarc-yahoo.xml"))
        inner = report_message([("application/gzip", "r.xml.gz", gz)])
        outer = (b"From: admin@example.org\r\nTo: dmarc-reports@example.org\r\n"
                 b"Subject: Fwd: report\r\nMIME-Version: 1.0\r\n"
                 b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n"
                 b"--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
                 b"--b1\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--b1--\r\n")
        self.assertEqual(parse_message(outer).report_metadata.org_name, "Yahoo")

    def test_no_report(self):
        self.assertIsNone(parse_message(report_message([])))
        self.assertIsNone(parse_message(b"Subject: hi\r\n\r\nhello\r\n"))
        self.assertIsNone(parse_message(b""))

    def test_malformed_raises(self):
        msg = report_message([("application/gzip", "r.xml.gz", b"\x1f\x8bnot gzip at all")])
        e = self.assertRaises(ReportError, parse_message, msg)
        self.assertIn("gzip", str(e))
        self.assertIn("r.xml.gz", str(e))

    def test_bad_then_good_part(self):
        xml = fixture("dmarc-google.xml")
        msg = report_message([("text/xml", "broken.xml", b"<feedback><oops"),
                              ("application/gzip", "r.xml.gz", gzip.compress(xml))])
        self.assertEqual(parse_message(msg), parse_feedback(xml))

    def test_wrong_root_in_message(self):
        msg = report_message([("text/xml", "other.xml", b"<?xml version='1.0'?><config/>")])
        e = self.assertRaises(ReportError, parse_message, msg)
        self.assertIn("<config>", str(e))


class HostileInputTests(unittest.SynchronousTestCase):
    """Reports are untrusted: every attack ends in ReportError, quickly, in little memory."""

    def test_xxe_refused(self):
        doc = minimal_report(
            prolog='<!DOCTYPE feedback [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n')
        doc = doc.replace(b"<org_name>Example</org_name>", b"<org_name>&xxe;</org_name>")
        e = self.assertRaises(ReportError, parse_feedback, doc)
        self.assertIn("DTD", str(e))

    def test_external_dtd_refused(self):
        doc = minimal_report(prolog='<!DOCTYPE feedback SYSTEM "http://127.0.0.1:1/x.dtd">\n')
        self.assertRaises(ReportError, parse_feedback, doc)

    def test_parameter_entities_refused(self):
        doc = minimal_report(prolog=(
            '<!DOCTYPE feedback [<!ENTITY % remote SYSTEM "http://127.0.0.1:1/e.dtd"> %remote;]>\n'))
        self.assertRaises(ReportError, parse_feedback, doc)

    def test_billion_laughs(self):
        ents = ['<!ENTITY lol0 "lol">'] + [
            f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
        doc = minimal_report(prolog="<!DOCTYPE feedback [" + "".join(ents) + "]>\n")
        doc = doc.replace(b"<org_name>Example</org_name>", b"<org_name>&lol9;</org_name>")
        e = self.assertRaises(ReportError, parse_feedback, doc)
        self.assertIn("DTD", str(e))

    def test_undefined_entity(self):
        doc = minimal_report().replace(b"<org_name>Example", b"<org_name>&bogus;")
        self.assertRaises(ReportError, parse_feedback, doc)

    def test_gzip_bomb(self):
        bomb = gzip.compress(b"<feedback>" + b" " * (parse.MAX_REPORT_SIZE + 10))
        self.assertLess(len(bomb), 100_000)
        e = self.assertRaises(ReportError, parse_feedback, bomb)
        self.assertIn("larger than", str(e))

    def test_zip_bomb(self):
        bomb = zipped("r.xml", b"<feedback>" + b"A" * (parse.MAX_REPORT_SIZE + 10))
        self.assertLess(len(bomb), 100_000)
        e = self.assertRaises(ReportError, parse_feedback, bomb)
        self.assertIn("larger than", str(e))

    def test_zip_bomb_lying_header(self):
        """A zip directory that claims a small size does not get past the cap."""
        big = b"<feedback>" + b"B" * (parse.MAX_REPORT_SIZE + 10)
        data = bytearray(zipped("r.xml", big))
        size = len(big).to_bytes(4, "little")
        small = (100).to_bytes(4, "little")
        data = bytes(data).replace(size, small)
        self.assertRaises(ReportError, parse_feedback, data)

    def test_small_cap(self):
        doc = gzip.compress(fixture("dmarc-google.xml"))
        self.assertRaises(ReportError, parse_feedback, doc, 1000)

    def test_truncated_gzip(self):
        data = gzip.compress(fixture("dmarc-google.xml"))
        for cut in (3, 10, len(data) // 2, len(data) - 4):
            e = self.assertRaises(ReportError, parse_feedback, data[:cut])
            self.assertIn("gzip", str(e))

    def test_corrupt_gzip_crc(self):
        data = bytearray(gzip.compress(fixture("dmarc-google.xml")))
        data[-6] ^= 0xFF  # CRC32
        self.assertRaises(ReportError, parse_feedback, bytes(data))

    def test_corrupt_zip(self):
        data = zipped("r.xml", fixture("dmarc-google.xml"))
        self.assertRaises(ReportError, parse_feedback, data[:40])
        self.assertRaises(ReportError, parse_feedback, b"PK\x03\x04" + b"\x00" * 100)

    def test_zip_without_xml(self):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("a.txt", "x")
            zf.writestr("b.txt", "y")
        e = self.assertRaises(ReportError, parse_feedback, buf.getvalue())
        self.assertIn(".xml", str(e))

    def test_zip_many_members(self):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for i in range(parse.MAX_ZIP_MEMBERS + 1):
                zf.writestr(f"r{i}.xml", "<feedback/>")
        self.assertRaises(ReportError, parse_feedback, buf.getvalue())

    def test_nested_compression(self):
        xml = fixture("dmarc-google.xml")
        data = gzip.compress(zipped("r.xml.gz", gzip.compress(xml)))
        e = self.assertRaises(ReportError, parse_feedback, data)
        self.assertIn("nested", str(e))

    def test_wrong_root(self):
        for doc in (b"<html><body>hi</body></html>", b"<?xml version='1.0'?><report/>"):
            e = self.assertRaises(ReportError, parse_feedback, doc)
            self.assertIn("not <feedback>", str(e))
        self.assertRaises(ReportError, parse_feedback, minimal_report(root="feedbackx"))

    def test_not_xml(self):
        for doc in (b"", b"hello", b"{\"json\": 1}", b"<feedback>", b"\x00\x01\x02"):
            self.assertRaises(ReportError, parse_feedback, doc)

    def test_huge_counts(self):
        self.assertEqual(parse_feedback(minimal_report(count=str(2**63 - 1))).records[0].row.count,
                         2**63 - 1)
        for count in (str(2**63), "1" + "0" * 30, "9" * 5000, "-1", "1e6", "1.5", "0x10",
                      "١٢", "1_000", ""):
            e = self.assertRaises(ReportError, parse_feedback, minimal_report(count=count))
            self.assertIn("count", str(e))

    def test_bad_date_range(self):
        doc = minimal_report().replace(b"<begin>1790035200</begin>", b"<begin>yesterday</begin>")
        self.assertRaises(ReportError, parse_feedback, doc)

    def test_invalid_utf8(self):
        doc = minimal_report().replace(b"<org_name>Example", b"<org_name>Ex\xff\xfeample")
        e = self.assertRaises(ReportError, parse_feedback, doc)
        self.assertIn("malformed", str(e))

    def test_unknown_encoding(self):
        doc = minimal_report().replace(b'encoding="UTF-8"', b'encoding="x-no-such-charset"')
        self.assertRaises(ReportError, parse_feedback, doc)

    def test_deep_nesting(self):
        doc = b"<feedback>" + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</feedback>"
        e = self.assertRaises(ReportError, parse_feedback, doc)
        self.assertIn("nested", str(e))

    def test_many_elements(self):
        doc = b"<feedback>" + b"<x/>" * (parse.MAX_OTHER_ELEMENTS + 1) + b"</feedback>"
        e = self.assertRaises(ReportError, parse_feedback, doc)
        self.assertIn("too many elements", str(e))
        rec = "<record><row>" + "<x/>" * (parse.MAX_ELEMENTS_PER_RECORD + 1) + "</row></record>"
        self.assertRaises(ReportError, parse_feedback, minimal_report(record=rec))

    def test_long_text(self):
        doc = minimal_report().replace(b"<org_name>Example",
                                       b"<org_name>" + b"x" * (parse.MAX_TEXT + 1))
        e = self.assertRaises(ReportError, parse_feedback, doc)
        self.assertIn("too long", str(e))

    def test_missing_required(self):
        for old, new, what in (
            (b"<report_id>1</report_id>", b"", "report_id"),
            (b"<report_id>1</report_id>", b"<report_id> </report_id>", "report_id"),
            (b"<org_name>Example</org_name>", b"", "org_name"),
            (b"<domain>example.org</domain>", b"", "domain"),
            (b"<source_ip>192.0.2.1</source_ip>", b"", "source_ip"),
            (b"<end>1790121599</end>", b"", "end"),
        ):
            e = self.assertRaises(ReportError, parse_feedback, minimal_report().replace(old, new))
            self.assertIn(what, str(e))
        doc = minimal_report().replace(b"<policy_published>", b"<policy_publishedx>")
        doc = doc.replace(b"</policy_published>", b"</policy_publishedx>")
        self.assertRaises(ReportError, parse_feedback, doc)

    def test_record_without_row(self):
        rec = "<record><identifiers><header_from>x</header_from></identifiers></record>"
        self.assertRaises(ReportError, parse_feedback, minimal_report(record=rec))

    def test_malformed_message_never_crashes(self):
        # Messages without a report part are not reports (None); a report part that does
        # not decode is a ReportError naming what is wrong. Nothing else escapes.
        for msg in (b"\x00" * 100, b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"):
            self.assertIsNone(parse_message(msg))
        for msg, why in (
            (b"Content-Type: application/gzip\r\n\r\n\x1f\x8b", "bad gzip data"),
            (b"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!",
             "malformed XML"),
        ):
            e = self.assertRaises(ReportError, parse_message, msg)
            self.assertIn(why, str(e))


class ReportDBTests(unittest.TestCase):
    """moxtw.reports.dmarc.received: storing received reports in data/dmarc.db."""

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
        fb = parse_feedback(fixture("dmarc-microsoft.xml"))
        id = yield self.db.add(fb, "dmarcreport@microsoft.com", "Example.ORG")
        stored = yield self.db.get(id)
        self.assertEqual(stored.id, id)
        self.assertEqual(stored.domain, "example.org")
        self.assertEqual(stored.from_address, "dmarcreport@microsoft.com")
        self.assertEqual(stored.org_name, "Outlook.com")
        self.assertEqual(stored.report_id, "6d8a1c0e4f2b4a7c9e1d3b5a7f9c2e4d")
        self.assertEqual(stored.begin, datetime(2026, 9, 22, tzinfo=timezone.utc))
        self.assertEqual(stored.end, datetime(2026, 9, 23, tzinfo=timezone.utc))
        self.assertEqual(stored.received, datetime.fromtimestamp(T0, timezone.utc))
        self.assertEqual(stored.report, fb)
        missing = yield self.db.get(id + 100)
        self.assertIsNone(missing)

    @defer.inlineCallbacks
    def test_received_given(self):
        when = datetime(2026, 9, 23, 1, 2, 3, tzinfo=timezone.utc)
        id = yield self.db.add(parse_feedback(fixture("dmarc-yahoo.xml")), "y@yahoo", "example.org",
                               received=when)
        stored = yield self.db.get(id)
        self.assertEqual(stored.received, when)

    @defer.inlineCallbacks
    def test_naive_received_refused(self):
        with self.assertRaises(ValueError):
            yield self.db.add(parse_feedback(fixture("dmarc-yahoo.xml")), "y@yahoo", "example.org",
                              received=datetime(2026, 9, 23))

    @defer.inlineCallbacks
    def test_duplicate_stored_once(self):
        fb = parse_feedback(fixture("dmarc-google.xml"))
        a = yield self.db.add(fb, "g@google.com", "example.org")
        b = yield self.db.add(fb, "g@google.com", "example.org")
        self.assertEqual(a, b)
        reports = yield self.db.list()
        self.assertEqual(len(reports), 1)

    @defer.inlineCallbacks
    def test_list_filters(self):
        g = yield self.db.add(parse_feedback(fixture("dmarc-google.xml")), "g@google.com",
                              "example.org")
        doc = fixture("dmarc-yahoo.xml").replace(b"1790035200", b"1789948800")
        doc = doc.replace(b"1790121599", b"1790035199")
        y = yield self.db.add(parse_feedback(doc), "y@yahoo.com", "example.org")
        m = yield self.db.add(parse_feedback(fixture("dmarc-mailru.xml")), "m@mail.ru", "other.example")
        all_ = yield self.db.list()
        self.assertEqual([r.id for r in all_], [m, g, y])  # newest period first
        ex = yield self.db.list(domain="example.org")
        self.assertEqual({r.id for r in ex}, {g, y})
        day1 = datetime(2026, 9, 21, tzinfo=timezone.utc)
        day2 = datetime(2026, 9, 22, tzinfo=timezone.utc)
        first = yield self.db.list(start=day1, end=day2)
        self.assertEqual([r.id for r in first], [y])
        second = yield self.db.list(domain="example.org", start=day2)
        self.assertEqual([r.id for r in second], [g])
        limited = yield self.db.list(limit=1)
        self.assertEqual(len(limited), 1)

    @defer.inlineCallbacks
    def test_remove(self):
        id = yield self.db.add(parse_feedback(fixture("dmarc-google.xml")), "g@google.com",
                               "example.org")
        removed = yield self.db.remove(id)
        self.assertTrue(removed)
        removed = yield self.db.remove(id)
        self.assertFalse(removed)

    @defer.inlineCallbacks
    def test_persistent_and_wal(self):
        id = yield self.db.add(parse_feedback(fixture("dmarc-google.xml")), "g@google.com",
                               "example.org")
        yield self.db.close()
        path = os.path.join(self.data_dir, "dmarc.db")
        conn = sqlite3.connect(path)
        try:
            self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")
            self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0],
                             rptdb.schema.LATEST)
        finally:
            conn.close()
        self.db = rptdb.ReportDB(self.data_dir, clock=self.clock)
        yield self.db.open()
        self.addCleanup(self.db.close)
        stored = yield self.db.get(id)
        self.assertEqual(stored.report.report_metadata.org_name, "google.com")

    @defer.inlineCallbacks
    def test_closed(self):
        yield self.db.close()
        with self.assertRaises(RuntimeError):
            yield self.db.list()
