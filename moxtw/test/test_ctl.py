"""The control socket: queue commands over a real Unix socket, as the command line uses it."""

import base64
import json
import os
import socket
from datetime import datetime, timedelta, timezone

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from moxtw import ctl
from moxtw.queue import Queue, QueueService
from moxtw.test.test_queue import make_message
from moxtw.test.test_smtp_e2e import PASSWORD, SMTPTreeBase, message


class FakeDSN:
    def __init__(self):
        self.calls = []

    def __call__(self, entry, kind, error):
        self.calls.append((entry.id, kind, error))
        return defer.succeed(None)


class ParseTimeTests(unittest.SynchronousTestCase):
    def test_forms(self):
        now = datetime(2026, 1, 1, tzinfo=timezone.utc)
        self.assertEqual(ctl.parse_time("+1h", now), now + timedelta(hours=1))
        self.assertEqual(ctl.parse_time("-30m", now), now - timedelta(minutes=30))
        self.assertEqual(ctl.parse_time("90s", now), now + timedelta(seconds=90))
        self.assertEqual(ctl.parse_time("2026-02-01T10:00:00", now),
                         datetime(2026, 2, 1, 10, tzinfo=timezone.utc))
        self.assertEqual(ctl.parse_time("2026-02-01T10:00:00Z", now),
                         datetime(2026, 2, 1, 10, tzinfo=timezone.utc))
        self.assertRaises(ctl.CtlError, ctl.parse_time, "tomorrow", now)


