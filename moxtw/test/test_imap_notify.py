"""NOTIFY (RFC 5465): notifications between commands, without IDLE, for the selected
mailbox, other mailboxes and mailbox events; refused forms; NOTIFY NONE.

Pushed notifications are sent from a call scheduled on the factory's clock, so the tests
advance it and wait for the line; "not sent" is checked with a NOOP, whose output would
carry anything pending."""

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, tagged, untagged


class NotifyTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def pushed(self, c, prefix, action):
        """Run ``action`` (returns a Deferred) and wait for a line starting with
        ``prefix`` that comes without a command."""
        d = c.wait_line(prefix)
        yield action()
        self.clock.advance(0)
        lines = yield d
        return lines

    @defer.inlineCallbacks
    def test_capability_and_initial_status(self):
        c = yield self.logged_in()
        lines = yield c.cmd("CAPABILITY")
        self.assertIn(" NOTIFY", untagged(lines, "CAPABILITY")[0])
        yield self.acc.create_mailbox("Box2")
        yield self.deliver("one", mailbox="Box2")
        mb = yield self.acc.mailbox("Box2")
        lines = yield c.cmd("NOTIFY SET STATUS (mailboxes Box2 (MessageNew MessageExpunge))")
        self.assertOK(lines)
        self.assertEqual(untagged(lines, "STATUS"), [f"STATUS Box2 (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {mb.uidvalidity})"])
        lines = yield c.cmd("NOTIFY SET STATUS (mailboxes Box2 (FlagChange))")
        self.assertEqual(untagged(lines, "STATUS"), [f"STATUS Box2 (UIDVALIDITY {mb.uidvalidity} HIGHESTMODSEQ {mb.modseq})"])
        # Without STATUS: none.
        lines = yield c.cmd("NOTIFY SET (mailboxes Box2 (MessageNew MessageExpunge FlagChange))")
        self.assertEqual(untagged(lines, "STATUS"), [])

    @defer.inlineCallbacks
    def test_other_mailbox_status_pushed(self):
        yield self.acc.create_mailbox("Lists/a")
        yield self.acc.create_mailbox("Other")
        c = yield self.logged_in(select="INBOX")
        self.assertOK((yield c.cmd("NOTIFY SET (subtree Lists (MessageNew MessageExpunge)) (personal NONE)")))
        lines = yield self.pushed(c, b"* STATUS", lambda: self.deliver("list mail", mailbox="Lists/a"))
        mb = yield self.acc.mailbox("Lists/a")
        self.assertEqual(lines[-1], b"* STATUS Lists/a (MESSAGES 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 1)" % mb.uidvalidity)
        # Not watched (personal NONE) and the selected mailbox's own updates: no STATUS.
        yield self.deliver("other mail", mailbox="Other")
        yield self.deliver("inbox mail")
        self.clock.advance(0)
        lines = yield c.cmd("NOOP")
        self.assertEqual(untagged(lines, "STATUS"), [])
        self.assertEqual(untagged(lines, "EXISTS"), ["1 EXISTS"])

    @defer.inlineCallbacks
    def test_selected_pushed_with_fetch_attributes(self):
        yield self.deliver("first")
        c = yield self.logged_in(select="INBOX")
        other = yield self.logged_in(select="INBOX")
        lines = yield c.cmd("NOTIFY SET (selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) "
                            "MessageExpunge FlagChange))")
        self.assertOK(lines)
        start = len(c.out)
        lines = yield self.pushed(c, b")", lambda: self.deliver("second"))
        text = c.out[start:]
        self.assertIn(b"* 2 EXISTS\r\n", text)
        self.assertIn(b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {", text)
        self.assertIn(b"Subject: second", text)
        # A notification does not mark the message read.
        [m] = [m for m in (yield self.acc.messages((yield self.acc.mailbox("Inbox")).id)) if m.uid == 2]
        self.assertNotIn("\\Seen", m.flags)
        # Flags and expunges by another session come without a command too.
        lines = yield self.pushed(c, b"* 1 FETCH", lambda: other.cmd("STORE 1 +FLAGS (\\Flagged)"))
        self.assertIn(b"\\Flagged", lines[-1])
        yield other.cmd("STORE 1 +FLAGS (\\Deleted)")
        lines = yield self.pushed(c, b"* 1 EXPUNGE", lambda: other.cmd("EXPUNGE"))
        lines = yield c.cmd("FETCH 1 (UID)")
        self.assertEqual(untagged(lines, "FETCH"), ["1 FETCH (UID 2)"])

    @defer.inlineCallbacks
    def test_selected_delayed_holds_expunge(self):
        yield self.deliver("first")
        yield self.deliver("second")
        c = yield self.logged_in(select="INBOX")
        other = yield self.logged_in(select="INBOX")
        self.assertOK((yield c.cmd("NOTIFY SET (selected-delayed (MessageNew MessageExpunge))")))
        yield other.cmd("STORE 1 +FLAGS (\\Deleted)")
        yield other.cmd("EXPUNGE")
        self.clock.advance(0)
        self.assertNotIn(b"EXPUNGE", c.out.split(b"NOTIFY completed")[-1])
        # FETCH may not report it (RFC 9051 7.5.1); NOOP does.
        lines = yield c.cmd("FETCH 1 (UID)")
        self.assertEqual(untagged(lines, "EXPUNGE"), [])
        lines = yield c.cmd("NOOP")
        self.assertEqual(untagged(lines, "EXPUNGE"), ["1 EXPUNGE"])

    @defer.inlineCallbacks
    def test_mailbox_and_subscription_events(self):
        c = yield self.logged_in()
        other = yield self.logged_in()
        self.assertOK((yield c.cmd("NOTIFY SET (personal (MailboxName SubscriptionChange MailboxMetadataChange))")))
        lines = yield self.pushed(c, b"* LIST", lambda: other.cmd("CREATE Fresh"))
        self.assertEqual(lines[-1], b'* LIST () "/" Fresh')
        lines = yield self.pushed(c, b"* LIST", lambda: other.cmd("RENAME Fresh Renamed"))
        self.assertEqual(lines[-1], b'* LIST () "/" Renamed ("OLDNAME" (Fresh))')
        lines = yield self.pushed(c, b"* LIST", lambda: other.cmd("SUBSCRIBE Renamed"))
        self.assertEqual(lines[-1], b'* LIST (\\Subscribed) "/" Renamed')
        lines = yield self.pushed(c, b"* METADATA", lambda: other.cmd('SETMETADATA Renamed (/private/comment "x")'))
        self.assertEqual(lines[-1], b"* METADATA Renamed /private/comment")
        lines = yield self.pushed(c, b"* LIST", lambda: other.cmd("DELETE Renamed"))
        self.assertEqual(lines[-1], b'* LIST (\\NonExistent) "/" Renamed')
        # Its own changes are not echoed back.
        lines = yield c.cmd("CREATE Mine")
        self.clock.advance(0)
        lines = yield c.cmd("NOOP")
        self.assertNotIn(b'"/" Mine', c.out)

    @defer.inlineCallbacks
    def test_none_stops_notifications(self):
        yield self.acc.create_mailbox("Box2")
        c = yield self.logged_in()
        self.assertOK((yield c.cmd("NOTIFY SET (mailboxes Box2 (MessageNew MessageExpunge))")))
        self.assertOK((yield c.cmd("NOTIFY NONE")))
        yield self.deliver("late", mailbox="Box2")
        self.clock.advance(0)
        lines = yield c.cmd("NOOP")
        self.assertEqual(untagged(lines, "STATUS"), [])

    @defer.inlineCallbacks
    def test_refused(self):
        c = yield self.logged_in()
        lines = yield c.cmd("NOTIFY SET (personal (AnnotationChange))")
        self.assertNO(lines, "BADEVENT")
        self.assertIn("MessageNew", tagged(lines))
        for bad in (
            "NOTIFY SET (selected (MessageNew MessageExpunge)) (selected-delayed (MessageNew MessageExpunge))",
            "NOTIFY SET (selected (MailboxName))",
            "NOTIFY SET (personal (MessageNew (UID) MessageExpunge))",
            "NOTIFY SET (nowhere (MessageNew))",
            "NOTIFY SET (personal (MessageNew)",
            "NOTIFY SET",
            "NOTIFY SET ()",
            "NOTIFY SET (mailboxes (MessageNew))",
            "NOTIFY SET (personal (MessageNew (NOSUCHATT) MessageExpunge))",
            "NOTIFY BOGUS",
            "NOTIFY SET " + " ".join(["(personal NONE)"] * 200),
        ):
            lines = yield c.cmd(bad)
            self.assertTrue(tagged(lines).startswith(("BAD", "NO")), (bad, lines))
        # Not before login.
        fresh = self.client()
        lines = yield fresh.cmd("NOTIFY NONE")
        self.assertBAD(lines)
        # The session still works.
        self.assertOK((yield c.cmd("NOOP")))

    @defer.inlineCallbacks
    def test_connection_closed_with_notifications_waiting(self):
        yield self.acc.create_mailbox("Box2")
        c = yield self.logged_in()
        self.assertOK((yield c.cmd("NOTIFY SET (personal (MessageNew MessageExpunge))")))
        yield self.deliver("x", mailbox="Box2")
        c.proto.connectionLost(None)
        self.clock.advance(0)
        yield self.deliver("y", mailbox="Box2")
        self.clock.advance(0)
