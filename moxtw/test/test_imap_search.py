"""Tests for moxtw.imapserver.search: SEARCH keys (RFC 9051 6.4.4 and extensions), SORT
and THREAD (RFC 5256), against a real store."""

from datetime import date, datetime, timedelta, timezone

from twisted.internet import defer
from twisted.trial import unittest

from moxtw import store
from moxtw.imapserver import search as S
from moxtw.imapserver.types import STAR, SearchKey, SeqSet
from moxtw.message import searchtext


def K(op, *args):
    return SearchKey(op, list(args))


def AND(*keys):
    return SearchKey("and", list(keys))


def tz(hours):
    return timezone(timedelta(hours=hours))


def msg(headers, body=b"", date_="Sat, 21 Nov 2026 10:00:00 +0100", msgid=None):
    head = list(headers)
    if date_ is not None:
        head.append(f"Date: {date_}")
    if msgid is not None:
        head.append(f"Message-ID: <{msgid}>")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


M1 = msg(
    [
        "From: Alice Example <alice@example.org>",
        "To: Bob <bob@example.com>",
        "Cc: carol@example.net",
        "Subject: Hello world",
    ],
    b"The quick brown fox attempted a jump.\r\n",
    date_="Sat, 21 Nov 2026 23:30:00 -0500",  # Sunday 22 in UTC
    msgid="m1@example.org",
)
M2 = msg(
    [
        "From: =?utf-8?q?J=C3=B6rg?= <joerg@example.de>",
        "To: alice@example.org",
        "Subject: =?iso-8859-1?q?Gr=FC=DFe_aus_M=FCnchen?=",
        "Content-Type: text/plain; charset=iso-8859-1",
        "Content-Transfer-Encoding: 8bit",
    ],
    "Caf\xe9 cr\xe8me for everyone\r\n".encode("latin-1"),
    date_="Mon, 2 Nov 2026 08:00:00 +0000",
    msgid="m2@example.de",
)
M3 = msg(
    [
        "From: Bob <bob@example.com>",
        "To: Alice Example <alice@example.org>",
        "Bcc: dave@example.org",
        "Subject: Re: Hello world",
        "In-Reply-To: <m1@example.org>",
        "X-Custom: Foo Bar",
        "Content-Type: text/html; charset=utf-8",
    ],
    b"<p>Meeting <b>tomorrow</b> at noon &amp; later</p>\r\n",
    date_=None,
    msgid="m3@example.com",
)
M4 = msg(
    [
        "From: Billing <billing@shop.example>",
        "To: alice@example.org",
        "Subject: Invoice 42",
        "MIME-Version: 1.0",
        'Content-Type: multipart/alternative; boundary="b1"',
    ],
    b"--b1\r\nContent-Type: text/plain\r\n\r\nPlease pay the invoice.\r\n"
    b"--b1\r\nContent-Type: text/html\r\n\r\n<p>Please <i>pay</i></p>\r\n--b1--\r\n" + b"x" * 3000 + b"\r\n",
    date_="Sun, 1 Nov 2026 12:00:00 +0000",
    msgid="m4@shop.example",
)
M5 = msg(
    [
        "From: Zed <zed@example.org>",
        "To: alice@example.org",
        "Subject: Fwd: something",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="b2"',
    ],
    b"--b2\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
    b"--b2\r\nContent-Type: message/rfc822\r\n\r\nSubject: Inner subject\r\nFrom: In <in@example.org>\r\n\r\n"
    b"nested text here\r\n--b2--\r\n",
    date_="Tue, 24 Nov 2026 09:00:00 +0000",
    msgid="m5@example.org",
)

MESSAGES = [
    # data, flags, received (INTERNALDATE)
    (M1, ("\\Seen",), datetime(2026, 11, 21, 23, 30, tzinfo=tz(-5))),
    (M2, ("\\Flagged", "Project"), datetime(2026, 11, 2, 9, 0, tzinfo=tz(1))),
    (M3, ("\\Answered", "\\Deleted", "\\Seen"), datetime(2026, 11, 22, 1, 0, tzinfo=tz(1))),
    (M4, ("\\Draft", "$label1"), datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)),
    (M5, (), datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)),
]


