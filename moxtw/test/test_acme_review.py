"""Regression tests from the hostile review of moxtw.tls.acme: name lookups that stay
cheap with thousands of domains, the interim self-signed certificate made with the host key (DANE from
the first start), a rolled-over host key renewing the certificate, stored files whose key
or names do not match, encrypted keys, odd account files, backoff overflow, RenewBefore
longer than a certificate's lifetime."""

import datetime
import json
import os
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import defer, task
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from moxtw.config import schema
from moxtw.config.load import validate_dynamic, validate_static
from moxtw.tls import acme
from moxtw.tls.certstore import UnknownServerName
from moxtw.test.test_acme import DYNAMIC, HOST, STATIC

CONF = dict(DirectoryURL="https://ca.example/dir", ContactEmail="a@example.net")


def _cert(names, key=None, days=90):
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    subj = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder().subject_name(subj).issuer_name(subj).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _pem(cert, key, password=None):
    enc = (serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption())
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
            + cert.public_bytes(serialization.Encoding.PEM))


class FakeConn:
    def __init__(self, sni):
        self.sni = sni
        self.ctx = None
        self.cert = None

    def get_servername(self):
        return self.sni

    def get_context(self):
        return self.ctx

    def set_context(self, ctx):
        self.ctx = ctx

    def use_certificate(self, c):
        self.cert = c

    def use_privatekey(self, k):
        pass


def _manager(testcase, names, run=None, data=None, host_keys=(), conf=None, clock=None):
    clock = clock or task.Clock()
    data = data or testcase.mktemp()
    m = acme.Manager("ca", conf or schema.ACMEConfig(**CONF), data, lambda p: p, acme.Challenges(), clock,
                     run=run or (lambda f, *a: defer.Deferred()), now=clock.seconds)
    m.add_site(acme.Site("public", names if callable(names) else (lambda: list(names)), ["http-01"],
                         HOST, list(host_keys)))
    testcase.addCleanup(m.stop)
    return m, clock


def _many(n):
    static = validate_static(STATIC.format(acme=1, alpn=443, eab="", smtp=25, https=443, http=80,
                                           http_enabled="true"), "moxtw.toml")
    dyn = DYNAMIC + "".join(
        f'[Domains."d{i}.example"]\nClientSettingsDomain = "mail.d{i}.example"\n'
        f'[Domains."d{i}.example".MTASTS]\nPolicyID = "x"\nMode = "enforce"\nMaxAge = "168h"\n'
        f'MX = ["mail.example.org"]\n' for i in range(n))
    return static, validate_dynamic(dyn, "domains.toml", static)


class ScaleTests(unittest.TestCase):
    """F1: the SNI callback (up to 3x per handshake) and the hourly check run on the
    reactor: the names of a configuration are computed once, not per call (counted, not
    timed: timings in tests depend on the machine's load)."""

    def counting(self, n):
        static, dynamic = _many(n)
        lst = static.Listeners["public"]
        calls = []
        real = acme._listener_names

        def counted(*args):
            calls.append(1)
            return real(*args)

        acme._listener_names = counted
        self.addCleanup(setattr, acme, "_listener_names", real)
        acme._names_cache.clear()
        m, _ = _manager(self, lambda: acme.listener_names(static, dynamic, lst))
        return m, calls, static, dynamic, lst

    def test_handshake_lookup_is_cheap_with_many_domains(self):
        m, calls, static, dynamic, lst = self.counting(2000)
        for _ in range(100):
            self.assertFalse(m.allowed("unknown.example"))
        self.assertTrue(m.allowed(acme.listener_names(static, dynamic, lst)[-1]))
        self.assertEqual(len(calls), 1)

    def test_check_is_cheap_with_many_domains(self):
        m, calls, *_ = self.counting(400)
        m.check()
        self.assertEqual(len(calls), 1)


