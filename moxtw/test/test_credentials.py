"""Tests for moxtw.sasl.credentials: SCRAM keys, CRAM-MD5 states, the resumable MD5."""

import base64
import hashlib
import hmac
import json

from twisted.trial.unittest import SynchronousTestCase

from moxtw.sasl import credentials as cr
from moxtw.sasl.credentials import (
    MD5,
    Credentials,
    PasswordError,
    cram_md5_digest,
    cram_md5_keys,
    derive,
    scram_client_keys,
    verify_password,
)


def _xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


class SCRAMVectorTests(SynchronousTestCase):
    """Server-side verification of the RFC 5802 5 and RFC 7677 3 exchanges using only
    StoredKey and ServerKey."""

    def check(self, hashname, client_first_bare, server_first, client_final, server_final):
        attrs = dict(a.split("=", 1) for a in server_first.split(","))
        salt = base64.b64decode(attrs["s"])
        iterations = int(attrs["i"])
        keys = cr.scram_keys("pencil", salt, iterations, hashname)

        without_proof, proof_attr = client_final.rsplit(",", 1)
        self.assertTrue(proof_attr.startswith("p="))
        proof = base64.b64decode(proof_attr[2:])
        # RFC 5802 3: AuthMessage, ClientSignature, ServerSignature.
        auth_message = ",".join((client_first_bare, server_first, without_proof)).encode()
        h = hashname.lower().replace("-", "")
        client_signature = hmac.new(keys.stored_key, auth_message, h).digest()
        client_key = _xor(proof, client_signature)
        self.assertEqual(hashlib.new(h, client_key).digest(), keys.stored_key)
        server_signature = hmac.new(keys.server_key, auth_message, h).digest()
        self.assertEqual("v=" + base64.b64encode(server_signature).decode(), server_final)

        # The client side helper produces the same proof.
        ck = scram_client_keys("pencil", salt, iterations, hashname)
        self.assertEqual(ck.client_key, client_key)
        self.assertEqual(ck.stored_key, keys.stored_key)
        self.assertEqual(ck.server_key, keys.server_key)
        self.assertEqual(
            _xor(ck.client_key, hmac.new(ck.stored_key, auth_message, h).digest()), proof
        )

    def test_rfc5802_sha1(self):
        self.check(
            "SHA-1",
            "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
        )

    def test_rfc7677_sha256(self):
        self.check(
            "SHA-256",
            "n=user,r=rOprNGfwEbeRWgbNEkqO",
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        )

    def test_bad_hash(self):
        self.assertRaises(ValueError, scram_client_keys, "pencil", b"salt", 4096, "md5")


class CramMD5Tests(SynchronousTestCase):
    def test_rfc2195(self):
        # RFC 2195 2: the example exchange.
        keys = cram_md5_keys("tanstaaftanstaaf")
        challenge = base64.b64decode("PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+")
        self.assertEqual(challenge, b"<1896.697170952@postoffice.reston.mci.net>")
        digest = cram_md5_digest(keys, challenge)
        self.assertEqual(digest, "b913a602c7eda7a495b4e6e7334d3890")
        self.assertEqual(
            base64.b64encode(b"tim " + digest.encode()),
            b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw",
        )

    def test_against_hmac(self):
        for password in ("a", "p" * 64, "long" * 40, "\u00e4\u00df\u20ac", "sp ace"):
            keys = cram_md5_keys(password)
            for challenge in (b"", b"<1.2@x>", b"c" * 55, b"c" * 64, b"c" * 200):
                self.assertEqual(
                    cram_md5_digest(keys, challenge),
                    hmac.new(password.encode(), challenge, "md5").hexdigest(),
                )

    def test_states_do_not_contain_password(self):
        keys = cram_md5_keys("tanstaaftanstaaf")
        self.assertEqual(len(keys.inner), 16)
        self.assertEqual(len(keys.outer), 16)
        self.assertNotIn(b"tanstaaf", keys.inner + keys.outer)


class MD5Tests(SynchronousTestCase):
    def test_vectors(self):
        # RFC 1321 A.5 test suite.
        self.assertEqual(MD5(b"").hexdigest(), "d41d8cd98f00b204e9800998ecf8427e")
        self.assertEqual(MD5(b"abc").hexdigest(), "900150983cd24fb0d6963f7d28e17f72")
        self.assertEqual(
            MD5(b"1234567890" * 8).hexdigest(), "57edf4a22be3c955ac49da2e2107b67a"
        )

    def test_against_hashlib(self):
        data = bytes(range(256)) * 3
        for n in (0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 700):
            self.assertEqual(MD5(data[:n]).digest(), hashlib.md5(data[:n]).digest(), n)

    def test_incremental_and_resume(self):
        data = bytes(range(200))
        m = MD5()
        for i in range(0, 200, 7):
            m.update(data[i : i + 7])
        self.assertEqual(m.digest(), hashlib.md5(data).digest())

        m = MD5(data[:128])
        resumed = MD5(state=m.state(), count=128)
        resumed.update(data[128:])
        self.assertEqual(resumed.digest(), hashlib.md5(data).digest())

    def test_state_only_on_block_boundary(self):
        self.assertRaises(ValueError, MD5(b"x").state)
        self.assertRaises(ValueError, MD5, state=b"\x00" * 16, count=3)
        self.assertRaises(ValueError, MD5, state=b"\x00" * 15, count=64)


