"""IDLE (RFC 2177) and untagged updates from other sessions (RFC 9051 7, 7.5.1):
EXISTS, EXPUNGE/VANISHED, FETCH FLAGS, FLAGS; when they may be sent."""

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, message, tagged, untagged


class IdleTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def idle(self, c):
        d = c.wait_line(b"+ ")
        c.send(b"idle1 IDLE\r\n")
        yield d

    @defer.inlineCallbacks
    def done(self, c):
        lines = yield c.raw(b"DONE\r\n", "idle1")
        self.assertOK(lines)
        return lines

    @defer.inlineCallbacks
    def test_idle_exists_expunge_flags_at_once(self):
        yield self.deliver_n(2)
        c = yield self.logged_in(select="INBOX")
        other = yield self.logged_in(select="INBOX")
        yield self.idle(c)
        d = c.wait_line(b"* 3 EXISTS")
        yield self.deliver("new")
        yield d
        d = c.wait_line(b"* 1 FETCH")
        yield other.cmd("STORE 1 +FLAGS (\\Flagged)")
        lines = yield d
        self.assertEqual(lines[-1], b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))")
        d = c.wait_line(b"* 1 EXPUNGE")
        yield other.cmd("STORE 1 +FLAGS (\\Deleted)")
        yield other.cmd("EXPUNGE")
        yield d
        yield self.done(c)
        lines = yield c.cmd("FETCH 1:* UID")
        self.assertEqual(untagged(lines, "FETCH"), ["1 FETCH (UID 2)", "2 FETCH (UID 3)"])

    @defer.inlineCallbacks
    def test_idle_not_done(self):
        c = yield self.logged_in(select="INBOX")
        yield self.idle(c)
        lines = yield c.raw(b"NOOP\r\n", "idle1")
        self.assertBAD(lines)
        self.assertOK((yield c.cmd("NOOP")))

    @defer.inlineCallbacks
    def test_idle_done_case_insensitive_and_pipelined(self):
        c = yield self.logged_in(select="INBOX")
        d = c.wait_tagged("n2")
        c.send(b"n1 IDLE\r\ndone\r\nn2 NOOP\r\n")
        lines = yield d
        self.assertIn(b"n1 OK IDLE terminated", lines)

    @defer.inlineCallbacks
    def test_idle_in_authenticated_state(self):
        c = yield self.logged_in()
        yield self.idle(c)
        yield self.deliver("x")
        lines = yield self.done(c)
        self.assertEqual(lines, [b"idle1 OK IDLE terminated"])

    @defer.inlineCallbacks
    def test_idle_sends_pending_first(self):
        c = yield self.logged_in(select="INBOX")
        yield self.deliver("x")
        d = c.wait_line(b"* 1 EXISTS")
        c.send(b"idle1 IDLE\r\n")
        yield d
        yield self.done(c)


class UpdateTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def test_exists_after_any_command(self):
        c = yield self.logged_in(select="INBOX")
        yield self.deliver("x")
        lines = yield c.cmd("FETCH 1:* UID")  # the message is not known yet: BAD
        self.assertBAD(lines)
        lines = yield c.cmd("NOOP")
        self.assertIn("1 EXISTS", untagged(lines))
        lines = yield c.cmd("FETCH 1 UID")
        self.assertIn("1 FETCH (UID 1)", untagged(lines))

    @defer.inlineCallbacks
    def test_no_expunge_after_fetch_store_search(self):
        """RFC 9051 7.5.1: no EXPUNGE during FETCH, STORE, SEARCH; it waits."""
        yield self.deliver_n(3)
        c = yield self.logged_in(select="INBOX")
        other = yield self.logged_in(select="INBOX")
        yield other.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)")
        yield other.cmd("EXPUNGE")
        for cmd in ("FETCH 2 UID", "STORE 2 +FLAGS (\\Seen)", "SEARCH ALL", "SORT (ARRIVAL) UTF-8 ALL",
                    "THREAD ORDEREDSUBJECT UTF-8 ALL"):
            lines = yield c.cmd(cmd)
            self.assertOK(lines)
            self.assertEqual(untagged(lines, "EXPUNGE"), [], (cmd, lines))
        # Sequence numbers did not change: message 3 is still UID 3.
        lines = yield c.cmd("FETCH 3 UID")
        self.assertIn("3 FETCH (UID 3)", untagged(lines))
        lines = yield c.cmd("SEARCH ALL")
        self.assertIn("SEARCH 1 3", untagged(lines))  # the expunged message matches nothing
        # UID commands may send them (RFC 9051 7.5.1 note).
        lines = yield c.cmd("UID FETCH 1 UID")
        self.assertEqual(untagged(lines, "EXPUNGE"), ["2 EXPUNGE"])
        lines = yield c.cmd("FETCH 2 UID")
        self.assertIn("2 FETCH (UID 3)", untagged(lines))

    @defer.inlineCallbacks
    def test_expunge_after_noop(self):
        yield self.deliver_n(3)
        c = yield self.logged_in(select="INBOX")
        other = yield self.logged_in(select="INBOX")
        yield other.cmd("STORE 1,3 +FLAGS.SILENT (\\Deleted)")
        yield other.cmd("EXPUNGE")
        lines = yield c.cmd("NOOP")
        # Highest first or in an order that keeps numbers valid: 3 then 1.
        self.assertEqual(untagged(lines, "EXPUNGE"), ["3 EXPUNGE", "1 EXPUNGE"])
        lines = yield c.cmd("FETCH 1:* UID")
        self.assertEqual(untagged(lines, "FETCH"), ["1 FETCH (UID 2)"])

    @defer.inlineCallbacks
    def test_vanished_with_qresync(self):
        yield self.deliver_n(3)
        c = yield self.logged_in(enable="QRESYNC", select="INBOX")
        other = yield self.logged_in(select="INBOX")
        yield other.cmd("STORE 1,3 +FLAGS.SILENT (\\Deleted)")
        yield other.cmd("EXPUNGE")
        lines = yield c.cmd("NOOP")
        self.assertEqual(untagged(lines, "EXPUNGE"), [])
        self.assertIn("VANISHED 1,3", untagged(lines))

    @defer.inlineCallbacks
    def test_add_then_expunge_announces_exists_first(self):
        """A message delivered and expunged between two commands: the client must not
        get an EXPUNGE (or FETCH) for a sequence number it never heard of."""
        yield self.deliver_n(1)
        c = yield self.logged_in(select="INBOX")
        other = yield self.logged_in(select="INBOX")
        yield self.deliver("new")
        yield other.cmd("NOOP")
        yield other.cmd("STORE 2 +FLAGS (\\Deleted)")
        yield other.cmd("EXPUNGE")
        lines = yield c.cmd("NOOP")
        u = untagged(lines)
        # Either nothing, or EXISTS 2 before the EXPUNGE and FETCH of message 2.
        count = 1
        for x in u:
            n, word = x.split(" ", 2)[:2]
            if word == "EXISTS":
                count = int(n)
            elif word in ("EXPUNGE", "FETCH"):
                self.assertLessEqual(int(n), count, u)
                if word == "EXPUNGE":
                    count -= 1
        self.assertEqual(count, 1, u)

    @defer.inlineCallbacks
    def test_flags_and_keywords_from_other_session(self):
        yield self.deliver_n(1)
        c = yield self.logged_in(select="INBOX")
        other = yield self.logged_in(select="INBOX")
        yield other.cmd("STORE 1 +FLAGS (\\Answered $Forwarded)")
        lines = yield c.cmd("NOOP")
        u = untagged(lines)
        # Keywords are case-insensitive (RFC 9051 2.3.2); the store keeps them lower case.
        self.assertIn("FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $Forwarded)", u)
        self.assertIn("1 FETCH (UID 1 FLAGS (\\Answered $Forwarded \\Recent))", u)
        # The session's own STORE does not come back as an update.
        yield c.cmd("STORE 1 -FLAGS (\\Answered)")
        lines = yield c.cmd("NOOP")
        self.assertEqual(untagged(lines), [])

    @defer.inlineCallbacks
    def test_append_by_same_session_to_selected(self):
        c = yield self.logged_in(select="INBOX")
        msg = message("self")
        lines = yield c.cmd(b"APPEND INBOX {%d+}\r\n" % len(msg) + msg)
        self.assertOK(lines)
        self.assertIn("1 EXISTS", untagged(lines))

    @defer.inlineCallbacks
    def test_no_updates_for_other_mailboxes_or_unselected(self):
        c = yield self.logged_in(select="Archive")
        a = yield self.logged_in()
        yield self.deliver_n(2)
        self.assertEqual(untagged((yield c.cmd("NOOP"))), [])
        self.assertEqual(untagged((yield a.cmd("NOOP"))), [])
        self.assertEqual(a.proto.session.pending, [])

    @defer.inlineCallbacks
    def test_selected_mailbox_deleted(self):
        c = yield self.logged_in()
        yield c.cmd("CREATE Temp")
        yield c.select("Temp")
        other = yield self.logged_in()
        self.assertOK((yield other.cmd("DELETE Temp")))
        lines = yield c.cmd("NOOP")
        self.assertTrue(any(line.startswith(b"* BYE") for line in lines), lines)

    @defer.inlineCallbacks
    def test_close_sends_no_expunge(self):
        yield self.deliver_n(2)
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
        lines = yield c.cmd("CLOSE")
        self.assertEqual(lines, [lines[-1]])
        self.assertOK(lines)
        lines = yield c.cmd("STATUS INBOX (MESSAGES)")
        self.assertIn("MESSAGES 1", untagged(lines)[0])
        self.assertEqual(tagged(lines)[:2], "OK")
