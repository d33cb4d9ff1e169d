"""Tests for moxtw.imapserver.parser: every command's arguments, literals, RFC examples,
and (at the end, in classes of their own) hostile input and fuzzing."""

from datetime import date, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from moxtw.imapserver.parser import (
    MAX_PAREN_DEPTH, MAX_SEARCH_DEPTH, ParseError, _parse_command, literal_at_end, parse_command, tag_of)
from moxtw.imapserver.response import mailbox_name
from moxtw.imapserver.types import STAR, FetchAtt, SearchKey, SearchProgram, Section, SeqSet


def p(line, utf8=False):
    """Parse a command given without its final CRLF."""
    return parse_command(line + b"\r\n", utf8=utf8)


def key(op, *args):
    return SearchKey(op, list(args))


def prog(*keys, charset="", return_opts=None):
    return SearchProgram(key=SearchKey("and", list(keys)), charset=charset, return_opts=return_opts)


def seq(*ranges):
    return SeqSet(ranges=tuple(ranges))


class ParserTestMixin:
    def bad(self, line, text=None, tag="A1", code=None, utf8=False):
        """Assert ``line`` (without CRLF) is refused; returns the ParseError."""
        with self.assertRaises(ParseError) as cm:
            p(line, utf8)
        e = cm.exception
        self.assertEqual(e.tag, tag)
        if text is not None:
            self.assertIn(text, e.text)
        if code is not None:
            self.assertEqual(e.code, code)
        return e


class StructureTests(ParserTestMixin, SynchronousTestCase):
    """Tags, command names, UID prefix, CRLF."""

    def test_tag_and_name(self):
        c = p(b"a.1 noop")
        self.assertEqual((c.tag, c.name, c.uid, c.args), ("a.1", "NOOP", False, {}))

    def test_tag_with_bracket(self):
        # RFC 9051 9: tag = 1*<any ASTRING-CHAR except "+">; "]" is an ASTRING-CHAR.
        self.assertEqual(p(b"a]1 NOOP").tag, "a]1")

    def test_bad_tags(self):
        for line in (b"", b" NOOP", b"+1 NOOP", b"* NOOP", b"(a NOOP", b'"a" NOOP', b"a{1} NOOP"):
            with self.assertRaises(ParseError) as cm:
                p(line)
            self.assertIsNone(cm.exception.tag, line)

    def test_missing_command(self):
        self.bad(b"A1", "missing command")
        self.bad(b"A1 ", "missing command")

    def test_unknown_command(self):
        self.assertEqual(self.bad(b"A1 FOO").text, "unknown command")
        self.bad(b"A1 DONE", "unknown command")  # IDLE's DONE is handled by the framing layer

    def test_no_args_commands(self):
        for name in (
            "CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "IDLE",
            "NAMESPACE", "UNAUTHENTICATE",
        ):
            c = p(b"A1 " + name.lower().encode())
            self.assertEqual((c.name, c.args, c.uid), (name, {}, False))
            self.bad(b"A1 " + name.encode() + b" x", "unexpected arguments")
            self.bad(b"A1 " + name.encode() + b"(", "expected end of command")

    def test_missing_crlf(self):
        with self.assertRaises(ParseError) as cm:
            parse_command(b"A1 NOOP")
        self.assertEqual(cm.exception.tag, "A1")
        self.assertIn("CRLF", cm.exception.text)
        with self.assertRaises(ParseError):
            parse_command(b"A1 NOOP\n")

    def test_trailing_data(self):
        with self.assertRaises(ParseError):
            parse_command(b"A1 NOOP\r\nA2 NOOP\r\n")
        with self.assertRaises(ParseError):
            parse_command(b"A1 NOOP \r\n")

    def test_uid_commands(self):
        self.assertTrue(p(b"A1 UID FETCH 1 FLAGS").uid)
        self.assertTrue(p(b"A1 uid expunge 1:2").uid)
        self.bad(b"A1 UID LOGIN a b", "unknown UID command")
        self.bad(b"A1 UID", "missing arguments")
        self.bad(b"A1 UID ", "missing command after UID")

    def test_tag_of(self):
        self.assertEqual(tag_of(b"A1 LOGIN {3}\r\n"), "A1")
        self.assertIsNone(tag_of(b"{3}\r\n"))
        self.assertIsNone(tag_of(b"A1"))


class LiteralTests(ParserTestMixin, SynchronousTestCase):
    def test_literal_at_end(self):
        self.assertEqual(literal_at_end(b"A1 LOGIN {3}\r\n"), (3, True, False))
        self.assertEqual(literal_at_end(b"A1 LOGIN {3+}\r\n"), (3, False, False))
        self.assertEqual(literal_at_end(b"foo ~{10}\r\n"), (10, True, True))
        self.assertEqual(literal_at_end(b"foo ~{0+}\r\n"), (0, False, True))
        self.assertEqual(literal_at_end(b"{0}\r\n"), (0, True, False))
        self.assertIsNone(literal_at_end(b"A1 NOOP\r\n"))
        self.assertIsNone(literal_at_end(b"A1 SEARCH SUBJECT x}\r\n"))  # "}" is an ATOM-CHAR
        self.assertIsNone(literal_at_end(b'A1 SEARCH SUBJECT "{" x}\r\n'))
        self.assertIsNone(literal_at_end(b"\r\n"))

    def test_literal_at_end_bad(self):
        # RFC 7888 has only "{n+}"; "{n-}" is no literal syntax.
        for line in (b"A1 X {}\r\n", b"A1 X {+}\r\n", b"A1 X {1-}\r\n", b"A1 X {1++}\r\n", b"A1 X {1+2}\r\n",
                     b"A1 X {4294967296}\r\n", b"A1 X {99999999999999999999999999999}\r\n",
                     b"A1 X {" + b"9" * 5000 + b"}\r\n"):
            self.assertRaises(ParseError, literal_at_end, line)
        self.assertEqual(literal_at_end(b"A1 X {4294967295}\r\n"), (4294967295, True, False))

    def test_login_literals(self):
        c = parse_command(b"A1 LOGIN {3}\r\nfoo {4+}\r\nbar!\r\n")
        self.assertEqual(c.args, {"user": "foo", "password": "bar!"})

    def test_literal_with_crlf_inside(self):
        c = parse_command(b"A1 LOGIN {4}\r\na\r\nb {0}\r\n\r\n")
        self.assertEqual(c.args, {"user": "a\r\nb", "password": ""})

    def test_literal_positions(self):
        # Literal as mailbox, pattern, search string, header name, ID key/value.
        self.assertEqual(parse_command(b"A1 SELECT {5}\r\nINBOX\r\n").args["mailbox"], "INBOX")
        self.assertEqual(
            parse_command(b"A1 LIST {0}\r\n {1+}\r\n*\r\n").args["patterns"], ["*"])
        c = parse_command(b"A1 SEARCH CHARSET UTF-8 SUBJECT {4}\r\n\xc3\xa4\xc3\xb6 ALL\r\n")
        self.assertEqual(c.args["program"], prog(key("subject", "äö"), key("all"), charset="UTF-8"))
        c = parse_command(b"A1 SEARCH HEADER {7}\r\nX-Thing {1}\r\n)\r\n")
        self.assertEqual(c.args["program"], prog(key("header", "X-Thing", ")")))
        c = parse_command(b"A1 ID ({4}\r\nname {3}\r\nabc)\r\n")
        self.assertEqual(c.args["params"], {"name": "abc"})
        c = parse_command(b"A1 FETCH 1 BODY[HEADER.FIELDS ({4}\r\nFrom)]\r\n")
        self.assertEqual(c.args["atts"][0].section, Section(text="HEADER.FIELDS", fields=("FROM",)))

    def test_literal_errors(self):
        self.bad(b"A1 LOGIN {3}", "truncated literal")
        with self.assertRaises(ParseError) as cm:
            parse_command(b"A1 LOGIN {10}\r\nfoo bar\r\n")
        self.assertIn("truncated literal", cm.exception.text)
        with self.assertRaises(ParseError) as cm:
            parse_command(b"A1 LOGIN {3}\r\nfoo\r\n")
        self.assertIn("missing arguments", cm.exception.text)
        self.bad(b"A1 LOGIN {3} foo bar", "expected CRLF after literal header")
        self.bad(b"A1 LOGIN {3x}", "malformed literal header")
        self.bad(b"A1 LOGIN {-3}", "malformed literal header")
        self.bad(b"A1 LOGIN {3-}", "malformed literal header")
        self.bad(b"A1 LOGIN {4294967296}", "literal size too large")
        self.bad(b"A1 LOGIN {" + b"1" * 100 + b"}", "literal size too large")
        self.bad(b"A1 LOGIN ~{3}", "binary literal")

    def test_literal_nul_in_string(self):
        with self.assertRaises(ParseError) as cm:
            parse_command(b"A1 LOGIN {3}\r\na\x00b x\r\n")
        self.assertIn("NUL", cm.exception.text)


