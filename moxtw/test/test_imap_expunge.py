"""EXPUNGE, UID EXPUNGE (RFC 4315 2.1), CLOSE (RFC 9051 6.4.2)."""

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, untagged


class ExpungeTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver_n(5)

    @defer.inlineCallbacks
    def test_expunge(self):
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("STORE 1,3,5 +FLAGS.SILENT (\\Deleted)")
        lines = yield c.cmd("EXPUNGE")
        self.assertEqual(untagged(lines), ["5 EXPUNGE", "3 EXPUNGE", "1 EXPUNGE"])
        lines = yield c.cmd("EXPUNGE")
        self.assertEqual(untagged(lines), [])
        self.assertOK(lines)

    @defer.inlineCallbacks
    def test_uid_expunge(self):
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("STORE 1:* +FLAGS.SILENT (\\Deleted)")
        lines = yield c.cmd("UID EXPUNGE 2:3")
        self.assertEqual(untagged(lines), ["3 EXPUNGE", "2 EXPUNGE"])
        lines = yield c.cmd("UID EXPUNGE 999")
        self.assertEqual(untagged(lines), [])
        lines = yield c.cmd("FETCH 1:* UID")
        self.assertEqual(len(untagged(lines, "FETCH")), 3)

    @defer.inlineCallbacks
    def test_close_expunges_silently(self):
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
        lines = yield c.cmd("CLOSE")
        self.assertEqual(untagged(lines), [])
        lines = yield c.cmd("STATUS INBOX (MESSAGES)")
        self.assertIn("MESSAGES 4", untagged(lines)[0])
        # EXAMINE + CLOSE does not expunge.
        yield c.cmd("SELECT INBOX")
        yield c.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
        yield c.cmd("EXAMINE INBOX")
        yield c.cmd("CLOSE")
        lines = yield c.cmd("STATUS INBOX (MESSAGES)")
        self.assertIn("MESSAGES 4", untagged(lines)[0])
        # UNSELECT does not expunge either.
        yield c.cmd("SELECT INBOX")
        yield c.cmd("UNSELECT")
        lines = yield c.cmd("STATUS INBOX (MESSAGES DELETED)")
        self.assertIn("MESSAGES 4 DELETED 1", untagged(lines)[0])
