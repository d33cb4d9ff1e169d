"""End-to-end SMTP over loopback with real clients: Python's smtplib, our SCRAM client,
and swaks when installed (.ci/run installs it).

The server is the real service tree (``moxtw.app.makeService``) on a config written here.
"""

import os
import shutil
import smtplib
import ssl
import subprocess
from datetime import datetime, timezone

from twisted.internet import defer, threads
from twisted.trial import unittest

from moxtw import config as mconfig
from moxtw.test import servertree
from moxtw.sasl.client import new_client_mechanism
from moxtw.delivery.local import RcptResult
from moxtw.smtp import codes as c
from moxtw.test.test_localserve import free_offset

STATIC = """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.org"
[Postmaster]
Account = "mjl"
Mailbox = "Postmaster"
[Listeners.main]
IPs = ["127.0.0.1"]
SMTPMaxMessageSize = 200000
[Listeners.main.TLS]
KeyCerts = [{{CertFile = "tls/localhost.crt", KeyFile = "tls/localhost.key"}}]
[Listeners.main.SMTP]
Enabled = true
Port = {smtp}
[Listeners.main.Submission]
Enabled = true
Port = {submission}
[Listeners.main.Submissions]
Enabled = true
Port = {submissions}
"""

DYNAMIC = """
[Domains."example.org"]
LocalpartCatchallSeparator = "+"
[Domains."example.org".Aliases.team]
Addresses = ["mjl@example.org", "other@example.org"]
PostPublic = true

[Domains."example.org".Aliases.mixed]
Addresses = ["mjl@example.org", "away@off.example"]
PostPublic = true
[Domains."example.org".Aliases.offteam]
Addresses = ["away@off.example"]
PostPublic = true
[Domains."off.example"]
Disabled = true

[Accounts.away]
Domain = "off.example"
[Accounts.away.Destinations."away@off.example"]

[Accounts.mjl]
Domain = "example.org"
QuotaMessageSize = 100000
[Accounts.mjl.Destinations."mjl@example.org"]
Mailbox = "Inbox"
[[Accounts.mjl.Destinations."mjl@example.org".Rulesets]]
HeadersRegexp = {{"^list-id$" = "<twisted\\\\.example\\\\.net>"}}
Mailbox = "Lists/Twisted"

[Accounts.other]
Domain = "example.org"
[Accounts.other.Destinations."other@example.org"]
"""

PASSWORD = "test password"


def message(subject="hello", frm="mjl@example.org", extra=""):
    return (
        f"From: {frm}\r\nTo: someone@example.net\r\nSubject: {subject}\r\n{extra}\r\nbody text\r\n"
    ).encode()


