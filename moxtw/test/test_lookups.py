"""The operator lookup commands (spf, dkim, dmarc, dnsbl, tlsrpt) against a real DNS
server on loopback, named in the config's DNS.Servers."""

import os

import dkim
import tomlkit
from twisted.internet import defer
from twisted.trial import unittest

from moxtw.config import write_localserve_config
from moxtw.dkim.keys import generate_rsa, parse_private_key
from moxtw.test.clihelper import run_moxtw
from moxtw.test.dnsserver import loopback_dns


class LookupTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        pem = generate_rsa(2048)
        self.key = parse_private_key(pem)
        records = {
            ("example.org", "TXT"): ["v=spf1 ip4:192.0.2.10 -all", "other text"],
            ("sel._domainkey.example.org", "TXT"): [self.key.dns_record],
            ("_dmarc.example.org", "TXT"): ["v=DMARC1; p=reject"],
            ("_smtp._tls.example.org", "TXT"): ["v=TLSRPTv1; rua=mailto:tls@example.org"],
            ("2.0.0.127.bl.example", "A"): ["127.0.0.2"],
            ("2.0.0.127.bl.example", "TXT"): ["listed for testing"],
        }
        self.dns = loopback_dns(self, records)
        d = os.path.abspath(self.mktemp())
        self.config = write_localserve_config(d)
        path = os.path.join(self.config, "moxtw.toml")
        doc = tomlkit.parse(open(path).read())
        doc["DNS"] = {"Servers": [self.dns.address]}
        open(path, "w").write(tomlkit.dumps(doc))
        self.message = dkim.sign(b"From: a@example.org\r\nTo: b@example.net\r\nSubject: s\r\n\r\nbody\r\n",
                                 b"sel", b"example.org", self.key.dkimpy_key)
        self.message += b"From: a@example.org\r\nTo: b@example.net\r\nSubject: s\r\n\r\nbody\r\n"
        yield defer.succeed(None)

    @defer.inlineCallbacks
    def cli(self, *args, code=0, stdin=None):
        out, err, rc = yield run_moxtw(*args, "--config", self.config, stdin=stdin)
        self.assertEqual(rc, code, (args, out, err))
        return out.decode()

    @defer.inlineCallbacks
    def test_lookups(self):
        self.assertEqual((yield self.cli("spf", "lookup", "example.org")), "v=spf1 ip4:192.0.2.10 -all\n")
        out = yield self.cli("spf", "check", "192.0.2.10", "a@example.org", "mail.example.org")
        self.assertIn("mailfrom: pass (domain example.org), matched ip4:192.0.2.10", out)
        out = yield self.cli("spf", "check", "192.0.2.11", "a@example.org", "mail.example.org", code=1)
        self.assertIn("mailfrom: fail", out)
        out = yield self.cli("dkim", "lookup", "sel", "example.org")
        self.assertIn("v=DKIM1;k=rsa;p=", out)
        yield self.cli("dkim", "lookup", "nosel", "example.org", code=1)
        out = yield self.cli("dkim", "verify", "-", stdin=self.message)
        self.assertIn("pass: d=example.org s=sel a=rsa-sha256", out)
        out = yield self.cli("dkim", "verify", "-", stdin=self.message.replace(b"body", b"bodY"), code=1)
        self.assertIn("fail", out)
        out = yield self.cli("dmarc", "lookup", "sub.example.org")
        self.assertIn("record at _dmarc.example.org: v=DMARC1; p=reject", out)
        out = yield self.cli("dmarc", "verify", "192.0.2.99", "x@example.net", "spoof.example", "-", stdin=self.message)
        self.assertIn("dmarc: pass for example.org", out)
        self.assertIn("aligned: dkim", out)
        out = yield self.cli("dnsbl", "check", "bl.example", "127.0.0.2", code=1)
        self.assertIn("is listed in bl.example", out)
        out = yield self.cli("dnsbl", "check", "bl.example", "127.0.0.3")
        self.assertIn("not listed", out)
        out = yield self.cli("tlsrpt", "lookup", "example.org")
        self.assertEqual(out, "v=TLSRPTv1; rua=mailto:tls@example.org\n")
        # Bad input: clear errors.
        _, err, rc = yield run_moxtw("spf", "check", "not-an-ip", "a@example.org", "--config", self.config)
        self.assertEqual(rc, 1)
        self.assertIn(b"does not appear to be an IPv4 or IPv6 address", err)
