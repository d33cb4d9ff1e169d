"""The SMTP server protocol over a StringTransport, per command and state.

A recording backend (moxtw/test/smtphelper.py) stands in for delivery so the protocol's own
rules are tested here; test_smtp_hostile.py sends it hostile input, and
moxtw/test/test_smtp_e2e.py runs the real backend with real clients.
"""

import errno
import os

from moxtw.smtp import codes as c
from moxtw.smtpserver.server import SMTPReply
from moxtw.test.smtphelper import SMTPTestBase, reply


class GreetingTests(SMTPTestBase):
    def test_greeting(self):
        self.assertTrue(self.tr.value().startswith(b"220 mx.example.org ESMTP"))

    def test_ehlo_extensions(self):
        out = self.ehlo()
        for ext in ("PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 10000", "ENHANCEDSTATUSCODES",
                    "CHUNKING", "BINARYMIME", "LIMITS RCPTMAX=1000", "DSN"):
            self.assertIn(f"250-{ext}\r\n", out.replace("250 DSN", "250-DSN"))
        self.assertNotIn("AUTH", out)  # not on port 25
        self.assertNotIn("STARTTLS", out)  # no TLS configured
        self.assertNotIn("REQUIRETLS", out)  # only over TLS (RFC 8689)

    def test_helo(self):
        out = self.send(b"HELO client\r\n")
        self.assertTrue(out.startswith("250 mx.example.org"))

    def test_missing_domain(self):
        self.assertEqual(self.codes(self.send(b"EHLO\r\n")), [501])

    def test_unknown_and_garbage(self):
        self.assertEqual(self.codes(self.send(b"FOO\r\n")), [500])
        self.assertEqual(self.codes(self.send(b"\xff\xfe\x00\r\n")), [500])
        self.assertEqual(self.codes(self.send(b"MAIL\x00FROM\r\n")), [500])

    def test_quit(self):
        out = self.send(b"QUIT\r\n")
        self.assertTrue(out.startswith("221 "))
        self.assertTrue(self.tr.disconnecting)

    def test_vrfy_expn_help_noop(self):
        self.ehlo()
        self.assertEqual(self.codes(self.send(b"VRFY mjl\r\n")), [252])
        self.assertEqual(self.codes(self.send(b"EXPN list\r\n")), [502])
        self.assertEqual(self.codes(self.send(b"HELP\r\n")), [214])
        self.assertEqual(self.codes(self.send(b"NOOP\r\n")), [250])

    def test_enhanced_codes_after_ehlo_only(self):
        out = self.send(b"HELO x\r\nMAIL FROM:<a@b.org>\r\n")
        self.assertIn("250 sender ok", out)
        self.ehlo()
        out = self.send(b"MAIL FROM:<a@b.org>\r\n")
        self.assertIn(reply(c.C250_COMPLETED, c.SE_ADDR_OTHER0) + " sender ok", out)


