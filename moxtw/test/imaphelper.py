"""Test harness for the IMAP session: a real Store, the real server protocol over a
``StringTransport``, timeouts on a ``task.Clock``.

``IMAPSessionTest`` builds a store with account "mjl" (login ``mjl@example.org``,
password ``PASSWORD``) and an ``IMAPFactory``; ``self.client()`` connects a ``Client``
whose ``cmd`` sends one command and returns a Deferred firing with the response lines up
to and including the tagged one. Waiting is driven by the server's output (every write
is checked), never by sleeping.
"""

import os
import zlib
from types import SimpleNamespace

from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from moxtw.auth import Authenticator
from moxtw.imapserver.backend import IMAPBackend
from moxtw.imapserver.server import IMAPFactory
from moxtw.store import Store

PASSWORD = "imap password"
LOGIN = "mjl@example.org"


def message(subject, body="hello world", frm="bob@example.net", extra=""):
    return (
        f"From: {frm}\r\nTo: mjl@example.org\r\nSubject: {subject}\r\n{extra}"
        f"Message-ID: <{subject.replace(' ', '.')}@example.net>\r\n\r\n{body}\r\n"
    ).encode()


class NotifyingClock(task.Clock):
    """A Clock that can tell when something other than a connection timeout is
    scheduled (e.g. the delay before a failed-login reply)."""

    def __init__(self):
        super().__init__()
        self._waiting = []

    def callLater(self, delay, fn, *args, **kw):
        call = super().callLater(delay, fn, *args, **kw)
        for d in list(self._waiting):
            if self._other_calls():
                self._waiting.remove(d)
                reactor.callLater(0, d.callback, None)
        return call

    def _other_calls(self):
        return [c for c in self.getDelayedCalls() if "timedOut" not in repr(c.func)]

    def wait_scheduled(self):
        """Deferred firing once a non-timeout call is scheduled."""
        d = defer.Deferred()
        if self._other_calls():
            d.callback(None)
        else:
            self._waiting.append(d)
        return d


class _Transport(StringTransport):
    def __init__(self, client, peer):
        super().__init__(peerAddress=peer)
        self._client = client
        self.tls_started = None

    def write(self, data):
        super().write(data)
        self._client._received(data)

    def loseConnection(self):
        super().loseConnection()
        self._client._closed()

    def startTLS(self, context):
        self.tls_started = context


class Client:
    """One connection to the IMAP server under test."""

    def __init__(self, factory, ip="127.0.0.1"):
        self.out = b""  # all output so far (decompressed)
        self._inflate = None
        self._deflate = None
        self._waiters = []  # (start offset, predicate, Deferred)
        self.closed = False
        self._tagn = 0
        self.proto = factory.buildProtocol(IPv4Address("TCP", ip, 143))
        self.transport = _Transport(self, IPv4Address("TCP", ip, 12345))
        self.proto.makeConnection(self.transport)
        self.greeting = self.out

    # output handling

    def _received(self, data):
        if self._inflate is not None:
            data = self._inflate.decompress(data)
        self.out += data
        self._check()

    def _closed(self):
        self.closed = True
        self._check()

    def _check(self):
        for w in list(self._waiters):
            start, pred, d = w
            res = pred(self.out[start:])
            # Fired from the reactor, not from inside the server's write().
            if res is not None:
                self._waiters.remove(w)
                reactor.callLater(0, d.callback, res)
            elif self.closed:
                self._waiters.remove(w)
                reactor.callLater(0, d.callback, self.out[start:].split(b"\r\n"))

    def wait_for(self, pred, start=None):
        """Deferred firing with pred(output since start) once that is not None (or with
        the output lines when the connection closes)."""
        d = defer.Deferred()
        self._waiters.append((len(self.out) if start is None else start, pred, d))
        self._check()
        return d

    def wait_line(self, prefix, start=None):
        """Wait for a line starting with ``prefix``; fires with the lines up to it."""

        def pred(data):
            lines = data.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if line.startswith(prefix):
                    return lines[: i + 1]
            return None

        return self.wait_for(pred, start)

    def wait_tagged(self, tag, start=None):
        tag = tag.encode() if isinstance(tag, str) else tag

        def pred(data):
            lines = data.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if line.startswith(tag + b" ") and line[len(tag) + 1:][:3] in (b"OK ", b"NO ", b"BAD"):
                    return lines[: i + 1]
            return None

        return self.wait_for(pred, start)

    # input

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.proto.dataReceived(data)
        clock = self.proto.factory.clock
        while self.proto._turn_call is not None and clock is not None:
            clock.advance(0)  # more pipelined commands than one turn takes

    def tag(self):
        self._tagn += 1
        return f"t{self._tagn}"

    def cmd(self, command, tag=None):
        """Send ``tag command`` CRLF; Deferred[list of lines up to the tagged reply]."""
        tag = tag or self.tag()
        if isinstance(command, str):
            command = command.encode("utf-8")
        d = self.wait_tagged(tag)
        self.send(tag.encode() + b" " + command + b"\r\n")
        return d

    def raw(self, data, tag):
        """Send raw bytes and wait for the tagged reply of ``tag``."""
        d = self.wait_tagged(tag)
        self.send(data)
        return d

    def start_compression(self):
        self._inflate = zlib.decompressobj(-15)
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)

    @defer.inlineCallbacks
    def login(self, user=LOGIN, password=PASSWORD):
        lines = yield self.cmd(f'LOGIN "{user}" "{password}"')
        assert b" OK " in lines[-1], lines
        return lines

    @defer.inlineCallbacks
    def select(self, mailbox="INBOX", examine=False):
        lines = yield self.cmd(f"{'EXAMINE' if examine else 'SELECT'} {mailbox}")
        assert b" OK " in lines[-1], lines
        return lines


