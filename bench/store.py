"""Benchmark: durable deliveries per second into one account, and reactor stalls.

Usage: python bench/store.py [--count N] [--dir D] [--fill 0,10000,100000]

For 1, 10 and 50 concurrent deliveries of 10 KB messages into one account it prints
deliveries/second (each acknowledged only once file and index are fsynced) and the
reactor's worst stall during the run: the largest lateness of a 5 ms LoopingCall.

With --fill, it fills the account to each size in turn (a third of the messages without
a Subject, a third replies "Re: Your order" to messages that never arrive, a third with
unique subjects) and prints the rate and CPU milliseconds per delivery at 10 concurrent
deliveries of messages like those: whether delivery stays flat as the account grows.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from moxtw import store  # noqa: E402

TICK = 0.005


def message(i):
    body = (f"line {i} " * 12 + "\r\n") * 100  # ~10 KB
    return (
        f"From: bench@example.org\r\nTo: mox@localhost\r\nSubject: bench {i}\r\n"
        f"Message-ID: <bench.{i}.{time.time_ns()}@example.org>\r\n\r\n{body}"
    ).encode()[:10240]


class StallMeter:
    def __init__(self, reactor):
        self.reactor = reactor
        self.worst = 0.0
        self.last = None
        self.loop = task.LoopingCall(self.tick)

    def tick(self):
        now = time.monotonic()
        if self.last is not None:
            self.worst = max(self.worst, now - self.last - TICK)
        self.last = now

    def start(self):
        self.loop.start(TICK)

    def stop(self):
        self.loop.stop()


@defer.inlineCallbacks
def run(reactor, count, base):
    st = store.Store(base, reactor=reactor)
    acc = yield st.open_account("bench")
    datas = [message(i) for i in range(count)]
    print(f"{'concurrency':>11} {'messages':>8} {'deliveries/s':>12} {'worst stall ms':>14}")
    for concurrency in (1, 10, 50):
        meter = StallMeter(reactor)
        meter.start()
        started = time.monotonic()
        it = iter(datas)

        @defer.inlineCallbacks
        def worker():
            for data in it:
                yield acc.deliver("Inbox", data)

        yield defer.gatherResults([worker() for _ in range(concurrency)])
        elapsed = time.monotonic() - started
        meter.stop()
        print(
            f"{concurrency:>11} {count:>8} {count / elapsed:>12.1f} {meter.worst * 1000:>14.1f}"
        )
    yield st.close()


def fill_message(i, kind):
    subject, extra = (("", ""), ("Re: Your order", f"References: <missing.{i}@example.org>\r\n"),
                      (f"unique {i}", ""))[kind]
    body = (f"line {i} " * 12 + "\r\n") * 100
    return (
        f"From: shop@example.org\r\nTo: mox@localhost\r\nSubject: {subject}\r\n{extra}"
        f"Message-ID: <fill.{i}.{time.time_ns()}@example.org>\r\n\r\n{body}"
    ).encode()[:10240]


@defer.inlineCallbacks
def run_fill(reactor, count, base, sizes):
    st = store.Store(base, reactor=reactor)
    acc = yield st.open_account("bench")
    have = 0
    print(f"{'messages in account':>19} {'deliveries/s':>12} {'CPU ms/delivery':>15} {'worst stall ms':>14}")
    for size in sizes:
        while have < size:
            n = min(1000, size - have)
            yield acc.append_many("Inbox", [(fill_message(have + i, (have + i) % 3), (), None) for i in range(n)])
            have += n
        datas = [fill_message(10_000_000 + have + i, i % 3) for i in range(count)]
        meter = StallMeter(reactor)
        meter.start()
        started, cpu = time.monotonic(), time.process_time()
        it = iter(datas)

        @defer.inlineCallbacks
        def worker():
            for data in it:
                yield acc.deliver("Inbox", data)

        yield defer.gatherResults([worker() for _ in range(10)])
        elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
        meter.stop()
        have += count
        print(f"{size:>19} {count / elapsed:>12.1f} {cpu * 1000 / count:>15.2f} {meter.worst * 1000:>14.1f}")
    yield st.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=300, help="messages per concurrency level")
    p.add_argument("--dir", help="data directory (default: a temporary one, removed after)")
    p.add_argument("--fill", help="account sizes to measure at, comma-separated (e.g. 0,10000,100000)")
    a = p.parse_args()
    base = a.dir or tempfile.mkdtemp(prefix="moxtw-bench-")
    try:
        if a.fill:
            task.react(run_fill, [a.count, base, [int(x) for x in a.fill.split(",")]])
        else:
            task.react(run, [a.count, base])
    finally:
        if not a.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
