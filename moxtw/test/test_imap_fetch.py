"""Tests for moxtw.imapserver.fetch: FETCH responses byte for byte (RFC 9051 6.4.5, 7.5.2;
RFC 3516 BINARY; RFC 7162 MODSEQ; RFC 8970 PREVIEW; RFC 8514 SAVEDATE)."""

import io
import json
import os
from datetime import datetime, timedelta, timezone

from twisted.trial.unittest import SynchronousTestCase

from moxtw.imapserver.fetch import (
    UNKNOWN_CTE, FetchContext, body_structure, date_time, implies_seen, render_fetch, string)
from moxtw.imapserver.types import FetchAtt, Section
from moxtw.message import summary
from moxtw.store.model import Message


def crlf(text):
    return text.replace(b"\n", b"\r\n")


MIXED = crlf(b"""From: Alice <alice@example.org>
To: Bob <bob@example.com>
Subject: Report
Date: Tue, 5 Mar 2024 14:07:09 +0100
Message-ID: <m1@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

preamble
--outer
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Gr=C3=BC=C3=9Fe, caf=
=C3=A9
--alt
Content-Type: text/html; charset=utf-8

<p>Hi</p>
--alt--
--outer
Content-Type: application/octet-stream; name="data.bin"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="data.bin"

AAEC/w==
--outer
Content-Type: message/rfc822

From: Carol <carol@example.net>
Subject: Inner
X-Note: folded
 continuation

Inner body.
--outer
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: 8bit

Caf\xe9
--outer
Content-Type: application/x-thing
Content-Transfer-Encoding: x-uuencode

begin 644 x
--outer--
epilogue
""")

MIXED_HEADER = crlf(b"""From: Alice <alice@example.org>
To: Bob <bob@example.com>
Subject: Report
Date: Tue, 5 Mar 2024 14:07:09 +0100
Message-ID: <m1@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

""")

RECEIVED = datetime(2024, 3, 5, 14, 7, 9, tzinfo=timezone(timedelta(hours=1)))
SAVED = datetime(2024, 3, 6, 8, 0, 1, tzinfo=timezone.utc)


def make_message(data, uid=7, flags=(), modseq=5):
    """A store Message for data, with the fields delivery would record."""
    s = summary(data)
    return Message(
        id=1, mailbox_id=1, uid=uid, modseq=modseq, flags=tuple(flags), size=len(data),
        received=RECEIVED, saved=SAVED, message_id=s.message_id, subject=s.subject,
        thread_id=1, preview=s.preview, envelope_json=json.dumps(s.envelope),
        bodystructure_json=json.dumps(s.bodystructure), part_json=json.dumps(s.part_json),
        row={})


class CountingFile:
    """A file wrapper counting the bytes read, to check sections are read by range."""

    def __init__(self, f, counter):
        self._f = f
        self._counter = counter

    def seek(self, pos, whence=0):
        return self._f.seek(pos, whence)

    def read(self, n=-1):
        data = self._f.read(n)
        self._counter["read"] += len(data)
        self._counter["calls"] += 1
        return data

    def close(self):
        self._counter["closed"] += 1
        self._f.close()


def lit(data):
    return b"{%d}\r\n" % len(data) + data


def body(part=(), text="", fields=(), peek=False, partial=None):
    return FetchAtt("BODY[]", Section(tuple(part), text, tuple(fields)), peek, partial)


def binary(part=(), peek=False, partial=None):
    return FetchAtt("BINARY[]", Section(tuple(part)), peek, partial)


class FetchTestCase(SynchronousTestCase):
    data = MIXED

    def setUp(self):
        self.counter = {"read": 0, "calls": 0, "opened": 0, "closed": 0}

    def open_file(self):
        self.counter["opened"] += 1
        return CountingFile(io.BytesIO(self.data), self.counter)

    def fetch(self, atts, msg=None, ctx=None, seq=12, **kw):
        if msg is None:
            msg = make_message(self.data)
        return render_fetch(msg, seq, atts, self.open_file, ctx or FetchContext(), **kw)

    def item(self, att, **kw):
        """The response data of a single item, without "* 12 FETCH (" and ")\\r\\n"."""
        r = self.fetch([att], ctx=FetchContext(readonly=True), **kw)
        self.assertIsNone(r.error)
        self.assertTrue(r.data.startswith(b"* 12 FETCH ("), r.data)
        self.assertTrue(r.data.endswith(b")\r\n"), r.data)
        return r.data[len(b"* 12 FETCH ("):-3]


