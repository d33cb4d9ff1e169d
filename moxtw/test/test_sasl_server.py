"""Tests for moxtw.sasl.server: every mechanism against a fake backend, the RFC example
exchanges replayed with fixed nonces, hostile input, and the real Authenticator."""

import base64
import os

from twisted.internet import defer
from twisted.trial import unittest
from twisted.trial.unittest import SynchronousTestCase

from moxtw import auth
from moxtw.sasl import credentials as cr
from moxtw.sasl.channelbinding import ChannelBinding
from moxtw.sasl.server import (
    MAX_RESPONSE,
    REASONS,
    SASLError,
    Step,
    new_server_mechanism,
    server_mechanisms,
)


class FakeAccount:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"FakeAccount({self.name!r})"


class FakeBackend:
    """The Authenticator interface over fixed credentials: logins map to
    (account name, Credentials)."""

    def __init__(self, users, disabled=None):
        self.users = users
        self.disabled = disabled or {}
        self.calls = []

    def authenticate(self, login, password):
        self.calls.append(("authenticate", login))
        user = self.users.get(login)
        if user is None or not cr.verify_password(user[1], password):
            return defer.fail(auth.AuthFailed("invalid login or password"))
        if self.disabled.get(user[0]):
            return defer.fail(auth.LoginDisabled(self.disabled[user[0]]))
        return defer.succeed(FakeAccount(user[0]))

    def credentials_for(self, login):
        self.calls.append(("credentials_for", login))
        user = self.users.get(login)
        if user is None:
            return defer.fail(auth.AuthFailed("invalid login or password"))
        return defer.succeed((FakeAccount(user[0]), user[1]))

    def login_disabled(self, account_name):
        return self.disabled.get(account_name, "")


class BrokenBackend(FakeBackend):
    """A backend whose store fails."""

    def authenticate(self, login, password):
        return defer.fail(OSError("disk on fire"))

    def credentials_for(self, login):
        return defer.fail(OSError("disk on fire"))


# RFC 5802 5 and RFC 7677 3 use user "user", password "pencil" with these salts.
RFC_SHA1_SALT = base64.b64decode("QSXCR+Q6sek8bf92")
RFC_SHA256_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CREDS = cr.Credentials(
    scram_sha1=cr.scram_keys("pencil", RFC_SHA1_SALT, 4096, "sha1"),
    scram_sha256=cr.scram_keys("pencil", RFC_SHA256_SALT, 4096, "sha256"),
    cram_md5=cr.cram_md5_keys("pencil"),
)
# RFC 2195 2 and RFC 4616 4 use tim / tanstaaftanstaaf.
TIM_CREDS = cr.derive("tanstaaftanstaaf")
MJL_CREDS = cr.derive("test1234")
# Names that need saslname escaping (RFC 5802 5.1).
ODD_NAME = "o,d=d@example.org"


def make_backend(**kw):
    return FakeBackend(
        {
            "user": ("rfcuser", RFC_CREDS),
            "tim": ("tim", TIM_CREDS),
            "mjl@example.org": ("mjl", MJL_CREDS),
            ODD_NAME: ("odd", MJL_CREDS),
        },
        **kw,
    )


def fixed(value):
    return lambda: value


class Helpers:
    def step(self, mech, response):
        return self.successResultOf(mech.step(response))

    def fail_step(self, mech, response, reason):
        f = self.failureResultOf(mech.step(response), SASLError)
        self.assertEqual(f.value.reason, reason, str(f.value))
        return f.value


