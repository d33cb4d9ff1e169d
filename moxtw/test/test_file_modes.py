"""File modes of the data directory (issue 10): everything private to the moxtw user.

Unit tests of ``moxtw.filemodes.fix_modes`` and ``durable.make_dirs``, and end-to-end
tests on the real service tree: after a delivery over SMTP, a queue entry and stored
reports, every file under the data directory is 0600 and every directory 0700, also when
the process umask (022 here) would allow more; a data directory an older moxtw left
readable is repaired at start.
"""

import os
import smtplib
import stat

from twisted.internet import defer, threads
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from moxtw import durable, filemodes, tap
from moxtw.reports.dmarc import parse as dmarcparse
from moxtw.store import prepare_account_dir
from moxtw.test import servertree
from moxtw.test.test_localserve import free_offset
from moxtw.reports.tls import parse as tlsparse

DATA = os.path.join(os.path.dirname(__file__), "data")
# A umask that lets group and others read: what most processes (and the tests) run with.
PERMISSIVE_UMASK = 0o022
OTHERS = 0o077

STATIC = """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.org"
[Postmaster]
Account = "mjl"
Mailbox = "Postmaster"
[Listeners.main]
IPs = ["127.0.0.1"]
[Listeners.main.SMTP]
Enabled = true
Port = {smtp}
"""

DYNAMIC = """
[Domains."example.org"]
[Accounts.mjl]
Domain = "example.org"
[Accounts.mjl.Destinations."mjl@example.org"]
"""

MESSAGE = (
    b"From: bob@example.net\r\nTo: mjl@example.org\r\nSubject: modes\r\n"
    b"Message-ID: <modes@example.net>\r\n\r\nsecret mail\r\n"
)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def walk_modes(top):
    """{path: (is_dir, mode)} of ``top`` and everything under it, symlinks excluded."""
    out = {top: (True, mode(top))}
    for d, dirs, files in os.walk(top):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            if not stat.S_ISLNK(st.st_mode):
                out[p] = (stat.S_ISDIR(st.st_mode), stat.S_IMODE(st.st_mode))
    return out


def fixture(name):
    with open(os.path.join(DATA, name), "rb") as f:
        return f.read()


class PermissiveUmaskMixin:
    def permissive_umask(self):
        """Run the test with umask 022, so only explicit modes make files private."""
        old = os.umask(PERMISSIVE_UMASK)
        self.addCleanup(os.umask, old)


