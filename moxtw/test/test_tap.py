"""Starting ``twistd moxtw`` and ``moxtw serve|localserve`` (moxtw.tap, moxtw.cli): what a
newcomer sees for a port in use, ``--help`` and a bad configuration. Real processes and
loopback sockets; short messages, no tracebacks, twistd's usage text only for usage errors.
"""

import errno
import os
import socket
import sys

from twisted.internet import defer, endpoints, protocol, reactor, utils
from twisted.trial import unittest

from moxtw import listeners
from moxtw.test import test_app, test_config
from moxtw.test.test_localserve import TWISTD, free_offset, spawn_localserve


def listening_socket(port=0):
    """A socket listening on 127.0.0.1:port (0: any free port); the caller closes it."""
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def run(testcase, *args):
    """Deferred (stdout, stderr, exit code) of ``python args`` in a temporary directory
    (twistd writes its pid file there)."""
    cwd = os.path.abspath(testcase.mktemp())
    os.makedirs(cwd)
    d = utils.getProcessOutputAndValue(sys.executable, args, env=dict(os.environ), path=cwd)
    return d.addCallback(lambda res: (res[0].decode(), res[1].decode(), res[2]))


class PortInUseTests(unittest.TestCase):
    timeout = 60

    def test_bind_error_names_address(self):
        s = listening_socket()
        self.addCleanup(s.close)
        port = s.getsockname()[1]
        spec = listeners.ListenerSpec("public", "127.0.0.1", port, False, ["SMTP"])
        endpoint = endpoints.TCP4ServerEndpoint(reactor, port, interface="127.0.0.1")
        svc = listeners.ListenerService(spec, endpoint, protocol.Factory())
        e = self.assertRaises(listeners.BindError, svc.privilegedStartService)
        self.assertEqual(e.errno, errno.EADDRINUSE)
        self.assertEqual(
            str(e),
            f"cannot listen on 127.0.0.1:{port} for SMTP (listener public): address already in"
            " use (by another program, or another moxtw)",
        )
        self.assertIsNone(svc.port)

    def assert_one_line(self, out, address, hint):
        self.assertNotIn("Traceback", out)
        lines = [line for line in out.splitlines() if "cannot listen" in line]
        self.assertEqual(len(lines), 1, out)
        self.assertIn(f"moxtw: cannot listen on {address} for ", lines[0])
        self.assertIn(hint, lines[0])

    @defer.inlineCallbacks
    def test_twistd_localserve(self):
        """A port of localserve in use (IMAP here, after SMTP and submission were bound):
        exit status 1 and one line naming it and suggesting --port-offset."""
        offset = free_offset()
        s = listening_socket(143 + offset)
        self.addCleanup(s.close)
        proc = spawn_localserve(self, os.path.abspath(self.mktemp()), offset)
        proc.listening.addErrback(lambda f: None)  # it never gets there
        yield proc.ended
        self.assertEqual(proc.reason.value.exitCode, 1)
        out = proc.out.decode(errors="replace")
        self.assert_one_line(out, f"127.0.0.1:{143 + offset}", "--port-offset")

    @defer.inlineCallbacks
    def test_moxtw_serve(self):
        """``moxtw serve``: the line names the config file to change the port in."""
        d = os.path.abspath(self.mktemp())
        offset = free_offset()
        cfg = test_app.write_config(d, offset)
        s = listening_socket(25 + offset)
        self.addCleanup(s.close)
        out, err, code = yield run(self, "-m", "moxtw", "serve", "--config", d)
        self.assertEqual(code, 1, out + err)
        self.assert_one_line(out + err, f"127.0.0.1:{25 + offset}", cfg.static_path)
        self.assertNotIn("--port-offset", out + err)


class PidFileTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_two_localserves_one_directory(self):
        """``moxtw localserve`` writes no twistd.pid in the working directory, so a second
        one (another --port-offset) can start from the same directory."""
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        for i in range(2):
            proc = spawn_localserve(self, os.path.join(cwd, f"ls{i}"), free_offset(), cli=True,
                                    path=cwd)
            yield proc.listening
        self.assertEqual(sorted(os.listdir(cwd)), ["ls0", "ls1"])


class HelpTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_moxtw_localserve_help(self):
        out, err, code = yield run(self, "-m", "moxtw", "localserve", "--help")
        self.assertEqual(code, 0, err)
        out = " ".join(out.split())  # help text is wrapped to the terminal's width
        self.assertIn("--ip IP", out)
        self.assertIn("IP address to listen on", out)
        self.assertIn("--port-offset N", out)
        self.assertIn("added to the standard port numbers", out)
        self.assertIn("SMTP 1025", out)

    @defer.inlineCallbacks
    def test_twistd_localserve_help(self):
        out, err, code = yield run(self, "-c", TWISTD, "moxtw", "localserve", "--help")
        self.assertEqual(code, 0, err)
        out = " ".join(out.split())
        self.assertIn("Usage: twistd [options] moxtw localserve [--dir D] [--ip IP]", out)
        self.assertIn("--ip=", out)
        self.assertIn("IP address to listen on", out)
        self.assertIn("--port-offset=", out)
        self.assertIn("Added to the standard port numbers: with 1000, SMTP on 1025", out)


class BadConfigTests(unittest.TestCase):
    """``serve`` with an invalid configuration prints its errors and exits with status 1,
    without twistd's usage text."""

    timeout = 60

    def config_dir(self):
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        with open(os.path.join(d, "moxtw.toml"), "w") as f:
            f.write(test_config.STATIC.replace("Hostname =", "Hostnme ="))
        with open(os.path.join(d, "domains.toml"), "w") as f:
            f.write(test_config.DYNAMIC)
        return d

    def assert_config_error(self, d, out, err, code):
        self.assertEqual(code, 1, out + err)
        self.assertEqual(
            err.splitlines(),
            [
                "moxtw: invalid configuration:",
                os.path.join(d, "moxtw.toml") + ": Hostnme: unknown key (line 3); did you mean"
                " Hostname?",
            ],
        )
        self.assertNotIn("Usage", out + err)
        self.assertNotIn("--help", out + err)

    @defer.inlineCallbacks
    def test_moxtw_serve(self):
        d = self.config_dir()
        out, err, code = yield run(self, "-m", "moxtw", "serve", "--config", d)
        self.assert_config_error(d, out, err, code)

    @defer.inlineCallbacks
    def test_twistd_serve(self):
        d = self.config_dir()
        out, err, code = yield run(self, "-c", TWISTD, "-n", "--pidfile=", "moxtw", "serve",
                                   "--config", d)
        self.assert_config_error(d, out, err, code)

    @defer.inlineCallbacks
    def test_usage_error_keeps_usage(self):
        """A wrong option is a usage error: twistd's usage text stays."""
        out, err, code = yield run(self, "-c", TWISTD, "moxtw", "localserve", "--port-offset",
                                   "70000")
        self.assertEqual(code, 1)
        self.assertIn("--port-offset must be between 0 and 64000", out)
        self.assertIn("Usage:", out)
