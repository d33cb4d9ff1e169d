"""Junk filtering end to end: the real service tree with a loopback DNS server (SPF, DMARC,
reverse DNS), mail sent over SMTP with smtplib and judged by the account's reputation,
the user's classification made over IMAP with imaplib. A first-time sender is accepted
after the configured delay; once flagged $Junk the sender's next message is refused 451
and kept (once) in Rejects; moved to Inbox and flagged $NotJunk, the next one passes."""

import imaplib
import os
import smtplib
import ssl
import time

from twisted.internet import defer, threads
from twisted.trial import unittest

from moxtw.test import servertree
from moxtw.test.dnsserver import loopback_dns
from moxtw.test.test_localserve import free_offset

PASSWORD = "junk test password"
DELAY = 0.6

STATIC = """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.com"
[DNS]
Servers = ["{dns}"]
[Postmaster]
Account = "me"
Mailbox = "Postmaster"
[Listeners.main]
IPs = ["127.0.0.1"]
[Listeners.main.TLS]
KeyCerts = [{{CertFile = "tls/localhost.crt", KeyFile = "tls/localhost.key"}}]
[Listeners.main.SMTP]
Enabled = true
Port = {smtp}
FirstTimeSenderDelay = "{delay}s"
[Listeners.main.IMAPS]
Enabled = true
Port = {imaps}
"""

DYNAMIC = """
[Domains."example.com"]
[Accounts.me]
Domain = "example.com"
RejectsMailbox = "Rejects"
[Accounts.me.Destinations."me@example.com"]
[Accounts.me.JunkFilter]
Threshold = 0.95
Onegrams = true
Twograms = true
MaxPower = 0.01
TopWords = 10
IgnoreWords = 0.1
RareWords = 2
"""