class OfferTests(SynchronousTestCase):
    def test_server_mechanisms(self):
        self.assertEqual(
            server_mechanisms(False, None), ["SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5"]
        )
        self.assertEqual(
            server_mechanisms(True, None),
            ["SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN"],
        )
        cb = ChannelBinding("tls-exporter", b"x" * 32)
        self.assertEqual(
            server_mechanisms(True, cb),
            [
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-1-PLUS",
                "SCRAM-SHA-256",
                "SCRAM-SHA-1",
                "CRAM-MD5",
                "PLAIN",
                "LOGIN",
            ],
        )

    def test_unknown_mechanism(self):
        for name in ("GSSAPI", "XOAUTH2", "SCRAM-SHA-512", "", "PLAIN2"):
            e = self.assertRaises(SASLError, new_server_mechanism, name, make_backend())
            self.assertEqual(e.reason, "mechanism-unknown")

    def test_plus_needs_channel_binding(self):
        e = self.assertRaises(
            SASLError, new_server_mechanism, "SCRAM-SHA-256-PLUS", make_backend()
        )
        self.assertEqual(e.reason, "mechanism-unknown")

    def test_encryption_required(self):
        for name in ("PLAIN", "LOGIN", "plain"):
            e = self.assertRaises(SASLError, new_server_mechanism, name, make_backend(), tls=False)
            self.assertEqual(e.reason, "encryption-required")
        # Challenge-response mechanisms are fine without TLS.
        new_server_mechanism("CRAM-MD5", make_backend(), tls=False)
        new_server_mechanism("SCRAM-SHA-1", make_backend(), tls=False)

    def test_case_insensitive(self):
        m = new_server_mechanism("scram-sha-256", make_backend())
        self.assertEqual(m.name, "SCRAM-SHA-256")

    def test_error_messages(self):
        for reason in REASONS:
            e = SASLError(reason)
            self.assertTrue(str(e))
            self.assertEqual(e.reason, reason)
        self.assertEqual(str(SASLError("login-disabled", "go away")), "go away")
        self.assertRaises(ValueError, SASLError, "nope")


class PlainTests(Helpers, SynchronousTestCase):
    def mech(self, backend=None):
        return new_server_mechanism("PLAIN", backend or make_backend())

    def test_rfc4616_example(self):
        # RFC 4616 4: "\0tim\0tanstaaftanstaaf".
        s = self.step(self.mech(), b"\x00tim\x00tanstaaftanstaaf")
        self.assertTrue(s.done)
        self.assertIsNone(s.challenge)
        self.assertEqual(s.account.name, "tim")

    def test_rfc4616_authzid_other_refused(self):
        # RFC 4616 4: "Ursel\0Kurt\0xipj3plmq" asks to act as Ursel; we only allow
        # acting as oneself.
        backend = FakeBackend({"Kurt": ("kurt", cr.derive("xipj3plmq"))})
        self.fail_step(self.mech(backend), b"Ursel\x00Kurt\x00xipj3plmq", "auth-failed")
        self.assertEqual(backend.calls, [])

    def test_authzid_same_as_authcid(self):
        s = self.step(self.mech(), b"tim\x00tim\x00tanstaaftanstaaf")
        self.assertEqual(s.account.name, "tim")

    def test_no_initial_response(self):
        m = self.mech()
        s = self.step(m, None)
        self.assertEqual(s, Step(b"", False))
        s = self.step(m, b"\x00mjl@example.org\x00test1234")
        self.assertTrue(s.done)
        self.assertEqual(s.account.name, "mjl")

    def test_twice_none(self):
        m = self.mech()
        self.step(m, None)
        self.fail_step(m, None, "malformed")

    def test_wrong_password(self):
        e = self.fail_step(self.mech(), b"\x00tim\x00wrong", "auth-failed")
        e2 = self.fail_step(self.mech(), b"\x00nobody\x00wrong", "auth-failed")
        # Unknown user and wrong password look the same.
        self.assertEqual(str(e), str(e2))

    def test_nul_injection(self):
        for msg in (
            b"\x00tim\x00tanstaaftanstaaf\x00",
            b"\x00tim\x00tanstaaf\x00taaftanstaaf",
            b"\x00\x00tim\x00tanstaaftanstaaf",
            b"tim\x00\x00tim\x00tanstaaftanstaaf",
            b"\x00tim\x00\x00tanstaaftanstaaf",
            b"\x00tim",
            b"timtanstaaftanstaaf",
            b"\x00tim\x00",
            b"\x00\x00tanstaaftanstaaf",
            b"",
        ):
            self.fail_step(self.mech(), msg, "malformed")

    def test_non_utf8(self):
        self.fail_step(self.mech(), b"\x00tim\x00\xff\xfe", "malformed")

    def test_overlong(self):
        self.fail_step(self.mech(), b"\x00tim\x00" + b"a" * MAX_RESPONSE, "malformed")
        self.fail_step(self.mech(), b"\x00" + b"t" * 256 + b"\x00pw", "malformed")

    def test_login_disabled(self):
        b = make_backend(disabled={"tim": "account suspended, call us"})
        e = self.fail_step(self.mech(b), b"\x00tim\x00tanstaaftanstaaf", "login-disabled")
        self.assertEqual(str(e), "account suspended, call us")
        # With a wrong password the disabled state is not revealed.
        self.fail_step(self.mech(b), b"\x00tim\x00wrong", "auth-failed")

    def test_backend_broken(self):
        self.fail_step(self.mech(BrokenBackend({})), b"\x00tim\x00pw", "temporary")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_step_after_done(self):
        m = self.mech()
        self.step(m, b"\x00tim\x00tanstaaftanstaaf")
        self.fail_step(m, b"\x00tim\x00tanstaaftanstaaf", "malformed")

    def test_step_after_failure(self):
        m = self.mech()
        self.fail_step(m, b"\x00tim\x00wrong", "auth-failed")
        self.fail_step(m, b"\x00tim\x00tanstaaftanstaaf", "malformed")


