"""Tests for moxtw.imapserver.response: strings, astrings, mailbox names, flag lists,
ENVELOPE/BODYSTRUCTURE rendering, sequence sets and date-time. Rendered values are
read back with the command parser where the grammar is shared."""

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from moxtw.imapserver import response as r
from moxtw.imapserver.parser import parse_command
from moxtw.imapserver.types import SeqSet
from moxtw.message import parse
from moxtw.message.imap import bodystructure, envelope


class StringTests(SynchronousTestCase):
    def test_quoted(self):
        self.assertEqual(r.quoted("a b"), b'"a b"')
        self.assertEqual(r.quoted('a"b\\c'), b'"a\\"b\\\\c"')
        self.assertEqual(r.quoted(b""), b'""')

    def test_string_quoted_when_printable(self):
        self.assertEqual(r.string("hello world"), b'"hello world"')
        self.assertEqual(r.string('say "hi"'), b'"say \\"hi\\""')
        self.assertEqual(r.string(""), b'""')

    def test_string_literal_for_ctl(self):
        self.assertEqual(r.string("a\r\nb"), b"{4}\r\na\r\nb")
        self.assertEqual(r.string("a\x00b"), b"{3}\r\na\x00b")
        self.assertEqual(r.string("a\tb"), b"{3}\r\na\tb")
        self.assertEqual(r.string("a\x7fb"), b"{3}\r\na\x7fb")

    def test_string_non_ascii(self):
        # RFC 6855 3: UTF-8 in quoted strings only after ENABLE UTF8=ACCEPT.
        self.assertEqual(r.string("Grüße"), b"{7}\r\nGr\xc3\xbc\xc3\x9fe")
        self.assertEqual(r.string("Grüße", utf8=True), b'"Gr\xc3\xbc\xc3\x9fe"')
        self.assertEqual(r.string(b"\xff", utf8=True), b"{1}\r\n\xff")  # not UTF-8
        self.assertEqual(r.string("a\u0085b", utf8=True), b'"a\xc2\x85b"')

    def test_literals(self):
        self.assertEqual(r.literal(b"abc"), b"{3}\r\nabc")
        self.assertEqual(r.literal8(b"\x00"), b"~{1}\r\n\x00")

    def test_nstring(self):
        self.assertEqual(r.nstring(None), b"NIL")
        self.assertEqual(r.nstring("NIL"), b'"NIL"')
        self.assertEqual(r.nstring("x"), b'"x"')

    def test_astring(self):
        self.assertEqual(r.astring("INBOX"), b"INBOX")
        self.assertEqual(r.astring("a]b"), b"a]b")
        self.assertEqual(r.astring("a b"), b'"a b"')
        self.assertEqual(r.astring(""), b'""')
        self.assertEqual(r.astring("a*"), b'"a*"')
        self.assertEqual(r.astring("nil"), b'"nil"')  # never mistaken for NIL
        self.assertEqual(r.astring("ä"), b"{2}\r\n\xc3\xa4")
        self.assertEqual(r.astring("ä", utf8=True), b'"\xc3\xa4"')

    def test_number(self):
        self.assertEqual(r.number(42), b"42")


class MailboxNameTests(SynchronousTestCase):
    def test_mutf7(self):
        # RFC 3501 5.1.3 example.
        self.assertEqual(r.mailbox_name("~peter/mail/台北/日本語"), b"~peter/mail/&U,BTFw-/&ZeVnLIqe-")
        self.assertEqual(r.mailbox_name("Entwürfe"), b"Entw&APw-rfe")
        self.assertEqual(r.mailbox_name("a&b"), b"a&-b")
        self.assertEqual(r.mailbox_name("INBOX"), b"INBOX")
        self.assertEqual(r.mailbox_name("Sent Items"), b'"Sent Items"')
        self.assertEqual(r.mailbox_name("😀"), b"&2D3eAA-")

    def test_control_characters(self):
        # Twisted's codec turns "\n" into "&-"; ours does not.
        self.assertEqual(r.mailbox_name("a\nb"), b"a&AAo-b")
        self.assertEqual(r.encode_mutf7("\x7f"), b"&AH8-")

    def test_utf8(self):
        self.assertEqual(r.mailbox_name("Entwürfe", utf8=True), b'"Entw\xc3\xbcrfe"')
        self.assertEqual(r.mailbox_name("a&b", utf8=True), b"a&b")

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=30))
    def test_roundtrip(self, name):
        name = name.replace("\x00", "")
        try:
            name.encode("utf-8")
        except UnicodeError:
            return
        for utf8 in (False, True):
            c = parse_command(b"A1 SELECT " + r.mailbox_name(name, utf8) + b"\r\n", utf8=utf8)
            self.assertEqual(c.args["mailbox"], name)


