"""SELECT and EXAMINE (RFC 9051 6.3.2/6.3.3, RFC 3501 6.3.1/6.3.2, RFC 7162 3.1.2)."""

import imaplib

from twisted.internet import defer, reactor, threads

from moxtw.test.imaphelper import LOGIN, PASSWORD, IMAPSessionTest, tagged, untagged


class SelectTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def test_select_rev1(self):
        yield self.deliver("one", flags=["\\Seen"])
        yield self.deliver("two")
        c = yield self.logged_in()
        lines = yield c.cmd("SELECT INBOX")
        u = untagged(lines)
        self.assertIn("FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft)", u)
        self.assertIn("2 EXISTS", u)
        self.assertIn("2 RECENT", u)  # RFC 3501 6.3.1: required; both are new here
        # RFC 3501 6.3.1: UNSEEN with the first unseen message's sequence number.
        self.assertIn("OK [UNSEEN 2] first unseen", u)
        self.assertTrue(any(x.startswith("OK [UIDVALIDITY ") for x in u))
        self.assertTrue(any(x.startswith("OK [UIDNEXT 3]") for x in u))
        self.assertTrue(any(x.startswith("OK [PERMANENTFLAGS (") and "\\*" in x for x in u))
        self.assertFalse(any("HIGHESTMODSEQ" in x for x in u))
        # RFC 3501 6.3.1 has no LIST response (that is IMAP4rev2, RFC 9051 6.3.2).
        self.assertEqual(untagged(lines, "LIST"), [])
        self.assertIn("[READ-WRITE]", tagged(lines))

    @defer.inlineCallbacks
    def test_select_rev1_all_seen_no_unseen(self):
        yield self.deliver("one", flags=["\\Seen"])
        c = yield self.logged_in()
        lines = yield c.cmd("SELECT INBOX")
        self.assertFalse(any("UNSEEN" in x for x in untagged(lines)))

    @defer.inlineCallbacks
    def test_select_rev2(self):
        yield self.deliver("two")
        c = yield self.logged_in(enable="IMAP4rev2")
        lines = yield c.cmd("SELECT INBOX")
        u = untagged(lines)
        self.assertIn("1 EXISTS", u)
        # RFC 9051 6.3.2: no RECENT, no UNSEEN code; a LIST response.
        self.assertFalse(any("RECENT" in x or "UNSEEN" in x for x in u), u)
        self.assertTrue(any(x.startswith("LIST (") and x.endswith('"/" Inbox') for x in u), u)

    @defer.inlineCallbacks
    def test_examine(self):
        yield self.deliver("one")
        c = yield self.logged_in()
        lines = yield c.cmd("EXAMINE INBOX")
        self.assertIn("[READ-ONLY]", tagged(lines))
        self.assertIn("OK [PERMANENTFLAGS ()] flags", untagged(lines))
        self.assertEqual(untagged(lines, "LIST"), [])  # RFC 3501 6.3.2
        for cmd in ("STORE 1 +FLAGS \\Seen", "EXPUNGE", "UID EXPUNGE 1", "MOVE 1 Archive"):
            self.assertNO((yield c.cmd(cmd)), "READ-ONLY")
        # RFC 9051 6.3.3: EXAMINE never sets \Seen.
        lines = yield c.cmd("FETCH 1 (BODY[] FLAGS)")
        lines = yield c.cmd("FETCH 1 FLAGS")
        # EXAMINE shows \\Recent and leaves it (RFC 3501 6.3.2).
        self.assertIn("1 FETCH (FLAGS (\\Recent))", untagged(lines))
        # COPY is allowed from a read-only mailbox.
        self.assertOK((yield c.cmd("COPY 1 Archive")))

    @defer.inlineCallbacks
    def test_closed_code(self):
        """RFC 9051 6.3.2 / RFC 7162 3.2.11: [CLOSED] when a mailbox was selected."""
        c = yield self.logged_in(enable="IMAP4rev2", select="INBOX")
        lines = yield c.cmd("SELECT Archive")
        self.assertEqual(untagged(lines)[0], "OK [CLOSED] previous mailbox closed")
        c1 = yield self.logged_in(select="INBOX")
        lines = yield c1.cmd("EXAMINE Archive")
        self.assertFalse(any("CLOSED" in x for x in untagged(lines)))

    @defer.inlineCallbacks
    def test_condstore_param(self):
        yield self.deliver("one")
        c = yield self.logged_in()
        lines = yield c.cmd("SELECT INBOX (CONDSTORE)")
        u = untagged(lines)
        hms = [x for x in u if x.startswith("OK [HIGHESTMODSEQ ")]
        self.assertEqual(len(hms), 1, u)
        lines = yield c.cmd("FETCH 1 FLAGS")
        self.assertIn("MODSEQ (", untagged(lines)[0])

    @defer.inlineCallbacks
    def test_select_case_and_utf7(self):
        c = yield self.logged_in()
        self.assertOK((yield c.cmd("SELECT inbox")))
        self.assertOK((yield c.cmd('SELECT "InBoX"')))
        self.assertOK((yield c.cmd("CREATE Caf&AOk-")))
        self.assertOK((yield c.cmd("SELECT Caf&AOk-")))
        self.assertNO((yield c.cmd("SELECT Nonexistent")), "NONEXISTENT")
        # Invalid modified UTF-7 is a syntax error.
        lines = yield c.cmd("SELECT &Jjo!")
        self.assertTrue(tagged(lines).startswith(("BAD", "NO")), lines)

    @defer.inlineCallbacks
    def test_searchres_reset_on_select(self):
        """RFC 5182 2.1: $ is empty after SELECT."""
        yield self.deliver_n(2)
        c = yield self.logged_in(select="INBOX")
        yield c.cmd("SEARCH RETURN (SAVE) ALL")
        lines = yield c.cmd("FETCH $ UID")
        self.assertEqual(len(untagged(lines, "FETCH")), 2)
        yield c.select()
        lines = yield c.cmd("FETCH $ UID")
        self.assertOK(lines)
        self.assertEqual(untagged(lines, "FETCH"), [])


class SelectLoopbackTests(IMAPSessionTest):
    """SELECT and EXAMINE with Python's imaplib over a loopback socket: an IMAP4rev1
    client gets no untagged LIST (RFC 3501 6.3.1), one that enabled IMAP4rev2 does
    (RFC 9051 6.3.2)."""

    def setUp(self):
        d = super().setUp()

        def listen(_):
            port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.port = port.getHost().port

        return d.addCallback(listen)

    def imap(self, enable=None):
        """Log in with imaplib, then SELECT and EXAMINE INBOX; returns the untagged LIST
        data imaplib collected for each (None for none)."""
        c = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        try:
            c.login(LOGIN, PASSWORD)
            if enable:
                c.enable(enable)
            got = []
            for readonly in (False, True):
                typ, data = c.select("INBOX", readonly=readonly)
                assert typ == "OK", (typ, data)
                got.append(c.response("LIST")[1])
            return got
        finally:
            c.logout()

    @defer.inlineCallbacks
    def test_rev1_no_list(self):
        yield self.deliver("one")
        got = yield threads.deferToThread(self.imap)
        self.assertEqual(got, [[None], [None]])

    @defer.inlineCallbacks
    def test_rev2_list(self):
        yield self.deliver("one")
        got = yield threads.deferToThread(self.imap, "IMAP4rev2")
        self.assertEqual(got, [[b'() "/" Inbox'], [b'() "/" Inbox']])
