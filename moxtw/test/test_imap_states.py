"""Every command in every state (RFC 9051 3, 6): commands not valid in a state get BAD."""

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, tagged

# A valid example of each command, and the states it is valid in.
EXAMPLES = {
    "CAPABILITY": ("CAPABILITY", "nas"),
    "NOOP": ("NOOP", "nas"),
    "ID": ("ID NIL", "nas"),
    "ENABLE": ("ENABLE CONDSTORE", "as"),
    "SELECT": ("SELECT Archive", "as"),
    "EXAMINE": ("EXAMINE Archive", "as"),
    "CREATE": ("CREATE NewBox", "as"),
    "DELETE": ("DELETE Nonexistent", "as"),
    "RENAME": ("RENAME Nonexistent Other", "as"),
    "SUBSCRIBE": ("SUBSCRIBE Archive", "as"),
    "UNSUBSCRIBE": ("UNSUBSCRIBE Archive", "as"),
    "LIST": ('LIST "" "*"', "as"),
    "LSUB": ('LSUB "" "*"', "as"),
    "NAMESPACE": ("NAMESPACE", "as"),
    "STATUS": ("STATUS Archive (MESSAGES)", "as"),
    "APPEND": ("APPEND Archive {3+}\r\nx\r\n", "as"),
    "GETQUOTAROOT": ("GETQUOTAROOT INBOX", "as"),
    "GETQUOTA": ('GETQUOTA ""', "as"),
    "CHECK": ("CHECK", "s"),
    "SEARCH": ("SEARCH ALL", "s"),
    "UID SEARCH": ("UID SEARCH ALL", "s"),
    "FETCH": ("FETCH 1 FLAGS", "s"),
    "UID FETCH": ("UID FETCH 1 FLAGS", "s"),
    "STORE": ("STORE 1 +FLAGS \\Seen", "s"),
    "UID STORE": ("UID STORE 1 +FLAGS \\Seen", "s"),
    "COPY": ("COPY 1 Archive", "s"),
    "UID COPY": ("UID COPY 1 Archive", "s"),
    "MOVE": ("MOVE 2 Archive", "s"),
    "UID MOVE": ("UID MOVE 3 Archive", "s"),
    "SORT": ("SORT (DATE) UTF-8 ALL", "s"),
    "THREAD": ("THREAD REFERENCES UTF-8 ALL", "s"),
    "UID EXPUNGE": ("UID EXPUNGE 1", "s"),
    "EXPUNGE": ("EXPUNGE", "s"),
    "UID REPLACE": ("UID REPLACE 1 INBOX {3+}\r\nx\r\n", "s"),
}


class StateTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def run_state(self, state):
        yield self.deliver_n(4)
        c = self.client()
        if state in "as":
            yield c.login()
        if state == "s":
            yield c.select()
        for name, (example, states) in EXAMPLES.items():
            lines = yield c.cmd(example)
            if state in states:
                self.assertNotIn("BAD", tagged(lines).split(" ", 1)[0], (state, name, lines))
            else:
                self.assertTrue(tagged(lines).startswith("BAD"), (state, name, lines))
            # Still in the same state.
            if state == "s" and name in ("SELECT", "EXAMINE"):
                yield c.select()
            elif state == "a" and name in ("SELECT", "EXAMINE"):
                self.assertOK((yield c.cmd("UNSELECT")))
        return c

    def test_not_authenticated(self):
        return self.run_state("n")

    def test_authenticated(self):
        return self.run_state("a")

    def test_selected(self):
        return self.run_state("s")

    @defer.inlineCallbacks
    def test_auth_commands_after_login(self):
        c = yield self.logged_in()
        for cmd in ("LOGIN a b", "AUTHENTICATE PLAIN", "STARTTLS"):
            lines = yield c.cmd(cmd)
            self.assertBAD(lines)

    @defer.inlineCallbacks
    def test_unknown_command(self):
        c = self.client()
        lines = yield c.cmd("FROB")
        self.assertBAD(lines)
        lines = yield c.cmd("UID NOOP")
        self.assertBAD(lines)

    @defer.inlineCallbacks
    def test_close_unselect_back_to_authenticated(self):
        yield self.deliver_n(1)
        c = yield self.logged_in(select="INBOX")
        self.assertOK((yield c.cmd("UNSELECT")))
        self.assertBAD((yield c.cmd("FETCH 1 FLAGS")))
        yield c.select()
        self.assertOK((yield c.cmd("CLOSE")))
        self.assertBAD((yield c.cmd("CLOSE")))
        self.assertBAD((yield c.cmd("UNSELECT")))

    @defer.inlineCallbacks
    def test_failed_select_deselects(self):
        """RFC 9051 6.3.2: a failed SELECT leaves no mailbox selected."""
        c = yield self.logged_in(select="INBOX")
        self.assertNO((yield c.cmd("SELECT Nonexistent")), "NONEXISTENT")
        self.assertBAD((yield c.cmd("FETCH 1 FLAGS")))

    @defer.inlineCallbacks
    def test_logout(self):
        c = yield self.logged_in()
        lines = yield c.cmd("LOGOUT")
        self.assertEqual(lines[0], b"* BYE logging out")
        self.assertOK(lines)
        self.assertTrue(c.transport.disconnecting)

    @defer.inlineCallbacks
    def test_logout_ignores_pipelined(self):
        c = self.client()
        d = c.wait_tagged("a")
        c.send(b"a LOGOUT\r\nb NOOP\r\n")
        yield d
        self.assertNotIn(b"b OK", c.out)

    @defer.inlineCallbacks
    def test_unauthenticate(self):
        """RFC 8437: back to not authenticated, login again."""
        c = yield self.logged_in(select="INBOX", enable="CONDSTORE")
        self.assertOK((yield c.cmd("UNAUTHENTICATE")))
        self.assertBAD((yield c.cmd("SELECT INBOX")))
        caps = yield c.cmd("CAPABILITY")
        self.assertIn(b"AUTH=PLAIN", caps[0])
        self.assertNotIn(b"IDLE", caps[0])
        yield c.login()
        lines = yield c.cmd("SELECT INBOX")
        self.assertFalse(any(b"HIGHESTMODSEQ" in line for line in lines), lines)
