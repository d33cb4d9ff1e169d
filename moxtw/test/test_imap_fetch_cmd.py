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
        self.assertIn(b"FLAGS (\\Seen)", b"".join(lines))
        lines = yield c.cmd("FETCH 1 FLAGS")
        self.assertIn("1 FETCH (FLAGS (\\Seen))", untagged(lines))
        lines = yield c.cmd("FETCH 2 RFC822.HEADER")  # does not set \Seen
        lines = yield c.cmd("FETCH 2 FLAGS")
        self.assertIn("2 FETCH (FLAGS ())", untagged(lines))
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
