"""Tests for moxtw.sasl.client: RFC example exchanges replayed with fixed nonces, every
mechanism against our server, hostile servers, and mechanism choice."""

import base64

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from moxtw.sasl import scram
from moxtw.sasl.channelbinding import ChannelBinding
from moxtw.sasl.client import (
    CLIENT_PREFERENCE,
    choose_client_mechanism,
    new_client_mechanism,
)
from moxtw.sasl.server import SASLError, new_server_mechanism
from moxtw.test.test_sasl_server import RFC5802, RFC7677, fixed, make_backend

ALL = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256")
PLUS = ("SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS")
CB = ChannelBinding("tls-exporter", bytes(range(32)))


class RFCReplayTests(SynchronousTestCase):
    def replay(self, vector):
        name, cnonce, _snonce, c1, s1, c2, s2 = vector
        m = new_client_mechanism(name, "user", "pencil", nonce=fixed(cnonce))
        self.assertEqual(m.initial(), c1)
        self.assertEqual(m.step(s1), c2)
        self.assertEqual(m.step(s2), b"")
        m.finish(None)

    def test_rfc5802_section5(self):
        self.replay(RFC5802)

    def test_rfc7677_section3(self):
        self.replay(RFC7677)

    def test_server_final_as_additional_data(self):
        # A protocol with "additional data with success" passes server-final to finish.
        name, cnonce, _snonce, c1, s1, c2, s2 = RFC7677
        m = new_client_mechanism(name, "user", "pencil", nonce=fixed(cnonce))
        m.initial()
        m.step(s1)
        m.finish(s2)

    def test_without_initial_response(self):
        # RFC 4422 5 (a): the server sends an empty challenge first.
        name, cnonce, _snonce, c1, s1, c2, s2 = RFC5802
        m = new_client_mechanism(name, "user", "pencil", nonce=fixed(cnonce))
        self.assertEqual(m.step(b""), c1)
        self.assertEqual(m.step(s1), c2)
        self.assertEqual(m.step(s2), b"")
        m.finish(None)

    def test_rfc4616_plain(self):
        # RFC 4616 4.
        m = new_client_mechanism("PLAIN", "tim", "tanstaaftanstaaf")
        self.assertEqual(m.initial(), b"\x00tim\x00tanstaaftanstaaf")
        m.finish(None)
        m = new_client_mechanism("PLAIN", "tim", "tanstaaftanstaaf")
        self.assertEqual(m.step(b""), b"\x00tim\x00tanstaaftanstaaf")
        self.assertRaises(SASLError, m.step, b"")

    def test_plain_refuses_nul(self):
        self.assertRaises(ValueError, new_client_mechanism, "PLAIN", "t\x00im", "pw")
        self.assertRaises(ValueError, new_client_mechanism, "PLAIN", "tim", "p\x00w")

    def test_rfc2195_cram_md5(self):
        # RFC 2195 2.
        m = new_client_mechanism("CRAM-MD5", "tim", "tanstaaftanstaaf")
        self.assertIsNone(m.initial())
        resp = m.step(b"<1896.697170952@postoffice.reston.mci.net>")
        self.assertEqual(
            base64.b64encode(resp), b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
        )
        self.assertRaises(SASLError, m.step, b"<again@x>")

    def test_login(self):
        m = new_client_mechanism("LOGIN", "tim", "secret")
        self.assertIsNone(m.initial())
        self.assertEqual(m.step(b"Username:"), b"tim")
        self.assertEqual(m.step(b"Password:"), b"secret")
        self.assertRaises(SASLError, m.step, b"What:")

    def test_unknown(self):
        for name in ("GSSAPI", "SCRAM-SHA-512", "XOAUTH2"):
            e = self.assertRaises(SASLError, new_client_mechanism, name, "u", "p")
            self.assertEqual(e.reason, "mechanism-unknown")
        e = self.assertRaises(SASLError, new_client_mechanism, "SCRAM-SHA-256-PLUS", "u", "p")
        self.assertEqual(e.reason, "mechanism-unknown")


def exchange(test, name, login, password, server_cb=None, client_cb=None, initial=True):
    """Run client against server; returns the account or raises SASLError."""
    server = new_server_mechanism(name, make_backend(), channel_binding=server_cb)
    client = new_client_mechanism(name, login, password, channel_binding=client_cb)
    resp = client.initial() if initial else None
    while True:
        d = server.step(resp)
        result = []
        d.addBoth(result.append)
        test.assertEqual(len(result), 1)  # the fake backend answers synchronously
        if isinstance(result[0], Failure):
            result[0].raiseException()
        step = result[0]
        if step.done:
            client.finish(step.challenge)
            return step.account
        resp = client.step(step.challenge)


