"""Incoming message authentication end to end: a sending moxtw instance (DKIM-signed,
SPF-authorised in a loopback DNS zone) delivers to a receiving one, which records
spf/dkim/dmarc/iprev pass; spoofed messages from another loopback address with a
tampered body are refused for p=reject and marked fail for p=none."""

import json
import smtplib

from twisted.internet import defer, threads
from twisted.trial import unittest

from moxtw.test.dnsserver import loopback_dns
from moxtw.test.test_e2e_outbound import Instance, allow_test_settings, message, wait_for


class MsgAuthTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        allow_test_settings(self)
        self.a = Instance(self, "a.example", "alice")
        self.b = Instance(self, "b.example", "bob")
        records = {**self.a.dns_records(), **self.b.dns_records()}
        records.update({
            ("_dmarc.a.example", "TXT"): ["v=DMARC1; p=reject; rua=mailto:dmarc-reports@a.example"],
            ("_dmarc.c.example", "TXT"): ["v=DMARC1; p=none"],
            ("c.example", "TXT"): ["v=spf1 ip4:192.0.2.1 -all"],
            ("c.example", "MX"): [(10, "mail.c.example")],
            ("1.0.0.127.in-addr.arpa", "PTR"): ["mail.a.example"],
        })
        self.dns = yield loopback_dns(self, records)
        yield self.a.start(self.dns.address, self.b.ports["smtp"])
        yield self.b.start(self.dns.address, self.a.ports["smtp"])

    def send_from(self, source_ip, mailfrom, rcpt, data):
        def send():
            with smtplib.SMTP("127.0.0.1", self.b.ports["smtp"], timeout=30,
                              source_address=(source_ip, 0)) as s:
                s.ehlo("spoofer.example")
                return s.sendmail(mailfrom, [rcpt], data)

        return threads.deferToThread(send)

    @defer.inlineCallbacks
    def signed_message(self, subject):
        """A message signed by A, captured from B's mailbox after a real delivery."""
        yield self.a.submit("alice@a.example", ["bob@b.example"],
                            message("alice@a.example", "bob@b.example", subject))
        yield self.a.settled()
        got = yield wait_for(self.b.inbox)
        return got

    @defer.inlineCallbacks
    def test_legitimate_passes_everything(self):
        [(m, data)] = yield self.signed_message("legit")
        head = data.split(b"\r\n\r\n", 1)[0]
        self.assertIn(b"Authentication-Results: mail.b.example;", head)
        self.assertIn(b"\tiprev=pass policy.iprev=127.0.0.1 (mail.a.example);", head)
        self.assertIn(b"(mail.a.example [127.0.0.1])", head)  # Received: the verified name
        self.assertIn(b"\tspf=pass smtp.mailfrom=a.example;", head)
        self.assertIn(b"\tdmarc=pass header.from=a.example", head)
        self.assertEqual(head.count(b"\tdkim=pass header.d=a.example"), 2)
        self.assertIn(b"Received-SPF: pass", head)
        # The results are in the message's index row for reputation.
        row = m.row
        self.assertEqual(row["spf_result"], "pass")
        self.assertEqual(row["dmarc_result"], "pass")
        self.assertEqual(json.loads(row["dkim_domains"]), ["a.example"])
        self.assertEqual(row["msgfrom_validated"], 1)

    @defer.inlineCallbacks
    def test_spoof_refused_for_p_reject(self):
        [(_, data)] = yield self.signed_message("original")
        # Replayed from another address with a changed body: SPF fails (127.0.0.2 is
        # not in a.example's record) and both DKIM signatures fail.
        original = data[data.index(b"DKIM-Signature:"):]
        tampered = original.replace(b"Hello from", b"Send money, says")
        e = yield self.assertFailure(
            self.send_from("127.0.0.2", "alice@a.example", "bob@b.example", tampered),
            smtplib.SMTPDataError)
        self.assertEqual(e.smtp_code, 550)
        self.assertIn(b"5.7.1 DMARC policy (reject) of a.example rejects this message", e.smtp_error)
        self.assertEqual(len((yield self.b.inbox())), 1)

    @defer.inlineCallbacks
    def test_spoof_marked_for_p_none(self):
        spoof = message("ceo@c.example", "bob@b.example", "urgent")
        refused = yield self.send_from("127.0.0.2", "ceo@c.example", "bob@b.example", spoof)
        self.assertEqual(refused, {})
        [(m, data)] = yield wait_for(self.b.inbox)
        head = data.split(b"\r\n\r\n", 1)[0]
        self.assertIn(b"\tspf=fail smtp.mailfrom=c.example;", head)
        self.assertIn(b"\tdkim=none;", head)
        self.assertIn(b'\tdmarc=fail reason="p=none" header.from=c.example', head)
        self.assertEqual(m.row["dmarc_result"], "fail")

    @defer.inlineCallbacks
    def test_forged_authentication_results_removed(self):
        forged = (b"Authentication-Results: mail.b.example; dkim=pass header.d=bank.example\r\n"
                  b"Authentication-Results: elsewhere.example; spf=pass\r\n"
                  + message("x@c.example", "bob@b.example", "forged"))
        yield self.send_from("127.0.0.2", "x@c.example", "bob@b.example", forged)
        [(_, data)] = yield wait_for(self.b.inbox)
        self.assertNotIn(b"bank.example", data)
        self.assertIn(b"Authentication-Results: elsewhere.example; spf=pass", data)
        self.assertEqual(data.count(b"Authentication-Results: mail.b.example"), 1)

    @defer.inlineCallbacks
    def test_dmarc_report_cycle(self):
        """B evaluates A's message, sends A an aggregate report (A asked with rua), A
        stores it and keeps the message in its DMARC mailbox."""
        from datetime import datetime, timedelta, timezone

        yield self.signed_message("evaluated")
        evaluations = yield wait_for(self.b.root.reports.evaluations.evaluations)
        self.assertEqual([(e.policy_domain, e.disposition) for e in evaluations], [("a.example", "none")])
        later = datetime.now(timezone.utc) + timedelta(days=2)
        n = yield self.b.root.reports.send_due(later)
        self.assertEqual(n, 1)
        yield self.b.settled()
        self.assertEqual((yield self.b.root.queue.list()), [])
        [(m, data)] = yield wait_for(lambda: self.a.inbox(mailbox="DMARC"))
        self.assertIn(b"Report Domain: a.example", data)
        stored = yield wait_for(self.a.root.reports.dmarc.list)
        [r] = stored
        self.assertEqual(r.domain, "a.example")
        self.assertEqual(r.report.records[0].row.count, 1)
        self.assertEqual(r.report.records[0].row.policy_evaluated.dkim, "pass")
        # Sent once: nothing due any more.
        self.assertEqual((yield self.b.root.reports.send_due(later)), 0)

    @defer.inlineCallbacks
    def test_malformed_report_kept_as_message(self):
        bad = (b"From: noreply@c.example\r\nTo: dmarc-reports@b.example\r\nSubject: Report\r\n"
               b"Content-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               b"UEsDBBQAAAAIAGarbage==\r\n")
        yield self.send_from("127.0.0.2", "noreply@c.example", "dmarc-reports@b.example", bad)
        [(m, _)] = yield wait_for(lambda: self.b.inbox(mailbox="DMARC"))
        self.assertEqual(m.subject, "Report")
        self.assertEqual((yield self.b.root.reports.dmarc.list()), [])

    @defer.inlineCallbacks
    def test_several_from_refused(self):
        # DMARC cannot judge several authors: a spoofer adding a second address or field
        # must not slip past p=reject.
        for head in (b"From: ceo@a.example, x@c.example\r\n",
                     b"From: x@c.example\r\nFrom: ceo@a.example\r\n",
                     b""):
            data = head + b"To: bob@b.example\r\nSubject: two\r\n\r\nbody\r\n"
            e = yield self.assertFailure(
                self.send_from("127.0.0.2", "x@c.example", "bob@b.example", data), smtplib.SMTPDataError)
            self.assertEqual(e.smtp_code, 550)
            self.assertIn(b"exactly one From header field", e.smtp_error)
        self.assertEqual((yield self.b.inbox()), [])

    @defer.inlineCallbacks
    def test_tls_report_stored(self):
        import gzip
        import os as _os
        from email.message import EmailMessage

        path = _os.path.join(_os.path.dirname(__file__), "data", "tlsrpt-google.json")
        with open(path, "rb") as f:
            report = f.read()
        m = EmailMessage()
        m["From"] = "noreply-smtp-tls-reporting@c.example"
        m["To"] = "tls-reports@b.example"
        m["Subject"] = "Report Domain: b.example Submitter: c.example Report-ID: <x>"
        m["TLS-Report-Domain"] = "b.example"
        m["TLS-Report-Submitter"] = "c.example"
        m.set_content("This is an aggregate TLS report.")
        m.add_attachment(gzip.compress(report), maintype="application", subtype="tlsrpt+gzip",
                         filename="c.example!b.example!1!2.json.gz")
        yield self.send_from("127.0.0.2", "noreply-smtp-tls-reporting@c.example", "tls-reports@b.example",
                             m.as_bytes().replace(b"\n", b"\r\n"))
        [(msg, _)] = yield wait_for(lambda: self.b.inbox(mailbox="TLSRPT"))
        stored = yield wait_for(self.b.root.reports.tlsrpt.list)
        self.assertEqual(len(stored), 1)
        self.assertTrue(stored[0].report.policies)
