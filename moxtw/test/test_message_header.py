"""Tests for header-level helpers of moxtw.message: RFC 2047 words, RFC 2231
parameters, address lists, dates, base subjects, message-ids."""

from datetime import datetime, timedelta, timezone

from twisted.trial.unittest import SynchronousTestCase

from moxtw.message import (
    Address, base_subject, decode_words, parse_address_list, parse_date, parse_message_ids, unfold)
from moxtw.message.charset import decode, lookup
from moxtw.message.encoding import decode_base64, decode_quoted_printable
from moxtw.message.header import parse_content_type, parse_disposition, parse_params


class DecodeWordsTests(SynchronousTestCase):
    def test_plain(self):
        self.assertEqual(decode_words("hello world"), "hello world")
        self.assertEqual(decode_words(b"hello"), "hello")
        self.assertEqual(decode_words(None), "")

    def test_q_and_b(self):
        self.assertEqual(decode_words("=?utf-8?q?caf=C3=A9_noir?="), "café noir")
        self.assertEqual(decode_words("=?UTF-8?B?w6k=?="), "é")
        self.assertEqual(decode_words("=?iso-8859-1?q?caf=E9?="), "café")

    def test_adjacent_words_joined(self):
        # RFC 2047 6.2: whitespace between adjacent encoded words is ignored.
        self.assertEqual(decode_words("=?utf-8?q?a?= =?utf-8?q?b?=\r\n =?utf-8?q?c?="), "abc")
        self.assertEqual(decode_words("=?utf-8?q?a?= b =?utf-8?q?c?="), "a b c")
        # A character split over two words.
        self.assertEqual(decode_words("=?utf-8?b?4oI=?= =?utf-8?b?rA==?="), "€")

    def test_rfc2231_language(self):
        # RFC 2231 5: charset*language.
        self.assertEqual(decode_words("=?US-ASCII*EN?Q?Keith_Moore?="), "Keith Moore")

    def test_unknown_charset_left_alone(self):
        self.assertEqual(decode_words("=?x-nonsense?q?abc?= =?utf-8?q?d?="), "=?x-nonsense?q?abc?= d")

    def test_broken(self):
        self.assertEqual(decode_words("=?utf-8?b?!!!?="), "")
        self.assertEqual(decode_words("=?utf-8?q?=ZZ?="), "=ZZ")
        self.assertEqual(decode_words("=?utf-8?x?abc?="), "=?utf-8?x?abc?=")
        self.assertEqual(decode_words("=?utf-8?q?no end"), "=?utf-8?q?no end")
        self.assertEqual(decode_words("=?utf-8?b?/w==?="), "\ufffd")
        self.assertEqual(decode_words("=?base64?b?YQ==?="), "=?base64?b?YQ==?=")

    def test_8bit(self):
        self.assertEqual(decode_words("Grüße".encode()), "Grüße")
        self.assertEqual(decode_words(b"Gr\xfc\xdfe"), "Grüße")


class ParamsTests(SynchronousTestCase):
    def test_basic(self):
        self.assertEqual(parse_content_type('Text/HTML; Charset="UTF-8"; format=flowed'),
                         ("text", "html", {"charset": "UTF-8", "format": "flowed"}))
        self.assertIsNone(parse_content_type("nonsense"))
        self.assertIsNone(parse_content_type(""))

    def test_comments_and_quotes(self):
        # RFC 2045 5.1's example with a comment.
        self.assertEqual(parse_content_type("text/plain; charset=us-ascii (Plain text)"),
                         ("text", "plain", {"charset": "us-ascii"}))
        self.assertEqual(parse_params('; name="a\\"b;c.txt"; x=1'), {"name": 'a"b;c.txt', "x": "1"})
        self.assertEqual(parse_params('; name="unterminated'), {"name": "unterminated"})
        self.assertEqual(parse_params("; a=1; A=2; novalue; =x"), {"a": "1"})

    def test_rfc2231(self):
        # RFC 2231 3 and 4 examples.
        self.assertEqual(parse_params("; URL*0=\"ftp://\"; URL*1=\"cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar\""),
                         {"url": "ftp://cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar"})
        self.assertEqual(parse_params("; title*=us-ascii'en-us'This%20is%20%2A%2A%2Afun%2A%2A%2A"),
                         {"title": "This is ***fun***"})
        self.assertEqual(parse_params("; title*0*=us-ascii'en'This%20is%20even%20more%20;"
                                      " title*1*=%2A%2A%2Afun%2A%2A%2A%20; title*2=\"isn't it!\""),
                         {"title": "This is even more ***fun*** isn't it!"})

    def test_rfc2231_out_of_order_and_mixed(self):
        self.assertEqual(parse_params("; name*1=b; name*0=a; name=plain"), {"name": "ab"})
        self.assertEqual(parse_params("; name=plain; name*=utf-8''%C3%A9"), {"name": "é"})
        self.assertEqual(parse_params("; name*=''%C3%A9"), {"name": "é"})
        self.assertEqual(parse_params("; name*=bogus'x'%E9"), {"name": "é"})
        self.assertEqual(parse_params("; name*=%zz"), {"name": "%zz"})
        self.assertEqual(parse_params("; name*99999=x"), {})

    def test_disposition(self):
        self.assertEqual(parse_disposition('Attachment; filename="a.txt"; size=10'),
                         ("attachment", {"filename": "a.txt", "size": "10"}))
        self.assertIsNone(parse_disposition(";"))


