"""SMTP client unit tests: scripted server replies over a StringTransport, a task.Clock
for timeouts."""

import random

from twisted.internet import error as ierror, task
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from moxtw.smtpclient import client as sc
from moxtw.smtpclient.data import dot_stuffed_chunks, has_bare_cr
from moxtw.smtpclient.reply import MAX_LINE, MAX_LINES, ReplyError, ReplyParser

MSG = b"Subject: hi\r\n\r\nbody\r\n"

EHLO_FULL = (
    "250-mx.example.net hello\n250-PIPELINING\n250-8BITMIME\n250-SMTPUTF8\n"
    "250-ENHANCEDSTATUSCODES\n250 SIZE 1000\n"
)
EHLO_PLAIN = "250-mx.example.net hello\n250 ENHANCEDSTATUSCODES\n"


class TLSStringTransport(StringTransport):
    def __init__(self):
        super().__init__()
        self.tls_started = None

    def startTLS(self, ctx):
        self.tls_started = ctx


class Harness:
    def __init__(self, **kw):
        opts = dict(host="mx.example.net", ehlo_hostname="client.example.org", mailfrom="a@example.org",
                    recipients=["b@example.net"], data=MSG, tls="none", command_timeout=300, data_timeout=600)
        opts.update(kw)
        self.clock = task.Clock()
        self.proto = sc.SMTPClientProtocol(self.clock, sc.Options(**opts))
        self.t = TLSStringTransport()
        self.outcome = []
        self.proto.done.addBoth(self.outcome.append)
        self.proto.makeConnection(self.t)

    def server(self, text):
        self.proto.dataReceived(text.replace("\n", "\r\n").encode())

    def sent(self):
        v = self.t.value()
        self.t.clear()
        return v

    def pump(self):
        """Let the transport pull the whole message."""
        while self.t.producer is not None:
            self.t.producer.resumeProducing()

    def close(self):
        assert self.t.disconnecting, "client did not close"
        self.proto.connectionLost(Failure(ierror.ConnectionDone()))
        [o] = self.outcome
        return o

    def result(self):
        o = self.close()
        if isinstance(o, Failure):
            raise o.value
        return o

    def error(self):
        o = self.close()
        assert isinstance(o, Failure) and o.check(sc.SMTPClientError), o
        return o.value


