"""COMPRESS=DEFLATE (RFC 4978)."""

from twisted.internet import defer

from moxtw.test.imaphelper import IMAPSessionTest, message, untagged


class CompressTests(IMAPSessionTest):
    factory_kwargs = {"append_limit": 8 * 1024 * 1024}

    @defer.inlineCallbacks
    def test_compress(self):
        c = yield self.logged_in()
        self.assertBAD((yield c.cmd("COMPRESS LZW")))
        lines = yield c.cmd("COMPRESS DEFLATE")
        self.assertOK(lines)
        c.start_compression()
        lines = yield c.cmd("CAPABILITY")
        self.assertNotIn(b"COMPRESS=", lines[0])
        self.assertNO((yield c.cmd("COMPRESS DEFLATE")), "COMPRESSIONACTIVE")
        lines = yield c.cmd("SELECT INBOX")
        self.assertOK(lines)

    @defer.inlineCallbacks
    def test_highly_compressible_append(self):
        """A chunk inflating to more than one step is processed completely."""
        c = yield self.logged_in()
        yield c.cmd("COMPRESS DEFLATE")
        c.start_compression()
        msg = message("big", "a" * (3 * 1024 * 1024))
        lines = yield c.cmd(b"APPEND INBOX {%d+}\r\n%s" % (len(msg), msg))
        self.assertOK(lines)
        lines = yield c.cmd("STATUS INBOX (MESSAGES)")
        self.assertIn("MESSAGES 1", untagged(lines)[0])

    @defer.inlineCallbacks
    def test_garbage(self):
        c = yield self.logged_in()
        yield c.cmd("COMPRESS DEFLATE")
        d = c.wait_line(b"* BYE")
        c.proto.dataReceived(b"\xff\xff\xff\xff garbage")
        yield d
        self.assertTrue(c.transport.disconnecting)

    @defer.inlineCallbacks
    def test_not_before_login(self):
        c = self.client()
        self.assertBAD((yield c.cmd("COMPRESS DEFLATE")))