ZONE = {
    ("bad.example", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
    ("_dmarc.bad.example", "TXT"): ["v=DMARC1; p=none"],
    ("good.example", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
    ("_dmarc.good.example", "TXT"): ["v=DMARC1; p=none"],
    ("1.0.0.127.in-addr.arpa", "PTR"): ["mail.sender.example"],
    ("mail.sender.example", "A"): ["127.0.0.1"],
    ("mail.sender.example", "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
}


def message(frm, subject, mid):
    return (f"From: {frm}\r\nTo: me@example.com\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n"
            f"Date: Mon, 7 Dec 2026 10:00:00 +0000\r\n\r\nHello, this is {subject}.\r\n").encode()


class JunkTreeBase(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.dns = yield loopback_dns(self, ZONE)
        off = free_offset()
        self.ports = {"smtp": 25 + off, "imaps": 993 + off}
        cfg, self.ca = servertree.write_config(
            os.path.abspath(self.mktemp()), STATIC.format(dns=self.dns.address, delay=DELAY, **self.ports), DYNAMIC)
        self.cfg = cfg
        self.root = yield servertree.start(self, cfg)
        self.acc = yield self.root.store.open_account("me")
        yield self.acc.set_password(PASSWORD)

    def send(self, frm, subject, mid=None):
        """(seconds until the answer, error or None) of one SMTP transaction."""
        mid = mid or f"{subject.replace(' ', '.')}@{frm.split('@')[1]}"

        def go():
            started = time.monotonic()
            try:
                with smtplib.SMTP("127.0.0.1", self.ports["smtp"], local_hostname="mail.sender.example",
                                  timeout=30) as s:
                    s.starttls(context=ssl.create_default_context(cafile=self.ca))
                    s.ehlo("mail.sender.example")
                    s.sendmail(frm, ["me@example.com"], message(frm, subject, mid))
                return time.monotonic() - started, None
            except smtplib.SMTPDataError as e:
                return time.monotonic() - started, e

        return threads.deferToThread(go)

    def imap(self, fn):
        def go():
            with imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"],
                                   ssl_context=ssl.create_default_context(cafile=self.ca)) as c:
                c.login("me@example.com", PASSWORD)
                return fn(c)

        return threads.deferToThread(go)

    def totals(self):
        from moxtw.junk import bayes
        from moxtw.junk.analysis import filter_path

        f = bayes.Filter(filter_path(self.acc.path), bayes.Params())
        f.open()
        try:
            return f.totals()
        finally:
            f.close()

    @defer.inlineCallbacks
    def subjects(self, mailbox):
        mb = yield self.acc.mailbox(mailbox)
        if mb is None:
            return []
        msgs = yield self.acc.messages(mb.id)
        return [m.subject for m in msgs]



class JunkEndToEndTests(JunkTreeBase):
    @defer.inlineCallbacks
    def test_first_time_sender_junk_rejects_and_recovery(self):
        # A first-time sender: accepted, after the delay.
        took, err = yield self.send("spam@bad.example", "first offer")
        self.assertIsNone(err)
        self.assertGreaterEqual(took, DELAY)
        self.assertEqual((yield self.subjects("Inbox")), ["first offer"])

        # The user marks it junk over IMAP.
        def flag_junk(c):
            c.select("INBOX")
            typ, _ = c.uid("STORE", "1", "+FLAGS", "($Junk)")
            return typ

        self.assertEqual((yield self.imap(flag_junk)), "OK")

        # The sender's next message: refused with a temporary error, kept in Rejects.
        took, err = yield self.send("spam@bad.example", "second offer")
        self.assertIsNotNone(err)
        self.assertEqual(err.smtp_code, 451)
        self.assertIn(b"4.7.1", err.smtp_error)
        self.assertNotIn(b"junk", err.smtp_error.lower())  # a neutral text
        self.assertGreaterEqual(took, 2 * DELAY)  # junk is slowed more
        self.assertEqual((yield self.subjects("Rejects")), ["second offer"])
        self.assertEqual((yield self.subjects("Inbox")), ["first offer"])
        # The same message again (a retry): refused again, not stored twice.
        _, err = yield self.send("spam@bad.example", "second offer")
        self.assertEqual(err.smtp_code, 451)
        self.assertEqual((yield self.subjects("Rejects")), ["second offer"])

        # The user finds it in Rejects, moves it to the Inbox and marks it not junk.
        def recover(c):
            c.select("Rejects")
            c.uid("STORE", "1", "+FLAGS", "($NotJunk)")
            typ, _ = c.uid("MOVE", "1", "INBOX")
            return typ

        self.assertEqual((yield self.imap(recover)), "OK")
        took, err = yield self.send("spam@bad.example", "third offer")
        self.assertIsNone(err)
        # Known now: not a first-time sender (junk_reason msgfromfull below), no delay.
        self.assertEqual(sorted((yield self.subjects("Inbox"))), ["first offer", "second offer", "third offer"])

        # Another account's reputation is its own: nothing shared (a sender known here
        # means nothing elsewhere) is covered by the store being per account.
        rows = yield self.acc.read(lambda conn: conn.execute(
            "SELECT subject, junk_score IS NOT NULL, junk_reason FROM message ORDER BY id").fetchall())
        rows = [tuple(r) for r in rows]
        # Why each got in is on the message: the filter's score and the reason.
        self.assertEqual(rows[0], ("first offer", 1, "junk-content"))
        self.assertEqual(rows[-1][0], "third offer")
        self.assertEqual(rows[-1][2], "msgfromfull")
        # The copy kept in Rejects (moved out since) says why it was refused: the
        # analysis did judge it.
        self.assertEqual([r[2] for r in rows if r[0] == "second offer"], ["msgfromfull"])

    @defer.inlineCallbacks
    def test_trained_by_flags(self):
        took, err = yield self.send("news@good.example", "weekly news")
        self.assertIsNone(err)

        def flag(c):
            c.select("INBOX")
            c.uid("STORE", "1", "+FLAGS", "($NotJunk)")
            return c.uid("STORE", "1", "-FLAGS", "($NotJunk)")[0]

        yield self.imap(flag)
        yield self.root.junk_trainer.train_all()
        yield self.imap(lambda c: (c.select("INBOX"), c.uid("STORE", "1", "+FLAGS", "($Junk)")))
        n = yield self.root.junk_trainer.train_all()
        self.assertEqual(n, 1)
        ham, spam = yield threads.deferToThread(self.totals)
        # Trained once, as junk: the earlier not-junk training was taken back.
        self.assertEqual((ham, spam), (0, 1))
        row = yield self.acc.read(lambda conn: conn.execute("SELECT trained_junk FROM message").fetchone()[0])
        self.assertEqual(row, 1)


class RetrainTests(JunkTreeBase):
    @defer.inlineCallbacks
    def test_retrain_through_running_server(self):
        from moxtw.test.clihelper import run_moxtw

        for i in range(3):
            _, err = yield self.send(f"n{i}@good.example", f"news {i}")
            self.assertIsNone(err)
        inbox = yield self.acc.mailbox("Inbox")
        yield self.acc.store_flags(inbox.id, [1, 2], "add", ["$notjunk"])
        yield self.acc.store_flags(inbox.id, [3], "add", ["$junk"])
        out, err, rc = yield run_moxtw("junk", "retrain", "me", "--config", self.cfg.config_dir)
        self.assertEqual(rc, 0, err)
        self.assertIn(b"retrained me: 3 messages (by the running server)", out)
        ham, spam = yield threads.deferToThread(self.totals)
        self.assertEqual((ham, spam), (2, 1))
        out, err, rc = yield run_moxtw("junk", "retrain", "nobody", "--config", self.cfg.config_dir)
        self.assertEqual(rc, 1)