class Base(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.store = store.Store(self.mktemp())
        self.addCleanup(self.store.close)
        self.acc = yield self.store.open_account("mjl")
        self.opened = []
        real_open = self.acc.open_message

        def counting_open(msg_id):
            self.opened.append(msg_id)
            return real_open(msg_id)

        self.acc.open_message = counting_open

    @defer.inlineCallbacks
    def fill(self, items, mailbox="Inbox"):
        for data, flags, received in items:
            yield self.acc.deliver(mailbox, data, flags=flags, received=received)
        yield self.acc.indexing_done()  # search texts of deliveries are made after the commit
        self.mb = yield self.acc.mailbox(mailbox)
        self.view = yield self.acc.uids(self.mb.id)


class SearchTests(Base):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.fill(MESSAGES)
        self.assertEqual(self.view, [1, 2, 3, 4, 5])

    def s(self, *keys, **kw):
        key = keys[0] if len(keys) == 1 else AND(*keys)
        return S.search(self.acc, self.mb.id, self.view, key, **kw)

    @defer.inlineCallbacks
    def check(self, expected, *keys, **kw):
        got = yield self.s(*keys, **kw)
        self.assertEqual(got, expected, keys)

    @defer.inlineCallbacks
    def test_flags(self):
        yield self.check([1, 3], K("seen"))
        yield self.check([2, 4, 5], K("unseen"))
        yield self.check([3], K("answered"))
        yield self.check([1, 2, 4, 5], K("unanswered"))
        yield self.check([3], K("deleted"))
        yield self.check([1, 2, 4, 5], K("undeleted"))
        yield self.check([4], K("draft"))
        yield self.check([1, 2, 3, 5], K("undraft"))
        yield self.check([2], K("flagged"))
        yield self.check([1, 3, 4, 5], K("unflagged"))
        yield self.check([1], K("seen"), K("undeleted"))
        yield self.check([], K("seen"), K("unseen"))
        self.assertEqual(self.opened, [])

    @defer.inlineCallbacks
    def test_keywords(self):
        yield self.check([2], K("keyword", "PROJECT"))
        yield self.check([1, 3, 4, 5], K("unkeyword", "project"))
        yield self.check([4], K("keyword", "$Label1"))
        yield self.check([], K("keyword", "nothere"))
        # Nothing can carry an invalid keyword.
        yield self.check([], K("keyword", "bad(kw"))
        yield self.check([1, 2, 3, 4, 5], K("unkeyword", "bad(kw"))
        yield self.check([], K("keyword", "\\Seen"))

    @defer.inlineCallbacks
    def test_all_old_new_recent(self):
        # RFC 3501 6.4.4 with no \Recent: NEW and RECENT match nothing, OLD everything.
        yield self.check([1, 2, 3, 4, 5], K("all"))
        yield self.check([1, 2, 3, 4, 5], K("old"))
        yield self.check([], K("new"))
        yield self.check([], K("recent"))
        yield self.check([1, 2, 3, 4, 5], K("savedatesupported"))
        yield self.check([1, 2, 3, 4, 5], AND())

    @defer.inlineCallbacks
    def test_sizes(self):
        msgs = yield self.acc.messages(self.mb.id)
        size4 = msgs[3].size
        yield self.check([4], K("larger", 2000))
        yield self.check([1, 2, 3, 5], K("smaller", 2000))
        yield self.check([], K("larger", size4))
        yield self.check([4], K("larger", size4 - 1))
        yield self.check([4], K("larger", size4 - 1), K("smaller", size4 + 1))

    @defer.inlineCallbacks
    def test_modseq(self):
        msgs = yield self.acc.messages(self.mb.id)
        yield self.check([3, 4, 5], K("modseq", msgs[2].modseq))
        yield self.acc.store_flags(self.mb.id, [1], "add", ["\\Flagged"])
        yield self.check([1, 3, 4, 5], K("modseq", msgs[2].modseq))
        yield self.check([1], K("modseq", msgs[4].modseq + 1))

    @defer.inlineCallbacks
    def test_uid_and_seqset(self):
        yield self.check([2, 3, 4], K("uid", SeqSet(((2, 4),))))
        yield self.check([5], K("uid", SeqSet(((STAR, STAR),))))
        # "100:*" with 5 the largest UID is "5:100" (RFC 9051 9: seq-range).
        yield self.check([5], K("uid", SeqSet(((100, STAR),))))
        yield self.check([1, 5], K("uid", SeqSet(((1, 1), (5, 5)))))
        yield self.check([4, 5], K("seqset", SeqSet(((4, STAR),))))
        yield self.check([1, 3], K("seqset", SeqSet(((1, 1), (3, 3)))))
        yield self.check([2, 4], K("not", K("seqset", SeqSet(((1, 1), (3, 3), (5, 5))))))
        yield self.check([3], K("uid", SeqSet(((2, 4),))), K("seen"))
        yield self.check([1, 2], K("or", K("uid", SeqSet(((1, 1),))), K("flagged")))
        yield self.check([2], K("or", K("uid", SeqSet(((1, 1),))), K("flagged")), K("unseen"))
        self.assertEqual(self.opened, [])

    @defer.inlineCallbacks
    def test_sequence_numbers_follow_the_view(self):
        # A view after UID 2 was expunged and reported: message 2 is UID 3.
        got = yield S.search(self.acc, self.mb.id, [1, 3, 4, 5], K("seqset", SeqSet(((2, 2),))))
        self.assertEqual(got, [3])
        # UIDs outside the view never match.
        got = yield S.search(self.acc, self.mb.id, [1, 3], K("all"))
        self.assertEqual(got, [1, 3])

    @defer.inlineCallbacks
    def test_expunged_by_other_session(self):
        # The view still has UID 6, which is not in the store: it never matches.
        view = self.view + [6]
        got = yield S.search(self.acc, self.mb.id, view, K("all"))
        self.assertEqual(got, [1, 2, 3, 4, 5])
        got = yield S.search(self.acc, self.mb.id, view, K("uid", SeqSet(((STAR, STAR),))))
        self.assertEqual(got, [])
        got = yield S.search(self.acc, self.mb.id, view, K("not", K("seen")))
        self.assertEqual(got, [2, 4, 5])

    @defer.inlineCallbacks
    def test_searchres(self):
        dollar = SeqSet(searchres=True)
        yield self.check([2, 5], K("seqset", dollar), searchres=[2, 5, 9])
        yield self.check([2, 5], K("uid", dollar), searchres=[2, 5])
        yield self.check([5], K("uid", dollar), K("unflagged"), searchres=[2, 5])
        yield self.check([1, 3, 4], K("not", K("seqset", dollar)), searchres=[2, 5])
        yield self.check([], K("seqset", dollar))  # RFC 5182 2.1: nothing saved

    @defer.inlineCallbacks
    def test_internaldate(self):
        # Message 1 arrived 21 Nov 23:30 -0500 (22 Nov in UTC): its date is the 21st.
        yield self.check([1], K("on", date(2026, 11, 21)))
        yield self.check([3], K("on", date(2026, 11, 22)))
        yield self.check([2, 4], K("before", date(2026, 11, 21)))
        yield self.check([1, 2, 4], K("before", date(2026, 11, 22)))
        yield self.check([1, 3, 5], K("since", date(2026, 11, 21)))
        yield self.check([3, 5], K("since", date(2026, 11, 22)))
        yield self.check([3], K("since", date(2026, 11, 22)), K("before", date(2026, 11, 23)))
        yield self.check([2, 3, 4, 5], K("not", K("on", date(2026, 11, 21))))
        self.assertEqual(self.opened, [])

    @defer.inlineCallbacks
    def test_sent_dates(self):
        # The Date: header's own date; message 3 has no Date: and matches none.
        yield self.check([1], K("senton", date(2026, 11, 21)))
        yield self.check([2, 4], K("sentbefore", date(2026, 11, 21)))
        yield self.check([1, 5], K("sentsince", date(2026, 11, 3)))
        yield self.check([2], K("senton", date(2026, 11, 2)))
        yield self.check([1, 2, 4, 5], K("or", K("sentbefore", date(2026, 11, 22)), K("sentsince", date(2026, 11, 22))))
        yield self.check([3], K("not", K("or", K("sentbefore", date(2026, 11, 22)), K("sentsince", date(2026, 11, 22)))))
        self.assertEqual(self.opened, [])

    @defer.inlineCallbacks
    def test_saved_dates(self):
        today = datetime.now(timezone.utc).date()
        yield self.check([1, 2, 3, 4, 5], K("savedon", today))
        yield self.check([1, 2, 3, 4, 5], K("savedsince", today))
        yield self.check([], K("savedbefore", today))
        yield self.check([1, 2, 3, 4, 5], K("savedbefore", today + timedelta(days=1)))

    @defer.inlineCallbacks
    def test_older_younger(self):
        now = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
        # Message 5 arrived an hour before now, messages 1 and 3 two days and some hours
        # before, messages 2 and 4 three weeks before.
        yield self.check([5], K("younger", 3600), now=now)
        yield self.check([1, 2, 3, 4], K("older", 3600), now=now)
        yield self.check([], K("younger", 3599), now=now)
        yield self.check([1, 3, 5], K("younger", 3 * 86400), now=now)
        yield self.check([1, 3], K("younger", 3 * 86400), K("older", 3600), now=now)
        yield self.check([1, 2, 3, 4], K("or", K("older", 3600), K("flagged")), now=now)

    @defer.inlineCallbacks
    def test_subject_and_addresses(self):
        yield self.check([1, 3], K("subject", "hello WORLD"))
        # RFC 2047 and charsets are decoded before matching.
        yield self.check([2], K("subject", "grüße"))
        yield self.check([2], K("from", "jörg"))
        yield self.check([2], K("from", "JOERG@example"))
        yield self.check([1], K("from", "alice example <alice@"))
        yield self.check([1], K("to", "bob"))
        yield self.check([2, 3, 4, 5], K("to", "alice@example.org"))
        yield self.check([1], K("cc", "carol"))
        yield self.check([3], K("bcc", "dave"))
        yield self.check([], K("bcc", "carol"))
        # None of these need a message file.
        self.assertEqual(self.opened, [])

    @defer.inlineCallbacks
    def test_header(self):
        yield self.check([3], K("header", "x-custom", ""))
        yield self.check([3], K("header", "X-CUSTOM", "foo b"))
        yield self.check([], K("header", "X-Custom", "baz"))
        yield self.check([3], K("header", "In-Reply-To", "m1@"))
        yield self.check([2], K("header", "subject", "münchen"))
        yield self.check([4, 5], K("header", "mime-version", ""))
        yield self.check([1, 2, 3, 4, 5], K("header", "from", ""))

    @defer.inlineCallbacks
    def test_body(self):
        # Substrings, not words: "ttemp" is in "attempted".
        yield self.check([1], K("body", "ttemp"))
        yield self.check([1], K("body", "BROWN FOX ATTEMPT"))
        yield self.check([1], K("body", "k brown fox a"))
        yield self.check([], K("body", "brown  fox"))
        # Charset decoding (latin-1 body) and HTML as text.
        yield self.check([2], K("body", "crème"))
        yield self.check([3], K("body", "meeting tomorrow"))
        yield self.check([3], K("body", "noon & later"))
        yield self.check([], K("body", "<b>"))
        yield self.check([4], K("body", "pay the invoice"))
        # Attached messages: their text and subject.
        yield self.check([5], K("body", "nested text"))
        yield self.check([5], K("body", "inner subject"))
        # BODY does not search the message header.
        yield self.check([], K("body", "Hello world"))
        yield self.check([], K("body", "X-Custom"))

    @defer.inlineCallbacks
    def test_text(self):
        yield self.check([1, 3], K("text", "hello world"))
        yield self.check([3], K("text", "foo bar"))
        yield self.check([3], K("text", "x-custom: foo"))
        yield self.check([1], K("text", "ttemp"))
        yield self.check([2], K("text", "café"))
        yield self.check([4], K("text", "pay the"))

    @defer.inlineCallbacks
    def test_or_not_nesting(self):
        yield self.check([2, 3], K("or", K("flagged"), K("deleted")))
        yield self.check([1, 4, 5], K("not", K("or", K("flagged"), K("deleted"))))
        yield self.check([1, 2], K("or", K("body", "ttemp"), K("subject", "grüße")))
        yield self.check([3, 4, 5], K("not", K("or", K("body", "ttemp"), K("subject", "grüße"))))
        yield self.check(
            [1, 4],
            K("or", AND(K("seen"), K("body", "fox")), AND(K("draft"), K("not", K("body", "nothing")))),
        )
        yield self.check([5], K("unseen"), K("not", K("flagged")), K("not", K("draft")))
        yield self.check([1, 2, 3, 4, 5], K("or", K("seen"), K("not", K("seen"))))
        yield self.check([3], K("or", K("header", "x-custom", ""), K("keyword", "bad(kw")))

    def texts_read(self):
        """Record the message ids whose indexed search texts are read."""
        ids = []
        real = self.acc.rows

        def rows(*args, **kw):
            def note(rows):
                ids.extend(r["id"] for r in rows if r.get("search_texts") is not None)
                return rows

            return real(*args, **kw).addCallback(note)

        self.acc.rows = rows
        return ids

    @defer.inlineCallbacks
    def test_answered_from_index(self):
        """BODY, TEXT and HEADER are answered from the indexed search texts: no file is
        read, and only texts of candidates the trigram index found are looked at."""
        ids = self.texts_read()
        got = yield self.s(K("body", "a"), K("text", "e"), K("header", "subject", ""))
        self.assertEqual(got, [1, 2, 3, 4, 5])
        self.assertEqual(self.opened, [])
        # Substrings of words, any case, white space and non-ASCII narrow alike.
        for key, want in (
            (K("body", "TTEMP"), [1]),
            (K("body", "brown fox attempt"), [1]),
            (K("body", "crème"), [2]),
            (K("text", "x-custom: foo"), [3]),
            (K("header", "in-reply-to", "m1@example"), [3]),
            (K("header", "x-custom", ""), [3]),
        ):
            del ids[:]
            got = yield self.s(key)
            self.assertEqual(got, want, key)
            self.assertEqual(len(ids), len(want), key)
        self.assertEqual(self.opened, [])

    @defer.inlineCallbacks
    def test_index_keys_first(self):
        """Keys the index answers exactly narrow the messages whose texts are read."""
        ids = self.texts_read()
        got = yield self.s(K("body", "e"), K("flagged"))
        self.assertEqual(got, [2])
        self.assertEqual(len(ids), 1)

    @defer.inlineCallbacks
    def test_header_subject_from_index(self):
        """HEADER Subject needs no file either (it compares every Subject field, SUBJECT
        only the first, RFC 9051 6.4.4; this corpus has one each)."""
        want = yield self.s(K("subject", "a"))
        got = yield self.s(K("header", "SUBJECT", "a"))
        self.assertEqual(got, want)
        self.assertEqual(self.opened, [])

    @defer.inlineCallbacks
    def test_unknown_key(self):
        yield self.assertFailure(self.s(K("bogus")), S.SearchError)

    @defer.inlineCallbacks
    def test_empty_view(self):
        got = yield S.search(self.acc, self.mb.id, [], K("all"))
        self.assertEqual(got, [])


class UnindexedTests(Base):
    """Messages too large to have indexed search texts are read from their files."""

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.patch(searchtext, "MAX_INDEXED_SIZE", 0)
        yield self.fill(MESSAGES)

    def s(self, *keys, **kw):
        key = keys[0] if len(keys) == 1 else AND(*keys)
        return S.search(self.acc, self.mb.id, self.view, key, **kw)

    @defer.inlineCallbacks
    def test_files_read_once_and_only_when_needed(self):
        got = yield self.s(K("body", "a"), K("text", "e"), K("header", "subject", ""))
        self.assertEqual(got, [1, 2, 3, 4, 5])
        self.assertEqual(sorted(self.opened), sorted(set(self.opened)))
        self.assertEqual(len(self.opened), 5)
        # Index keys first: only the flagged message is read.
        self.opened.clear()
        got = yield self.s(K("body", "e"), K("flagged"))
        self.assertEqual(got, [2])
        self.assertEqual(len(self.opened), 1)

    @defer.inlineCallbacks
    def test_read_file_parameter(self):
        reads = []

        def read(m):
            reads.append(m.uid)
            with open(self.acc.message_path(m.id), "rb") as f:
                return f.read()

        got = yield self.s(K("body", "crème"), read_file=read)
        self.assertEqual(got, [2])
        self.assertEqual(sorted(reads), [1, 2, 3, 4, 5])
        self.assertEqual(self.opened, [])

    @defer.inlineCallbacks
    def test_same_answers(self):
        for key, want in (
            (K("body", "ttemp"), [1]),
            (K("text", "café"), [2]),
            (K("header", "X-CUSTOM", "foo b"), [3]),
            (K("text", "x-custom: foo"), [3]),
            (K("header", "mime-version", ""), [4, 5]),
        ):
            got = yield self.s(key)
            self.assertEqual(got, want, key)


class EfficiencyTests(Base):
    @defer.inlineCallbacks
    def test_flag_search_reads_no_files(self):
        n = 3000
        items = []
        for i in range(n):
            data = msg([f"Subject: message {i}", "From: x@example.org"], b"body %d\r\n" % i)
            flags = ("\\Seen",) if i % 3 == 0 else ()
            items.append((data, flags, datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=i)))
        for i in range(0, n, 500):
            yield self.acc.append_many("Inbox", items[i:i + 500])
        self.mb = yield self.acc.mailbox("Inbox")
        view = yield self.acc.uids(self.mb.id)
        self.assertEqual(len(view), n)
        got = yield S.search(self.acc, self.mb.id, view, K("seen"))
        self.assertEqual(len(got), n // 3)
        got = yield S.search(
            self.acc, self.mb.id, view,
            AND(K("or", K("unseen"), K("larger", 10)), K("not", K("deleted")), K("uid", SeqSet(((10, STAR),)))),
        )
        self.assertEqual(got, view[9:])
        got = yield S.search(self.acc, self.mb.id, view, AND(K("subject", "message 299"), K("since", date(2026, 1, 1))))
        self.assertEqual(got, [300] + list(range(2991, 3001)))
        self.assertEqual(self.opened, [])
    test_flag_search_reads_no_files.timeout = 300


class SortTests(Base):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.fill(MESSAGES)

    def sort(self, criteria, key=None):
        return S.sort(self.acc, self.mb.id, self.view, criteria, key or K("all"))

    @defer.inlineCallbacks
    def test_criteria(self):
        # INTERNALDATE: 4 (1 Nov), 2 (2 Nov), 1 (22 Nov 04:30Z), 3 (22 Nov 00:00Z)...
        got = yield self.sort([("ARRIVAL", False)])
        self.assertEqual(got, [4, 2, 3, 1, 5])
        got = yield self.sort([("ARRIVAL", True)])
        self.assertEqual(got, [5, 1, 3, 2, 4])
        # DATE: message 3 has no Date:, its INTERNALDATE is used (RFC 5256 2.2).
        got = yield self.sort([("DATE", False)])
        self.assertEqual(got, [4, 2, 3, 1, 5])
        got = yield self.sort([("SIZE", False)])
        msgs = yield self.acc.messages(self.mb.id)
        self.assertEqual(got, [m.uid for m in sorted(msgs, key=lambda m: (m.size, m.uid))])
        # Base subjects: "grüße...", "hello world" x2, "invoice 42", "something".
        got = yield self.sort([("SUBJECT", False)])
        self.assertEqual(got, [2, 1, 3, 4, 5])
        got = yield self.sort([("SUBJECT", False), ("ARRIVAL", True)])
        self.assertEqual(got, [2, 1, 3, 4, 5])
        got = yield self.sort([("SUBJECT", False), ("ARRIVAL", False)])
        self.assertEqual(got, [2, 3, 1, 4, 5])
        # FROM: addr-mailbox: alice, joerg, bob, billing, zed.
        got = yield self.sort([("FROM", False)])
        self.assertEqual(got, [1, 4, 3, 2, 5])
        got = yield self.sort([("FROM", True)])
        self.assertEqual(got, [5, 2, 3, 4, 1])
        # TO: bob, alice x4 (ties in mailbox order).
        got = yield self.sort([("TO", False)])
        self.assertEqual(got, [2, 3, 4, 5, 1])
        got = yield self.sort([("TO", True)])
        self.assertEqual(got, [1, 2, 3, 4, 5])
        # CC: only message 1 has one; empty sorts first.
        got = yield self.sort([("CC", False)])
        self.assertEqual(got, [2, 3, 4, 5, 1])
        # DISPLAYFROM: "Alice Example", "Jörg", "Bob", "Billing", "Zed".
        got = yield self.sort([("DISPLAYFROM", False)])
        self.assertEqual(got, [1, 4, 3, 2, 5])
        # DISPLAYTO: "Bob", "alice@example.org", "Alice Example", ... -> addr-spec used.
        got = yield self.sort([("DISPLAYTO", False), ("ARRIVAL", False)])
        self.assertEqual(got, [3, 4, 2, 5, 1])

    @defer.inlineCallbacks
    def test_with_search(self):
        got = yield self.sort([("ARRIVAL", True)], K("unseen"))
        self.assertEqual(got, [5, 2, 4])
        self.assertEqual(self.opened, [])

    @defer.inlineCallbacks
    def test_unknown(self):
        yield self.assertFailure(self.sort([("BOGUS", False)]), S.SearchError)


class SortCasemapTests(Base):
    """i;ascii-casemap upper-cases (RFC 4790 9.2) and a group sorts on its name, as
    Dovecot does (imaptest's sort-subject and sort-addresses groups)."""

    def test_casemap_upper(self):
        self.assertEqual(S.ascii_casemap("aB_[z"), "AB_[Z")
        keys = sorted(["_", "a", "[xyz]", "C", "b"], key=S.ascii_casemap)
        self.assertEqual(keys, ["a", "b", "C", "[xyz]", "_"])

    @defer.inlineCallbacks
    def test_subject_and_group_order(self):
        day = datetime(2026, 11, 1, tzinfo=timezone.utc)
        items = []
        for i, (subj, cc) in enumerate([("_", "user2@domain2.org (foo bar)"), ("a", "user2: blah@domain1.org;"),
                                        ("[xyz]", "user1@domain1.org"), ("Re: C", "")]):
            headers = f"From: a@example.org\r\nSubject: {subj}\r\n" + (f"Cc: {cc}\r\n" if cc else "")
            items.append(((headers + "\r\nbody\r\n").encode(), (), day + timedelta(hours=i)))
        yield self.fill(items)
        got = yield S.sort(self.acc, self.mb.id, self.view, [("SUBJECT", False)], K("all"))
        self.assertEqual(got, [2, 4, 3, 1])
        got = yield S.sort(self.acc, self.mb.id, self.view, [("CC", False)], K("all"))
        self.assertEqual(got, [4, 3, 1, 2])  # "", user1, user2 (address), user2 (group)
        got = yield S.sort(self.acc, self.mb.id, self.view, [("CC", True)], K("all"))
        self.assertEqual(got, [1, 2, 3, 4])


def tmsg(msgid, subject, day, refs=(), in_reply_to=None):
    headers = [f"Subject: {subject}", "From: a@example.org"]
    if refs:
        headers.append("References: " + " ".join(f"<{r}>" for r in refs))
    if in_reply_to:
        headers.append(f"In-Reply-To: <{in_reply_to}>")
    return msg(headers, b"x\r\n", date_=f"{day} Nov 2026 10:00:00 +0000", msgid=msgid)


class ThreadTests(Base):
    @defer.inlineCallbacks
    def thread(self, items, algorithm, numbers=None):
        recv = datetime(2026, 11, 1, tzinfo=timezone.utc)
        yield self.fill([(data, (), recv) for data in items])
        structure = yield S.thread(self.acc, self.mb.id, self.view, algorithm, K("all"))
        return S.format_thread(structure, numbers)

    @defer.inlineCallbacks
    def test_references_rfc_example(self):
        # RFC 5256 4: "(2)(3 6 (4 23)(44 7 96))", with UIDs mapped to those numbers.
        items = [
            tmsg("n2", "Other", 1),
            tmsg("n3", "Topic", 2),
            tmsg("n6", "Re: Topic", 3, refs=["n3"]),
            tmsg("n4", "Re: Topic", 4, refs=["n3", "n6"]),
            tmsg("n23", "Re: Topic", 5, refs=["n3", "n6", "n4"]),
            tmsg("n44", "Re: Topic", 6, in_reply_to="n6"),
            tmsg("n7", "Re: Topic", 7, refs=["n3", "n6", "n44"]),
            tmsg("n96", "Re: Topic", 8, refs=["n44", "n7"]),
        ]
        numbers = dict(zip(range(1, 9), [2, 3, 6, 4, 23, 44, 7, 96]))
        got = yield self.thread(items, "REFERENCES", numbers)
        self.assertEqual(got, "(2)(3 6 (4 23)(44 7 96))")

    @defer.inlineCallbacks
    def test_references_dummy_and_subjects(self):
        items = [
            # Two replies to a message not in the mailbox: a dummy parent.
            tmsg("r1", "Re: Lost", 3, refs=["gone"]),
            tmsg("r2", "Re: Lost", 4, refs=["gone"]),
            # A reply without references joins the thread with its base subject.
            tmsg("s1", "Party", 1),
            tmsg("s2", "Re: party", 2),
            # Two non-replies with the same subject get a dummy parent.
            tmsg("t1", "Same", 5),
            tmsg("t2", "Same", 6),
            # Duplicate Message-ID: the second is a message of its own.
            tmsg("s1", "Unrelated", 7),
            # No Message-ID and a reference loop back to itself.
            tmsg(None, "Lonely", 8, refs=["loop2", "loop1"]),
        ]
        got = yield self.thread(items, "REFERENCES")
        self.assertEqual(got, "(3 4)((1)(2))((5)(6))(7)(8)")

    @defer.inlineCallbacks
    def test_references_orphans_out_of_order(self):
        # The reply is delivered before its parent; a grandchild refers to both.
        items = [
            tmsg("c", "Re: Root", 2, refs=["p"]),
            tmsg("p", "Root", 1),
            tmsg("g", "Re: Root", 3, refs=["p", "c"]),
        ]
        got = yield self.thread(items, "REFERENCES")
        self.assertEqual(got, "(2 1 3)")

    @defer.inlineCallbacks
    def test_ordered_subject(self):
        items = [
            tmsg("a", "Beta", 5),
            tmsg("b", "Alpha", 3),
            tmsg("c", "Re: Beta", 1),
            tmsg("d", "Re: Alpha", 4),
            tmsg("e", "Gamma", 2),
            tmsg("f", "Fwd: Beta", 6),
        ]
        got = yield self.thread(items, "ORDEREDSUBJECT")
        # Beta thread starts with 3 (day 1), then Gamma (2), Alpha (3).
        self.assertEqual(got, "(3 (1)(6))(5)(2 4)")

    @defer.inlineCallbacks
    def test_thread_with_search(self):
        yield self.fill([(tmsg("x", "X", 1), ("\\Seen",), None), (tmsg("y", "Re: X", 2, refs=["x"]), (), None)])
        structure = yield S.thread(self.acc, self.mb.id, self.view, "REFERENCES", K("unseen"))
        self.assertEqual(structure, [(2, [])])
        yield self.assertFailure(
            S.thread(self.acc, self.mb.id, self.view, "BOGUS", K("all")), S.SearchError
        )


class FormatTests(unittest.SynchronousTestCase):
    def test_format(self):
        structure = [(1, []), (2, [(3, [(4, [])]), (5, [])]), (None, [(6, []), (7, [(8, [])])])]
        self.assertEqual(S.format_thread(structure), "(1)(2 (3 4)(5))((6)(7 8))")
        self.assertEqual(S.format_thread(structure, {i: i * 10 for i in range(1, 9)}),
                         "(10)(20 (30 40)(50))((60)(70 80))")
        self.assertEqual(S.format_thread(structure, lambda u: u + 1), "(2)(3 (4 5)(6))((7)(8 9))")
        self.assertEqual(S.format_thread([]), "")

    def test_format_deep(self):
        node = (5000, [])
        for uid in range(4999, 0, -1):
            node = (uid, [node])
        out = S.format_thread([node])
        self.assertEqual(out, "(" + " ".join(str(i) for i in range(1, 5001)) + ")")

    def test_is_reply(self):
        for s in ("Re: x", "RE:x", "[list] Re: x", "Fwd: x", "fw: x", "x (fwd)", "[Fwd: x]", "Re [2]: x"):
            self.assertTrue(S.is_reply_or_forward(s), s)
        for s in ("x", "[list] x", "Regarding x", "Ref: x"):
            self.assertFalse(S.is_reply_or_forward(s), s)
