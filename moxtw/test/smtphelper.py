"""What the SMTP server protocol tests share: a backend that records what it is given,
and a test case that drives one session over a StringTransport (the session's clock is a
task.Clock). test_smtpserver.py tests the protocol's rules with it, test_smtp_hostile.py
hostile input, test_hostile_misc.py the rest of the hostile-input suite.
"""

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from moxtw.smtp import codes as c
from moxtw.smtpserver.server import SMTPFactory, SMTPReply


def reply(code, se):
    """The start of a reply line with its enhanced code: reply(550, c.SE_...1) -> "550 5.1.1"."""
    return f"{code} {c.enhanced(code, se)}"


class RecordingBackend:
    def __init__(self):
        self.delivered = []
        self.submitted = []
        self.refuse_rcpt = set()
        self.deliver_deferreds = []
        self.hold = False
        self.authenticator = None

    def connection_allowed(self, session):
        return None

    def connection_closed(self, session):
        pass

    def auth_allowed(self, session):
        return None

    def auth_result(self, session, ok, login=""):
        return 0

    def sasl_backend(self, session):
        return self.authenticator

    def check_sender(self, session, env):
        return None

    def check_recipient(self, session, env, rcpt):
        if rcpt.address.localpart in self.refuse_rcpt:
            raise SMTPReply(c.C550_MAILBOX_UNAVAILABLE, c.SE_ADDR_UNKNOWN_DEST_MAILBOX1, "no such user")
        # Asynchronous, like the real backend may be.
        return defer.succeed("resolved")

    def deliver(self, session, env, data, has_8bit=False):
        self.delivered.append((env, data))
        if self.hold:
            d = defer.Deferred()
            self.deliver_deferreds.append(d)
            return d
        return defer.succeed(SMTPReply(c.C250_COMPLETED, c.SE_OTHER0, "delivered"))

    def submit(self, session, env, data, has_8bit=False):
        self.submitted.append((env, data))
        return defer.succeed(SMTPReply(c.C250_COMPLETED, c.SE_OTHER0, "queued"))


class SMTPTestBase(unittest.SynchronousTestCase):
    kind = "smtp"
    pedantic = False
    max_size = 10000

    def setUp(self):
        self.clock = task.Clock()
        self.new_session()

    def new_session(self):
        """A new factory, backend and connection (after changing max_size, or for each
        input of a loop): nothing carries over from the previous session."""
        self.backend = RecordingBackend()
        self.factory = SMTPFactory(
            self.kind, "mx.example.org", self.backend, max_message_size=self.max_size,
            pedantic=self.pedantic, clock=self.clock,
        )
        self.proto, self.tr = self.connect()

    def connect(self):
        proto = self.factory.buildProtocol(None)
        proto.factory = self.factory
        tr = StringTransport(
            peerAddress=IPv4Address("TCP", "192.0.2.10", 40000),
            hostAddress=IPv4Address("TCP", "192.0.2.1", 25),
        )
        proto.makeConnection(tr)
        return proto, tr

    def send(self, data):
        self.tr.clear()
        self.proto.dataReceived(data)
        while self.proto._turn_call is not None:
            self.clock.advance(0)  # more pipelined commands than one turn takes
        return self.tr.value().decode()

    def codes(self, out):
        """The reply codes of the last line of each reply in out."""
        return [int(line[:3]) for line in out.split("\r\n") if line and line[3] == " "]

    def ehlo(self):
        return self.send(b"EHLO client.example.net\r\n")
