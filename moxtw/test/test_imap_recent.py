"""\\Recent for IMAP4rev1 sessions (RFC 3501 2.3.2, 6.3.1, 6.4.4), absent for IMAP4rev2."""

from twisted.internet import defer
from twisted.trial import unittest

from moxtw.store import changes as ch
from moxtw.store import recent
from moxtw.test.imaphelper import IMAPSessionTest, untagged


class TrackerTests(unittest.TestCase):
    def test_claims(self):
        t = recent.RecentTracker()
        t.changed([ch.ChangeAddUID(mailbox_id=1, uid=u, modseq=u, flags=()) for u in (1, 2, 3)])
        self.assertEqual(t.count(1), 3)
        self.assertEqual(t.peek(1), {1, 2, 3})
        self.assertTrue(t.claim(1, 2, take=False))  # EXAMINE: still unclaimed
        self.assertTrue(t.claim(1, 2))
        self.assertFalse(t.claim(1, 2))  # only the first session gets it
        self.assertFalse(t.claim(1, 9))
        t.changed([ch.ChangeRemoveUIDs(mailbox_id=1, uids=(3,), modseq=5)])
        self.assertEqual(t.claim_all(1), {1})
        self.assertEqual(t.count(1), 0)
        self.assertEqual(t.claim_all(1), set())

    def test_bounded(self):
        self.patch(recent, "MAX_UNCLAIMED", 5)
        t = recent.RecentTracker()
        t.changed([ch.ChangeAddUID(mailbox_id=1, uid=u, modseq=u, flags=()) for u in range(1, 11)])
        self.assertEqual(t.peek(1), {6, 7, 8, 9, 10})
        t.changed([ch.ChangeMailboxRemove(mailbox_id=1, name="x")])
        self.assertEqual(t.count(1), 0)


class RecentSessionTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def test_one_session_gets_each_message(self):
        yield self.deliver("one")
        a = yield self.logged_in()
        lines = yield a.cmd("EXAMINE INBOX")  # looks without claiming
        self.assertIn("1 RECENT", untagged(lines))
        lines = yield a.cmd("SELECT INBOX")
        self.assertIn("1 RECENT", untagged(lines))
        b = yield self.logged_in()
        lines = yield b.cmd("SELECT INBOX")
        self.assertIn("0 RECENT", untagged(lines))  # a claimed it
        lines = yield b.cmd("STATUS Archive (RECENT)")
        self.assertIn("STATUS Archive (RECENT 0)", untagged(lines))
        # A new message: recent in exactly one of the two sessions.
        yield self.deliver("two")
        la = yield a.cmd("NOOP")
        lb = yield b.cmd("NOOP")
        self.assertIn("2 EXISTS", untagged(la))
        self.assertIn("2 EXISTS", untagged(lb))
        recents = [x for x in untagged(la) + untagged(lb) if x.endswith(" RECENT")]
        self.assertEqual(sorted(recents), ["0 RECENT", "2 RECENT"], recents)
        holder = a if "2 RECENT" in untagged(la) else b
        lines = yield holder.cmd("SEARCH RECENT")
        self.assertIn("SEARCH 1 2" if holder is a else "SEARCH 2", untagged(lines))
        lines = yield holder.cmd("FETCH 2 FLAGS")
        self.assertIn("2 FETCH (FLAGS (\\Recent))", untagged(lines))
        lines = yield holder.cmd("STORE 2 +FLAGS (\\Seen)")
        lines = yield holder.cmd("SEARCH NEW")
        self.assertIn("SEARCH" if holder is b else "SEARCH 1", untagged(lines))
        lines = yield holder.cmd("SEARCH OLD")
        self.assertIn("SEARCH" if holder is a else "SEARCH 1", untagged(lines))

    @defer.inlineCallbacks
    def test_status_counts_unclaimed(self):
        yield self.deliver("one", mailbox="Archive")
        yield self.deliver("two", mailbox="Archive")
        c = yield self.logged_in()
        lines = yield c.cmd("STATUS Archive (MESSAGES RECENT)")
        self.assertIn("STATUS Archive (MESSAGES 2 RECENT 2)", untagged(lines))
        yield c.cmd("SELECT Archive")
        lines = yield c.cmd("STATUS Archive (RECENT)")
        self.assertIn("STATUS Archive (RECENT 0)", untagged(lines))

    @defer.inlineCallbacks
    def test_expunged_not_recent(self):
        yield self.deliver("one")
        yield self.deliver("two")
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
        yield c.cmd("EXPUNGE")
        lines = yield c.cmd("SEARCH RECENT")
        self.assertIn("SEARCH 1", untagged(lines))
        lines = yield c.cmd("FETCH 1 FLAGS")
        self.assertIn("1 FETCH (FLAGS (\\Recent))", untagged(lines))

    @defer.inlineCallbacks
    def test_rev2_has_none(self):
        yield self.deliver("one")
        c = yield self.logged_in(select="INBOX", enable="IMAP4rev2")
        lines = yield c.cmd("FETCH 1 FLAGS")
        self.assertIn("1 FETCH (FLAGS ())", untagged(lines))
        yield self.deliver("two")
        lines = yield c.cmd("NOOP")
        self.assertFalse(any("RECENT" in x for x in untagged(lines)), lines)
        # The rev2 session did not take it: a rev1 session still sees it as recent.
        d = yield self.logged_in()
        lines = yield d.cmd("SELECT INBOX")
        self.assertIn("2 RECENT", untagged(lines))
