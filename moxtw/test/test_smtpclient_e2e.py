"""SMTP client end-to-end against our own server tree over loopback: incoming with
opportunistic STARTTLS, submission with STARTTLS + SCRAM, implicit TLS."""


from twisted.internet import defer, reactor
from twisted.internet.ssl import Certificate, optionsForClientTLS

from moxtw.smtpclient import SMTPClientError, deliver
from moxtw.test.test_smtp_e2e import PASSWORD, SMTPTreeBase, message


class SMTPClientEndToEndTests(SMTPTreeBase):
    def trusting(self):
        with open(self.ca, "rb") as f:
            return optionsForClientTLS("localhost", Certificate.loadPEM(f.read()))

    @defer.inlineCallbacks
    def test_incoming_opportunistic_tls(self):
        body = b"line one\r\n.starts with a dot\r\n..two dots\r\n.\r\nlast\r\n"
        msg = message("from the client", "bob@example.net") + body
        result = yield deliver(
            reactor, "127.0.0.1", self.ports["smtp"], ehlo_hostname="sender.example.net",
            mailfrom="bob@example.net", recipients=["mjl@example.org", "nobody@example.org"], data=msg,
            command_timeout=10, data_timeout=10,
        )
        self.assertEqual(result.tls_version, "TLSv1.3")
        self.assertIn("mail.example.org", result.remote_banner)
        ok, unknown = result.recipients
        self.assertEqual((ok.address, ok.ok, ok.code), ("mjl@example.org", True, 250))
        self.assertTrue(ok.enhanced.startswith("2."))
        self.assertEqual((unknown.ok, unknown.code, unknown.enhanced), (False, 550, "5.1.1"))
        [(m, data)] = yield self.messages("mjl")
        self.assertEqual(m.subject, "from the client")
        self.assertTrue(data.startswith(b"Return-Path: <bob@example.net>\r\n"))
        self.assertIn(b"with ESMTPS id", data)
        # Byte-exact after the trace headers the server prepends.
        self.assertTrue(data.endswith(msg), data)

    @defer.inlineCallbacks
    def test_incoming_all_unknown(self):
        result = yield deliver(
            reactor, "127.0.0.1", self.ports["smtp"], ehlo_hostname="sender.example.net",
            mailfrom="bob@example.net", recipients=["nobody@example.org", "x@elsewhere.example"],
            data=message(), tls="none", command_timeout=10,
        )
        self.assertIsNone(result.tls_version)
        self.assertEqual([(r.ok, r.code) for r in result.recipients], [(False, 550), (False, 550)])
        self.assertIn("relaying not permitted", result.recipients[1].text)

    @defer.inlineCallbacks
    def test_submission_scram_after_starttls(self):
        for mech in ("SCRAM-SHA-256", None):
            result = yield deliver(
                reactor, "localhost", self.ports["submission"], ehlo_hostname="client.example.org",
                mailfrom="mjl@example.org", recipients=["other@example.org"],
                data=message(f"submitted {mech}"), tls="required", tls_context_factory=self.trusting(),
                auth=("mjl@example.org", PASSWORD), auth_mechanism=mech, command_timeout=10,
            )
            self.assertEqual([r.ok for r in result.recipients], [True])
            self.assertEqual(result.tls_version, "TLSv1.3")
            # Unconfigured: the strongest offered, with TLS channel binding (RFC 5802 6).
            self.assertEqual(result.auth_mechanism, mech or "SCRAM-SHA-256-PLUS")
        yield self.queue_settled()
        got = yield self.messages("other")
        self.assertEqual(sorted(m.subject for m, _ in got), ["submitted None", "submitted SCRAM-SHA-256"])
        self.assertIn(b"with ESMTPSA id", got[0][1])
        self.assertTrue(got[0][1].endswith(b"\r\n\r\nbody text\r\n"))

    @defer.inlineCallbacks
    def test_submission_wrong_password(self):
        e = yield self.assertFailure(
            deliver(
                reactor, "localhost", self.ports["submission"], ehlo_hostname="client.example.org",
                mailfrom="mjl@example.org", recipients=["other@example.org"], data=message(),
                tls="required", tls_context_factory=self.trusting(), auth=("mjl@example.org", "wrong"),
                command_timeout=10,
            ),
            SMTPClientError,
        )
        self.assertEqual((e.stage, e.code, e.permanent), ("auth", 535, True))

    @defer.inlineCallbacks
    def test_submissions_implicit_tls(self):
        result = yield deliver(
            reactor, "localhost", self.ports["submissions"], ehlo_hostname="client.example.org",
            mailfrom="mjl@example.org", recipients=["other@example.org"], data=message("implicit"),
            tls="implicit", tls_context_factory=self.trusting(),
            auth=("mjl@example.org", PASSWORD), command_timeout=10,
        )
        self.assertTrue(result.recipients[0].ok)
        self.assertEqual(result.tls_version, "TLSv1.3")
        yield self.queue_settled()
        got = yield self.messages("other")
        self.assertEqual([m.subject for m, _ in got], ["implicit"])

    @defer.inlineCallbacks
    def test_untrusted_certificate_refused(self):
        # With a verifying context, the self-signed test CA is not trusted by default.
        e = yield self.assertFailure(
            deliver(
                reactor, "localhost", self.ports["submission"], ehlo_hostname="client.example.org",
                mailfrom="mjl@example.org", recipients=["other@example.org"], data=message(),
                tls="required", tls_context_factory=optionsForClientTLS("localhost"), command_timeout=10,
            ),
            SMTPClientError,
        )
        self.assertEqual(e.stage, "starttls")
        self.assertFalse(e.permanent)

    @defer.inlineCallbacks
    def test_large_message_streamed(self):
        line = b"0123456789" * 7 + b"\r\n"
        msg = message("big", "bob@example.net") + line * 2000  # ~144 KB, under the 200 KB limit
        result = yield deliver(
            reactor, "127.0.0.1", self.ports["smtp"], ehlo_hostname="sender.example.net",
            mailfrom="bob@example.net", recipients=["other@example.org"], data=msg, command_timeout=10,
        )
        self.assertTrue(result.recipients[0].ok)
        [(_m, data)] = yield self.messages("other")
        self.assertTrue(data.endswith(msg))

    @defer.inlineCallbacks
    def test_size_limit_refused_early(self):
        msg = message() + b"x" * 250000 + b"\r\n"
        e = yield self.assertFailure(
            deliver(
                reactor, "127.0.0.1", self.ports["smtp"], ehlo_hostname="sender.example.net",
                mailfrom="bob@example.net", recipients=["other@example.org"], data=msg, command_timeout=10,
            ),
            SMTPClientError,
        )
        self.assertEqual((e.stage, e.enhanced, e.permanent, e.code), ("mail", "5.3.4", True, None))
