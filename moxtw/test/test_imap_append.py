"""APPEND (RFC 9051 6.3.12, RFC 3502 MULTIAPPEND, RFC 4315 APPENDUID, RFC 7889
APPENDLIMIT, RFC 8508 REPLACE)."""

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, message, tagged, untagged


class AppendTests(IMAPSessionTest):
    factory_kwargs = {"append_limit": 10000}

    @defer.inlineCallbacks
    def test_append_sync_literal(self):
        c = yield self.logged_in()
        msg = message("hi")
        d = c.wait_line(b"+ ")
        c.send(b"a1 APPEND INBOX (\\Seen $Label) \"05-Jan-2024 10:00:00 +0100\" {%d}\r\n" % len(msg))
        yield d
        lines = yield c.raw(msg + b"\r\n", "a1")
        self.assertIn("[APPENDUID ", tagged(lines))
        lines = yield c.cmd("SELECT INBOX")
        lines = yield c.cmd("FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE)")
        self.assertIn('INTERNALDATE "05-Jan-2024 10:00:00 +0100"', untagged(lines)[0])
        self.assertIn("\\Seen $label", untagged(lines)[0])
        self.assertIn(f"RFC822.SIZE {len(msg)}", untagged(lines)[0])

    @defer.inlineCallbacks
    def test_multiappend_and_errors(self):
        c = yield self.logged_in()
        m1, m2 = message("one"), message("two")
        lines = yield c.cmd(b"APPEND Archive {%d+}\r\n%s (\\Flagged) {%d+}\r\n%s" % (len(m1), m1, len(m2), m2))
        self.assertIn(" 1:2] ", tagged(lines))
        self.assertNO((yield c.cmd(b"APPEND Nonexistent {1+}\r\nx")), "TRYCREATE")
        self.assertBAD((yield c.cmd(b"APPEND INBOX (\\Bogus) {1+}\r\nx")))
        self.assertBAD((yield c.cmd(b"APPEND INBOX \"bad date\" {1+}\r\nx")))
        self.assertBAD((yield c.cmd(b"APPEND INBOX")))

    @defer.inlineCallbacks
    def test_appendlimit(self):
        """RFC 7889: a literal over APPENDLIMIT gets NO [TOOBIG], no continuation."""
        c = yield self.logged_in()
        caps = yield c.cmd("CAPABILITY")
        self.assertIn(b"APPENDLIMIT=10000", caps[0])
        lines = yield c.cmd(b"APPEND INBOX {10001}")
        self.assertEqual(len(lines), 1)
        self.assertNO(lines, "TOOBIG")
        self.assertNotIn(b"+ ", c.out.split(b"\r\n")[-2][:2])
        self.assertOK((yield c.cmd("NOOP")))
        lines = yield c.cmd("STATUS INBOX (APPENDLIMIT)")
        self.assertIn("APPENDLIMIT 10000", untagged(lines)[0])
        # Non-synchronizing: the data is on its way, the connection is closed.
        lines = yield c.cmd(b"APPEND INBOX {10001+}\r\n" + b"x" * 10001)
        self.assertTrue(lines[0].startswith(b"* BYE"), lines)
        self.assertTrue(c.transport.disconnecting)

    @defer.inlineCallbacks
    def test_quota(self):
        self.acc.quota = 100
        c = yield self.logged_in()
        msg = message("big", "x" * 200)
        self.assertNO((yield c.cmd(b"APPEND INBOX {%d+}\r\n%s" % (len(msg), msg))), "OVERQUOTA")
        lines = yield c.cmd("GETQUOTAROOT INBOX")
        self.assertEqual(untagged(lines), ['QUOTAROOT Inbox ""', 'QUOTA "" (STORAGE 0 0)'])

    @defer.inlineCallbacks
    def test_replace(self):
        """RFC 8508: APPENDUID, then the old message is expunged."""
        yield self.deliver_n(2)
        c = yield self.logged_in(select="INBOX")
        msg = message("replacement")
        lines = yield c.cmd(b"REPLACE 1 INBOX {%d+}\r\n%s" % (len(msg), msg))
        self.assertOK(lines)
        u = untagged(lines)
        self.assertTrue(u[0].startswith("OK [APPENDUID "), u)
        self.assertIn("1 EXPUNGE", u)
        self.assertIn("3 EXISTS", u)
        self.assertLess(u.index("3 EXISTS"), u.index("1 EXPUNGE"))
        lines = yield c.cmd(b"UID REPLACE 2 Archive {%d+}\r\n%s" % (len(msg), msg))
        self.assertOK(lines)
        lines = yield c.cmd("FETCH 1:* UID")
        self.assertEqual(untagged(lines, "FETCH"), ["1 FETCH (UID 3)"])
        self.assertBAD((yield c.cmd(b"REPLACE 1:2 INBOX {1+}\r\nx")))
        self.assertNO((yield c.cmd(b"REPLACE 1 Nonexistent {1+}\r\nx")), "TRYCREATE")
        # An unknown system flag is BAD, not SERVERBUG (found by the fuzzer); the
        # original stays.
        self.assertBAD((yield c.cmd(b"REPLACE 1 INBOX (\\Bogus) {%d+}\r\n%s" % (len(msg), msg))))
        lines = yield c.cmd("FETCH 1:* UID")
        self.assertEqual(untagged(lines, "FETCH"), ["1 FETCH (UID 3)"])