class LoginTests(Helpers, SynchronousTestCase):
    def mech(self, backend=None):
        return new_server_mechanism("LOGIN", backend or make_backend())

    def test_exchange(self):
        m = self.mech()
        self.assertEqual(self.step(m, None), Step(b"Username:", False))
        self.assertEqual(self.step(m, b"tim"), Step(b"Password:", False))
        s = self.step(m, b"tanstaaftanstaaf")
        self.assertTrue(s.done)
        self.assertEqual(s.account.name, "tim")

    def test_username_as_initial_response(self):
        m = self.mech()
        self.assertEqual(self.step(m, b"tim"), Step(b"Password:", False))
        self.assertTrue(self.step(m, b"tanstaaftanstaaf").done)

    def test_wrong_and_unknown(self):
        for user, pw in ((b"tim", b"nope"), (b"nobody", b"nope"), (b"tim", b"")):
            m = self.mech()
            self.step(m, user)
            self.fail_step(m, pw, "auth-failed")

    def test_malformed(self):
        self.fail_step(self.mech(), b"", "malformed")
        self.fail_step(self.mech(), b"t\x00im", "malformed")
        self.fail_step(self.mech(), b"\xc3\x28", "malformed")
        self.fail_step(self.mech(), b"a" * 300, "malformed")
        m = self.mech()
        self.step(m, b"tim")
        self.fail_step(m, None, "malformed")
        m = self.mech()
        self.step(m, b"tim")
        self.fail_step(m, b"pass\x00word", "malformed")

    def test_login_disabled(self):
        m = self.mech(make_backend(disabled={"tim": "nope"}))
        self.step(m, b"tim")
        self.assertEqual(str(self.fail_step(m, b"tanstaaftanstaaf", "login-disabled")), "nope")


