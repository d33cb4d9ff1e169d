"""Helper process for the crash-consistency test (not a test module).

``python -m moxtw.test.crashdeliver DATADIR`` delivers messages into account "crash"
with several deliveries in flight, printing ``ACK <uid> <sha256>`` for each delivery
whose Deferred fired (i.e. acknowledged as durable), until it is killed.
"""

import hashlib
import os
import sys

from twisted.internet import defer, task

from moxtw import store

CONCURRENCY = 8


@defer.inlineCallbacks
def main(reactor, data_dir):
    st = store.Store(data_dir)
    acc = yield st.open_account("crash")
    sys.stdout.write("READY\n")
    sys.stdout.flush()

    @defer.inlineCallbacks
    def worker(n):
        i = 0
        while True:
            i += 1
            body = os.urandom(300 + (i * 997 + n) % 4000).hex()
            data = (
                f"From: a@example.org\r\nSubject: crash {n}-{i}\r\n"
                f"Message-ID: <{n}.{i}.{os.getpid()}@example.org>\r\n\r\n{body}\r\n"
            ).encode()
            msg = yield acc.deliver("Inbox", data, flags=["\\Seen"] if i % 3 == 0 else [])
            sys.stdout.write(f"ACK {msg.uid} {hashlib.sha256(data).hexdigest()}\n")
            sys.stdout.flush()
            if i % 5 == 0:
                # Mix in index-only writes so kills also land in those transactions.
                yield acc.store_flags(msg.mailbox_id, [msg.uid], "add", ["$seen5"])

    yield defer.gatherResults([worker(n) for n in range(CONCURRENCY)])


if __name__ == "__main__":
    task.react(main, sys.argv[1:2])
