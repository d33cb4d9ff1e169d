"""STORE / UID STORE (RFC 9051 6.4.6) including .SILENT and keywords."""

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, untagged


class StoreTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        yield self.deliver_n(3)

    @defer.inlineCallbacks
    def test_modes(self):
        # IMAP4rev2: no \Recent in the answers (RFC 9051 drops it).
        c = yield self.logged_in(select="INBOX", enable="IMAP4rev2")
        lines = yield c.cmd("STORE 1 FLAGS (\\Seen \\Flagged)")
        self.assertEqual(untagged(lines), ["1 FETCH (FLAGS (\\Seen \\Flagged))"])
        lines = yield c.cmd("STORE 1 -FLAGS \\Seen")
        self.assertEqual(untagged(lines), ["1 FETCH (FLAGS (\\Flagged))"])
        lines = yield c.cmd("STORE 1:2 +FLAGS (\\Flagged Todo)")
        self.assertEqual(untagged(lines, "FETCH"), ["1 FETCH (FLAGS (\\Flagged todo))", "2 FETCH (FLAGS (\\Flagged todo))"])
        # A new keyword is announced with FLAGS (RFC 9051 7.3.5).
        self.assertIn("FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft todo)", untagged(lines))
        lines = yield c.cmd("STORE 1 +FLAGS.SILENT (\\Answered)")
        self.assertEqual(untagged(lines), [])
        lines = yield c.cmd("UID STORE 3 +FLAGS (\\Draft)")
        self.assertEqual(untagged(lines), ["3 FETCH (UID 3 FLAGS (\\Draft))"])
        # Unchanged flags still answered (RFC 9051 6.4.6).
        lines = yield c.cmd("UID STORE 3 +FLAGS (\\Draft)")
        self.assertEqual(untagged(lines), ["3 FETCH (UID 3 FLAGS (\\Draft))"])
        lines = yield c.cmd("STORE 1:* FLAGS ()")
        self.assertEqual(len(untagged(lines)), 3)

    @defer.inlineCallbacks
    def test_bad(self):
        c = yield self.logged_in(select="INBOX")
        # \Recent cannot be stored (RFC 3501 2.3.2); the store ignores it.
        self.assertOK((yield c.cmd("STORE 1 +FLAGS (\\Recent)")))
        self.assertBAD((yield c.cmd("STORE 1 +FLAGS (\\Bogus)")))
        self.assertBAD((yield c.cmd("STORE 1 FOO (\\Seen)")))
        self.assertBAD((yield c.cmd("STORE 9 +FLAGS (\\Seen)")))
        self.assertBAD((yield c.cmd("STORE 1 +FLAGS (\\Seen")))
        self.assertOK((yield c.cmd("UID STORE 9 +FLAGS (\\Seen)")))

    @defer.inlineCallbacks
    def test_store_on_message_expunged_elsewhere(self):
        c = yield self.logged_in(select="INBOX")
        other = yield self.logged_in(select="INBOX")
        yield other.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
        yield other.cmd("EXPUNGE")
        lines = yield c.cmd("STORE 1:3 +FLAGS (\\Seen)")
        self.assertTrue(lines[-1].split(b" ")[1] in (b"OK", b"NO"), lines)
        self.assertEqual(untagged(lines, "EXPUNGE"), [])
        lines = yield c.cmd("NOOP")
        self.assertEqual(untagged(lines, "EXPUNGE"), ["2 EXPUNGE"])

    @defer.inlineCallbacks
    def test_keyword_from_other_session_announced_first(self):
        """RFC 9051 7.3.5: a keyword reaches a session in FLAGS before any FETCH uses it."""
        c = yield self.logged_in(select="INBOX")
        other = yield self.logged_in(select="INBOX")
        yield other.cmd("STORE 2 +FLAGS.SILENT (NewWord)")
        lines = yield c.cmd("NOOP")
        u = untagged(lines)
        flags = [i for i, x in enumerate(u) if x.startswith("FLAGS (") and "newword" in x.lower()]
        fetch = [i for i, x in enumerate(u) if "FETCH" in x and "newword" in x.lower()]
        self.assertTrue(flags and fetch and flags[0] < fetch[0], u)
        # Announced once: a second message with it brings no new FLAGS.
        yield other.cmd("STORE 3 +FLAGS.SILENT (NewWord)")
        lines = yield c.cmd("NOOP")
        self.assertFalse(any(x.startswith("FLAGS (") for x in untagged(lines)), lines)
