"""``serve`` started as root runs as ``User`` once its ports are bound (issue 11 item 7:
``User = "nobody"`` used to be ignored, leaving the server running as root)."""

import os
import shutil
import smtplib
import socket
import sys
import tempfile

from twisted.internet import defer, protocol, reactor, threads
from twisted.trial import unittest

from moxtw import privileges
from moxtw.test.test_localserve import TWISTD, free_offset

AS_ROOT = os.getuid() == 0


def _reachable_by_others(path):
    """Whether a user other than the owner (nobody) can reach and read ``path``."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts) + 1):
        st = os.stat(os.sep.join(parts[:i]) or os.sep)
        if not st.st_mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o004)


# Where Python lives under /root (pyenv on CI), nobody cannot run it: the server refuses
# with a clear error instead of failing at its first lazy import.
PYTHON_REACHABLE = _reachable_by_others(os.path.dirname(os.__file__)) and _reachable_by_others(
    os.path.dirname(os.path.dirname(os.path.abspath(privileges.__file__))))

STATIC = """
Hostname = "mail.example.org"
DataDir = "data"
LogLevel = "info"
User = "{user}"

[Postmaster]
Account = "mjl"
Mailbox = "postmaster"

[Listeners.local]
IPs = ["127.0.0.1"]
[Listeners.local.SMTP]
Enabled = true
Port = {port}
"""

DYNAMIC = """
[Domains."example.org"]

