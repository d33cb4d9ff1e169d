"""Mailbox names in modified UTF-7 and UTF-8 (RFC 3501 5.1.3, RFC 6855 UTF8=ACCEPT,
RFC 9051 IMAP4rev2)."""

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, message, untagged


class UTF8Tests(IMAPSessionTest):
    @defer.inlineCallbacks
    def test_names(self):
        c = yield self.logged_in()
        self.assertOK((yield c.cmd("CREATE Caf&AOk-")))
        lines = yield c.cmd('LIST "" Caf*')
        self.assertEqual(untagged(lines), ['LIST (\\HasNoChildren) "/" Caf&AOk-'])
        for cap in ("UTF8=ACCEPT", "IMAP4rev2"):
            u = yield self.logged_in(enable=cap)
            lines = yield u.cmd('LIST "" Caf*')
            self.assertEqual(untagged(lines), ['LIST (\\HasNoChildren) "/" "Café"'], cap)
            lines = yield u.cmd('STATUS "Café" (MESSAGES)')
            self.assertEqual(untagged(lines), ['STATUS "Café" (MESSAGES 0)'])
            self.assertOK((yield u.cmd('SELECT "Café"')))
        # Raw UTF-8 without UTF8=ACCEPT is tolerated by the parser (as mox does).
        self.assertOK((yield c.cmd('SELECT "Café"')))

    @defer.inlineCallbacks
    def test_utf8_append(self):
        """RFC 6855 4: APPEND with UTF8 (literal8) once UTF8=ACCEPT is enabled."""
        c = yield self.logged_in(enable="UTF8=ACCEPT")
        msg = message("héllo")
        lines = yield c.cmd(b"APPEND INBOX UTF8 (~{%d+}\r\n%s)" % (len(msg), msg))
        self.assertOK(lines)

    @defer.inlineCallbacks
    def test_utf8_append_needs_enable(self):
        """RFC 6855 4: without ENABLE UTF8=ACCEPT the UTF8 data item is a BAD."""
        c = yield self.logged_in()
        msg = message("héllo")
        lines = yield c.cmd(b"APPEND INBOX UTF8 (~{%d+}\r\n%s)" % (len(msg), msg))
        self.assertBAD(lines)