class FixModesTests(PermissiveUmaskMixin, unittest.SynchronousTestCase):
    def setUp(self):
        self.permissive_umask()
        base = os.path.abspath(self.mktemp())
        self.top = os.path.join(base, "data")
        self.outside = os.path.join(base, "outside")
        os.makedirs(os.path.join(self.top, "accounts", "mjl"))
        os.makedirs(self.outside)
        self.files = {
            "index.db": 0o644,
            "index.db-wal": 0o640,
            "script": 0o755,  # the owner x bit goes too: data files are never run
            "private": 0o600,  # already right: unchanged, not counted
            "readonly": 0o400,  # no group/other bits: left alone
        }
        for name, m in self.files.items():
            p = os.path.join(self.top, "accounts", "mjl", name)
            with open(p, "wb") as f:
                f.write(b"x")
            os.chmod(p, m)
        os.chmod(self.top, 0o755)
        os.chmod(os.path.join(self.top, "accounts"), 0o750)
        os.chmod(os.path.join(self.top, "accounts", "mjl"), 0o700)
        self.outside_file = os.path.join(self.outside, "shared.txt")
        with open(self.outside_file, "wb") as f:
            f.write(b"not ours")
        os.chmod(self.outside_file, 0o644)
        os.chmod(self.outside, 0o755)
        os.symlink(self.outside_file, os.path.join(self.top, "link-to-file"))
        os.symlink(self.outside, os.path.join(self.top, "link-to-dir"))

    def acc(self, name):
        return os.path.join(self.top, "accounts", "mjl", name)

    def test_fix_modes(self):
        fixed = filemodes.fix_modes(self.top)
        # data/, accounts/, index.db, index.db-wal, script.
        self.assertEqual(fixed, 5)
        self.assertEqual(mode(self.top), 0o700)
        self.assertEqual(mode(os.path.join(self.top, "accounts")), 0o700)
        self.assertEqual(mode(os.path.join(self.top, "accounts", "mjl")), 0o700)
        for name in ("index.db", "index.db-wal", "script", "private"):
            self.assertEqual(mode(self.acc(name)), 0o600, name)
        self.assertEqual(mode(self.acc("readonly")), 0o400)

    def test_symlinks_not_followed(self):
        filemodes.fix_modes(self.top)
        self.assertEqual(mode(self.outside_file), 0o644)
        self.assertEqual(mode(self.outside), 0o755)
        self.assertTrue(os.path.islink(os.path.join(self.top, "link-to-file")))
        self.assertTrue(os.path.islink(os.path.join(self.top, "link-to-dir")))

    def test_data_dir_a_symlink(self):
        """A data directory that is a symlink (to another disk): its target is made
        private, and a second run reports nothing (review: every start logged a repair
        and the target stayed 0755)."""
        link = os.path.join(os.path.dirname(self.top), "data-link")
        os.symlink(self.top, link)
        self.assertEqual(filemodes.fix_modes(link), 5)
        self.assertEqual(mode(self.top), 0o700)
        self.assertEqual(mode(self.acc("index.db")), 0o600)
        self.assertEqual(filemodes.fix_modes(link), 0)

    def test_second_run_changes_nothing(self):
        filemodes.fix_modes(self.top)
        before = walk_modes(self.top)
        self.assertEqual(filemodes.fix_modes(self.top), 0)
        self.assertEqual(walk_modes(self.top), before)

    def test_service_logs_count(self):
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        svc = filemodes.FileModesService(self.top)
        svc.startService()
        self.addCleanup(svc.stopService)
        self.assertEqual(svc.fixed, 5)
        events = [e for e in logged if e.get("log_namespace") == "moxtw.filemodes"]
        self.assertEqual([e["count"] for e in events], [5])

    def test_service_quiet_when_nothing_fixed(self):
        filemodes.fix_modes(self.top)
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        svc = filemodes.FileModesService(self.top)
        svc.startService()
        self.addCleanup(svc.stopService)
        self.assertEqual(svc.fixed, 0)
        self.assertEqual([e for e in logged if e.get("log_namespace") == "moxtw.filemodes"], [])

    def test_service_missing_data_dir(self):
        svc = filemodes.FileModesService(os.path.join(self.top, "absent"))
        svc.startService()
        self.addCleanup(svc.stopService)
        self.assertEqual(svc.fixed, 0)


class CreateTests(PermissiveUmaskMixin, unittest.SynchronousTestCase):
    def setUp(self):
        self.permissive_umask()
        self.base = os.path.abspath(self.mktemp())

    def test_make_dirs_all_levels(self):
        leaf = os.path.join(self.base, "a", "b", "c")
        durable.make_dirs(leaf)
        for p in (self.base, os.path.dirname(os.path.dirname(leaf)), os.path.dirname(leaf), leaf):
            self.assertEqual(mode(p), durable.DIR_MODE, p)
        durable.make_dirs(leaf)  # exists: no error

    def test_make_dirs_file_in_the_way(self):
        os.makedirs(self.base)
        p = os.path.join(self.base, "f")
        with open(p, "wb"):
            pass
        self.assertRaises(FileExistsError, durable.make_dirs, p)

    def test_write_atomic_new_file_private(self):
        os.makedirs(self.base)
        p = os.path.join(self.base, "f")
        durable.write_atomic(p, b"data")
        self.assertEqual(mode(p), durable.FILE_MODE)

    def test_account_index_private(self):
        path = os.path.join(self.base, "accounts", "mjl")
        prepare_account_dir(path)
        modes = walk_modes(self.base)
        self.assertIn(os.path.join(path, "index.db"), modes)
        self.assertEqual({p: m for p, (_, m) in modes.items() if m & OTHERS}, {})