class TransactionTests(SMTPTestBase):
    def test_sequence(self):
        self.assertEqual(self.codes(self.send(b"MAIL FROM:<a@b.org>\r\n")), [503])
        self.ehlo()
        self.assertEqual(self.codes(self.send(b"RCPT TO:<x@y.org>\r\n")), [503])
        self.assertEqual(self.codes(self.send(b"DATA\r\n")), [503])
        self.assertEqual(self.codes(self.send(b"MAIL FROM:<a@b.org>\r\n")), [250])
        self.assertEqual(self.codes(self.send(b"MAIL FROM:<a@b.org>\r\n")), [503])
        self.assertEqual(self.codes(self.send(b"DATA\r\n")), [554])  # no recipients
        self.assertEqual(self.codes(self.send(b"RCPT TO:<x@y.org>\r\n")), [250])
        self.assertEqual(self.codes(self.send(b"RSET\r\n")), [250])
        self.assertEqual(self.codes(self.send(b"RCPT TO:<x@y.org>\r\n")), [503])

    def test_full_transaction(self):
        self.ehlo()
        out = self.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<x@y.org>\r\nDATA\r\n")
        self.assertEqual(self.codes(out), [250, 250, 354])
        out = self.send(b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n")
        self.assertEqual(self.codes(out), [250])
        env, data = self.backend.delivered[0]
        self.assertEqual(data, b"Subject: hi\r\n\r\n.dot\r\nbody\r\n")
        self.assertEqual(str(env.mailfrom), "a@b.org")
        self.assertEqual([str(r.address) for r in env.recipients], ["x@y.org"])
        # A new transaction may follow.
        self.assertEqual(self.codes(self.send(b"MAIL FROM:<>\r\n")), [250])

    def test_null_sender_and_postmaster(self):
        self.ehlo()
        out = self.send(b"MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\n")
        self.assertEqual(self.codes(out), [250, 250])
        self.assertEqual(str(self.proto.envelope.recipients[0].address), "postmaster@mx.example.org")

    def test_pipelining_in_order(self):
        """RFC 2920: all replies in order even with asynchronous handlers."""
        self.ehlo()
        self.backend.hold = True
        out = self.send(
            b"MAIL FROM:<a@b.org>\r\nRCPT TO:<x@y.org>\r\nRCPT TO:<nobody@y.org>\r\n"
            b"RCPT TO:<z@y.org>\r\nDATA\r\nhello\r\n.\r\nNOOP\r\nQUIT\r\n"
        )
        self.backend.refuse_rcpt = {"nobody"}
        # Delivery holds: nothing after the data is answered yet.
        self.assertEqual(self.codes(out), [250, 250, 250, 250, 354])
        self.backend.deliver_deferreds[0].callback(SMTPReply(c.C250_COMPLETED, c.SE_OTHER0, "delivered"))
        self.assertEqual(self.codes(self.tr.value().decode()), [250, 250, 250, 250, 354, 250, 250, 221])

    def test_refused_recipient(self):
        self.ehlo()
        self.backend.refuse_rcpt = {"nobody"}
        out = self.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<nobody@y.org>\r\nRCPT TO:<x@y.org>\r\n")
        self.assertEqual(self.codes(out), [250, 550, 250])
        self.assertIn(reply(c.C550_MAILBOX_UNAVAILABLE, c.SE_ADDR_UNKNOWN_DEST_MAILBOX1), out)
        self.assertEqual(len(self.proto.envelope.recipients), 1)

    def test_too_many_recipients(self):
        self.ehlo()
        self.send(b"MAIL FROM:<a@b.org>\r\n")
        out = self.send(b"".join(b"RCPT TO:<u%d@y.org>\r\n" % i for i in range(1001)))
        self.assertEqual(self.codes(out)[-1], 452)
        self.assertIn(reply(c.C452_STORAGE_FULL, c.SE_PROTO_TOO_MANY_RCPTS3), out)

    def test_address_syntax(self):
        self.ehlo()
        for bad in (b"MAIL FROM:a@b.org", b"MAIL FROM:<a@b", b"MAIL FROM:<a@@b.org>",
                    b"MAIL FROM:<a@b.org>junk", b"MAIL TO:<a@b.org>", b"MAIL FROM:<a b@c.org>"):
            out = self.send(bad + b"\r\n")
            self.assertEqual(self.codes(out), [501], bad)

    def test_space_after_colon_tolerated(self):
        self.ehlo()
        self.assertEqual(self.codes(self.send(b"MAIL FROM: <a@b.org>\r\n")), [250])

    def test_params(self):
        self.ehlo()
        out = self.send(b"MAIL FROM:<a@b.org> SIZE=500 BODY=8BITMIME RET=HDRS ENVID=x1\r\n")
        self.assertEqual(self.codes(out), [250])
        env = self.proto.envelope
        self.assertEqual((env.size, env.body, env.ret, env.envid), (500, "8BITMIME", "HDRS", "x1"))
        out = self.send(b"RCPT TO:<x@y.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y.org\r\n")
        self.assertEqual(self.codes(out), [250])
        self.assertEqual(env.recipients[0].notify, "SUCCESS,FAILURE")
        self.assertEqual(self.codes(self.send(b"RCPT TO:<q@y.org> NOTIFY=NEVER,DELAY\r\n")), [501])
        self.assertEqual(self.codes(self.send(b"RCPT TO:<q@y.org> FOO=1\r\n")), [555])
        self.send(b"RSET\r\n")
        self.assertEqual(self.codes(self.send(b"MAIL FROM:<a@b.org> BODY=9BIT\r\n")), [501])
        self.assertEqual(self.codes(self.send(b"MAIL FROM:<a@b.org> SIZE=1 SIZE=2\r\n")), [501])
        self.assertEqual(self.codes(self.send(b"MAIL FROM:<a@b.org> FOO\r\n")), [555])
        # REQUIRETLS only on TLS sessions; HOLDFOR only on submission.
        self.assertEqual(self.codes(self.send(b"MAIL FROM:<a@b.org> REQUIRETLS\r\n")), [530])
        self.assertEqual(self.codes(self.send(b"MAIL FROM:<a@b.org> HOLDFOR=10\r\n")), [555])

    def test_size_refused_early(self):
        """RFC 1870 6.1: a declared SIZE over the limit is refused at MAIL."""
        self.ehlo()
        out = self.send(b"MAIL FROM:<a@b.org> SIZE=10001\r\n")
        self.assertIn(reply(c.C552_STORAGE_EXCEEDED, c.SE_MAIL_SYSTEM_MSG_TOO_LARGE4), out)

    def test_message_too_large(self):
        self.ehlo()
        self.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<x@y.org>\r\nDATA\r\n")
        out = self.send(b"x" * 20000 + b"\r\n.\r\n")
        self.assertIn(reply(c.C552_STORAGE_EXCEEDED, c.SE_MAIL_SYSTEM_MSG_TOO_LARGE4), out)
        self.assertEqual(self.backend.delivered, [])
        self.assertEqual(self.codes(self.send(b"NOOP\r\n")), [250])

    def test_smtputf8(self):
        self.ehlo()
        out = self.send("MAIL FROM:<ü@bücher.de>\r\n".encode())
        self.assertIn(reply(c.C553_BAD_MAILBOX_NAME, c.SE_MSG_8BIT_NOT_SUPPORTED), out)
        out = self.send("MAIL FROM:<ü@bücher.de> SMTPUTF8\r\n".encode())
        self.assertEqual(self.codes(out), [250])
        out = self.send("RCPT TO:<Ωmega@παράδειγμα.δοκιμή>\r\n".encode())
        self.assertEqual(self.codes(out), [250])
        self.assertEqual(self.proto.envelope.recipients[0].address.domain.ascii, "xn--hxajbheg2az3al.xn--jxalpdlp")


class PedanticTests(SMTPTestBase):
    pedantic = True

    def test_space_after_colon(self):
        self.ehlo()
        out = self.send(b"MAIL FROM: <a@b.org>\r\n")
        self.assertEqual(self.codes(out), [501])
        self.assertIn("pedantic", out)

    def test_bare_lf_command(self):
        out = self.send(b"EHLO x.org\n")
        self.assertEqual(self.codes(out), [500])

    def test_bad_ehlo_domain(self):
        self.assertEqual(self.codes(self.send(b"EHLO not_valid!\r\n")), [501])

    def test_8bit_without_body_param(self):
        self.ehlo()
        self.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<x@y.org>\r\nDATA\r\n")
        out = self.send("Subject: ü\r\n\r\nx\r\n.\r\n".encode())
        self.assertIn("554", out)


class BDATTests(SMTPTestBase):
    def test_chunks(self):
        self.ehlo()
        self.send(b"MAIL FROM:<a@b.org> BODY=BINARYMIME\r\nRCPT TO:<x@y.org>\r\n")
        out = self.send(b"BDAT 10\r\n0123456789BDAT 6 LAST\r\n\r\n.\r\nX")
        self.assertEqual(self.codes(out), [250, 250])
        self.assertEqual(self.backend.delivered[0][1], b"0123456789\r\n.\r\nX")

    def test_pipelined_with_data_after(self):
        self.ehlo()
        out = self.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<x@y.org>\r\nBDAT 3 LAST\r\nabcNOOP\r\n")
        self.assertEqual(self.codes(out), [250, 250, 250, 250])
        self.assertEqual(self.backend.delivered[0][1], b"abc")

    def test_empty_last(self):
        self.ehlo()
        self.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<x@y.org>\r\n")
        out = self.send(b"BDAT 2\r\nabBDAT 0 LAST\r\n")
        self.assertEqual(self.codes(out), [250, 250])
        self.assertEqual(self.backend.delivered[0][1], b"ab")

    def test_without_mail_chunk_consumed(self):
        """RFC 3030 2: a refused BDAT's chunk is still read, not run as commands."""
        self.ehlo()
        out = self.send(b"BDAT 12\r\nQUIT\r\nQUIT\r\nNOOP\r\n")
        self.assertEqual(self.codes(out), [503, 250])
        self.assertFalse(self.tr.disconnecting)

    def test_bad_size(self):
        self.ehlo()
        out = self.send(b"BDAT x\r\n")
        self.assertEqual(self.codes(out), [501])
        self.assertTrue(self.tr.disconnecting)

    def test_too_large(self):
        self.ehlo()
        self.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<x@y.org>\r\n")
        out = self.send(b"BDAT 20000 LAST\r\n" + b"x" * 20000)
        self.assertIn(reply(c.C552_STORAGE_EXCEEDED, c.SE_MAIL_SYSTEM_MSG_TOO_LARGE4), out)

    def test_data_after_binarymime_refused(self):
        self.ehlo()
        self.send(b"MAIL FROM:<a@b.org> BODY=BINARYMIME\r\nRCPT TO:<x@y.org>\r\n")
        self.assertEqual(self.codes(self.send(b"DATA\r\n")), [503])


class SubmissionTests(SMTPTestBase):
    kind = "submission"

    def test_auth_required(self):
        self.ehlo()
        out = self.send(b"MAIL FROM:<a@b.org>\r\n")
        self.assertIn(reply(c.C530_SECURITY_REQUIRED, c.SE_SEC_AUTH_REQUIRED0), out)

    def test_auth_needs_tls(self):
        self.ehlo()
        out = self.send(b"AUTH PLAIN AGEAYg==\r\n")
        self.assertIn(reply(c.C538_ENCRYPT_NEEDED, c.SE_SEC_ENCRYPTION_NEEDED11), out)

    def test_starttls_unavailable(self):
        self.ehlo()
        self.assertEqual(self.codes(self.send(b"STARTTLS\r\n")), [502])


class SpoolErrorTests(SMTPTestBase):
    """A message too large for memory goes to the spool directory; when writing there
    fails, the sender gets a temporary error and the session goes on."""

    max_size = 4 * 1024 * 1024

    def new_session(self):
        super().new_session()
        self.factory.spool_dir = os.path.join(self.mktemp(), "missing")

    def test_data(self):
        self.ehlo()
        self.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<x@y.org>\r\nDATA\r\n")
        out = self.send(b"x" * 1000 + b"\r\n" + (b"y" * 998 + b"\r\n") * 1500 + b".\r\n")
        self.assertIn(reply(c.C451_LOCAL_ERROR, c.SE_MAIL_SYSTEM_OTHER0), out)
        self.assertEqual(self.backend.delivered, [])
        self.assertFalse(self.tr.disconnecting)
        self.assertEqual(self.codes(self.send(b"NOOP\r\n")), [250])
        # A small message after it fits in memory and is delivered.
        out = self.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<x@y.org>\r\nDATA\r\nsmall\r\n.\r\n")
        self.assertEqual(self.codes(out)[-1], 250)

    def test_bdat(self):
        self.ehlo()
        self.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<x@y.org>\r\n")
        size = 2 * 1024 * 1024
        out = self.send(b"BDAT %d LAST\r\n" % size + b"z" * size + b"NOOP\r\n")
        self.assertEqual(self.codes(out), [451, 250])
        self.assertEqual(self.backend.delivered, [])

    def full_disk(self, buffering):
        # The spool file on /dev/full: the kernel's ENOSPC, at the first write
        # (unbuffered) or only when the buffer is written out at the end.
        import tempfile
        self.patch(tempfile, "TemporaryFile", lambda **kw: open("/dev/full", "w+b", buffering=buffering))
        self.new_session()
        self.factory.spool_dir = None

    def test_disk_full_on_write(self):
        self.full_disk(0)
        self.ehlo()
        self.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<x@y.org>\r\nDATA\r\n")
        out = self.send((b"y" * 998 + b"\r\n") * 1500 + b".\r\n")
        self.assertIn(reply(c.C452_STORAGE_FULL, c.SE_MAIL_SYSTEM_STORAGE_FULL1), out)
        self.assertFalse(self.tr.disconnecting)
        self.assertEqual(self.codes(self.send(b"NOOP\r\n")), [250])

    def test_disk_full_at_the_end(self):
        self.full_disk(8 * 1024 * 1024)
        self.ehlo()
        self.send(b"MAIL FROM:<a@b.org>\r\nRCPT TO:<x@y.org>\r\n")
        size = 1536 * 1024
        out = self.send(b"BDAT %d LAST\r\n" % size + b"z" * size)
        self.assertIn(reply(c.C452_STORAGE_FULL, c.SE_MAIL_SYSTEM_STORAGE_FULL1), out)
        self.assertEqual(self.backend.delivered, [])
        self.assertEqual(self.codes(self.send(b"NOOP\r\n")), [250])

    def test_disk_full_reply(self):
        from moxtw.smtpserver.data import spool_error_reply
        self.assertEqual(spool_error_reply(OSError(errno.ENOSPC, "No space left on device"))[:2],
                         (c.C452_STORAGE_FULL, c.SE_MAIL_SYSTEM_STORAGE_FULL1))
        self.assertEqual(spool_error_reply(PermissionError(errno.EACCES, "denied"))[:2],
                         (c.C451_LOCAL_ERROR, c.SE_MAIL_SYSTEM_OTHER0))
