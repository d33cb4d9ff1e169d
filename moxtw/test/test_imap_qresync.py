"""QRESYNC (RFC 7162 3.2): ENABLE, SELECT (QRESYNC ...), VANISHED (EARLIER), UID FETCH
VANISHED, VANISHED for expunges."""

import re

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, untagged


class QresyncTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver_n(5)

    @defer.inlineCallbacks
    def state(self):
        c = yield self.logged_in(enable="QRESYNC")
        lines = yield c.cmd("SELECT INBOX")
        u = untagged(lines)
        uidvalidity = int(re.search(r"UIDVALIDITY (\d+)", " ".join(u)).group(1))
        modseq = int(re.search(r"HIGHESTMODSEQ (\d+)", " ".join(u)).group(1))
        return c, uidvalidity, modseq

    @defer.inlineCallbacks
    def test_enable(self):
        c = yield self.logged_in()
        lines = yield c.cmd("ENABLE QRESYNC")
        self.assertIn(untagged(lines)[0], ("ENABLED QRESYNC", "ENABLED QRESYNC CONDSTORE"))

    @defer.inlineCallbacks
    def test_select_qresync_without_enable(self):
        c = yield self.logged_in()
        self.assertBAD((yield c.cmd("SELECT INBOX (QRESYNC (1 1))")))

    @defer.inlineCallbacks
    def test_resync(self):
        c, uv, modseq = yield self.state()
        yield c.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
        yield c.cmd("STORE 4 +FLAGS.SILENT (\\Flagged)")
        lines = yield c.cmd("EXPUNGE")
        self.assertIn("VANISHED 2", untagged(lines))
        yield c.cmd("UNSELECT")
        lines = yield c.cmd(f"SELECT INBOX (QRESYNC ({uv} {modseq}))")
        u = untagged(lines)
        self.assertIn("VANISHED (EARLIER) 2", u)
        self.assertIn("3 FETCH (UID 4 FLAGS (\\Flagged) MODSEQ", " ".join(u))
        # With known UIDs: only those are reported.
        yield c.cmd("UNSELECT")
        lines = yield c.cmd(f"SELECT INBOX (QRESYNC ({uv} {modseq} 3:5))")
        self.assertFalse(any("VANISHED" in x for x in untagged(lines)))
        # Wrong UIDVALIDITY: a plain SELECT.
        yield c.cmd("UNSELECT")
        lines = yield c.cmd(f"SELECT INBOX (QRESYNC ({uv + 1} {modseq}))")
        self.assertFalse(any("VANISHED" in x or "FETCH" in x for x in untagged(lines)))

    @defer.inlineCallbacks
    def test_uid_fetch_vanished(self):
        c, uv, modseq = yield self.state()
        yield c.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
        yield c.cmd("EXPUNGE")
        lines = yield c.cmd(f"UID FETCH 1:* FLAGS (CHANGEDSINCE {modseq} VANISHED)")
        self.assertIn("VANISHED (EARLIER) 1", untagged(lines))

    @defer.inlineCallbacks
    def test_closed_on_reselect(self):
        c, uv, modseq = yield self.state()
        lines = yield c.cmd("SELECT Archive")
        self.assertEqual(untagged(lines)[0], "OK [CLOSED] previous mailbox closed")
