"""Tests for moxtw.queue.dsn: composing DSNs (RFC 3464, 6522, 6533), deriving status codes, the
queue hook, and a DSN delivered end to end in a localserve tree."""

import email
import email.policy
import os
import smtplib
from datetime import timedelta

from twisted.internet import defer, task, threads
from twisted.trial import unittest

from moxtw.queue import dsn
from moxtw import localserve
from moxtw import message as msgparse
from moxtw.queue import Queue
from moxtw.test import servertree
from moxtw.test.test_localserve import free_offset
from moxtw.test.test_queue import NOW, T0

HOST = "mail.example.org"

ORIGINAL = (
    b"From: Mjl <mjl@example.org>\r\n"
    b"To: Bob <bob@example.com>\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Message-ID: <orig1@example.org>\r\n"
    b"\r\n"
    b"The body of the original message.\r\n"
)

MULTILINE = (
    "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
    "550-5.1.1 double-checking the recipient's email address for typos or\r\n"
    "550 5.1.1 unnecessary spaces. For more information, go to the help center."
)


def rcpt(**kw):
    kw.setdefault("recipient", "bob@example.com")
    kw.setdefault("status", "5.1.1")
    kw.setdefault("diagnostic", "550 5.1.1 no such user")
    kw.setdefault("last_attempt", NOW)
    return dsn.RecipientStatus(**kw)


