"""Tests for moxtw.sasl.scram: the RFC 5802 7 grammar, saslname escaping and the
proof and signature computations with the RFC 5802 5 and RFC 7677 3 vectors."""

import base64

from twisted.trial.unittest import SynchronousTestCase

from moxtw.sasl import scram
from moxtw.sasl.credentials import scram_client_keys, scram_keys
from moxtw.sasl.scram import ScramSyntaxError


class SaslnameTests(SynchronousTestCase):
    def test_escape(self):
        # RFC 5802 5.1: "=" first, so "=2C" in a name is not mistaken for a comma.
        self.assertEqual(scram.escape_saslname("a,b=c"), "a=2Cb=3Dc")
        self.assertEqual(scram.escape_saslname("=2C"), "=3D2C")
        self.assertEqual(scram.escape_saslname("user"), "user")

    def test_roundtrip(self):
        for name in ("user", "a,b=c", "=2C", ",,==", "m\u00fcller@example.org", "a=3Db"):
            self.assertEqual(scram.unescape_saslname(scram.escape_saslname(name)), name)

    def test_bad(self):
        for value in ("", "a=b", "a=", "a=2", "a=2c", "a=3d", "a,b", "a\x00b", "=41"):
            self.assertRaises(ScramSyntaxError, scram.unescape_saslname, value)


class ParseTests(SynchronousTestCase):
    def test_client_first(self):
        cf = scram.parse_client_first("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
        self.assertEqual(cf.gs2, scram.GS2Header("n", None, "", "n,,"))
        self.assertEqual(cf.username, "user")
        self.assertEqual(cf.nonce, "fyko+d2lbbFgONRv9qkxdawL")
        self.assertEqual(cf.bare, "n=user,r=fyko+d2lbbFgONRv9qkxdawL")

    def test_client_first_gs2(self):
        cf = scram.parse_client_first("p=tls-unique,a=u=2Cser,n=u=2Cser,r=x,y=z")
        self.assertEqual(
            cf.gs2, scram.GS2Header("p", "tls-unique", "u,ser", "p=tls-unique,a=u=2Cser,")
        )
        self.assertEqual(cf.username, "u,ser")
        self.assertEqual(cf.bare, "n=u=2Cser,r=x,y=z")
        self.assertEqual(scram.parse_client_first("y,,n=a,r=b").gs2.flag, "y")

    def test_client_first_bad(self):
        for msg in ("n,,m=x,n=a,r=b", "n,,n=a", "n,,r=b", "q,,n=a,r=b", "p=a b,,n=a,r=b",
                    "n,a,n=a,r=b", "n,,n=a,r=b c", "n,,n=a,r=b,=c", "n,,n=a,r=b,cc=d",
                    "n,,n=a\x00,r=b", "n,,n=a,r=\u00e9"):
            self.assertRaises(ScramSyntaxError, scram.parse_client_first, msg)

    def test_server_first(self):
        sf = scram.parse_server_first("r=abc,s=QSXCR+Q6sek8bf92,i=4096")
        salt = base64.b64decode("QSXCR+Q6sek8bf92")
        self.assertEqual((sf.nonce, sf.salt, sf.iterations), ("abc", salt, 4096))
        self.assertEqual(scram.format_server_first("abc", sf.salt, 4096), sf.raw)

    def test_client_final(self):
        cf = scram.parse_client_final("c=biws,r=abc,x=1,p=AAAA")
        self.assertEqual(cf.channel_binding, b"n,,")
        self.assertEqual(cf.nonce, "abc")
        self.assertEqual(cf.proof, b"\x00\x00\x00")
        self.assertEqual(cf.without_proof, "c=biws,r=abc,x=1")

    def test_server_final(self):
        self.assertEqual(
            scram.parse_server_final("v=AAAA"), scram.ServerFinal(None, b"\x00\x00\x00")
        )
        self.assertEqual(
            scram.parse_server_final("e=other-error,x=1"), scram.ServerFinal("other-error", None)
        )
        for msg in ("", "v=", "e=", "x=y", "v=AAAA,1"):
            self.assertRaises(ScramSyntaxError, scram.parse_server_final, msg)

    def test_nonce(self):
        n = scram.new_nonce()
        self.assertEqual(len(n), 24)
        self.assertNotIn(",", n)
        self.assertNotEqual(n, scram.new_nonce())
        self.assertEqual(scram.new_nonce(lambda k: b"\x00" * k), "A" * 24)

    def test_channel_binding_input(self):
        # RFC 5802 7: cbind-input = gs2-header [cbind-data]; "n,," is "biws".
        self.assertEqual(base64.b64encode(scram.channel_binding_input("n,,", None)), b"biws")
        self.assertEqual(
            scram.channel_binding_input("p=tls-unique,,", b"\x01\x02"), b"p=tls-unique,,\x01\x02"
        )


class ComputationTests(SynchronousTestCase):
    def vector(self, hashname, bare, server_first, client_final, server_final):
        sf = scram.parse_server_first(server_first)
        cf = scram.parse_client_final(client_final)
        am = scram.auth_message(bare, server_first, cf.without_proof)
        keys = scram_keys("pencil", sf.salt, sf.iterations, hashname)
        self.assertTrue(scram.verify_client_proof(keys.stored_key, cf.proof, am, hashname))
        self.assertFalse(scram.verify_client_proof(keys.stored_key, cf.proof[::-1], am, hashname))
        self.assertFalse(scram.verify_client_proof(keys.stored_key, cf.proof[:-1], am, hashname))
        sig = scram.server_signature(keys.server_key, am, hashname)
        self.assertEqual(scram.parse_server_final(server_final).verifier, sig)
        ck = scram_client_keys("pencil", sf.salt, sf.iterations, hashname)
        self.assertEqual(scram.client_proof(ck.client_key, ck.stored_key, am, hashname), cf.proof)

    def test_rfc5802(self):
        self.vector(
            "sha1",
            "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        )

    def test_rfc7677(self):
        self.vector(
            "sha256",
            "n=user,r=rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        )
