"""APPEND CATENATE (RFC 4469) with IMAP URLs (RFC 5092): parsing, resolution inside the
account, the errors a client must see, and hostile input."""

from twisted.internet import defer
from twisted.trial import unittest

from moxtw.imapserver import imapurl
from moxtw.imapserver.parser import ParseError, parse_command
from moxtw.imapserver.types import Section
from moxtw.test.imaphelper import IMAPSessionTest, tagged, untagged

MSG = b"From: a@example.org\r\nSubject: one\r\nContent-Type: text/plain\r\n\r\nfirst body\r\n"


class URLTests(unittest.SynchronousTestCase):
    def test_forms(self):
        u = imapurl.parse_url("/INBOX/;UID=20/;SECTION=1.2.MIME/;PARTIAL=5.10", "mail.example.org")
        self.assertEqual((u.mailbox, u.uidvalidity, u.uid), ("INBOX", None, 20))
        self.assertEqual(u.section, Section(part=(1, 2), text="MIME"))
        self.assertEqual(u.partial, (5, 10))
        u = imapurl.parse_url("imap://joe@MAIL.example.org:143/Arch%C3%ADv%20x;uidvalidity=7/;uid=3", "mail.example.org")
        self.assertEqual((u.mailbox, u.uidvalidity, u.uid, u.section), ("Archív x", 7, 3, None))
        u = imapurl.parse_url("/a/b/;uid=1/;section=HEADER.FIELDS%20(FROM%20TO)/;partial=3", "h")
        self.assertEqual((u.mailbox, u.section.text, u.section.fields, u.partial[0]), ("a/b", "HEADER.FIELDS", ("FROM", "TO"), 3))

    def test_refused(self):
        for bad in ["", "/", "INBOX/;UID=1", "/INBOX", "/INBOX/;UID=0", "/INBOX;UIDVALIDITY=0/;UID=1",
                    "/INBOX/;UID=99999999999", "/INBOX/;UID=1/;SECTION=BOGUS", "/INBOX/;UID=1/;SECTION=1.",
                    "/%FF/;UID=1", "imap://other.example/INBOX/;UID=1", "/INBOX/;UID=1/;PARTIAL=1.0",
                    "/INBOX/;UID=1;EXPIRE=2030-01-01T00:00:00Z;URLAUTH=anonymous:internal:abc",
                    "/INBOX/;UID=1/;SECTION=" + "1." * 5000 + "1", "/x" * 10000 + "/;UID=1"]:
            with self.assertRaises(imapurl.URLError, msg=bad):
                imapurl.parse_url(bad, "mail.example.org")

    def test_parser(self):
        c = parse_command(b'A1 APPEND INBOX (\\Seen) CATENATE (URL "/INBOX/;UID=1" TEXT {3}\r\nabc)\r\n')
        m = c.args["messages"][0]
        self.assertEqual(m["catenate"], [("url", "/INBOX/;UID=1"), ("text", b"abc")])
        self.assertEqual(m["flags"], ["\\Seen"])
        for bad in [b"A1 APPEND INBOX CATENATE ()\r\n", b"A1 APPEND INBOX CATENATE (URL)\r\n",
                    b"A1 APPEND INBOX CATENATE (TEXT \"abc\")\r\n", b"A1 APPEND INBOX CATENATE (FOO x)\r\n",
                    b"A1 APPEND INBOX CATENATE URL x\r\n"]:
            with self.assertRaises(ParseError, msg=bad):
                parse_command(bad)
        many = b" ".join([b'URL "/INBOX/;UID=1"'] * 1001)
        with self.assertRaises(ParseError):
            parse_command(b"A1 APPEND INBOX CATENATE (" + many + b")\r\n")


