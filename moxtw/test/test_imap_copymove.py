"""COPY, MOVE and their UID forms (RFC 9051 6.4.7, RFC 6851 MOVE, RFC 4315 COPYUID)."""

import re

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, tagged, untagged


class CopyMoveTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver_n(4)

    @defer.inlineCallbacks
    def test_copy(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("COPY 2:3 Archive")
        m = re.search(r"\[COPYUID (\d+) (\S+) (\S+)\]", tagged(lines))
        self.assertEqual(m.group(2, 3), ("2:3", "1:2"))
        lines = yield c.cmd("UID COPY 4,1 Archive")
        self.assertIn(" 1,4 3:4]", tagged(lines))
        self.assertNO((yield c.cmd("COPY 1 Nonexistent")), "TRYCREATE")
        self.assertBAD((yield c.cmd("COPY 9 Archive")))
        lines = yield c.cmd("UID COPY 99 Archive")
        self.assertOK(lines)
        self.assertNotIn("COPYUID", tagged(lines))
        # Copy into the selected mailbox: the new messages appear.
        lines = yield c.cmd("COPY 1 INBOX")
        self.assertIn("5 EXISTS", untagged(lines))

    @defer.inlineCallbacks
    def test_move(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("MOVE 2:3 Archive")
        u = untagged(lines)
        # RFC 6851 4.3: COPYUID in an untagged OK before the EXPUNGEs.
        self.assertTrue(u[0].startswith("OK [COPYUID "), u)
        self.assertEqual(u[1:], ["3 EXPUNGE", "2 EXPUNGE"])
        self.assertOK(lines)
        lines = yield c.cmd("UID MOVE 4 Archive")
        self.assertEqual(untagged(lines, "EXPUNGE"), ["2 EXPUNGE"])
        self.assertNO((yield c.cmd("MOVE 1 Nonexistent")), "TRYCREATE")
        # Into the selected mailbox: a new UID at the end, as Dovecot does.
        lines = yield c.cmd("MOVE 1 INBOX")
        self.assertOK(lines)
        u = untagged(lines)
        self.assertTrue(u[0].startswith("OK [COPYUID "), u)
        self.assertEqual(u[1:3], ["1 EXPUNGE", "1 EXISTS"])
        lines = yield c.cmd("STATUS Archive (MESSAGES)")
        self.assertIn("MESSAGES 3", untagged(lines)[0])

    @defer.inlineCallbacks
    def test_move_qresync_vanished(self):
        c = yield self.logged_in(enable="QRESYNC", select="INBOX")
        lines = yield c.cmd("MOVE 1:2 Archive")
        self.assertIn("VANISHED 1:2", untagged(lines))

    @defer.inlineCallbacks
    def test_move_seen_by_other_session(self):
        c = yield self.logged_in(select="INBOX")
        other = yield self.logged_in(select="Archive")
        yield c.cmd("MOVE 1 Archive")
        lines = yield other.cmd("NOOP")
        self.assertIn("1 EXISTS", untagged(lines))