class SimpleItemTests(FetchTestCase):
    def test_uid_flags(self):
        msg = make_message(self.data, flags=("\\Seen", "\\Flagged", "$junk"))
        r = self.fetch([FetchAtt("FLAGS")], msg=msg, include_uid=True)
        # RFC 9051 6.4.8: UID FETCH always includes UID.
        self.assertEqual(r.data, b"* 12 FETCH (UID 7 FLAGS (\\Seen \\Flagged $junk))\r\n")
        self.assertFalse(r.sets_seen)
        self.assertIsNone(r.error)
        # Asked for explicitly as well: once.
        r = self.fetch([FetchAtt("UID"), FetchAtt("FLAGS")], msg=msg, include_uid=True)
        self.assertEqual(r.data, b"* 12 FETCH (UID 7 FLAGS (\\Seen \\Flagged $junk))\r\n")
        self.assertEqual(self.item(FetchAtt("FLAGS")), b"FLAGS ()")

    def test_no_file_for_index_items(self):
        atts = [FetchAtt(n) for n in (
            "UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE",
            "MODSEQ", "PREVIEW", "SAVEDATE")]
        r = self.fetch(atts)
        self.assertEqual(self.counter["opened"], 0)
        self.assertTrue(r.data.startswith(b"* 12 FETCH (UID 7 FLAGS () INTERNALDATE "))

    def test_internaldate(self):
        self.assertEqual(self.item(FetchAtt("INTERNALDATE")),
                         b'INTERNALDATE "05-Mar-2024 14:07:09 +0100"')
        west = datetime(2023, 12, 31, 23, 59, 58, tzinfo=timezone(-timedelta(hours=3, minutes=30)))
        self.assertEqual(date_time(west), b'"31-Dec-2023 23:59:58 -0330"')

    def test_savedate(self):
        # RFC 8514 4.3.
        self.assertEqual(self.item(FetchAtt("SAVEDATE")), b'SAVEDATE "06-Mar-2024 08:00:01 +0000"')

    def test_size(self):
        self.assertEqual(self.item(FetchAtt("RFC822.SIZE")), b"RFC822.SIZE %d" % len(MIXED))

    def test_modseq(self):
        # RFC 7162 3.1.4.1.
        self.assertEqual(self.item(FetchAtt("MODSEQ")), b"MODSEQ (5)")

    def test_modseq_condstore(self):
        # RFC 7162 3.1.4.1: with CONDSTORE enabled every FETCH response has MODSEQ.
        r = self.fetch([FetchAtt("FLAGS")], ctx=FetchContext(condstore=True), include_uid=True)
        self.assertEqual(r.data, b"* 12 FETCH (UID 7 FLAGS () MODSEQ (5))\r\n")
        r = self.fetch([FetchAtt("MODSEQ"), FetchAtt("FLAGS")], ctx=FetchContext(condstore=True))
        self.assertEqual(r.data, b"* 12 FETCH (MODSEQ (5) FLAGS ())\r\n")
        r = self.fetch([FetchAtt("FLAGS")])
        self.assertEqual(r.data, b"* 12 FETCH (FLAGS ())\r\n")

    def test_preview(self):
        # RFC 8970: the preview as nstring; non-ASCII as literal unless UTF-8 is enabled.
        text = "Grüße, café".encode("utf-8")
        self.assertEqual(self.item(FetchAtt("PREVIEW")), b"PREVIEW " + lit(text))
        r = self.fetch([FetchAtt("PREVIEW")], ctx=FetchContext(utf8=True, rev2=True))
        self.assertEqual(r.data, b'* 12 FETCH (PREVIEW "' + text + b'")\r\n')

    def test_macros(self):
        r = self.fetch([FetchAtt("FAST")])
        self.assertEqual(r.data, b'* 12 FETCH (FLAGS () INTERNALDATE "05-Mar-2024 14:07:09 +0100" '
                                 b'RFC822.SIZE %d)\r\n' % len(MIXED))

    def test_unknown_item(self):
        self.assertRaises(ValueError, self.fetch, [FetchAtt("BOGUS")])


