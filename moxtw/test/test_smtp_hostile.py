"""Hostile input to the SMTP server protocol: SMTP smuggling (other end-of-data markers
than CRLF.CRLF, bare CR), over-long lines, error floods, binary garbage, idle and
half-closed connections. Replies are checked against the named codes of moxtw/smtp/codes.py.
"""

import random

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial import unittest

from moxtw.smtp import codes as c
from moxtw.smtpserver.data import DataReader
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


class _LineByLine(DataReader):
    """The reader without its bulk path: every line through ``_line``, the reference."""

    def _bulk(self, buf, start, end):
        return False


class DataReaderBulkTests(unittest.TestCase):
    """The bulk path of DataReader (runs of lines taken in one piece) decides exactly as
    line-by-line reading does: same data spooled, same flags, same bytes after the end,
    for random messages built from the pieces that matter, cut into random chunks."""

    PIECES = [b"\r\n", b"\n", b"\r", b".", b"..", b"text", b"a" * 300, b"\x00", b"\xc3\xa9", b"\r\n.\r\n",
              b"\r\n..\r\n", b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b" "]

    def run_reader(self, cls, data, cuts, pedantic, max_size):
        r = cls(max_size, pedantic=pedantic)
        rest, pos = None, 0
        for cut in cuts + [len(data)]:
            if pos >= len(data):
                break
            rest = r.feed(data[pos:cut])
            pos = cut
            if rest is not None:
                rest += data[pos:]
                break
        spooled = r.read_all() if r.smuggling is None else None
        r.close()
        return (rest, spooled, r.size, r.too_large, r.smuggling, r.bare_lf, r.has_8bit, r.has_nul)

    def test_same_verdicts_as_line_by_line(self):
        rnd = random.Random(4467)
        for i in range(1500):
            data = b"".join(rnd.choice(self.PIECES) for _ in range(rnd.randint(0, 60)))
            if rnd.random() < 0.7:
                data += b"\r\n.\r\n" + b"QUIT\r\n" * rnd.randint(0, 2)
            cuts = sorted(rnd.sample(range(1, len(data) + 1), min(len(data), rnd.randint(0, 6))))
            pedantic = rnd.random() < 0.3
            max_size = rnd.choice([10 ** 6, 200])
            want = self.run_reader(_LineByLine, data, cuts, pedantic, max_size)
            got = self.run_reader(DataReader, data, cuts, pedantic, max_size)
            self.assertEqual(got, want, (data, cuts, pedantic, max_size))

    def test_large_message_in_few_writes(self):
        """A 1 MB message of ordinary lines is spooled in a few writes, not one per line."""
        r = DataReader(10 ** 7)
        writes = []
        orig = r._spool.write
        r._spool.write = lambda chunk: (writes.append(len(chunk)), orig(chunk))
        body = b"".join(b"line %d of the message, with some text to fill it\r\n" % i for i in range(20000))
        body += b"..stuffed\r\n" + body
        data = b"Subject: big\r\n\r\n" + body + b".\r\n"
        for i in range(0, len(data), 65536):
            rest = r.feed(data[i:i + 65536])
        self.assertEqual(rest, b"")
        self.assertEqual(r.read_all(), data[:-3].replace(b"\n..stuffed", b"\n.stuffed"))
        self.assertLess(len(writes), 100)
        r.close()
