"""``moxtw config account|address|domain|alias``, ``loglevels`` and ``stop`` against a
running server (a localserve child process): each change is visible to SMTP and IMAP
without restart; bad input gets a clear error and changes nothing. The edits themselves
(comments kept, validation before writing) are tested on files."""

import imaplib
import os
import smtplib

from twisted.internet import defer, threads
from twisted.trial import unittest

from moxtw import config as mconfig
from moxtw.admin import configedit
from moxtw.config import write_localserve_config
from moxtw.test.clihelper import run_moxtw
from moxtw.test.test_localserve import free_offset, spawn_localserve


class RunningServerTests(unittest.TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.offset = free_offset()
        self.proc = spawn_localserve(self, self.dir, self.offset)
        yield self.proc.listening
        self.config = os.path.join(self.dir, "config")

    @defer.inlineCallbacks
    def cli(self, *args, stdin=None, ok=True):
        out, err, code = yield run_moxtw(*args, "--config", self.config, stdin=stdin)
        if ok:
            self.assertEqual(code, 0, (out + err).decode())
        return out.decode(), err.decode(), code

    def rcpt(self, address):
        def go():
            with smtplib.SMTP("127.0.0.1", 25 + self.offset, timeout=30) as s:
                s.ehlo("client.example")
                s.mail("sender@example.net")
                return s.rcpt(address)[0]

        return threads.deferToThread(go)

    def imap_login(self, user, password):
        def go():
            im = imaplib.IMAP4("127.0.0.1", 143 + self.offset, timeout=30)
            try:
                im.login(user, password)
                return im.select("INBOX")[0]
            except imaplib.IMAP4.error as e:
                return str(e)
            finally:
                try:
                    im.logout()
                except Exception:
                    pass

        return threads.deferToThread(go)

    @defer.inlineCallbacks
    def test_changes_visible_without_restart(self):
        out, _, _ = yield self.cli("config", "domain", "add", "example.org", "mox")
        self.assertIn("the running server reloaded the configuration", out)
        out, _, _ = yield self.cli("config", "account", "add", "bob", "bob@example.org")
        self.assertIn("reloaded", out)
        yield self.cli("setaccountpassword", "bob", stdin="bob password\n")
        self.assertEqual((yield self.imap_login("bob@example.org", "bob password")), "OK")
        self.assertEqual((yield self.rcpt("bob@example.org")), 250)
        self.assertEqual((yield self.rcpt("robert@example.org")), 550)
        yield self.cli("config", "address", "add", "robert@example.org", "bob")
        self.assertEqual((yield self.rcpt("robert@example.org")), 250)
        yield self.cli("config", "address", "rm", "robert@example.org")
        self.assertEqual((yield self.rcpt("robert@example.org")), 550)

        # Aliases deliver to their members at once.
        self.assertEqual((yield self.rcpt("team@example.org")), 550)
        yield self.cli("config", "alias", "add", "team@example.org", "bob@example.org")
        yield self.cli("config", "alias", "update", "team@example.org", "--postpublic", "true")
        self.assertEqual((yield self.rcpt("team@example.org")), 250)
        out, _, _ = yield self.cli("config", "alias", "list", "example.org")
        self.assertEqual(out, "team@example.org\n")

        # Bad input: a clear error and no change.
        before = open(os.path.join(self.config, "domains.toml")).read()
        for args, text in (
            (("config", "account", "add", "bob", "bob2@example.org"), "account 'bob' exists"),
            (("config", "account", "add", "carol", "bob@example.org"), "already used by account 'bob'"),
            (("config", "account", "add", "carol", "carol@unknown.example"), "is not configured"),
            (("config", "account", "add", "carol", "car ol@example.org"), "invalid localpart"),
            (("config", "address", "add", "x@example.org", "nobody"), "no account 'nobody'"),
            (("config", "domain", "add", "example.org", "mox"), "domain 'example.org' exists"),
            (("config", "domain", "rm", "example.org"), "still used by account(s) bob"),
            (("config", "alias", "addaddr", "team@example.org", "nobody@example.org"),
             "nobody@example.org is not a destination"),
            # The alias still has bob's address as a member.
            (("config", "account", "rm", "bob"), "bob@example.org is not a destination of any account"),
        ):
            _, err, code = yield self.cli(*args, ok=False)
            self.assertEqual(code, 1, args)
            self.assertIn(text, err, args)
        self.assertEqual(open(os.path.join(self.config, "domains.toml")).read(), before)

        # Removing the account (alias first) ends its logins and deliveries; data stays.
        yield self.cli("config", "alias", "rm", "team@example.org")
        out, _, _ = yield self.cli("config", "account", "rm", "bob")
        self.assertIn("its messages are kept in", out)
        self.assertEqual((yield self.rcpt("bob@example.org")), 550)
        self.assertNotEqual((yield self.imap_login("bob@example.org", "bob password")), "OK")
        self.assertTrue(os.path.isdir(os.path.join(self.dir, "data", "accounts", "bob")))
        _, err, code = yield self.cli("config", "account", "rm", "mox", "--delete-data", ok=False)
        self.assertEqual(code, 1)
        self.assertIn("needs the server stopped", err)

    @defer.inlineCallbacks
    def test_loglevels_and_stop(self):
        out, _, _ = yield self.cli("loglevels")
        self.assertIn("default: debug", out)
        out, _, _ = yield self.cli("loglevels", "trace", "smtpserver")
        self.assertIn("smtpserver: trace", out)
        _, err, code = yield self.cli("loglevels", "loud", ok=False)
        self.assertEqual(code, 1)
        self.assertIn("unknown log level", err)
        _, err, code = yield self.cli("loglevels", "debug", "smtpservr", ok=False)
        self.assertEqual(code, 1)
        self.assertIn("unknown package 'smtpservr'", err)
        # trace logs the SMTP transcript now.
        yield self.rcpt("mox@localhost")
        self.assertIn(b'msg="C: rcpt TO:<mox@localhost>"', self.proc.out)
        out, _, _ = yield self.cli("stop")
        self.assertIn("server stopping", out)
        yield self.proc.ended
        self.assertEqual(self.proc.reason.value.exitCode, 0)
        _, err, code = yield self.cli("loglevels", ok=False)
        self.assertEqual(code, 1)
        self.assertIn("is it running?", err)


class EditTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.config = write_localserve_config(os.path.abspath(self.mktemp()))
        path = os.path.join(self.config, "domains.toml")
        with open(path, "a") as f:
            f.write("\n# a comment the operator wrote\n")

    def test_comments_kept_and_offline(self):
        configedit.apply(self.config, configedit.account_add("bob", "bob@localhost"))
        text = open(os.path.join(self.config, "domains.toml")).read()
        self.assertIn("# a comment the operator wrote", text)
        self.assertIn('Account "mox" receives email', text)
        cfg = mconfig.load(self.config)
        self.assertEqual(list(cfg.dynamic.Accounts["bob"].Destinations), ["bob@localhost"])

    def test_domain_add_refused_leaves_no_keys(self):
        dkim = os.path.join(self.config, "dkim")
        with self.assertRaises(configedit.EditError):
            configedit.apply(self.config, configedit.domain_add("example.org", "nobody"))
        with self.assertRaises(configedit.EditError):
            configedit.apply(self.config, configedit.domain_add("example.org", "mox", "bad local"))
        self.assertEqual(os.listdir(dkim) if os.path.isdir(dkim) else [], [])
        configedit.apply(self.config, configedit.domain_add("exämple.org", "mox", "info"))
        cfg = mconfig.load(self.config)
        self.assertIn("exämple.org", cfg.dynamic.Domains)
        self.assertIn("info@exämple.org", cfg.dynamic.Accounts["mox"].Destinations)
        self.assertEqual(len(os.listdir(dkim)), 2)

    def test_hostile_names(self):
        for change in (
            configedit.account_add("../etc", "x@localhost"),
            configedit.account_add("", "x@localhost"),
            configedit.account_add("a\nb", "x@localhost"),
            configedit.address_add("a@b@localhost", "mox"),
            configedit.address_add('"quoted\\"x"@nowhere', "mox"),
            configedit.domain_add("-bad-.example", "mox"),
            configedit.domain_add("a" * 300 + ".example", "mox"),
            configedit.alias_add("x@localhost", []),
        ):
            before = open(os.path.join(self.config, "domains.toml")).read()
            with self.assertRaises(configedit.EditError):
                configedit.apply(self.config, change)
            self.assertEqual(open(os.path.join(self.config, "domains.toml")).read(), before)