SIMPLE = crlf(b"""From: "Fred \\"F\\" Foo" <fred@example.org>
To: a@example.com, Group: b@example.com;
Subject: Gr\xc3\xbc\xc3\x9fe
Message-ID: <x@y>

Hi.
""")


class EnvelopeTests(FetchTestCase):
    data = SIMPLE

    def test_envelope_ascii_client(self):
        # RFC 9051 7.5.2 ENVELOPE; without UTF-8 the non-ASCII subject is a literal.
        self.assertEqual(
            self.item(FetchAtt("ENVELOPE")),
            b"ENVELOPE (NIL " + lit("Grüße".encode("utf-8"))
            + b' (("Fred \\"F\\" Foo" NIL "fred" "example.org"))'
            b' (("Fred \\"F\\" Foo" NIL "fred" "example.org"))'
            b' (("Fred \\"F\\" Foo" NIL "fred" "example.org"))'
            # RFC 9051 9: env-to = "(" 1*address ")": no spaces between addresses; a
            # group is marked by NIL host and ended by an all-NIL address.
            b' ((NIL NIL "a" "example.com")(NIL NIL "Group" NIL)(NIL NIL "b" "example.com")'
            b'(NIL NIL NIL NIL))'
            + b' NIL NIL NIL "<x@y>")')

    def test_envelope_utf8(self):
        r = self.fetch([FetchAtt("ENVELOPE")], ctx=FetchContext(utf8=True, rev2=True))
        self.assertIn(b'ENVELOPE (NIL "Gr\xc3\xbc\xc3\x9fe" ((', r.data)

    def test_string(self):
        self.assertEqual(string(None), b"NIL")
        self.assertEqual(string(""), b'""')
        self.assertEqual(string('a"b\\c'), b'"a\\"b\\\\c"')
        self.assertEqual(string("a\r\nb"), b"{4}\r\na\r\nb")
        self.assertEqual(string("é", utf8=True), b'"\xc3\xa9"')
        self.assertEqual(string("é"), b"{2}\r\n\xc3\xa9")
        self.assertEqual(string(b"\xff", utf8=True), b"{1}\r\n\xff")

    def test_body_single(self):
        self.assertEqual(self.item(FetchAtt("BODY")),
                         b'BODY ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 5 1)')
        self.assertEqual(self.item(FetchAtt("BODYSTRUCTURE")),
                         b'BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 5 1'
                         b' NIL NIL NIL NIL)')


SMALL_MULTI = crlf(b"""Subject: s
Content-Type: multipart/mixed; boundary=b

--b

one
--b
Content-Type: message/rfc822

Subject: in

two
--b--
""")


