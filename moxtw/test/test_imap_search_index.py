"""SEARCH BODY/TEXT/HEADER answered from the store's search-text index give exactly the
results of a scan of the message files.

A varied corpus (encoded and 8-bit headers, repeated and folded fields, backslashes and
encoded newlines in values, case mappings that change length or depend on context, HTML,
base64, quoted-printable, UTF-7, NUL bytes, attached messages, a message too large to be
indexed) is delivered to two accounts. One keeps its search texts; from the other they
are removed, so every search there reads the files. Many searches are run on both and
compared, and both are compared with a plain reference evaluation written here from RFC
9051 6.4.4 (decode, lower-case, substring).
"""

import re
import sqlite3

from twisted.internet import defer
from twisted.trial import unittest

from moxtw import store
from moxtw.imapserver import search as S
from moxtw.imapserver.types import SearchKey
from moxtw.message import decode_words, html_to_text, parse, searchtext, unfold


def K(op, *args):
    return SearchKey(op, list(args))


def AND(*keys):
    return SearchKey("and", list(keys))


def hdr(*lines):
    return "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n"


CORPUS = [
    hdr("From: Alice Example <alice@example.org>", "To: bob@example.com",
        "Subject: Hello World", "Message-ID: <m1@example.org>", 'X-Quote: say "hi" now')
    + b"The quick brown fox attempted a jump.\r\n",
    # RFC 2047 in several charsets, split words, an unknown charset, raw 8-bit UTF-8.
    hdr("From: =?utf-8?q?J=C3=B6rg?= <joerg@example.de>",
        "To: =?iso-8859-1?b?U2No9m4=?= <s@example.de>, =?utf-8?q?Gr=C3?= =?utf-8?q?=BC=C3=9Fe?= <g@x.example>",
        "Subject: =?iso-8859-1?q?Gr=FC=DFe_aus_M=FCnchen?=",
        "X-Unknown: =?x-nonsense?q?abc?= plain",
        "Cc: Ünïcödé Ráw <raw@example.net>",
        "Content-Type: text/plain; charset=iso-8859-1",
        "Content-Transfer-Encoding: 8bit")
    + "Caf\xe9 cr\xe8me for EVERYONE\r\n".encode("latin-1"),
    # Repeated and folded fields, a backslash in a field name and in values, an encoded
    # newline and ": " inside a value, an empty value.
    hdr("Received: from a.example\r\n\tby b.example; Sat, 21 Nov 2026 10:00:00 +0000",
        "Received: from c.example by d.example",
        "Subject: first subject", "Subject: Second Subject",
        "X-Back\\slash: C:\\Path\\new",
        "X-Encoded-Newline: =?utf-8?q?line_one=0Aline_two?=",
        "X-Colon: a: b: c",
        "X-Empty:",
        "References: <a@example> <b@example>\r\n <c@example>",
        "In-Reply-To: <b@example>",
        "List-Id: Some List <list.example.org>",
        "Reply-To: replies@example.org",
        "Bcc: hidden@example.org",
        "Content-Type: text/html; charset=utf-8")
    + b"<p>Meeting   <b>tomorrow</b>\r\n at noon &amp; later</p><script>var x = 'nope';</script>\r\n",
    # Case mappings: final sigma, dotted capital I (lower-cases to two characters), the
    # Kelvin sign (lower-cases to ASCII k), sharp s, combining marks, CJK.
    hdr("Subject: ΟΔΟΣ ΚΑΙ ΤΕΛΟΣ", "From: =?utf-8?b?xLBzdGFuYnVs?= <i@example.tr>",
        "X-Kelvin: 300 \u212aelvin", "X-Mix: Stra\u00dfe e\u0301te \u6f22\u5b57",
        "Content-Type: text/plain; charset=utf-8")
    + "İSTANBUL ΣΟΦΟΣ ΚΑΛΟΣ \u212aELVIN Straße\r\n".encode("utf-8"),
    # Multipart: alternative with base64 ISO-8859-1 text and quoted-printable HTML; an
    # attached message; an attachment.
    hdr("From: Billing <billing@shop.example>", "Subject: Invoice 42", "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="outer"')
    + b"--outer\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n"
    + b"--alt\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + b"UGxlYXNlIHBheSB0aGUgaW52b2ljZSwgbWVyY2kgYmVhdWNvdXAg6Ocu\r\n"
    + b"--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    + b"<p>Please <i>pay</i>=20now &lt;tag&gt; caf=C3=A9</p>\r\n--alt--\r\n"
    + b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    + b"Subject: Inner =?utf-8?q?Subj=C3=A9ct?=\r\nFrom: In <in@example.org>\r\nX-Inner: hidden\r\n\r\n"
    + b"nested text here\r\n"
    + b"--outer\r\nContent-Type: application/pdf; name=\"x.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + b"JVBERi0xLjQKc2VjcmV0IHBkZg==\r\n--outer--\r\n",
    # UTF-7 that decodes to a lone surrogate; NUL bytes and a bare CR in the body.
    hdr("Subject: =?utf-7?q?+2D0-surrogate?=", "Content-Type: text/plain; charset=utf-7")
    + b"before +2D0- after\r\nnul\x00byte and\rcarriage\r\n",
    # NUL in the body and (RFC 2047 encoded) in the header, with text after it: SQLite's
    # trigram tokenizer stops at a NUL, the indexed texts escape it.
    hdr("Subject: zero", "X-Nul: =?utf-8?q?a=00b_tailneedle?=")
    + b"zero\x00 after-nul-needle\r\n",
    # No body; then a body without header.
    hdr("Subject: only a header", "X-Only: yes"),
    b"\r\nbody without any header fields\r\n",
    # Hostile header syntax: no space after the colon, spaces before it, a line that
    # ends the header section early.
    b"Subject:tight\r\nX-Space   : spaced value\r\nnot a header line\r\nX-After: gone\r\n\r\nrest\r\n",
    # Latin-1 raw header bytes (not UTF-8) and a long folded References field.
    b"Subject: Gr\xfc\xdfe raw\r\nFrom: M\xfcller <m@example.de>\r\nReferences: "
    + b"\r\n ".join(b"<r%d@example.com>" % i for i in range(40)) + b"\r\n\r\nok\r\n",
]
# Larger than the limit the tests set: not indexed, always read from its file.
LARGE = hdr("Subject: A large one", "From: big@example.org", "X-Large: yes") + (
    b"large body with a needle in it\r\n" + b"filler text line\r\n" * 400
)

NEEDLES = [
    "", "a", "e", "ab", "ne", "fox", "FOX", "ttemp", "brown fox a", "hello world", "hello  world",
    "jörg", "JÖRG", "grüße", "GRÜSSE", "münchen", "schön", "café", "CRÈME", "ünïcödé",
    "=?x-nonsense?q?abc?=", "first subject", "second", "subject: second", "c:\\path",
    "\\", "\\n", "\\new", "path\\new", "line one\nline two", "one\nline", "\n", "a: b: c",
    "x-colon: a", "x-empty:", "x-empty: ", "received: from c", "b.example;",
    "<b@example>", "<c@example>", "list.example.org", "replies@", "hidden@", "meeting tomorrow",
    "meeting   <b>", "noon & later", "nope", "οδος", "οδοσ", "τελος", "σοφος", "σοφοσ", "i̇stanbul",
    "istanbul", "kelvin", "\u212aelvin", "300 k", "straße", "strasse", "ét", "e\u0301te", "漢字",
    "please pay", "merci beaucoup", "pay now", "<tag>", "inner subjéct", "nested text",
    "x-inner", "hidden", "pdf", "secret", "surrogate", "\ufffd", "before \ufffd after", "nul\x00byte",
    "and\rcarriage", "only a header", "x-only: yes", "without any", "tight", "subject:tight",
    "spaced value", "x-space", "gone", "grüße raw", "müller", "<r39@example.com>",
    "<r1@example.com> <r2", "large", "needle", "filler text", "x-large", '"hi"', 'say "hi" n',
    '" OR "', "NEAR(", "*", "after-nul-needle", "\x00 after", "tailneedle", "a\x00b t", "\\0", "hello world" + "x" * 300, ("the quick brown fox attempted a jump." * 9)[:300],
]
FIELDS = [
    "subject", "SUBJECT", "from", "to", "cc", "bcc", "reply-to", "message-id", "in-reply-to",
    "references", "list-id", "received", "x-back\\slash", "X-Encoded-Newline", "x-colon",
    "x-empty", "x-kelvin", "x-mix", "x-only", "x-space", "x-after", "x-unknown", "x-inner",
    "x-large", "content-type", "nonexistent", "\u212a", "",
]


# -- the reference: RFC 9051 6.4.4 over the parsed message, written without searchtext


def _ref_text(part, data):
    text = part.text(data)
    if part.media_subtype == "html":
        # HTML as text, runs of white space as one space.
        text = re.sub(r"[ \t\r\n]+", " ", html_to_text(text))
    return text


def reference(data, op, args):
    root = parse(data)
    fields = [(n.lower(), decode_words(unfold(v))) for n, v in root.headers]
    if op == "header":
        name, needle = args[0].lower(), args[1].casefold()
        values = [v for n, v in fields if n == name]
        return bool(values) if needle == "" else any(needle in v.casefold() for v in values)
    pieces = []
    for part in root.walk():
        if part.media_type == "text" and not part.parts:
            pieces.append(_ref_text(part, data))
        elif part.message is not None:
            for name in ("subject", "from", "to", "cc"):
                v = part.message.header(name)
                if v:
                    pieces.append(v)
    body = "\n".join(pieces).casefold()
    needle = args[0].casefold()
    if op == "body":
        return needle in body
    return needle in body or any(needle in f"{n}: {v}".casefold() for n, v in fields)


class EquivalenceTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.patch(searchtext, "MAX_INDEXED_SIZE", 4096)
        self.store = store.Store(self.mktemp())
        self.addCleanup(self.store.close)
        self.indexed = yield self.store.open_account("indexed")
        self.scanned = yield self.store.open_account("scanned")
        self.files = {}  # uid -> bytes as stored
        for acc in (self.indexed, self.scanned):
            for data in CORPUS + [LARGE]:
                m = yield acc.deliver("Inbox", data)
                with open(acc.message_path(m.id), "rb") as f:
                    self.files[m.uid] = f.read()
            yield acc.indexing_done()  # search texts of deliveries are made after the commit
        self.mb = {}
        self.view = {}
        for acc in (self.indexed, self.scanned):
            mb = yield acc.mailbox("Inbox")
            self.mb[acc] = mb.id
            self.view[acc] = yield acc.uids(mb.id)
        # The scanned account forgets its search texts: every search reads files there.
        conn = sqlite3.connect(self.scanned.db_path)
        conn.execute("UPDATE message SET text_indexed = 0")
        conn.execute("DELETE FROM message_search")
        conn.commit()
        conn.close()
        self.reads = {self.indexed: [], self.scanned: []}

    def search(self, acc, key):
        def read(m):
            self.reads[acc].append(m.uid)
            with open(acc.message_path(m.id), "rb") as f:
                return f.read()

        return S.search(acc, self.mb[acc], self.view[acc], key, read_file=read)

    @defer.inlineCallbacks
    def test_text_memory_bound_same_results(self):
        # Texts are loaded in parts bounded by message size: with a bound of one byte,
        # one message per part, and the same answers.
        acc = self.indexed
        keys = [K("not", K("body", "zzzz-nowhere")), K("text", "example"), K("or", K("body", "a"), K("header", "subject", "e"))]
        want = []
        for key in keys:
            want.append((yield self.search(acc, key)))
        calls = []
        real = acc.rows

        def counting(*a, **kw):
            calls.append(kw.get("texts"))
            return real(*a, **kw)

        acc.rows = counting
        self.patch(S, "EVAL_TEXT_BYTES", 1)
        for key, expected in zip(keys, want):
            self.assertEqual((yield self.search(acc, key)), expected)
        self.assertGreater(calls.count(True), len(CORPUS))

    @defer.inlineCallbacks
    def test_long_body_text_searched_from_file(self):
        # A body text longer than MAX_INDEXED_BODY gets no indexed text (its trigrams
        # would cost the writer thread too much): SEARCH reads the file, same answers.
        self.patch(searchtext, "MAX_INDEXED_SIZE", 1 << 20)
        self.patch(searchtext, "MAX_INDEXED_BODY", 1000)
        acc = self.indexed
        body = b"".join(b"line %d of a long text\r\n" % i for i in range(100)) + b"Tail-Needle\r\n"
        m = yield acc.deliver("Inbox", b"Subject: long one\r\n\r\n" + body)
        short = yield acc.deliver("Inbox", b"Subject: short one\r\n\r\nshort tail-needle\r\n")
        yield acc.indexing_done()
        self.view[acc] = yield acc.uids(self.mb[acc])
        rows = yield acc.rows(self.mb[acc], [m.uid, short.uid])
        self.assertEqual([r["text_indexed"] for r in rows], [0, 1])
        got = yield self.search(acc, K("body", "tail-needle"))
        self.assertEqual(sorted(got), [m.uid, short.uid])
        got = yield self.search(acc, K("header", "subject", "long"))
        self.assertEqual(got, [m.uid])
        self.assertIn(m.uid, self.reads[acc])

    @defer.inlineCallbacks
    def test_header_names_that_cannot_be_fields(self):
        # "Subject: x: foo" has no field named "subject: x": not in the indexed text
        # either, where ": " separates names from values.
        for acc in (self.indexed, self.scanned):
            m = yield acc.deliver("Inbox", b"Subject: x: foo\r\n\r\nbody\r\n")
            yield acc.indexing_done()
            self.view[acc] = yield acc.uids(self.mb[acc])
            for name, needle in (("subject: x", ""), ("subject: x", "foo"), ("sub ject", "")):
                got = yield self.search(acc, K("header", name, needle))
                self.assertNotIn(m.uid, got, (name, needle))
            got = yield self.search(acc, K("header", "subject", "x: foo"))
            self.assertIn(m.uid, got)

    @defer.inlineCallbacks
    def test_corpus_indexed_as_expected(self):
        rows = yield self.indexed.rows(self.mb[self.indexed], [(1, 100)])
        self.assertEqual([r["text_indexed"] for r in rows], [1] * len(CORPUS) + [0])
        texts = yield self.indexed.search_texts([r["id"] for r in rows])
        self.assertEqual(len(texts), len(CORPUS))
        # The stored texts are those searchtext computes from the files.
        for r in rows[:len(CORPUS)]:
            self.assertEqual(texts[r["id"]], searchtext.index_texts(self.files[r["uid"]]))

    def _keys(self):
        for needle in NEEDLES:
            yield K("body", needle)
            yield K("text", needle)
        for field in FIELDS:
            for needle in ("", "e", "ex", "example", "subject", "second", "ünïcödé", "jörg",
                           "\\", "\\path", "two", "one\nline", "b:", "<b@", "list.example",
                           "\u212aelvin", "kelvin", "raw", "müller", "<r17@", "yes"):
                yield K("header", field, needle)

    @defer.inlineCallbacks
    def test_same_results_as_file_scan_and_reference(self):
        checked = 0
        for key in self._keys():
            want = [
                uid for uid in sorted(self.files)
                if reference(self.files[uid], key.op, key.args)
            ]
            got_indexed = yield self.search(self.indexed, key)
            got_scanned = yield self.search(self.scanned, key)
            self.assertEqual(got_scanned, want, f"file scan: {key.op} {key.args!r}")
            self.assertEqual(got_indexed, want, f"index: {key.op} {key.args!r}")
            checked += 1
        self.assertGreater(checked, 700)
        # Only the message too large to be indexed was read for the indexed account.
        large_uid = len(CORPUS) + 1
        self.assertEqual(set(self.reads[self.indexed]), {large_uid})
        self.assertEqual(set(self.reads[self.scanned]), set(self.files))

    @defer.inlineCallbacks
    def test_combinations(self):
        keys = [
            AND(K("text", "example"), K("not", K("body", "fox"))),
            K("or", K("header", "x-only", ""), K("body", "nested text")),
            K("not", K("text", "e")),
            AND(K("header", "subject", "second"), K("header", "subject", "first")),
            AND(K("text", "example"), K("header", "from", ""), K("body", "")),
            K("or", K("flagged"), K("not", K("header", "received", "example"))),
            AND(K("body", "large"), K("text", "needle")),
        ]
        for key in keys:
            got_indexed = yield self.search(self.indexed, key)
            got_scanned = yield self.search(self.scanned, key)
            self.assertEqual(got_indexed, got_scanned, f"{key!r}")

    @defer.inlineCallbacks
    def test_huge_needle(self):
        """A needle of a megabyte: the index looks up its start, the texts answer."""
        for needle, want in (("x" * 1000000, []), ("quick brown" + " " * 300000, [])):
            got = yield self.search(self.indexed, K("text", needle))
            self.assertEqual(got, want)
        # Only the message too large to be indexed was read.
        self.assertEqual(set(self.reads[self.indexed]), {len(CORPUS) + 1})

    @defer.inlineCallbacks
    def test_expunged_meanwhile(self):
        """A message whose indexed text is gone (expunged by another session between
        reading its row and its text) does not match, as a missing file does not."""
        acc = self.indexed
        real = acc.rows

        def without_first(*args, **kw):
            def drop(rows):
                rows[0]["search_texts"] = None
                return rows

            return real(*args, **kw).addCallback(drop)

        acc.rows = without_first
        got = yield self.search(acc, K("text", "example"))
        self.assertNotIn(1, got)
        self.assertIn(2, got)

    @defer.inlineCallbacks
    def test_sort_and_thread_use_the_index(self):
        got = yield S.sort(
            self.indexed, self.mb[self.indexed], self.view[self.indexed], [("SUBJECT", False)],
            K("text", "example"),
        )
        want = yield S.sort(
            self.scanned, self.mb[self.scanned], self.view[self.scanned], [("SUBJECT", False)],
            K("text", "example"),
        )
        self.assertEqual(got, want)
        self.assertTrue(got)


class SearchTextTests(unittest.SynchronousTestCase):
    def test_escape_round_trip(self):
        fields = [("a\\b", "x\ny\\nz\\"), ("subject", ""), ("x", "\n\n\\\\n")]
        text = searchtext.header_text(fields)
        self.assertEqual(text.count("\n"), len(fields))
        self.assertEqual(searchtext.parse_header_text(text), fields)
        self.assertEqual(searchtext.parse_header_text(""), [])

    def test_field_marker_exact(self):
        text = searchtext.header_text([("x-a", "\nx-b: no"), ("x-c", "x-d:")])
        self.assertIn(searchtext.field_marker("X-A"), text)
        self.assertIn(searchtext.field_marker("x-c"), text)
        self.assertNotIn(searchtext.field_marker("x-b"), text)
        self.assertNotIn(searchtext.field_marker("x-d"), text)

    def test_fold_is_idempotent(self):
        # The index keeps case-folded text and needles are folded again: that must not
        # change the text (true for all of Unicode in this Python).
        for cp in range(0x110000):
            c = chr(cp)
            if 0xD800 <= cp < 0xE000:
                continue
            f = searchtext.fold(c)
            self.assertEqual(searchtext.fold(f), f, hex(cp))

    def test_final_sigma(self):
        # lower() maps a word-final capital sigma to a final sigma: "ΔΟΣ" (needle) would
        # not be found in "ΟΔΟΣΑ". Case folding maps both to σ.
        header, body = searchtext.index_texts(b"Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                                              + "ΟΔΟΣΑ".encode())
        self.assertIn(searchtext.fold("ΔΟΣ"), body)
        self.assertIn(searchtext.fold("δος"), body)

    def test_summary_texts_equal_searchtext(self):
        from moxtw.message import fix_line_endings, summary

        for data in CORPUS:
            data = fix_line_endings(data)
            s = summary(data, search_text=True)
            self.assertEqual((s.search_header, s.search_body), searchtext.index_texts(data))
        s = summary(b"Subject: x\r\n\r\n" + b"y" * (searchtext.MAX_INDEXED_SIZE + 1), search_text=True)
        self.assertIsNone(s.search_header)
        long = b"Subject: x\r\n\r\n" + b"y" * (searchtext.MAX_INDEXED_BODY + 1)
        s = summary(long, search_text=True)
        self.assertIsNone(s.search_header)
        self.assertEqual(searchtext.index_texts(long), (None, None))  # the upgrade step's
        s = summary(b"Subject: x\r\n\r\n" + b"y" * (searchtext.MAX_INDEXED_BODY - 10), search_text=True)
        self.assertIsNotNone(s.search_body)
        self.assertIsNone(summary(CORPUS[0]).search_header)