class ConversationTests(unittest.SynchronousTestCase):
    def test_plain_sequence(self):
        h = Harness(recipients=["b@example.net", "c@example.net"])
        self.assertEqual(h.sent(), b"")
        h.server("220 mx.example.net ESMTP\n")
        self.assertEqual(h.sent(), b"EHLO client.example.org\r\n")
        h.server(EHLO_PLAIN)
        self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org>\r\n")
        h.server("250 2.1.0 ok\n")
        self.assertEqual(h.sent(), b"RCPT TO:<b@example.net>\r\n")
        h.server("250 2.1.5 ok\n")
        self.assertEqual(h.sent(), b"RCPT TO:<c@example.net>\r\n")
        h.server("550 5.1.1 no such user\n")
        self.assertEqual(h.sent(), b"DATA\r\n")
        h.server("354 go ahead\n")
        h.pump()
        self.assertEqual(h.sent(), MSG + b".\r\n")
        h.server("250 2.0.0 queued as X\n")
        self.assertEqual(h.sent(), b"QUIT\r\n")
        self.assertFalse(h.t.disconnecting)
        h.server("221 2.0.0 bye\n")
        r = h.result()
        self.assertEqual(r.remote_banner, "mx.example.net ESMTP")
        self.assertIsNone(r.tls_version)
        self.assertEqual(r.recipients, [
            sc.RcptResult("b@example.net", True, 250, "2.0.0", "queued as X"),
            sc.RcptResult("c@example.net", False, 550, "5.1.1", "no such user"),
        ])

    def test_banner_554_permanent(self):
        h = Harness()
        h.server("554-go away\n554 really\n")
        self.assertEqual(h.sent(), b"QUIT\r\n")
        h.server("221 bye\n")
        e = h.error()
        self.assertTrue(e.permanent)
        self.assertEqual((e.stage, e.code, e.text), ("banner", 554, "go away\nreally"))

    def test_banner_421_temporary(self):
        h = Harness()
        h.server("421 busy\n")
        h.proto.connectionLost(Failure(ierror.ConnectionDone()))
        e = h.outcome[0].value
        self.assertFalse(e.permanent)
        self.assertEqual((e.stage, e.code), ("banner", 421))

    def test_helo_fallback(self):
        for code in (500, 502):
            h = Harness()
            h.server("220 old\n")
            h.sent()
            h.server(f"{code} what\n")
            self.assertEqual(h.sent(), b"HELO client.example.org\r\n")
            h.server("250 hi\n")
            # No SIZE parameter, no enhanced codes parsed.
            self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org>\r\n")
            h.server("250 ok\n")
            h.server("550 5.1.1 no\n")
            self.assertEqual(h.sent(), b"RCPT TO:<b@example.net>\r\nRSET\r\n")
            h.server("250 ok\n")
            h.server("221 bye\n")
            r = h.result()
            self.assertEqual(r.recipients, [sc.RcptResult("b@example.net", False, 550, None, "5.1.1 no")])

    def test_ehlo_other_error(self):
        h = Harness()
        h.server("220 x\n")
        h.server("554 5.7.1 no\n")
        h.server("221 bye\n")
        e = h.error()
        self.assertEqual((e.stage, e.code, e.permanent), ("ehlo", 554, True))

    def test_pipelining_mixed_results(self):
        h = Harness(recipients=["b@example.net", "c@example.net", "d@example.net"])
        h.server("220 x\n")
        h.sent()
        h.server(EHLO_FULL)
        self.assertEqual(
            h.sent(),
            b"MAIL FROM:<a@example.org> SIZE=21\r\nRCPT TO:<b@example.net>\r\n"
            b"RCPT TO:<c@example.net>\r\nRCPT TO:<d@example.net>\r\nDATA\r\n",
        )
        # Replies arrive in pieces and all at once.
        h.server("250 2.1.0 ok\n250 2.1.5 ok\n450-4.2.1 try\n")
        h.server("450 4.2.1 later\n250 2.1.5 ok\n354 go\n")
        h.pump()
        self.assertEqual(h.sent(), MSG + b".\r\n")
        h.server("250 2.0.0 done\n221 bye\n")
        self.assertEqual(h.sent(), b"QUIT\r\n")
        r = h.result()
        self.assertEqual([(x.address, x.ok, x.code) for x in r.recipients],
                         [("b@example.net", True, 250), ("c@example.net", False, 450), ("d@example.net", True, 250)])
        self.assertEqual(r.recipients[1].text, "try\nlater")
        self.assertEqual(r.recipients[1].enhanced, "4.2.1")

    def test_rcptmax_splits_transactions(self):
        # RFC 9422 4.2: at most RCPTMAX recipients per transaction; the rest go in the
        # next transaction on the same connection, with the data sent again.
        rcpts = ["b@example.net", "c@example.net", "d@example.net"]
        h = Harness(recipients=rcpts)
        h.server("220 x\n")
        h.sent()
        h.server("250-mx\n250-PIPELINING\n250 LIMITS RCPTMAX=2 MAILMAX=10\n")
        self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
                         b"RCPT TO:<c@example.net>\r\nDATA\r\n")
        h.server("250 ok\n250 ok\n550 no\n354 go\n")
        h.pump()
        self.assertEqual(h.sent(), MSG + b".\r\n")
        h.server("250 first\n")
        self.assertEqual(h.sent(), b"RSET\r\n")
        h.server("250 reset\n")
        self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org>\r\nRCPT TO:<d@example.net>\r\nDATA\r\n")
        h.server("250 ok\n250 ok\n354 go\n")
        h.pump()
        self.assertEqual(h.sent(), MSG + b".\r\n")
        h.server("250 second\n")
        self.assertEqual(h.sent(), b"QUIT\r\n")
        h.server("221 bye\n")
        r = h.result()
        self.assertEqual([(x.address, x.ok, x.code, x.text) for x in r.recipients], [
            ("b@example.net", True, 250, "first"),
            ("c@example.net", False, 550, "no"),
            ("d@example.net", True, 250, "second"),
        ])

    def test_452_too_many_recipients_retried_in_next_transaction(self):
        # RFC 5321 4.5.3.1.10: recipients refused with 452 after others were accepted
        # are tried again in a new transaction.
        h = Harness(recipients=["b@example.net", "c@example.net"])
        h.server("220 x\n")
        h.sent()
        h.server(EHLO_PLAIN)
        h.sent()
        h.server("250 ok\n")
        h.sent()
        h.server("250 ok\n")
        h.sent()
        h.server("452 4.5.3 too many recipients\n")
        self.assertEqual(h.sent(), b"DATA\r\n")
        h.server("354 go\n")
        h.pump()
        h.sent()
        h.server("250 one\n")
        self.assertEqual(h.sent(), b"RSET\r\n")
        h.server("250 ok\n")
        self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org>\r\n")
        h.server("250 ok\n")
        self.assertEqual(h.sent(), b"RCPT TO:<c@example.net>\r\n")
        h.server("250 ok\n")
        self.assertEqual(h.sent(), b"DATA\r\n")
        h.server("354 go\n")
        h.pump()
        h.sent()
        h.server("250 two\n221 bye\n")
        r = h.result()
        self.assertEqual([(x.address, x.ok, x.text) for x in r.recipients],
                         [("b@example.net", True, "one"), ("c@example.net", True, "two")])

    def test_later_transaction_failure_is_per_recipient(self):
        h = Harness(recipients=["b@example.net", "c@example.net"])
        h.server("220 x\n")
        h.sent()
        h.server("250-mx\n250 LIMITS RCPTMAX=1\n")
        h.sent()
        h.server("250 ok\n")
        h.sent()
        h.server("250 ok\n")
        h.sent()
        h.server("354 go\n")
        h.pump()
        h.sent()
        h.server("250 one\n")
        h.sent()
        h.server("250 ok\n")
        self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org>\r\n")
        h.server("451 4.3.0 mail from refused now\n")
        self.assertEqual(h.sent(), b"QUIT\r\n")
        h.server("221 bye\n")
        r = h.result()
        self.assertEqual([(x.address, x.ok, x.code) for x in r.recipients],
                         [("b@example.net", True, 250), ("c@example.net", False, 451)])

    def test_pipelining_all_rejected(self):
        h = Harness()
        h.server("220 x\n")
        h.server(EHLO_FULL)
        h.sent()
        h.server("250 ok\n550 5.1.1 no\n554 5.5.1 no valid recipients\n")
        self.assertEqual(h.sent(), b"QUIT\r\n")
        h.server("221 bye\n")
        r = h.result()
        self.assertEqual([(x.ok, x.code) for x in r.recipients], [(False, 550)])

    def test_pipelining_data_354_without_recipients(self):
        h = Harness()
        h.server("220 x\n")
        h.server(EHLO_FULL)
        h.sent()
        h.server("250 ok\n550 5.1.1 no\n354 go\n")
        self.assertEqual(h.sent(), b".\r\n")
        h.server("554 5.5.1 nothing\n")
        self.assertEqual(h.sent(), b"QUIT\r\n")
        h.server("221 bye\n")
        self.assertFalse(h.result().recipients[0].ok)

    def test_pipelining_mail_rejected(self):
        h = Harness()
        h.server("220 x\n")
        h.server(EHLO_FULL)
        h.sent()
        h.server("550 5.7.1 sender refused\n503 5.5.1 no\n503 5.5.1 no\n")
        h.server("221 bye\n")
        e = h.error()
        self.assertEqual((e.stage, e.code, e.enhanced, e.text, e.permanent),
                         ("mail", 550, "5.7.1", "sender refused", True))

    def test_data_rejected_carries_recipients(self):
        h = Harness()
        h.server("220 x\n")
        h.server(EHLO_FULL)
        h.server("250 ok\n250 ok\n354 go\n")
        h.pump()
        h.server("552-5.3.4 too big\n552 5.3.4 really\n")
        h.server("221 bye\n")
        e = h.error()
        self.assertEqual((e.stage, e.code, e.enhanced, e.text), ("data", 552, "5.3.4", "too big\nreally"))
        self.assertEqual([x.ok for x in e.recipients], [True])

    def test_size_refused(self):
        h = Harness(data=b"x" * 1001 + b"\r\n")
        h.server("220 x\n")
        h.sent()
        h.server(EHLO_FULL)
        self.assertEqual(h.sent(), b"QUIT\r\n")
        h.server("221 bye\n")
        e = h.error()
        self.assertEqual((e.stage, e.enhanced, e.permanent), ("mail", "5.3.4", True))

    def test_size_zero_is_no_limit(self):
        h = Harness(data=b"x" * 5000 + b"\r\n")
        h.server("220 x\n")
        h.sent()
        h.server("250-x\n250 SIZE 0\n")
        self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org> SIZE=5002\r\n")

    def test_8bitmime_and_smtputf8_params(self):
        h = Harness(has_8bit=True, smtputf8=True, mailfrom="ä@example.org")
        h.server("220 x\n")
        h.sent()
        h.server(EHLO_FULL)
        self.assertTrue(h.sent().startswith(
            "MAIL FROM:<ä@example.org> SIZE=21 BODY=8BITMIME SMTPUTF8\r\n".encode()))

    def test_8bitmime_missing(self):
        h = Harness(has_8bit=True)
        h.server("220 x\n")
        h.server("250-x\n250 PIPELINING\n")
        h.server("221 bye\n")
        e = h.error()
        self.assertEqual((e.enhanced, e.permanent), ("5.6.3", True))

    def test_smtputf8_missing(self):
        h = Harness(smtputf8=True)
        h.server("220 x\n")
        h.server("250-x\n250 8BITMIME\n")
        h.server("221 bye\n")
        e = h.error()
        self.assertEqual((e.enhanced, e.permanent), ("5.6.7", True))

    def test_dot_stuffing_exact(self):
        data = b".leading\r\n..two\r\nmid.dle\r\n.\r\nend"
        h = Harness(data=data)
        h.proto.o.chunk_size = 5
        h.server("220 x\n250 x\n250 ok\n250 ok\n354 go\n")
        h.sent()
        h.pump()
        self.assertEqual(h.sent(), b"..leading\r\n...two\r\nmid.dle\r\n..\r\nend\r\n.\r\n")

    def test_bare_cr_refused_before_connecting(self):
        d = sc.deliver(MemoryReactorClock(), "127.0.0.1", 25, ehlo_hostname="c.example", mailfrom="a@b.example",
                       recipients=["c@d.example"], data=b"a\rb\r\n")
        e = self.failureResultOf(d, sc.SMTPClientError).value
        self.assertEqual((e.stage, e.permanent), ("data", True))