def compose(**kw):
    kw.setdefault("kind", "failed")
    kw.setdefault("hostname", HOST)
    kw.setdefault("sender", "mjl@example.org")
    kw.setdefault("recipients", [rcpt()])
    kw.setdefault("original_headers", ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n")
    kw.setdefault("original", ORIGINAL)
    kw.setdefault("envid", None)
    kw.setdefault("ret", None)
    kw.setdefault("now", NOW)
    kw.setdefault("message_id_domain", HOST)
    kw.setdefault("smtputf8", False)
    return dsn.compose(**kw)


def parse(data):
    return email.message_from_bytes(data, policy=email.policy.default)


def status_groups(msg):
    """The field groups of the delivery-status part: [per-message, per-recipient...]."""
    part = msg.get_payload()[1]
    return part.get_payload()


class ParseReplyTests(unittest.SynchronousTestCase):
    def test_parse_reply(self):
        cases = {
            "550 5.1.1 no such user": (550, "5.1.1"),
            "550-5.1.1 first\r\n550 5.1.1 last": (550, "5.1.1"),
            "451 4.7.1 greylisted": (451, "4.7.1"),
            "421 service shutting down": (421, None),
            "554": (554, None),
            "552 5.3.4 too big": (552, "5.3.4"),
            "550 4.1.1 class mismatch": (550, None),  # RFC 3463 2: classes must agree
            "550 5.1.1.": (550, None),
            "5501 x": (None, None),
            "connection refused": (None, None),
            "internal error: boom": (None, None),
            "": (None, None),
        }
        for text, want in cases.items():
            self.assertEqual(dsn.parse_reply(text), want, text)

    def test_status(self):
        cases = [
            ("550 5.1.1 no such user", "failed", "5.1.1"),
            ("554 transaction failed", "failed", "5.0.0"),
            ("dial tcp: connection refused", "failed", "5.0.0"),
            ("451 4.3.0 try later", "failed", "5.4.7"),  # given up after retries
            ("451 4.3.0 try later", "delayed", "4.3.0"),
            ("421 closing", "delayed", "4.0.0"),
            ("dial tcp: connection refused", "delayed", "4.4.1"),
            ("", "delayed", "4.4.1"),
        ]
        for text, kind, want in cases:
            self.assertEqual(dsn.status(text, kind), want, (text, kind))
        self.assertRaises(ValueError, dsn.status, "550", "relayed")


class ComposeTests(unittest.SynchronousTestCase):
    def test_failed_structure(self):
        data = compose(envid="env+2B1", arrival_date=NOW - timedelta(hours=1),
                       message_id="dsn1@mail.example.org")
        msg = parse(data)
        # RFC 6522 3: multipart/report with the report type.
        self.assertEqual(msg.get_content_type(), "multipart/report")
        self.assertEqual(msg.get_param("report-type"), "delivery-status")
        self.assertEqual(msg["From"].addresses[0].addr_spec, f"postmaster@{HOST}")
        self.assertEqual(msg["From"].addresses[0].display_name, "Mail Delivery Subsystem")
        self.assertEqual(msg["To"].addresses[0].addr_spec, "mjl@example.org")
        self.assertEqual(msg["Subject"], "Delivery failure: Quarterly numbers")
        self.assertEqual(msg["Auto-Submitted"], "auto-replied")  # RFC 3834 5
        self.assertEqual(msg["Message-ID"], "<dsn1@mail.example.org>")
        self.assertEqual(msg["Date"].datetime, NOW)
        self.assertIsNone(msg["Content-Transfer-Encoding"])  # all 7-bit
        parts = msg.get_payload()
        self.assertEqual([p.get_content_type() for p in parts],
                         ["text/plain", "message/delivery-status", "message/rfc822"])

        text = parts[0].get_content()
        self.assertIn("bob@example.com", text)
        self.assertIn("550 5.1.1 no such user", text)
        self.assertIn("Quarterly numbers", text)
        self.assertIn("What you can do", text)

        per_msg, per_rcpt = status_groups(msg)
        self.assertEqual(per_msg["Reporting-MTA"], f"dns; {HOST}")
        self.assertEqual(per_msg["Original-Envelope-Id"], "env+1")
        self.assertEqual(email.utils.parsedate_to_datetime(per_msg["Arrival-Date"]),
                         NOW - timedelta(hours=1))
        self.assertEqual(per_rcpt["Final-Recipient"], "rfc822; bob@example.com")
        self.assertIsNone(per_rcpt["Original-Recipient"])
        self.assertEqual(per_rcpt["Action"], "failed")
        self.assertEqual(per_rcpt["Status"], "5.1.1")
        self.assertEqual(per_rcpt["Diagnostic-Code"], "smtp; 550 5.1.1 no such user")
        self.assertEqual(email.utils.parsedate_to_datetime(per_rcpt["Last-Attempt-Date"]), NOW)
        self.assertIsNone(per_rcpt["Will-Retry-Until"])
        self.assertIsNone(per_rcpt["Remote-MTA"])

        # RET default for failures: the full message.
        [orig] = parts[2].get_payload()
        self.assertEqual(orig["Message-ID"], "<orig1@example.org>")
        self.assertEqual(orig.get_content(), "The body of the original message.\r\n")
        self.assertIn(ORIGINAL, data)

    def test_wire_format(self):
        data = compose(recipients=[rcpt(diagnostic=MULTILINE + " " + "x" * 2000 + " y")])
        self.assertTrue(data.isascii())
        self.assertEqual(data.count(b"\n"), data.count(b"\r\n"))
        self.assertLessEqual(max(len(line) for line in data.split(b"\r\n")), 998)
        self.assertTrue(data.endswith(b"--\r\n"))

    def test_multiline_diagnostic_folded(self):
        # RFC 3464 2.3.6: the full reply; each reply line on a folded line of its own.
        data = compose(recipients=[rcpt(diagnostic=MULTILINE, remote_mta="mx.example.com")])
        self.assertIn(
            b"Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach\r\n"
            b" does not exist. Please try\r\n"
            b" 550-5.1.1 double-checking the recipient's email address for typos or\r\n"
            b" 550 5.1.1 unnecessary spaces. For more information, go to the help center.\r\n",
            data,
        )
        msg = parse(data)
        _, per_rcpt = status_groups(msg)
        value = " ".join(per_rcpt["Diagnostic-Code"].split())
        self.assertEqual(value, "smtp; " + " ".join(MULTILINE.split()))
        self.assertEqual(per_rcpt["Remote-MTA"], "dns; mx.example.com")
        # The human-readable part has the reply line by line (long lines wrapped, the
        # continuations indented further).
        text = msg.get_payload()[0].get_content().replace("\r\n      ", " ")
        for line in MULTILINE.split("\r\n"):
            self.assertIn("\r\n    " + line + "\r\n", text)
        self.assertIn("mx.example.com", text)

    def test_original_recipient_from_orcpt(self):
        # RFC 3461 4.2: ORCPT is addr-type ";" xtext; RFC 3464 2.3.1.
        data = compose(recipients=[rcpt(orcpt="rfc822;bob+2Blist@example.com")])
        _, per_rcpt = status_groups(parse(data))
        self.assertEqual(per_rcpt["Original-Recipient"], "rfc822; bob+list@example.com")

    def test_no_diagnostic_code_without_reply(self):
        data = compose(recipients=[rcpt(status="5.0.0", diagnostic="no route to host")])
        msg = parse(data)
        _, per_rcpt = status_groups(msg)
        self.assertIsNone(per_rcpt["Diagnostic-Code"])
        self.assertIn("no route to host", msg.get_payload()[0].get_content())

    def test_several_recipients(self):
        data = compose(recipients=[rcpt(), rcpt(recipient="carol@example.com", status="5.2.2",
                                                diagnostic="552 5.2.2 mailbox full")])
        groups = status_groups(parse(data))
        self.assertEqual(len(groups), 3)
        self.assertEqual([g["Final-Recipient"] for g in groups[1:]],
                         ["rfc822; bob@example.com", "rfc822; carol@example.com"])
        self.assertEqual([g["Status"] for g in groups[1:]], ["5.1.1", "5.2.2"])

    def test_ret_hdrs(self):
        # RFC 3461 4.3: RET=HDRS returns the header section only.
        msg = parse(compose(ret="HDRS"))
        part = msg.get_payload()[2]
        self.assertEqual(part.get_content_type(), "text/rfc822-headers")
        content = part.get_content()
        self.assertIn("Message-ID: <orig1@example.org>", content)
        self.assertNotIn("The body", content)
        self.assertIn("header of the original", msg.get_payload()[0].get_content())

    def test_ret_full_explicit(self):
        msg = parse(compose(ret="full"))
        self.assertEqual(msg.get_payload()[2].get_content_type(), "message/rfc822")

    def test_large_original_headers_only(self):
        big = ORIGINAL + b"x" * 100 + b"\r\n"
        big = big + (b"y" * 998 + b"\r\n") * (dsn.MAX_FULL_ORIGINAL // 1000 + 1)
        msg = parse(compose(original=big))
        self.assertEqual(msg.get_payload()[2].get_content_type(), "text/rfc822-headers")
        # Without the full message (the queue hook reads only a large message's start).
        msg = parse(compose(original=None))
        self.assertEqual(msg.get_payload()[2].get_content_type(), "text/rfc822-headers")

    def test_delayed(self):
        until = NOW + timedelta(hours=14)
        data = compose(kind="delayed", ret="FULL", recipients=[rcpt(
            status="4.4.1", diagnostic="", will_retry_until=until)])
        msg = parse(data)
        self.assertEqual(msg["Subject"], "Delivery delayed: Quarterly numbers")
        parts = msg.get_payload()
        # Delays return headers only, whatever RET says.
        self.assertEqual(parts[2].get_content_type(), "text/rfc822-headers")
        _, per_rcpt = status_groups(msg)
        self.assertEqual(per_rcpt["Action"], "delayed")
        self.assertEqual(per_rcpt["Status"], "4.4.1")
        self.assertEqual(email.utils.parsedate_to_datetime(per_rcpt["Will-Retry-Until"]), until)
        text = parts[0].get_content()
        self.assertIn("delayed", text)
        self.assertIn("keeps trying", text)

    def test_non_ascii_without_smtputf8(self):
        # The DSN stays 7-bit where it can: RFC 2047 subject, quoted-printable text,
        # escapes in the delivery status (RFC 6533 3); only the returned message is 8bit.
        original = ORIGINAL.replace(b"Quarterly numbers", "Résumé".encode()).replace(
            b"The body", "Le corps".encode() + " é".encode())
        data = compose(original=original, original_headers=original.split(b"\r\n\r\n")[0],
                       recipients=[rcpt(diagnostic="550 5.1.1 utilisateur inconnu: é")])
        msg = parse(data)
        self.assertEqual(msg["Subject"], "Delivery failure: Résumé")
        self.assertTrue(data.split(b"\r\n\r\n")[0].isascii())
        self.assertEqual(msg["Content-Transfer-Encoding"], "8bit")  # RFC 2045 6.4
        parts = msg.get_payload()
        self.assertEqual(parts[0]["Content-Transfer-Encoding"], "quoted-printable")
        self.assertIn("utilisateur inconnu: é", parts[0].get_content())
        self.assertEqual(parts[1].get_content_type(), "message/delivery-status")
        _, per_rcpt = status_groups(msg)
        self.assertEqual(per_rcpt["Diagnostic-Code"], "smtp; 550 5.1.1 utilisateur inconnu: \\x{E9}")
        self.assertEqual(parts[2]["Content-Transfer-Encoding"], "8bit")
        self.assertIn(original, data)

    def test_smtputf8_global_types(self):
        # RFC 6533: message/global-delivery-status, message/global, utf-8 address type.
        original = (
            "From: Jöran <jöran@exämple.org>\r\nTo: <bøb@exämple.com>\r\n"
            "Subject: Grüße\r\n\r\nHallo\r\n"
        ).encode()
        data = compose(sender="jöran@exämple.org", smtputf8=True, original=original,
                       original_headers=original.split(b"\r\n\r\n")[0],
                       recipients=[rcpt(recipient="bøb@exämple.com",
                                        orcpt="utf-8;bøb@exämple.com")])
        msg = email.message_from_string(data.decode(), policy=email.policy.default)
        self.assertIn("Subject: Delivery failure: Grüße\r\n".encode(), data)  # RFC 6532 3.2
        self.assertEqual(msg["To"].addresses[0].addr_spec, "jöran@exämple.org")
        parts = msg.get_payload()
        self.assertEqual([p.get_content_type() for p in parts],
                         ["text/plain", "message/global-delivery-status", "message/global"])
        self.assertEqual(parts[0]["Content-Transfer-Encoding"], "8bit")
        body = data.split(b"Content-Type: message/global-delivery-status\r\n", 1)[1]
        self.assertIn("Final-Recipient: utf-8; bøb@exämple.com\r\n".encode(), body)
        self.assertIn("Original-Recipient: utf-8; bøb@exämple.com\r\n".encode(), body)
        self.assertIn(original, data)
        # Headers only: message/global-headers.
        msg = parse(compose(smtputf8=True, ret="HDRS", original=original,
                            original_headers=original.split(b"\r\n\r\n")[0]))
        self.assertEqual(msg.get_payload()[2].get_content_type(), "message/global-headers")

    def test_message_parse(self):
        """The DSN is read back by moxtw's own parser like any stored message."""
        data = compose(recipients=[rcpt(diagnostic=MULTILINE)])
        root = msgparse.parse(data)
        self.assertEqual((root.media_type, root.media_subtype), ("multipart", "report"))
        self.assertEqual(root.params.get("report-type"), "delivery-status")
        self.assertEqual([(p.media_type, p.media_subtype) for p in root.parts],
                         [("text", "plain"), ("message", "delivery-status"),
                          ("message", "rfc822")])
        self.assertEqual(root.header("Subject"), "Delivery failure: Quarterly numbers")
        self.assertEqual(root.header("Auto-Submitted"), "auto-replied")
        status = data[root.parts[1].body_offset:root.parts[1].end_offset]
        self.assertIn(b"Action: failed\r\n", status)
        embedded = root.parts[2].message
        self.assertIsNotNone(embedded)
        self.assertEqual(embedded.header("Subject"), "Quarterly numbers")
        summary = msgparse.summary(data)
        self.assertEqual(summary.subject, "Delivery failure: Quarterly numbers")

    def test_no_subject(self):
        headers = b"From: mjl@example.org\r\n"
        msg = parse(compose(original_headers=headers, original=headers + b"\r\nx\r\n"))
        self.assertEqual(msg["Subject"], "Delivery failure")

    def test_bad_arguments(self):
        self.assertRaises(ValueError, compose, kind="relayed")
        self.assertRaises(ValueError, compose, recipients=[])


class QueueDSNTests(unittest.TestCase):
    """The queue hook reads the original, composes and queues the DSN."""

    @defer.inlineCallbacks
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.queue = Queue(self.mktemp(), clock=self.clock)
        yield self.queue.open()
        self.addCleanup(self.queue.close)
        self.hook = dsn.QueueDSN(self.queue, HOST, clock=self.clock)

    @defer.inlineCallbacks
    def queued_dsn(self, dsn_id):
        entry = yield self.queue.get(dsn_id)
        with self.queue.open_message(entry) as f:
            return entry, entry.msg_prefix + f.read()

    @defer.inlineCallbacks
    def test_failed(self):
        [i] = yield self.queue.add(
            ORIGINAL, "mjl@example.org", ["bob@example.com"], sender_account="mjl",
            msg_prefix=b"DKIM-Signature: v=1; d=example.org\r\n", dsn_envid="env1",
            rcpt_dsn={"bob@example.com": {"orcpt": "rfc822;bob@example.com"}},
        )
        entry = yield self.queue.get(i)
        self.clock.advance(60)
        ids = yield self.hook(entry, "failed", MULTILINE)
        [d] = ids
        dentry, data = yield self.queued_dsn(d)
        self.assertEqual((dentry.sender, dentry.recipient), ("", "mjl@example.org"))
        self.assertTrue(dentry.is_dsn)
        self.assertEqual(dentry.sender_account, "")
        self.assertEqual(dentry.subject, "Delivery failure: Quarterly numbers")
        msg = parse(data)
        self.assertEqual(msg["Message-ID"], f"<{dentry.message_id}>")
        per_msg, per_rcpt = status_groups(msg)
        self.assertEqual(per_msg["Original-Envelope-Id"], "env1")
        self.assertEqual(email.utils.parsedate_to_datetime(per_msg["Arrival-Date"]), NOW)
        self.assertEqual(per_rcpt["Status"], "5.1.1")
        self.assertEqual(per_rcpt["Original-Recipient"], "rfc822; bob@example.com")
        self.assertEqual(email.utils.parsedate_to_datetime(per_rcpt["Last-Attempt-Date"]),
                         NOW + timedelta(seconds=60))
        # The original as sent: with its prefix.
        self.assertIn(b"DKIM-Signature: v=1; d=example.org\r\n" + ORIGINAL, data)

    @defer.inlineCallbacks
    def test_delayed_with_give_up_time(self):
        [i] = yield self.queue.add(ORIGINAL, "mjl@example.org", ["bob@example.com"],
                                   sender_account="mjl", dsn_ret="FULL", max_attempts=8)
        for n in range(5):
            entry = yield self.queue.record_attempt(
                i, ok=False, permanent=False, error="connection refused",
                next_attempt=self.queue.now() + timedelta(minutes=1))
        [d] = yield self.hook(entry, "delayed", "connection refused")
        _, data = yield self.queued_dsn(d)
        msg = parse(data)
        self.assertEqual(msg.get_payload()[2].get_content_type(), "text/rfc822-headers")
        _, per_rcpt = status_groups(msg)
        self.assertEqual((per_rcpt["Action"], per_rcpt["Status"]), ("delayed", "4.4.1"))
        # Attempts 6, 7 and 8 follow after 2h, 4h and 8h.
        self.assertEqual(email.utils.parsedate_to_datetime(per_rcpt["Will-Retry-Until"]),
                         entry.last_attempt + timedelta(hours=14))

    @defer.inlineCallbacks
    def test_large_message_headers_only(self):
        self.hook.max_full = 100
        [i] = yield self.queue.add(ORIGINAL + b"z" * 200 + b"\r\n", "mjl@example.org",
                                   ["bob@example.com"], sender_account="mjl")
        [d] = yield self.hook((yield self.queue.get(i)), "failed", "550 no")
        _, data = yield self.queued_dsn(d)
        part = parse(data).get_payload()[2]
        self.assertEqual(part.get_content_type(), "text/rfc822-headers")
        self.assertIn("Subject: Quarterly numbers", part.get_content())

    @defer.inlineCallbacks
    def test_smtputf8(self):
        original = "From: jöran@exämple.org\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode()
        [i] = yield self.queue.add(original, "jöran@exämple.org", ["bob@example.com"],
                                   sender_account="mjl", smtputf8=True, has_8bit=True)
        [d] = yield self.hook((yield self.queue.get(i)), "failed", "550 5.1.1 no")
        dentry, data = yield self.queued_dsn(d)
        self.assertEqual(dentry.recipient, "jöran@exämple.org")
        self.assertTrue(dentry.smtputf8)
        self.assertTrue(dentry.has_8bit)
        self.assertEqual([p.get_content_type() for p in parse(data).get_payload()],
                         ["text/plain", "message/global-delivery-status", "message/global"])


class LocalserveDSNTests(unittest.TestCase):
    """End to end: a submitted message whose delivery fails comes back as a DSN."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        cfg = localserve.prepare(os.path.abspath(self.mktemp()), "127.0.0.1", free_offset())
        self.root = yield servertree.start(self, cfg, localserve=True)
        acc = yield self.root.store.open_account(localserve.ACCOUNT)
        yield acc.set_password(localserve.PASSWORD)

    def port(self, kind):
        for svc in self.root.listeners:
            if kind in svc.spec.kinds:
                return svc.port.getHost().port
        raise KeyError(kind)

    @defer.inlineCallbacks
    def test_failed_delivery_returns_dsn(self):
        original = (b"From: mox@localhost\r\nTo: queue-fail@localhost\r\n"
                    b"Subject: will bounce\r\nMessage-ID: <bounce1@localhost>\r\n"
                    b"\r\nThis message cannot be delivered.\r\n")

        def client():
            with smtplib.SMTP("127.0.0.1", self.port("Submission"), timeout=10) as s:
                s.login(localserve.ADDRESS, localserve.PASSWORD)
                s.sendmail("mox@localhost", ["queue-fail@localhost"], original,
                           mail_options=["RET=FULL", "ENVID=e2e1"],
                           rcpt_options=["NOTIFY=FAILURE", "ORCPT=rfc822;queue-fail@localhost"])

        yield threads.deferToThread(client)
        for _ in range(2):  # the failure queues the DSN, which is then delivered
            yield self.root.queue_service.kick()
            yield self.root.queue_service.idle()
        self.assertEqual((yield self.root.queue.list()), [])

        acc = yield self.root.store.open_account(localserve.ACCOUNT)
        inbox = yield acc.mailbox("Inbox")
        msgs = yield acc.messages(inbox.id)
        self.assertEqual([m.subject for m in msgs], ["Delivery failure: will bounce"])
        with acc.open_message(msgs[0].id) as f:
            data = f.read()
        msg = parse(data)
        self.assertEqual(msg["Return-Path"], "<>")  # null reverse-path
        self.assertEqual(msg["From"].addresses[0].addr_spec, "postmaster@localhost")
        self.assertEqual(msg["Auto-Submitted"], "auto-replied")
        self.assertEqual(msg.get_content_type(), "multipart/report")
        parts = msg.get_payload()
        self.assertEqual([p.get_content_type() for p in parts],
                         ["text/plain", "message/delivery-status", "message/rfc822"])
        per_msg, per_rcpt = status_groups(msg)
        self.assertEqual(per_msg["Reporting-MTA"], "dns; localhost")
        self.assertEqual(per_msg["Original-Envelope-Id"], "e2e1")
        self.assertEqual(per_rcpt["Final-Recipient"], "rfc822; queue-fail@localhost")
        self.assertEqual(per_rcpt["Original-Recipient"], "rfc822; queue-fail@localhost")
        self.assertEqual((per_rcpt["Action"], per_rcpt["Status"]), ("failed", "5.0.0"))
        self.assertTrue(per_rcpt["Diagnostic-Code"].startswith("smtp; 550 "))
        [orig] = parts[2].get_payload()
        self.assertEqual(orig["Message-ID"], "<bounce1@localhost>")
        self.assertIn("This message cannot be delivered.", orig.get_content())
        root = msgparse.parse(data)
        self.assertEqual(root.parts[2].message.header("Subject"), "will bounce")

    @defer.inlineCallbacks
    def test_notify_never_no_dsn(self):
        def client():
            with smtplib.SMTP("127.0.0.1", self.port("Submission"), timeout=10) as s:
                s.login(localserve.ADDRESS, localserve.PASSWORD)
                s.sendmail("mox@localhost", ["queue-fail@localhost"],
                           b"From: mox@localhost\r\nSubject: quiet\r\n\r\nx\r\n",
                           rcpt_options=["NOTIFY=NEVER"])

        yield threads.deferToThread(client)
        for _ in range(2):
            yield self.root.queue_service.kick()
            yield self.root.queue_service.idle()
        self.assertEqual((yield self.root.queue.list()), [])
        acc = yield self.root.store.open_account(localserve.ACCOUNT)
        inbox = yield acc.mailbox("Inbox")
        self.assertEqual((yield acc.messages(inbox.id)), [])



class XtextTests(unittest.SynchronousTestCase):
    def test_round_trip(self):
        """RFC 3461 4: "+", "=", space and controls are hex-escaped; the rest stays."""
        from moxtw.smtp.xtext import xtext_decode, xtext_encode
        self.assertEqual(xtext_encode("a+b=c d@x.example"), "a+2Bb+3Dc+20d@x.example")
        self.assertEqual(xtext_encode("\x00\x7f"), "+00+7F")
        for text in ("bob+tag@example.org", "x=y", "plain@example.org", "+2B"):
            self.assertEqual(xtext_decode(xtext_encode(text)), text)