class StringTests(ParserTestMixin, SynchronousTestCase):
    def test_quoted_escapes(self):
        c = p(b'A1 LOGIN "a\\"b" "c\\\\d"')
        self.assertEqual(c.args, {"user": 'a"b', "password": "c\\d"})

    def test_quoted_bad_escape(self):
        # RFC 9051 9: only \\ and \" are escapes in quoted strings.
        self.bad(b'A1 LOGIN "a\\nb" x', "invalid escape")
        self.bad(b'A1 LOGIN "a\\', "invalid escape")

    def test_quoted_unterminated(self):
        self.bad(b'A1 LOGIN "abc', "unterminated quoted string")

    def test_quoted_utf8(self):
        self.assertEqual(p(b'A1 LOGIN "m\xc3\xbcller" x').args["user"], "müller")
        self.bad(b'A1 LOGIN "m\xfcller" x', "invalid UTF-8")

    def test_quoted_control(self):
        self.bad(b'A1 LOGIN "a\x00b" x', "invalid character")
        self.bad(b'A1 LOGIN "a\rb" x', "invalid character")
        self.bad(b'A1 LOGIN "a\nb" x', "invalid character")

    def test_empty_quoted(self):
        self.assertEqual(p(b'A1 LOGIN "" ""').args, {"user": "", "password": ""})

    def test_atom_chars(self):
        # ASTRING-CHAR includes "]" but not "(", ")", "{", "%", "*", '"', "\".
        self.assertEqual(p(b"A1 LOGIN a]b c").args["user"], "a]b")
        for bad in (b"a(b", b"a%b", b"a*b", b"a\\b", b"a)b"):
            self.bad(b"A1 LOGIN " + bad + b" c")


class AuthTests(ParserTestMixin, SynchronousTestCase):
    def test_login(self):
        c = p(b'A1 LOGIN smith "sesame pw"')
        self.assertEqual((c.name, c.args), ("LOGIN", {"user": "smith", "password": "sesame pw"}))
        self.bad(b"A1 LOGIN smith", "missing arguments")

    def test_authenticate(self):
        self.assertEqual(p(b"A1 authenticate plain").args, {"mechanism": "PLAIN", "initial": None})
        # RFC 4959 3: initial response, "=" for empty.
        c = p(b"A1 AUTHENTICATE PLAIN AGZvbwBiYXI=")
        self.assertEqual(c.args, {"mechanism": "PLAIN", "initial": b"\x00foo\x00bar"})
        self.assertEqual(p(b"A1 AUTHENTICATE EXTERNAL =").args["initial"], b"")
        self.bad(b"A1 AUTHENTICATE PLAIN AGZvbwBiYXI", "invalid base64")
        self.bad(b"A1 AUTHENTICATE PLAIN !!!!", "invalid base64")
        self.bad(b"A1 AUTHENTICATE PLAIN ", "expected initial response")
        self.bad(b"A1 AUTHENTICATE", "missing arguments")

    def test_enable(self):
        c = p(b"A1 ENABLE condstore utf8=accept IMAP4rev2")
        self.assertEqual(c.args, {"capabilities": ["CONDSTORE", "UTF8=ACCEPT", "IMAP4REV2"]})
        self.bad(b"A1 ENABLE", "missing arguments")
        self.bad(b"A1 ENABLE ", "expected capability")