class TLSTests(unittest.SynchronousTestCase):
    def test_opportunistic_starttls(self):
        h = Harness(tls="opportunistic")
        h.server("220 x\n")
        h.sent()
        h.server("250-x\n250-STARTTLS\n250 PIPELINING\n")
        self.assertEqual(h.sent(), b"STARTTLS\r\n")
        h.server("220 go\n")
        self.assertIsInstance(h.t.tls_started, sc.NoVerifyClientTLS)
        # RFC 3207 4.2: EHLO again; the earlier PIPELINING is forgotten.
        self.assertEqual(h.sent(), b"EHLO client.example.org\r\n")
        h.server("250 x\n")
        self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org>\r\n")
        h.server("250 ok\n250 ok\n")
        self.assertEqual(h.sent(), b"RCPT TO:<b@example.net>\r\nDATA\r\n")
        h.server("354 go\n")
        h.pump()
        h.server("250 ok\n221 bye\n")
        self.assertEqual(h.result().tls_version, "TLS")

    def test_opportunistic_without_starttls(self):
        h = Harness(tls="opportunistic")
        h.server("220 x\n")
        h.sent()
        h.server("250 x\n")
        self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org>\r\n")
        self.assertIsNone(h.t.tls_started)

    def test_opportunistic_starttls_refused(self):
        h = Harness(tls="opportunistic")
        h.server("220 x\n250-x\n250 STARTTLS\n")
        h.sent()
        h.server("454 4.7.0 tls not available\n")
        self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org>\r\n")

    def test_required_but_not_offered(self):
        h = Harness(tls="required")
        h.server("220 x\n250 x\n221 bye\n")
        e = h.error()
        self.assertEqual(e.stage, "starttls")
        self.assertFalse(e.permanent)
        self.assertIn("TLS required but server does not offer STARTTLS", e.text)

    def test_requiretls_without_starttls(self):
        h = Harness(tls="opportunistic", requiretls=True)
        h.server("220 x\n250 x\n221 bye\n")
        e = h.error()
        self.assertEqual((e.stage, e.permanent, e.enhanced), ("starttls", True, "5.7.10"))

    def test_requiretls_extension_missing(self):
        h = Harness(tls="opportunistic", requiretls=True)
        h.server("220 x\n250-x\n250 STARTTLS\n220 go\n")
        h.server("250 x\n")
        h.server("221 bye\n")
        e = h.error()
        self.assertEqual((e.stage, e.permanent, e.enhanced), ("mail", True, "5.7.30"))

    def test_requiretls_param(self):
        h = Harness(tls="opportunistic", requiretls=True)
        h.server("220 x\n250-x\n250 STARTTLS\n220 go\n")
        h.sent()
        h.server("250-x\n250 REQUIRETLS\n")
        self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org> REQUIRETLS\r\n")

    def test_requiretls_with_tls_none(self):
        d = sc.deliver(MemoryReactorClock(), "127.0.0.1", 25, ehlo_hostname="c.example", mailfrom="a@b.example",
                       recipients=["c@d.example"], data=MSG, tls="none", requiretls=True)
        self.assertEqual(self.failureResultOf(d, sc.SMTPClientError).value.enhanced, "5.7.10")

    def test_plaintext_injection_after_starttls(self):
        # RFC 3207 5 / CVE-2011-0411: a reply pipelined after the 220 is an attack.
        h = Harness(tls="opportunistic")
        h.server("220 x\n250-x\n250 STARTTLS\n")
        h.server("220 go\n250 injected\n")
        self.assertIsNone(h.t.tls_started)
        e = h.error()
        self.assertEqual(e.stage, "starttls")

    def test_auth_plain_never_without_tls(self):
        h = Harness(tls="opportunistic", auth=("u", "p"))
        h.server("220 x\n250-x\n250 AUTH PLAIN LOGIN\n")
        h.server("221 bye\n")
        e = h.error()
        self.assertEqual((e.stage, e.permanent), ("auth", True))
        self.assertIn("no usable authentication mechanism", e.text)

    def test_auth_plain_after_starttls(self):
        h = Harness(tls="opportunistic", auth=("u", "p"))
        h.server("220 x\n250-x\n250 STARTTLS\n220 go\n")
        h.sent()
        h.server("250-x\n250 AUTH LOGIN PLAIN\n")
        self.assertEqual(h.sent(), b"AUTH PLAIN AHUAcA==\r\n")
        h.server("235 2.7.0 ok\n")
        self.assertEqual(h.sent(), b"MAIL FROM:<a@example.org>\r\n")

    def test_auth_login_challenges_and_failure(self):
        h = Harness(tls="opportunistic", auth=("u", "p"), auth_mechanism="LOGIN")
        h.server("220 x\n250-x\n250 STARTTLS\n220 go\n")
        h.sent()
        h.server("250-x\n250-ENHANCEDSTATUSCODES\n250 AUTH PLAIN LOGIN\n")
        self.assertEqual(h.sent(), b"AUTH LOGIN\r\n")
        h.server("334 VXNlcm5hbWU6\n")
        self.assertEqual(h.sent(), b"dQ==\r\n")
        h.server("334 UGFzc3dvcmQ6\n")
        self.assertEqual(h.sent(), b"cA==\r\n")
        h.server("535 5.7.8 bad credentials\n221 bye\n")
        e = h.error()
        self.assertEqual((e.stage, e.code, e.enhanced, e.permanent), ("auth", 535, "5.7.8", True))

    def test_auth_bad_challenge_cancels(self):
        h = Harness(tls="opportunistic", auth=("u", "p"), auth_mechanism="CRAM-MD5")
        h.server("220 x\n250-x\n250 STARTTLS\n220 go\n")
        h.server("250-x\n250 AUTH CRAM-MD5\n")
        h.sent()
        h.server("334 !!notbase64\n")
        self.assertEqual(h.sent(), b"*\r\n")
        h.server("501 cancelled\n221 bye\n")
        self.assertEqual(h.error().stage, "auth")