class ServerModesTests(PermissiveUmaskMixin, unittest.TestCase):
    """The real service tree, with umask 022: explicit modes keep the data private."""

    timeout = 60

    def setUp(self):
        self.permissive_umask()
        self.port = 25 + free_offset()
        self.dir = os.path.abspath(self.mktemp())
        self.data = os.path.join(self.dir, "data")

    def config(self):
        cfg, _ = servertree.write_config(self.dir, STATIC.format(smtp=self.port), DYNAMIC)
        return cfg

    def assert_private(self, expect):
        modes = walk_modes(self.data)
        for name in expect:
            self.assertIn(os.path.join(self.data, name), modes)
        loose = {p: oct(m) for p, (is_dir, m) in modes.items()
                 if (m != durable.DIR_MODE if is_dir else m & OTHERS)}
        self.assertEqual(loose, {})
        return modes

    @defer.inlineCallbacks
    def test_delivery_queue_reports(self):
        root = yield servertree.start(self, self.config())
        acc = yield root.store.open_account("mjl")
        yield acc.set_password("modes password")  # the SCRAM keys in index.db

        def deliver():
            with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as s:
                s.sendmail("bob@example.net", ["mjl@example.org"], MESSAGE)

        yield threads.deferToThread(deliver)
        inbox = yield acc.mailbox("Inbox")
        msgs = yield acc.messages(inbox.id)
        self.assertEqual(len(msgs), 1)

        ids = yield root.queue.add(MESSAGE, "mjl@example.org", ["alice@example.com"],
                                   sender_account="mjl", hold=True)
        self.assertEqual(len(ids), 1)

        tls = tlsparse.parse_report(fixture("tlsrpt-google.json"))
        yield root.reports.tlsrpt.add(tls, "noreply-smtp-tls-reporting@google.com", "example.org")
        dmarc = dmarcparse.parse_feedback(fixture("dmarc-google.xml"))
        yield root.reports.dmarc.add(dmarc, "noreply-dmarc-support@google.com", "example.org")

        modes = self.assert_private([
            "accounts/mjl/index.db", "accounts/mjl/index.db-wal", "accounts/mjl/index.db-shm",
            "queue.db", "queue.db-wal", "tlsrpt.db", "tlsrpt.db-wal", "dmarc.db",
            "dmarc.db-wal", "dmarceval.db",
        ])
        # The delivered and the queued message files were walked too.
        queued = [p for p in modes if p.startswith(os.path.join(self.data, "queue") + os.sep)
                  and not modes[p][0]]
        stored = [p for p in modes if "/maildir/" in p and not modes[p][0]]
        self.assertEqual(len(queued), 1)
        self.assertEqual(len(stored), 1)

    @defer.inlineCallbacks
    def test_existing_modes_fixed_at_start(self):
        cfg = self.config()
        account = os.path.join(self.data, "accounts", "mjl")
        prepare_account_dir(account)  # as an older moxtw left it: readable by all
        index = os.path.join(account, "index.db")
        os.chmod(index, 0o644)
        for d in (self.data, os.path.join(self.data, "accounts"), account):
            os.chmod(d, 0o755)
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        root = yield servertree.start(self, cfg)
        self.assertEqual(mode(index), 0o600)
        # Fixed before the store opened index.db (SQLite gives -wal the database's mode).
        names = [svc.name for svc in root]
        self.assertLess(names.index("filemodes"), names.index("store"))
        self.assertGreaterEqual(root.getServiceNamed("filemodes").fixed, 4)
        self.assertTrue([e for e in logged if e.get("log_namespace") == "moxtw.filemodes"])
        acc = yield root.store.open_account("mjl")
        yield acc.set_password("still works")
        self.assert_private(["accounts/mjl/index.db", "accounts/mjl/index.db-wal"])


class UmaskTests(PermissiveUmaskMixin, unittest.SynchronousTestCase):
    def test_localserve_sets_umask(self):
        """``twistd moxtw localserve`` (and ``serve``) set the umask before writing."""
        self.permissive_umask()
        d = os.path.abspath(self.mktemp())
        opts = tap.Options()
        opts.parseOptions(["localserve", "--dir", d, "--port-offset", str(free_offset())])
        root = tap.makeService(opts)
        self.assertIsNotNone(root)
        current = os.umask(filemodes.UMASK)
        self.assertEqual(current, filemodes.UMASK)
        modes = walk_modes(os.path.join(d, "data"))
        self.assertIn(os.path.join(d, "data", "tls", "ca.crt"), modes)
        self.assertEqual({p: m for p, (_, m) in modes.items() if m & OTHERS}, {})