class ExchangeTests(SynchronousTestCase):
    def test_every_mechanism(self):
        for name in ALL:
            for initial in (True, False):
                acc = exchange(self, name, "mjl@example.org", "test1234", initial=initial)
                self.assertEqual(acc.name, "mjl", name)

    def test_plus(self):
        for name in PLUS:
            acc = exchange(self, name, "mjl@example.org", "test1234", CB, CB)
            self.assertEqual(acc.name, "mjl")

    def test_plus_mismatched_binding(self):
        other = ChannelBinding("tls-exporter", bytes(32))
        for name in PLUS:
            e = self.assertRaises(
                SASLError, exchange, self, name, "mjl@example.org", "test1234", CB, other
            )
            self.assertEqual(e.reason, "auth-failed")

    def test_plus_other_type(self):
        other = ChannelBinding("tls-unique", bytes(12))
        e = self.assertRaises(
            SASLError,
            exchange,
            self,
            "SCRAM-SHA-256-PLUS",
            "mjl@example.org",
            "test1234",
            CB,
            other,
        )
        self.assertEqual(e.reason, "auth-failed")

    def test_saslname_escaping(self):
        acc = exchange(self, "SCRAM-SHA-256", "o,d=d@example.org", "test1234")
        self.assertEqual(acc.name, "odd")

    def test_wrong_password(self):
        for name in ALL + PLUS:
            e = self.assertRaises(
                SASLError, exchange, self, name, "mjl@example.org", "wrong", CB, CB
            )
            self.assertEqual(e.reason, "auth-failed", name)

    def test_unknown_user(self):
        for name in ALL + PLUS:
            e = self.assertRaises(
                SASLError, exchange, self, name, "nobody@example.org", "test1234", CB, CB
            )
            self.assertEqual(e.reason, "auth-failed", name)

    def test_y_flag(self):
        # RFC 5802 6: a client that can bind but sees no -PLUS sends "y"; a server
        # without channel binding accepts, a server with one detects the downgrade.
        acc = exchange(self, "SCRAM-SHA-256", "mjl@example.org", "test1234", None, CB)
        self.assertEqual(acc.name, "mjl")
        e = self.assertRaises(
            SASLError, exchange, self, "SCRAM-SHA-256", "mjl@example.org", "test1234", CB, CB
        )
        self.assertEqual(e.reason, "auth-failed")
        self.assertIn("downgrade", str(e))


class HostileServerTests(SynchronousTestCase):
    """A SCRAM client facing a broken or malicious server."""

    def client(self, name="SCRAM-SHA-256", cb=None):
        m = new_client_mechanism(name, "user", "pencil", channel_binding=cb, nonce=fixed("cnonce"))
        m.initial()
        return m

    def server_first(self, nonce="cnonceSNONCE", salt=b"salt", iterations=4096):
        return f"r={nonce},s={base64.b64encode(salt).decode()},i={iterations}".encode()

    def assertReason(self, reason, f, *args):
        e = self.assertRaises(SASLError, f, *args)
        self.assertEqual(e.reason, reason, str(e))
        return e

    def test_gs2_flags(self):
        self.assertEqual(self.client().initial(), b"n,,n=user,r=cnonce")
        self.assertEqual(self.client(cb=CB).initial(), b"y,,n=user,r=cnonce")
        self.assertEqual(
            self.client("SCRAM-SHA-256-PLUS", cb=CB).initial(), b"p=tls-exporter,,n=user,r=cnonce"
        )

    def test_plus_cbind(self):
        m = self.client("SCRAM-SHA-256-PLUS", cb=CB)
        final = m.step(self.server_first()).decode()
        cbind = base64.b64decode(final.split(",")[0][2:])
        self.assertEqual(cbind, b"p=tls-exporter,," + CB.data)

    def test_iterations_too_low(self):
        # RFC 7677 4: at least 4096.
        self.assertReason("auth-failed", self.client().step, self.server_first(iterations=4095))
        self.assertReason("auth-failed", self.client().step, self.server_first(iterations=1))

    def test_iterations_too_high(self):
        self.assertReason(
            "auth-failed", self.client().step, self.server_first(iterations=10**9)
        )

    def test_nonce_checks(self):
        for nonce in ("cnonce", "other", "cnonc", "xcnonceS"):
            self.assertReason("malformed", self.client().step, self.server_first(nonce=nonce))

    def test_malformed_server_first(self):
        for msg in (
            b"",
            b"r=cnonceS",
            b"r=cnonceS,s=c2FsdA==",
            b"s=c2FsdA==,r=cnonceS,i=4096",
            b"r=cnonceS,s=,i=4096",
            b"r=cnonceS,s=c2FsdA=,i=4096",
            b"r=cnonceS,s=c2FsdA==,i=0",
            b"r=cnonceS,s=c2FsdA==,i=04096",
            b"r=cnonceS,s=c2FsdA==,i=4096x",
            b"r=cnonceS,s=c2FsdA==,i=-4096",
            b"r=cnonceS,s=c2FsdA==,i=99999999999999999999",
            b"m=x,r=cnonceS,s=c2FsdA==,i=4096",
            b"r=cnonceS,s=c2FsdA==,i=4096,",
            b"r=cnonce\xffS,s=c2FsdA==,i=4096",
            b"r=cnonce\x00S,s=c2FsdA==,i=4096",
        ):
            self.assertReason("malformed", self.client().step, msg)

    def test_extension_ignored(self):
        self.client().step(self.server_first() + b",x=1")

    def test_bad_server_signature(self):
        m = self.client()
        m.step(self.server_first())
        self.assertReason(
            "auth-failed", m.step, b"v=" + base64.b64encode(b"x" * 32)
        )
        self.assertReason("auth-failed", m.finish, None)

    def test_server_error(self):
        m = self.client()
        m.step(self.server_first())
        e = self.assertReason("auth-failed", m.step, b"e=invalid-proof")
        self.assertIn("invalid-proof", str(e))

    def test_malformed_server_final(self):
        for msg in (b"", b"x=1", b"v=", b"v=!!", b"e=", b"v=AAAA,", b"\xff"):
            m = self.client()
            m.step(self.server_first())
            self.assertReason("malformed", m.step, msg)

    def test_success_without_signature(self):
        # RFC 5802 5.1 "v": the client MUST verify the ServerSignature.
        m = self.client()
        m.step(self.server_first())
        self.assertReason("auth-failed", m.finish, None)
        self.assertReason("auth-failed", self.client().finish, None)

    def test_extra_challenge_after_final(self):
        name, cnonce, _s, c1, s1, c2, s2 = RFC7677
        m = new_client_mechanism(name, "user", "pencil", nonce=fixed(cnonce))
        m.initial()
        m.step(s1)
        m.step(s2)
        self.assertReason("malformed", m.step, b"more")
        self.assertReason("malformed", m.finish, s2)

    def test_non_scram_finish(self):
        m = new_client_mechanism("PLAIN", "u", "p")
        m.finish(None)
        self.assertRaises(SASLError, m.finish, b"data")


