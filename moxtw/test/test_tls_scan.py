"""Every TLS listener of a running server (localserve), scanned with sslscan: no protocol
below TLS 1.2, and for TLS 1.2 only ECDHE with AEAD ciphers (moxtw.tls). Skipped without
sslscan (Debian package sslscan, installed by .ci/run)."""

import os
import re
import shutil

from twisted.internet import defer, utils
from twisted.trial import unittest

from moxtw.tls import TLS12_CIPHERS
from moxtw.test.test_localserve import free_offset, spawn_localserve

ALLOWED_12 = set(TLS12_CIPHERS.split(":"))


class SSLScanTests(unittest.TestCase):
    timeout = 180

    def setUp(self):
        self.sslscan = shutil.which("sslscan")
        if self.sslscan is None:
            raise unittest.SkipTest("sslscan not installed (apt-get install sslscan)")

    @defer.inlineCallbacks
    def test_every_listener(self):
        d = os.path.abspath(self.mktemp())
        offset = free_offset()
        proc = spawn_localserve(self, d, offset)
        yield proc.listening
        for port, extra in ((465 + offset, ()), (993 + offset, ()), (25 + offset, ("--starttls-smtp",)),
                            (587 + offset, ("--starttls-smtp",)), (143 + offset, ("--starttls-imap",))):
            out, err, code = yield utils.getProcessOutputAndValue(
                self.sslscan, ("--no-colour", "--no-heartbleed", *extra, f"127.0.0.1:{port}"), env=dict(os.environ))
            text = out.decode(errors="replace")
            self.assertEqual(code, 0, text + err.decode(errors="replace"))
            protocols = dict(re.findall(r"(?m)^(SSLv2|SSLv3|TLSv1\.[0-3])\s+(enabled|disabled)", text))
            self.assertEqual(protocols, {"SSLv2": "disabled", "SSLv3": "disabled", "TLSv1.0": "disabled",
                                         "TLSv1.1": "disabled", "TLSv1.2": "enabled", "TLSv1.3": "enabled"},
                             (port, text))
            accepted = re.findall(r"(?m)^(?:Preferred|Accepted)\s+(TLSv1\.[23])\s+\d+ bits\s+(\S+)", text)
            self.assertTrue(accepted, text)
            for version, cipher in accepted:
                if version == "TLSv1.2":
                    self.assertIn(cipher, ALLOWED_12, (port, text))
                else:
                    self.assertTrue(cipher.startswith("TLS_"), (port, cipher))
