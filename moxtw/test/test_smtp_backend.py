"""SMTPBackend's rate limits, with a Clock: connections per IP, failed logins per IP and
per login (slowed, then refused)."""

from twisted.internet import defer, task
from twisted.trial import unittest

from moxtw import auth
from moxtw.auth import AuthFailed
from moxtw.delivery.localserve import localserve_rule
from moxtw.smtpserver import backend as be
from moxtw.smtpserver.server import Session


class FakeAuthenticator:
    def __init__(self):
        self.calls = 0

    def authenticate(self, login, password, app_passwords=False):
        self.calls += 1
        return defer.fail(AuthFailed("invalid login or password"))

    def credentials_for(self, login):
        self.calls += 1
        return defer.fail(AuthFailed("invalid login or password"))

    def login_disabled(self, name):
        return ""


class RateLimitTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)
        self.auth = FakeAuthenticator()
        self.backend = be.SMTPBackend(
            hostname="mx.example.org", router=None, authenticator=self.auth,
            current=lambda: (None, None), clock=self.clock,
        )
        self.session = Session(cid="1", kind="submission", remote_ip="192.0.2.1")

    def test_connections_per_ip(self):
        per_minute = be.CONNECTION_LIMITS[0][1]
        for _ in range(per_minute):
            self.assertIsNone(self.backend.connection_allowed(self.session))
        self.assertIn("too many connections", self.backend.connection_allowed(self.session))
        other = Session(cid="2", kind="smtp", remote_ip="192.0.2.2")
        self.assertIsNone(self.backend.connection_allowed(other))
        self.clock.advance(60)
        self.assertIsNone(self.backend.connection_allowed(self.session))

    def test_localserve_does_not_limit_connections(self):
        """localserve is a test server: a test suite may open a connection per message."""
        router = type("R", (), {"localserve": True})()
        backend = be.SMTPBackend(hostname="localhost", router=router, authenticator=self.auth,
                                 current=lambda: (None, None), clock=self.clock)
        for _ in range(be.CONNECTION_LIMITS[0][1] * 3):
            self.assertIsNone(backend.connection_allowed(self.session))

    def test_failed_auth_slowed_then_refused(self):
        delays = [self.backend.auth_result(self.session, False, "mjl@example.org") for _ in range(10)]
        self.assertEqual(delays[:3], [0.55, 1.1, 1.65])  # per IP failure, plus a little per login failure
        self.assertEqual(delays[-1], 5.0)  # capped
        self.assertIn("too many failed", self.backend.auth_allowed(self.session))
        self.clock.advance(61)
        self.assertIsNone(self.backend.auth_allowed(self.session))

    def test_per_ip_login_limit(self):
        """Failures for one login from one IP: that login is refused from that IP before
        any check; other logins from the IP and the login from other IPs are checked."""
        for _ in range(auth.IP_LOGIN_FAILURE_LIMITS[0][1]):
            self.backend.auth_result(self.session, False, "mjl@example.org")
        limiter = self.backend.sasl_backend(self.session)
        before = self.auth.calls
        f = self.failureResultOf(limiter.authenticate("MJL@example.org", "x"), AuthFailed)
        self.assertIn("too many failed attempts", str(f.value))
        self.assertEqual(self.auth.calls, before)  # password not even checked
        self.failureResultOf(limiter.authenticate("other@example.org", "x"), AuthFailed)
        self.assertEqual(self.auth.calls, before + 1)
        other = self.backend.sasl_backend(Session(cid="2", kind="submission", remote_ip="192.0.2.9"))
        self.failureResultOf(other.authenticate("mjl@example.org", "x"), AuthFailed)
        self.assertEqual(self.auth.calls, before + 2)

    def test_login_failures_from_many_ips_do_not_refuse(self):
        """Failures for one login from many IPs only slow; a fresh IP is still checked."""
        for i in range(200):
            s = Session(cid=str(i), kind="submission", remote_ip=f"198.51.100.{i}")
            self.backend.auth_result(s, False, "mjl@example.org")
        self.assertIsNone(self.backend.auth_allowed(self.session))
        limiter = self.backend.sasl_backend(self.session)
        before = self.auth.calls
        self.failureResultOf(limiter.authenticate("mjl@example.org", "x"), AuthFailed)
        self.assertEqual(self.auth.calls, before + 1)

    def test_localserve_rules(self):
        r = localserve_rule
        self.assertEqual((r("x-temperror").stage, r("x-temperror").code), ("data", 451))
        self.assertEqual((r("rcptto-permerror").stage, r("rcptto-permerror").code), ("rcptto", 550))
        self.assertEqual((r("mailfrom421").stage, r("mailfrom421").code), ("mailfrom", 421))
        self.assertIsNone(r("user-timeout").code)
        self.assertTrue(r("queue-anything").queue)
        self.assertIsNone(r("mjl"))
        self.assertIsNone(r("user123"))  # not 4xx/5xx