class FlagListTests(SynchronousTestCase):
    def test_flag_list(self):
        self.assertEqual(r.flag_list([]), b"()")
        self.assertEqual(r.flag_list(["\\Seen", "$Junk"]), b"(\\Seen $Junk)")
        c = parse_command(b"A1 STORE 1 FLAGS " + r.flag_list(["\\Seen", "$Junk"]) + b"\r\n")
        self.assertEqual(c.args["flags"], ["\\Seen", "$Junk"])


class ListValueTests(SynchronousTestCase):
    def test_values(self):
        self.assertEqual(r.list_value(None), b"NIL")
        self.assertEqual(r.list_value(12), b"12")
        self.assertEqual(r.list_value("x"), b'"x"')
        self.assertEqual(r.list_value([]), b"()")
        self.assertEqual(r.list_value(["a", None, [1, ["b"]]]), b'("a" NIL (1 ("b")))')
        self.assertEqual(r.list_value(["ä"]), b"({2}\r\n\xc3\xa4)")
        self.assertEqual(r.list_value(["ä"], utf8=True), b'("\xc3\xa4")')
        self.assertRaises(TypeError, r.list_value, True)
        self.assertRaises(TypeError, r.list_value, 1.5)
        self.assertRaises(TypeError, r.list_value, {"a": 1})

    def test_envelope(self):
        msg = (b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
               b'From: Terry Gray <gray@cac.washington.edu>\r\n'
               b"Subject: IMAP4rev2 \"WG\" mtg summary\r\n"
               b"To: imap@cac.washington.edu\r\n"
               b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n\r\nbody\r\n")
        out = r.list_value(envelope(parse(msg)))
        self.assertEqual(out, (
            b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev2 \\"WG\\" mtg summary" '
            b'(("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) '
            b'(("Terry Gray" NIL "gray" "cac.washington.edu")) ((NIL NIL "imap" "cac.washington.edu")) '
            b'NIL NIL NIL "<B27397-0100000@cac.washington.edu>")'))

    def test_bodystructure(self):
        msg = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nhello\r\n"
        out = r.list_value(bodystructure(parse(msg)))
        self.assertTrue(out.startswith(b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 7 1'), out)

    def test_deep(self):
        v = None
        for _ in range(200):
            v = [v]
        self.assertRaises(ValueError, r.list_value, v)


class SeqSetTests(SynchronousTestCase):
    def test_format(self):
        self.assertEqual(r.format_seqset([]), "")
        self.assertEqual(r.format_seqset([5]), "5")
        self.assertEqual(r.format_seqset([1, 2, 3, 5]), "1:3,5")
        self.assertEqual(r.format_seqset([1, 3, 4, 5, 7, 8]), "1,3:5,7:8")
        # Order kept: COPYUID pairs source and destination UIDs by position (RFC 4315 3).
        self.assertEqual(r.format_seqset([5, 1, 2]), "5,1:2")
        self.assertEqual(r.format_seqset([3, 3]), "3,3")

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=50))
    def test_roundtrip(self, uids):
        uids = sorted(set(uids))
        s = r.format_seqset(uids)
        c = parse_command(b"A1 UID EXPUNGE " + s.encode() + b"\r\n")
        got = []
        for lo, hi in c.args["seqset"].ranges:
            got.extend(range(lo, hi + 1))
        self.assertEqual(got, uids)
        self.assertIsInstance(c.args["seqset"], SeqSet)


class DateTimeTests(SynchronousTestCase):
    def test_format(self):
        dt = datetime(1994, 2, 5, 21, 52, 25, tzinfo=timezone(timedelta(hours=-8)))
        self.assertEqual(r.date_time(dt), '"05-Feb-1994 21:52:25 -0800"')
        dt = datetime(2020, 12, 31, 1, 2, 3, tzinfo=timezone(timedelta(hours=5, minutes=30)))
        self.assertEqual(r.date_time(dt), '"31-Dec-2020 01:02:03 +0530"')
        self.assertEqual(r.date_time(datetime(2020, 1, 1)), '"01-Jan-2020 00:00:00 +0000"')

    @settings(max_examples=200, deadline=None)
    @given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)),
           st.integers(-23 * 60 - 59, 23 * 60 + 59))
    def test_roundtrip(self, dt, minutes):
        dt = dt.replace(microsecond=0, tzinfo=timezone(timedelta(minutes=minutes)))
        data = b"A1 APPEND x " + r.date_time(dt).encode() + b" {1}\r\nx\r\n"
        got = parse_command(data).args["messages"][0]["date"]
        self.assertEqual(got, dt)
        self.assertEqual(got.utcoffset(), dt.utcoffset())
