"""The moxtw command: config test/describe, setaccountpassword, verifydata, version."""

import contextlib
import io
import os
import shutil
import subprocess
import sys

from twisted.internet import defer
from twisted.trial import unittest

import moxtw
from moxtw import cli, store
from moxtw.config import write_localserve_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(moxtw.__file__)))
CONF = os.path.join(REPO, "conf")


def run_cli(*args):
    """``moxtw args`` in this process; its umask (077) is undone afterwards."""
    out, err = io.StringIO(), io.StringIO()
    umask = os.umask(0o077)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(list(args))
    finally:
        os.umask(umask)
    return rc, out.getvalue(), err.getvalue()


class ConfigCommandTests(unittest.SynchronousTestCase):
    def test_shipped_examples_valid(self):
        rc, out, err = run_cli("config", "test", "--config", CONF)
        self.assertEqual(rc, 0, err)
        # The examples show every setting: those not built yet say so (test_config_notbuilt).
        self.assertEqual([line for line in err.splitlines() if not line.startswith("warning: ")], [])
        self.assertIn("config OK", out)

    def test_unknown_key_named(self):
        d = self.mktemp()
        shutil.copytree(CONF, d)
        with open(os.path.join(d, "domains.toml"), "a") as f:
            f.write("\nBogusSetting = 1\n")
        rc, out, err = run_cli("config", "test", "--config", d)
        self.assertEqual(rc, 1)
        self.assertIn("BogusSetting", err)
        self.assertIn("domains.toml", err)

    def test_describe(self):
        rc, out, _ = run_cli("config", "describe-static")
        with open(os.path.join(CONF, "moxtw.toml")) as f:
            self.assertEqual(out, f.read())
        rc, out, _ = run_cli("config", "describe-dynamic")
        with open(os.path.join(CONF, "domains.toml")) as f:
            self.assertEqual(out, f.read())

    def test_version(self):
        rc, out, _ = run_cli("version")
        self.assertEqual(out.strip(), moxtw.__version__)


class SetPasswordTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_setaccountpassword_stdin(self):
        d = os.path.abspath(self.mktemp())
        config_dir = write_localserve_config(d)
        proc = subprocess.run(
            [sys.executable, "-m", "moxtw", "setaccountpassword", "mox", "--config", config_dir],
            input="s3cret pass\n",
            capture_output=True,
            text=True,
            preexec_fn=lambda: os.umask(0o022),  # a usual login shell's umask
        )
        self.assertEqual(proc.returncode, 0, proc.stderr)
        # The account's index (with the new SCRAM keys) and anything SQLite made next to
        # it are private, though no serve ran before (issue 10 item 3).
        found = []
        for top, dirs, files in os.walk(os.path.join(d, "data")):
            for name in dirs + files:
                found.append(name)
                self.assertEqual(os.stat(os.path.join(top, name)).st_mode & 0o077, 0, name)
        self.assertIn("index.db", found)
        st = store.Store(os.path.join(d, "data"))
        self.addCleanup(st.close)
        acc = yield st.open_account("mox")
        self.assertTrue((yield acc.verify_password("s3cret pass")))

    def test_unknown_account(self):
        d = os.path.abspath(self.mktemp())
        config_dir = write_localserve_config(d)
        proc = subprocess.run(
            [sys.executable, "-m", "moxtw", "setaccountpassword", "nobody", "--config", config_dir],
            input="x\n",
            capture_output=True,
            text=True,
        )
        self.assertEqual(proc.returncode, 1)
        self.assertIn("no account 'nobody'", proc.stderr)

    def test_empty_password_refused(self):
        d = os.path.abspath(self.mktemp())
        config_dir = write_localserve_config(d)
        proc = subprocess.run(
            [sys.executable, "-m", "moxtw", "setaccountpassword", "mox", "--config", config_dir],
            input="\n",
            capture_output=True,
            text=True,
        )
        self.assertEqual(proc.returncode, 1)
        self.assertIn("password refused", proc.stderr)


class VerifyDataTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_verifydata(self):
        data_dir = os.path.abspath(self.mktemp())
        st = store.Store(data_dir)
        acc = yield st.open_account("mjl")
        m1 = yield acc.deliver("Inbox", b"Subject: one\r\n\r\n1\r\n")
        yield acc.deliver("Inbox", b"Subject: two\r\n\r\n2\r\n")
        yield st.close()

        rc, out, _ = run_cli("verifydata", data_dir)
        self.assertEqual(rc, 0)
        self.assertIn("account mjl: 2 messages, ok", out)

        # Leftovers of an interrupted delivery are explained, and removed with --fix.
        stray = os.path.join(acc.maildir, "tmp", "123.abc")
        open(stray, "wb").close()
        orphan = os.path.join(acc.maildir, "cur", "0", "999")
        open(orphan, "wb").close()
        rc, out, _ = run_cli("verifydata", data_dir)
        self.assertEqual(rc, 0)
        self.assertIn("temporary file of an unacknowledged delivery", out)
        self.assertIn("file without index row", out)
        rc, out, _ = run_cli("verifydata", "--fix", data_dir)
        self.assertFalse(os.path.exists(stray) or os.path.exists(orphan))

        # A missing or changed message file is an error.
        os.unlink(acc.message_path(m1.id))
        rc, out, _ = run_cli("verifydata", data_dir)
        self.assertEqual(rc, 1)
        self.assertIn("missing", out)

    def test_not_a_dir(self):
        rc, _, err = run_cli("verifydata", "/nonexistent/moxtw")
        self.assertEqual(rc, 1)


class QueueCommandTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_queue_list_and_verify(self):
        from moxtw.queue import Queue

        d = os.path.abspath(self.mktemp())
        config_dir = write_localserve_config(d)
        data_dir = os.path.join(d, "data")
        q = Queue(data_dir)
        yield q.open()
        yield q.add(b"Subject: q\r\n\r\nx\r\n", "mox@localhost", ["friend@example.net"], sender_account="mox")
        yield q.close()
        rc, out, err = run_cli("queue", "list", "--config", config_dir)
        self.assertEqual(rc, 0, err)
        self.assertIn("friend@example.net", out)
        rc, out, _ = run_cli("queue", "list", "--config", config_dir, "--recipient", "example.org")
        self.assertNotIn("friend@example.net", out)
        rc, out, _ = run_cli("verifydata", data_dir)
        self.assertEqual(rc, 0)
        self.assertIn("queue: 1 entries, ok", out)
