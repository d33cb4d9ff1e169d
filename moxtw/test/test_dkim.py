"""moxtw.dkim: keys, signing, verification (RFC 6376, RFC 8463, RFC 8301), key commands."""

import base64
import io
import os
import random
import shutil
import subprocess

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dkim.util import parse_tag_value
from twisted.internet import task
from twisted.trial import unittest

from moxtw.test.test_cli import run_cli
from moxtw.config.schema import DKIMConfig
from moxtw.dkim import canon, keys
from moxtw.dkim.sign import (
    DEFAULT_HEADERS, SelectorKey, SignError, Signer, from_domain, signed_header_names,
)
from moxtw.dkim.verify import (
    FAIL, NEUTRAL, PASS, PERMERROR, POLICY, TEMPERROR, DKIMResult, _set_header_b, verify,
    verify_async,
)
from moxtw.dns import MockResolver, NoRecords, TemporaryFailure

NOW = 1700000000  # 2023-11-14, a fixed signing time

MESSAGE = (
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"To: Suzie Q <suzie@shopping.example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
    b"\r\n"
    b"We lost the game.  Are you hungry yet?\r\n"
    b"\r\n"
    b"Joe.\r\n"
)

# RFC 8463 Appendix A.1: the example keys. A.2: their DNS records.
RFC8463_ED25519_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RFC8463_RSA_PEM = b"""-----BEGIN RSA PRIVATE KEY-----
MIICXQIBAAKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQi
Y/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqM
KrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB
AoGAH0cxOhFZDgzXWhDhnAJDw5s4roOXN4OhjiXa8W7Y3rhX3FJqmJSPuC8N9vQm
6SVbaLAE4SG5mLMueHlh4KXffEpuLEiNp9Ss3O4YfLiQpbRqE7Tm5SxKjvvQoZZe
zHorimOaChRL2it47iuWxzxSiRMv4c+j70GiWdxXnxe4UoECQQDzJB/0U58W7RZy
6enGVj2kWF732CoWFZWzi1FicudrBFoy63QwcowpoCazKtvZGMNlPWnC7x/6o8Gc
uSe0ga2xAkEA8C7PipPm1/1fTRQvj1o/dDmZp243044ZNyxjg+/OPN0oWCbXIGxy
WvmZbXriOWoSALJTjExEgraHEgnXssuk7QJBALl5ICsYMu6hMxO73gnfNayNgPxd
WFV6Z7ULnKyV7HSVYF0hgYOHjeYe9gaMtiJYoo0zGN+L3AAtNP9huqkWlzECQE1a
licIeVlo1e+qJ6Mgqr0Q7Aa7falZ448ccbSFYEPD6oFxiOl9Y9se9iYHZKKfIcst
o7DUw1/hz2Ck4N5JrgUCQQCyKveNvjzkkd8HjYs0SwM0fPjK16//5qDZ2UiDGnOe
uEzxBDAr518Z8VFbR41in3W4Y3yCDgQlLlcETrS+zYcL
-----END RSA PRIVATE KEY-----
"""
RFC8463_RECORDS = {
    "brisbane._domainkey.football.example.com": [
        "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],
    "test._domainkey.football.example.com": [
        "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWR"
        "iGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutAC"
        "DfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3"
        "Ip3G+2kryOTIKT+l/K4w3QIDAQAB"],
}
# RFC 8463 Appendix A.3: the signed example message (RFC 6376 A.1's message).
RFC8463_SIGNED = b"""DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;
 d=football.example.com; i=@football.example.com;
 q=dns/txt; s=brisbane; t=1528637909; h=from : to :
 subject : date : message-id : from : subject : date;
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
 b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus
 Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;
 d=football.example.com; i=@football.example.com;
 q=dns/txt; s=test; t=1528637909; h=from : to : subject :
 date : message-id : from : subject : date;
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
 b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3
 DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz
 dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=
""".replace(b"\n", b"\r\n") + MESSAGE

_KEYS = {}


def rsa_key(bits=1024):
    """An RSA test key, generated once per size (1024 bits keeps the tests fast)."""
    if ("rsa", bits) not in _KEYS:
        _KEYS[("rsa", bits)] = keys.parse_private_key(keys.generate_rsa(bits))
    return _KEYS[("rsa", bits)]


def ed_key():
    if "ed" not in _KEYS:
        _KEYS["ed"] = keys.parse_private_key(keys.generate_ed25519())
    return _KEYS["ed"]


def lookup_from(records):
    """A txt_lookup over a MockResolver with ``{name: [txt]}``."""
    resolver = MockResolver({(name, "TXT"): value for name, value in records.items()})
    return lambda name: list(resolver.lookup_sync(name, "TXT").records)


def small_prime(bits, rng):
    """A random prime of ``bits`` bits (Miller-Rabin), for a weak-key test."""
    while True:
        n = rng.getrandbits(bits) | (3 << (bits - 2)) | 1  # top bits set: n = p*q has 2*bits
        d, s = n - 1, 0
        while d % 2 == 0:
            d, s = d // 2, s + 1
        for _ in range(20):
            x = pow(rng.randrange(2, n - 1), d, n)
            if x in (1, n - 1):
                continue
            for _ in range(s - 1):
                x = pow(x, 2, n)
                if x == n - 1:
                    break
            else:
                break
        else:
            return n


def weak_rsa_private_key():
    """A 512-bit RSA key (cryptography refuses to generate one)."""
    rng = random.Random(8301)
    e = 65537
    while True:
        p, q = small_prime(256, rng), small_prime(256, rng)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e:
            break
    d = pow(e, -1, phi)
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(e, p * q))
    return numbers.private_key()