class TimeoutTests(unittest.SynchronousTestCase):
    def test_banner_timeout(self):
        h = Harness(command_timeout=10)
        h.clock.advance(9)
        self.assertFalse(h.t.disconnecting)
        h.clock.advance(1)
        e = h.error()
        self.assertEqual(e.stage, "banner")
        self.assertIn("timeout", e.text)
        self.assertFalse(e.permanent)

    def test_command_timeout_per_reply(self):
        h = Harness(command_timeout=10)
        h.clock.advance(9)
        h.server("220 x\n")
        h.clock.advance(9)
        h.server("250 x\n")
        h.clock.advance(10)
        self.assertEqual(h.error().stage, "mail")

    def test_data_timeout(self):
        h = Harness(command_timeout=10, data_timeout=100)
        h.server("220 x\n250 x\n250 ok\n250 ok\n354 go\n")
        h.pump()
        h.clock.advance(99)
        self.assertFalse(h.t.disconnecting)
        h.clock.advance(1)
        self.assertEqual(h.error().stage, "data")
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_quit_timeout(self):
        h = Harness(command_timeout=10)
        h.server("220 x\n250 x\n250 ok\n250 ok\n354 go\n")
        h.pump()
        h.server("250 ok\n")
        self.assertFalse(h.t.disconnecting)
        h.clock.advance(10)
        self.assertTrue(h.result().recipients[0].ok)

    def test_connect_timeout(self):
        reactor = MemoryReactorClock()
        d = sc.deliver(reactor, "192.0.2.1", 25, ehlo_hostname="c.example", mailfrom="a@b.example",
                       recipients=["c@d.example"], data=MSG, connect_timeout=5)
        self.assertEqual(reactor.tcpClients[0][:2], ("192.0.2.1", 25))
        reactor.advance(5)
        e = self.failureResultOf(d, sc.SMTPClientError).value
        self.assertEqual(e.stage, "connect")

    def test_connection_lost_midway(self):
        h = Harness()
        h.server("220 x\n")
        h.proto.connectionLost(Failure(ierror.ConnectionLost("reset")))
        e = h.outcome[0].value
        self.assertEqual(e.stage, "ehlo")
        self.assertIn("connection lost", e.text)


