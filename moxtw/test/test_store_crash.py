"""Crash consistency: kill -9 a delivering process at random points, then verify.

Each round starts ``moxtw.test.crashdeliver`` (8 deliveries in flight), kills it with
SIGKILL after a random number of acknowledgements, and checks that every acknowledged
message is in the index with exactly the bytes that were delivered, and that verifydata
finds nothing it cannot explain. Rounds accumulate in one data directory, so later rounds
also start from the leftovers of earlier kills.
"""

import hashlib
import os
import random
import sys

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from moxtw import store
from moxtw.store.verify import verify_account


class _Child(protocol.ProcessProtocol):
    def __init__(self, kill_after):
        self.kill_after = kill_after
        self.buf = b""
        self.acks = []
        self.ended = defer.Deferred()
        self.killed = False

    def outReceived(self, data):
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            if line.startswith(b"ACK "):
                _, uid, digest = line.decode().split()
                self.acks.append((int(uid), digest))
                if len(self.acks) >= self.kill_after and not self.killed:
                    self.killed = True
                    self.transport.signalProcess("KILL")

    def errReceived(self, data):
        sys.stderr.write(data.decode(errors="replace"))

    def processEnded(self, reason):
        self.reason = reason
        self.ended.callback(None)


class CrashTests(unittest.TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def test_kill_during_delivery(self):
        data_dir = os.path.abspath(self.mktemp())
        rng = random.Random(os.environ.get("MOXTW_CRASH_SEED") or None)
        acked = {}
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        for round_ in range(6):
            child = _Child(kill_after=rng.randint(1, 60))
            reactor.spawnProcess(
                child,
                sys.executable,
                [sys.executable, "-m", "moxtw.test.crashdeliver", data_dir],
                env=env,
            )
            yield child.ended
            self.assertTrue(child.killed, "child exited before it was killed")
            for uid, digest in child.acks:
                acked[uid] = digest

            report = yield _in_thread(
                verify_account, store.account_dir(data_dir, "crash")
            )
            self.assertEqual(report.errors, [], f"round {round_}")

            st = store.Store(data_dir)
            acc = yield st.open_account("crash")
            inbox = yield acc.mailbox("Inbox")
            msgs = {m.uid: m for m in (yield acc.messages(inbox.id))}
            for uid, digest in acked.items():
                self.assertIn(uid, msgs, f"acknowledged uid {uid} lost in round {round_}")
                with acc.open_message(msgs[uid].id) as f:
                    self.assertEqual(hashlib.sha256(f.read()).hexdigest(), digest)
            yield st.close()
        self.assertGreater(len(acked), 6)


def _in_thread(fn, *args):
    from twisted.internet import threads

    return threads.deferToThread(fn, *args)
