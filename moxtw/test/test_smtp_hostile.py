"""Hostile input to the SMTP server protocol: SMTP smuggling (other end-of-data markers
than CRLF.CRLF, bare CR), over-long lines, error floods, binary garbage, idle and
half-closed connections. Replies are checked against the named codes of moxtw/smtp/codes.py.
"""

import random

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from moxtw.smtp import codes as c
from moxtw.test.smtphelper import SMTPTestBase, reply


class SmugglingTests(SMTPTestBase):
    """Only CRLF.CRLF ends DATA; other end markers and bare CR are refused."""

    def transaction(self, payload):
        self.ehlo()
        self.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<x@y.org>\r\nDATA\r\n")
        return self.send(payload)

    def test_variants(self):
        for payload in (
            b"Subject: a\r\n\r\nx\n.\nMAIL FROM:<evil@b.org>\r\nRCPT TO:<x@y.org>\r\nDATA\r\nevil\r\n.\r\n",
            b"Subject: a\r\n\r\nx\r\n.\nMAIL FROM:<evil@b.org>\r\n.\r\n",
            b"Subject: a\r\n\r\nx\n.\r\nMAIL FROM:<evil@b.org>\r\n.\r\n",
            b"Subject: a\r\n\r\nx\r.\rMAIL FROM:<evil@b.org>\r\n.\r\n",
            b"Subject: a\r\n\r\nx\rtext\r\n.\r\n",
        ):
            self.new_session()
            out = self.transaction(payload)
            self.assertEqual(self.codes(out), [c.C554_TRANSACTION_FAILED], payload)
            self.assertIn(reply(c.C554_TRANSACTION_FAILED, c.SE_MSG_OTHER0), out)
            self.assertIn("SMTP smuggling", out)
            self.assertEqual(self.backend.delivered, [], payload)
            # Nothing of the message was taken as a command.
            self.assertEqual(out.count("\r\n"), 1, payload)

    def test_bare_lf_lines_accepted(self):
        out = self.transaction(b"Subject: a\n\nline\n.\r\n")
        # The "." line follows a bare LF line: an ambiguous end, not taken as the end...
        self.assertEqual(out, "")
        # ...and the message is refused once the real end comes.
        out = self.send(b"more\r\n.\r\n")
        self.assertIn(reply(c.C554_TRANSACTION_FAILED, c.SE_MSG_OTHER0), out)
        self.new_session()
        out = self.transaction(b"Subject: a\n\nline\r\n.\r\n")
        self.assertEqual(self.codes(out), [250])
        self.assertEqual(self.backend.delivered[0][1], b"Subject: a\n\nline\r\n")

    def test_long_lines_stay_data(self):
        """A long line never makes the rest of the body run as commands."""
        self.max_size = 10 ** 7
        self.new_session()
        out = self.transaction(b"x" * 100000 + b"\r\nMAIL FROM:<evil@b.org>\r\n.\r\n")
        self.assertEqual(self.codes(out), [250])
        self.assertEqual(len(self.backend.delivered), 1)
        self.assertTrue(self.backend.delivered[0][1].endswith(b"\r\nMAIL FROM:<evil@b.org>\r\n"))

    def test_split_chunks(self):
        self.ehlo()
        self.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<x@y.org>\r\nDATA\r\n")
        for ch in b"Subject: x\r\n\r\nbody\r\n.\r\n":
            self.proto.dataReceived(bytes([ch]))
        self.assertEqual(self.backend.delivered[0][1], b"Subject: x\r\n\r\nbody\r\n")



class HostileTests(SMTPTestBase):
    def test_long_line(self):
        out = self.send(b"EHLO " + b"a" * 10000 + b"\r\nNOOP\r\n")
        self.assertEqual(self.codes(out), [c.C500_SYNTAX_ERROR, c.C250_COMPLETED])
        self.assertIn("500 line too long", out)  # no EHLO yet: no enhanced code (RFC 2034)

    def test_long_line_enhanced(self):
        self.ehlo()
        out = self.send(b"NOOP " + b"a" * 10000 + b"\r\nNOOP\r\n")
        self.assertEqual(self.codes(out), [c.C500_SYNTAX_ERROR, c.C250_COMPLETED])
        self.assertIn(reply(c.C500_SYNTAX_ERROR, c.SE_PROTO_LINE_TOO_LONG) + " line too long", out)

    def test_long_line_without_newline(self):
        out = self.send(b"A" * 5000)
        self.assertEqual(self.codes(out), [500])
        out = self.send(b"B" * 5000 + b"\r\nNOOP\r\n")
        self.assertEqual(self.codes(out), [250])

    def test_too_many_errors(self):
        out = self.send(b"BAD\r\n" * 20)
        self.assertEqual(self.codes(out)[-1], 421)
        self.assertTrue(self.tr.disconnecting)

    def test_binary_garbage(self):
        """Random bytes, each input on a session of its own: only well-formed error replies
        (500, or 421 after too many errors and then the connection is closed), nothing
        delivered, nothing logged as an error, and a session still open answers NOOP."""
        rng = random.Random(1)
        closed = 0
        for i in range(50):
            self.new_session()
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000)))
            out = self.send(junk + b"\r\n")
            lines = out.split("\r\n")
            self.assertEqual(lines[-1], "", i)  # every reply ends with CRLF
            for line in lines[:-1]:
                self.assertRegex(line, r"^[0-9]{3}[ -]\S", i)
            got = self.codes(out)
            self.assertTrue(got, i)
            self.assertTrue(set(got) <= {c.C500_SYNTAX_ERROR, c.C421_SERVICE_UNAVAILABLE}, (i, got))
            self.assertEqual(self.backend.delivered, [])
            if self.tr.disconnecting:
                closed += 1
                self.assertEqual(got[-1], c.C421_SERVICE_UNAVAILABLE, i)
                self.assertTrue(out.endswith("421 too many errors, closing\r\n"), i)
            else:
                self.assertNotIn(c.C421_SERVICE_UNAVAILABLE, got, i)
                self.assertEqual(self.codes(self.send(b"NOOP\r\n")), [c.C250_COMPLETED], i)
        # Both outcomes were exercised: some inputs held many bad "lines", some one.
        self.assertTrue(0 < closed < 50, closed)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_timeout(self):
        self.clock.advance(299)
        self.assertFalse(self.tr.disconnecting)
        self.clock.advance(2)
        self.assertIn(b"421 mx.example.org timeout, closing\r\n", self.tr.value())
        self.assertTrue(self.tr.disconnecting)

    def test_timeout_after_ehlo(self):
        """With enhanced codes (after EHLO): RFC 3463 4.4.2, bad connection."""
        self.ehlo()
        self.tr.clear()
        self.clock.advance(301)
        self.assertEqual(
            self.tr.value().decode(),
            reply(c.C421_SERVICE_UNAVAILABLE, c.SE_NET_BAD_CONNECTION2) + " mx.example.org timeout, closing\r\n",
        )
        self.assertTrue(self.tr.disconnecting)

    def test_half_closed(self):
        self.ehlo()
        self.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<x@y.org>\r\nDATA\r\npartial")
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.backend.delivered, [])
        self.proto.dataReceived(b"\r\n.\r\n")  # late data after close is ignored
        self.assertEqual(self.backend.delivered, [])
