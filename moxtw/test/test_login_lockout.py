"""Hostile logins: password guessing must not lock the real user out (issue 10).

Failed logins are limited per source IP and per source IP and login; failures for a
login counted over all IPs only slow failure replies. SMTP AUTH and IMAP LOGIN share one
limiter. Real clients (smtplib, imaplib) over loopback, from distinct 127.x source
addresses, against the real service tree.
"""

import imaplib
import os
import smtplib
import socket
import ssl
import time

from twisted.internet import defer, task, threads
from twisted.trial import unittest

from moxtw import auth, ratelimit
from moxtw.test import servertree
from moxtw.test.test_localserve import free_offset

STATIC = """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.org"
[Postmaster]
Account = "mjl"
Mailbox = "Postmaster"
[Listeners.main]
IPs = ["127.0.0.1"]
[Listeners.main.TLS]
KeyCerts = [{{CertFile = "tls/localhost.crt", KeyFile = "tls/localhost.key"}}]
[Listeners.main.Submissions]
Enabled = true
Port = {submissions}
[Listeners.main.IMAPS]
Enabled = true
Port = {imaps}
"""

DYNAMIC = """
[Domains."example.org"]
[Accounts.mjl]
Domain = "example.org"
[Accounts.mjl.Destinations."mjl@example.org"]
"""

LOGIN = "mjl@example.org"
PASSWORD = "the right password"


class _FrozenTime:
    """Stands in for the time module in moxtw.ratelimit: a fixed instant."""

    def __init__(self):
        self.now = 1_700_000_030.0

    def time(self):
        return self.now


class _SourcedIMAP(imaplib.IMAP4_SSL):
    """imaplib over implicit TLS from a chosen source address."""

    def __init__(self, source, port, context):
        self._source = source
        super().__init__("127.0.0.1", port, ssl_context=context, timeout=10)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname="localhost")


class LockoutTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        # Failure replies are slowed by design; keep the test quick.
        self.patch(auth, "FAILURE_SLOWDOWN", 0.001)
        self.patch(auth, "LOGIN_SLOWDOWN", 0.001)
        # The limits count in fixed windows (a minute, an hour, a day) aligned to the clock:
        # a test crossing a minute boundary would start counting again. Frozen time (the
        # server's limiters read the reactor's clock: theirs is replaced after the start).
        frozen = _FrozenTime()
        self.patch(ratelimit, "time", frozen)
        off = free_offset()
        self.ports = {"submissions": 465 + off, "imaps": 993 + off}
        self.cfg, self.ca = servertree.write_config(
            os.path.abspath(self.mktemp()), STATIC.format(**self.ports), DYNAMIC
        )
        self.root = yield servertree.start(self, self.cfg)
        limits = self.root.login_limits
        for limiter in (limits.ip_failures, limits.ip_login_failures, limits.login_failures):
            limiter._now = frozen.time
        acc = yield self.root.store.open_account("mjl")
        yield acc.set_password(PASSWORD)

    def context(self):
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.check_hostname = False  # connecting to 127.0.0.1; the CA is still checked
        return ctx

    def smtp_login(self, source, password):
        """'ok', or the SMTP reply code of the refusal."""
        with smtplib.SMTP_SSL("127.0.0.1", self.ports["submissions"], source_address=(source, 0),
                              context=self.context(), timeout=10) as s:
            s.ehlo()
            s.user, s.password = LOGIN, password
            try:
                # One mechanism: login() would try each on failure, counting 3 failures.
                s.auth("PLAIN", s.auth_plain)
                return "ok"
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code

    def imap_login(self, source, password):
        """'ok', or the text of the NO."""
        c = _SourcedIMAP(source, self.ports["imaps"], self.context())
        try:
            c.login(LOGIN, password)
            return "ok"
        except imaplib.IMAP4.error as e:
            return str(e)
        finally:
            c.logout()

    def in_thread(self, fn, *args):
        return threads.deferToThread(fn, *args)

    @defer.inlineCallbacks
    def test_guessing_from_one_ip_does_not_lock_out_others(self):
        # Guesses over both protocols from 127.0.0.1 count together: after 10 the IP is
        # refused, even with the right password, on SMTP and on IMAP.
        for i in range(auth.IP_FAILURE_LIMITS[0][1]):
            if i % 2:
                self.assertEqual((yield self.in_thread(self.smtp_login, "127.0.0.1", f"guess{i}")), 535)
            else:
                self.assertIn("AUTHENTICATIONFAILED", (yield self.in_thread(self.imap_login, "127.0.0.1", f"guess{i}")))
        self.assertEqual((yield self.in_thread(self.smtp_login, "127.0.0.1", PASSWORD)), 454)
        self.assertIn("UNAVAILABLE", (yield self.in_thread(self.imap_login, "127.0.0.1", PASSWORD)))

        # The real user, from another address, logs in at once on both.
        t0 = time.monotonic()
        self.assertEqual((yield self.in_thread(self.smtp_login, "127.0.0.2", PASSWORD)), "ok")
        self.assertEqual((yield self.in_thread(self.imap_login, "127.0.0.2", PASSWORD)), "ok")
        self.assertLess(time.monotonic() - t0, 5)

    @defer.inlineCallbacks
    def test_guessing_from_many_ips(self):
        # A distributed guesser: each IP stops at the IP+login limit, and the account's
        # many failures never refuse the right password from an IP that has not failed.
        per_ip = auth.IP_LOGIN_FAILURE_LIMITS[0][1]
        for n in range(3, 9):
            source = f"127.0.0.{n}"
            for i in range(per_ip):
                self.assertEqual((yield self.in_thread(self.smtp_login, source, f"guess{n}.{i}")), 535)
            # This IP is now refused for this login (before any password check), with
            # the same reply as a wrong password.
            self.assertEqual((yield self.in_thread(self.smtp_login, source, PASSWORD)), 535)
        self.assertEqual((yield self.in_thread(self.smtp_login, "127.0.0.2", PASSWORD)), "ok")
        self.assertEqual((yield self.in_thread(self.imap_login, "127.0.0.2", PASSWORD)), "ok")


class LimitsTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)
        self.limits = auth.LoginLimits(authenticator=None, clock=self.clock)

    def test_account_failures_only_slow(self):
        for n in range(1000):
            self.limits.record(f"198.51.100.{n % 250}", "mjl@example.org", False)
        self.assertIsNone(self.limits.allowed("192.0.2.1"))
        self.assertTrue(self.limits.ip_login_failures.can_add(("192.0.2.1", "mjl@example.org")))
        self.assertEqual(self.limits.record("192.0.2.1", "mjl@example.org", False), auth.MAX_FAILURE_DELAY)

    def test_success_clears_ip_login_failures(self):
        for _ in range(4):
            self.limits.record("192.0.2.1", "mjl@example.org", False)
        self.limits.record("192.0.2.1", "mjl@example.org", True)
        self.assertEqual(self.limits.ip_login_failures.count(("192.0.2.1", "mjl@example.org")), 0)
        self.assertEqual(self.limits.ip_failures.count("192.0.2.1"), 4)

    def test_memory_bounded(self):
        # Keys expire: a stream of new addresses does not grow the tables without bound.
        for n in range(2000):
            self.limits.record(f"ip{n}", f"user{n}", False)
        self.clock.advance(86400 * 2)
        self.limits.record("x", "y", False)
        for limiter in (self.limits.ip_failures, self.limits.ip_login_failures, self.limits.login_failures):
            self.assertEqual(len(limiter._counts), 1)

    def test_ipv6_counted_per_64(self):
        """A host has a /64: failures from its addresses count together (review: each
        IPv6 address had its own limit)."""
        for n in range(1, 200):
            self.limits.record(f"2001:db8:1:2::{n:x}", "mjl@example.org", False)
        self.assertIsNotNone(self.limits.allowed("2001:db8:1:2:ffff::1"))
        self.assertIsNone(self.limits.allowed("2001:db8:1:3::1"))
        # IPv4 in IPv6 (a dual-stack listener) counts as the IPv4 address.
        for _ in range(200):
            self.limits.record("::ffff:192.0.2.7", "", False)
        self.assertIsNotNone(self.limits.allowed("192.0.2.7"))

    def test_long_logins_bounded_keys(self):
        login = "x" * 100000
        self.limits.record("192.0.2.1", login, False)
        [key] = self.limits.login_failures._counts
        self.assertLess(len(key), 100)
        self.assertEqual(self.limits.login_failures.count(auth._login_key(login)), 1)