class GarbageTests(unittest.SynchronousTestCase):
    def assertProtocolError(self, text, stage="banner"):
        h = Harness()
        h.proto.dataReceived(text)
        e = h.error()
        self.assertEqual(e.stage, stage)
        self.assertIn("protocol error", e.text)
        self.assertFalse(e.permanent)

    def test_garbage(self):
        for text in (b"hello there\r\n", b"2\r\n", b"22x ok\r\n", b"220Xok\r\n", b"999 what\r\n",
                     b"\x00\xff\xfe\r\n", b"-220 x\r\n"):
            self.assertProtocolError(text)

    def test_long_line(self):
        self.assertProtocolError(b"220 " + b"x" * MAX_LINE)
        self.assertProtocolError(b"220 " + b"x" * MAX_LINE + b"\r\n")

    def test_too_many_lines(self):
        self.assertProtocolError(b"220-x\r\n" * (MAX_LINES + 1))

    def test_code_changes_within_reply(self):
        self.assertProtocolError(b"220-x\r\n250 y\r\n")

    def test_unexpected_2xx_banner(self):
        h = Harness()
        h.server("250 hi\n")
        h.server("221 bye\n")
        self.assertIn("protocol error", h.error().text)

    def test_flood_of_replies(self):
        h = Harness()
        h.server("220 x\n")
        h.server("250 x\n" * 50)
        self.assertIn("protocol error", h.error().text)

    def test_random_bytes_never_crash(self):
        rnd = random.Random(5)
        for _ in range(200):
            h = Harness(tls="opportunistic", auth=("u", "p"))
            h.server("220 x\n")
            blob = bytes(rnd.choice(b"0123456789 -\r\nSTARTLSAUTHPLAIN\xff") for _ in range(rnd.randint(1, 200)))
            h.proto.dataReceived(blob)
            if not h.t.disconnecting:
                h.t.loseConnection()
            o = h.close()
            if isinstance(o, Failure):
                self.assertTrue(o.check(sc.SMTPClientError), o)
        self.flushLoggedErrors()