class CramMD5Tests(Helpers, SynchronousTestCase):
    def mech(self, backend=None, **kw):
        kw.setdefault("nonce", fixed("1896.697170952"))
        kw.setdefault("hostname", "postoffice.reston.mci.net")
        return new_server_mechanism("CRAM-MD5", backend or make_backend(), **kw)

    def test_rfc2195_example(self):
        # RFC 2195 2: the example exchange, with its challenge reproduced.
        m = self.mech()
        s = self.step(m, None)
        self.assertEqual(
            base64.b64encode(s.challenge),
            b"PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+",
        )
        s = self.step(m, base64.b64decode(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"))
        self.assertTrue(s.done)
        self.assertEqual(s.account.name, "tim")

    def test_default_challenge(self):
        m = new_server_mechanism("CRAM-MD5", make_backend(), hostname="mail.example.org")
        c1 = self.step(m, None).challenge
        c2 = self.step(new_server_mechanism("CRAM-MD5", make_backend()), None).challenge
        self.assertTrue(c1.startswith(b"<") and c1.endswith(b"@mail.example.org>"))
        self.assertNotEqual(c1.split(b"@")[0], c2.split(b"@")[0])

    def test_initial_response_refused(self):
        # RFC 2195 2: the server speaks first.
        self.fail_step(self.mech(), b"tim b913a602c7eda7a495b4e6e7334d3890", "malformed")

    def test_wrong_digest_and_unknown_user(self):
        m = self.mech()
        self.step(m, None)
        e1 = self.fail_step(m, b"tim " + b"0" * 32, "auth-failed")
        m = self.mech()
        self.step(m, None)
        e2 = self.fail_step(m, b"nobody b913a602c7eda7a495b4e6e7334d3890", "auth-failed")
        self.assertEqual(str(e1), str(e2))

    def test_malformed(self):
        for resp in (
            b"timb913a602c7eda7a495b4e6e7334d3890",
            b" b913a602c7eda7a495b4e6e7334d3890",
            b"tim B913A602C7EDA7A495B4E6E7334D3890",  # RFC 2195: lowercase
            b"tim b913a602c7eda7a495b4e6e7334d389",
            b"tim b913a602c7eda7a495b4e6e7334d3890 ",
            b"t\x00m b913a602c7eda7a495b4e6e7334d3890",
            b"\xff b913a602c7eda7a495b4e6e7334d3890",
            b"tim b913a602c7eda7a495b4e6e7334d38zz",
            b"",
            b"x" * (MAX_RESPONSE + 1),
        ):
            m = self.mech()
            self.step(m, None)
            self.fail_step(m, resp, "malformed")

    def test_login_disabled(self):
        m = self.mech(make_backend(disabled={"tim": "closed"}))
        self.step(m, None)
        self.fail_step(m, b"tim b913a602c7eda7a495b4e6e7334d3890", "login-disabled")

    def test_backend_broken(self):
        m = self.mech(BrokenBackend({}))
        self.step(m, None)
        self.fail_step(m, b"tim b913a602c7eda7a495b4e6e7334d3890", "temporary")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


RFC5802 = (
    "SCRAM-SHA-1",
    "fyko+d2lbbFgONRv9qkxdawL",
    "3rfcNHYJY1ZVvWVs7j",
    b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
)
RFC7677 = (
    "SCRAM-SHA-256",
    "rOprNGfwEbeRWgbNEkqO",
    "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
)


class ScramRFCTests(Helpers, SynchronousTestCase):
    def replay(self, vector, initial=True):
        name, _cnonce, snonce, c1, s1, c2, s2 = vector
        m = new_server_mechanism(name, make_backend(), nonce=fixed(snonce))
        if not initial:
            self.assertEqual(self.step(m, None), Step(b"", False))
        self.assertEqual(self.step(m, c1), Step(s1, False))
        self.assertEqual(self.step(m, c2), Step(s2, False))
        s = self.step(m, b"")
        self.assertTrue(s.done)
        self.assertEqual(s.account.name, "rfcuser")

    def test_rfc5802_section5(self):
        self.replay(RFC5802)

    def test_rfc7677_section3(self):
        self.replay(RFC7677)

    def test_without_initial_response(self):
        self.replay(RFC7677, initial=False)


class ScramTests(Helpers, SynchronousTestCase):
    """Hostile and odd client messages; the good paths with a real client are in
    test_sasl_client."""

    SNONCE = "SERVERNONCE"

    def mech(self, name="SCRAM-SHA-256", backend=None, cb=None):
        return new_server_mechanism(
            name, backend or make_backend(), channel_binding=cb, nonce=fixed(self.SNONCE)
        )

    def first(self, m, msg=b"n,,n=user,r=abc"):
        return self.step(m, msg)

    def final(self, m, proof=b"AAAA", cbind=b"biws", nonce=b"abcSERVERNONCE"):
        return b"c=" + cbind + b",r=" + nonce + b",p=" + proof

    def test_malformed_client_first(self):
        for msg in (
            b"",
            b"n",
            b"n,",
            b"n,,",
            b"x,,n=user,r=abc",  # bad cbind flag
            b"p,,n=user,r=abc",
            b"p=,,n=user,r=abc",
            b"p=tls unique,,n=user,r=abc",
            b"n,b=user,n=user,r=abc",  # authzid must be a=
            b"n,a=,n=user,r=abc",
            b"n,,r=abc,n=user",  # order matters
            b"n,,n=user",  # nonce missing
            b"n,,n=,r=abc",
            b"n,,n=user,r=",
            b"n,,n=us=er,r=abc",  # bad escape
            b"n,,n=us=2cer,r=abc",  # escapes are upper case
            b"n,,n=user,r=a\x7fbc",
            b"n,,n=user,r=abc,1=x",  # extension not ALPHA=value
            b"n,,n=user,r=abc,x",
            b"n,,n=user,r=abc,",
            b"n,,m=ext,n=user,r=abc",  # RFC 5802 5.1: mandatory extension
            b"n,,n=us\x00er,r=abc",
            b"n,,n=\xff\xfe,r=abc",
            b"n,,n=user,r=" + b"a" * MAX_RESPONSE,
            b"N,,n=user,r=abc",
        ):
            self.fail_step(self.mech(), msg, "malformed")

    def test_optional_extension_ignored(self):
        m = self.mech()
        s = self.first(m, b"n,,n=user,r=abc,x=whatever")
        self.assertTrue(s.challenge.startswith(b"r=abcSERVERNONCE,s="))

    def test_authzid(self):
        # RFC 5802 5.1 "a": only acting as oneself.
        s = self.first(self.mech(), b"n,a=user,n=user,r=abc")
        self.assertFalse(s.done)
        self.fail_step(self.mech(), b"n,a=admin,n=user,r=abc", "auth-failed")

    def test_saslname_escaping(self):
        # The username "o,d=d@example.org" is sent as "o=2Cd=3Dd@example.org".
        backend = make_backend()
        m = self.mech(backend=backend)
        self.first(m, b"n,,n=o=2Cd=3Dd@example.org,r=abc")
        self.assertEqual(backend.calls, [("credentials_for", ODD_NAME)])

    def test_server_first_format(self):
        s = self.first(self.mech())
        salt = base64.b64encode(RFC_CREDS.scram_sha256.salt)
        self.assertEqual(s.challenge, b"r=abcSERVERNONCE,s=" + salt + b",i=4096")

    def test_unknown_user_plausible(self):
        # Same shape as for a known user; the salt is stable per name within a
        # process and differs between names; failure only comes with the proof.
        s1 = self.first(self.mech(), b"n,,n=nobody,r=abc").challenge
        s2 = self.first(self.mech(), b"n,,n=nobody,r=abc").challenge
        s3 = self.first(self.mech(), b"n,,n=someone,r=abc").challenge
        self.assertEqual(s1, s2)
        self.assertNotEqual(s1, s3)
        self.assertRegex(s1.decode(), r"^r=abcSERVERNONCE,s=[A-Za-z0-9+/]{22}==,i=4096$")
        m = self.mech()
        self.first(m, b"n,,n=nobody,r=abc")
        e = self.fail_step(m, self.final(m, proof=base64.b64encode(b"x" * 32)), "auth-failed")
        self.assertEqual(str(e), "invalid user name or password")

    def test_wrong_proof(self):
        m = self.mech()
        self.first(m)
        e = self.fail_step(m, self.final(m, proof=base64.b64encode(b"x" * 32)), "auth-failed")
        self.assertEqual(str(e), "invalid user name or password")

    def test_short_proof(self):
        m = self.mech()
        self.first(m)
        self.fail_step(m, self.final(m, proof=b"AAAA"), "auth-failed")

    def test_wrong_nonce(self):
        for nonce in (b"abc", b"abcSERVERNONC", b"abcSERVERNONCEx", b"xbcSERVERNONCE"):
            m = self.mech()
            self.first(m)
            self.fail_step(m, self.final(m, nonce=nonce), "malformed")

    def test_wrong_cbind(self):
        # c= must repeat the GS2 header exactly: "n,," is "biws".
        for cbind in (b"eSws", b"cD10bHMtdW5pcXVlLCw=", base64.b64encode(b"n,,extra")):
            m = self.mech()
            self.first(m)
            self.fail_step(m, self.final(m, cbind=cbind), "auth-failed")

    def test_malformed_client_final(self):
        for msg in (
            b"",
            b"c=biws",
            b"c=biws,r=abcSERVERNONCE",  # no proof
            b"r=abcSERVERNONCE,c=biws,p=AAAA",
            b"c=biws,p=AAAA,r=abcSERVERNONCE",
            b"c=b!ws,r=abcSERVERNONCE,p=AAAA",  # bad base64
            b"c=biws,r=abcSERVERNONCE,p=AA=A",
            b"c=biws,r=abcSERVERNONCE,p=",
            b"c=,r=abcSERVERNONCE,p=AAAA",
            b"c=biws,r=abcSERVERNONCE,1=x,p=AAAA",
            b"c=biws,r=abcSERVERNONCE,p=AAAA,",
            b"c=biws,r=abcSERVERNONCE\x00,p=AAAA",
            b"c=biws,r=abcSERVERNONCE,p=\xff",
        ):
            m = self.mech()
            self.first(m)
            self.fail_step(m, msg, "malformed")

    def test_missing_responses(self):
        m = self.mech()
        self.step(m, None)
        self.fail_step(m, None, "malformed")
        m = self.mech()
        self.first(m)
        self.fail_step(m, None, "malformed")

    def test_downgrade_refused(self):
        # RFC 5802 6: "y" while we offered -PLUS is a downgrade attack.
        cb = ChannelBinding("tls-exporter", b"k" * 32)
        self.fail_step(self.mech(cb=cb), b"y,,n=user,r=abc", "auth-failed")
        # Without channel binding on our side, "y" is fine.
        self.assertFalse(self.first(self.mech(), b"y,,n=user,r=abc").done)
        # "n" is fine either way: the client does not support channel binding.
        self.assertFalse(self.first(self.mech(cb=cb), b"n,,n=user,r=abc").done)

    def test_p_flag_rules(self):
        cb = ChannelBinding("tls-exporter", b"k" * 32)
        # "p" with a non-PLUS mechanism.
        self.fail_step(self.mech(cb=cb), b"p=tls-exporter,,n=user,r=abc", "malformed")
        # -PLUS without "p".
        for flag in (b"n", b"y"):
            self.fail_step(
                self.mech("SCRAM-SHA-256-PLUS", cb=cb), flag + b",,n=user,r=abc", "malformed"
            )
        # Another channel binding type than the connection's.
        self.fail_step(
            self.mech("SCRAM-SHA-256-PLUS", cb=cb), b"p=tls-unique,,n=user,r=abc", "auth-failed"
        )
        s = self.first(self.mech("SCRAM-SHA-256-PLUS", cb=cb), b"p=tls-exporter,,n=user,r=abc")
        self.assertFalse(s.done)

    def test_final_response_must_be_empty(self):
        name, _c, snonce, c1, _s1, c2, _s2 = RFC7677
        m = new_server_mechanism(name, make_backend(), nonce=fixed(snonce))
        self.step(m, c1)
        self.step(m, c2)
        self.fail_step(m, b"x", "malformed")

    def test_login_disabled_after_valid_proof(self):
        name, _c, snonce, c1, _s1, c2, _s2 = RFC7677
        b = make_backend(disabled={"rfcuser": "disabled by admin"})
        m = new_server_mechanism(name, b, nonce=fixed(snonce))
        self.step(m, c1)
        e = self.fail_step(m, c2, "login-disabled")
        self.assertEqual(str(e), "disabled by admin")
        # A wrong proof for a disabled account says only "failed".
        m = new_server_mechanism(name, b, nonce=fixed(snonce))
        self.step(m, c1)
        self.fail_step(m, c2.replace(b"p=d", b"p=e"), "auth-failed")

    def test_backend_broken(self):
        self.fail_step(self.mech(backend=BrokenBackend({})), b"n,,n=user,r=abc", "temporary")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


STATIC = """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.org"
[Postmaster]
Account = "mjl"
Mailbox = "Postmaster"
[Listeners.main]
IPs = ["127.0.0.1"]
"""

DYNAMIC = """
[Domains."example.org"]
[Accounts.mjl]
Domain = "example.org"
[Accounts.mjl.Destinations."mjl@example.org"]
[Accounts.off]
Domain = "example.org"
LoginDisabled = "this account is closed"
[Accounts.off.Destinations."off@example.org"]
"""


class AuthenticatorTests(unittest.TestCase):
    """The mechanisms against moxtw.auth.Authenticator over a real store."""

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        from moxtw import config as mconfig
        from moxtw.store import Store

        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        with open(os.path.join(d, "moxtw.toml"), "w") as f:
            f.write(STATIC)
        with open(os.path.join(d, "domains.toml"), "w") as f:
            f.write(DYNAMIC)
        config = mconfig.load(d)
        self.store = Store(os.path.join(d, "data"))
        self.addCleanup(self.store.close)
        for name in ("mjl", "off"):
            acc = yield self.store.open_account(name)
            yield acc.set_password("test1234")
        self.auth = auth.Authenticator(self.store, lambda: config.dynamic)

    @defer.inlineCallbacks
    def run_exchange(self, mechname, login, password):
        from moxtw.sasl.client import new_client_mechanism

        server = new_server_mechanism(mechname, self.auth)
        client = new_client_mechanism(mechname, login, password)
        s = yield server.step(client.initial())
        while not s.done:
            s = yield server.step(client.step(s.challenge))
        client.finish(None)
        return s.account

    @defer.inlineCallbacks
    def test_all_mechanisms(self):
        for mech in ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"):
            acc = yield self.run_exchange(mech, "mjl@example.org", "test1234")
            self.assertEqual(acc.name, "mjl", mech)
            for login, pw, reason in (
                ("mjl@example.org", "wrong", "auth-failed"),
                ("nobody@example.org", "test1234", "auth-failed"),
                ("off@example.org", "test1234", "login-disabled"),
                ("off@example.org", "wrong", "auth-failed"),
            ):
                try:
                    yield self.run_exchange(mech, login, pw)
                except SASLError as e:
                    self.assertEqual(e.reason, reason, (mech, login, pw))
                    if reason == "login-disabled":
                        self.assertEqual(str(e), "this account is closed")
                else:
                    self.fail(f"{mech} {login} {pw} succeeded")