class StoredFileTests(unittest.TestCase):
    def _store(self, data, name, pem):
        d = os.path.join(data, "acme", "ca", "certs")
        os.makedirs(d)
        with open(os.path.join(d, name + ".pem"), "wb") as f:
            f.write(pem)

    def test_encrypted_stored_key_does_not_stop_start(self):
        data = self.mktemp()
        self._store(data, HOST, _pem(*_cert([HOST]), password=b"pw"))
        m, _ = _manager(self, [HOST], data=data)  # must not raise
        self.assertIsNone(m.cert(HOST))

    def test_mismatched_stored_key_is_not_served(self):
        data = self.mktemp()
        cert, _ = _cert([HOST])
        self._store(data, HOST, _pem(cert, ec.generate_private_key(ec.SECP256R1())))
        m, _ = _manager(self, [HOST], data=data)
        self.assertIsNone(m.cert(HOST), "a stored key that does not match its certificate is loaded")

    def test_stored_cert_for_other_name_not_served(self):
        data = self.mktemp()
        self._store(data, HOST, _pem(*_cert(["evil.example"])))
        m, _ = _manager(self, [HOST], data=data)
        self.assertIsNone(m.cert(HOST), "certs/<name>.pem served for <name> whatever names it has")

    def test_account_json_not_an_object(self):
        data = self.mktemp()
        d = acme.provider_dir(data, "ca")
        os.makedirs(d)
        with open(os.path.join(d, "account.json"), "w") as f:
            json.dump(["x"], f)
        self.assertIsNone(acme.account_uri(data, "ca"))


class BackoffTests(unittest.TestCase):
    def test_backoff_after_many_failures(self):
        m, clock = _manager(self, [HOST], run=lambda f, *a: defer.fail(acme.ACMEError("down")))
        m._failures[HOST] = (1100, 0)  # ~275 days of a CA refusing us at 6 h intervals
        d = m.request(HOST)
        f = self.failureResultOf(d)
        self.assertTrue(f.check(acme.ACMEError), f"backoff computation failed: {f.value!r}")
        self.assertIn(HOST, m._retries)
        self.flushLoggedErrors()

    def test_renew_before_longer_than_lifetime_does_not_loop(self):
        """A CA issuing short-lived certificates (Let's Encrypt's 6-day profile) with the
        default RenewBefore of 30 days: every check orders again."""
        cert, key = _cert([HOST], days=6)
        orders = []

        def run(f, *a):
            orders.append(a)
            return defer.succeed(acme.Issued(_pem(cert, key)))

        m, clock = _manager(self, [HOST], run=run)
        clock.advance(time.time())
        m.check()
        m.check()
        self.assertEqual(len(orders), 1, "a fresh certificate is due for renewal at once")


