"""UIDONLY (RFC 9586): once enabled, no message sequence numbers either way: commands
that use them are refused with BAD [UIDREQUIRED], FETCH responses come as
"* uid UIDFETCH (...)" and expunges as VANISHED."""

import re

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, tagged, untagged


class UIDOnlyTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver_n(3)

    @defer.inlineCallbacks
    def uidonly(self):
        c = yield self.logged_in()
        lines = yield c.cmd("ENABLE IMAP4rev2 UIDONLY")  # IMAP4rev2: no \\Recent in FLAGS
        self.assertIn("ENABLED IMAP4REV2 UIDONLY", untagged(lines))
        lines = yield c.cmd("SELECT INBOX")
        self.assertOK(lines)
        self.assertFalse([x for x in untagged(lines) if "[UNSEEN" in x], lines)
        return c

    @defer.inlineCallbacks
    def test_sequence_number_commands_refused(self):
        c = yield self.uidonly()
        self.assertIn("UIDONLY", "".join(untagged((yield c.cmd("CAPABILITY")))))
        for command in ("FETCH 1 FLAGS", "STORE 1 +FLAGS (\\Seen)", "SEARCH ALL", "COPY 1 Trash",
                        "MOVE 1 Trash", "SORT (DATE) UTF-8 ALL", "THREAD REFERENCES UTF-8 ALL",
                        "UID SEARCH 1:2", "UID SEARCH OR 1 SEEN", "UID SORT (DATE) UTF-8 2", "ESEARCH 1"):
            lines = yield c.cmd(command)
            self.assertTrue(tagged(lines).startswith("BAD [UIDREQUIRED]"), (command, lines))
        # Nothing was done: message 1 is still unseen and in INBOX.
        lines = yield c.cmd("UID SEARCH SEEN", tag="S")
        self.assertEqual(untagged(lines), ['ESEARCH (TAG "S") UID'])

    @defer.inlineCallbacks
    def test_uidfetch_responses(self):
        c = yield self.uidonly()
        lines = yield c.cmd("UID FETCH 1:* (UID FLAGS)")
        self.assertEqual(untagged(lines), ["1 UIDFETCH (FLAGS ())", "2 UIDFETCH (FLAGS ())", "3 UIDFETCH (FLAGS ())"])
        lines = yield c.cmd("UID FETCH 2 (BODY.PEEK[HEADER.FIELDS (Subject)])")
        self.assertTrue(lines[0].startswith(b"* 2 UIDFETCH (BODY[HEADER.FIELDS (SUBJECT)] {"), lines)
        self.assertNotIn(b"UID 2", lines[0])
        lines = yield c.cmd("UID STORE 3 +FLAGS (\\Flagged)")
        self.assertEqual(untagged(lines, "UIDFETCH"), ["3 UIDFETCH (FLAGS (\\Flagged))"])
        # Another session's change arrives the same way.
        other = yield self.logged_in(select="INBOX")
        yield other.cmd("STORE 1 +FLAGS (\\Seen)")
        lines = yield c.cmd("NOOP")
        self.assertEqual(untagged(lines, "UIDFETCH"), ["1 UIDFETCH (FLAGS (\\Seen))"])
        lines = yield c.cmd("UID SEARCH SEEN")
        self.assertTrue(any(re.search(r"ESEARCH .* UID ALL 1$", x) for x in untagged(lines)), lines)

    @defer.inlineCallbacks
    def test_expunges_are_vanished(self):
        c = yield self.uidonly()
        yield c.cmd("UID STORE 2 +FLAGS.SILENT (\\Deleted)")
        lines = yield c.cmd("UID EXPUNGE 2")
        self.assertEqual(untagged(lines), ["VANISHED 2"])
        yield c.cmd("UID MOVE 3 Trash")
        lines = yield c.cmd("NOOP")
        other = yield self.logged_in(select="INBOX")
        yield other.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
        yield other.cmd("EXPUNGE")
        lines = yield c.cmd("NOOP")
        self.assertIn("VANISHED 1", untagged(lines))
        self.assertFalse([x for x in untagged(lines) if x.endswith("EXPUNGE")], lines)

    @defer.inlineCallbacks
    def test_without_uidonly_unchanged(self):
        c = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("FETCH 1 (FLAGS)")
        self.assertEqual(untagged(lines), ["1 FETCH (FLAGS (\\Recent))"])