class ChooseTests(SynchronousTestCase):
    def test_preference(self):
        offered = ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256",
                   "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"]
        self.assertEqual(choose_client_mechanism(offered, True, True), "SCRAM-SHA-256-PLUS")
        self.assertEqual(choose_client_mechanism(offered, True, False), "SCRAM-SHA-256")
        self.assertEqual(choose_client_mechanism(offered[:4], True, True), "SCRAM-SHA-1")
        self.assertEqual(choose_client_mechanism(offered[:3], False, False), "CRAM-MD5")
        self.assertEqual(choose_client_mechanism(["PLAIN", "LOGIN"], True, False), "PLAIN")
        # A list of allowed mechanisms: the strongest allowed one the server offers.
        self.assertEqual(choose_client_mechanism(offered, True, True, ["CRAM-MD5", "SCRAM-SHA-1"]), "SCRAM-SHA-1")
        self.assertEqual(choose_client_mechanism(offered, False, False, ["PLAIN"]), None)
        self.assertEqual(choose_client_mechanism(["PLAIN"], True, False, ["plain", "CRAM-MD5"]), "PLAIN")
        self.assertEqual(choose_client_mechanism(["LOGIN"], True, False), "LOGIN")
        self.assertEqual(
            choose_client_mechanism(["SCRAM-SHA-1-PLUS"], True, True), "SCRAM-SHA-1-PLUS"
        )
        self.assertEqual(choose_client_mechanism(["scram-sha-1"], False, False), "SCRAM-SHA-1")
        self.assertEqual(list(CLIENT_PREFERENCE[:6]), [
            "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1",
            "CRAM-MD5", "PLAIN"])

    def test_no_cleartext_without_tls(self):
        self.assertIsNone(choose_client_mechanism(["PLAIN", "LOGIN"], False, False))
        self.assertIsNone(choose_client_mechanism(["PLAIN"], False, False, "PLAIN"))

    def test_nothing_usable(self):
        self.assertIsNone(choose_client_mechanism([], True, True))
        self.assertIsNone(choose_client_mechanism(["GSSAPI", "XOAUTH2"], True, True))
        self.assertIsNone(choose_client_mechanism(["SCRAM-SHA-256-PLUS"], True, False))

    def test_configured(self):
        offered = ["PLAIN", "CRAM-MD5", "SCRAM-SHA-256"]
        self.assertEqual(choose_client_mechanism(offered, True, False, "PLAIN"), "PLAIN")
        self.assertEqual(choose_client_mechanism(offered, True, False, "cram-md5"), "CRAM-MD5")
        self.assertIsNone(choose_client_mechanism(offered, True, False, "SCRAM-SHA-1"))
        self.assertIsNone(choose_client_mechanism(offered + ["GSSAPI"], True, False, "GSSAPI"))


class ScramNamesTests(SynchronousTestCase):
    def test_mechanism_hash(self):
        self.assertEqual(scram.mechanism_hash("SCRAM-SHA-256-PLUS"), ("sha256", True))
        self.assertEqual(scram.mechanism_hash("scram-sha-1"), ("sha1", False))
        self.assertRaises(KeyError, scram.mechanism_hash, "SCRAM-MD5")
