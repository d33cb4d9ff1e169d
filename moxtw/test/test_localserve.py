"""End-to-end: the localserve tree and the twistd plugin, on real loopback sockets.

Clients are the ones users have (smtplib, imaplib, ssl, urllib), run in threads so the
server keeps running on the reactor.
"""

import imaplib
import io
import os
import random
import smtplib
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

from twisted.internet import defer, protocol, reactor, threads
from twisted.trial import unittest

from moxtw import localserve
from moxtw.config import localserve_ports

STANDARD = (25, 587, 465, 143, 993, 80, 443, 8010)


def free_offset():
    """A port offset at which all localserve ports are free on 127.0.0.1."""
    rng = random.Random()
    for _ in range(50):
        offset = rng.randrange(10000, 50000)
        socks = []
        try:
            for port in STANDARD:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port + offset))
            return offset
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port offset found")


def tls_context(data_dir):
    ctx = ssl.create_default_context(cafile=os.path.join(data_dir, "tls", "ca.crt"))
    return ctx


class LocalserveTreeTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.offset = free_offset()
        self.out = io.StringIO()
        self.root = localserve.makeService(self.dir, "127.0.0.1", self.offset, out=self.out)
        self.root.privilegedStartService()
        self.root.startService()
        self.addCleanup(self.root.stopService)
        yield self.root.localserve.ready

    def port(self, kind):
        for svc in self.root.listeners:
            if kind in svc.spec.kinds:
                return svc.port.getHost().port
        raise KeyError(kind)

    def test_ports(self):
        want = localserve_ports(self.offset)
        kinds = {"HTTP": "AccountHTTP", "HTTPS": "AccountHTTPS", "Metrics": "MetricsHTTP"}
        got = {kinds.get(name, name): self.port(kinds.get(name, name)) for name in want}
        self.assertEqual(sorted(got.values()), sorted(want.values()))
        self.assertEqual(
            [got[k] - self.offset for k in ("SMTP", "Submission", "Submissions", "IMAP", "IMAPS")],
            [25, 587, 465, 143, 993],
        )
        self.assertEqual(got["AccountHTTP"], 80 + self.offset)
        self.assertEqual(got["AccountHTTPS"], 443 + self.offset)
        self.assertEqual(got["MetricsHTTP"], 8010 + self.offset)

    def test_banner(self):
        text = self.out.getvalue()
        self.assertIn("mox@localhost", text)
        self.assertIn("moxmoxmox", text)
        self.assertIn(f"127.0.0.1:{25 + self.offset}", text)
        self.assertIn(f"127.0.0.1:{993 + self.offset}", text)

    @defer.inlineCallbacks
    def test_account_password(self):
        acc = yield self.root.store.open_account("mox")
        self.assertTrue((yield acc.verify_password("moxmoxmox")))
        self.assertFalse((yield acc.verify_password("moxmox")))

    @defer.inlineCallbacks
    def test_smtp_delivers_to_mox(self):
        """Any recipient is accepted into account mox (localserve's catchall)."""

        def client():
            with smtplib.SMTP("127.0.0.1", self.port("SMTP"), timeout=10) as smtp:
                smtp.sendmail(
                    "app@example.com", ["someone@localhost", "other@example.net"],
                    b"From: app@example.com\r\nSubject: e2e\r\n\r\nhello\r\n",
                )

        yield threads.deferToThread(client)
        acc = yield self.root.store.open_account("mox")
        inbox = yield acc.mailbox("Inbox")
        msgs = yield acc.messages(inbox.id)
        self.assertEqual([m.subject for m in msgs], ["e2e"])

    @defer.inlineCallbacks
    def test_error_addresses(self):
        """mox localserve's test addresses make the errors applications must handle."""

        def client():
            out = {}
            with smtplib.SMTP("127.0.0.1", self.port("SMTP"), timeout=10) as s:
                s.ehlo()
                out["mail"] = s.docmd("MAIL", "FROM:<mailfrom-454@example.com>")
                s.rset()
                s.mail("app@example.com")
                out["rcpt"] = s.rcpt("rcptto-temperror@localhost")
                out["rcpt2"] = s.rcpt("permerror@example.net")
                out["data"] = s.data(b"Subject: x\r\n\r\nx\r\n")
                s.rset()
                s.mail("app@example.com")
                s.rcpt("user552@localhost")
                out["data2"] = s.data(b"Subject: x\r\n\r\nx\r\n")
            return out

        out = yield threads.deferToThread(client)
        self.assertEqual(out["mail"][0], 454)
        self.assertEqual(out["rcpt"][0], 451)
        self.assertEqual(out["rcpt2"][0], 250)
        self.assertEqual(out["data"][0], 550)
        self.assertEqual(out["data2"][0], 552)
        self.assertIn("rcptto", self.out.getvalue())  # the banner lists the rules

    @defer.inlineCallbacks
    def test_submission_without_tls(self):
        """On 1587 applications may authenticate without TLS; mail to anyone comes back."""

        def client():
            with smtplib.SMTP("127.0.0.1", self.port("Submission"), timeout=10) as s:
                s.login("mox@localhost", "moxmoxmox")
                s.sendmail("noreply@myapp.example", ["customer@gmail.example"],
                           b"From: noreply@myapp.example\r\nSubject: welcome\r\n\r\nhi\r\n")
                s.sendmail("noreply@myapp.example", ["queue-fails@localhost"],
                           b"From: noreply@myapp.example\r\nSubject: doomed\r\n\r\nhi\r\n")

        yield threads.deferToThread(client)
        yield self.root.queue_service.kick()
        yield self.root.queue_service.idle()
        acc = yield self.root.store.open_account("mox")
        inbox = yield acc.mailbox("Inbox")
        msgs = yield acc.messages(inbox.id)
        # The failed delivery to queue-fails@ comes back as a DSN (moxtw.queue.dsn).
        self.assertEqual([m.subject for m in msgs], ["welcome", "Delivery failure: doomed"])
        # It came back in over our own SMTP listener (as from the internet), after
        # submission: two Received headers, incoming ESMTP on top of submission ESMTPA.
        with acc.open_message(msgs[0].id) as f:
            head = f.read().split(b"\r\n\r\n", 1)[0]
        received = [h for h in head.split(b"\r\nReceived: ")[1:]]
        self.assertEqual(len(received), 2, head)
        self.assertIn(b"with ESMTP id", received[0])
        self.assertIn(b"with ESMTPA id", received[1])
        self.assertEqual((yield self.root.queue.list()), [])

    @defer.inlineCallbacks
    def test_smtps_tls(self):
        ctx = tls_context(os.path.join(self.dir, "data"))

        def client():
            with socket.create_connection(("127.0.0.1", self.port("Submissions")), timeout=10) as s:
                with ctx.wrap_socket(s, server_hostname="localhost") as t:
                    return t.recv(200), t.version()

        greeting, version = yield threads.deferToThread(client)
        self.assertTrue(greeting.startswith(b"220 localhost ESMTP"))
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))

    @defer.inlineCallbacks
    def test_imap_and_imaps(self):
        """IMAP on 1143 (LOGIN also without TLS) and IMAPS on 1993 with the generated CA."""
        ctx = tls_context(os.path.join(self.dir, "data"))
        acc = yield self.root.store.open_account("mox")
        yield acc.deliver("Inbox", b"Subject: for imap\r\n\r\nhi\r\n")

        def client():
            out = []
            for c in (
                imaplib.IMAP4("127.0.0.1", self.port("IMAP"), timeout=10),
                imaplib.IMAP4_SSL("localhost", self.port("IMAPS"), ssl_context=ctx, timeout=10),
            ):
                c.login("mox@localhost", "moxmoxmox")
                c.select("INBOX")
                out.append(c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1])
                c.logout()
            return out

        got = yield threads.deferToThread(client)
        self.assertEqual(got, [b"Subject: for imap\r\n\r\n"] * 2)

    @defer.inlineCallbacks
    def test_metrics_and_web(self):
        ctx = tls_context(os.path.join(self.dir, "data"))
        acc = yield self.root.store.open_account("mox")
        yield acc.deliver("Inbox", b"Subject: counted\r\n\r\nhi\r\n")

        def client():
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port('MetricsHTTP')}/metrics", timeout=10
            ) as r:
                metrics = r.read().decode()
            pages = []
            for url, kw in (
                (f"http://127.0.0.1:{self.port('AccountHTTP')}/", {}),
                (f"https://localhost:{self.port('AccountHTTPS')}/admin/", {"context": ctx}),
            ):
                with urllib.request.urlopen(url, timeout=10, **kw) as r:
                    pages.append((r.status, b"<h1>Log in</h1>" in r.read()))
            # The admin password localserve prints works.
            req = urllib.request.Request(f"http://127.0.0.1:{self.port('AccountHTTP')}/admin/api/login",
                                         data=b'{"password": "moxadmin"}',
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                pages.append((r.status, b"csrf" in r.read()))
            return metrics, pages

        metrics, pages = yield threads.deferToThread(client)
        self.assertIn('store_deliveries_total{result="ok"}', metrics)
        self.assertIn("process_cpu_seconds_total", metrics)
        # The account and admin pages answer with their login forms.
        self.assertEqual(pages, [(200, True), (200, True), (200, True)])

    @defer.inlineCallbacks
    def test_restart_keeps_data(self):
        acc = yield self.root.store.open_account("mox")
        yield acc.deliver("Inbox", b"Subject: keep\r\n\r\nme\r\n")
        yield self.root.stopService()
        root = localserve.makeService(self.dir, "127.0.0.1", self.offset, out=io.StringIO())
        root.privilegedStartService()
        root.startService()
        self.addCleanup(root.stopService)
        yield root.localserve.ready
        acc = yield root.store.open_account("mox")
        inbox = yield acc.mailbox("Inbox")
        self.assertEqual(inbox.total, 1)
        self.assertTrue((yield acc.verify_password("moxmoxmox")))


class _Proc(protocol.ProcessProtocol):
    def __init__(self):
        self.out = b""
        self.listening = defer.Deferred()
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.out += data
        if b"listening:" in self.out and b"metrics" in self.out.split(b"listening:")[1]:
            if not self.listening.called:
                self.listening.callback(None)

    errReceived = outReceived

    def processEnded(self, reason):
        self.reason = reason
        if not self.listening.called:
            self.listening.errback(RuntimeError(self.out.decode(errors="replace")))
        self.ended.callback(None)


def _stop(proc):
    if not proc.ended.called:
        try:
            proc.transport.signalProcess("TERM")
        except Exception:
            pass
    return proc.ended


TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


def spawn_localserve(testcase, d, offset, cli=False, path=None):
    """``twistd -n moxtw localserve`` (with cli, ``python -m moxtw localserve``) as a child
    process in directory path, stopped at the test's cleanup; wait for its ``listening``
    Deferred."""
    proc = _Proc()
    if cli:
        start = ["-m", "moxtw"]
    else:
        start = ["-c", TWISTD, "-n", "--pidfile=", "--logger=moxtw.log.twistd_observer", "moxtw"]
    reactor.spawnProcess(
        proc,
        sys.executable,
        [
            sys.executable, *start, "localserve", "--dir", d, "--ip", "127.0.0.1",
            "--port-offset", str(offset),
        ],
        env=dict(os.environ),
        path=path,
    )
    testcase.addCleanup(_stop, proc)
    return proc


class TwistdPluginTests(unittest.TestCase):
    timeout = 60

    def test_help_lists_plugin(self):
        out = subprocess.run(
            [sys.executable, "-c", TWISTD, "--help"], capture_output=True, text=True, check=True
        ).stdout
        self.assertIn("moxtw", out)

    @defer.inlineCallbacks
    def test_twistd_localserve(self):
        d = os.path.abspath(self.mktemp())
        offset = free_offset()
        proc = _Proc()
        reactor.spawnProcess(
            proc,
            sys.executable,
            [
                sys.executable, "-c", TWISTD, "-n", "--pidfile=",
                "--logger=moxtw.log.twistd_observer",
                "moxtw", "localserve", "--dir", d, "--ip", "127.0.0.1",
                "--port-offset", str(offset),
            ],
            env=dict(os.environ),
        )
        try:
            yield proc.listening

            def probe():
                got = {}
                for port in STANDARD:
                    with socket.create_connection(("127.0.0.1", port + offset), timeout=10):
                        got[port] = True
                with socket.create_connection(("127.0.0.1", 25 + offset), timeout=10) as s:
                    got["greeting"] = s.recv(100)
                return got

            got = yield threads.deferToThread(probe)
            self.assertTrue(all(got[p] for p in STANDARD))
            self.assertTrue(got["greeting"].startswith(b"220 "))
            self.assertIn(b"level=info", proc.out)  # logfmt lines
        finally:
            yield _stop(proc)
        self.assertTrue(os.path.exists(os.path.join(d, "config", "domains.toml")))
        self.assertTrue(os.path.exists(os.path.join(d, "data", "tls", "ca.crt")))


class TacTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_tac(self):
        """twistd -ny moxtw.tac runs the same tree from a config directory."""
        from moxtw.test.test_app import write_config

        tac = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "moxtw.tac")
        d = os.path.abspath(self.mktemp())
        offset = free_offset()
        write_config(d, offset)
        # The tac drops root for User (default moxtw, absent here); this test's Python may
        # not be readable by another user (test_privileges covers the switch).
        path = os.path.join(d, "moxtw.toml")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write('User = "root"\n' + text)
        proc = _Proc()
        want = f"port={25 + offset}".encode()
        proc.outReceived = lambda data, proc=proc: (
            setattr(proc, "out", proc.out + data),
            (not proc.listening.called and want in proc.out and proc.listening.callback(None)),
        )
        proc.errReceived = proc.outReceived
        env = dict(os.environ, MOXTW_CONFIG=d)
        reactor.spawnProcess(
            proc, sys.executable,
            [sys.executable, "-c", TWISTD, "-ny", tac, "--pidfile="],
            env=env, path=d,
        )
        try:
            yield proc.listening

            def probe():
                with socket.create_connection(("127.0.0.1", 25 + offset), timeout=10) as s:
                    return s.recv(100)

            greeting = yield threads.deferToThread(probe)
            self.assertTrue(greeting.startswith(b"220 mail.example.org ESMTP"))
            self.assertIn(b"level=info pkg=app", proc.out)
        finally:
            yield _stop(proc)