class MailboxTests(ParserTestMixin, SynchronousTestCase):
    def test_select(self):
        c = p(b"A1 SELECT inbox")
        self.assertEqual(c.args, {"mailbox": "inbox", "condstore": False, "qresync": None})
        self.assertEqual(p(b"A1 EXAMINE blurdybloop").name, "EXAMINE")

    def test_select_condstore(self):
        # RFC 7162 3.1.8.
        self.assertTrue(p(b"A1 SELECT INBOX (CONDSTORE)").args["condstore"])
        self.bad(b"A1 SELECT INBOX (CONDSTORE CONDSTORE)", "duplicate")
        self.bad(b"A1 SELECT INBOX (FOO)", "unknown select parameter FOO")
        self.bad(b"A1 SELECT INBOX ()", "expected select parameter")
        self.bad(b"A1 SELECT INBOX (CONDSTORE", "unbalanced")

    def test_select_qresync(self):
        # RFC 7162 3.2.5.2 example.
        c = p(b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))")
        self.assertEqual(c.args["qresync"], {
            "uidvalidity": 67890007, "modseq": 20050715194045000,
            "known_uids": seq((41, 41), (43, 211), (214, 541)), "seq_match": None})
        c = p(b"A1 SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211,214:541 "
              b"(1:15,19 41:60,100)))")
        self.assertEqual(c.args["qresync"]["seq_match"], (seq((1, 15), (19, 19)), seq((41, 60), (100, 100))))
        c = p(b"A1 SELECT INBOX (QRESYNC (1 2))")
        self.assertEqual(c.args["qresync"], {"uidvalidity": 1, "modseq": 2, "known_uids": None, "seq_match": None})
        c = p(b"A1 SELECT INBOX (QRESYNC (1 2 (1 5)) CONDSTORE)")
        self.assertEqual(c.args["qresync"]["seq_match"], (seq((1, 1)), seq((5, 5))))
        self.assertTrue(c.args["condstore"])
        self.bad(b"A1 SELECT INBOX (QRESYNC (0 2))", "must not be zero")
        self.bad(b"A1 SELECT INBOX (QRESYNC (1 2 1:*))", "* not allowed")
        self.bad(b"A1 SELECT INBOX (QRESYNC (1 2 $))", "$ not allowed")
        self.bad(b"A1 SELECT INBOX (QRESYNC (1 2 1:5 (1:* 1:5)))", "* not allowed")
        self.bad(b"A1 SELECT INBOX (QRESYNC (1 2 (1 *)))", "* not allowed")
        self.bad(b"A1 SELECT INBOX (QRESYNC (1))")
        self.bad(b"A1 SELECT INBOX (QRESYNC (1 2 3 4))")

    def test_mutf7(self):
        # RFC 3501 5.1.3 example.
        c = p(b"A1 CREATE ~peter/mail/&U,BTFw-/&ZeVnLIqe-")
        self.assertEqual(c.args["mailbox"], "~peter/mail/台北/日本語")
        self.assertEqual(p(b"A1 DELETE a&-b").args["mailbox"], "a&b")
        self.assertEqual(p(b"A1 DELETE Entw&APw-rfe").args["mailbox"], "Entwürfe")

    def test_mutf7_invalid(self):
        for name in (b"a&b", b"&", b"&Zm9v-", b"&AGE-", b"&2AA-", b"&U,BTFw", b"&U.BTFw-", b"&AAA-"):
            self.bad(b"A1 DELETE " + name)

    def test_mutf7_not_decoded_with_utf8(self):
        # RFC 6855 3: with UTF8=ACCEPT, names are UTF-8; "&" is just "&".
        self.assertEqual(p(b"A1 DELETE a&U,BTFw-", utf8=True).args["mailbox"], "a&U,BTFw-")
        self.assertEqual(p(b'A1 DELETE "\xe5\x8f\xb0"', utf8=True).args["mailbox"], "台")
        self.bad(b'A1 DELETE "\xff"', "invalid UTF-8", utf8=True)

    def test_raw_utf8_from_rev1_client(self):
        self.assertEqual(p(b'A1 DELETE "Entw\xc3\xbcrfe"').args["mailbox"], "Entwürfe")
        self.bad(b'A1 DELETE "Entw\xfcrfe"', "invalid UTF-8")

    def test_inbox_case_kept(self):
        self.assertEqual(p(b"A1 SELECT iNbOx").args["mailbox"], "iNbOx")

    def test_create(self):
        self.assertEqual(p(b"A1 CREATE owatagusiam/").args, {"mailbox": "owatagusiam/", "use": []})
        # RFC 6154 5.2 example.
        c = p(b"t1 CREATE MySpecial (USE (\\Drafts \\Sent))")
        self.assertEqual(c.args, {"mailbox": "MySpecial", "use": ["\\Drafts", "\\Sent"]})
        self.assertEqual(p(b"t1 CREATE x (USE ())").args["use"], [])
        self.bad(b"t1 CREATE x (USE (Drafts))", tag="t1")
        self.bad(b"t1 CREATE x (FOO (\\Sent))", "unknown create parameter", tag="t1")
        self.bad(b"t1 CREATE x (USE (\\Sent) USE (\\Trash))", "duplicate", tag="t1")

    def test_delete_subscribe(self):
        for name in ("DELETE", "SUBSCRIBE", "UNSUBSCRIBE", "GETQUOTAROOT"):
            c = p(b"A1 " + name.encode() + b" #news.comp.mail.mime")
            self.assertEqual((c.name, c.args), (name, {"mailbox": "#news.comp.mail.mime"}))
            self.bad(b"A1 " + name.encode(), "missing arguments")

    def test_rename(self):
        c = p(b"A1 RENAME blurdybloop sarasoop")
        self.assertEqual(c.args, {"old": "blurdybloop", "new": "sarasoop"})
        self.bad(b"A1 RENAME blurdybloop")

    def test_status(self):
        c = p(b"A1 STATUS blurdybloop (UIDNEXT messages size HIGHESTMODSEQ appendlimit)")
        self.assertEqual(c.args, {
            "mailbox": "blurdybloop", "items": ["UIDNEXT", "MESSAGES", "SIZE", "HIGHESTMODSEQ", "APPENDLIMIT"]})
        e = self.bad(b"A1 STATUS x (MESSAGES BOGUS)")
        self.assertIn("BOGUS", e.text)
        self.bad(b"A1 STATUS x ()", "empty")
        self.bad(b"A1 STATUS x MESSAGES")

    def test_lsub(self):
        c = p(b'A1 LSUB "#news." "comp.mail.*"')
        self.assertEqual(c.args, {"reference": "#news.", "pattern": "comp.mail.*"})

    def test_getquota(self):
        self.assertEqual(p(b'A1 GETQUOTA ""').args, {"root": ""})

    def test_compress(self):
        self.assertEqual(p(b"A1 COMPRESS deflate").args, {"mechanism": "DEFLATE"})


class ListTests(ParserTestMixin, SynchronousTestCase):
    def test_basic(self):
        c = p(b'A101 LIST "" ""')
        self.assertEqual(c.args, {"reference": "", "patterns": [""], "select": [], "return": {}})
        c = p(b"A1 LIST ~/Mail/ %")
        self.assertEqual(c.args["reference"], "~/Mail/")
        self.assertEqual(c.args["patterns"], ["%"])
        self.assertEqual(p(b'A1 LIST "" *]').args["patterns"], ["*]"])

    def test_extended(self):
        # RFC 5258 5 examples.
        c = p(b'A04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" RETURN (CHILDREN)')
        self.assertEqual(c.args, {
            "reference": "", "patterns": ["%"], "select": ["SUBSCRIBED", "RECURSIVEMATCH"],
            "return": {"CHILDREN": True}})
        c = p(b'A05 LIST "" ("INBOX" "Drafts" "Sent/%")')
        self.assertEqual(c.args["patterns"], ["INBOX", "Drafts", "Sent/%"])
        c = p(b'A1 LIST (special-use) "" * return (subscribed special-use)')
        self.assertEqual(c.args["select"], ["SPECIAL-USE"])
        self.assertEqual(c.args["return"], {"SUBSCRIBED": True, "SPECIAL-USE": True})
        self.assertEqual(p(b'A1 LIST () "" * RETURN ()').args["return"], {})

    def test_list_status(self):
        # RFC 5819 5 example.
        c = p(b'A01 LIST "" % RETURN (STATUS (MESSAGES UNSEEN))')
        self.assertEqual(c.args["return"], {"STATUS": ["MESSAGES", "UNSEEN"]})
        self.bad(b'A01 LIST "" % RETURN (STATUS (MESSAGES BOGUS))', "BOGUS", tag="A01")

    def test_mutf7_pattern(self):
        self.assertEqual(p(b'A1 LIST "" &U,BTFw-/*').args["patterns"], ["台北/*"])

    def test_errors(self):
        self.bad(b'A1 LIST (FOO) "" *', "unknown LIST selection option FOO")
        self.bad(b'A1 LIST (RECURSIVEMATCH) "" *', "RECURSIVEMATCH")
        self.bad(b'A1 LIST "" * RETURN (FOO)', "unknown LIST return option FOO")
        self.bad(b'A1 LIST "" * RETURN (CHILDREN CHILDREN)', "duplicate")
        self.bad(b'A1 LIST "" * FOO (CHILDREN)', "expected RETURN")
        self.bad(b'A1 LIST ""', "missing arguments")
        self.bad(b'A1 LIST "" ()')
        self.bad(b'A1 LIST "" ("a"', "unbalanced")


