"""Hostile and malformed input (RFC 9051 4.3, 7.1; RFC 7888 LITERAL+/-): every case gets
BAD/NO with a reason or a BYE, never a crash or a hang."""

from twisted.internet import defer

from moxtw.imapserver import server
from moxtw.test.imaphelper import IMAPSessionTest


class HostileTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def test_garbage_lines(self):
        c = yield self.logged_in(select="INBOX")
        for line in (b"", b"x", b"\xff\xfe", b"a1", b"a1 ", b"+ NOOP", b"a1 NOOP extra", b"a1 FETCH",
                     b"a1 FETCH 1:2:3 FLAGS", b"a1 FETCH -1 FLAGS", b"a1 FETCH $$ FLAGS",
                     b"a1 FETCH 1 " + b"(" * 5000, b"a1 SELECT \"unterminated",
                     b"a1 LOGIN \xc3\x28 x", b"a1 SEARCH \x00", b"a1 UID", b"a1 UID FOO 1"):
            d = c.wait_line(b"")
            n = len(c.out)
            c.send(line + b"\r\n")
            yield d
            reply = c.out[n:]
            self.assertTrue(b" BAD " in reply, (line, reply))
            self.assertTrue(len(reply.split(b"\r\n")[0]) < 400, reply)
        self.assertOK((yield c.cmd("NOOP")))

    @defer.inlineCallbacks
    def test_too_many_bad(self):
        c = self.client()
        d = c.wait_line(b"* BYE")
        c.send(b"x\r\n" * 40)
        yield d
        self.assertTrue(c.transport.disconnecting)

    @defer.inlineCallbacks
    def test_long_line(self):
        c = self.client()
        d = c.wait_line(b"* BYE")
        c.send(b"a1 NOOP " + b"x" * (server.MAX_LINE + 10))
        yield d
        self.assertTrue(c.transport.disconnecting)

    @defer.inlineCallbacks
    def test_literal_too_big_non_append(self):
        c = self.client()
        lines = yield c.cmd("LOGIN {%d}" % (server.MAX_LITERAL + 1))
        self.assertNO(lines, "TOOBIG")
        self.assertOK((yield c.cmd("NOOP")))
        lines = yield c.cmd("LOGIN {99999999999}")
        self.assertTrue(b"BAD" in lines[-1], lines)
        self.assertOK((yield c.cmd("NOOP")))

    @defer.inlineCallbacks
    def test_nonsync_literal_too_big_bye(self):
        c = self.client()
        d = c.wait_line(b"* BYE")
        c.send(b"a1 LOGIN {%d+}\r\n" % (server.MAX_LITERAL + 1))
        yield d
        self.assertTrue(c.transport.disconnecting)

    @defer.inlineCallbacks
    def test_literal_minus(self):
        """RFC 7888 4: LITERAL- limits non-synchronizing literals to 4096 octets."""
        self.factory.literal_plus = False
        c = self.client()
        d = c.wait_line(b"* BYE")
        c.send(b"a1 LOGIN {4097+}\r\n")
        yield d

    @defer.inlineCallbacks
    def test_split_input(self):
        """Bytes arriving one at a time form the same commands."""
        c = self.client()
        d = c.wait_tagged("a2")
        for b in b'a1 LOGIN {15}\r\nmjl@example.org "imap password"\r\na2 NOOP\r\n':
            c.proto.dataReceived(bytes([b]))
        yield d
        self.assertIn(b"a1 OK", c.out)
        self.assertIn(b"+ ", c.out)

    @defer.inlineCallbacks
    def test_bare_lf(self):
        c = self.client()
        lines = yield c.raw(b"a1 NOOP\n", "a1")
        self.assertOK(lines)

    @defer.inlineCallbacks
    def test_seqsets(self):
        yield self.deliver_n(3)
        c = yield self.logged_in(select="INBOX")
        for s in ("*:1", "3:1", "1,1,1", "*", "2:*", "1:1,3"):
            self.assertOK((yield c.cmd(f"FETCH {s} UID")))
        for s in ("0", "4", "1:4", "0:*", "4294967296", "1,", ",1", "1:", "a", "1 2"):
            self.assertBAD((yield c.cmd(f"FETCH {s} UID")))
        self.assertOK((yield c.cmd("UID FETCH 1:4294967295 UID")))
        self.assertBAD((yield c.cmd("UID FETCH 0:1 UID")))

    @defer.inlineCallbacks
    def test_connection_lost_mid_command(self):
        yield self.deliver_n(2)
        c = yield self.logged_in(select="INBOX")
        c.send(b"a1 FETCH 1:* BODY[]\r\na2 IDLE\r\n")
        c.proto.connectionLost(None)
        yield self.acc.mailbox("Inbox")
        self.assertEqual(len(self.acc.bus), 0)

    @defer.inlineCallbacks
    def test_unbalanced_literal_then_timeout(self):
        c = self.client()
        d = c.wait_line(b"+ ")
        c.send(b"a1 LOGIN {10}\r\nabc")
        yield d
        self.clock.advance(server.TIMEOUT_UNAUTHENTICATED + 1)
        self.assertTrue(c.transport.disconnecting)