class DeriveTests(SynchronousTestCase):
    def test_derive_and_verify(self):
        creds = derive("correct horse")
        self.assertEqual(creds.scram_sha1.iterations, 4096)
        self.assertEqual(creds.scram_sha256.iterations, 4096)
        self.assertEqual(len(creds.scram_sha1.stored_key), 20)
        self.assertEqual(len(creds.scram_sha256.server_key), 32)
        self.assertEqual(len(creds.scram_sha1.salt), 16)
        self.assertNotEqual(creds.scram_sha1.salt, creds.scram_sha256.salt)
        self.assertTrue(verify_password(creds, "correct horse"))
        self.assertFalse(verify_password(creds, "correct horsE"))
        self.assertFalse(verify_password(creds, ""))
        self.assertFalse(verify_password(creds, "bad\x00"))

    def test_salts_random(self):
        self.assertNotEqual(derive("x").scram_sha256.salt, derive("x").scram_sha256.salt)

    def test_precis_applied(self):
        # NFD and a non-ASCII space verify against the NFC, ASCII-space password.
        creds = derive("\u00e4 b")
        self.assertTrue(verify_password(creds, "a\u0308\u00a0b"))
        self.assertEqual(cram_md5_keys("a\u0308\u00a0b"), creds.cram_md5)

    def test_invalid_passwords(self):
        self.assertRaises(PasswordError, derive, "")
        self.assertRaises(PasswordError, derive, "tab\there")
        self.assertRaises(PasswordError, cram_md5_keys, "")
        self.assertRaises(PasswordError, scram_client_keys, "\u0378", b"s", 4096, "sha1")

    def test_iterations(self):
        self.assertRaises(ValueError, derive, "pw", iterations=1000)
        creds = derive("pw", iterations=5000, randbytes=lambda n: b"\x01" * n)
        self.assertEqual(creds.scram_sha256.iterations, 5000)
        self.assertEqual(creds.scram_sha256.salt, b"\x01" * 16)
        self.assertEqual(
            creds.scram_sha256, cr.scram_keys("pw", b"\x01" * 16, 5000, "sha256")
        )
        self.assertTrue(verify_password(creds, "pw"))

    def test_sha1_keys_match_scram(self):
        creds = derive("pencil")
        k = creds.scram_sha1
        self.assertEqual(k, cr.scram_keys("pencil", k.salt, k.iterations, "sha1"))


class JSONTests(SynchronousTestCase):
    def setUp(self):
        self.creds = derive("pencil", randbytes=lambda n: b"\x02" * n)

    def test_roundtrip(self):
        text = self.creds.to_json()
        self.assertIsInstance(text, str)
        d = json.loads(text)
        self.assertEqual(d["version"], 1)
        self.assertEqual(d["scram_sha256"]["iterations"], 4096)
        self.assertEqual(base64.b64decode(d["scram_sha1"]["salt"]), b"\x02" * 16)
        self.assertNotIn("pencil", text)
        self.assertEqual(Credentials.from_json(text), self.creds)
        self.assertEqual(Credentials.from_json(text.encode()), self.creds)
        self.assertEqual(Credentials.from_json(d), self.creds)

    def test_malformed(self):
        good = self.creds.to_dict()

        def broken(mutate):
            d = json.loads(json.dumps(good))
            mutate(d)
            return d

        cases = [
            broken(lambda d: d.pop("version")),
            broken(lambda d: d.pop("cram_md5")),
            broken(lambda d: d["scram_sha1"].update(iterations="4096")),
            broken(lambda d: d["scram_sha1"].update(iterations=0)),
            broken(lambda d: d["scram_sha1"].update(salt="not base64!")),
            broken(lambda d: d["scram_sha256"].update(stored_key=good["scram_sha1"]["stored_key"])),
            broken(lambda d: d["cram_md5"].update(inner="AAAA")),
            broken(lambda d: d["cram_md5"].update(outer=None)),
            [],
        ]
        for d in cases:
            self.assertRaises(ValueError, Credentials.from_json, d)
        self.assertRaises(ValueError, Credentials.from_json, "{not json")