[Accounts.mjl]
Domain = "example.org"
[Accounts.mjl.Destinations."mjl@example.org"]
"""


class _Proc(protocol.ProcessProtocol):
    def __init__(self, wait_for):
        self.out = b""
        self.wait_for = wait_for
        self.ready = defer.Deferred()
        self.ended = defer.Deferred()
        self.status = None

    def outReceived(self, data):
        self.out += data
        if self.wait_for in self.out and not self.ready.called:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason):
        self.status = reason.value.exitCode
        if not self.ready.called:
            self.ready.errback(RuntimeError(self.out.decode(errors="replace")))
        self.ended.callback(None)


def _uid_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]  # real, effective, saved, fs
    raise AssertionError("no Uid line")


class LookupTests(unittest.SynchronousTestCase):
    def test_unknown_user(self):
        e = self.assertRaises(privileges.PrivilegeError, privileges.lookup, "no-such-user-moxtw")
        self.assertIn("does not exist", str(e))

    def test_numeric_uid(self):
        self.assertEqual(privileges.lookup(str(os.getuid())).pw_uid, os.getuid())


class GiveToTests(unittest.SynchronousTestCase):
    def setUp(self):
        if not AS_ROOT:
            raise unittest.SkipTest("needs root (CI runs as root)")
        self.dir = tempfile.mkdtemp(prefix="moxtw-give-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.nobody = privileges.lookup("nobody")

    def test_files_given_links_not_followed(self):
        data = os.path.join(self.dir, "data")
        os.makedirs(os.path.join(data, "sub"))
        with open(os.path.join(data, "sub", "f"), "w") as f:
            f.write("x")
        outside = os.path.join(self.dir, "outside")
        with open(outside, "w") as f:
            f.write("secret")
        os.symlink(outside, os.path.join(data, "symlink"))
        # A hard link to a file outside (as an unprivileged user could make where
        # fs.protected_hardlinks is off): root must not hand the file over.
        os.link(outside, os.path.join(data, "hardlink"))
        n = privileges.give_to(data, self.nobody.pw_uid, self.nobody.pw_gid)
        self.assertEqual(n, 4)  # data, sub, sub/f, the symlink itself
        self.assertEqual(os.stat(os.path.join(data, "sub", "f")).st_uid, self.nobody.pw_uid)
        self.assertEqual(os.stat(outside).st_uid, 0)
        self.assertEqual(os.lstat(os.path.join(data, "symlink")).st_uid, self.nobody.pw_uid)
        # A data directory reached through a link is still given over.
        real = os.path.join(self.dir, "real")
        os.makedirs(os.path.join(real, "d"))
        os.symlink(real, os.path.join(self.dir, "linked"))
        self.assertEqual(privileges.give_to(os.path.join(self.dir, "linked"), self.nobody.pw_uid, self.nobody.pw_gid), 2)
        self.assertEqual(os.stat(os.path.join(real, "d")).st_uid, self.nobody.pw_uid)


    def test_config_shared_with_group(self):
        # DKIM and TLS keys are often root's 0600 files: after the switch the server must
        # still read them (it loads DKIM keys at the first signing), but not write them.
        conf = os.path.join(self.dir, "config")
        os.makedirs(os.path.join(conf, "dkim"), mode=0o700)
        key = os.path.join(conf, "dkim", "key.pem")
        with open(key, "w") as f:
            f.write("key")
        os.chmod(key, 0o600)
        outside = os.path.join(self.dir, "outside")
        with open(outside, "w") as f:
            f.write("secret")
        os.chmod(outside, 0o600)
        os.link(outside, os.path.join(conf, "hardlink"))
        n = privileges.share_config(conf, self.nobody.pw_gid)
        self.assertEqual(n, 3)  # config, dkim, key.pem
        st = os.stat(key)
        self.assertEqual((st.st_uid, st.st_gid, st.st_mode & 0o777), (0, self.nobody.pw_gid, 0o640))
        self.assertEqual(os.stat(os.path.join(conf, "dkim")).st_mode & 0o777, 0o750)
        self.assertEqual(os.stat(outside).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(outside).st_gid, 0)
        self.assertEqual(privileges.share_config(conf, self.nobody.pw_gid), 0)  # done once


class NotRootTests(unittest.SynchronousTestCase):
    def test_unknown_user_not_root_warns_only(self):
        # Not started as root: nothing is switched, so a User that does not exist here
        # (the shipped config's "moxtw" on a developer machine) is no reason to refuse.
        self.patch(privileges.os, "getuid", lambda: 1000)
        static = type("S", (), {"User": "no-such-user-moxtw", "NoFixPermissions": False})()
        self.assertIsNone(privileges.drop(static, "/nonexistent"))

    def test_other_names_for_root(self):
        if not AS_ROOT:
            raise unittest.SkipTest("needs root")
        static = type("S", (), {"User": "00", "NoFixPermissions": False})()
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d, True)
        os.chown(d, 65534, 65534)
        self.assertIsNone(privileges.drop(static, d))
        self.assertEqual(os.stat(d).st_uid, 65534)  # not handed to root


class ServeAsRootTests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        if not AS_ROOT:
            raise unittest.SkipTest("needs root (CI runs as root)")
        # Under /tmp with x for others: nobody must reach the data directory.
        self.dir = tempfile.mkdtemp(prefix="moxtw-priv-")
        os.chmod(self.dir, 0o755)
        self.addCleanup(shutil.rmtree, self.dir, True)

    def start(self, user):
        self.port = 25 + free_offset()
        with open(os.path.join(self.dir, "moxtw.toml"), "w") as f:
            f.write(STATIC.format(user=user, port=self.port))
        with open(os.path.join(self.dir, "domains.toml"), "w") as f:
            f.write(DYNAMIC)
        # A data directory left by an earlier run as root: given to the user.
        os.makedirs(os.path.join(self.dir, "data", "accounts"))
        proc = _Proc(b"running as user")
        reactor.spawnProcess(
            proc, sys.executable,
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logger=moxtw.log.twistd_observer",
             "moxtw", "serve", "--config", self.dir],
            env=dict(os.environ), path=self.dir,
        )

        def stop():
            if not proc.ended.called:
                proc.transport.signalProcess("TERM")
            return proc.ended

        self.addCleanup(stop)
        return proc

    @defer.inlineCallbacks
    def test_runs_as_user_after_binding(self):
        if not PYTHON_REACHABLE:
            raise unittest.SkipTest("Python is not readable by nobody here (see test_unreadable_python_refused "
                                    "and ForkedTreeTests)")
        proc = self.start("nobody")
        yield proc.ready
        nobody = privileges.lookup("nobody")
        self.assertEqual(_uid_of(proc.transport.pid), [nobody.pw_uid] * 4)

        # It still works as nobody: a delivery lands in the store it now owns.
        def send():
            with smtplib.SMTP("127.0.0.1", self.port, timeout=20) as s:
                s.sendmail("bob@example.net", ["mjl@example.org"],
                           b"From: bob@example.net\r\nTo: mjl@example.org\r\nSubject: hi\r\n\r\nhello\r\n")

        try:
            yield threads.deferToThread(send)
        except Exception:
            print(proc.out.decode(errors="replace"))
            raise
        data = os.path.join(self.dir, "data")
        for top, dirs, files in os.walk(data):
            for name in dirs + files:
                self.assertEqual(os.lstat(os.path.join(top, name)).st_uid, nobody.pw_uid, name)
        self.assertTrue(os.path.isdir(os.path.join(data, "accounts", "mjl")))

    @defer.inlineCallbacks
    def test_unknown_user_stops_the_start(self):
        proc = self.start("no-such-user-moxtw")
        proc.ready.addErrback(lambda f: None)  # it never gets there
        yield proc.ended
        self.assertEqual(proc.status, 1)
        self.assertIn(b"moxtw: user 'no-such-user-moxtw'", proc.out)
        self.assertIn(b"does not exist", proc.out)
        self.assertNotIn(b"Traceback", proc.out)

    @defer.inlineCallbacks
    def test_unreadable_python_refused(self):
        if PYTHON_REACHABLE:
            raise unittest.SkipTest("Python is readable by nobody here")
        proc = self.start("nobody")
        proc.ready.addErrback(lambda f: None)
        yield proc.ended
        self.assertEqual(proc.status, 1)
        self.assertIn(b"moxtw: user nobody cannot read the Python installation", proc.out)
        self.assertNotIn(b"Traceback", proc.out)


def _tree_dir(testcase, static):
    """A config directory (removed after the test) with ``static`` and DYNAMIC."""
    d = tempfile.mkdtemp(prefix="moxtw-priv-")
    os.chmod(d, 0o755)
    testcase.addCleanup(shutil.rmtree, d, True)
    with open(os.path.join(d, "moxtw.toml"), "w") as f:
        f.write(static)
    with open(os.path.join(d, "domains.toml"), "w") as f:
        f.write(DYNAMIC)
    return d


def _in_forked_tree(d, report, start=False):
    """Build the service tree of config directory ``d`` in a forked child (its modules
    already imported, so the Python installation need not be readable), start it as
    root with the switch to ``User`` (and ``startService`` with ``start``), and return
    what ``report()`` returned there, or "error ..." for an exception."""
    from moxtw import app
    from moxtw import config as mconfig

    cfg = mconfig.load(d)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running any cleanup
        try:
            os.close(r)
            root = app.makeService(cfg, reactor=reactor, switch_user=True)
            orig = privileges.drop
            privileges.drop = lambda static, data_dir, **kw: orig(static, data_dir, check_install=False, **kw)
            root.privilegedStartService()
            if start:
                root.startService()
            os.write(w, report().encode())
        except BaseException as e:
            os.write(w, f"error {e!r}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        got = f.read().decode()
    os.waitpid(pid, 0)
    return got


class ForkedTreeTests(unittest.TestCase):
    """The real service tree in a forked child: ports bound as root, then the uid of
    ``User``. Works wherever the test runs as root."""

    def setUp(self):
        if not AS_ROOT:
            raise unittest.SkipTest("needs root (CI runs as root)")

    def test_bound_as_root_then_switched(self):
        port = _free_privileged_port()
        d = _tree_dir(self, STATIC.format(user="nobody", port=port))

        def report():
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass  # the port below 1024 was bound (as root) and still listens
            return f"{os.getuid()} {os.geteuid()} {os.getgid()} ok"

        got = _in_forked_tree(d, report)
        nobody = privileges.lookup("nobody")
        self.assertEqual(got, f"{nobody.pw_uid} {nobody.pw_uid} {nobody.pw_gid} ok")
        for top, dirs, files in os.walk(os.path.join(d, "data")):
            for name in dirs + files:
                self.assertEqual(os.lstat(os.path.join(top, name)).st_uid, nobody.pw_uid, name)


def _free_privileged_port():
    for port in range(700, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise unittest.SkipTest("no free port below 1024")


class NoFixPermissionsTests(unittest.TestCase):
    """With NoFixPermissions the operator owns the data directory's permissions; what
    moxtw creates itself (the SMTP spool directory) is made after the switch, so it
    belongs to User, not to root."""

    def setUp(self):
        if not AS_ROOT:
            raise unittest.SkipTest("needs root (CI runs as root)")

    def test_spool_made_after_switch(self):
        d = _tree_dir(self, "NoFixPermissions = true\n" + STATIC.format(user="nobody", port=25 + free_offset()))
        nobody = privileges.lookup("nobody")
        data = os.path.join(d, "data")
        os.mkdir(data, 0o700)
        os.chown(data, nobody.pw_uid, nobody.pw_gid)
        spool = os.path.join(data, "tmp")
        got = _in_forked_tree(d, lambda: f"{os.stat(spool).st_uid} {os.access(spool, os.W_OK)}", start=True)
        self.assertEqual(got, f"{nobody.pw_uid} True")
