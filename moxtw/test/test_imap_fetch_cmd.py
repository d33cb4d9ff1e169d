"""FETCH / UID FETCH as a command (RFC 9051 6.4.5, 6.4.9; RFC 3516 BINARY; RFC 8970
PREVIEW; RFC 8514 SAVEDATE); rendering is tested in test_imap_fetch."""

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, message, untagged


class FetchTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver_n(3)

    @defer.inlineCallbacks
    def test_basic_and_uid(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("FETCH 1:* (FLAGS RFC822.SIZE)")
        self.assertEqual(len(untagged(lines, "FETCH")), 3)
        lines = yield c.cmd("UID FETCH 2 FLAGS")
        # RFC 9051 6.4.9: UID FETCH responses include UID.
        self.assertIn("UID 2", untagged(lines, "FETCH")[0])
        lines = yield c.cmd("UID FETCH 100:200 FLAGS")
        self.assertOK(lines)
        self.assertEqual(untagged(lines, "FETCH"), [])
        lines = yield c.cmd("UID FETCH 100:* UID")  # "*" is UID 3: 3:100
        self.assertEqual(untagged(lines, "FETCH"), ["3 FETCH (UID 3)"])

    @defer.inlineCallbacks
    def test_out_of_range(self):
        c = yield self.logged_in(select="INBOX")
        self.assertBAD((yield c.cmd("FETCH 4 FLAGS")))
        self.assertBAD((yield c.cmd("FETCH 1:4 FLAGS")))
        self.assertBAD((yield c.cmd("FETCH 0 FLAGS")))
        self.assertBAD((yield c.cmd("FETCH 4294967296 FLAGS")))
        self.assertBAD((yield c.cmd("FETCH 1 (FLAGS")))
        self.assertBAD((yield c.cmd("FETCH 1 BODY[1.0]")))
        self.assertBAD((yield c.cmd("FETCH 1 NOSUCH")))
        self.assertOK((yield c.cmd("FETCH 3:* FLAGS")))

    @defer.inlineCallbacks
    def test_empty_mailbox(self):
        """RFC 9051 9: "*" in an empty mailbox is invalid for sequence numbers."""
        c = yield self.logged_in(select="Archive")
        self.assertBAD((yield c.cmd("FETCH 1:* FLAGS")))
        self.assertBAD((yield c.cmd("FETCH * FLAGS")))
        lines = yield c.cmd("UID FETCH 1:* FLAGS")
        self.assertOK(lines)

    @defer.inlineCallbacks
    def test_body_sets_seen(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("FETCH 1 BODY.PEEK[TEXT]")
        self.assertNotIn(b"\\Seen", b"".join(lines))
        lines = yield c.cmd("FETCH 1 BODY[TEXT]")
        # RFC 9051 6.4.5: the changed flags are part of the FETCH response.
        self.assertIn(b"FLAGS (\\Seen \\Recent)", b"".join(lines))  # IMAP4rev1: recent here
        lines = yield c.cmd("FETCH 1 FLAGS")
        self.assertIn("1 FETCH (FLAGS (\\Seen \\Recent))", untagged(lines))
        lines = yield c.cmd("FETCH 2 RFC822.HEADER")  # does not set \Seen
        lines = yield c.cmd("FETCH 2 FLAGS")
        self.assertIn("2 FETCH (FLAGS (\\Recent))", untagged(lines))
        # Other sessions learn about it.

    @defer.inlineCallbacks
    def test_body_sets_seen_condstore(self):
        c = yield self.logged_in(select="INBOX", enable="CONDSTORE")
        lines = yield c.cmd("FETCH 1 (UID BODY[])")
        data = b"\r\n".join(lines)
        self.assertIn(b"MODSEQ", data)
        # The modseq announced is the one now stored.
        lines2 = yield c.cmd("FETCH 1 MODSEQ")
        mod = untagged(lines2)[0].split("MODSEQ (")[1].split(")")[0]
        self.assertIn(f"MODSEQ ({mod})".encode(), data)

    @defer.inlineCallbacks
    def test_partial_binary_preview_savedate(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("FETCH 1 BODY.PEEK[]<0.4>")
        self.assertIn(b"BODY[]<0> {4}", lines[0])
        self.assertEqual(lines[1][:4], b"From")
        lines = yield c.cmd("FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1] PREVIEW SAVEDATE)")
        self.assertOK(lines)
        self.assertIn(b"PREVIEW", b"".join(lines))
        self.assertIn(b"SAVEDATE", b"".join(lines))

    @defer.inlineCallbacks
    def test_changedsince_and_vanished(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("FETCH 1:* (FLAGS) (CHANGEDSINCE 1)")
        self.assertTrue(all("MODSEQ" in x for x in untagged(lines, "FETCH")), lines)
        # VANISHED needs UID FETCH and QRESYNC.
        self.assertBAD((yield c.cmd("UID FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)")))
        self.assertBAD((yield c.cmd("FETCH 1:* FLAGS (CHANGEDSINCE 1 VANISHED)")))

    @defer.inlineCallbacks
    def test_pipelined_in_order(self):
        c = yield self.logged_in()
        d = c.wait_tagged("p4")
        c.send(b"p1 SELECT INBOX\r\np2 FETCH 1 UID\r\np3 NOSUCH\r\np4 UID FETCH 3 UID\r\n")
        yield d
        tags = [line.split(b" ")[0] for line in c.out.split(b"\r\n") if line[:1] == b"p"]
        self.assertEqual(tags, [b"p1", b"p2", b"p3", b"p4"])
        self.assertIn(b"p2 OK", c.out)

    @defer.inlineCallbacks
    def test_many_messages_batched(self):
        for i in range(5):
            yield self.acc.deliver("Archive", message(f"m{i}"))
        c = yield self.logged_in(select="Archive")
        lines = yield c.cmd("FETCH 1:* (UID ENVELOPE)")
        self.assertEqual(len(untagged(lines, "FETCH")), 5)


class RowFetchTests(IMAPSessionTest):
    """FETCH of items the index rows answer (flags, dates, sizes, ENVELOPE, ...): the
    responses of the fast path are byte for byte those of render_fetch, and long ones go
    out in slices at the client's pace."""

    @defer.inlineCallbacks
    def test_same_bytes_as_render_fetch(self):
        from moxtw.imapserver import fetch as F
        from moxtw.imapserver.types import FetchAtt
        from moxtw.test.test_imap_search_index import CORPUS

        corpus = CORPUS + [
            # 8-bit UTF-8 in the envelope: not cached, rendered per session.
            "Subject: Grüße\r\nFrom: Jörg <j@example.de>\r\nDate: Tue, 5 Mar 2024 14:07:09 +0100\r\n\r\nx\r\n".encode(),
            "Subject: quote \" and \\ back\r\n\r\nx\r\n".encode(),
        ]
        for i, data in enumerate(corpus):
            yield self.acc.deliver("Inbox", data, flags=["\\Seen", "$Forwarded"] if i % 2 else ())
        mb = yield self.acc.mailbox("Inbox")
        msgs = yield self.acc.messages(mb.id)
        self.assertTrue(any(m.row["envelope_imap"] is None for m in msgs))
        item_sets = [
            ["ENVELOPE"], ["FLAGS"], ["UID", "FLAGS", "MODSEQ"], ["FAST"], ["ALL"],
            ["ENVELOPE", "BODYSTRUCTURE", "PREVIEW", "SAVEDATE", "INTERNALDATE", "RFC822.SIZE"],
            ["FLAGS", "FLAGS", "ENVELOPE"],
        ]
        for names in item_sets:
            atts = [FetchAtt(n) for n in names]
            for utf8 in (False, True):
                for condstore in (False, True):
                    for include_uid in (False, True):
                        ctx = F.FetchContext(utf8=utf8, rev2=utf8, condstore=condstore)
                        renderer = F.RowRenderer(atts, ctx, include_uid)
                        rows = yield self.acc.fetch_rows(mb.id, 1, 1000, renderer.fields)
                        self.assertEqual([r.uid for r in rows], [m.uid for m in msgs])
                        for seq, (row, m) in enumerate(zip(rows, msgs), start=1):
                            want = F.render_fetch(m, seq, atts, None, ctx, include_uid=include_uid).data
                            self.assertEqual(renderer.render(row, seq), want, (names, utf8, condstore))

    @defer.inlineCallbacks
    def test_slices_wait_for_the_client(self):
        from moxtw.imapserver import session

        self.patch(session, "ROW_SLICE", 2)
        yield self.deliver_n(5)
        c = yield self.logged_in(select="INBOX")
        watch = c.transport.producer  # the connection's output watch, from its start
        waiting = defer.Deferred()
        real_wait = c.proto.wait_output

        def wait_output():
            # The client's buffer is full once the FETCH has started.
            if not waiting.called:
                watch.pauseProducing()
            d = real_wait()
            if not d.called and not waiting.called:
                waiting.callback(None)
            return d

        c.proto.wait_output = wait_output
        d = c.cmd("FETCH 1:* (UID FLAGS ENVELOPE)")
        yield waiting  # the first slice is rendered and waits for the client
        self.assertNotIn(b"FETCH (", c.out)
        watch.resumeProducing()
        lines = yield d
        self.assertOK(lines)
        self.assertEqual([x.split(" ")[0] for x in untagged(lines, "FETCH")], ["1", "2", "3", "4", "5"])
        # Files are streamed under the same watch.
        self.assertIs(c.transport.producer, watch)
        lines = yield c.cmd("FETCH 1 BODY[]")
        self.assertOK(lines)


class PacedFetchDisconnectTests(IMAPSessionTest):
    """A paced FETCH stops reading and rendering once the client is gone."""

    @defer.inlineCallbacks
    def test_no_work_after_disconnect(self):
        from moxtw.imapserver import session

        self.patch(session, "ROW_SLICE", 2)
        yield self.deliver_n(20)
        c = yield self.logged_in(select="INBOX")
        calls = []
        real_fetch_rows = self.acc.fetch_rows

        def counting(*a, **kw):
            calls.append(a[1:3])
            return real_fetch_rows(*a, **kw)

        self.acc.fetch_rows = counting
        watch = c.transport.producer
        first_wait = defer.Deferred()
        real_wait = c.proto.wait_output

        def wait_output():
            watch.pauseProducing()  # the client reads nothing once the FETCH started
            d = real_wait()
            if not first_wait.called:
                first_wait.callback(None)
            return d

        c.proto.wait_output = wait_output
        done = defer.Deferred()  # fires when the server has finished the FETCH command
        real_resume = c.proto._resume

        def resume(result):
            real_resume(result)
            if not done.called:
                done.callback(None)

        c.proto._resume = resume
        c.cmd("FETCH 1:* (UID FLAGS ENVELOPE)").addErrback(lambda f: None)
        yield first_wait
        before = len(calls)
        self.assertLess(before, 10)  # the FETCH is paused part way through its 10 slices
        watch.stopProducing()  # what the transport does when the connection is lost
        c.proto.connectionLost(None)
        c.closed = True
        yield done
        # At most the slice being read ahead, not the others.
        self.assertLessEqual(len(calls), before + 1)
