"""Sessions side by side (what imaptest's stress run checks): a message expunged by one
session stays readable for another until that one has been told (RFC 9051 7.5.1,
RFC 2180 4.1; moxtw.store.hold), crash-safely; flag changes reach a session without its
MODSEQ ever going down for a message (RFC 7162 3.1)."""

import os
import re

from twisted.internet import defer, threads

from moxtw import store
from moxtw.store.account import message_file
from moxtw.store.verify import verify_account
from moxtw.test.imaphelper import IMAPSessionTest, tagged, untagged


def modseqs(lines, uid):
    out = []
    for line in untagged(lines, "FETCH"):
        if re.search(rf"\bUID {uid}\b", line):
            m = re.search(r"MODSEQ \((\d+)\)", line)
            if m:
                out.append(int(m.group(1)))
    return out


class HeldExpungeTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver_n(3)

    @defer.inlineCallbacks
    def expunge_2_elsewhere(self):
        b = yield self.logged_in(select="INBOX")
        yield b.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
        lines = yield b.cmd("EXPUNGE")
        self.assertIn("* 2 EXPUNGE", [x.decode() for x in lines])
        return b

    @defer.inlineCallbacks
    def test_fetch_after_other_session_expunged(self):
        a = yield self.logged_in(select="INBOX")
        msgs = yield self.acc.messages((yield self.acc.mailbox("INBOX")).id)
        path = self.acc.message_path(msgs[1].id)
        yield self.expunge_2_elsewhere()
        # FETCH does not tell of expunges (RFC 9051 7.4.1): message 2 is still there for
        # this session, and its body, flags and envelope are readable.
        lines = yield a.cmd("FETCH 2 (UID FLAGS ENVELOPE BODY.PEEK[])")
        self.assertOK(lines)
        fetched = b"\r\n".join(lines)
        self.assertIn(b"* 2 FETCH (UID 2 ", fetched)
        self.assertIn(b"Subject: msg 2", fetched)
        self.assertIn(b"\\Deleted", fetched)
        lines = yield a.cmd("FETCH 1:3 (FLAGS)")  # the index path, three answers
        self.assertEqual(len(untagged(lines, "FETCH")), 3)
        self.assertTrue(os.path.exists(path))
        # NOOP tells it; then nothing holds the file any more.
        lines = yield a.cmd("NOOP")
        self.assertIn("2 EXPUNGE", untagged(lines))
        yield self.acc.removals_done()
        self.assertFalse(os.path.exists(path))
        self.assertEqual(len(self.acc.hold), 0)

    @defer.inlineCallbacks
    def test_logout_and_unselect_let_go(self):
        a = yield self.logged_in(select="INBOX")
        c = yield self.logged_in(select="INBOX")
        msgs = yield self.acc.messages((yield self.acc.mailbox("INBOX")).id)
        path = self.acc.message_path(msgs[1].id)
        yield self.expunge_2_elsewhere()
        yield a.cmd("UNSELECT")
        yield self.acc.removals_done()
        self.assertTrue(os.path.exists(path))  # c still shows it
        c.proto.connectionLost(None)
        yield self.acc.removals_done()
        self.assertFalse(os.path.exists(path))
        self.assertEqual(len(self.acc.hold), 0)

    @defer.inlineCallbacks
    def test_moved_away_still_fetchable(self):
        a = yield self.logged_in(select="INBOX")
        b = yield self.logged_in(select="INBOX")
        lines = yield b.cmd("MOVE 2 Archive")
        self.assertOK(lines)
        lines = yield a.cmd("FETCH 2 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        self.assertOK(lines)
        self.assertIn(b"Subject: msg 2", b"\r\n".join(lines))
        yield a.cmd("NOOP")
        yield self.acc.removals_done()
        lines = yield b.cmd("STATUS Archive (MESSAGES)")
        self.assertIn("MESSAGES 1", untagged(lines)[0])
        # A move keeps the file: the message lives on in Archive.
        yield b.cmd("SELECT Archive")
        lines = yield b.cmd("FETCH 1 BODY.PEEK[]")
        self.assertIn(b"Subject: msg 2", b"\r\n".join(lines))

    @defer.inlineCallbacks
    def test_crash_while_held_cleaned_at_open(self):
        a = yield self.logged_in(select="INBOX")
        msgs = yield self.acc.messages((yield self.acc.mailbox("INBOX")).id)
        path = self.acc.message_path(msgs[1].id)
        yield self.expunge_2_elsewhere()
        self.assertTrue(os.path.exists(path))
        self.assertEqual(len(self.acc.hold), 1)
        del a
        # The process "stops" with the file held: the account opened anew removes it.
        data_dir = self.store.data_dir
        yield self.store.close()
        again = store.Store(data_dir)
        self.addCleanup(again.close)
        acc = yield again.open_account("mjl")
        self.assertFalse(os.path.exists(path))
        self.assertFalse(os.path.exists(message_file(acc.maildir, msgs[1].id)))
        remaining = yield acc.messages((yield acc.mailbox("INBOX")).id)
        self.assertEqual([m.uid for m in remaining], [1, 3])
        for m in remaining:
            self.assertTrue(os.path.exists(acc.message_path(m.id)))


    @defer.inlineCallbacks
    def test_verifydata_knows_held_files(self):
        a = yield self.logged_in(select="INBOX")
        yield self.acc.indexing_done()  # else verifydata notes texts still to make too
        yield self.expunge_2_elsewhere()
        report = yield threads.deferToThread(verify_account, self.acc.path)
        self.assertEqual(report.errors, [])
        self.assertEqual(len(report.notes), 1, report.notes)
        self.assertIn("expunged, kept while IMAP sessions may fetch it", report.notes[0])
        yield a.cmd("NOOP")
        yield self.acc.removals_done()
        report = yield threads.deferToThread(verify_account, self.acc.path)
        self.assertEqual((report.errors, report.notes), ([], []))


class ModseqOrderTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver_n(3)

    @defer.inlineCallbacks
    def test_fetch_newer_than_queued_changes(self):
        a = yield self.logged_in(enable="CONDSTORE", select="INBOX")
        b = yield self.logged_in(select="INBOX")
        yield b.cmd("STORE 2 +FLAGS (\\Seen)")
        yield b.cmd("STORE 2 +FLAGS (\\Flagged)")
        # a's FETCH reads the newest state; the two queued changes are older than what
        # it was sent and must not follow it with lower MODSEQs.
        for cmd in ("FETCH 2 (FLAGS)", "FETCH 2 (ENVELOPE)"):
            lines = yield a.cmd(cmd.replace("(FLAGS)", "(UID FLAGS)").replace("(ENVELOPE)", "(UID ENVELOPE)"))
            seen = modseqs(lines, 2)
            self.assertEqual(seen, sorted(seen), lines)
            yield b.cmd("STORE 2 -FLAGS (\\Flagged)")
            yield b.cmd("STORE 2 +FLAGS (\\Answered)")
        lines = yield a.cmd("NOOP")
        seen = modseqs(lines, 2)
        self.assertEqual(seen, sorted(seen), lines)

    @defer.inlineCallbacks
    def test_silent_store_gets_whole_state(self):
        """Another session's older change queued behind our STORE .SILENT: we get the
        state after both, not the older one alone."""
        a = yield self.logged_in(select="INBOX")
        b = yield self.logged_in(select="INBOX")
        yield b.cmd("STORE 2 +FLAGS (\\Flagged)")
        lines = yield a.cmd("STORE 2 +FLAGS.SILENT (\\Seen)")
        self.assertOK(lines)
        fetched = untagged(lines, "FETCH")
        self.assertEqual(len(fetched), 1, lines)
        self.assertIn("\\Seen", fetched[0])
        self.assertIn("\\Flagged", fetched[0])
        # And it stays right afterwards.
        lines = yield a.cmd("FETCH 2 FLAGS")
        self.assertIn("\\Seen", untagged(lines)[0])
        self.assertIn("\\Flagged", untagged(lines)[0])
        self.assertTrue(tagged(lines).startswith("OK"))
