"""LOGIN, AUTHENTICATE (RFC 9051 6.2, RFC 4959 SASL-IR), LOGINDISABLED without TLS,
failed-login slowdown on the clock, STARTTLS, connection timeouts."""

import base64

from twisted.internet import defer

from moxtw.imapserver import server
from moxtw.test.imaphelper import LOGIN, PASSWORD, IMAPSessionTest, tagged


def b64(s):
    return base64.b64encode(s.encode()).decode()


class AuthTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def test_login(self):
        c = self.client()
        self.assertTrue(c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev2 "))
        self.assertIn(b"AUTH=PLAIN", c.greeting)
        lines = yield c.cmd(f'LOGIN {LOGIN} "{PASSWORD}"')
        self.assertIn("[CAPABILITY ", tagged(lines))
        self.assertIn(" IDLE ", tagged(lines))

    @defer.inlineCallbacks
    def test_authenticate_plain_ir_and_continuation(self):
        c = self.client()
        lines = yield c.cmd(f"AUTHENTICATE PLAIN {b64(chr(0) + LOGIN + chr(0) + PASSWORD)}")
        self.assertOK(lines)
        c = self.client()
        d = c.wait_line(b"+ ")
        c.send(b"a1 AUTHENTICATE PLAIN\r\n")
        yield d
        lines = yield c.raw(b64("\0" + LOGIN + "\0" + PASSWORD).encode() + b"\r\n", "a1")
        self.assertOK(lines)

    @defer.inlineCallbacks
    def test_authenticate_cancel_and_garbage(self):
        c = self.client()
        d = c.wait_line(b"+ ")
        c.send(b"a1 AUTHENTICATE PLAIN\r\n")
        yield d
        lines = yield c.raw(b"*\r\n", "a1")
        self.assertBAD(lines)  # RFC 9051 6.2.2: cancelled
        d = c.wait_line(b"+ ")
        c.send(b"a2 AUTHENTICATE PLAIN\r\n")
        yield d
        lines = yield c.raw(b"!!!notbase64\r\n", "a2")
        self.assertBAD(lines)
        self.assertNO((yield c.cmd("AUTHENTICATE NOSUCH")))
        d = c.wait_line(b"+ ")
        c.send(f"a3 AUTHENTICATE SCRAM-SHA-256 {b64('n,,n=' + LOGIN + ',r=abcdefghijklmnop')}\r\n")
        yield d
        self.assertBAD((yield c.raw(b"*\r\n", "a3")))
        self.assertOK((yield c.cmd("NOOP")))

    @defer.inlineCallbacks
    def test_wrong_password_slowdown(self):
        """Failures are answered after a delay on the clock; other connections are not
        held up meanwhile."""
        c = self.client()
        d = c.cmd(f'LOGIN {LOGIN} "wrong"')
        yield self.clock.wait_scheduled()
        self.assertFalse(d.called)
        other = self.client("127.0.0.2")
        self.assertOK((yield other.cmd("NOOP")))
        self.clock.advance(5)
        lines = yield d
        self.assertNO(lines, "AUTHENTICATIONFAILED")

    @defer.inlineCallbacks
    def test_unknown_user(self):
        c = self.client()
        d = c.cmd('LOGIN nobody@example.org "x"')
        yield self.clock.wait_scheduled()
        self.clock.advance(5)
        lines = yield d
        self.assertNO(lines, "AUTHENTICATIONFAILED")

    @defer.inlineCallbacks
    def test_authenticate_failure_slowdown(self):
        c = self.client()
        d = c.cmd(f"AUTHENTICATE PLAIN {b64(chr(0) + LOGIN + chr(0) + 'wrong')}")
        yield self.clock.wait_scheduled()
        self.clock.advance(5)
        self.assertNO((yield d), "AUTHENTICATIONFAILED")

    @defer.inlineCallbacks
    def test_login_disabled(self):
        self.dynamic.Accounts["mjl"].LoginDisabled = "account suspended"
        c = self.client()
        lines = yield c.cmd(f'LOGIN {LOGIN} "{PASSWORD}"')
        self.assertNO(lines, "AUTHENTICATIONFAILED")
        self.assertIn("suspended", tagged(lines))

    @defer.inlineCallbacks
    def test_connection_closed_during_login(self):
        """A LOGIN that completes after the connection closed leaves no subscription."""
        c = self.client()
        c.send(f'a1 LOGIN {LOGIN} "{PASSWORD}"\r\n')
        c.proto.connectionLost(None)
        yield self.acc.mailbox("Inbox")
        # Let the password check finish.
        for _ in range(100):
            if c.proto.session.account is not None:
                break
            yield self.acc.verify_password("x")
        self.assertEqual(len(self.acc.bus), 0)


class PlainTextTests(IMAPSessionTest):
    kind = "imap"

    @defer.inlineCallbacks
    def test_logindisabled(self):
        c = self.client()
        self.assertIn(b"LOGINDISABLED", c.greeting)
        self.assertNotIn(b"AUTH=", c.greeting)
        self.assertNotIn(b"STARTTLS", c.greeting)  # no TLS configured
        self.assertNO((yield c.cmd(f'LOGIN {LOGIN} "{PASSWORD}"')), "PRIVACYREQUIRED")
        self.assertNO((yield c.cmd("AUTHENTICATE PLAIN")))
        self.assertBAD((yield c.cmd("STARTTLS")))


class StartTLSTests(IMAPSessionTest):
    kind = "imap"
    factory_kwargs = {"tls_context": object()}

    @defer.inlineCallbacks
    def test_starttls_drops_pipelined(self):
        """RFC 9051 6.2.1: commands pipelined after STARTTLS are discarded."""
        c = self.client()
        self.assertIn(b"STARTTLS", c.greeting)
        d = c.wait_tagged("s1")
        c.send(f's1 STARTTLS\r\ns2 LOGIN {LOGIN} "{PASSWORD}"\r\n')
        lines = yield d
        self.assertOK(lines)
        self.assertIsNotNone(c.transport.tls_started)
        lines = yield c.cmd("CAPABILITY")
        self.assertNotIn(b"s2 ", c.out)
        self.assertNotIn(b"STARTTLS", lines[0])
        self.assertNotIn(b"LOGINDISABLED", lines[0])
        self.assertBAD((yield c.cmd("STARTTLS")))
        yield c.login()


class TimeoutTests(IMAPSessionTest):
    @defer.inlineCallbacks
    def test_unauthenticated_timeout(self):
        c = self.client()
        self.clock.advance(server.TIMEOUT_UNAUTHENTICATED - 1)
        self.assertFalse(c.transport.disconnecting)
        self.assertOK((yield c.cmd("NOOP")))
        self.clock.advance(server.TIMEOUT_UNAUTHENTICATED - 1)
        self.assertFalse(c.transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(c.transport.disconnecting)
        self.assertIn(b"* BYE", c.out)

    @defer.inlineCallbacks
    def test_authenticated_timeout(self):
        c = yield self.logged_in(select="INBOX")
        self.clock.advance(29 * 60)
        self.assertFalse(c.transport.disconnecting)
        self.clock.advance(60 + 1)
        self.assertTrue(c.transport.disconnecting)

    @defer.inlineCallbacks
    def test_not_draining_client_cut_after_grace(self):
        # A client that stopped reading never lets loseConnection finish: the
        # connection is aborted a minute after the autologout.
        c = yield self.logged_in(select="INBOX")
        aborted = []
        c.transport.abortConnection = lambda: aborted.append(True)
        self.clock.advance(server.TIMEOUT_AUTHENTICATED + 1)
        self.assertTrue(c.transport.disconnecting)
        self.assertEqual(aborted, [])
        self.clock.advance(server.ABORT_GRACE)
        self.assertEqual(aborted, [True])

    @defer.inlineCallbacks
    def test_unauthenticate_restores_short_timeout(self):
        c = yield self.logged_in()
        yield c.cmd("UNAUTHENTICATE")
        self.clock.advance(server.TIMEOUT_UNAUTHENTICATED + 1)
        self.assertTrue(c.transport.disconnecting)
