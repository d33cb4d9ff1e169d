"""Tests for moxtw.message: real-world shaped messages, their part trees,
offsets, ENVELOPE and BODYSTRUCTURE (RFC 9051 7.5.2) value for value."""

import json
import textwrap
from datetime import datetime, timedelta, timezone

from twisted.trial.unittest import SynchronousTestCase

from moxtw.message import (
    Address, Part, fix_line_endings, parse, summary)


def crlf(text):
    """Dedent a test message and give it CRLF line endings."""
    text = textwrap.dedent(text)
    if text.startswith("\n"):
        text = text[1:]
    return text.replace("\n", "\r\n").encode("utf-8")


def ext(*fields):
    """Single-part extension data all NIL (md5, dsp, lang, loc)."""
    return list(fields) + [None, None, None, None]


class PlainTextTests(SynchronousTestCase):
    # RFC 9051 7.5.2's example message.
    msg = crlf("""
        Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)
        From: Fred Foobar <foobar@Blurdybloop.example>
        Subject: afternoon meeting
        To: mooch@owatagu.siam.edu.example
        Message-Id: <B27397-0100000@Blurdybloop.example>
        MIME-Version: 1.0
        Content-Type: TEXT/PLAIN; CHARSET=US-ASCII

        Hello Joe, do you think we can meet at 3:30 tomorrow?
        """)

    def test_offsets(self):
        p = parse(self.msg)
        self.assertEqual(p.header_offset, 0)
        self.assertEqual(self.msg[p.body_offset:p.end_offset],
                         b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n")
        self.assertEqual(p.end_offset, len(self.msg))
        self.assertEqual(p.size, 55)
        self.assertEqual(p.lines, 1)
        self.assertTrue(self.msg[:p.body_offset].endswith(b"US-ASCII\r\n\r\n"))

    def test_fields(self):
        p = parse(self.msg)
        self.assertEqual((p.media_type, p.media_subtype), ("text", "plain"))
        self.assertEqual(p.params, {"charset": "US-ASCII"})
        self.assertEqual(p.content_transfer_encoding, "7bit")
        self.assertEqual(p.header("subject"), "afternoon meeting")
        self.assertEqual(p.header("SUBJECT"), "afternoon meeting")
        self.assertEqual(p.header_raw("message-id"), b"<B27397-0100000@Blurdybloop.example>")
        self.assertIsNone(p.header("x-missing"))
        self.assertEqual(p.headers[0], ("Date", b" Mon, 7 Feb 1994 21:52:25 -0800 (PST)"))
        self.assertEqual(len(p.headers), 7)

    def test_envelope(self):
        fred = [["Fred Foobar", None, "foobar", "Blurdybloop.example"]]
        self.assertEqual(parse(self.msg).envelope(), [
            "Mon, 7 Feb 1994 21:52:25 -0800 (PST)",
            "afternoon meeting",
            fred, fred, fred,  # RFC 9051 7.5.2: sender, reply-to default to from
            [[None, None, "mooch", "owatagu.siam.edu.example"]],
            None, None, None,
            "<B27397-0100000@Blurdybloop.example>",
        ])

    def test_bodystructure(self):
        p = parse(self.msg)
        self.assertEqual(p.bodystructure(extended=False),
                         ["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", 55, 1])
        self.assertEqual(p.bodystructure(),
                         ext("TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", 55, 1))

    def test_part_by_path(self):
        p = parse(self.msg)
        self.assertIs(p.part_by_path([]), p)
        self.assertIs(p.part_by_path([1]), p)  # RFC 9051 6.4.5: non-multipart has part 1
        self.assertIsNone(p.part_by_path([2]))
        self.assertIsNone(p.part_by_path([1, 1]))

    def test_summary(self):
        s = summary(self.msg)
        self.assertEqual(s.message_id, "B27397-0100000@Blurdybloop.example")
        self.assertEqual(s.subject, "afternoon meeting")
        self.assertEqual(s.base_subject, "afternoon meeting")
        self.assertEqual(s.date, datetime(1994, 2, 7, 21, 52, 25, tzinfo=timezone(timedelta(hours=-8))))
        self.assertEqual(s.from_, [Address("Fred Foobar", "foobar", "Blurdybloop.example")])
        self.assertEqual(s.sender, [])
        self.assertEqual(s.to, [Address("", "mooch", "owatagu.siam.edu.example")])
        self.assertEqual(s.preview, "Hello Joe, do you think we can meet at 3:30 tomorrow?")
        self.assertIn("afternoon meeting", s.text)
        self.assertIn("Fred Foobar", s.text)
        self.assertIn("meet at 3:30", s.text)
        self.assertEqual(s.envelope, parse(self.msg).envelope())
        self.assertEqual(s.bodystructure, parse(self.msg).bodystructure())


class AlternativeTests(SynchronousTestCase):
    msg = crlf("""
        From: "Doe, John" <john@example.com>
        To: Jane <jane@example.org>, bob@example.net
        Cc: undisclosed-recipients:;
        Subject: Re: [list] Fwd: hello (fwd)
        Date: Tue, 1 Aug 2023 10:00:00 +0200
        Message-ID: <alt1@example.com>
        In-Reply-To: <prev@example.com>
        References: <root@example.com>
         <prev@example.com>
        List-Id: The List <list.example.com>
        MIME-Version: 1.0
        Content-Type: multipart/alternative; boundary="b1"

        This is a multi-part message in MIME format.
        --b1
        Content-Type: text/plain; charset=utf-8
        Content-Transfer-Encoding: quoted-printable

        Caf=C3=A9 time.
        --b1
        Content-Type: text/html; charset=utf-8

        <p>Caf&eacute; <b>time</b>.</p>
        --b1--
        epilogue
        """)

    def test_tree(self):
        p = parse(self.msg)
        self.assertEqual((p.media_type, p.media_subtype), ("multipart", "alternative"))
        self.assertEqual(len(p.parts), 2)
        text, html = p.parts
        self.assertEqual(self.msg[text.body_offset:text.end_offset], b"Caf=C3=A9 time.")
        self.assertEqual(self.msg[text.header_offset:text.body_offset],
                         b"Content-Type: text/plain; charset=utf-8\r\n"
                         b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")
        self.assertEqual(self.msg[html.body_offset:html.end_offset], b"<p>Caf&eacute; <b>time</b>.</p>")
        self.assertEqual(text.decoded_body(self.msg), "Café time.".encode())
        self.assertEqual(text.text(self.msg), "Café time.")
        self.assertIs(p.part_by_path([2]), html)
        self.assertIsNone(p.part_by_path([3]))
        self.assertIsNone(p.part_by_path([0]))

    def test_bodystructure(self):
        self.assertEqual(parse(self.msg).bodystructure(), [
            ext("TEXT", "PLAIN", ["CHARSET", "utf-8"], None, None, "QUOTED-PRINTABLE", 15, 1),
            ext("TEXT", "HTML", ["CHARSET", "utf-8"], None, None, "7BIT", 31, 1),
            "ALTERNATIVE", ["BOUNDARY", "b1"], None, None, None,
        ])
        self.assertEqual(parse(self.msg).bodystructure(False), [
            ["TEXT", "PLAIN", ["CHARSET", "utf-8"], None, None, "QUOTED-PRINTABLE", 15, 1],
            ["TEXT", "HTML", ["CHARSET", "utf-8"], None, None, "7BIT", 31, 1],
            "ALTERNATIVE",
        ])

    def test_envelope(self):
        john = [["Doe, John", None, "john", "example.com"]]
        self.assertEqual(parse(self.msg).envelope(), [
            "Tue, 1 Aug 2023 10:00:00 +0200",
            "Re: [list] Fwd: hello (fwd)",
            john, john, john,
            [["Jane", None, "jane", "example.org"], [None, None, "bob", "example.net"]],
            # RFC 9051 7.5.2: group start and end markers.
            [[None, None, "undisclosed-recipients", None], [None, None, None, None]],
            None,
            "<prev@example.com>",
            "<alt1@example.com>",
        ])

    def test_summary(self):
        s = summary(self.msg)
        self.assertEqual(s.base_subject, "hello")
        self.assertEqual(s.in_reply_to, ["prev@example.com"])
        self.assertEqual(s.references, ["root@example.com", "prev@example.com"])
        self.assertEqual(s.list_id, "list.example.com")
        self.assertEqual(s.cc, [])
        self.assertEqual(s.from_, [Address("Doe, John", "john", "example.com")])
        self.assertEqual(s.preview, "Café time.")
        self.assertIn("Café time.", s.text)
        self.assertEqual(s.date.utcoffset(), timedelta(hours=2))


class NestedTests(SynchronousTestCase):
    msg = crlf("""
        From: Alice <alice@example.com>
        To: bob@example.com
        Subject: Report
        Date: Wed, 02 Aug 2023 08:30:00 +0000
        Message-ID: <nested@example.com>
        MIME-Version: 1.0
        Content-Type: multipart/mixed; boundary="outer"

        --outer
        Content-Type: multipart/related; boundary="rel"; type="multipart/alternative"

        --rel
        Content-Type: multipart/alternative; boundary="alt"

        --alt
        Content-Type: text/plain; charset=us-ascii

        See the chart.
        --alt
        Content-Type: text/html; charset=us-ascii

        <img src="cid:chart@x">
        --alt--

        --rel
        Content-Type: image/png; name="chart.png"
        Content-Transfer-Encoding: base64
        Content-ID: <chart@x>
        Content-Disposition: inline; filename="chart.png"

        iVBORw0KGgo=
        --rel--

        --outer
        Content-Type: application/pdf; name="report.pdf"
        Content-Transfer-Encoding: BASE64
        Content-Disposition: attachment; filename="report.pdf"; size=4
        Content-Description: The report
        Content-Language: en, de
        Content-Location: http://example.com/report.pdf
        Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==

        JVBERg==
        --outer--
        """)

    def test_tree(self):
        p = parse(self.msg)
        related = p.part_by_path([1])
        alt = p.part_by_path([1, 1])
        plain = p.part_by_path([1, 1, 1])
        html = p.part_by_path([1, 1, 2])
        image = p.part_by_path([1, 2])
        pdf = p.part_by_path([2])
        self.assertEqual((related.media_type, related.media_subtype), ("multipart", "related"))
        self.assertEqual(alt.media_subtype, "alternative")
        self.assertEqual(self.msg[plain.body_offset:plain.end_offset], b"See the chart.")
        self.assertEqual(self.msg[html.body_offset:html.end_offset], b'<img src="cid:chart@x">')
        self.assertEqual(self.msg[image.body_offset:image.end_offset], b"iVBORw0KGgo=")
        self.assertEqual(image.decoded_body(self.msg), b"\x89PNG\r\n\x1a\n")
        self.assertEqual(pdf.decoded_body(self.msg), b"%PDF")
        self.assertEqual(pdf.content_transfer_encoding, "base64")
        self.assertEqual(pdf.filename(), "report.pdf")
        self.assertEqual(pdf.language, ["en", "de"])
        self.assertEqual(self.msg[alt.body_offset:alt.end_offset].split(b"\r\n")[-2:], [b"--alt--", b""])
        # BODY[1.2.MIME]
        self.assertEqual(self.msg[image.header_offset:image.body_offset], crlf("""
            Content-Type: image/png; name="chart.png"
            Content-Transfer-Encoding: base64
            Content-ID: <chart@x>
            Content-Disposition: inline; filename="chart.png"

            """))
        self.assertIsNone(p.part_by_path([1, 3]))
        self.assertIsNone(p.part_by_path([1, 1, 1, 1]))
        self.assertEqual([q.media_subtype for q in p.walk()],
                         ["mixed", "related", "alternative", "plain", "html", "png", "pdf"])

    def test_bodystructure(self):
        self.assertEqual(parse(self.msg).bodystructure(), [
            [
                [
                    ext("TEXT", "PLAIN", ["CHARSET", "us-ascii"], None, None, "7BIT", 14, 1),
                    ext("TEXT", "HTML", ["CHARSET", "us-ascii"], None, None, "7BIT", 23, 1),
                    "ALTERNATIVE", ["BOUNDARY", "alt"], None, None, None,
                ],
                ["IMAGE", "PNG", ["NAME", "chart.png"], "<chart@x>", None, "BASE64", 12,
                 None, ["INLINE", ["FILENAME", "chart.png"]], None, None],
                "RELATED", ["BOUNDARY", "rel", "TYPE", "multipart/alternative"], None, None, None,
            ],
            ["APPLICATION", "PDF", ["NAME", "report.pdf"], None, "The report", "BASE64", 8,
             "Q2hlY2sgSW50ZWdyaXR5IQ==", ["ATTACHMENT", ["FILENAME", "report.pdf", "SIZE", "4"]],
             ["en", "de"], "http://example.com/report.pdf"],
            "MIXED", ["BOUNDARY", "outer"], None, None, None,
        ])

    def test_json_roundtrip(self):
        p = parse(self.msg)
        d = json.loads(json.dumps(p.to_json()))
        q = Part.from_json(d)
        self.assertEqual(q.bodystructure(), p.bodystructure())
        self.assertEqual(q.bodystructure(False), p.bodystructure(False))
        self.assertEqual(q.envelope(), p.envelope())
        for a, b in zip(p.walk(), q.walk()):
            self.assertEqual((a.header_offset, a.body_offset, a.end_offset),
                             (b.header_offset, b.body_offset, b.end_offset))
        img = q.part_by_path([1, 2])
        self.assertEqual(img.headers, [])
        img.load_headers(self.msg)
        self.assertEqual(img.header("content-id"), "<chart@x>")
        self.assertEqual(img.body_offset, p.part_by_path([1, 2]).body_offset)
        self.assertLess(len(json.dumps(d)), len(self.msg) * 2)

    def test_summary(self):
        s = summary(self.msg)
        self.assertEqual(s.preview, "See the chart.")
        self.assertIn("See the chart.", s.text)
        self.assertNotIn("JVBERg", s.text)


class ForwardedTests(SynchronousTestCase):
    msg = crlf("""
        From: carol@example.com
        To: dave@example.com
        Subject: Fwd: original
        Date: Thu, 3 Aug 2023 12:00:00 -0400
        Message-ID: <fwd@example.com>
        MIME-Version: 1.0
        Content-Type: multipart/mixed; boundary="fw"

        --fw
        Content-Type: text/plain

        See below.
        --fw
        Content-Type: message/rfc822
        Content-Disposition: inline

        From: Eve <eve@example.net>
        To: carol@example.com
        Subject: original
        Date: Wed, 2 Aug 2023 09:00:00 +0000
        Message-ID: <orig@example.net>

        Original body
        line two
        --fw--
        """)

    inner_envelope = [
        "Wed, 2 Aug 2023 09:00:00 +0000", "original",
        [["Eve", None, "eve", "example.net"]], [["Eve", None, "eve", "example.net"]],
        [["Eve", None, "eve", "example.net"]],
        [[None, None, "carol", "example.com"]], None, None, None, "<orig@example.net>",
    ]

    def test_tree(self):
        p = parse(self.msg)
        rfc822 = p.parts[1]
        inner = rfc822.message
        self.assertIsNotNone(inner)
        self.assertEqual(inner.header_offset, rfc822.body_offset)
        self.assertEqual(inner.end_offset, rfc822.end_offset)
        self.assertEqual(self.msg[inner.body_offset:inner.end_offset], b"Original body\r\nline two")
        self.assertEqual(inner.header("from"), "Eve <eve@example.net>")
        self.assertEqual(rfc822.lines, 8)
        # RFC 9051 6.4.5: 2.1 is the body of the non-multipart embedded message.
        self.assertIs(p.part_by_path([2]), rfc822)
        self.assertIs(p.part_by_path([2, 1]), inner)
        self.assertIsNone(p.part_by_path([2, 2]))
        self.assertEqual(inner.envelope(), self.inner_envelope)

    def test_bodystructure(self):
        inner_body = ext("TEXT", "PLAIN", ["CHARSET", "us-ascii"], None, None, "7BIT", 23, 2)
        size = len(crlf("""
            From: Eve <eve@example.net>
            To: carol@example.com
            Subject: original
            Date: Wed, 2 Aug 2023 09:00:00 +0000
            Message-ID: <orig@example.net>

            Original body
            line two
            """).rstrip(b"\r\n"))
        self.assertEqual(parse(self.msg).bodystructure(), [
            ext("TEXT", "PLAIN", None, None, None, "7BIT", 10, 1),
            ["MESSAGE", "RFC822", None, None, None, "7BIT", size,
             self.inner_envelope, inner_body, 8,
             None, ["INLINE", None], None, None],
            "MIXED", ["BOUNDARY", "fw"], None, None, None,
        ])
        self.assertEqual(parse(self.msg).bodystructure(False)[1], [
            "MESSAGE", "RFC822", None, None, None, "7BIT", size, self.inner_envelope,
            ["TEXT", "PLAIN", ["CHARSET", "us-ascii"], None, None, "7BIT", 23, 2], 8])

    def test_json_roundtrip_keeps_inner_envelope(self):
        p = parse(self.msg)
        q = Part.from_json(json.loads(json.dumps(p.to_json())))
        self.assertEqual(q.part_by_path([2]).message.envelope(), self.inner_envelope)
        self.assertEqual(q.bodystructure(), p.bodystructure())

    def test_summary_indexes_inner(self):
        s = summary(self.msg)
        self.assertIn("Original body", s.text)
        self.assertIn("Eve <eve@example.net>", s.text)
        self.assertEqual(s.preview, "See below.")
        self.assertEqual(s.base_subject, "original")

    def test_embedded_multipart_paths(self):
        msg = crlf("""
            Content-Type: message/rfc822

            Subject: inner
            Content-Type: multipart/mixed; boundary=x

            --x

            one
            --x

            two
            --x--
            """)
        p = parse(msg)
        self.assertIs(p.part_by_path([1]), p)
        inner = p.message
        self.assertIs(p.part_by_path([1, 1]), inner.parts[0])
        self.assertIs(p.part_by_path([1, 2]), inner.parts[1])
        self.assertEqual(msg[inner.parts[1].body_offset:inner.parts[1].end_offset], b"two")
        self.assertIsNone(p.part_by_path([1, 3]))


class DigestTests(SynchronousTestCase):
    msg = crlf("""
        Subject: digest
        Content-Type: multipart/digest; boundary="d"

        --d

        From: a@example.com
        Subject: one

        First
        --d
        Content-Type: text/plain

        Not a message
        --d--
        """)

    def test_digest_default(self):
        p = parse(self.msg)
        first, second = p.parts
        # RFC 2046 5.1.5: default type in a digest is message/rfc822.
        self.assertEqual((first.media_type, first.media_subtype), ("message", "rfc822"))
        self.assertEqual(first.header_offset + 2, first.body_offset)
        self.assertEqual(first.message.header("subject"), "one")
        self.assertEqual(self.msg[first.message.body_offset:first.message.end_offset], b"First")
        self.assertEqual((second.media_type, second.media_subtype), ("text", "plain"))
        bs = p.bodystructure(False)
        self.assertEqual(bs[0][:7], ["MESSAGE", "RFC822", None, None, None, "7BIT", 42])
        self.assertEqual(bs[0][7][1], "one")
        self.assertEqual(bs[0][8], ["TEXT", "PLAIN", ["CHARSET", "us-ascii"], None, None, "7BIT", 5, 1])
        self.assertEqual(bs[0][9], 4)
        self.assertEqual(bs[1:], [["TEXT", "PLAIN", None, None, None, "7BIT", 13, 1], "DIGEST"])

    def test_nested_part_in_digest_is_not_digest(self):
        msg = crlf("""
            Content-Type: multipart/digest; boundary="d"

            --d
            Content-Type: multipart/mixed; boundary="m"

            --m

            plain
            --m--
            --d--
            """)
        p = parse(msg)
        inner = p.parts[0].parts[0]
        self.assertEqual((inner.media_type, inner.media_subtype), ("text", "plain"))


class EncodingTests(SynchronousTestCase):
    def test_encoded_words_in_subject_and_names(self):
        msg = crlf("""
            From: =?utf-8?q?J=C3=B6rg?= <jorg@example.de>
            To: "=?ISO-8859-1?Q?Andr=E9?= Pirard" <pirard@vm1.ulg.ac.be>,
             =?utf-8?b?w4Bwcm9wb3M=?= <a@b.example>
            Subject: =?UTF-8?B?w4Bwcm9wb3M=?=
             =?ISO-8859-1?Q?_caf=E9?= and =?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?=

            x
            """)
        p = parse(msg)
        self.assertEqual(p.header("subject"), "Àpropos café and テスト")
        env = p.envelope()
        # ENVELOPE strings are as on the wire, unfolded, not RFC 2047 decoded.
        self.assertEqual(env[1], "=?UTF-8?B?w4Bwcm9wb3M=?= =?ISO-8859-1?Q?_caf=E9?= and "
                                 "=?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?=")
        self.assertEqual(env[2], [["=?utf-8?q?J=C3=B6rg?=", None, "jorg", "example.de"]])
        self.assertEqual(env[5], [["=?ISO-8859-1?Q?Andr=E9?= Pirard", None, "pirard", "vm1.ulg.ac.be"],
                                  ["=?utf-8?b?w4Bwcm9wb3M=?=", None, "a", "b.example"]])
        s = summary(msg)
        self.assertEqual(s.subject, "Àpropos café and テスト")
        self.assertEqual(s.from_, [Address("Jörg", "jorg", "example.de")])
        self.assertEqual([a.name for a in s.to], ["André Pirard", "Àpropos"])

    def test_rfc2231_filename(self):
        msg = crlf("""
            Content-Type: multipart/mixed; boundary=XX

            --XX
            Content-Type: application/pdf;
             name*=iso-8859-1'fr'r%E9sum%E9.pdf
            Content-Disposition: attachment;
             filename*0*=utf-8''%E2%82%AC%20;
             filename*1*=rates%C3%A9;
             filename*2=".pdf"

            data
            --XX--
            """)
        p = parse(msg)
        part = p.parts[0]
        self.assertEqual(part.params, {"name": "résumé.pdf"})
        self.assertEqual(part.disposition, "attachment")
        self.assertEqual(part.disposition_params, {"filename": "€ ratesé.pdf"})
        self.assertEqual(part.filename(), "€ ratesé.pdf")
        self.assertEqual(p.bodystructure()[0], [
            "APPLICATION", "PDF", ["NAME", "résumé.pdf"], None, None, "7BIT", 4,
            None, ["ATTACHMENT", ["FILENAME", "€ ratesé.pdf"]], None, None])

    def test_outlook_quoted_encoded_filename(self):
        msg = crlf("""
            Content-Type: application/octet-stream; name="=?utf-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=.txt"
            Content-Disposition: attachment

            x""")
        p = parse(msg)
        self.assertEqual(p.params["name"], "=?utf-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=.txt")
        self.assertEqual(p.filename(), "Grüße aus Köln.txt")

    def test_latin1_body(self):
        msg = (b"Content-Type: text/plain; charset=iso-8859-1\r\n"
               b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xe9 cr\xe8me\r\n")
        p = parse(msg)
        self.assertEqual(p.text(msg), "café crème\r\n")
        self.assertEqual(summary(msg).preview, "café crème")

    def test_windows1252_qp_body(self):
        msg = (b"Content-Type: text/plain; charset=windows-1252\r\n"
               b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=80 5 =93quoted=94=\r\n!")
        p = parse(msg)
        self.assertEqual(p.text(msg), "€ 5 \u201cquoted\u201d!")

    def test_iso2022jp_body(self):
        body = "こんにちは".encode("iso-2022-jp")
        msg = b"Content-Type: text/plain; charset=ISO-2022-JP\r\n\r\n" + body
        self.assertEqual(parse(msg).text(msg), "こんにちは")

    def test_mislabelled_and_unknown_charsets(self):
        msg = "Content-Type: text/plain; charset=us-ascii\r\n\r\nnaïve".encode()
        self.assertEqual(parse(msg).text(msg), "naïve")
        msg = b"Content-Type: text/plain; charset=x-unknown-thing\r\n\r\nna\xefve"
        self.assertEqual(parse(msg).text(msg), "naïve")
        msg = b"Content-Type: text/plain; charset=base64\r\n\r\nabc"
        self.assertEqual(parse(msg).text(msg), "abc")
        msg = b"Content-Type: text/plain; charset=utf-8\r\n\r\nbad \xff utf8"
        self.assertEqual(parse(msg).text(msg), "bad \ufffd utf8")

    def test_8bit_headers(self):
        msg = "Subject: Grüße\r\nFrom: Jörg Müller <jörg@müller.example>\r\n\r\nx".encode()
        p = parse(msg)
        self.assertEqual(p.header("subject"), "Grüße")
        self.assertEqual(p.envelope()[1], "Grüße")
        self.assertEqual(p.envelope()[2], [["Jörg Müller", None, "jörg", "müller.example"]])
        self.assertEqual(summary(msg).from_, [Address("Jörg Müller", "jörg", "müller.example")])
        latin1 = b"Subject: Gr\xfc\xdfe\r\n\r\nx"
        p = parse(latin1)
        self.assertEqual(p.header("subject"), "Grüße")
        # ENVELOPE strings are the raw bytes read as UTF-8, invalid bytes replaced.
        self.assertEqual(p.envelope()[1], "Gr\ufffd\ufffde")

    def test_base64_broken(self):
        msg = (b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               b"aGVs\r\nbG8g*!d29y\r\nbGQ")
        self.assertEqual(parse(msg).decoded_body(msg), b"hello world")

    def test_cte_with_comment_and_case(self):
        msg = b"Content-Transfer-Encoding: Quoted-Printable (yes)\r\n\r\na=3Db"
        p = parse(msg)
        self.assertEqual(p.content_transfer_encoding, "quoted-printable")
        self.assertEqual(p.decoded_body(msg), b"a=b")


class BrokenStructureTests(SynchronousTestCase):
    def test_missing_close_delimiter(self):
        msg = crlf("""
            Content-Type: multipart/mixed; boundary=b

            --b
            Content-Type: text/plain

            one
            --b
            Content-Type: text/plain

            two
            """)
        p = parse(msg)
        self.assertEqual(len(p.parts), 2)
        last = p.parts[1]
        self.assertEqual(msg[last.body_offset:last.end_offset], b"two\r\n")
        self.assertEqual(last.end_offset, len(msg))
        self.assertEqual(p.bodystructure(False), [
            ["TEXT", "PLAIN", None, None, None, "7BIT", 3, 1],
            ["TEXT", "PLAIN", None, None, None, "7BIT", 5, 1],
            "MIXED"])

    def test_boundary_parameter_absent(self):
        msg = crlf("""
            Content-Type: multipart/mixed

            just text
            """)
        p = parse(msg)
        self.assertEqual(len(p.parts), 1)
        child = p.parts[0]
        self.assertEqual(child.header_offset, p.body_offset)
        self.assertEqual(child.body_offset, p.body_offset)
        self.assertEqual(child.end_offset, len(msg))
        self.assertEqual(p.bodystructure(), [
            ext("TEXT", "PLAIN", ["CHARSET", "us-ascii"], None, None, "7BIT", 11, 1),
            "MIXED", None, None, None, None])

    def test_boundary_never_occurs(self):
        msg = crlf("""
            Content-Type: multipart/mixed; boundary=nothere

            --other
            text
            """)
        p = parse(msg)
        self.assertEqual(len(p.parts), 1)
        self.assertEqual(p.parts[0].size, len(b"--other\r\ntext\r\n"))

    def test_boundary_lookalikes(self):
        msg = crlf("""
            Content-Type: multipart/mixed; boundary=b

            preamble --b not a delimiter
            --b\t
            Content-Type: text/plain

            --bb is not a delimiter
            --b--   
            epilogue
            """)
        p = parse(msg)
        self.assertEqual(len(p.parts), 1)
        part = p.parts[0]
        self.assertEqual(msg[part.body_offset:part.end_offset], b"--bb is not a delimiter")

    def test_empty_parts(self):
        msg = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n--b\r\n\r\n--b--\r\n"
        p = parse(msg)
        self.assertEqual(len(p.parts), 2)
        for child in p.parts:
            self.assertEqual(child.size, 0)
            self.assertEqual(child.lines, 0)

    def test_no_body(self):
        msg = b"Subject: empty\r\n\r\n"
        p = parse(msg)
        self.assertEqual((p.body_offset, p.end_offset, p.size, p.lines), (len(msg), len(msg), 0, 0))
        self.assertEqual(p.bodystructure(False), ["TEXT", "PLAIN", ["CHARSET", "us-ascii"], None, None, "7BIT", 0, 0])
        self.assertEqual(summary(msg).preview, "")

    def test_no_blank_line(self):
        msg = b"Subject: only headers\r\nFrom: a@example.com\r\n"
        p = parse(msg)
        self.assertEqual(p.body_offset, len(msg))
        self.assertEqual(p.header("from"), "a@example.com")
        msg = b"Subject: no newline at all"
        p = parse(msg)
        self.assertEqual(p.body_offset, len(msg))
        self.assertEqual(p.header("subject"), "no newline at all")

    def test_no_headers(self):
        msg = b"hello world\r\nsecond line\r\n"
        p = parse(msg)
        self.assertEqual(p.headers, [])
        self.assertEqual((p.header_offset, p.body_offset), (0, 0))
        self.assertEqual(p.lines, 2)
        self.assertEqual(p.envelope(), [None] * 10)
        s = summary(msg)
        self.assertEqual((s.subject, s.message_id, s.date), ("", "", None))

    def test_header_section_ends_at_invalid_line(self):
        msg = b"Subject: x\r\nthis is not a header\r\nmore\r\n"
        p = parse(msg)
        self.assertEqual(p.body_offset, len(b"Subject: x\r\n"))
        self.assertEqual(len(p.headers), 1)

    def test_empty_header_section_in_part(self):
        msg = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nbody\r\n--b--"
        child = parse(msg).parts[0]
        self.assertEqual(child.headers, [])
        self.assertEqual(child.body_offset, child.header_offset + 2)
        self.assertEqual(msg[child.body_offset:child.end_offset], b"body")

    def test_folding_and_obsolete_space_before_colon(self):
        msg = b"Subject : folded\r\n\tover\r\n  lines\r\nX-Empty:\r\n\r\nbody"
        p = parse(msg)
        self.assertEqual(p.headers[0], ("Subject", b" folded\r\n\tover\r\n  lines"))
        self.assertEqual(p.header_raw("subject"), b"folded\r\n\tover\r\n  lines")
        self.assertEqual(p.header("subject"), "folded\tover  lines")
        self.assertEqual(p.header("x-empty"), "")
        self.assertEqual(p.envelope()[1], "folded\tover  lines")

    def test_bare_lf_message(self):
        msg = (b"Subject: lf\nContent-Type: multipart/mixed; boundary=z\n\n--z\n"
               b"Content-Type: text/plain\n\nline1\nline2\n--z--\n")
        p = parse(msg)
        self.assertEqual(p.header("subject"), "lf")
        self.assertEqual(msg[p.parts[0].body_offset:p.parts[0].end_offset], b"line1\nline2")
        fixed = fix_line_endings(msg)
        self.assertEqual(fixed, msg.replace(b"\n", b"\r\n"))
        q = parse(fixed)
        self.assertEqual(fixed[q.parts[0].body_offset:q.parts[0].end_offset], b"line1\r\nline2")
        self.assertEqual(q.parts[0].lines, 2)

    def test_nul_bytes(self):
        msg = b"Subject: a\x00b\r\nFrom: x\x00@y\r\n\r\nbody\x00with nul\r\n"
        p = parse(msg)
        self.assertEqual(p.header("subject"), "a\x00b")
        self.assertEqual(msg[p.body_offset:p.end_offset], b"body\x00with nul\r\n")
        summary(msg)

    def test_invalid_content_type_defaults(self):
        # RFC 2045 5.2: invalid Content-Type means text/plain; charset=us-ascii.
        p = parse(b"Content-Type: garbage\r\n\r\nx")
        self.assertEqual((p.media_type, p.media_subtype, p.params), ("text", "plain", {"charset": "us-ascii"}))
        p = parse(b"Content-Type: text/html charset=utf-8\r\n\r\nx")
        self.assertEqual((p.media_type, p.media_subtype), ("text", "html"))
        self.assertEqual(p.params, {"charset": "utf-8"})

    def test_rfc822_with_base64_encoding(self):
        msg = b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA0KDQp5"
        p = parse(msg)
        self.assertIsNotNone(p.message)
        bs = p.bodystructure()
        self.assertEqual(bs[:7], ["MESSAGE", "RFC822", None, None, None, "BASE64", 20])
        self.assertEqual(len(bs), 14)


class GroupAndAddressTests(SynchronousTestCase):
    def test_group_envelope(self):
        # RFC 5322 A.1.3.
        msg = crlf("""
            From: Pete <pete@silly.example>
            To: A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;, other@x.test
            Cc: Undisclosed recipients:;
            Sender: <>
            Reply-To:
            Bcc: <@route1,@route2:user@host.test>, (comment only) "quoted local"@q.test

            x
            """)
        env = parse(msg).envelope()
        pete = [["Pete", None, "pete", "silly.example"]]
        self.assertEqual(env[2], pete)
        self.assertEqual(env[3], pete)  # empty Sender: defaults to From
        self.assertEqual(env[4], pete)  # empty Reply-To: defaults to From
        self.assertEqual(env[5], [
            [None, None, "A Group", None],
            ["Ed Jones", None, "c", "a.test"],
            [None, None, "joe", "where.test"],
            ["John", None, "jdoe", "one.test"],
            [None, None, None, None],
            [None, None, "other", "x.test"],
        ])
        self.assertEqual(env[6], [[None, None, "Undisclosed recipients", None], [None, None, None, None]])
        self.assertEqual(env[7], [[None, "@route1,@route2", "user", "host.test"],
                                  # A comment stands in for a missing display name.
                                  ["comment only", None, "quoted local", "q.test"]])
        s = summary(msg)
        self.assertEqual([a.address() for a in s.to],
                         ["c@a.test", "joe@where.test", "jdoe@one.test", "other@x.test"])
        self.assertEqual(s.cc, [])

    def test_missing_domain(self):
        env = parse(b"To: localonly\r\n\r\n").envelope()
        # host "" not NIL: NIL host would mean a group marker.
        self.assertEqual(env[5], [[None, None, "localonly", ""]])


class LongHeaderTests(SynchronousTestCase):
    def test_very_long_headers(self):
        refs = " ".join("<id%d@example.com>" % i for i in range(500))
        folded = "\r\n ".join(refs[i:i + 70] for i in range(0, len(refs), 70))
        subject = "word " * 5000
        msg = ("References: %s\r\nSubject: %s\r\nX-Long: %s\r\n\r\nbody" % (
            folded, subject.strip(), "y" * 200000)).encode()
        p = parse(msg)
        s = summary(msg)
        self.assertEqual(len(s.references), 500)
        self.assertEqual(s.references[499], "id499@example.com")
        self.assertEqual(p.header("subject"), subject.strip())
        self.assertEqual(len(p.header_raw("x-long")), 200000)
        self.assertEqual(msg[p.body_offset:], b"body")

    def test_header_limits(self):
        from moxtw.message import part as partmod
        many = b"".join(b"X-%d: v\r\n" % i for i in range(partmod.MAX_HEADER_FIELDS + 100))
        msg = many + b"Subject: late\r\n\r\nbody"
        p = parse(msg)
        self.assertEqual(len(p.headers), partmod.MAX_HEADER_FIELDS)
        self.assertEqual(msg[p.body_offset:], b"body")
        huge = b"X-Huge: " + b"a" * (partmod.MAX_HEADER_BYTES * 3) + b"\r\nSubject: s\r\n\r\nbody"
        p = parse(huge)
        self.assertLessEqual(sum(len(v) for _n, v in p.headers), partmod.MAX_HEADER_BYTES)
        self.assertEqual(huge[p.body_offset:], b"body")
        folded = b"X-Fold: a\r\n" + b" b\r\n" * (partmod.MAX_HEADER_BYTES // 2) + b"\r\nbody"
        p = parse(folded)
        self.assertEqual(folded[p.body_offset:], b"body")


class FixLineEndingsTests(SynchronousTestCase):
    def test_crlf_unchanged(self):
        data = b"a\r\nb\r\n"
        self.assertIs(fix_line_endings(data), data)
        self.assertEqual(fix_line_endings(b""), b"")

    def test_repairs(self):
        self.assertEqual(fix_line_endings(b"a\nb\r\nc\rd\r"), b"a\r\nb\r\nc\r\nd\r\n")
        self.assertEqual(fix_line_endings(b"\n\n"), b"\r\n\r\n")
        self.assertEqual(fix_line_endings(b"\r\r\n"), b"\r\n\r\n")


class SummaryTests(SynchronousTestCase):
    def test_html_only_preview(self):
        msg = crlf("""
            Subject: =?utf-8?q?H=C3=A9llo?=
            Content-Type: text/html; charset=utf-8

            <html><head><title>ignored</title><style>p {color: red}</style></head>
            <body><p>Hi&nbsp;there,</p>   <p>second   para</p><script>alert(1)</script></body></html>
            """)
        s = summary(msg)
        self.assertEqual(s.subject, "Héllo")
        self.assertEqual(s.preview, "Hi there, second para")
        self.assertNotIn("alert", s.text)
        self.assertNotIn("ignored", s.text)
        self.assertIn("Héllo", s.text)

    def test_plain_preferred_and_attachments_skipped(self):
        msg = crlf("""
            Content-Type: multipart/mixed; boundary=m

            --m
            Content-Type: text/plain
            Content-Disposition: attachment; filename=notes.txt

            attached notes
            --m
            Content-Type: multipart/alternative; boundary=a

            --a
            Content-Type: text/html

            <p>html version</p>
            --a
            Content-Type: text/plain

            plain version
            --a--
            --m--
            """)
        s = summary(msg)
        self.assertEqual(s.preview, "plain version")
        self.assertIn("attached notes", s.text)

    def test_preview_is_bounded(self):
        msg = b"Content-Type: text/plain\r\n\r\n" + b"word \r\n\t" * 10000
        s = summary(msg)
        self.assertEqual(len(s.preview), 256)
        self.assertNotIn("  ", s.preview)

    def test_message_global(self):
        msg = crlf("""
            Content-Type: message/global

            Subject: Grüße
            From: Jörg <jörg@example.de>

            hi
            """)
        p = parse(msg)
        self.assertEqual(p.message.header("subject"), "Grüße")
        bs = p.bodystructure(False)
        self.assertEqual(bs[:2], ["MESSAGE", "GLOBAL"])
        self.assertEqual(bs[7][1], "Grüße")
        self.assertEqual(bs[8], ["TEXT", "PLAIN", ["CHARSET", "us-ascii"], None, None, "7BIT", 4, 1])

    def test_envelope_is_cached_json(self):
        msg = b"Subject: s\r\nFrom: a@b.example\r\n\r\nx"
        s = summary(msg)
        self.assertEqual(json.loads(json.dumps(s.part_json))["v"], s.envelope)
        self.assertEqual(Part.from_json(s.part_json).envelope(), s.envelope)