def signer(*selectors, domain="football.example.com"):
    return Signer(domain, list(selectors))


class KeyTests(unittest.SynchronousTestCase):
    def test_rsa_roundtrip(self):
        pem = keys.generate_rsa(1024)
        self.assertTrue(pem.startswith(b"-----BEGIN PRIVATE KEY-----"))  # PKCS#8
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(pem)
        key = keys.load_private_key(path)
        self.assertEqual((key.algorithm, key.bits), ("rsa", 1024))
        self.assertTrue(key.dns_record.startswith("v=DKIM1;k=rsa;p=MIGfMA0"))
        # dkimpy reads the key in its own format, and the record's public key.
        self.assertEqual(dkim.crypto.parse_pem_private_key(key.dkimpy_key)["modulus"],
                         key.crypto.private_numbers().public_numbers.n)
        self.assertNotIn("PRIVATE", repr(key))

    def test_ed25519_roundtrip(self):
        pem = keys.generate_ed25519()
        self.assertTrue(pem.startswith(b"-----BEGIN PRIVATE KEY-----"))
        key = keys.parse_private_key(pem)
        self.assertEqual(key.algorithm, "ed25519")
        tags = parse_tag_value(key.dns_record.encode())
        self.assertEqual((tags[b"v"], tags[b"k"]), (b"DKIM1", b"ed25519"))
        self.assertEqual(len(base64.b64decode(tags[b"p"])), 32)  # RFC 8463 4.2
        self.assertEqual(len(base64.b64decode(key.dkimpy_key)), 32)

    def test_rfc8463_keys_match_records(self):
        ed = keys.from_crypto_key(ed25519.Ed25519PrivateKey.from_private_bytes(
            base64.b64decode(RFC8463_ED25519_SEED)))
        self.assertEqual(ed.dns_record.replace(";", "; "),
                         RFC8463_RECORDS["brisbane._domainkey.football.example.com"][0])
        # PKCS#1 PEM is accepted too.
        rsakey = keys.parse_private_key(RFC8463_RSA_PEM)
        self.assertEqual(rsakey.dns_record.replace(";", "; "),
                         RFC8463_RECORDS["test._domainkey.football.example.com"][0])

    def test_errors_name_the_file(self):
        missing = self.mktemp()
        e = self.assertRaises(ValueError, keys.load_private_key, missing)
        self.assertIn(missing, str(e))
        garbage = self.mktemp()
        with open(garbage, "wb") as f:
            f.write(b"not a key\n")
        e = self.assertRaises(ValueError, keys.load_private_key, garbage)
        self.assertIn(garbage, str(e))
        ecfile = self.mktemp()
        with open(ecfile, "wb") as f:
            f.write(ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
        e = self.assertRaises(ValueError, keys.load_private_key, ecfile)
        self.assertIn(ecfile, str(e))
        self.assertIn("unsupported key type", str(e))
        encrypted = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"))
        e = self.assertRaises(ValueError, keys.parse_private_key, encrypted, "enc.pem")
        self.assertIn("enc.pem: encrypted", str(e))

    def test_weak_rsa_refused(self):
        pem = weak_rsa_private_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        e = self.assertRaises(ValueError, keys.parse_private_key, pem, "weak.pem")
        self.assertIn("512 bits is too small", str(e))
        self.assertRaises(ValueError, keys.generate_rsa, 512)

    def test_txt_strings(self):
        record = rsa_key(2048).dns_record
        parts = keys.txt_strings(record)
        self.assertEqual("".join(parts), record)
        self.assertTrue(all(len(p) <= 255 for p in parts))
        self.assertEqual(len(parts), 2)


class SignTests(unittest.SynchronousTestCase):
    def test_several_selectors_rsa_and_ed25519(self):
        s = signer(SelectorKey("rsa", rsa_key()), SelectorKey("ed", ed_key()))
        headers = s.sign(MESSAGE, now=NOW)
        fields = headers.split(b"\r\nDKIM-Signature:")
        self.assertEqual(len(fields), 2)
        self.assertTrue(headers.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=simple/simple;"))
        self.assertIn(b"a=ed25519-sha256", fields[1])
        self.assertTrue(headers.endswith(b"\r\n"))
        self.assertNotIn(b"\n", headers.replace(b"\r\n", b""))
        for line in headers.split(b"\r\n")[:-1]:
            self.assertLessEqual(len(line), 78)
        signed = headers + MESSAGE
        records = {"rsa._domainkey.football.example.com": [rsa_key().dns_record],
                   "ed._domainkey.football.example.com": [ed_key().dns_record]}
        results = verify(signed, lookup_from(records), now=NOW + 60)
        self.assertEqual([(r.selector, r.algorithm, r.result) for r in results],
                         [("rsa", "rsa-sha256", PASS), ("ed", "ed25519-sha256", PASS)])
        self.assertEqual(results[0].domain, "football.example.com")
        self.assertEqual((results[0].key_type, results[0].key_bits), ("rsa", 1024))
        self.assertEqual((results[1].key_type, results[1].key_bits), ("ed25519", 256))

        # dkimpy's own verifier agrees on the RSA signature (its ed25519 code needs
        # pynacl, which is not a dependency).
        def dnsfunc(name, timeout=5):
            return records[name.decode().rstrip(".")][0].encode()

        self.assertTrue(dkim.DKIM(signed).verify(idx=0, dnsfunc=dnsfunc))

    def test_tags(self):
        sel = SelectorKey("sel", rsa_key(), expiration=3600, header_relaxed=True)
        headers = signer(sel, domain="Bücher.Example").sign(MESSAGE, now=NOW)
        name, value = canon.parse_message(headers + MESSAGE)[0][0]
        tags = parse_tag_value(value)
        self.assertEqual(tags[b"d"], b"xn--bcher-kva.example")  # A-label
        self.assertEqual(tags[b"s"], b"sel")
        self.assertEqual(tags[b"c"], b"relaxed/simple")
        self.assertEqual(tags[b"t"], str(NOW).encode())
        self.assertEqual(tags[b"x"], str(NOW + 3600).encode())
        self.assertNotIn(b"l", tags)

    def test_default_headers_and_sealing(self):
        msg = b"Sender: list@example.org\r\n" + MESSAGE
        present = {"from": 1, "to": 1, "subject": 1, "date": 1, "message-id": 1, "sender": 1}
        sel = SelectorKey("s", rsa_key())
        names = signed_header_names(sel, present)
        # Present fields once each, then every name once more (sealing), including
        # absent default ones and the present Sender; absent List-* are not listed.
        self.assertEqual(names[:5], ["From", "To", "Subject", "Date", "Message-ID"])
        self.assertEqual(names.count("From"), 2)
        self.assertEqual(names.count("Sender"), 2)
        self.assertEqual(names.count("Cc"), 1)
        self.assertNotIn("List-Id", names)
        self.assertEqual(set(names), set(DEFAULT_HEADERS) | {"Sender"})
        unsealed = signed_header_names(SelectorKey("s", rsa_key(), seal=False), present)
        self.assertEqual(sorted(unsealed), sorted(["From", "To", "Subject", "Date", "Message-ID", "Sender"]))
        configured = signed_header_names(
            SelectorKey("s", rsa_key(), headers=("from", "Subject", "X-Absent")), present)
        self.assertEqual(configured, ["from", "Subject", "from", "Subject", "X-Absent"])
        headers = signer(sel).sign(msg, now=NOW)
        self.assertEqual(verify(headers + msg, lookup_from(
            {"s._domainkey.football.example.com": [rsa_key().dns_record]}))[0].result, PASS)

    def test_canonicalizations(self):
        sels = []
        for hr in (False, True):
            for br in (False, True):
                sels.append(SelectorKey(f"h{int(hr)}b{int(br)}", rsa_key(), header_relaxed=hr,
                                        body_relaxed=br))
        signed = signer(*sels).sign(MESSAGE, now=NOW) + MESSAGE
        records = {f"{s.name}._domainkey.football.example.com": [rsa_key().dns_record] for s in sels}
        lookup = lookup_from(records)

        def outcome(msg):
            return {r.selector: r.result for r in verify(msg, lookup, now=NOW)}

        self.assertEqual(set(outcome(signed).values()), {PASS})
        # Header whitespace and case changes: only relaxed header canonicalization survives.
        changed = signed.replace(b"Subject: Is dinner ready?", b"subject:   Is dinner\r\n  ready?")
        self.assertEqual(outcome(changed), {"h0b0": FAIL, "h0b1": FAIL, "h1b0": PASS, "h1b1": PASS})
        # Body whitespace changes: only relaxed body canonicalization survives.
        changed = signed.replace(b"the game.  Are", b"the game. \t Are").replace(
            b"Joe.\r\n", b"Joe.   \r\n\r\n\r\n")
        self.assertEqual(outcome(changed), {"h0b0": FAIL, "h0b1": PASS, "h1b0": FAIL, "h1b1": PASS})
        # dkimpy agrees for all four.
        d = dkim.DKIM(signed)
        for i in range(4):
            self.assertTrue(d.verify(idx=i, dnsfunc=lambda name, timeout=5: rsa_key().dns_record.encode()))

    def test_sha1_signed_and_noted(self):
        sel = SelectorKey("old", rsa_key(), hash="sha1")
        signed = signer(sel).sign(MESSAGE, now=NOW) + MESSAGE
        self.assertIn(b"a=rsa-sha1", signed)
        [r] = verify(signed, lookup_from({"old._domainkey.football.example.com": [rsa_key().dns_record]}))
        self.assertEqual(r.result, PASS)
        self.assertIn("RFC 8301", r.reason)
        self.assertRaises(SignError, signer(SelectorKey("e", ed_key(), hash="sha1")).sign, MESSAGE)

    def test_message_unchanged_lf_input(self):
        lf = MESSAGE.replace(b"\r\n", b"\n")
        sel = SelectorKey("s", ed_key())
        headers = signer(sel).sign(lf, now=NOW)
        # The same signature verifies on the CRLF form the message travels in.
        [r] = verify(headers + MESSAGE, lookup_from(
            {"s._domainkey.football.example.com": [ed_key().dns_record]}))
        self.assertEqual(r.result, PASS)

    def test_sign_errors(self):
        s = signer(SelectorKey("s", ed_key()))
        e = self.assertRaises(SignError, s.sign, b"From: a@b.example\r\nFrom: c@b.example\r\n\r\nx")
        self.assertIn("2 From", str(e))
        self.assertRaises(SignError, s.sign, b"To: a@b.example\r\n\r\nx")
        self.assertRaises(SignError, s.sign, b"From a@b.example\r\nbroken header\r\n\r\nx")
        self.assertEqual(signer().sign(MESSAGE), b"")

    def test_from_config(self):
        confdir = self.mktemp()
        os.makedirs(os.path.join(confdir, "dkim"))
        with open(os.path.join(confdir, "dkim", "a.rsa.pem"), "wb") as f:
            f.write(keys.generate_rsa(1024))
        with open(os.path.join(confdir, "dkim", "b.ed25519.pem"), "wb") as f:
            f.write(keys.generate_ed25519())
        cfg = DKIMConfig.model_validate({
            "Selectors": {
                "2024a": {"PrivateKeyFile": "dkim/a.rsa.pem", "Expiration": "72h",
                          "Canonicalization": {"HeaderRelaxed": True, "BodyRelaxed": True}},
                "2024b": {"PrivateKeyFile": "dkim/b.ed25519.pem", "DontSealHeaders": True,
                          "Headers": ["From", "Subject"]},
                "unused": {"PrivateKeyFile": "dkim/missing.pem"},
            },
            "Sign": ["2024b", "2024a"],
        })
        s = Signer.from_config("football.example.com", cfg, confdir)
        self.assertEqual([sel.name for sel in s.selectors], ["2024b", "2024a"])
        a = s.selectors[1]
        self.assertEqual((a.expiration, a.header_relaxed, a.body_relaxed, a.seal), (72 * 3600, True, True, True))
        b = s.selectors[0]
        self.assertEqual((b.headers, b.seal, b.key.algorithm), (("From", "Subject"), False, "ed25519"))
        headers = s.sign(MESSAGE, now=NOW)
        records = {f"{sel.name}._domainkey.football.example.com": [sel.key.dns_record]
                   for sel in s.selectors}
        results = verify(headers + MESSAGE, lookup_from(records), now=NOW + 3600)
        self.assertEqual([(r.selector, r.result) for r in results], [("2024b", PASS), ("2024a", PASS)])
        self.assertIn(b"h=From:Subject;", headers)
        self.assertIn(b"x=%d;" % (NOW + 72 * 3600), headers)

        cfg.Sign.append("unused")
        e = self.assertRaises(ValueError, Signer.from_config, "football.example.com", cfg, confdir)
        self.assertIn("missing.pem", str(e))

    def test_from_domain(self):
        self.assertEqual(from_domain(MESSAGE), "football.example.com")
        self.assertEqual(from_domain(b"X: y\nfrom: \"A, B\" <a@EXAMPLE.org>\n\nbody"), "example.org")
        self.assertEqual(from_domain(b"From: =?utf-8?q?J=C3=B6?=\r\n <jo@xn--bcher-kva.example>\r\n\r\n"),
                         "bücher.example")
        self.assertIsNone(from_domain(b"From: a@x.example, b@y.example\r\n\r\n"))
        self.assertIsNone(from_domain(b"From: a@x.example\r\nFrom: b@y.example\r\n\r\n"))
        self.assertIsNone(from_domain(b"To: a@x.example\r\n\r\nFrom: b@y.example\r\n"))
        self.assertIsNone(from_domain(b"From: undisclosed\r\n\r\n"))
        self.assertIsNone(from_domain(b"From: a@-bad-.example\r\n\r\n"))


class VerifyTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.key = ed_key()
        self.records = {"sel._domainkey.football.example.com": [self.key.dns_record]}

    def sign(self, msg=MESSAGE, **kw):
        return signer(SelectorKey("sel", kw.pop("key", self.key), **kw)).sign(msg, now=NOW) + msg

    def check(self, msg, result, reason="", records=None, now=NOW + 60, **kw):
        results = verify(msg, lookup_from(self.records if records is None else records), now=now, **kw)
        self.assertEqual(len(results), 1, results)
        self.assertEqual(results[0].result, result, results[0].reason)
        self.assertIn(reason, results[0].reason)
        return results[0]

    def test_pass(self):
        r = self.check(self.sign(), PASS)
        self.assertEqual((r.domain, r.selector, r.identity), ("football.example.com", "sel", ""))
        self.assertEqual(len(r.header_b), 8)

    def test_no_signature(self):
        self.assertEqual(verify(MESSAGE, lookup_from({})), [])

    def test_tampered_body(self):
        msg = self.sign().replace(b"hungry yet?", b"hungry now?")
        self.check(msg, FAIL, "body hash")

    def test_tampered_header(self):
        msg = self.sign().replace(b"Subject: Is dinner ready?", b"Subject: Is lunch ready?")
        self.check(msg, FAIL, "signature does not verify")

    def test_missing_key(self):
        r = self.check(self.sign(), PERMERROR, "no key", records={})
        self.assertEqual((r.domain, r.selector), ("football.example.com", "sel"))
        self.check(self.sign(), PERMERROR, "no key",
                   records={"sel._domainkey.football.example.com": NoRecords})
        # RFC 6376 6.1.2 step 5: a record that is not a key record is a syntax error.
        self.check(self.sign(), PERMERROR, "key record syntax error",
                   records={"sel._domainkey.football.example.com": ["not a key record"]})

    def test_key_syntax_error(self):
        self.check(self.sign(), PERMERROR, "key syntax error",
                   records={"sel._domainkey.football.example.com": ["v=DKIM1; k=ed25519; p=AAAA"]})
        self.check(self.sign(), PERMERROR, "not valid base64",
                   records={"sel._domainkey.football.example.com": ["v=DKIM1; k=ed25519; p=@@@"]})

    def test_first_valid_record_used(self):
        # RFC 6376 3.6.2.2: several records are undefined; ignore non-DKIM ones.
        self.check(self.sign(), PASS, records={"sel._domainkey.football.example.com": [
            "v=spf1 -all", "v=DKIM2; p=x", self.key.dns_record]})

    def test_revoked_key(self):
        # RFC 6376 6.1.2 step 7: empty p= is a revoked key, PERMFAIL -> permerror.
        self.check(self.sign(), PERMERROR, "revoked",
                   records={"sel._domainkey.football.example.com": ["v=DKIM1; k=ed25519; p="]})

    def test_temperror(self):
        self.check(self.sign(), TEMPERROR, "temporary failure",
                   records={"sel._domainkey.football.example.com": TemporaryFailure})

    def test_expiry(self):
        msg = self.sign(expiration=3600)
        self.check(msg, PASS, now=NOW + 3599)
        self.check(msg, PERMERROR, "signature expired at 2023-11-14T23:13:20Z", now=NOW + 3601)
        # x= not after t=.
        bad = msg.replace(b"x=%d;" % (NOW + 3600), b"x=%d;" % (NOW - 10))
        self.check(bad, PERMERROR, "x= expiration is not after t=", now=NOW - 100)

    def test_oversigning(self):
        msg = self.sign()
        self.assertEqual(parse_tag_value(canon.parse_message(msg)[0][0][1])[b"h"].replace(
            b"\r\n ", b"").split(b":").count(b"From"), 2)
        sig_end = msg.index(b"\r\nFrom:") + 2
        extra = b"From: Mallory <mallory@football.example.com>\r\n"
        # A second From added above or below the original breaks the signature.
        self.check(msg[:sig_end] + extra + msg[sig_end:], FAIL)
        self.check(msg.replace(b"\r\n\r\n", b"\r\n" + extra + b"\r\n", 1), FAIL)
        # An added Reply-To (absent when signed) breaks it too.
        self.check(msg.replace(b"\r\n\r\n", b"\r\nReply-To: mallory@evil.example\r\n\r\n", 1), FAIL)
        # Without sealing, a From added at the top goes unnoticed: that is what sealing is for.
        unsealed = self.sign(seal=False)
        sig_end = unsealed.index(b"\r\nFrom:") + 2
        self.check(unsealed[:sig_end] + extra + unsealed[sig_end:], PASS)

    def test_key_record_rules(self):
        name = "sel._domainkey.football.example.com"
        p = self.key.dns_record.split("p=")[1]
        for record, result, reason in [
            (f"v=DKIM1; k=ed25519; h=sha1; p={p}", PERMERROR, "does not allow hash"),
            (f"v=DKIM1; k=rsa; p={p}", PERMERROR, "does not match"),
            (f"v=DKIM1; k=ed25519; s=other; p={p}", PERMERROR, "not for email"),
            (f"v=DKIM1; k=ed25519; s=email:other; h=sha256; p={p}", PASS, ""),
            (f"v=DKIM1; k=ed25519; t=y; p={p}", PASS, "testing mode"),
            (f"k=ed25519; p={p}", PASS, ""),
            ("v=DKIM1; k=ed25519; p=", PERMERROR, "revoked"),
        ]:
            self.check(self.sign(), result, reason, records={name: [record]})
        # A testing key's failures are neutral (RFC 6376 3.6.1 t=y).
        self.check(self.sign().replace(b"hungry", b"HUNGRY"), NEUTRAL, "testing mode",
                   records={name: [f"v=DKIM1; k=ed25519; t=y; p={p}"]})
        # t=s: i= must use d= exactly.
        msg = self.sign().replace(b"DKIM-Signature: v=1;", b"DKIM-Signature: v=1; i=@sub.football.example.com;")
        self.check(msg, PERMERROR, "t=s", records={name: [f"v=DKIM1; k=ed25519; t=s; p={p}"]})

    def test_weak_rsa_key(self):
        # RFC 8301 3.2: keys under 1024 bits are not accepted.
        weak = weak_rsa_private_key()
        spki = weak.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        record = "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode()
        msg = self.sign(key=rsa_key())
        self.check(msg, PERMERROR, "512 bits is too weak",
                   records={"sel._domainkey.football.example.com": [record]})

    def test_policy(self):
        msg = self.sign()
        with_l = msg.replace(b"DKIM-Signature: v=1;", b"DKIM-Signature: v=1; l=10;")
        self.check(with_l, POLICY, "l=")
        no_subject = self.sign(headers=("From", "To"))
        self.check(no_subject, POLICY, "Subject")
        # Without a policy, the signature is checked (and here passes).
        self.check(no_subject, PASS, policy=None)

    def test_public_suffix_domain(self):
        msg = MESSAGE.replace(b"joe@football.example.com", b"joe@com")
        signed = Signer("com", [SelectorKey("sel", self.key)]).sign(msg, now=NOW) + msg
        self.check(signed, PERMERROR, "public suffix",
                   records={"sel._domainkey.com": [self.key.dns_record]})
        # localserve signs as localhost.
        msg = MESSAGE.replace(b"joe@football.example.com", b"mox@localhost")
        signed = Signer("localhost", [SelectorKey("sel", self.key)]).sign(msg, now=NOW) + msg
        records = {"sel._domainkey.localhost": [self.key.dns_record]}
        self.check(signed, PERMERROR, "public suffix", records=records)
        self.check(signed, PASS, records=records, localserve=True)

    def test_identity(self):
        msg = self.sign().replace(b"DKIM-Signature: v=1;", b"DKIM-Signature: v=1; i=joe@football.example.com;")
        # i= is part of the signed header, so changing it breaks the signature; the
        # parsing and the subdomain rule are what is tested here.
        r = self.check(msg, FAIL)
        self.assertEqual(r.identity, "joe@football.example.com")
        bad = self.sign().replace(b"DKIM-Signature: v=1;", b"DKIM-Signature: v=1; i=joe@other.example;")
        self.check(bad, PERMERROR, "i= domain")
        bad = self.sign().replace(b"DKIM-Signature: v=1;", b"DKIM-Signature: v=1; i=football.example.com;")
        self.check(bad, PERMERROR, "i= domain")

    def test_rfc8463_example(self):
        results = verify(RFC8463_SIGNED, lookup_from(RFC8463_RECORDS), now=NOW)
        self.assertEqual([(r.algorithm, r.selector, r.result) for r in results],
                         [("ed25519-sha256", "brisbane", PASS), ("rsa-sha256", "test", PASS)])
        self.assertEqual(results[0].identity, "@football.example.com")
        self.assertEqual(results[0].header_b, "/gCrinpc")
        self.assertEqual(results[1].key_bits, 1024)
        # dkimpy agrees on the RSA one.
        self.assertTrue(dkim.DKIM(RFC8463_SIGNED).verify(
            idx=1, dnsfunc=lambda n, timeout=5: RFC8463_RECORDS[n.decode().rstrip(".")][0].encode()))

    def test_rfc8463_signatures_reproduced(self):
        """Our hashing and signing primitives give the RFC's exact b= values (Ed25519 and
        RSASSA-PKCS1-v1_5 are deterministic)."""
        ed = keys.from_crypto_key(ed25519.Ed25519PrivateKey.from_private_bytes(
            base64.b64decode(RFC8463_ED25519_SEED)))
        rsakey = keys.parse_private_key(RFC8463_RSA_PEM)
        headers, body = canon.parse_message(RFC8463_SIGNED)
        sigs = [h for h in headers if h[0].lower() == b"dkim-signature"]
        for sig_header, key in zip(sigs, (ed, rsakey)):
            tags = parse_tag_value(sig_header[1])
            policy = canon.canon_policy(True, True)
            self.assertEqual(canon.body_hash(body, policy, "sha256"),
                             base64.b64decode(tags[b"bh"]))
            names = [n.strip() for n in tags[b"h"].replace(b"\r\n", b"").split(b":")]
            digest = canon.data_hash(headers, names, sig_header, policy, "sha256")
            expected = base64.b64decode(b"".join(tags[b"b"].split()))
            self.assertEqual(key.sign_digest(digest, "sha256"), expected)

    def test_rfc8463_signed_by_us(self):
        ed = keys.from_crypto_key(ed25519.Ed25519PrivateKey.from_private_bytes(
            base64.b64decode(RFC8463_ED25519_SEED)))
        sel = SelectorKey("brisbane", ed, header_relaxed=True, body_relaxed=True)
        signed = signer(sel).sign(MESSAGE, now=1528637909) + MESSAGE
        [r] = verify(signed, lookup_from(RFC8463_RECORDS))
        self.assertEqual(r.result, PASS)
        # Same body hash as the RFC's relaxed/relaxed sha256 signatures.
        self.assertIn(b"bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;", signed)

    def test_many_signatures(self):
        sels = [SelectorKey(f"s{i}", self.key) for i in range(12)]
        signed = signer(*sels).sign(MESSAGE, now=NOW) + MESSAGE
        records = {f"s{i}._domainkey.football.example.com": [self.key.dns_record] for i in range(12)}
        resolver = MockResolver({(n, "TXT"): v for n, v in records.items()})
        results = verify(signed, lambda n: list(resolver.lookup_sync(n, "TXT").records), now=NOW)
        self.assertEqual([r.result for r in results], [PASS] * 10 + [POLICY] * 2)
        self.assertEqual([r.selector for r in results], [f"s{i}" for i in range(12)])
        self.assertIn("more than 10 signatures", results[11].reason)
        self.assertEqual(len(resolver.lookups), 10)  # the extra ones cause no lookups
        self.assertEqual(len({r.header_b for r in results}), 12)

    def test_header_b_unique(self):
        results = [DKIMResult("d", "s", "a", PASS, header_b=b) for b in
                   ("abcdefghij1", "abcdefghij2", "xyz", "")]
        _set_header_b(results)
        self.assertEqual([r.header_b for r in results], ["abcdefghij1", "abcdefghij2", "xyz", ""])

    def test_verify_async(self):
        resolver = MockResolver({(n, "TXT"): v for n, v in self.records.items()})
        d = verify_async(resolver, self.sign(), now=NOW)
        [r] = self.successResultOf(d)
        self.assertEqual(r.result, PASS)
        self.assertEqual(resolver.lookups, [("sel._domainkey.football.example.com", "TXT")])
        # The expiry check uses the clock it is given.
        clock = task.Clock()
        clock.advance(NOW + 7200)
        d = verify_async(resolver, self.sign(expiration=3600), clock=clock)
        [r] = self.successResultOf(d)
        self.assertEqual(r.result, PERMERROR)
        self.assertIn("expired", r.reason)


class HostileTests(unittest.SynchronousTestCase):
    """Garbled and hostile DKIM-Signature fields: a permerror each, never an exception."""

    def results(self, *fields, body=MESSAGE):
        msg = b"".join(b"DKIM-Signature:" + f + b"\r\n" for f in fields) + body
        return verify(msg, lookup_from({"s._domainkey.example.com": [ed_key().dns_record]}), now=NOW)

    def test_garbage(self):
        good = (b" v=1; a=ed25519-sha256; d=example.com; s=s; h=From:Subject; "
                b"bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=AAAA")
        cases = {
            b"": "missing",
            b" garbage": "malformed tag list",
            b" ;;;=;;": "malformed tag list",
            b" v=1; v=1": "duplicate tag",
            b" v=1": "missing required",
            b" \x00\xff\xfe=\x01": "malformed tag list",
            good.replace(b"v=1", b"v=2"): "version",
            good.replace(b"ed25519-sha256", b"rsa-sha512"): "unknown algorithm",
            good.replace(b"d=example.com", b"d=ex ample..com"): "invalid d=",
            good.replace(b"d=example.com", b"d=\xff\xfe"): "invalid d=",
            good.replace(b"s=s", b"s=" + b"a" * 300): "invalid d=",
            good.replace(b"s=s", b"s=a\x00b"): "invalid d=",
            good.replace(b"h=From:Subject", b"h=To:Subject"): "From header not signed",
            good.replace(b"h=From:Subject", b"h=From::Subject"): "malformed h=",
            good.replace(b"h=From:Subject", b"h=" + b"From:" * 300 + b"From"): "too many",
            good.replace(b"b=AAAA", b"b=not base64!"): "b= is not valid base64",
            good.replace(b"b=AAAA", b"b=AAA"): "b= is not valid base64",
            good.replace(b"b=AAAA", b"b="): "b= is not valid base64",
            good.replace(b"bh=2jU", b"bh=*jU"): "bh= is not valid base64",
            good + b"; c=bogus/relaxed": "canonicalization",
            good + b"; c=relaxed/relaxed/relaxed": "canonicalization",
            good + b"; q=dns/other": "query method",
            good + b"; t=12345678901234567890": "t= is not a valid number",
            good + b"; x=-1": "x= is not a valid number",
            good + b"; l=abc": "l= is not a valid number",
            good + b"; i=@\xff.example.com": "i=",
            good + b"; i=@" + b"x" * 70 + b".example.com": "i=",
            good + b"; z=" + b"A" * 20000: "longer than",
        }
        for field, reason in cases.items():
            [r] = self.results(field)
            self.assertEqual(r.result, PERMERROR, (field[:80], r))
            self.assertIn(reason, r.reason, (field[:80], r))
            for text in (r.domain, r.selector, r.algorithm, r.identity, r.header_b):
                self.assertTrue(text.isprintable() and len(text) <= 1024, (field[:80], r))

    def test_body_length_beyond_body(self):
        field = (b" v=1; a=ed25519-sha256; d=example.com; s=s; h=From:Subject; l=99999; "
                 b"bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=AAAA")
        msg = b"DKIM-Signature:" + field + b"\r\n" + MESSAGE
        [r] = verify(msg, lookup_from({"s._domainkey.example.com": [ed_key().dns_record]}),
                     now=NOW, policy=None)
        self.assertEqual((r.result, "beyond the body" in r.reason), (PERMERROR, True))

    def test_continuation_first(self):
        [r] = verify(b" folded\r\nDKIM-Signature: v=1\r\n\r\nbody", lookup_from({}))
        self.assertEqual(r.result, PERMERROR)
        self.assertRaises(SignError, signer(SelectorKey("s", ed_key())).sign,
                          b" folded\r\nFrom: a@b.example\r\n\r\n")

    def test_unparsable_message(self):
        msg = b"DKIM-Signature: v=1; d=example.com\r\nthis line has no colon\r\n\r\nbody"
        [r] = verify(msg, lookup_from({}))
        self.assertEqual(r.result, PERMERROR)
        self.assertIn("malformed message header", r.reason)

    def test_many_header_fields(self):
        # Many header fields and a long h= stay cheap: only named fields are hashed.
        fields = b"".join(b"X-Filler-%d: x\r\n" % i for i in range(20000))
        key = ed_key()
        msg = fields + MESSAGE
        signed = signer(SelectorKey("s", key), domain="example.com").sign(msg, now=NOW) + msg
        [r] = verify(signed, lookup_from({"s._domainkey.example.com": [key.dns_record]}), now=NOW)
        self.assertEqual(r.result, PASS)


class CommandTests(unittest.SynchronousTestCase):
    def test_gened25519(self):
        rc, out, err = run_cli("dkim", "gened25519")
        self.assertEqual(rc, 0)
        key = keys.parse_private_key(out.encode())
        self.assertEqual(key.algorithm, "ed25519")
        self.assertIn(key.dns_record, err)
        self.assertIn("_domainkey", err)

    def test_genrsa(self):
        rc, out, err = run_cli("dkim", "genrsa", "--bits", "1024")
        self.assertEqual(rc, 0)
        self.assertTrue(out.startswith("-----BEGIN PRIVATE KEY-----"))
        key = keys.parse_private_key(out.encode())
        self.assertEqual((key.algorithm, key.bits), ("rsa", 1024))
        self.assertIn(key.dns_record, err)

    def test_genrsa_default_and_zone_strings(self):
        from moxtw.dkim.cli import genrsa

        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(genrsa(out, err=err), 0)
        key = keys.parse_private_key(out.getvalue().encode())
        self.assertEqual(key.bits, 2048)
        zone_line = err.getvalue().splitlines()[-1]
        self.assertIn('IN TXT "v=DKIM1;k=rsa;p=', zone_line)
        self.assertEqual(zone_line.count('"'), 4)  # two character-strings

    def test_genrsa_bad_size(self):
        rc, out, err = run_cli("dkim", "genrsa", "--bits", "512")
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("between 1024 and 8192", err)


class OpenDKIMInteropTests(unittest.SynchronousTestCase):
    """Signatures made by OpenDKIM's opendkim-testmsg verify with our verifier.

    The other direction (opendkim-testmsg verifying our signatures) needs the key in
    real DNS, so it is not practical in unit tests.
    """

    def test_opendkim_signs_we_verify(self):
        tool = shutil.which("opendkim-testmsg")
        if tool is None:
            raise unittest.SkipTest("opendkim-testmsg (opendkim-tools) not installed")
        key = rsa_key(2048)
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(key.dkimpy_key)
        proc = subprocess.run(
            [tool, "-C", "-d", "football.example.com", "-s", "sel", "-k", path],
            input=MESSAGE, capture_output=True, timeout=30)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        results = verify(proc.stdout, lookup_from(
            {"sel._domainkey.football.example.com": [key.dns_record]}))
        self.assertEqual([r.result for r in results], [PASS], results)