class ReplyParserTests(unittest.SynchronousTestCase):
    def test_multiline(self):
        p = ReplyParser()
        self.assertEqual(p.feed(b"250-first\r\n250-"), [])
        self.assertTrue(p.pending)
        [r] = p.feed(b"second\r\n250 third\r\n")
        self.assertEqual((r.code, r.lines), (250, ("first", "second", "third")))
        self.assertFalse(p.pending)

    def test_code_only_and_bare_lf(self):
        [r, r2] = ReplyParser().feed(b"250\r\n354 x\n")
        self.assertEqual((r.code, r.text, r2.code), (250, "", 354))

    def test_enhanced(self):
        [r] = ReplyParser().feed(b"550-5.1.1 no such\r\n550 5.1.1 user\r\n")
        self.assertEqual(r.enhanced_and_text(True), ("5.1.1", "no such\nuser"))
        self.assertEqual(r.enhanced_and_text(False), (None, "5.1.1 no such\n5.1.1 user"))
        # RFC 3463 2: the class must match the reply code.
        [r] = ReplyParser().feed(b"550 2.1.1 odd\r\n")
        self.assertEqual(r.enhanced_and_text(True), (None, "2.1.1 odd"))
        [r] = ReplyParser().feed(b"250 2.0.0\r\n")
        self.assertEqual(r.enhanced_and_text(True), ("2.0.0", ""))

    def test_limits(self):
        self.assertRaises(ReplyError, ReplyParser().feed, b"250 " + b"x" * MAX_LINE + b"\r\n")
        ReplyParser().feed(b"250-" + b"x" * (MAX_LINE - 6) + b"\r\n")
        self.assertRaises(ReplyError, ReplyParser().feed, b"250-x\r\n" * MAX_LINES + b"250 x\r\n")
        [r] = ReplyParser().feed(b"250-x\r\n" * (MAX_LINES - 1) + b"250 x\r\n")
        self.assertEqual(len(r.lines), MAX_LINES)