class SMTPTreeBase(unittest.TestCase):
    """A running server tree with SMTP, Submission and Submissions listeners and the
    accounts mjl and other (password PASSWORD); shared by SMTP server and client tests."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        off = free_offset()
        self.ports = {"smtp": 25 + off, "submission": 587 + off, "submissions": 465 + off}
        self.cfg, self.ca = servertree.write_config(
            os.path.abspath(self.mktemp()), STATIC.format(**self.ports), DYNAMIC.format()
        )
        self.root = yield servertree.start(self, self.cfg)
        for name in ("mjl", "other"):
            acc = yield self.root.store.open_account(name)
            yield acc.set_password(PASSWORD)

    def tls(self):
        return ssl.create_default_context(cafile=self.ca)

    @defer.inlineCallbacks
    def messages(self, account, mailbox="Inbox"):
        acc = yield self.root.store.open_account(account)
        mb = yield acc.mailbox(mailbox)
        if mb is None:
            return []
        msgs = yield acc.messages(mb.id)
        out = []
        for m in msgs:
            with acc.open_message(m.id) as f:
                out.append((m, f.read()))
        return out

    @defer.inlineCallbacks
    def queue_settled(self):
        yield self.root.queue_service.kick()
        yield self.root.queue_service.idle()


class SMTPEndToEndTests(SMTPTreeBase):
    # -- incoming (port 25)

    @defer.inlineCallbacks
    def test_incoming_delivery(self):
        def client():
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
                s.ehlo("sender.example.net")
                return s.sendmail("bob@example.net", ["MJL+news@Example.ORG"], message("incoming", "bob@example.net"))

        refused = yield threads.deferToThread(client)
        self.assertEqual(refused, {})
        [(m, data)] = yield self.messages("mjl")
        self.assertEqual(m.subject, "incoming")
        self.assertTrue(data.startswith(b"Return-Path: <bob@example.net>\r\nReceived: from sender.example.net"))
        # The test tree's DNS fails temporarily: every check says so (RFC 8601 2.7).
        self.assertIn(b"Authentication-Results: mail.example.org;\r\n\tiprev=temperror policy.iprev=127.0.0.1", data)
        self.assertIn(b"\tspf=temperror smtp.mailfrom=example.net;\r\n", data)
        self.assertIn(b"\tdmarc=temperror header.from=example.net\r\n", data)
        self.assertIn(b"Received-SPF: temperror", data)
        self.assertIn(b"with ESMTP id ", data)
        self.assertEqual(m.row["mailfrom_domain"], "example.net")
        self.assertEqual(m.row["remote_ip"], "127.0.0.1")

    @defer.inlineCallbacks
    def test_incoming_over_starttls(self):
        def client():
            with smtplib.SMTP("localhost", self.ports["smtp"], timeout=10) as s:
                s.starttls(context=self.tls())
                s.sendmail("bob@example.net", ["mjl@example.org"], message("tls", "bob@example.net"))

        yield threads.deferToThread(client)
        [(m, data)] = yield self.messages("mjl")
        self.assertIn(b"with ESMTPS id", data)
        self.assertIn(b"version=TLSv1.3", data)
        self.assertEqual(m.row["tls_version"], "TLSv1.3")

    @defer.inlineCallbacks
    def test_unknown_and_relay_refused(self):
        def client():
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
                errors = []
                for rcpt in ("nobody@example.org", "someone@elsewhere.net"):
                    try:
                        s.sendmail("bob@example.net", [rcpt], message())
                    except smtplib.SMTPRecipientsRefused as e:
                        errors.append(e.recipients[rcpt])
                return errors

        errors = yield threads.deferToThread(client)
        self.assertEqual(errors[0][0], 550)
        self.assertTrue(errors[0][1].startswith(b"5.1.1"))
        self.assertEqual(errors[1][0], 550)
        self.assertIn(b"relaying not permitted", errors[1][1])

    @defer.inlineCallbacks
    def test_ruleset_and_alias(self):
        def client():
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
                s.sendmail("list@twisted.example.net", ["mjl@example.org"],
                           message("list post", "x@example.net", "List-Id: Twisted <twisted.example.net>\r\n"))
                s.sendmail("bob@example.net", ["team@example.org"], message("to the team", "bob@example.net"))

        yield threads.deferToThread(client)
        listed = yield self.messages("mjl", "Lists/Twisted")
        self.assertEqual([m.subject for m, _ in listed], ["list post"])
        mine = yield self.messages("mjl")
        theirs = yield self.messages("other")
        self.assertEqual([m.subject for m, _ in mine], ["to the team"])
        self.assertEqual([m.subject for m, _ in theirs], ["to the team"])

    @defer.inlineCallbacks
    def test_quota(self):
        big = message("big", "bob@example.net") + b"x" * 150000 + b"\r\n"

        def client():
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
                try:
                    s.sendmail("bob@example.net", ["mjl@example.org"], big)
                except smtplib.SMTPDataError as e:
                    return e.smtp_code, e.smtp_error

        code, text = yield threads.deferToThread(client)
        self.assertEqual(code, 552)
        self.assertIn(b"quota", text)

    def send(self, rcpt, msg, sender="bob@example.net"):
        def client():
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
                s.ehlo("sender.example.net")
                s.mail(sender)
                code, text = s.rcpt(rcpt)
                if code != 250:
                    return code, text
                return s.data(msg)
        return threads.deferToThread(client)

    def enable_off_example(self):
        mconfig.write_dynamic(self.cfg.dynamic_path, self.cfg.static,
                              lambda doc: doc["Domains"]["off.example"].__setitem__("Disabled", False))
        os.utime(self.cfg.dynamic_path, (3, 3))
        self.root.watcher.check()

    @defer.inlineCallbacks
    def test_disabled_domain_waits(self):
        """A disabled domain refuses temporarily, directly and through an alias whose
        only member is there; an alias member there is not passed by: the message waits
        in the queue for the domain and is delivered once it is enabled."""
        code, text = yield self.send("away@off.example", message("direct", "bob@example.net"))
        self.assertEqual((code, text[:5]), (450, b"4.2.1"))
        code, text = yield self.send("offteam@example.org", message("only member", "bob@example.net"))
        self.assertEqual((code, text[:5]), (450, b"4.2.1"))
        self.assertEqual((yield self.root.queue.list()), [])
        code, text = yield self.send("mixed@example.org", message("mixed", "bob@example.net"))
        self.assertEqual(code, 250)
        self.assertEqual([m.subject for m, _ in (yield self.messages("mjl"))], ["mixed"])
        yield self.queue_settled()
        [e] = yield self.root.queue.list()
        self.assertEqual(e.recipient, "away@off.example")
        self.assertIn("domain temporarily disabled", e.last_error)
        self.assertEqual((yield self.messages("away")), [])
        self.enable_off_example()
        yield self.root.queue.schedule([e.id], datetime.now(timezone.utc))
        yield self.queue_settled()
        self.assertEqual([m.subject for m, _ in (yield self.messages("away"))], ["mixed"])
        self.assertEqual([m.subject for m, _ in (yield self.messages("mjl"))], ["mixed"])

    @defer.inlineCallbacks
    def test_queued_alias_partial_not_duplicated(self):
        """Submission to an alias with a member in a disabled domain: the member that
        can take it gets it once; the other becomes its own queue entry."""
        yield self.submit("submission", "PLAIN", ["mixed@example.org"], message("submitted"))
        yield self.queue_settled()
        yield self.queue_settled()
        [e] = yield self.root.queue.list()
        self.assertEqual(e.recipient, "away@off.example")
        self.assertEqual(e.sender_account, "mjl")
        self.assertEqual(e.dsn_orcpt, "rfc822;mixed@example.org")
        yield self.queue_settled()
        self.assertEqual([m.subject for m, _ in (yield self.messages("mjl"))], ["submitted"])

    @defer.inlineCallbacks
    def test_alias_all_failed_waits_for_temporary(self):
        """Nobody took it: one member permanently (over mjl's quota), one temporarily
        (disabled domain). The entry waits; once the domain is back, away gets it and
        mjl's failure becomes a DSN."""
        big = message("big", frm="other@example.org") + b"x" * 150000 + b"\r\n"
        yield self.submit("submission", "PLAIN", ["mixed@example.org"], big, login="other@example.org")
        yield self.queue_settled()
        [e] = yield self.root.queue.list()
        self.assertEqual(e.recipient, "mixed@example.org")
        self.assertIn("disabled", e.last_error)
        self.enable_off_example()
        yield self.root.queue.schedule([e.id], datetime.now(timezone.utc))
        yield self.queue_settled()
        yield self.queue_settled()
        self.assertEqual([m.subject for m, _ in (yield self.messages("away"))], ["big"])
        yield self.queue_settled()
        self.assertEqual((yield self.root.queue.list()), [])
        [report] = [d for _, d in (yield self.messages("other")) if b"multipart/report" in d]
        self.assertIn(b"Final-Recipient: rfc822; mjl@example.org", report)
        self.assertIn(b"Status: 5.2.3", report)

    @defer.inlineCallbacks
    def test_two_addresses_of_one_account_queued_once(self):
        """mjl@ and mjl+x@ are one account and mailbox: a failed store is queued once."""
        local = self.root.router.local
        orig = local._deliver_one
        fails = [1]

        def flaky(rcpt, mailbox, data, mailfrom, prefix, facts):
            # The first store into mjl's account fails temporarily (a disk error).
            if rcpt.account == "mjl" and fails[0]:
                fails[0] -= 1
                return defer.succeed(RcptResult(rcpt, False, c.C451_LOCAL_ERROR, c.SE_MAIL_SYSTEM_OTHER0, "disk error"))
            return orig(rcpt, mailbox, data, mailfrom, prefix, facts)

        self.patch(local, "_deliver_one", flaky)

        def client():
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
                s.ehlo("sender.example.net")
                s.mail("bob@example.net")
                for rcpt in ("mjl@example.org", "MJL+x@example.org", "other@example.org"):
                    s.rcpt(rcpt)
                return s.data(message("dup", "bob@example.net"))

        code, _ = yield threads.deferToThread(client)
        self.assertEqual(code, 250)
        [e] = yield self.root.queue.list()
        self.assertEqual(e.recipient, "mjl@example.org")
        yield self.queue_settled()
        self.assertEqual([m.subject for m, _ in (yield self.messages("mjl"))], ["dup"])
        self.assertEqual([m.subject for m, _ in (yield self.messages("other"))], ["dup"])

    @defer.inlineCallbacks
    def test_requeue_failure_retries_only_that_entry(self):
        """Queueing the rest of an alias fails: that entry is tried again; the other
        recipient of the message, delivered in the same group, is not."""
        q = self.root.queue
        orig = q.add
        fails = [1]

        def add(msg, mailfrom, recipients, **kw):
            if recipients == ["away@off.example"] and fails[0]:
                fails[0] -= 1
                return defer.fail(OSError(28, "No space left on device"))
            return orig(msg, mailfrom, recipients, **kw)

        self.patch(q, "add", add)
        yield self.submit("submission", "PLAIN", ["other@example.org", "mixed@example.org"], message("dupq"))
        yield self.queue_settled()
        [e] = yield q.list()
        self.assertEqual(e.recipient, "mixed@example.org")
        yield q.schedule([e.id], datetime.now(timezone.utc))
        yield self.queue_settled()
        self.assertEqual(len((yield self.messages("other"))), 1)
        [e] = yield q.list()
        self.assertEqual(e.recipient, "away@off.example")
        self.flushLoggedErrors(OSError)

    @defer.inlineCallbacks
    def test_partial_failure_queued_with_dsn(self):
        """An alias message one member's account cannot take while another's stored it:
        250 (the sender must not send it again), and the failed account is queued, so
        the sender gets a DSN naming the alias instead of the message vanishing."""
        big = message("big", "bob@example.net") + b"x" * 150000 + b"\r\n"

        def client():
            with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=10) as s:
                s.ehlo("sender.example.net")
                s.mail("bob@example.net")
                s.rcpt("team@example.org")
                return s.data(big)

        code, text = yield threads.deferToThread(client)
        self.assertEqual(code, 250)
        self.assertIn(b"delivered to 1 of 2 mailboxes, the others queued as", text)
        self.assertEqual([m.subject for m, _ in (yield self.messages("other"))], ["big"])
        yield self.queue_settled()
        self.assertEqual((yield self.messages("mjl")), [])
        # The permanent failure (larger than mjl's quota) becomes a DSN to the sender,
        # queued for remote delivery (the test tree's DNS fails, so it stays queued).
        [dsn] = yield self.root.queue.list()
        self.assertTrue(dsn.is_dsn)
        self.assertEqual(dsn.recipient, "bob@example.net")
        with open(self.root.queue.message_path(dsn), "rb") as f:
            report = f.read()
        self.assertIn(b"Original-Recipient: rfc822; team@example.org", report)
        self.assertIn(b"Final-Recipient: rfc822; mjl@example.org", report)
        self.assertIn(b"Status: 5.2.3", report)

    # -- submission

    def submit(self, port_kind, mech, rcpts, msg, password=PASSWORD, login="mjl@example.org"):
        def client():
            if port_kind == "submissions":
                s = smtplib.SMTP_SSL("localhost", self.ports["submissions"], timeout=10, context=self.tls())
            else:
                s = smtplib.SMTP("localhost", self.ports["submission"], timeout=10)
                s.starttls(context=self.tls())
            with s:
                s.ehlo("client.example.org")
                s.user, s.password = login, password
                if mech.startswith("SCRAM"):
                    cm = new_client_mechanism(mech, login, password)

                    def authobject(challenge=None):
                        if challenge is None:
                            return cm.initial().decode()
                        return cm.step(challenge).decode()

                    s.auth(mech, authobject)
                else:
                    s.auth(mech, getattr(s, "auth_" + mech.lower().replace("-", "_")))
                return s.sendmail(login, rcpts, msg)

        return threads.deferToThread(client)

    @defer.inlineCallbacks
    def test_submission_every_mechanism(self):
        for i, (kind, mech) in enumerate([
            ("submission", "PLAIN"), ("submission", "LOGIN"), ("submission", "CRAM-MD5"),
            ("submissions", "SCRAM-SHA-256"), ("submissions", "SCRAM-SHA-1"),
        ]):
            yield self.submit(kind, mech, ["other@example.org"], message(f"via {mech}"))
        yield self.queue_settled()
        got = yield self.messages("other")
        self.assertEqual(
            sorted(m.subject for m, _ in got),
            sorted(f"via {m}" for m in ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "SCRAM-SHA-1")),
        )
        _m, data = got[0]
        self.assertIn(b"with ESMTPSA id", data)
        self.assertIn(b"Message-ID: <", data)  # added by submission
        self.assertIn(b"Date: ", data)

    @defer.inlineCallbacks
    def test_wrong_password(self):
        e = yield self.assertFailure(
            self.submit("submission", "PLAIN", ["other@example.org"], message(), password="wrong"),
            smtplib.SMTPAuthenticationError,
        )
        self.assertEqual(e.smtp_code, 535)
        e = yield self.assertFailure(
            self.submit("submissions", "SCRAM-SHA-256", ["other@example.org"], message(), password="wrong"),
            smtplib.SMTPAuthenticationError,
        )
        self.assertEqual(e.smtp_code, 535)

    @defer.inlineCallbacks
    def test_auth_requires_tls(self):
        def client():
            with smtplib.SMTP("localhost", self.ports["submission"], timeout=10) as s:
                s.ehlo()
                return s.has_extn("auth"), s.docmd("AUTH", "PLAIN AG1qbEBleGFtcGxlLm9yZwB4")

        has_auth, (code, text) = yield threads.deferToThread(client)
        self.assertFalse(has_auth)
        self.assertEqual(code, 538)

    @defer.inlineCallbacks
    def test_submission_bcc_removed_and_from_checked(self):
        msg = message("secret", extra="Bcc: hidden@example.org\r\n")
        yield self.submit("submission", "PLAIN", ["other@example.org"], msg)
        yield self.queue_settled()
        [(_m, data)] = yield self.messages("other")
        self.assertNotIn(b"Bcc:", data)
        self.assertNotIn(b"hidden@example.org", data)
        e = yield self.assertFailure(
            self.submit("submission", "PLAIN", ["other@example.org"], message(frm="other@example.org")),
            smtplib.SMTPDataError,
        )
        self.assertEqual(e.smtp_code, 550)
        self.assertIn(b"does not belong to account mjl", e.smtp_error)

    @defer.inlineCallbacks
    def test_remote_recipient_stays_queued(self):
        yield self.submit("submission", "PLAIN", ["friend@example.net", "other@example.org"], message("mixed"))
        yield self.queue_settled()
        entries = yield self.root.queue.list()
        self.assertEqual([e.recipient for e in entries], ["friend@example.net"])
        # The test tree's resolver fails every lookup temporarily.
        self.assertIn(c.reply_text(c.C451_LOCAL_ERROR, c.SE_NET_DIRECTORY_FAILURE3, "looking up MX records of example.net"),
                      entries[0].last_error)
        got = yield self.messages("other")
        self.assertEqual([m.subject for m, _ in got], ["mixed"])

    @defer.inlineCallbacks
    def test_missing_queue_file_fails_with_dsn(self):
        ids = yield self.root.queue.add(message("gone"), "mjl@example.org", ["other@example.org"],
                                        sender_account="mjl", hold=True, max_attempts=9)
        [e] = yield self.root.queue.list()
        os.remove(self.root.queue.message_path(e))
        yield self.root.queue.unhold(ids)
        yield self.queue_settled()
        yield self.queue_settled()
        self.assertEqual((yield self.root.queue.list()), [])
        msgs = yield self.messages("mjl")
        [data] = [d for _, d in msgs if b"multipart/report" in d]
        self.assertIn(b"message file missing from the queue", data)
        self.assertEqual((yield self.messages("other")), [])
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_swaks(self):
        swaks = shutil.which("swaks")
        if swaks is None:
            raise unittest.SkipTest("swaks not installed (.ci/run installs it)")

        def run():
            return subprocess.run(
                [swaks, "--server", "127.0.0.1", "--port", str(self.ports["submission"]),
                 "--tls", "--tls-verify", "--tls-ca-path", self.ca, "--tls-sni", "localhost",
                 "--auth", "PLAIN", "--auth-user", "mjl@example.org", "--auth-password", PASSWORD,
                 "--from", "mjl@example.org", "--to", "other@example.org",
                 "--h-From", "mjl@example.org", "--h-Subject", "from swaks"],
                capture_output=True, text=True, timeout=30,
            )

        proc = yield threads.deferToThread(run)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        yield self.queue_settled()
        got = yield self.messages("other")
        self.assertEqual([m.subject for m, _ in got], ["from swaks"])

    @defer.inlineCallbacks
    def test_daily_limit_names_config_field(self):
        mconfig.write_dynamic(
            self.cfg.dynamic_path,
            self.cfg.static,
            lambda doc: doc["Accounts"]["mjl"].__setitem__("MaxOutgoingMessagesPerDay", 2),
        )
        os.utime(self.cfg.dynamic_path, (3, 3))
        self.root.watcher.check()
        yield self.submit("submission", "PLAIN", ["other@example.org"], message("one"))
        yield self.submit("submission", "PLAIN", ["other@example.org"], message("two"))
        e = yield self.assertFailure(
            self.submit("submission", "PLAIN", ["other@example.org"], message("three")),
            smtplib.SMTPDataError,
        )
        self.assertEqual(e.smtp_code, 451)
        self.assertIn(b"MaxOutgoingMessagesPerDay = 2", e.smtp_error)