class AppendTests(ParserTestMixin, SynchronousTestCase):
    def test_rfc9051_example(self):
        # RFC 9051 6.3.12.
        msg = (b"Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)\r\nFrom: Fred Foobar <foobar@Blurdybloop.example>\r\n"
               b"Subject: afternoon meeting\r\n\r\nHello Joe, do you think we can meet at 3:30 tomorrow?\r\n")
        data = b"A003 APPEND saved-messages (\\Seen) {%d}\r\n" % len(msg) + msg + b"\r\n"
        c = parse_command(data)
        self.assertEqual(c.args, {"mailbox": "saved-messages", "messages": [
            {"flags": ["\\Seen"], "date": None, "data": msg, "binary": False, "utf8": False}]})

    def test_date_and_flags(self):
        c = parse_command(b'A1 APPEND INBOX (\\seen $Junk \\DRAFT) "05-Feb-1994 21:52:25 -0800" {1+}\r\nx\r\n')
        m = c.args["messages"][0]
        self.assertEqual(m["flags"], ["\\Seen", "$Junk", "\\Draft"])
        self.assertEqual(m["date"], datetime(1994, 2, 5, 21, 52, 25, tzinfo=timezone(timedelta(hours=-8))))
        c = parse_command(b'A1 APPEND INBOX " 5-Feb-1994 01:02:03 +0130" {1}\r\nx\r\n')
        m = c.args["messages"][0]
        self.assertEqual(m["flags"], [])
        self.assertEqual(m["date"], datetime(1994, 2, 5, 1, 2, 3, tzinfo=timezone(timedelta(hours=1, minutes=30))))

    def test_no_flags_no_date(self):
        c = parse_command(b"A1 APPEND INBOX {0}\r\n\r\n")
        self.assertEqual(c.args["messages"], [{"flags": [], "date": None, "data": b"", "binary": False, "utf8": False}])

    def test_multiappend(self):
        # RFC 3502 6.3.11 example (shortened).
        c = parse_command(b"A003 APPEND saved-messages (\\Seen) {3}\r\nabc (\\Seen) {4}\r\ndefg ~{2}\r\n\x00\x01\r\n")
        msgs = c.args["messages"]
        self.assertEqual([m["data"] for m in msgs], [b"abc", b"defg", b"\x00\x01"])
        self.assertEqual([m["binary"] for m in msgs], [False, False, True])
        self.assertEqual(msgs[1]["flags"], ["\\Seen"])

    def test_utf8(self):
        # RFC 6855 4: "UTF8" SP "(" literal8 ")".
        c = parse_command(b"A1 APPEND INBOX (\\Seen) UTF8 (~{3+}\r\n\xc3\xa4x)\r\n")
        m = c.args["messages"][0]
        self.assertEqual((m["data"], m["binary"], m["utf8"]), (b"\xc3\xa4x", True, True))
        with self.assertRaises(ParseError):
            parse_command(b"A1 APPEND INBOX UTF8 (~{1}\r\nx\r\n")

    def test_catenate(self):
        # RFC 4469 5: TEXT parts are literals (literal8 with BINARY), URL parts astrings.
        c = parse_command(b"A1 APPEND INBOX CATENATE (TEXT {1}\r\nx URL /INBOX/;UID=1 TEXT ~{1}\r\n\x00)\r\n")
        m = c.args["messages"][0]
        self.assertEqual(m["catenate"], [("text", b"x"), ("url", "/INBOX/;UID=1"), ("text", b"\x00")])
        self.assertTrue(m["binary"])

    def test_errors(self):
        self.bad(b"A1 APPEND INBOX", "missing arguments")
        self.bad(b"A1 APPEND INBOX (\\Seen)", "missing arguments")
        self.bad(b'A1 APPEND INBOX "hello"', "invalid day in date")
        self.bad(b"A1 APPEND INBOX (\\Seen) (\\Seen) {1}", "expected message literal")
        self.bad(b'A1 APPEND INBOX "05-Feb-1994 21:52:25 -0800" (\\Seen) {1}', "expected message literal")
        self.bad(b"A1 APPEND INBOX hello", "expected message literal")
        self.bad(b"A1 APPEND INBOX (\\*) {1}", "flag")

    def test_bad_date_times(self):
        for dt in (b"31-Feb-2020 10:00:00 +0000", b"01-Foo-2020 10:00:00 +0000", b"01-Jan-20 10:00:00 +0000",
                   b"01-Jan-2020 25:00:00 +0000", b"01-Jan-2020 10:60:00 +0000", b"01-Jan-2020 10:00:00 0000",
                   b"01-Jan-2020 10:00:00 +2400", b"01-Jan-2020 10:00:00 +0060", b"01-Jan-2020 10:00 +0000",
                   b"001-Jan-2020 10:00:00 +0000", b"01-Jan-2020  10:00:00 +0000"):
            with self.assertRaises(ParseError, msg=dt):
                parse_command(b'A1 APPEND INBOX "' + dt + b'" {1}\r\nx\r\n')

    def test_replace(self):
        # RFC 8508 3 example.
        c = parse_command(b"C01 REPLACE 4 Drafts (\\Seen \\Draft) {5}\r\nhello\r\n")
        self.assertEqual(c.args, {"seqset": seq((4, 4)), "mailbox": "Drafts", "message": {
            "flags": ["\\Seen", "\\Draft"], "date": None, "data": b"hello", "binary": False, "utf8": False}})
        c = parse_command(b"C01 UID REPLACE 4 Drafts {1+}\r\nx\r\n")
        self.assertTrue(c.uid)
        with self.assertRaises(ParseError):
            parse_command(b"C01 REPLACE 4 Drafts {1+}\r\nx {1+}\r\ny\r\n")


class SeqSetTests(ParserTestMixin, SynchronousTestCase):
    def s(self, text):
        return p(b"A1 COPY " + text + b" x").args["seqset"]

    def test_forms(self):
        self.assertEqual(self.s(b"1"), seq((1, 1)))
        self.assertEqual(self.s(b"*"), seq((STAR, STAR)))
        self.assertEqual(self.s(b"2:4,7,9:*"), seq((2, 4), (7, 7), (9, STAR)))
        # RFC 9051 9 (seq-range): either order.
        self.assertEqual(self.s(b"4:2"), seq((2, 4)))
        self.assertEqual(self.s(b"*:3"), seq((3, STAR)))
        self.assertEqual(self.s(b"*:*"), seq((STAR, STAR)))
        self.assertEqual(self.s(b"4294967295"), seq((4294967295, 4294967295)))

    def test_searchres(self):
        # RFC 5182 2.1.
        self.assertEqual(self.s(b"$"), SeqSet(searchres=True))
        self.bad(b"A1 COPY $,1 x")
        self.bad(b"A1 COPY 1,$ x")
        self.bad(b"A1 COPY $:1 x")

    def test_bad(self):
        for text in (b"0", b"1:0", b"0:*", b"4294967296", b"1,", b",1", b"1:", b":1", b"1::2", b"-1",
                     b"1.5", b"99999999999999999999999"):
            self.bad(b"A1 COPY " + text + b" x")

    def test_copy_move_expunge(self):
        self.assertEqual(p(b"A1 COPY 2:4 MEETING").args, {"seqset": seq((2, 4)), "mailbox": "MEETING"})
        c = p(b"A1 UID MOVE 42:69 foo")
        self.assertEqual((c.name, c.uid, c.args), ("MOVE", True, {"seqset": seq((42, 69)), "mailbox": "foo"}))
        c = p(b"A1 UID EXPUNGE 3000:3002")
        self.assertEqual((c.name, c.uid, c.args), ("EXPUNGE", True, {"seqset": seq((3000, 3002))}))
        self.bad(b"A1 UID EXPUNGE", "missing arguments")
        self.bad(b"A1 EXPUNGE 1", "unexpected arguments")