class ServingTests(unittest.TestCase):
    def test_fallback_uses_host_key_for_dane(self):
        """Until the CA's certificate arrives (CA down at first start) the SMTP port serves
        the interim self-signed certificate: with a random key, DANE 3 1 1 for the published host key fails."""
        data = self.mktemp()
        paths = [os.path.join(data, "acme", "keys", HOST, "current.pem"),
                 os.path.join(data, "acme", "keys", HOST, "next.pem")]
        m, _ = _manager(self, [HOST], data=data, host_keys=paths)
        store = acme.ACMECertStore("public", m, HOST, strict=False)
        served = store.getContext()
        conn = SSL.Connection(served)
        got = conn.get_certificate() or None
        spki = lambda k: k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        want = spki(acme.load_key(paths[0]).public_key())
        self.assertIsNotNone(got)
        self.assertEqual(spki(got.to_cryptography().public_key()), want)

    def test_hostile_sni(self):
        m, _ = _manager(self, [HOST, "mta-sts.example.org"])
        m._certs[HOST] = acme.Issued(_pem(*_cert([HOST])))
        strict = acme.ACMECertStore("public", m, HOST, strict=True)
        ok = [b"MAIL.EXAMPLE.ORG", b"mail.example.org.", ]
        for sni in ok:
            c = FakeConn(sni)
            strict._servername(c)
            self.assertIs(c.ctx, strict._context(HOST))
        for sni in [b"evil.example", b"mail.example.org\x00.evil", "m\u00e4il.example.org".encode(),
                    b"a" * 300, b"mail.example.org..evil", b"*.example.org", b"xn--.example.org"]:
            with self.assertRaises(UnknownServerName):
                strict._servername(FakeConn(sni))
        # IP literals: the host's certificate, no order.
        for sni in [b"127.0.0.1", b"[::1]", b"::1"]:
            c = FakeConn(sni)
            strict._servername(c)
        self.assertEqual(m._pending, {})
        # A configured name without a certificate is ordered once.
        strict._servername(FakeConn(b"MTA-STS.example.org."))
        self.assertEqual(list(m._pending), ["mta-sts.example.org"])

    def test_alpn_only_for_pending_names(self):
        m, _ = _manager(self, [HOST])
        store = acme.ACMECertStore("public", m, HOST)
        c = FakeConn(HOST.encode())
        self.assertEqual(store._alpn(c, [b"h2", b"http/1.1"]), SSL.NO_OVERLAPPING_PROTOCOLS)
        self.assertEqual(store._alpn(c, [acme.ALPN_ACME]), SSL.NO_OVERLAPPING_PROTOCOLS)
        m.challenges.add(acme.TLS_ALPN_01, HOST, "tok", "tok.thumb")
        self.assertEqual(store._alpn(FakeConn(b"other.example"), [acme.ALPN_ACME]), SSL.NO_OVERLAPPING_PROTOCOLS)
        self.assertEqual(store._alpn(c, [b"http/1.1"]), SSL.NO_OVERLAPPING_PROTOCOLS)
        self.assertEqual(store._alpn(c, [acme.ALPN_ACME]), acme.ALPN_ACME)
        m.challenges.remove(acme.TLS_ALPN_01, HOST, "tok")
        self.assertEqual(store._alpn(c, [acme.ALPN_ACME]), SSL.NO_OVERLAPPING_PROTOCOLS)

    def test_http01_hostile_paths(self):
        pending = acme.Challenges()
        pending.add("http-01", HOST, "tok", "tok.thumb")
        res = acme.ChallengeResource(pending)
        for path in [b"/.well-known/acme-challenge/../tok", b"/.well-known/acme-challenge/tok%00",
                     b"/.well-known/acme-challenge/\xff\xfe", b"/.well-known/acme-challenge/" + b"a" * 100000,
                     b"/.well-known/acme-challenge//tok", b"/.well-known/acme-challenge/TOK"]:
            req = DummyRequest([b""])
            req.path = path
            body = res.render(req)
            self.assertEqual(req.responseCode, 404, path[:60])
            self.assertNotIn(b"Traceback", body)
        from twisted.web.error import UnsupportedMethod
        for method in (b"POST", b"PUT"):
            req = DummyRequest([b""])
            req.method = method
            req.path = b"/.well-known/acme-challenge/tok"
            self.assertRaises(UnsupportedMethod, res.render, req)  # Site answers 405


class ModeTests(unittest.TestCase):
    def test_generated_keys_and_dirs_private(self):
        data = os.path.abspath(self.mktemp())
        paths = acme.host_key_paths(data, lambda p: p, type("L", (), {"TLS": None})(), HOST)
        acme.ensure_host_keys(paths)
        for p in paths:
            self.assertEqual(os.stat(p).st_mode & 0o777, 0o600)
        for d in (os.path.join(data, "acme"), os.path.join(data, "acme", "keys"), os.path.dirname(paths[0])):
            self.assertEqual(os.stat(d).st_mode & 0o777, 0o700, d)


class RolloverTests(unittest.TestCase):
    def test_host_cert_with_old_key_is_renewed_after_rollover(self):
        """README's rollover: rename next.pem to current.pem and restart. The stored host
        certificate still has the old key and is not due for weeks: the old key stays in
        service while dnsrecords no longer prints its TLSA record."""
        data = os.path.abspath(self.mktemp())
        paths = [os.path.join(data, "acme", "keys", HOST, "current.pem"),
                 os.path.join(data, "acme", "keys", HOST, "next.pem")]
        acme.ensure_host_keys(paths)
        old = acme.load_key(paths[0])
        d = os.path.join(data, "acme", "ca", "certs")
        os.makedirs(d)
        with open(os.path.join(d, HOST + ".pem"), "wb") as f:
            f.write(_pem(*_cert([HOST], key=old)))
        os.replace(paths[1], paths[0])  # the documented rollover
        m, clock = _manager(self, [HOST], data=data, host_keys=paths)
        clock.advance(time.time())
        self.assertTrue(m.due(HOST), "host certificate with a key that is no longer the host key is not renewed")
