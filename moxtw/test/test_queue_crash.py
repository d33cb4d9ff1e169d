"""Crash consistency of the queue: kill -9 a process adding entries at random points.

Each round runs this module as a child process (``python -m moxtw.test.test_queue_crash
DATADIR``) with several adds in flight, mixed with attempt records and removals, kills it
with SIGKILL after a random number of acknowledgements, and checks that every acknowledged
entry (not being removed) is queued with exactly the bytes that were added, and that
``verify`` finds no errors. Rounds share one data directory, so later rounds start from
the leftovers of earlier kills.
"""

import hashlib
import os
import random
import sys
from datetime import timedelta

from twisted.internet import defer, protocol, reactor, threads
from twisted.trial import unittest

from moxtw.queue import Queue
from moxtw.queue.verify import verify_queue

CONCURRENCY = 8


class _Child(protocol.ProcessProtocol):
    def __init__(self, kill_after):
        self.kill_after = kill_after
        self.buf = b""
        self.acks = {}  # entry id -> sha256 of the message
        self.removing = set()
        self.ended = defer.Deferred()
        self.killed = False

    def outReceived(self, data):
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            words = line.decode().split()
            if words and words[0] == "ACK":
                for i in words[1].split(","):
                    self.acks[int(i)] = words[2]
                if len(self.acks) >= self.kill_after and not self.killed:
                    self.killed = True
                    self.transport.signalProcess("KILL")
            elif words and words[0] == "REMOVING":
                self.removing.update(int(i) for i in words[1].split(","))

    def errReceived(self, data):
        sys.stderr.write(data.decode(errors="replace"))

    def processEnded(self, reason):
        self.ended.callback(None)


class CrashTests(unittest.TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def test_kill_while_adding(self):
        data_dir = os.path.abspath(self.mktemp())
        rng = random.Random(os.environ.get("MOXTW_CRASH_SEED") or None)
        acked = {}
        removing = set()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        for round_ in range(6):
            child = _Child(kill_after=rng.randint(1, 80))
            reactor.spawnProcess(
                child,
                sys.executable,
                [sys.executable, "-m", "moxtw.test.test_queue_crash", data_dir],
                env=env,
            )
            yield child.ended
            self.assertTrue(child.killed, "child exited before it was killed")
            acked.update(child.acks)
            removing |= child.removing

            report = yield threads.deferToThread(verify_queue, data_dir)
            self.assertEqual(report.errors, [], f"round {round_}")

            q = Queue(data_dir)
            yield q.open()
            try:
                queued = {e.id: e for e in (yield q.list())}
                for i, digest in acked.items():
                    if i in removing:
                        continue
                    self.assertIn(i, queued, f"acknowledged entry {i} lost in round {round_}")
                    with q.open_message(queued[i]) as f:
                        self.assertEqual(hashlib.sha256(f.read()).hexdigest(), digest)
            finally:
                yield q.close()
        self.assertGreater(len(acked), 6)


async def _child_main(reactor, data_dir):
    q = Queue(data_dir, reactor)
    await q.open()

    def say(line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def worker(n):
        i = 0
        while True:
            i += 1
            body = os.urandom(300 + (i * 997 + n) % 4000).hex()
            data = (
                f"From: crash@example.org\r\nSubject: crash {n}-{i}\r\n"
                f"Message-ID: <{n}.{i}.{os.getpid()}@example.org>\r\n\r\n{body}\r\n"
            ).encode()
            rcpts = [f"r{n}-{i}-{k}@example.com" for k in range(1 + (n + i) % 3)]
            ids = await q.add(data, "crash@example.org", rcpts, sender_account="crash")
            say(f"ACK {','.join(map(str, ids))} {hashlib.sha256(data).hexdigest()}")
            # Mix in the other writes so kills land in them too.
            if i % 4 == 0:
                await q.record_attempt(ids[-1], ok=False, permanent=False, error="later",
                                       next_attempt=q.now() + timedelta(minutes=7.5))
            if i % 3 == 0:
                say(f"REMOVING {ids[0]}")
                await q.record_attempt(ids[0], ok=True, permanent=False, error="")
            if i % 5 == 0:
                say(f"REMOVING {','.join(map(str, ids))}")
                await q.drop(ids)

    await defer.gatherResults(
        [defer.Deferred.fromCoroutine(worker(n)) for n in range(CONCURRENCY)]
    )


if __name__ == "__main__":
    from twisted.internet import task

    task.react(lambda r, d: defer.Deferred.fromCoroutine(_child_main(r, d)), sys.argv[1:2])