class CtlTests(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        # A deep directory: longer than a Unix socket address allows.
        self.data_dir = os.path.abspath(os.path.join(self.mktemp(), "d" * 60, "data"))
        os.makedirs(self.data_dir)
        self.queue = Queue(self.data_dir)
        yield self.queue.open()
        self.addCleanup(self.queue.close)
        self.dsn = FakeDSN()
        self.service = QueueService(self.queue, lambda e: defer.Deferred(), dsn=self.dsn)
        self.ctl = ctl.CtlService(self.data_dir, ctl.QueueCommands(self.queue, self.service), reactor=reactor)
        self.ctl.privilegedStartService()
        self.ctl.startService()
        self.addCleanup(self.ctl.stopService)
        self.msg = make_message()
        self.ids = yield self.queue.add(self.msg, "mjl@example.org",
                                        ["a@one.example", "b@two.example"], sender_account="mjl")
        self.other = yield self.queue.add(make_message(), "x@example.com", ["c@one.example"],
                                          sender_account="other")

    def req(self, cmd, **args):
        return threads.deferToThread(ctl.request, self.data_dir, cmd, **args)

    def test_socket_mode(self):
        self.assertTrue(len(ctl.ctl_path(self.data_dir)) > 108)
        self.assertEqual(os.stat(ctl.ctl_path(self.data_dir)).st_mode & 0o777, 0o600)

    @defer.inlineCallbacks
    def test_list_filters(self):
        rows = yield self.req("queue.list")
        self.assertEqual([r["id"] for r in rows], self.ids + self.other)
        rows = yield self.req("queue.list", account="other")
        self.assertEqual([r["recipient"] for r in rows], ["c@one.example"])
        rows = yield self.req("queue.list", recipient="one.example")
        self.assertEqual(len(rows), 2)
        rows = yield self.req("queue.list", sender="mjl@example.org", ids=[self.ids[1]])
        self.assertEqual([r["recipient"] for r in rows], ["b@two.example"])
        rows = yield self.req("queue.list", next_after="+1h")
        self.assertEqual(rows, [])

    @defer.inlineCallbacks
    def test_hold_unhold_durable(self):
        r = yield self.req("queue.hold", account="mjl")
        self.assertEqual(r, {"count": 2})
        # Durable: a second connection to the database sees it.
        q2 = Queue(self.data_dir)
        yield q2.open()
        try:
            held = yield q2.list(hold=True)
        finally:
            yield q2.close()
        self.assertEqual([e.id for e in held], self.ids)
        r = yield self.req("queue.unhold", ids=[self.ids[0]])
        self.assertEqual(r["count"], 1)
        rows = yield self.req("queue.list", hold=True)
        self.assertEqual([x["id"] for x in rows], [self.ids[1]])

    @defer.inlineCallbacks
    def test_changing_needs_a_filter(self):
        e = yield self.assertFailure(self.req("queue.drop"), ctl.CtlError)
        self.assertIn("no filter", str(e))
        r = yield self.req("queue.hold", all=True)
        self.assertEqual(r["count"], 3)

    @defer.inlineCallbacks
    def test_schedule(self):
        r = yield self.req("queue.schedule", ids=self.other, when="+2h")
        self.assertEqual(r["count"], 1)
        [e] = yield self.queue.list(account="other")
        delta = e.next_attempt - datetime.now(timezone.utc)
        self.assertTrue(timedelta(hours=1, minutes=59) < delta <= timedelta(hours=2))
        yield self.assertFailure(self.req("queue.schedule", ids=self.other), ctl.CtlError)

    @defer.inlineCallbacks
    def test_drop_and_fail(self):
        r = yield self.req("queue.drop", recipient="b@two.example")
        self.assertEqual(r["count"], 1)
        r = yield self.req("queue.fail", account="other", reason="spam run")
        self.assertEqual(r["count"], 1)
        self.assertEqual(self.dsn.calls, [(self.other[0], "failed", "spam run")])
        left = yield self.queue.list()
        self.assertEqual([e.id for e in left], [self.ids[0]])

    @defer.inlineCallbacks
    def test_dump(self):
        r = yield self.req("queue.dump", id=self.ids[0])
        self.assertEqual(base64.b64decode(r["message"]), self.msg)
        self.assertEqual(r["entry"]["recipient"], "a@one.example")
        e = yield self.assertFailure(self.req("queue.dump", id=999999), ctl.CtlError)
        self.assertIn("no queue entry", str(e))

    @defer.inlineCallbacks
    def test_bad_requests(self):
        e = yield self.assertFailure(self.req("queue.explode"), ctl.CtlError)
        self.assertIn("unknown command", str(e))
        e = yield self.assertFailure(self.req("queue.list", colour="red"), ctl.CtlError)
        self.assertIn("unknown arguments", str(e))
        e = yield self.assertFailure(self.req("queue.list", next_before="soon"), ctl.CtlError)

        def raw(payload):
            s = socket.socket(socket.AF_UNIX)
            with ctl._short_path(ctl.ctl_path(self.data_dir)) as p:
                s.connect(p)
            s.sendall(payload)
            out = b""
            while not out.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
            s.close()
            return out

        out = yield threads.deferToThread(raw, b"{not json\n")
        self.assertFalse(json.loads(out)["ok"])
        out = yield threads.deferToThread(raw, b"[1, 2]\n")
        self.assertIn("cmd", json.loads(out)["error"])
        out = yield threads.deferToThread(raw, b"x" * (ctl.MAX_REQUEST + 10) + b"\n")
        self.assertEqual(json.loads(out.split(b"\n")[0])["error"], "request too long")
        # The server still answers.
        self.assertEqual((yield self.req("ping")), "pong")

    def test_no_server(self):
        e = self.assertRaises(ctl.CtlError, ctl.request, self.mktemp(), "ping")
        self.assertIn("is it running", str(e))



class CommandLineTests(SMTPTreeBase):
    """``moxtw queue ...`` as a separate process against a running server tree."""

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()

        def submit():
            import smtplib

            with smtplib.SMTP("localhost", self.ports["submission"], timeout=10) as s:
                s.starttls(context=self.tls())
                s.login("mjl@example.org", PASSWORD)
                s.sendmail("mjl@example.org", ["friend@example.net"], message("queued"))

        # Remote recipient: stays queued (the test tree's DNS fails temporarily).
        yield threads.deferToThread(submit)
        yield self.queue_settled()
        [self.entry] = yield self.root.queue.list()

    def cli(self, *args):
        import subprocess
        import sys

        cmd = [sys.executable, "-m", "moxtw", *args, "--config", self.cfg.config_dir]
        return threads.deferToThread(subprocess.run, cmd, capture_output=True, timeout=60)

    @defer.inlineCallbacks
    def test_hold_dump_fail(self):
        r = yield self.cli("queue", "hold", str(self.entry.id))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"1 entries held\n")
        [e] = yield self.root.queue.list()
        self.assertTrue(e.hold)
        r = yield self.cli("queue", "schedule", str(self.entry.id), "--when=-1h")
        self.assertEqual((r.returncode, r.stdout), (0, b"1 entries rescheduled\n"), r.stderr)
        [e] = yield self.root.queue.list()
        self.assertLess(e.next_attempt, self.entry.next_attempt)
        r = yield self.cli("queue", "schedule", "+1h")
        self.assertEqual(r.returncode, 2)  # not an id: refused by the argument parser
        r = yield self.cli("queue", "list", "--hold", "yes")
        self.assertIn(b"friend@example.net", r.stdout)
        r = yield self.cli("queue", "dump", str(self.entry.id))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"Subject: queued\r\n", r.stdout)
        r = yield self.cli("queue", "drop")
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"no filter given", r.stderr)
        r = yield self.cli("queue", "fail", "--recipient", "example.net", "--reason", "given up by test")
        self.assertEqual(r.returncode, 0, r.stderr)
        yield self.queue_settled()
        self.assertEqual((yield self.root.queue.list()), [])
        msgs = yield self.messages("mjl")
        [(m, data)] = [(m, d) for m, d in msgs if b"multipart/report" in d]
        self.assertIn(b"given up by test", data)

    @defer.inlineCallbacks
    def test_no_server(self):
        yield self.root.stopService()
        r = yield self.cli("queue", "unhold", "--all")
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"is it running", r.stderr)