class AddressTests(SynchronousTestCase):
    def test_rfc5322_examples(self):
        # RFC 5322 A.1.1 and A.1.2.
        self.assertEqual(parse_address_list('"Joe Q. Public" <john.q.public@example.com>'),
                         [Address("Joe Q. Public", "john.q.public", "example.com")])
        self.assertEqual(parse_address_list('Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>'), [
            Address("Mary Smith", "mary", "x.test"),
            Address("", "jdoe", "example.org"),
            Address("Who?", "one", "y.test"),
        ])
        self.assertEqual(parse_address_list('<boss@nil.test>, "Giant; \\"Big\\" Box" <sysservices@example.net>'), [
            Address("", "boss", "nil.test"),
            Address('Giant; "Big" Box', "sysservices", "example.net"),
        ])

    def test_obsolete_forms(self):
        # RFC 5322 A.6.1-A.6.3: obsolete phrases, routes, comments, whitespace.
        self.assertEqual(parse_address_list("Joe Q. Public <john.q.public@example.com>"),
                         [Address("Joe Q. Public", "john.q.public", "example.com")])
        self.assertEqual(parse_address_list("Mary Smith <@node.test:mary@example.net>"),
                         [Address("Mary Smith", "mary", "example.net")])
        self.assertEqual(parse_address_list("Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>"),
                         [Address("Pete", "pete", "silly.test")])
        self.assertEqual(parse_address_list("john . q . public @ example . com"),
                         [Address("", "john.q.public", "example.com")])

    def test_comment_as_name(self):
        self.assertEqual(parse_address_list("bar@baz.example (Bar Baz)"), [Address("Bar Baz", "bar", "baz.example")])

    def test_encoded_names(self):
        self.assertEqual(parse_address_list("=?utf-8?q?J=C3=B6rg?= <j@x.example>, \"=?utf-8?b?w6k=?=\" <e@x.example>"),
                         [Address("Jörg", "j", "x.example"), Address("é", "e", "x.example")])

    def test_groups_flattened(self):
        self.assertEqual(parse_address_list("friends: a@x.test, B <b@y.test>; c@z.test, empty:;"), [
            Address("", "a", "x.test"), Address("B", "b", "y.test"), Address("", "c", "z.test")])

    def test_garbage(self):
        self.assertEqual(parse_address_list(""), [])
        self.assertEqual(parse_address_list(None), [])
        self.assertEqual(parse_address_list(",,,"), [])
        self.assertEqual(parse_address_list("<>"), [])
        self.assertEqual(parse_address_list("a@b.test>, <c@d.test"), [Address("", "a", "b.test"), Address("", "c", "d.test")])
        self.assertEqual(parse_address_list("user@[IPv6:::1]"), [Address("", "user", "[IPv6:::1]")])
        self.assertEqual(parse_address_list(b"J\xf6rg <j@x.test>"), [Address("Jörg", "j", "x.test")])
        parse_address_list('"unterminated <a@b')
        parse_address_list("(unterminated comment")
        parse_address_list("a:b:c:;;;<<>>@@")

    def test_address_helper(self):
        self.assertEqual(Address("N", "l", "d").address(), "l@d")
        self.assertEqual(Address("N", "l", "").address(), "l")
        self.assertEqual(Address.from_json(Address("N", "l", "d").to_json()), Address("N", "l", "d"))


