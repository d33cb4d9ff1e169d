"""``moxtw backup`` while a load generator delivers and expunges: the copy passes
verifydata, and a server started from it serves the same mail over IMAP. Offline backup
too, and refused destinations."""

import imaplib
import os
import smtplib
import threading
import time

from twisted.internet import defer, threads
from twisted.trial import unittest

from moxtw.admin import backup
from moxtw.config import write_localserve_config
from moxtw.test.clihelper import run_moxtw
from moxtw.test.test_localserve import _stop, free_offset, spawn_localserve


def message(i):
    return (f"From: load@example.org\r\nTo: mox@localhost\r\nSubject: load {i}\r\n"
            f"Message-ID: <load{i}@example.org>\r\n\r\n" + "data line\r\n" * 200).encode()


def imap_count(port, mailbox="INBOX"):
    im = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        im.login("mox@localhost", "moxmoxmox")
        typ, data = im.select(mailbox)
        return int(data[0])
    finally:
        im.logout()


class BackupTests(unittest.TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def test_backup_under_load_serves_same_mail(self):
        d = os.path.abspath(self.mktemp())
        offset = free_offset()
        proc = spawn_localserve(self, d, offset)
        yield proc.listening
        stop = threading.Event()
        sent = []

        def load():
            # Delivers steadily and expunges every fifth message while the backup runs.
            with smtplib.SMTP("127.0.0.1", 25 + offset, timeout=30) as s:
                im = imaplib.IMAP4("127.0.0.1", 143 + offset, timeout=30)
                im.login("mox@localhost", "moxmoxmox")
                im.select("INBOX")
                i = 0
                while not stop.is_set() or i < 40:
                    s.sendmail("load@example.org", ["mox@localhost"], message(i))
                    sent.append(i)
                    if i % 5 == 4:
                        im.noop()  # learn of the new messages first
                        im.store("1", "+FLAGS", "\\Deleted")
                        im.expunge()
                    i += 1
                im.logout()

        loader = threads.deferToThread(load)
        # Let the load get going, then back up in the middle of it.
        yield threads.deferToThread(lambda: [time.sleep(0.05) for _ in range(20) if len(sent) < 15])
        dest = os.path.join(d, "backup")
        out, err, code = yield run_moxtw("backup", dest, "--config", os.path.join(d, "config"))
        stop.set()
        yield loader
        text = out.decode()
        self.assertEqual(code, 0, text + err.decode())
        self.assertIn("from the running server", text)
        self.assertRegex(text, r"account mox: \d+ messages, ok")
        self.assertIn("queue: 0 entries, ok", text)
        in_backup = int(text.split("account mox: ")[1].split(" messages")[0])
        self.assertGreater(in_backup, 0)
        # Independently: verifydata on the copy.
        out, err, code = yield run_moxtw("verifydata", os.path.join(dest, "data"))
        self.assertEqual(code, 0, out + err)

        # The original stops; a server started from the backup's config and data (as
        # localserve, which runs as this user: serve as root would switch to User) has
        # the same mail.
        yield _stop(proc)
        copy = spawn_localserve(self, dest, offset)
        yield copy.listening
        self.assertIn(os.path.join(dest, "data").encode(), copy.out)
        count = yield threads.deferToThread(imap_count, 143 + offset)
        self.assertEqual(count, in_backup)

    @defer.inlineCallbacks
    def test_offline_and_refused(self):
        d = os.path.abspath(self.mktemp())
        config = write_localserve_config(d)
        dest = os.path.join(d, "b1")
        out, err, code = yield run_moxtw("backup", dest, "--config", config)
        self.assertEqual(code, 0, err)
        self.assertIn("with the server stopped", out.decode())
        # Not over an existing backup, not inside the data or config directory.
        for bad, text in ((dest, "not empty"), (os.path.join(d, "data", "x"), "is inside")):
            out, err, code = yield run_moxtw("backup", bad, "--config", config)
            self.assertEqual(code, 1, bad)
            self.assertIn(text, err.decode())
        with self.assertRaises(backup.BackupError):
            backup.backup(config, os.path.join(d, "data"), os.path.join(config, "inside"))


class DataInsideConfigTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_data_dir_inside_config_dir(self):
        from moxtw.store import Store
        from moxtw.test import servertree

        d = os.path.abspath(self.mktemp())
        servertree.write_config(d, 'DataDir = "data"\nLogLevel = "info"\nHostname = "mail.example.org"\n'
                                '[Postmaster]\nAccount = "a"\nMailbox = "Inbox"\n[Listeners.x]\nIPs = ["127.0.0.1"]\n',
                                '[Domains."example.org"]\n[Accounts.a]\nDomain = "example.org"\n'
                                '[Accounts.a.Destinations."a@example.org"]\n')
        st = Store(os.path.join(d, "data"))
        acc = yield st.open_account("a")
        yield acc.deliver("Inbox", message(1))
        yield st.close()
        dest = os.path.join(os.path.dirname(d), "bk-" + os.path.basename(d))
        counts = yield threads.deferToThread(backup.run_and_verify, d, os.path.join(d, "data"), dest)
        self.assertFalse(os.path.exists(os.path.join(dest, "config", "data")))
        self.assertEqual(counts["verify"][0][:2], ("account a: 1 messages", True))
        self.assertIn('DataDir = "../data"', open(os.path.join(dest, "config", "moxtw.toml")).read())


class LinkedConfigTests(unittest.TestCase):
    def test_linked_tls_directory_copied(self):
        d = os.path.abspath(self.mktemp())
        config = write_localserve_config(d)
        live = os.path.join(d, "live")
        os.makedirs(live)
        with open(os.path.join(live, "cert.pem"), "w") as f:
            f.write("certificate\n")
        os.symlink(live, os.path.join(config, "tls"))
        os.symlink(config, os.path.join(config, "loop"))  # a loop is copied once, not forever
        dest = os.path.join(d, "bk")
        backup.backup(config, os.path.join(d, "data"), dest)
        with open(os.path.join(dest, "config", "tls", "cert.pem")) as f:
            self.assertEqual(f.read(), "certificate\n")