class FetchTests(ParserTestMixin, SynchronousTestCase):
    def atts(self, text, uid=False):
        c = p(b"A1 " + (b"UID " if uid else b"") + b"FETCH 1 " + text)
        return c.args["atts"]

    def test_macros(self):
        # RFC 9051 6.4.5.
        self.assertEqual([a.name for a in self.atts(b"ALL")], ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"])
        self.assertEqual([a.name for a in self.atts(b"fast")], ["FLAGS", "INTERNALDATE", "RFC822.SIZE"])
        self.assertEqual([a.name for a in self.atts(b"FULL")],
                         ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"])
        self.bad(b"A1 FETCH 1 (ALL)", "macro")
        self.bad(b"A1 FETCH 1 (FLAGS FAST)", "macro")

    def test_simple(self):
        names = ["ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "RFC822.SIZE",
                 "BODY", "BODYSTRUCTURE", "UID", "MODSEQ", "PREVIEW", "SAVEDATE"]
        atts = self.atts(b"(" + " ".join(n.lower() for n in names).encode() + b")")
        self.assertEqual(atts, [FetchAtt(n) for n in names])
        self.assertEqual(self.atts(b"uid"), [FetchAtt("UID")])
        self.assertEqual(self.atts(b"(PREVIEW (LAZY) UID)"), [FetchAtt("PREVIEW"), FetchAtt("UID")])

    def test_rfc9051_example(self):
        # RFC 9051 6.4.5: FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])
        c = p(b"A654 FETCH 2:4 (FLAGS BODY[HEADER.FIELDS (DATE FROM)])")
        self.assertEqual(c.args, {"seqset": seq((2, 4)), "atts": [
            FetchAtt("FLAGS"), FetchAtt("BODY[]", Section(text="HEADER.FIELDS", fields=("DATE", "FROM")))],
            "changedsince": None, "vanished": False})

    def test_sections(self):
        a = self.atts(b"(BODY[] BODY.PEEK[TEXT] BODY[1.2.3] BODY[4.MIME] BODY[2.HEADER] "
                      b"BODY[HEADER.FIELDS.NOT (Subject x-spam)]<5.10> body.peek[1.text]<0.1>)")
        self.assertEqual(a, [
            FetchAtt("BODY[]", Section()),
            FetchAtt("BODY[]", Section(text="TEXT"), peek=True),
            FetchAtt("BODY[]", Section(part=(1, 2, 3))),
            FetchAtt("BODY[]", Section(part=(4,), text="MIME")),
            FetchAtt("BODY[]", Section(part=(2,), text="HEADER")),
            FetchAtt("BODY[]", Section(text="HEADER.FIELDS.NOT", fields=("SUBJECT", "X-SPAM")), partial=(5, 10)),
            FetchAtt("BODY[]", Section(part=(1,), text="TEXT"), peek=True, partial=(0, 1)),
        ])

    def test_binary(self):
        # RFC 3516 4.2.
        a = self.atts(b"(BINARY[] BINARY.PEEK[1.2]<0.100> BINARY.SIZE[3] BINARY.SIZE[])")
        self.assertEqual(a, [
            FetchAtt("BINARY[]", Section()),
            FetchAtt("BINARY[]", Section(part=(1, 2)), peek=True, partial=(0, 100)),
            FetchAtt("BINARY.SIZE[]", Section(part=(3,))),
            FetchAtt("BINARY.SIZE[]", Section()),
        ])
        self.bad(b"A1 FETCH 1 BINARY[TEXT]")
        self.bad(b"A1 FETCH 1 BINARY[1.MIME]")
        self.bad(b"A1 FETCH 1 BINARY.SIZE[1]<0.1>")
        self.bad(b"A1 FETCH 1 BINARY")

    def test_bad_sections(self):
        for text in (b"BODY[MIME]", b"BODY[FOO]", b"BODY[1.FOO]", b"BODY[0]", b"BODY[1.0]", b"BODY[1.]",
                     b"BODY[HEADER.FIELDS]", b"BODY[HEADER.FIELDS ()]", b"BODY[HEADER.FIELDS (a:b)]",
                     b"BODY[", b"BODY[TEXT", b"BODY[]<", b"BODY[]<1>", b"BODY[]<1.0>", b"BODY[]<1.2",
                     b"BODY.PEEK", b"FLAGS[]", b"RFC822.SIZE<0.1>", b"BODY[]]", b"BODY[1.2.]", b"()", b"(FLAGS",
                     b"FOO", b"(FLAGS FOO)", b"(FLAGS  UID)", b"BODY[]<99999999999999999999999.1>"):
            self.bad(b"A1 FETCH 1 " + text)

    def test_modifiers(self):
        # RFC 7162 3.1.4.2 and 3.2.6 examples.
        c = p(b"s100 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)")
        self.assertEqual((c.args["changedsince"], c.args["vanished"]), (12345, False))
        c = p(b"s100 UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)")
        self.assertEqual((c.args["changedsince"], c.args["vanished"]), (12345, True))
        self.assertEqual(p(b"A1 FETCH 1 FLAGS (CHANGEDSINCE 0)").args["changedsince"], 0)
        self.bad(b"A1 FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)", "UID FETCH")
        self.bad(b"A1 UID FETCH 1 FLAGS (VANISHED)", "CHANGEDSINCE")
        self.bad(b"A1 FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)", "duplicate")
        self.bad(b"A1 FETCH 1 FLAGS (FOO)", "unknown FETCH modifier")
        self.bad(b"A1 FETCH 1 FLAGS (CHANGEDSINCE 99999999999999999999)", "too large")
        self.bad(b"A1 FETCH 1 FLAGS (CHANGEDSINCE 1", "unbalanced")
        self.assertEqual(p(b"A1 FETCH 1 FLAGS (CHANGEDSINCE 9223372036854775807)").args["changedsince"], 2**63 - 1)

    def test_seqsets(self):
        self.assertEqual(p(b"A1 FETCH $ UID").args["seqset"], SeqSet(searchres=True))
        self.assertEqual(p(b"A1 FETCH 1:*,5 UID").args["seqset"], seq((1, STAR), (5, 5)))


class StoreTests(ParserTestMixin, SynchronousTestCase):
    def test_forms(self):
        # RFC 9051 6.4.6 example.
        c = p(b"A003 STORE 2:4 +FLAGS (\\Deleted)")
        self.assertEqual(c.args, {"seqset": seq((2, 4)), "unchangedsince": None, "mode": "add", "silent": False,
                                  "flags": ["\\Deleted"]})
        c = p(b"A1 STORE 1 flags.silent \\Seen $Forwarded")
        self.assertEqual((c.args["mode"], c.args["silent"], c.args["flags"]), ("set", True, ["\\Seen", "$Forwarded"]))
        c = p(b"A1 UID STORE 1 -FLAGS ()")
        self.assertEqual((c.uid, c.args["mode"], c.args["flags"]), (True, "remove", []))

    def test_unchangedsince(self):
        # RFC 7162 3.1.3 example.
        c = p(b"d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)")
        self.assertEqual(c.args["unchangedsince"], 320162338)
        self.assertEqual(p(b"A1 STORE 1 (UNCHANGEDSINCE 0) FLAGS ()").args["unchangedsince"], 0)
        self.bad(b"A1 STORE 1 (FOO 1) FLAGS ()", "unknown STORE modifier")

    def test_errors(self):
        self.bad(b"A1 STORE 1 +FLAGS", "missing arguments")
        self.bad(b"A1 STORE 1 *FLAGS (\\Seen)")
        self.bad(b"A1 STORE 1 LABELS (\\Seen)", "expected FLAGS")
        self.bad(b"A1 STORE 1 FLAGS (\\Seen", "unbalanced")
        self.bad(b"A1 STORE 1 FLAGS (\\*)")
        self.bad(b"A1 STORE 1 FLAGS \\")
        self.bad(b"A1 STORE 1 FLAGS a  b")


class SearchTests(ParserTestMixin, SynchronousTestCase):
    def prog(self, text, uid=False):
        c = p(b"A1 " + (b"UID " if uid else b"") + b"SEARCH " + text)
        return c.args["program"]

    def test_rfc9051_examples(self):
        # RFC 9051 6.4.4.
        self.assertEqual(self.prog(b'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"'), prog(
            key("flagged"), key("since", date(1994, 2, 1)), key("not", key("from", "Smith"))))
        self.assertEqual(self.prog(b'TEXT "string not in mailbox"'), prog(key("text", "string not in mailbox")))
        self.assertEqual(self.prog(b"OR (FLAGGED SEEN) UNSEEN"), prog(
            key("or", key("and", key("flagged"), key("seen")), key("unseen"))))
        self.assertEqual(self.prog(b'RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"'),
                         prog(key("flagged"), key("since", date(1994, 2, 1)), key("not", key("from", "Smith")),
                              return_opts=("MIN", "COUNT")))

    def test_all_keys(self):
        simple = ["ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "SEEN", "UNANSWERED", "UNDELETED", "UNDRAFT",
                  "UNFLAGGED", "UNSEEN", "NEW", "OLD", "RECENT", "SAVEDATESUPPORTED"]
        self.assertEqual(self.prog(" ".join(s.lower() for s in simple).encode()),
                         prog(*[key(s.lower()) for s in simple]))
        for name in ("BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"):
            self.assertEqual(self.prog(name.encode() + b' "a b"'), prog(key(name.lower(), "a b")))
        for name in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE", "SAVEDBEFORE", "SAVEDON",
                     "SAVEDSINCE"):
            self.assertEqual(self.prog(name.encode() + b' "01-jan-2020"'), prog(key(name.lower(), date(2020, 1, 1))))
        self.assertEqual(self.prog(b"KEYWORD $Junk UNKEYWORD foo"), prog(key("keyword", "$Junk"),
                                                                          key("unkeyword", "foo")))
        self.assertEqual(self.prog(b'HEADER Message-ID "<x@y>"'), prog(key("header", "Message-ID", "<x@y>")))
        self.assertEqual(self.prog(b'HEADER X-A ""'), prog(key("header", "X-A", "")))
        self.assertEqual(self.prog(b"LARGER 100 SMALLER 9223372036854775807"),
                         prog(key("larger", 100), key("smaller", 2**63 - 1)))
        self.assertEqual(self.prog(b"OLDER 3600 YOUNGER 60"), prog(key("older", 3600), key("younger", 60)))
        self.assertEqual(self.prog(b"UID 1:*,3 2:3"), prog(key("uid", seq((1, STAR), (3, 3))),
                                                           key("seqset", seq((2, 3)))))
        self.assertEqual(self.prog(b"* $ UID $"), prog(key("seqset", seq((STAR, STAR))),
                                                       key("seqset", SeqSet(searchres=True)),
                                                       key("uid", SeqSet(searchres=True))))

    def test_modseq(self):
        # RFC 7162 3.1.5 examples.
        self.assertEqual(self.prog(b"MODSEQ 620162338"), prog(key("modseq", 620162338)))
        self.assertEqual(self.prog(b'MODSEQ "/flags/\\\\draft" all 620162338'), prog(key("modseq", 620162338)))
        self.assertEqual(self.prog(b"MODSEQ 0"), prog(key("modseq", 0)))
        self.bad(b'A1 SEARCH MODSEQ "/foo" all 1', "entry name")
        self.bad(b'A1 SEARCH MODSEQ "/flags/x" some 1', "entry type")

    def test_return(self):
        # RFC 4731 3.1: "RETURN ()" is "RETURN (ALL)"; RFC 5182 SAVE.
        self.assertEqual(self.prog(b"RETURN () ALL").return_opts, ("ALL",))
        self.assertEqual(self.prog(b"RETURN (save min MIN) ALL").return_opts, ("SAVE", "MIN"))
        self.assertEqual(self.prog(b"RETURN (MAX ALL COUNT SAVE MIN) ALL").return_opts,
                         ("MAX", "ALL", "COUNT", "SAVE", "MIN"))
        self.assertIsNone(self.prog(b"ALL").return_opts)
        self.bad(b"A1 SEARCH RETURN (FANCY) ALL", "unknown search return option")
        # RFC 9394 3.1: PARTIAL with a range, normalized to the smaller magnitude first.
        self.assertEqual(self.prog(b"RETURN (PARTIAL 1:10) ALL").return_opts, (("PARTIAL", 1, 10),))
        self.assertEqual(self.prog(b"RETURN (COUNT PARTIAL 4:2) ALL").return_opts, ("COUNT", ("PARTIAL", 2, 4)))
        self.assertEqual(self.prog(b"RETURN (PARTIAL -1:-100) ALL").return_opts, (("PARTIAL", -1, -100),))
        self.assertEqual(self.prog(b"RETURN (PARTIAL -100:-1) ALL").return_opts, (("PARTIAL", -1, -100),))
        for bad in (b"1", b"1:*", b"*:1", b"0:5", b"-1:5", b"1:-5", b"1:99999999999", b"a:b"):
            self.bad(b"A1 SEARCH RETURN (PARTIAL " + bad + b") ALL", "")
        self.bad(b"A1 SEARCH RETURN (PARTIAL) ALL", "PARTIAL")
        self.bad(b"A1 SEARCH RETURN (PARTIAL 1:2 PARTIAL 3:4) ALL", "twice")
        self.bad(b"A1 SEARCH RETURN ALL", "'(' for search return option")
        self.bad(b"A1 SEARCH RETURN (MIN)", "missing arguments")

    def test_charset(self):
        self.assertEqual(self.prog(b"CHARSET utf-8 ALL").charset, "UTF-8")
        self.assertEqual(self.prog(b'CHARSET "US-ASCII" ALL').charset, "US-ASCII")
        self.assertEqual(self.prog(b"ALL").charset, "")
        e = self.bad(b"A1 SEARCH CHARSET ISO-8859-1 ALL", code="BADCHARSET")
        self.assertIn("ISO-8859-1", e.text)
        self.bad(b"A1 SEARCH CHARSET", "missing arguments")
        self.bad(b"A1 SEARCH CHARSET UTF-8", "missing arguments")
        self.bad(b"A1 SEARCH ALL CHARSET UTF-8", "unknown search key CHARSET")

    def test_utf8_strings(self):
        self.assertEqual(self.prog(b'CHARSET UTF-8 SUBJECT "\xc3\xa4"'), prog(key("subject", "ä"), charset="UTF-8"))
        self.bad(b'A1 SEARCH SUBJECT "\xe4"', "invalid UTF-8")

    def test_nesting(self):
        self.assertEqual(self.prog(b"((SEEN) (NOT (DELETED)))"), prog(
            key("and", key("and", key("seen")), key("and", key("not", key("and", key("deleted")))))))
        self.assertEqual(self.prog(b"OR OR SEEN DELETED NOT NOT DRAFT"), prog(
            key("or", key("or", key("seen"), key("deleted")), key("not", key("not", key("draft"))))))
        self.assertEqual(self.prog(b"NOT OR SEEN DELETED ALL"), prog(
            key("not", key("or", key("seen"), key("deleted"))), key("all")))
        self.assertEqual(self.prog(b"(OR SEEN DELETED)"), prog(key("and", key("or", key("seen"), key("deleted")))))

    def test_uid_search(self):
        c = p(b"A1 UID SEARCH RETURN (SAVE) 1:100 UNDELETED")
        self.assertTrue(c.uid)
        self.assertEqual(c.args["program"].return_opts, ("SAVE",))

    def test_errors(self):
        for text in (b"", b"FOO", b"SEEN FOO", b"(SEEN", b"SEEN)", b"()", b"(SEEN))", b"OR SEEN", b"NOT", b"NOT ",
                     b"OR SEEN  DELETED", b"SEEN  DELETED", b"SINCE 32-Jan-2020", b"SINCE 1-Jan-20",
                     b'SINCE "1-Jan-2020', b"SINCE 1-Jan-2020x", b"LARGER", b"LARGER x", b"OLDER 0",
                     b"UID", b"UID 0", b"KEYWORD \\Seen", b"HEADER X", b"(SEEN)(DELETED)", b"SEEN(", b"0",
                     b"1:0", b"SUBJECT ("):
            self.bad(b"A1 SEARCH " + text)
        self.bad(b"A1 SEARCH SEEN)", "unexpected ')'")
        self.bad(b"A1 SEARCH (SEEN", "missing ')'")
        self.bad(b"A1 SEARCH FOO", "unknown search key FOO")


class SortThreadTests(ParserTestMixin, SynchronousTestCase):
    def test_sort(self):
        # RFC 5256 3 example.
        c = p(b"A282 SORT (SUBJECT REVERSE DATE) UTF-8 SINCE 1-Feb-1994")
        self.assertEqual(c.args, {
            "criteria": [("SUBJECT", False), ("DATE", True)], "charset": "UTF-8",
            "program": prog(key("since", date(1994, 2, 1)), charset="UTF-8")})
        c = p(b"A1 UID SORT (reverse arrival displayfrom) us-ascii ALL")
        self.assertTrue(c.uid)
        self.assertEqual(c.args["criteria"], [("ARRIVAL", True), ("DISPLAYFROM", False)])
        # RFC 5267 3.2 ESORT.
        c = p(b"A1 UID SORT RETURN (MIN MAX) (DATE) UTF-8 ALL")
        self.assertEqual(c.args["program"].return_opts, ("MIN", "MAX"))

    def test_sort_errors(self):
        self.bad(b"A1 SORT () UTF-8 ALL", "expected sort key")
        self.bad(b"A1 SORT (FOO) UTF-8 ALL", "unknown sort key FOO")
        self.bad(b"A1 SORT (REVERSE) UTF-8 ALL")
        self.bad(b"A1 SORT (DATE) ALL", code="BADCHARSET")
        self.bad(b"A1 SORT (DATE) KOI8-R ALL", code="BADCHARSET")
        self.bad(b"A1 SORT (DATE) UTF-8", "missing arguments")

    def test_thread(self):
        # RFC 5256 4 example.
        c = p(b"A283 THREAD ORDEREDSUBJECT UTF-8 SINCE 5-MAR-2000")
        self.assertEqual(c.args, {"algorithm": "ORDEREDSUBJECT", "charset": "UTF-8",
                                  "program": prog(key("since", date(2000, 3, 5)), charset="UTF-8")})
        c = p(b"A284 UID THREAD references US-ASCII TEXT \"gewp\"")
        self.assertEqual((c.uid, c.args["algorithm"]), (True, "REFERENCES"))
        self.bad(b"A1 THREAD REFS UTF-8 ALL", "unknown thread algorithm REFS")
        self.bad(b"A1 THREAD REFERENCES BIG5 ALL", code="BADCHARSET")


class IdTests(ParserTestMixin, SynchronousTestCase):
    def test_id(self):
        # RFC 2971 3.4 example.
        c = p(b'a023 ID ("name" "sodr" "version" "19.34" "vendor" "Pink Floyd Music Limited")')
        self.assertEqual(c.args, {"params": {"name": "sodr", "version": "19.34",
                                             "vendor": "Pink Floyd Music Limited"}})
        self.assertEqual(p(b"A1 ID NIL").args, {"params": None})
        self.assertEqual(p(b"A1 ID nil").args, {"params": None})
        self.assertEqual(p(b"A1 ID ()").args, {"params": {}})
        self.assertEqual(p(b'A1 ID ("os" NIL)').args, {"params": {"os": None}})

    def test_errors(self):
        self.bad(b"A1 ID", "missing arguments")
        self.bad(b'A1 ID ("name")')
        self.bad(b'A1 ID ("name" "x"')
        self.bad(b"A1 ID (name x)")
        many = b" ".join(b'"k%d" "v"' % i for i in range(31))
        self.bad(b"A1 ID (" + many + b")", "too many")


class HostileInputTests(ParserTestMixin, SynchronousTestCase):
    """Hostile input: everything must end in ParseError with a sensible tag."""

    def test_unbalanced(self):
        for line in (b"A1 SEARCH ((SEEN)", b"A1 SEARCH (SEEN))", b"A1 SEARCH )", b"A1 FETCH 1 (FLAGS",
                     b"A1 FETCH 1 FLAGS)", b"A1 FETCH 1 BODY[HEADER", b"A1 FETCH 1 BODY]",
                     b"A1 FETCH 1 BODY[HEADER.FIELDS (A]", b"A1 STATUS x (MESSAGES", b"A1 STORE 1 FLAGS (",
                     b'A1 LIST "" (a', b"A1 SELECT x (QRESYNC (1 2 (1 2)", b"A1 ID (", b"A1 APPEND x ( {1}"):
            self.bad(line)

    def test_deep_parentheses(self):
        ok = b"(" * MAX_PAREN_DEPTH + b"SEEN" + b")" * MAX_PAREN_DEPTH
        self.assertEqual(p(b"A1 SEARCH " + ok).name, "SEARCH")
        deep = b"(" * (MAX_PAREN_DEPTH + 1) + b"SEEN" + b")" * (MAX_PAREN_DEPTH + 1)
        self.bad(b"A1 SEARCH " + deep, "nested too deeply")
        self.bad(b"A1 SEARCH " + b"(" * 100000, "nested too deeply")

    def test_deep_not_or(self):
        # NOT/OR chains are parsed without recursion; a limit still applies.
        n = MAX_SEARCH_DEPTH - 1
        c = p(b"A1 SEARCH " + b"NOT " * n + b"SEEN")
        k = c.args["program"].key.args[0]
        depth = 0
        while k.op == "not":
            k = k.args[0]
            depth += 1
        self.assertEqual((depth, k.op), (n, "seen"))
        self.bad(b"A1 SEARCH " + b"NOT " * 100000 + b"SEEN", "nested too deeply")
        c = p(b"A1 SEARCH " + b"OR SEEN " * n + b"SEEN")
        self.assertEqual(c.args["program"].key.args[0].op, "or")
        self.bad(b"A1 SEARCH " + b"OR " * 100000 + b"SEEN SEEN", "nested too deeply")

    def test_long_flat_programs(self):
        c = p(b"A1 SEARCH " + b" ".join([b"SEEN"] * 10000))
        self.assertEqual(len(c.args["program"].key.args), 10000)

    def test_huge_numbers(self):
        big = b"9" * 5000  # past Python's int() digit limit
        for line in (b"A1 FETCH " + big + b" FLAGS", b"A1 FETCH 1 BODY[" + big + b"]",
                     b"A1 FETCH 1 BODY[]<" + big + b".1>", b"A1 SEARCH LARGER " + big,
                     b"A1 SEARCH MODSEQ " + big, b"A1 LOGIN {" + big + b"}", b"A1 STORE 1 (UNCHANGEDSINCE " + big +
                     b") FLAGS ()", b"A1 SELECT x (QRESYNC (" + big + b" 1))", b"A1 SEARCH LARGER 9223372036854775808",
                     b"A1 FETCH 4294967296 FLAGS", b"A1 SEARCH UID 1:4294967296"):
            self.bad(line)

    def test_star_dollar_zero(self):
        for line in (b"A1 FETCH 0 FLAGS", b"A1 FETCH 0:* FLAGS", b"A1 FETCH *:0 FLAGS", b"A1 FETCH ** FLAGS",
                     b"A1 FETCH *1 FLAGS", b"A1 FETCH 1* FLAGS", b"A1 FETCH $$ FLAGS", b"A1 FETCH $1 FLAGS",
                     b"A1 FETCH 1,$ FLAGS", b"A1 FETCH $:* FLAGS", b"A1 FETCH : FLAGS", b"A1 FETCH , FLAGS",
                     b"A1 SEARCH $,1", b"A1 SEARCH 1,*,0", b"A1 COPY 00 x"):
            self.bad(line)
        self.assertEqual(p(b"A1 FETCH 01 FLAGS").args["seqset"], seq((1, 1)))

    def test_invalid_utf8(self):
        for line in (b'A1 LOGIN "\xff" x', b"A1 LOGIN x \xc3", b'A1 SEARCH SUBJECT "\xed\xa0\x80"',
                     b'A1 SELECT "\xc0\xaf"', b'A1 ID ("\xfe" NIL)', b'A1 LIST "" "\xff*"'):
            self.bad(line)
        with self.assertRaises(ParseError):
            parse_command(b"A1 LOGIN {2}\r\n\xff\xfe x\r\n")

    def test_nul_bytes(self):
        for line in (b"A1 NO\x00OP", b"A1\x00 NOOP", b'A1 LOGIN "a\x00" b', b"A1 LOGIN a\x00 b",
                     b"A1 SEARCH SUBJECT \x00", b"A1 FETCH 1 BODY[\x00]", b"A1 SELECT &AAA-"):
            with self.assertRaises(ParseError, msg=line):
                p(line)
        with self.assertRaises(ParseError):
            parse_command(b"A1 SELECT {1}\r\n\x00\r\n")
        with self.assertRaises(ParseError):
            parse_command(b"\x00\r\n")

    def test_bad_literal_headers(self):
        for line in (b"A1 LOGIN {", b"A1 LOGIN {}", b"A1 LOGIN {3", b"A1 LOGIN {+}", b"A1 LOGIN {3+",
                     b"A1 LOGIN {3}x", b"A1 LOGIN {3}\r", b"A1 LOGIN {3}\n", b"A1 LOGIN ~", b"A1 LOGIN ~{3}",
                     b"A1 LOGIN { 3}", b"A1 LOGIN {3 }", b"A1 LOGIN {0x3}", b"A1 APPEND x ~{3", b"A1 APPEND x ~3}"):
            self.bad(line)

    def test_truncated(self):
        full = (b'A1 APPEND INBOX (\\Seen) "05-Feb-1994 21:52:25 -0800" {5}\r\nhello\r\n',
                b"A1 UID FETCH 1:* (FLAGS BODY.PEEK[1.HEADER.FIELDS (From)]<0.10>) (CHANGEDSINCE 5 VANISHED)\r\n",
                b"A1 SEARCH RETURN (MIN) CHARSET UTF-8 OR (SUBJECT {3}\r\nabc) NOT FROM x\r\n",
                b"A1 SELECT INBOX (QRESYNC (1 2 1:5 (1 2)))\r\n",
                b"A1 LIST (SUBSCRIBED) \"\" (a b) RETURN (STATUS (MESSAGES))\r\n",
                b"A1 STORE 1 (UNCHANGEDSINCE 1) +FLAGS.SILENT (\\Seen)\r\n",
                b'A1 ID ("a" "b")\r\n', b"A1 SORT (REVERSE DATE) UTF-8 ALL\r\n")
        for data in full:
            parse_command(data)
            for i in range(len(data) - 1):
                # Every strict prefix, with or without a CRLF added, is refused (or,
                # rarely, a shorter valid command, which must still parse cleanly).
                for cut in (data[:i], data[:i] + b"\r\n"):
                    try:
                        parse_command(cut)
                    except ParseError as e:
                        self.assertIsInstance(e.text, str)

    def test_error_text_safe(self):
        # Error texts go into the response line: no CR/LF or other bytes from the input.
        with self.assertRaises(ParseError) as cm:
            parse_command(b"A1 SEARCH CHARSET {14}\r\nX\r\n* BYE evil ALL\r\n")
        self.assertEqual(cm.exception.code, "BADCHARSET")
        self.assertNotIn("\r", cm.exception.text)
        self.assertNotIn("\n", cm.exception.text)
        e = self.bad(b"A1 SEARCH " + b"X" * 10000)
        self.assertLessEqual(len(e.text), 200)

    def test_tag_in_errors(self):
        self.assertEqual(self.bad(b"A1 FETCH", tag="A1").tag, "A1")
        with self.assertRaises(ParseError) as cm:
            p(b"!!!bad\x01tag NOOP")
        self.assertIsNone(cm.exception.tag)

    def test_bytearray_and_memoryview(self):
        self.assertEqual(parse_command(bytearray(b"A1 NOOP\r\n")).name, "NOOP")
        self.assertEqual(parse_command(memoryview(b"A1 NOOP\r\n")).name, "NOOP")


# A few tokens from the grammar, to make fuzzed input reach deep into the parser.
_TOKENS = [
    b"A1", b" ", b"UID", b"FETCH", b"SEARCH", b"STORE", b"APPEND", b"LIST", b"SELECT", b"LOGIN", b"ID", b"SORT",
    b"THREAD", b"STATUS", b"CREATE", b"REPLACE", b"AUTHENTICATE", b"(", b")", b"[", b"]", b"<", b">", b"{3}\r\n",
    b"{0+}\r\n", b"~{2}\r\n", b"\r\n", b'"', b"\\", b"*", b"$", b"%", b":", b",", b".", b"0", b"1", b"4294967296",
    b"NIL", b"OR", b"NOT", b"CHARSET", b"UTF-8", b"RETURN", b"BODY", b"BODY.PEEK", b"BINARY", b"HEADER.FIELDS",
    b"MIME", b"TEXT", b"FLAGS", b"+FLAGS", b"\\Seen", b"QRESYNC", b"CONDSTORE", b"CHANGEDSINCE", b"VANISHED",
    b"UNCHANGEDSINCE", b"1-Jan-2020", b'"01-Jan-2020 10:00:00 +0000"', b"UTF8", b"&U,BTFw-", b"&", b"\xc3\xa4",
    b"\xff", b"\x00", b"SINCE", b"HEADER", b"MODSEQ", b"STATUS", b"MESSAGES", b"USE", b"=", b"AGZv",
]


class FuzzTests(SynchronousTestCase):
    """Random input: only ParseError may escape (the un-guarded parser is called, so a
    bug would show as another exception rather than be turned into a ParseError)."""

    def check(self, data, utf8=False):
        try:
            c = _parse_command(data, utf8)
        except ParseError as e:
            self.assertIsInstance(e.text, str)
            self.assertTrue(e.tag is None or isinstance(e.tag, str))
        else:
            self.assertIsInstance(c.name, str)

    @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=200), st.booleans())
    def test_random_bytes(self, data, utf8):
        self.check(data, utf8)
        self.check(b"A1 " + data + b"\r\n", utf8)

    @settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from(_TOKENS), max_size=30), st.booleans())
    def test_token_soup(self, tokens, utf8):
        self.check(b"A1 " + b"".join(tokens) + b"\r\n", utf8)
        self.check(b"A1 UID FETCH " + b" ".join(tokens) + b"\r\n", utf8)
        self.check(b"A1 SEARCH " + b" ".join(tokens) + b"\r\n", utf8)

    @settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=100))
    def test_literal_at_end(self, data):
        try:
            r = literal_at_end(data + b"\r\n")
        except ParseError:
            return
        if r is not None:
            size, sync, binary = r
            self.assertTrue(0 <= size <= 0xFFFFFFFF)
            self.assertIsInstance(sync, bool)
            self.assertIsInstance(binary, bool)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.text(max_size=40), st.text(max_size=40))
    def test_login_roundtrip(self, user, password):
        # Any str without NUL survives as a literal.
        user = user.replace("\x00", "")
        password = password.replace("\x00", "")
        u, pw = user.encode(), password.encode()
        data = b"A1 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(u), u, len(pw), pw)
        self.assertEqual(parse_command(data).args, {"user": user, "password": password})

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.text(min_size=1, max_size=30))
    def test_mailbox_mutf7_roundtrip(self, name):
        name = name.replace("\x00", "")
        try:
            name.encode("utf-8")
        except UnicodeError:
            return
        # What response.mailbox_name sends, the parser reads back, in both modes.
        for utf8 in (False, True):
            data = b"A1 DELETE " + mailbox_name(name, utf8) + b"\r\n"
            self.assertEqual(parse_command(data, utf8=utf8).args["mailbox"], name)