class BodyStructureTests(FetchTestCase):
    data = SMALL_MULTI

    def test_bodystructure(self):
        # RFC 9051 9: body-type-mpart = 1*body SP media-subtype: no space between bodies;
        # body-type-msg carries the envelope and body of the embedded message.
        inner = (b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 18 (NIL "in" NIL NIL NIL NIL NIL NIL NIL'
                 b' NIL) ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 3 1%s) 3%s)')
        self.assertEqual(
            self.item(FetchAtt("BODYSTRUCTURE")),
            b'BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 3 1'
            b' NIL NIL NIL NIL)' + inner % (b" NIL NIL NIL NIL", b" NIL NIL NIL NIL")
            + b' "MIXED" ("BOUNDARY" "b") NIL NIL NIL)')
        self.assertEqual(
            self.item(FetchAtt("BODY")),
            b'BODY (("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 3 1)'
            + inner % (b"", b"") + b' "MIXED")')

    def test_body_structure_function(self):
        self.assertEqual(body_structure([["A", "B", None, None, None, "7BIT", 1], "X"]),
                         b'(("A" "B" NIL NIL NIL "7BIT" 1) "X")')


    def test_body_structure_embedded_envelope(self):
        env = [None, "s", [["A", None, "a", "x"], [None, None, "b", "y"]], None, None, None,
               None, None, None, None]
        bs = ["MESSAGE", "RFC822", None, None, None, "7BIT", 10, env,
              [["TEXT", "PLAIN", None, None, None, "7BIT", 1, 1], "MIXED"], 2]
        self.assertEqual(
            body_structure(bs),
            b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 10 (NIL "s" (("A" NIL "a" "x")'
            b'(NIL NIL "b" "y")) NIL NIL NIL NIL NIL NIL NIL) (("TEXT" "PLAIN" NIL NIL NIL'
            b' "7BIT" 1 1) "MIXED") 2)')


SINGLE_B64 = crlf(b"""Subject: bin
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

AAEC
""")


class SinglePartTests(FetchTestCase):
    data = SINGLE_B64

    def test_part_one(self):
        # RFC 9051 6.4.5: a message that is not multipart has only part 1, its body.
        self.assertEqual(self.item(body((1,))), b"BODY[1] {6}\r\nAAEC\r\n")
        self.assertEqual(self.item(body((2,))), b'BODY[2] ""')
        self.assertEqual(self.item(binary((1,))), b"BINARY[1] ~{3}\r\n\x00\x01\x02")
        self.assertEqual(self.item(FetchAtt("BINARY.SIZE[]", Section((1,)))), b"BINARY.SIZE[1] 3")
        self.assertEqual(self.item(body(text="TEXT")), b"BODY[TEXT] {6}\r\nAAEC\r\n")
        # Not a message/rfc822 part: no embedded header.
        self.assertEqual(self.item(body((1,), "HEADER")), b'BODY[1.HEADER] ""')

    def test_full_macro(self):
        r = self.fetch([FetchAtt("FULL")])
        self.assertTrue(r.data.endswith(
            b' ENVELOPE (NIL "bin" NIL NIL NIL NIL NIL NIL NIL NIL)'
            b' BODY ("APPLICATION" "OCTET-STREAM" NIL NIL NIL "BASE64" 6))\r\n'), r.data)


class HeaderOnlyTests(FetchTestCase):
    data = b"Subject: x\r\nX-A: 1\r\n"

    def test_no_blank_line(self):
        # RFC 9051 6.4.5: no blank line added when the message has none.
        self.assertEqual(self.item(body(text="HEADER")), b"BODY[HEADER] " + lit(self.data))
        self.assertEqual(self.item(body(text="HEADER.FIELDS", fields=("X-A",))),
                         b"BODY[HEADER.FIELDS (X-A)] {8}\r\nX-A: 1\r\n")
        self.assertEqual(self.item(body(text="TEXT")), b'BODY[TEXT] ""')


class SectionTests(FetchTestCase):
    def test_whole(self):
        self.assertEqual(self.item(body(peek=True)), b"BODY[] " + lit(MIXED))
        self.assertEqual(self.item(FetchAtt("RFC822")), b"RFC822 " + lit(MIXED))

    def test_header_text(self):
        self.assertEqual(self.item(body(text="HEADER", peek=True)),
                         b"BODY[HEADER] " + lit(MIXED_HEADER))
        self.assertEqual(self.item(FetchAtt("RFC822.HEADER")),
                         b"RFC822.HEADER " + lit(MIXED_HEADER))
        text = MIXED[len(MIXED_HEADER):]
        self.assertTrue(text.startswith(b"preamble\r\n--outer"))
        self.assertEqual(self.item(body(text="TEXT")), b"BODY[TEXT] " + lit(text))
        self.assertEqual(self.item(FetchAtt("RFC822.TEXT")), b"RFC822.TEXT " + lit(text))

    def test_header_fields(self):
        # RFC 9051 6.4.5: case-insensitive, message order, blank line included; the
        # names are echoed as requested.
        self.assertEqual(
            self.item(body(text="HEADER.FIELDS", fields=("SUBJECT", "FROM", "X-ABSENT"),
                           peek=True)),
            b"BODY[HEADER.FIELDS (SUBJECT FROM X-ABSENT)] "
            + lit(b"From: Alice <alice@example.org>\r\nSubject: Report\r\n\r\n"))
        self.assertEqual(
            self.item(body(text="HEADER.FIELDS.NOT", fields=("SUBJECT", "FROM", "CONTENT-TYPE"))),
            b"BODY[HEADER.FIELDS.NOT (SUBJECT FROM CONTENT-TYPE)] "
            + lit(b"To: Bob <bob@example.com>\r\nDate: Tue, 5 Mar 2024 14:07:09 +0100\r\n"
                  b"Message-ID: <m1@example.org>\r\nMIME-Version: 1.0\r\n\r\n"))
        self.assertEqual(self.item(body(text="HEADER.FIELDS", fields=("X-NONE",))),
                         b"BODY[HEADER.FIELDS (X-NONE)] {2}\r\n\r\n")
        # A name that is not an atom goes as a quoted string.
        self.assertEqual(self.item(body(text="HEADER.FIELDS", fields=("A]B",))),
                         b'BODY[HEADER.FIELDS ("A]B")] {2}\r\n\r\n')

    def test_parts(self):
        self.assertEqual(self.item(body((1, 1))),
                         b"BODY[1.1] " + lit(b"Gr=C3=BC=C3=9Fe, caf=\r\n=C3=A9"))
        self.assertEqual(self.item(body((1, 2))), b"BODY[1.2] {9}\r\n<p>Hi</p>")
        self.assertEqual(self.item(body((2,))), b"BODY[2] {8}\r\nAAEC/w==")
        self.assertEqual(self.item(body((4,))), b"BODY[4] {4}\r\nCaf\xe9")
        # A multipart part's body is everything after its header up to its end, incl.
        # the close delimiter.
        self.assertEqual(self.item(body((1,))), b"BODY[1] " + lit(
            b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            b"Gr=C3=BC=C3=9Fe, caf=\r\n=C3=A9\r\n--alt\r\n"
            b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hi</p>\r\n--alt--"))

    def test_mime(self):
        # RFC 9051 6.4.5: MIME is the part's own MIME header.
        self.assertEqual(
            self.item(body((1, 2), "MIME")),
            b"BODY[1.2.MIME] " + lit(b"Content-Type: text/html; charset=utf-8\r\n\r\n"))
        self.assertEqual(self.item(body((3,), "MIME")),
                         b"BODY[3.MIME] " + lit(b"Content-Type: message/rfc822\r\n\r\n"))

    def test_embedded_message(self):
        inner_header = (b"From: Carol <carol@example.net>\r\nSubject: Inner\r\n"
                        b"X-Note: folded\r\n continuation\r\n\r\n")
        # The body of a message/rfc822 part is the whole embedded message.
        self.assertEqual(self.item(body((3,))), b"BODY[3] " + lit(inner_header + b"Inner body."))
        # RFC 9051 6.4.5: N.HEADER and N.TEXT refer to the embedded message.
        self.assertEqual(self.item(body((3,), "HEADER")), b"BODY[3.HEADER] " + lit(inner_header))
        self.assertEqual(self.item(body((3,), "TEXT")), b"BODY[3.TEXT] {11}\r\nInner body.")
        self.assertEqual(self.item(body((3, 1))), b"BODY[3.1] {11}\r\nInner body.")
        # Folded fields are kept whole.
        self.assertEqual(self.item(body((3,), "HEADER.FIELDS", ("x-note",))),
                         b"BODY[3.HEADER.FIELDS (x-note)] "
                         + lit(b"X-Note: folded\r\n continuation\r\n\r\n"))
        self.assertEqual(self.item(body((3,), "HEADER.FIELDS.NOT", ("X-NOTE", "FROM"))),
                         b"BODY[3.HEADER.FIELDS.NOT (X-NOTE FROM)] "
                         + lit(b"Subject: Inner\r\n\r\n"))

    def test_nonexistent(self):
        # A part that does not exist is an empty string, not an error.
        self.assertEqual(self.item(body((9,))), b'BODY[9] ""')
        self.assertEqual(self.item(body((1, 1, 1))), b'BODY[1.1.1] ""')
        self.assertEqual(self.item(body((9,), "MIME")), b'BODY[9.MIME] ""')
        # HEADER/TEXT of a part that is not message/rfc822.
        self.assertEqual(self.item(body((2,), "HEADER")), b'BODY[2.HEADER] ""')
        self.assertEqual(self.item(body((2,), "TEXT")), b'BODY[2.TEXT] ""')
        self.assertEqual(self.item(binary((7,))), b'BINARY[7] ""')
        self.assertEqual(self.item(FetchAtt("BINARY.SIZE[]", Section((7,)))), b"BINARY.SIZE[7] 0")

    def test_partial(self):
        # RFC 9051 7.5.2: the response carries only the origin octet.
        self.assertEqual(self.item(body(partial=(0, 4))), b"BODY[]<0> {4}\r\nFrom")
        self.assertEqual(self.item(body((1, 1), partial=(2, 5))), b"BODY[1.1]<2> {5}\r\n=C3=B")
        # Count running past the end: up to the end.
        self.assertEqual(self.item(body((1, 2), partial=(6, 100))), b"BODY[1.2]<6> {3}\r\n/p>")
        # RFC 9051 6.4.5: starting beyond the end gives an empty string.
        self.assertEqual(self.item(body((1, 2), partial=(9, 10))), b'BODY[1.2]<9> ""')
        self.assertEqual(self.item(body((1, 2), partial=(1000, 10))), b'BODY[1.2]<1000> ""')
        self.assertEqual(self.item(body((1, 2), partial=(0, 0))), b'BODY[1.2]<0> ""')
        self.assertEqual(
            self.item(body(text="HEADER.FIELDS", fields=("SUBJECT",), partial=(9, 100))),
            b"BODY[HEADER.FIELDS (SUBJECT)]<9> {10}\r\nReport\r\n\r\n")

    def test_partial_reads_range(self):
        self.item(body((1, 2), partial=(6, 2)))
        self.assertEqual(self.counter["read"], 2)
        self.assertEqual(self.counter["closed"], 1)

    def test_peek_reported_as_body(self):
        r = self.fetch([body((1, 2), peek=True), body((1, 2))], ctx=FetchContext(readonly=True))
        # The same response item once.
        self.assertEqual(r.data, b"* 12 FETCH (BODY[1.2] {9}\r\n<p>Hi</p>)\r\n")


class BinaryTests(FetchTestCase):
    def test_base64(self):
        # RFC 3516 4.2: decoded; NUL octets require literal8.
        self.assertEqual(self.item(binary((2,))), b"BINARY[2] ~{4}\r\n\x00\x01\x02\xff")
        self.assertEqual(self.item(binary((2,), peek=True, partial=(1, 2))),
                         b"BINARY[2]<1> {2}\r\n\x01\x02")
        self.assertEqual(self.item(binary((2,), partial=(4, 2))), b'BINARY[2]<4> ""')

    def test_quoted_printable(self):
        self.assertEqual(self.item(binary((1, 1))),
                         b"BINARY[1.1] " + lit("Grüße, café".encode("utf-8")))

    def test_identity(self):
        self.assertEqual(self.item(binary((4,))), b"BINARY[4] {4}\r\nCaf\xe9")
        self.assertEqual(self.item(binary((4,), partial=(3, 1))), b"BINARY[4]<3> {1}\r\n\xe9")
        self.assertEqual(self.counter["read"], 4 + 1)
        self.assertEqual(self.item(binary()), b"BINARY[] " + lit(MIXED))

    def test_size(self):
        def size(part):
            return self.item(FetchAtt("BINARY.SIZE[]", Section(part)))
        self.assertEqual(size((2,)), b"BINARY.SIZE[2] 4")
        decoded = "Grüße, café".encode("utf-8")
        self.assertEqual(size((1, 1)), b"BINARY.SIZE[1.1] %d" % len(decoded))
        self.assertEqual(size((4,)), b"BINARY.SIZE[4] 4")
        self.assertEqual(size(()), b"BINARY.SIZE[] %d" % len(MIXED))

    def test_identity_size_reads_nothing(self):
        self.item(FetchAtt("BINARY.SIZE[]", Section((4,))))
        self.assertEqual(self.counter["opened"], 0)

    def test_unknown_cte(self):
        # RFC 3516 4.3: NO [UNKNOWN-CTE].
        for att in (binary((5,)), FetchAtt("BINARY.SIZE[]", Section((5,)))):
            r = self.fetch([FetchAtt("FLAGS"), att])
            self.assertEqual(r.error, UNKNOWN_CTE)
            self.assertEqual(r.data, b"")
            self.assertFalse(r.sets_seen)
        # BODY of that part is fine.
        self.assertEqual(self.item(body((5,))), b"BODY[5] {11}\r\nbegin 644 x")


class SeenTests(FetchTestCase):
    def test_sets_seen(self):
        # RFC 9051 6.4.5: BODY[] sets \Seen; the changed FLAGS are included.
        msg = make_message(self.data, flags=("\\Answered", "$label1"))
        r = self.fetch([body((1, 2))], msg=msg, include_uid=True)
        self.assertTrue(r.sets_seen)
        self.assertEqual(r.data, b"* 12 FETCH (UID 7 BODY[1.2] {9}\r\n<p>Hi</p>"
                                 b" FLAGS (\\Seen \\Answered $label1))\r\n")
        # FLAGS asked for: it shows \Seen, once.
        r = self.fetch([FetchAtt("FLAGS"), body((1, 2))], msg=msg)
        self.assertTrue(r.sets_seen)
        self.assertEqual(r.data, b"* 12 FETCH (FLAGS (\\Seen \\Answered $label1)"
                                 b" BODY[1.2] {9}\r\n<p>Hi</p>)\r\n")

    def test_which_items(self):
        msg = make_message(self.data)
        ctx = FetchContext()
        for att in (body(), body(text="HEADER"), binary((2,)), FetchAtt("RFC822"),
                    FetchAtt("RFC822.TEXT")):
            self.assertTrue(implies_seen(msg, [att], ctx), att)
            self.assertTrue(self.fetch([att], msg=msg).sets_seen, att)
        for att in (body(peek=True), binary((2,), peek=True), FetchAtt("RFC822.HEADER"),
                    FetchAtt("BINARY.SIZE[]", Section((2,))), FetchAtt("BODY"),
                    FetchAtt("BODYSTRUCTURE"), FetchAtt("ENVELOPE"), FetchAtt("FLAGS")):
            self.assertFalse(implies_seen(msg, [att], ctx), att)
            r = self.fetch([att], msg=msg)
            self.assertFalse(r.sets_seen, att)
            if att.name != "FLAGS":
                self.assertNotIn(b"FLAGS", r.data)

    def test_readonly(self):
        # RFC 9051 6.3.3: EXAMINE never changes flags.
        r = self.fetch([body()], ctx=FetchContext(readonly=True))
        self.assertFalse(r.sets_seen)
        self.assertNotIn(b"FLAGS", r.data)

    def test_already_seen(self):
        msg = make_message(self.data, flags=("\\Seen",))
        r = self.fetch([body((1, 2))], msg=msg)
        self.assertFalse(r.sets_seen)
        self.assertEqual(r.data, b"* 12 FETCH (BODY[1.2] {9}\r\n<p>Hi</p>)\r\n")

    def test_store_then_render(self):
        # With CONDSTORE the caller stores \Seen first, then renders the new state.
        msg = make_message(self.data)
        ctx = FetchContext(condstore=True)
        self.assertTrue(implies_seen(msg, [body((1, 2))], ctx))
        stored = make_message(self.data, flags=("\\Seen",), modseq=9)
        r = self.fetch([body((1, 2))], msg=stored, ctx=ctx, include_uid=True, include_flags=True)
        self.assertFalse(r.sets_seen)
        self.assertEqual(r.data, b"* 12 FETCH (UID 7 BODY[1.2] {9}\r\n<p>Hi</p> FLAGS (\\Seen)"
                                 b" MODSEQ (9))\r\n")


class LargeMessageTests(FetchTestCase):
    def test_partial_of_large_message(self):
        # BODY[]<0.20> of a 20 MB message reads 20 bytes, not the message.
        path = self.mktemp()
        line = b"x" * 998 + b"\r\n"
        with open(path, "wb") as f:
            f.write(b"Subject: big\r\n\r\n")
            for _ in range(20 * 1024):
                f.write(line)
        with open(path, "rb") as f:
            data = f.read()
        msg = make_message(data)
        del data
        counter = {"read": 0, "calls": 0, "closed": 0}

        def open_file():
            return CountingFile(open(path, "rb"), counter)

        r = render_fetch(msg, 1, [body(peek=True, partial=(0, 20)),
                                   body(text="TEXT", peek=True, partial=(5, 3))],
                         open_file, FetchContext())
        self.assertEqual(r.data, b"* 1 FETCH (BODY[]<0> {20}\r\nSubject: big\r\n\r\nxxxx"
                                 b" BODY[TEXT]<5> {3}\r\nxxx)\r\n")
        self.assertEqual(counter["read"], 23)
        self.assertEqual(counter["closed"], 1)
        self.assertGreater(os.path.getsize(path), 20 * 1000 * 1000)


class StreamTests(SynchronousTestCase):
    """Large sections come back as FileRange parts, to be streamed from the file."""

    def test_stream_parts(self):
        import json as _json

        from moxtw import message as _m
        from moxtw.imapserver import fetch as _f
        from moxtw.imapserver.types import FetchAtt as _FA
        from moxtw.imapserver.types import Section as _S
        from moxtw.store.model import Message as _Msg

        data = b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n"
        s = _m.summary(data)
        from datetime import datetime, timezone

        now = datetime(2026, 11, 21, tzinfo=timezone.utc)
        msg = _Msg(id=1, mailbox_id=1, uid=3, modseq=1, flags=(), size=len(data), received=now,
                   saved=now, message_id="", subject="big", thread_id=1, preview="",
                   envelope_json=_json.dumps(s.envelope), bodystructure_json=_json.dumps(s.bodystructure),
                   part_json=_json.dumps(s.part_json), row={})
        opened = []

        def open_file():
            import io
            opened.append(1)
            return io.BytesIO(data)

        ctx = _f.FetchContext(stream_threshold=1000, readonly=True)
        res = _f.render_fetch(msg, 1, [_FA("BODY[]", section=_S(text="TEXT"), peek=True),
                                       _FA("BODY[]", section=_S(text="HEADER"), peek=True)], open_file, ctx)
        self.assertIsNone(res.data)
        self.assertEqual(res.parts[0], b"* 1 FETCH (")
        self.assertEqual(res.parts[1], b"BODY[TEXT] {5002}\r\n")
        self.assertEqual(res.parts[2], _f.FileRange(16, len(data)))
        self.assertEqual(res.parts[3], b' BODY[HEADER] {16}\r\nSubject: big\r\n\r\n')
        self.assertEqual(res.parts[-1], b")\r\n")
        # Small sections are not streamed.
        res = _f.render_fetch(msg, 1, [_FA("BODY[]", section=_S(text="TEXT"), peek=True, partial=(0, 10))],
                              open_file, ctx)
        self.assertEqual(res.data, b"* 1 FETCH (BODY[TEXT]<0> {10}\r\nxxxxxxxxxx)\r\n")
