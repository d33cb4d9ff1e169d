"""Search texts of large messages made after the commit (issue 13, part 2): the delivery
is acknowledged with the message marked text_pending; SEARCH finds it meanwhile by
reading its file; the account's indexer then adds the index rows; marks left by a crash
are picked up when the account is opened; verifydata knows the state."""

import os

from twisted.internet import defer, reactor

from moxtw import store as storemod
from moxtw.store import Store
from moxtw.store import account as accountmod
from moxtw.store.verify import verify_account
from moxtw.test.imaphelper import IMAPSessionTest, message, untagged


def big(subject, word, size=200 * 1024):
    filler = b"".join(b"filler line %d with ordinary words in it\r\n" % i for i in range(size // 40))[:size]
    return (f"From: bob@example.net\r\nTo: mjl@example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@example.net>\r\n\r\n").encode() + filler + b"\r\n" + word.encode() + b"\r\n"


class IndexLaterTests(IMAPSessionTest):
    kind = "imap"
    factory_kwargs = {"require_tls_for_login": False}

    def rows(self, acc=None):
        return (acc or self.acc)._read(lambda conn: [dict(r) for r in conn.execute(
            "SELECT id, uid, text_pending, text_indexed, (SELECT count(*) FROM message_search s WHERE s.rowid = m.id)"
            " AS searchrows, (SELECT count(*) FROM message_text t WHERE t.rowid = m.id) AS textrows"
            " FROM message m ORDER BY id")])

    def hold_indexer(self, acc):
        """Keep the indexer from running; returns a function that lets it go."""
        real = acc._kick_indexer
        acc._kick_indexer = lambda: None

        def release():
            del acc._kick_indexer
            real()
            return acc.indexing_done()

        return release

    @defer.inlineCallbacks
    def test_large_message_searchable_before_and_after_indexing(self):
        release = self.hold_indexer(self.acc)
        yield self.acc.deliver("Inbox", big("large", "zyxwvutsrq"))
        yield self.acc.append("Inbox", message("small", body="small body qponmlkj"))  # APPEND: indexed at once
        rows = yield self.rows()
        self.assertEqual([(r["text_pending"], r["text_indexed"], r["searchrows"], r["textrows"]) for r in rows],
                         [(1, 0, 0, 0), (0, 1, 1, 1)])
        c = yield self.logged_in(select="INBOX")
        # Not indexed yet: found all the same, from the file.
        self.assertEqual(untagged((yield c.cmd("SEARCH BODY zyxwvutsrq")), "SEARCH"), ["SEARCH 1"])
        self.assertEqual(untagged((yield c.cmd("SEARCH TEXT qponmlkj")), "SEARCH"), ["SEARCH 2"])
        self.assertEqual(untagged((yield c.cmd("SEARCH NOT BODY zyxwvutsrq")), "SEARCH"), ["SEARCH 2"])
        # The preview was made at delivery.
        lines = yield c.cmd("FETCH 1 (PREVIEW)")
        self.assertIn(b"filler line 0 with ordinary words", b"".join(lines))
        yield release()
        rows = yield self.rows()
        self.assertEqual([(r["text_pending"], r["text_indexed"], r["searchrows"], r["textrows"]) for r in rows],
                         [(0, 1, 1, 1), (0, 1, 1, 1)])
        self.assertEqual(untagged((yield c.cmd("SEARCH BODY zyxwvutsrq")), "SEARCH"), ["SEARCH 1"])
        inbox = yield self.acc.mailbox("Inbox")
        found = yield self.acc.search(inbox.id, storemod.SearchCriteria(text="zyxwvutsrq"))
        self.assertEqual(list(found), [1])

    @defer.inlineCallbacks
    def test_indexer_runs_by_itself_and_skips_expunged(self):
        yield self.acc.deliver("Inbox", big("one", "alphaword"))
        yield self.acc.indexing_done()
        rows = yield self.rows()
        self.assertEqual([(r["text_pending"], r["searchrows"]) for r in rows], [(0, 1)])
        # Expunged while waiting: nothing is indexed for it, nothing stray is left.
        release = self.hold_indexer(self.acc)
        yield self.acc.deliver("Inbox", big("two", "betaword"))
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
        yield c.cmd("EXPUNGE")
        yield c.cmd("CLOSE")
        yield self.acc.removals_done()
        yield release()
        rows = yield self.rows()
        self.assertEqual([r["uid"] for r in rows], [1])
        stray = yield self.acc._read(lambda conn: conn.execute(
            "SELECT (SELECT count(*) FROM message_search), (SELECT count(*) FROM message_text)").fetchone())
        self.assertEqual(tuple(stray), (1, 1))

    @defer.inlineCallbacks
    def test_copy_of_pending_message_is_indexed_too(self):
        yield self.acc.create_mailbox("Other")
        release = self.hold_indexer(self.acc)
        yield self.acc.deliver("Inbox", big("copied", "gammaword"))
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("COPY 1 Other")
        rows = yield self.rows()
        self.assertEqual([r["text_pending"] for r in rows], [1, 1])
        yield release()
        rows = yield self.rows()
        self.assertEqual([(r["text_pending"], r["text_indexed"], r["searchrows"]) for r in rows], [(0, 1, 1)] * 2)
        yield c.cmd("SELECT Other")
        self.assertEqual(untagged((yield c.cmd("SEARCH BODY gammaword")), "SEARCH"), ["SEARCH 1"])

    @defer.inlineCallbacks
    def test_pending_after_crash_made_at_open_and_noted_by_verifydata(self):
        self.hold_indexer(self.acc)
        yield self.acc.deliver("Inbox", big("crashy", "deltaword"))
        # As after a crash: the mark is in the index, the texts are not.
        self.acc._closing = True
        yield self.store.close()
        path = self.acc.path
        report = yield defer.maybeDeferred(verify_account, path)
        self.assertEqual(report.errors, [])
        self.assertTrue(any("1 messages waiting for their search texts" in n for n in report.notes), report.notes)
        store = Store(self.store.data_dir, reactor=reactor)
        self.addCleanup(store.close)
        acc = yield store.open_account("mjl")
        yield acc.indexing_done()
        rows = yield self.rows(acc)
        self.assertEqual([(r["text_pending"], r["text_indexed"], r["searchrows"]) for r in rows], [(0, 1, 1)])
        report = yield defer.maybeDeferred(verify_account, path)
        self.assertEqual((report.errors, report.notes), ([], []))

    @defer.inlineCallbacks
    def test_threshold(self):
        """APPEND makes the texts of messages up to INDEX_LATER_SIZE at once; a delivery
        never does (the indexer makes them in batches)."""
        release = self.hold_indexer(self.acc)
        yield self.acc.append("Inbox", big("edge", "w", size=accountmod.INDEX_LATER_SIZE - 2048))
        yield self.acc.append("Inbox", big("over", "w", size=accountmod.INDEX_LATER_SIZE + 2048))
        yield self.acc.deliver("Inbox", message("tiny", body="tiny"))
        rows = yield self.rows()
        self.assertEqual([r["text_pending"] for r in rows], [0, 1, 1])
        yield release()
        self.assertTrue(os.path.isdir(self.acc.maildir))


class HeadAndMessageTests(IMAPSessionTest):
    """A large message delivered as (head, message) is written in two pieces, never
    joined in memory, and reads back exactly as the joined bytes would: FETCH of parts,
    BODYSTRUCTURE and ENVELOPE as for a message delivered whole."""

    kind = "imap"
    factory_kwargs = {"require_tls_for_login": False}

    @defer.inlineCallbacks
    def test_same_as_joined(self):
        head = b"Return-Path: <bob@example.net>\r\nReceived: from x by y; Mon, 7 Dec 2026 10:00:00 +0000\r\n"
        inner = big("inner", "epsilonword", size=90 * 1024)
        body = (b"From: bob@example.net\r\nTo: mjl@example.org\r\nSubject: mixed\r\nMIME-Version: 1.0\r\n"
                b'Content-Type: multipart/mixed; boundary="zz"\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\n'
                + b"hello\r\n" * 20000 + b"--zz\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"--zz--\r\n")
        other = yield self.store.open_account("joined")
        yield self.acc.deliver("Inbox", (head, body))
        yield other.deliver("Inbox", head + body)
        got = []
        for acc in (self.acc, other):
            mb = yield acc.mailbox("Inbox")
            [m] = yield acc.messages(mb.id)
            with acc.open_message(m.id) as f:
                data = f.read()
            got.append((data, m.size, m.part_json, m.bodystructure_json, m.envelope_json, m.preview))
        self.assertEqual(got[0][0], head + body)
        self.assertEqual(got[0], got[1])
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("FETCH 1 (BODY.PEEK[2.HEADER] BODY.PEEK[1]<0.12> BODY.PEEK[HEADER.FIELDS (RECEIVED SUBJECT)])")
        text = b"\r\n".join(lines)
        self.assertIn(b"Subject: inner", text)
        self.assertIn(b"{12}\r\nhello\r\nhello", text)
        self.assertIn(b"Received: from x by y", text)


class ReviewCaseTests(IMAPSessionTest):
    kind = "imap"
    factory_kwargs = {"require_tls_for_login": False}

    @defer.inlineCallbacks
    def test_failing_message_does_not_stop_indexer(self):
        real = accountmod._texts_of_file
        calls = []

        def flaky(path):
            calls.append(path)
            if len(calls) == 1:
                raise OSError("disk trouble")
            return real(path)

        self.patch(accountmod, "_texts_of_file", flaky)
        for i in range(3):
            yield self.acc.deliver("Inbox", big(f"m{i}", f"word{i}x"))
            yield self.acc.indexing_done()
        rows = yield self.acc._read(lambda conn: [tuple(r) for r in conn.execute(
            "SELECT text_pending, text_indexed FROM message ORDER BY id")])
        self.assertEqual(rows, [(0, 0), (0, 1), (0, 1)])
        self.flushLoggedErrors(OSError)

    def test_preview_of_cut_utf8_part(self):
        from moxtw.message import summary
        data = b"Subject: x\r\n\r\n" + b"aa" + (
            "a\u00e9" * 30000 + "\r\n").encode() * 3
        s = summary(data, texts=False)
        self.assertTrue(s.preview.startswith("aaa\u00e9a\u00e9"), s.preview[:20])

    @defer.inlineCallbacks
    def test_body_starting_with_space_joined(self):
        head = b"Received: from x by y\r\n"
        body = b" continued\r\nSubject: folded\r\n\r\n" + b"z" * 100000 + b"\r\n"
        yield self.acc.deliver("Inbox", (head, body))
        other = yield self.store.open_account("joined")
        yield other.deliver("Inbox", head + body)
        got = []
        for acc in (self.acc, other):
            [m] = yield acc.messages((yield acc.mailbox("Inbox")).id)
            got.append((m.part_json, m.envelope_json, m.subject))
        self.assertEqual(got[0], got[1])


class BatchTests(IMAPSessionTest):
    """Deliveries are indexed after the commit in batches: few write operations for many
    messages, bounded by the message count and the text size."""

    kind = "imap"
    factory_kwargs = {"require_tls_for_login": False}
    rows = IndexLaterTests.rows
    hold_indexer = IndexLaterTests.hold_indexer

    @defer.inlineCallbacks
    def test_many_deliveries_few_writes(self):
        self.patch(accountmod, "INDEX_BATCH", 40)
        release = self.hold_indexer(self.acc)
        for i in range(100):
            yield self.acc.deliver("Inbox", message(f"m{i}", body=f"unique{i:03d}word body"))
        writes = []
        real = self.acc._write
        self.patch(self.acc, "_write", lambda fn: (writes.append(1), real(fn))[1])
        c = yield self.logged_in(select="INBOX")
        self.assertEqual(untagged((yield c.cmd("SEARCH BODY unique042word")), "SEARCH"), ["SEARCH 43"])
        yield release()
        rows = yield self.rows()
        self.assertEqual({(r["text_pending"], r["text_indexed"], r["searchrows"], r["textrows"]) for r in rows},
                         {(0, 1, 1, 1)})
        self.assertEqual(len(writes), 3)  # 40 + 40 + 20
        self.assertEqual(untagged((yield c.cmd("SEARCH BODY unique042word")), "SEARCH"), ["SEARCH 43"])
        self.assertEqual(untagged((yield c.cmd("SEARCH BODY unique099word")), "SEARCH"), ["SEARCH 100"])

    @defer.inlineCallbacks
    def test_text_budget_splits_batches(self):
        # Each message has about 400 KiB of text (its text and the search body): two in
        # the first batch (the budget is passed with the second), two, one.
        self.patch(accountmod, "INDEX_BATCH_TEXT", 700 * 1024)
        release = self.hold_indexer(self.acc)
        for i in range(5):
            yield self.acc.deliver("Inbox", big(f"b{i}", f"bigword{i}"))
        writes = []
        real = self.acc._write
        self.patch(self.acc, "_write", lambda fn: (writes.append(1), real(fn))[1])
        yield release()
        rows = yield self.rows()
        self.assertEqual([r["text_pending"] for r in rows], [0] * 5)
        self.assertEqual(len(writes), 3)

    @defer.inlineCallbacks
    def test_failure_in_batch_leaves_others_indexed(self):
        release = self.hold_indexer(self.acc)
        for i in range(3):
            yield self.acc.deliver("Inbox", message(f"m{i}", body=f"word{i}"))
        real = accountmod._texts_of_file
        rows = yield self.rows()
        bad = accountmod.message_file(self.acc.maildir, rows[1]["id"])

        def texts(path):
            if path == bad:
                raise ValueError("broken")
            return real(path)

        self.patch(accountmod, "_texts_of_file", texts)
        yield release()
        rows = yield self.rows()
        self.assertEqual([(r["text_pending"], r["text_indexed"]) for r in rows], [(0, 1), (0, 0), (0, 1)])
        self.flushLoggedErrors()