def tagged(lines):
    """The tagged reply line as text: 'OK ...', 'NO ...', 'BAD ...'."""
    return lines[-1].split(b" ", 1)[1].decode("utf-8", "replace")


def untagged(lines, word=None):
    """Untagged lines (without '* '), optionally only those whose second or first word
    is ``word`` (e.g. "FETCH", "EXISTS", "LIST")."""
    out = []
    for line in lines[:-1]:
        if not line.startswith(b"* "):
            continue
        text = line[2:].decode("utf-8", "replace")
        words = text.split(" ", 2)
        if word is None or words[0] == word or (len(words) > 1 and words[1] == word):
            out.append(text)
    return out


class IMAPSessionTest(unittest.TestCase):
    """A store with account mjl, an IMAP factory (kind "imaps" unless ``kind`` is set)
    and helpers to connect clients."""

    timeout = 20
    kind = "imaps"
    factory_kwargs = {}

    @defer.inlineCallbacks
    def setUp(self):
        d = os.path.abspath(self.mktemp())
        os.makedirs(d)
        self.clock = NotifyingClock()
        self.store = Store(d, reactor=reactor)
        self.addCleanup(self.store.close)
        self.acc = yield self.store.open_account("mjl")
        yield self.acc.set_password(PASSWORD)
        self.dynamic = SimpleNamespace(
            Domains={},
            Accounts={
                "mjl": SimpleNamespace(Destinations={"mjl@example.org": None}, LoginDisabled=""),
            },
        )
        self.auth = Authenticator(self.store, lambda: self.dynamic)
        self.backend = IMAPBackend(self.auth, clock=self.clock)
        kwargs = dict(tls_context=None, require_tls_for_login=True, clock=self.clock)
        kwargs.update(self.factory_kwargs)
        self.factory = IMAPFactory(self.kind, "mail.example.org", self.backend, **kwargs)
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            if not c.closed:
                c.proto.connectionLost(None)
        # Pending timeouts on the test clock would otherwise keep references around.
        for call in self.clock.getDelayedCalls():
            call.cancel()

    def client(self, ip="127.0.0.1"):
        c = Client(self.factory, ip)
        self.clients.append(c)
        return c

    @defer.inlineCallbacks
    def logged_in(self, select=None, enable=None):
        """A client that is logged in, optionally with ENABLE and a selected mailbox."""
        c = self.client()
        yield c.login()
        if enable:
            lines = yield c.cmd("ENABLE " + enable)
            assert b" OK " in lines[-1], lines
        if select:
            yield c.select(select)
        return c

    def deliver(self, subject="test", mailbox="Inbox", flags=(), **kw):
        return self.acc.deliver(mailbox, message(subject, **kw), flags=flags)

    @defer.inlineCallbacks
    def deliver_n(self, n, mailbox="Inbox"):
        for i in range(n):
            yield self.deliver(f"msg {i + 1}", mailbox=mailbox, body=f"body {i + 1}")

    def assertOK(self, lines):
        self.assertTrue(tagged(lines).startswith("OK"), lines)

    def assertNO(self, lines, code=None):
        self.assertTrue(tagged(lines).startswith("NO"), lines)
        if code:
            self.assertIn(f"[{code}", tagged(lines))

    def assertBAD(self, lines):
        self.assertTrue(tagged(lines).startswith("BAD"), lines)
