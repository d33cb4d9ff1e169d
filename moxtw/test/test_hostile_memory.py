"""Memory and fairness under hostile clients, measured on a real server process
(issue 10 items 1 and 6).

A localserve instance runs under twistd as a child process; clients are blocking sockets
in threads. The server's resident memory is read from /proc/PID/status: its peak
(VmHWM) across the attack, against the peak before it.
- 4 connections each announcing a 100 MB non-synchronizing literal before login and
  sending it: the server closes them with BYE and keeps none of it.
- 4 logged-in connections each appending a large message at once: the literals go to
  spool files, so memory does not grow with the number of connections.
- clients that pipeline NOOPs and never read the replies (SMTP and IMAP): the server
  stops reading from them once their replies are not read, memory stays bounded, and a
  new client's greeting still arrives within a second.
"""

import os
import socket
import threading
import time

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from moxtw.test.test_localserve import free_offset, spawn_localserve

MB = 1024 * 1024
PREAUTH_BOMB = 100 * MB
PREAUTH_CONNECTIONS = 4
PREAUTH_MAX_GROWTH = 60 * MB  # the bound for 4 x 100 MB
APPEND_SIZE = 20 * MB
APPEND_CONNECTIONS = 4
APPEND_PARSE_COST = 3  # peak memory for parsing one message, in multiples of its size
FLOOD_SECONDS = 20
FLOOD_MAX_GROWTH = 60 * MB
# While others flood, new clients are greeted in under 1 s (the bound; typically
# milliseconds): 95% of them, and every one within 3 s (a starved reactor never greets;
# a loaded CI machine took 1.1 s for one of about 80 once).
GREETING_P95_MAX = 1.0
GREETING_MAX = 3.0

SMTP, IMAP = 25, 143  # standard ports; localserve adds the offset (plus 1000)


def _status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _read_line(s):
    data = b""
    while not data.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            raise ConnectionError("closed")
        data += c
    return data


def _imap_login(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    _read_line(s)
    s.sendall(b"a LOGIN mox@localhost moxmoxmox\r\n")
    line = _read_line(s)
    assert line.startswith(b"a OK"), line
    return s


class ServerMemoryTests(unittest.TestCase):
    timeout = 240

    @defer.inlineCallbacks
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.offset = free_offset()
        self.proc = spawn_localserve(self, self.dir, self.offset)
        yield self.proc.listening
        self.pid = self.proc.transport.pid
        # Warm up: one session of each kind, so lazily loaded code is in the baseline.
        yield threads.deferToThread(self._warm_up)

    def port(self, standard):
        return standard + self.offset

    def _warm_up(self):
        s = _imap_login(self.port(IMAP))
        s.sendall(b"b SELECT INBOX\r\nc LOGOUT\r\n")
        while s.recv(65536):
            pass
        s.close()
        with socket.create_connection(("127.0.0.1", self.port(SMTP)), timeout=30) as s:
            _read_line(s)
            s.sendall(b"QUIT\r\n")
            s.recv(100)

    def peak(self):
        return _status(self.pid, "VmHWM")

    def assert_server_log_clean(self):
        out = self.proc.out.decode(errors="replace")
        self.assertNotIn("level=critical", out)
        self.assertNotIn("Traceback", out)

    @defer.inlineCallbacks
    def test_preauth_literal_bomb(self):
        before = self.peak()
        replies = []

        def bomb():
            s = socket.create_connection(("127.0.0.1", self.port(IMAP)), timeout=30)
            _read_line(s)
            s.sendall(b"a APPEND INBOX {%d+}\r\n" % PREAUTH_BOMB)
            chunk = b"x" * MB
            try:
                for _ in range(PREAUTH_BOMB // MB):
                    s.sendall(chunk)
            except OSError:
                pass  # the server closed the connection: what it should do
            try:
                replies.append(s.recv(4096))
            except OSError:
                replies.append(b"")
            s.close()

        yield defer.gatherResults(
            [threads.deferToThread(bomb) for _ in range(PREAUTH_CONNECTIONS)]
        )
        growth = self.peak() - before
        self.assertLess(growth, PREAUTH_MAX_GROWTH, f"peak RSS grew by {growth // MB} MB")
        self.assert_server_log_clean()

    @defer.inlineCallbacks
    def test_concurrent_large_appends(self):
        before = self.peak()
        message = (
            b"From: a@localhost\r\nTo: mox@localhost\r\nSubject: big\r\n\r\n"
            + (b"y" * 998 + b"\r\n") * (APPEND_SIZE // 1000)
        )

        def append():
            s = _imap_login(self.port(IMAP))
            s.sendall(b"b APPEND INBOX {%d+}\r\n" % len(message))
            view = memoryview(message)
            for i in range(0, len(message), MB):
                s.sendall(view[i:i + MB])
            s.sendall(b"\r\n")
            line = _read_line(s)
            while not line.startswith(b"b "):
                line = _read_line(s)
            s.close()
            return line

        lines = yield defer.gatherResults(
            [threads.deferToThread(append) for _ in range(APPEND_CONNECTIONS)]
        )
        for line in lines:
            self.assertTrue(line.startswith(b"b OK"), line)
        growth = self.peak() - before
        # Without spooling each connection held its message several times over (over
        # 200 MB here); with it the connections hold KBs and one message at a time is
        # parsed (the message and its decoded texts).
        bound = APPEND_PARSE_COST * APPEND_SIZE
        self.assertLess(growth, bound, f"peak RSS grew by {growth // MB} MB")
        self.assert_server_log_clean()

    @defer.inlineCallbacks
    def test_clients_that_never_read(self):
        before = self.peak()
        stop = threading.Event()
        sent = []

        def flood(port, command):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(0.5)
            burst = command * 1000
            n = 0
            while not stop.is_set():
                try:
                    s.sendall(burst)
                    n += len(burst)
                except socket.timeout:
                    continue  # the server stopped reading from us: what it should do
                except OSError:
                    break
            sent.append(n)
            return s  # kept open (unread) until the end of the test

        def greetings():
            took = []
            while not stop.is_set():
                for port in (self.port(SMTP), self.port(IMAP)):
                    t0 = time.monotonic()
                    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                        _read_line(s)
                    took.append(time.monotonic() - t0)
                time.sleep(0.5)
            return sorted(took)

        imap = yield threads.deferToThread(_imap_login, self.port(IMAP))
        imap.close()
        floods = [
            threads.deferToThread(flood, self.port(SMTP), b"NOOP\r\n"),
            threads.deferToThread(flood, self.port(SMTP), b"NOOP\r\n"),
            threads.deferToThread(flood, self.port(IMAP), b"x NOOP\r\n"),
            threads.deferToThread(flood, self.port(IMAP), b"x CAPABILITY\r\n"),
        ]
        took = threads.deferToThread(greetings)
        d = defer.Deferred()
        reactor.callLater(FLOOD_SECONDS, d.callback, None)
        yield d
        growth = self.peak() - before
        stop.set()
        socks = yield defer.gatherResults(floods)
        took = yield took
        for s in socks:
            s.close()
        self.assertGreater(len(took), 10)
        p95 = took[int(len(took) * 0.95)]
        self.assertLess(p95, GREETING_P95_MAX, f"5% of greetings took over {p95:.2f} s")
        self.assertLess(took[-1], GREETING_MAX, f"a greeting took {took[-1]:.2f} s")
        self.assertLess(growth, FLOOD_MAX_GROWTH, f"peak RSS grew by {growth // MB} MB")
        self.assert_server_log_clean()
