"""Authentication-Results formatting and removal of forged results (RFC 8601), and the
combined checks with a mock resolver."""

from twisted.internet import defer
from twisted.trial import unittest

from moxtw.dns import MockResolver
from moxtw.smtpserver import msgauth


class ValueTests(unittest.SynchronousTestCase):
    def test_token_or_quoted(self):
        self.assertEqual(msgauth.ar_value("example.org"), "example.org")
        self.assertEqual(msgauth.ar_value("a b"), '"a b"')
        self.assertEqual(msgauth.ar_value('x"y\\z'), '"x\\"y\\\\z"')
        self.assertEqual(msgauth.ar_value("ab/c+="), '"ab/c+="')
        self.assertEqual(msgauth.ar_value("line\r\nInjected: yes"), '"line  Injected: yes"')
        self.assertEqual(msgauth.ar_value(""), '""')


class StripTests(unittest.SynchronousTestCase):
    def test_only_ours_removed(self):
        d = (b"Authentication-Results: Mail.Example.Org;\r\n\tspf=pass\r\n"
             b"Authentication-Results: mail.example.org.evil; dkim=pass\r\n"
             b"Authentication-Results:mail.example.org(comment); x=y\r\n"
             b"Subject: s\r\n\r\nAuthentication-Results: mail.example.org; body\r\n")
        out = msgauth.strip_own_authres(d, "mail.example.org")
        self.assertEqual(out, b"Authentication-Results: mail.example.org.evil; dkim=pass\r\n"
                              b"Subject: s\r\n\r\nAuthentication-Results: mail.example.org; body\r\n")

    def test_untouched(self):
        d = b"Subject: s\r\n\r\nbody"
        self.assertIs(msgauth.strip_own_authres(d, "mail.example.org"), d)
        self.assertIs(msgauth.strip_own_authres(b"no header end", "x"), b"no header end")

    def test_hidden_authserv_id(self):
        # Comments, quoting and a trailing dot do not hide our authserv-id (RFC 8601 2.2).
        for forged in (b"(x) mail.example.org", b'"mail.example.org"', b"mail.example.org.",
                       b"\r\n\t(a (b) c) MAIL.example.org"):
            d = b"Authentication-Results: " + forged + b"; dmarc=pass\r\nSubject: s\r\n\r\nb"
            self.assertEqual(msgauth.strip_own_authres(d, "mail.example.org"), b"Subject: s\r\n\r\nb")


MSG = b"From: Someone <someone@example.net>\r\nSubject: hi\r\n\r\nbody\r\n"


class AuthenticateTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_pass_and_header(self):
        r = MockResolver({
            ("example.net", "TXT"): ["v=spf1 ip4:192.0.2.1 -all"],
            ("_dmarc.example.net", "TXT"): ["v=DMARC1; p=reject"],
            ("1.2.0.192.in-addr.arpa", "PTR"): ["mx.example.net"],
            ("mx.example.net", "A"): ["192.0.2.1"],
            ("mx.example.net", "TXT"): ["v=spf1 a -all"],
        })
        res = yield defer.Deferred.fromCoroutine(msgauth.authenticate(
            r, remote_ip="192.0.2.1", ehlo="mx.example.net", mailfrom="bounce@example.net", data=MSG))
        self.assertEqual(res.dmarc.result, "pass")
        self.assertFalse(res.dmarc.reject)
        self.assertEqual(res.verified_domains(), {"example.net"})
        self.assertEqual(res.header("mail.example.org"), (
            b"Authentication-Results: mail.example.org;\r\n"
            b"\tiprev=pass policy.iprev=192.0.2.1 (mx.example.net);\r\n"
            b"\tdkim=none;\r\n"
            b"\tspf=pass smtp.mailfrom=example.net;\r\n"
            b"\tspf=pass smtp.helo=mx.example.net;\r\n"
            b"\tdmarc=pass header.from=example.net\r\n"))
        facts = res.facts()
        self.assertTrue(facts["msgfrom_validated"])
        self.assertEqual(facts["msgfrom_org_domain"], "example.net")

    @defer.inlineCallbacks
    def test_reject_on_fail(self):
        r = MockResolver({
            ("example.net", "TXT"): ["v=spf1 ip4:192.0.2.1 -all"],
            ("_dmarc.example.net", "TXT"): ["v=DMARC1; p=quarantine"],
        })
        res = yield defer.Deferred.fromCoroutine(msgauth.authenticate(
            r, remote_ip="198.51.100.7", ehlo="evil.example", mailfrom="x@evil.example", data=MSG))
        self.assertEqual(res.dmarc.result, "fail")
        self.assertTrue(res.dmarc.reject)  # as mox: quarantine rejects too
        self.assertIn(b"dmarc=fail reason=\"p=quarantine\" header.from=example.net",
                      res.header("mail.example.org"))

    @defer.inlineCallbacks
    def test_garbage_message_never_raises(self):
        r = MockResolver({})
        for data in (b"", b"\xff\xfe\x00garbage", b"From: a@b@c\r\n\r\n", b"DKIM-Signature: v=1; ???\r\n\r\n"):
            res = yield defer.Deferred.fromCoroutine(msgauth.authenticate(
                r, remote_ip="192.0.2.1", ehlo="", mailfrom="", data=data))
            self.assertIsInstance(res.header("h"), bytes)