class CatenateTests(IMAPSessionTest):
    factory_kwargs = {"append_limit": 100000}

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.acc.deliver("Inbox", MSG)
        self.inbox = yield self.acc.mailbox("INBOX")

    @defer.inlineCallbacks
    def fetch_last(self, c, mailbox="Archive"):
        yield c.cmd(f"SELECT {mailbox}")
        lines = yield c.cmd("FETCH * BODY.PEEK[]")
        return b"\r\n".join(lines[:-1])

    @defer.inlineCallbacks
    def test_join_url_parts_and_text(self):
        c = yield self.logged_in()
        self.assertIn("CATENATE", untagged((yield c.cmd("CAPABILITY")))[0].split())
        lines = yield c.cmd(b'APPEND Archive (\\Flagged) CATENATE (URL "/INBOX/;UID=1/;SECTION=HEADER"'
                            b' TEXT {5+}\r\nnew\r\n URL "/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=TEXT/;PARTIAL=0.5")'
                            % self.inbox.uidvalidity)
        self.assertIn("[APPENDUID ", tagged(lines))
        body = yield self.fetch_last(c)
        self.assertIn(b"Subject: one\r\nContent-Type: text/plain\r\n\r\nnew\r\nfirst)", body)
        lines = yield c.cmd("FETCH * FLAGS")
        self.assertIn("\\Flagged", untagged(lines)[0])

    @defer.inlineCallbacks
    def test_whole_message_and_multiappend(self):
        c = yield self.logged_in()
        lines = yield c.cmd(b'APPEND Archive CATENATE (URL "/INBOX/;UID=1") {3+}\r\nabc')
        self.assertIn(" 1:2] ", tagged(lines))
        yield c.cmd("SELECT Archive")
        lines = yield c.cmd("FETCH 1 BODY.PEEK[]")
        self.assertIn(MSG, b"\r\n".join(lines))

    @defer.inlineCallbacks
    def test_errors(self):
        c = yield self.logged_in()
        # RFC 4469 5: a missing destination is TRYCREATE, even with a bad URL.
        self.assertNO((yield c.cmd('APPEND Nonexistent CATENATE (URL "/INBOX;UIDVALIDITY=1/;UID=1")')), "TRYCREATE")
        for url in ["/INBOX;UIDVALIDITY=12345/;UID=1", "/INBOX/;UID=9", "/Nope/;UID=1", "/INBOX/;UID=1/;SECTION=7",
                    "imap://elsewhere.example/INBOX/;UID=1", "garbage]\x7f"]:
            lines = yield c.cmd(f'APPEND Archive CATENATE (TEXT {{1+}}\r\nx URL "{url}")')
            self.assertNO(lines, "BADURL")
            self.assertNotIn("]\x7f", tagged(lines))
        # Nothing was added by the failures (all or nothing, with MULTIAPPEND too).
        lines = yield c.cmd(b'APPEND Archive {3+}\r\nabc CATENATE (URL "/INBOX/;UID=9")')
        self.assertNO(lines, "BADURL")
        lines = yield c.cmd("STATUS Archive (MESSAGES)")
        self.assertIn("MESSAGES 0", untagged(lines)[0])

    @defer.inlineCallbacks
    def test_too_big(self):
        c = yield self.logged_in()
        # Each part is within the limit; together they are not.
        many = " ".join(['URL "/INBOX/;UID=1"'] * (60000 // len(MSG)))
        text = b"x" * 50000
        lines = yield c.cmd(b"APPEND Archive CATENATE (TEXT {%d+}\r\n%s %s)" % (len(text), text, many.encode()))
        self.assertNO(lines, "TOOBIG")

    @defer.inlineCallbacks
    def test_other_account_unreachable(self):
        """A URL naming another user is still resolved in the logged-in account only."""
        c = yield self.logged_in()
        lines = yield c.cmd('APPEND Archive CATENATE (URL "imap://other@mail.example.org/INBOX/;UID=1")')
        self.assertOK(lines)  # our own INBOX, UID 1: the user part never selects an account
        body = yield self.fetch_last(c)
        self.assertIn(MSG, body)


class SpooledCatenateTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def test_large_text_part_spooled(self):
        """A TEXT literal over the spool threshold is written to a file first, then
        joined; nothing is left in tmp/."""
        import os

        yield self.acc.deliver("Inbox", MSG)
        c = yield self.logged_in()
        text = b"Subject: big\r\n\r\n" + b"y" * 300000 + b"\r\n"
        lines = yield c.cmd(b'APPEND Archive CATENATE (TEXT {%d+}\r\n%s URL "/INBOX/;UID=1/;SECTION=TEXT")'
                            % (len(text), text))
        self.assertIn("[APPENDUID ", tagged(lines))
        yield c.cmd("SELECT Archive")
        lines = yield c.cmd("FETCH 1 (RFC822.SIZE)")
        size = len(text) + len(b"first body\r\n")
        self.assertIn(f"RFC822.SIZE {size}", untagged(lines)[0])
        self.assertEqual(os.listdir(os.path.join(self.acc.maildir, "tmp")), [])
