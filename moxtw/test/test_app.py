"""The service tree of ``serve``: listeners from config, quotas from reloads, errors."""

import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from moxtw import app, listeners
from moxtw import config as mconfig
from moxtw.test.test_localserve import free_offset
from moxtw.test import servertree

STATIC = """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.org"
QuotaMessageSize = 0
[Postmaster]
Account = "mjl"
Mailbox = "Postmaster"
[Listeners.main]
IPs = ["127.0.0.1"]
[Listeners.main.TLS]
KeyCerts = [{{CertFile = "tls/localhost.crt", KeyFile = "tls/localhost.key"}}]
[Listeners.main.SMTP]
Enabled = true
Port = {smtp}
[Listeners.main.IMAPS]
Enabled = true
Port = {imaps}
[Listeners.main.AdminHTTP]
Enabled = true
Port = {http}
[Listeners.main.MetricsHTTP]
Enabled = true
Port = {http}
"""

DYNAMIC = """
[Domains."example.org"]
[Accounts.mjl]
Domain = "example.org"
QuotaMessageSize = 1000000
[Accounts.mjl.Destinations."mjl@example.org"]
"""


def write_config(d, offset):
    cfg, _ca = servertree.write_config(
        d, STATIC.format(smtp=25 + offset, imaps=993 + offset, http=80 + offset), DYNAMIC
    )
    return cfg


class ServeTreeTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_tree_and_reload(self):
        d = os.path.abspath(self.mktemp())
        offset = free_offset()
        cfg = write_config(d, offset)
        self.assertEqual(mconfig.check_files(cfg), [])
        root = app.makeService(cfg, reactor=reactor)
        names = sorted(s.spec.name for s in root.listeners)
        self.assertEqual(
            names,
            sorted([
                f"main/SMTP/127.0.0.1:{25 + offset}",
                f"main/IMAPS/127.0.0.1:{993 + offset}",
                f"main/AdminHTTP+MetricsHTTP/127.0.0.1:{80 + offset}",
            ]),
        )
        root.privilegedStartService()
        root.startService()
        self.addCleanup(root.stopService)
        storesvc = root.getServiceNamed("store")
        yield storesvc.ready
        acc = yield root.store.open_account("mjl")
        self.assertEqual(acc.quota, 1000000)
        self.assertTrue(all(s.port is not None for s in root.listeners))

        # domains.toml changes: the new quota applies without restart.
        mconfig.write_dynamic(
            cfg.dynamic_path,
            cfg.static,
            lambda doc: doc["Accounts"]["mjl"].__setitem__("QuotaMessageSize", 5000),
        )
        os.utime(cfg.dynamic_path, (1, 1))  # mtime differs even within one second
        root.watcher.check()
        self.assertEqual(acc.quota, 5000)

    def test_port_in_use_fails_loudly(self):
        d = os.path.abspath(self.mktemp())
        offset = free_offset()
        cfg = write_config(d, offset)
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 25 + offset))
        s.listen()
        self.addCleanup(s.close)
        root = app.makeService(cfg, reactor=reactor)
        e = self.assertRaises(SystemExit, root.privilegedStartService)
        # One line for twistd to print (exit status 1): the address, and what to change.
        self.assertEqual(
            str(e),
            f"moxtw: cannot listen on 127.0.0.1:{25 + offset} for SMTP (listener main): address"
            " already in use (by another program, or another moxtw); stop that program or"
            f" change the port in {cfg.static_path}",
        )
        for svc in root.listeners:
            if svc.port is not None:
                svc.port.stopListening()

    def test_implicit_tls_needs_keycerts(self):
        d = os.path.abspath(self.mktemp())
        cfg = write_config(d, free_offset())
        cfg.static.Listeners["main"].TLS = None
        self.assertRaises(listeners.ListenerError, app.makeService, cfg, reactor)


class PlanTests(unittest.SynchronousTestCase):
    def test_shared_port_tls_mismatch(self):
        d = os.path.abspath(self.mktemp())
        cfg = write_config(d, 20000)
        lst = cfg.static.Listeners["main"]
        lst.AccountHTTPS.Enabled = True
        lst.AccountHTTPS.Port = lst.AdminHTTP.Port
        e = self.assertRaises(listeners.ListenerError, listeners.plan, cfg.static)
        self.assertIn("share port", str(e))

    def test_same_port_twice(self):
        d = os.path.abspath(self.mktemp())
        cfg = write_config(d, 20000)
        lst = cfg.static.Listeners["main"]
        lst.IMAPS.Port = lst.SMTP.Port
        e = self.assertRaises(listeners.ListenerError, listeners.plan, cfg.static)
        self.assertIn("same IP and port", str(e))


class AuthTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        d = os.path.abspath(self.mktemp())
        self.cfg = write_config(d, free_offset())
        self.root = app.makeService(self.cfg, reactor=reactor)
        self.root.privilegedStartService()
        self.root.startService()
        self.addCleanup(self.root.stopService)
        acc = yield self.root.store.open_account("mjl")
        yield acc.set_password("pässword")

    @defer.inlineCallbacks
    def test_login(self):
        from moxtw.auth import AuthFailed, LoginDisabled

        auth = self.root.auth
        acc = yield auth.authenticate("mjl@example.org", "pässword")
        self.assertEqual(acc.name, "mjl")
        # Localparts are case-insensitive unless the domain says otherwise; domains always.
        acc = yield auth.authenticate("MJL@Example.ORG", "pa\u0308ssword")  # PRECIS: NFC
        self.assertEqual(acc.name, "mjl")
        for login, pw in (
            ("mjl@example.org", "wrong"),
            ("nobody@example.org", "pässword"),
            ("not an address", "x"),
            ("", ""),
        ):
            yield self.assertFailure(auth.authenticate(login, pw), AuthFailed)
        mconfig.write_dynamic(
            self.cfg.dynamic_path,
            self.cfg.static,
            lambda doc: doc["Accounts"]["mjl"].__setitem__("LoginDisabled", "account moved"),
        )
        os.utime(self.cfg.dynamic_path, (2, 2))
        self.root.watcher.check()
        e = yield self.assertFailure(auth.authenticate("mjl@example.org", "pässword"), LoginDisabled)
        self.assertEqual(str(e), "account moved")