class DateTests(SynchronousTestCase):
    def check(self, value, *args, offset=0):
        self.assertEqual(parse_date(value), datetime(*args, tzinfo=timezone(timedelta(minutes=offset))))
        self.assertIsNotNone(parse_date(value).tzinfo)

    def test_rfc5322(self):
        self.check("Fri, 21 Nov 1997 09:55:06 -0600", 1997, 11, 21, 9, 55, 6, offset=-360)
        self.check("Thu, 13 Feb 1969 23:32:54 -0330", 1969, 2, 13, 23, 32, 54, offset=-210)
        self.check("Tue, 1 Jul 2003 10:52:37 +0200", 2003, 7, 1, 10, 52, 37, offset=120)
        self.check(b"1 Jul 2003 10:52 +0000", 2003, 7, 1, 10, 52, 0)

    def test_obsolete(self):
        # RFC 5322 A.6.3 and 4.3.
        self.check("Thu,\r\n      13\r\n        Feb\r\n          1969\r\n      23:32\r\n"
                   "               -0330 (Newfoundland Time)", 1969, 2, 13, 23, 32, 0, offset=-210)
        self.check("21 Nov 97 09:55:06 GMT", 1997, 11, 21, 9, 55, 6)
        self.check("21 Nov 07 09:55:06 EST", 2007, 11, 21, 9, 55, 6, offset=-300)
        self.check("21 Nov 107 09:55:06 PDT", 2007, 11, 21, 9, 55, 6, offset=-420)
        self.check("21 Nov 2007 09:55:06 A", 2007, 11, 21, 9, 55, 6)
        self.check("Sunday, 06-Nov-94 08:49:37 GMT", 1994, 11, 6, 8, 49, 37)
        self.check("Mon Jan  5 12:00:00 2024", 2024, 1, 5, 12, 0, 0)
        self.check("2024-01-05T12:00:00+01:00", 2024, 1, 5, 12, 0, 0, offset=60)
        self.check("Mon, 1 Jan 2024 10:00:60 +0000", 2024, 1, 1, 10, 0, 59)

    def test_invalid(self):
        for value in (None, "", "garbage", "Mon, 32 Jan 2024 10:00:00 +0000", "1 Foo 2024 10:00 +0000",
                      "1 Jan 2024 25:00 +0000", "99999999999999999999 Jan 2024 10:00 +0000"):
            self.assertIsNone(parse_date(value), value)
        # An impossible zone is treated as unknown (-0000), not as an error.
        self.check("1 Jan 2024 10:00 +9999", 2024, 1, 1, 10, 0, 0)


class BaseSubjectTests(SynchronousTestCase):
    def test_rfc5256(self):
        cases = {
            "": "",
            "hello": "hello",
            "Re: hello": "hello",
            "RE: Re: re:hello": "hello",
            "Fwd: hello": "hello",
            "Fw: hello": "hello",
            "Re[2]: hello": "hello",
            "Re: [list] hello": "hello",
            "[list] Re: hello": "hello",
            "[list]": "[list]",
            "hello (fwd)": "hello",
            "hello (Fwd) (fwd)  ": "hello",
            "[Fwd: hello]": "hello",
            "[fwd: Re: [list] hello (fwd)]": "hello",
            "Re:\thello\r\n world": "hello world",
            "Reply: hello": "Reply: hello",
            "Re: Re": "Re",
        }
        for subject, expected in cases.items():
            self.assertEqual(base_subject(subject), expected, subject)


class MiscTests(SynchronousTestCase):
    def test_message_ids(self):
        self.assertEqual(parse_message_ids("<a@b> (comment) <c@d>"), ["a@b", "c@d"])
        self.assertEqual(parse_message_ids("  bare@id  "), ["bare@id"])
        self.assertEqual(parse_message_ids("<a@b"), [])
        self.assertEqual(parse_message_ids(None), [])
        self.assertEqual(parse_message_ids("<>"), [])

    def test_unfold(self):
        self.assertEqual(unfold(b" a\r\n b\r\n\tc "), b"a b\tc")
        self.assertEqual(unfold(" a\n b"), "a b")

    def test_charset_lookup(self):
        self.assertEqual(lookup("UTF-8"), "utf-8")
        self.assertEqual(lookup("iso-8859-1"), "cp1252")
        self.assertEqual(lookup("ks_c_5601-1987"), "cp949")
        self.assertIsNone(lookup("rot13"))
        self.assertIsNone(lookup("base64"))
        self.assertIsNone(lookup("unicode_escape"))
        self.assertIsNone(lookup("x" * 1000))
        self.assertIsNone(lookup(""))
        self.assertEqual(decode("Привет".encode("koi8-r"), "KOI8-R"), "Привет")
        self.assertEqual(decode("中文".encode("gb18030"), "gb2312"), "中文")

    def test_transfer_decoding(self):
        self.assertEqual(decode_base64(b"aGVsbG8=\r\nd29ybGQ="), b"helloworld")
        self.assertEqual(decode_base64(b"a"), b"")
        self.assertEqual(decode_base64("aGk"), b"hi")
        self.assertEqual(decode_quoted_printable(b"a=\r\nb=20 =\nc=3d=XY"), b"ab  c==XY")

    def test_quoted_printable_trailing_whitespace(self):
        # RFC 2045 6.7 rule 3: trailing whitespace on an encoded line is transport
        # padding and deleted; "=20" and whitespace before a soft break stay.
        qp = b"hello  \r\nfoo\t \t= \r\n=62\r\nfoo = \t\r\nbar\r\nx=20\r\nend \t"
        self.assertEqual(decode_quoted_printable(qp), b"hello\r\nfoo\t \tb\r\nfoo bar\r\nx \r\nend")