def reference_stuff(data):
    """Line by line, as RFC 5321 4.5.2 describes it."""
    out = []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.startswith(b"."):
            line = b"." + line
        out.append(line + b"\r\n")
    return b"".join(out) + b".\r\n"


class DotStuffingTests(unittest.SynchronousTestCase):
    def test_examples(self):
        cases = {
            b"": b".\r\n",
            b"a": b"a\r\n.\r\n",
            b".": b"..\r\n.\r\n",
            b"a\r\n": b"a\r\n.\r\n",
            b"a\r\n.\r\n": b"a\r\n..\r\n.\r\n",
            b"a\n.b\n": b"a\r\n..b\r\n.\r\n",
            b"\r\n.\r\n.": b"\r\n..\r\n..\r\n.\r\n",
        }
        for data, want in cases.items():
            for size in (1, 2, 3, 64 * 1024):
                self.assertEqual(b"".join(dot_stuffed_chunks(data, size)), want, (data, size))

    def test_random_against_reference(self):
        rnd = random.Random(1)
        for _ in range(500):
            data = bytes(rnd.choice(b".\r\nab") for _ in range(rnd.randint(0, 40)))
            if has_bare_cr(data):
                continue
            for size in (1, 2, 5, 100):
                self.assertEqual(b"".join(dot_stuffed_chunks(data, size)), reference_stuff(data), (data, size))

    def test_chunks_bounded(self):
        data = (b"x" * 70 + b"\r\n") * 10000
        chunks = list(dot_stuffed_chunks(data, 4096))
        self.assertLessEqual(max(len(c) for c in chunks), 4096)
        self.assertEqual(b"".join(chunks), data + b".\r\n")

    def test_bare_cr(self):
        self.assertTrue(has_bare_cr(b"a\rb"))
        self.assertTrue(has_bare_cr(b"a\r"))
        self.assertFalse(has_bare_cr(b"a\r\nb\n"))
