"""A scriptable SMTP server for client-side tests: records transactions, answers as told.

Not a mail server: it speaks just enough SMTP (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP,
QUIT, AUTH PLAIN) for the queue's outgoing delivery to be tested against a real socket.
"""

import base64

from twisted.internet import protocol
from twisted.protocols.basic import LineReceiver


class Transaction:
    def __init__(self, ehlo, mailfrom, mail_params):
        self.ehlo = ehlo
        self.mailfrom = mailfrom
        self.mail_params = mail_params
        self.recipients = []  # accepted
        self.data = None
        self.auth = None
        self.tls = False


class SinkProtocol(LineReceiver):
    delimiter = b"\r\n"
    MAX_LENGTH = 100000

    def connectionLost(self, reason=None):
        if self in self.factory.live:
            self.factory.live.remove(self)

    def connectionMade(self):
        self.ehlo = None
        self.txn = None
        self.in_data = False
        self.lines = []
        self.auth = None
        self.tls = False
        self.factory.connections += 1
        self.factory.live.append(self)
        self.sendLine(self.factory.banner.encode())

    def reply(self, text):
        self.sendLine(text.encode())

    def lineReceived(self, line):
        f = self.factory
        if self.in_data:
            if line == b".":
                self.in_data = False
                self.txn.data = b"".join(x + b"\r\n" for x in self.lines)
                self.txn.tls = self.tls
                self.lines = []
                f.transactions.append(self.txn)
                self.txn = None
                self.reply(f.data_reply)
                return
            self.lines.append(line[1:] if line.startswith(b".") else line)
            return
        text = line.decode("utf-8", "replace")
        f.commands.append(text)
        verb = text.split(" ", 1)[0].upper()
        if verb in ("EHLO", "HELO"):
            self.ehlo = text[5:]
            extensions = list(f.extensions)
            if f.tls is not None and not self.tls and f.offer_starttls:
                extensions.append("STARTTLS")
            if verb == "HELO" or not extensions:
                self.reply("250 sink")
            else:
                self.reply("\r\n".join(["250-sink"] + [f"250-{e}" for e in extensions[:-1]]
                                       + [f"250 {extensions[-1]}"]))
        elif verb == "STARTTLS" and f.tls is not None and not self.tls:
            # RFC 3207 4.2: after the handshake the client starts over with EHLO.
            self.reply("220 2.0.0 go ahead")
            self.transport.startTLS(f.tls)
            self.tls = True
            self.ehlo = None
            self.txn = None
        elif verb == "AUTH":
            parts = text.split()
            if len(parts) == 3 and parts[1].upper() == "PLAIN":
                _, user, password = base64.b64decode(parts[2]).split(b"\0")
                self.auth = (user.decode(), password.decode())
                ok = f.credentials is None or self.auth == f.credentials
                self.reply("235 2.7.0 ok" if ok else "535 5.7.8 bad credentials")
            else:
                self.reply("504 5.5.4 mechanism not supported")
        elif verb == "MAIL":
            r = f.mail_reply
            if r.startswith("2"):
                arg = text[10:]
                addr, _, params = arg.partition(">")
                self.txn = Transaction(self.ehlo, addr.lstrip("<"), params.split())
                self.txn.auth = self.auth
            self.reply(r)
        elif verb == "RCPT":
            addr = text[8:].strip().lstrip("<").rstrip(">")
            if self.txn is None:
                self.reply("503 5.5.1 no transaction")
                return
            r = f.rcpt_reply(addr, len(self.txn.recipients))
            if r.startswith("2"):
                self.txn.recipients.append(addr)
            self.reply(r)
        elif verb == "DATA":
            if self.txn is None or not self.txn.recipients:
                self.reply("503 5.5.1 no valid recipients")
                return
            self.in_data = True
            self.reply("354 go ahead")
        elif verb == "RSET":
            self.txn = None
            self.reply("250 2.0.0 reset")
        elif verb == "NOOP":
            self.reply("250 2.0.0 ok")
        elif verb == "QUIT":
            self.reply("221 2.0.0 bye")
            self.transport.loseConnection()
        else:
            self.reply("500 5.5.2 unknown command")


class SinkFactory(protocol.Factory):
    protocol = SinkProtocol

    def __init__(self, extensions=("PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "SIZE 0"),
                 banner="220 sink ESMTP", credentials=None, tls=None, offer_starttls=True):
        self.extensions = list(extensions)
        self.banner = banner
        self.mail_reply = "250 2.1.0 ok"
        self.data_reply = "250 2.0.0 accepted"
        self.rcpt_replies = {}  # address -> reply line
        self.max_rcpts = None  # 452 after this many in one transaction
        self.credentials = credentials
        self.tls = tls  # server TLS options: STARTTLS is offered (unless not offer_starttls)
        self.offer_starttls = offer_starttls
        self.transactions = []
        self.commands = []
        self.connections = 0
        self.live = []  # protocols of open connections

    def rcpt_reply(self, addr, accepted):
        if addr in self.rcpt_replies:
            return self.rcpt_replies[addr]
        if self.max_rcpts is not None and accepted >= self.max_rcpts:
            return "452 4.5.3 too many recipients"
        return "250 2.1.5 ok"


def start_sink(testcase, **kw):
    """A sink on 127.0.0.1 (random port), stopped at test cleanup: (factory, port)."""
    from twisted.internet import reactor

    factory = SinkFactory(**kw)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return factory, port.getHost().port


class SOCKS5TestProxy(protocol.Protocol):
    """A minimal SOCKS5 proxy (no authentication, CONNECT only) that connects every
    request to ``factory.target`` on loopback, recording what was asked."""

    def connectionMade(self):
        self.buf = b""
        self.state = "greeting"
        self.peer = None

    def dataReceived(self, data):
        if self.state == "relay":
            self.peer.transport.write(data)
            return
        self.buf += data
        if self.state == "greeting":
            if len(self.buf) < 2 or len(self.buf) < 2 + self.buf[1]:
                return
            methods = self.buf[2:2 + self.buf[1]]
            self.buf = self.buf[2 + self.buf[1]:]
            if 0 not in methods:
                self.transport.write(b"\x05\xff")
                self.transport.loseConnection()
                return
            self.transport.write(b"\x05\x00")
            self.state = "request"
        if self.state == "request":
            if len(self.buf) < 5:
                return
            atyp = self.buf[3]
            n = {1: 4, 4: 16}.get(atyp, None)
            if n is None:
                n = 1 + self.buf[4]
            if len(self.buf) < 4 + n + 2:
                return
            addr = self.buf[4:4 + n]
            port = int.from_bytes(self.buf[4 + n:6 + n], "big")
            self.buf = self.buf[6 + n:]
            self.factory.requests.append((atyp, addr, port))
            if self.factory.refuse:
                self.transport.write(b"\x05\x05\x00\x01" + bytes(4) + b"\x00\x00")
                self.transport.loseConnection()
                return
            self.state = "connecting"
            self._connect()

    def _connect(self):
        from twisted.internet import reactor

        proxy = self

        class Back(protocol.Protocol):
            def connectionMade(self):
                proxy.peer = self
                proxy.state = "relay"
                proxy.transport.write(b"\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x19")

            def dataReceived(self, data):
                proxy.transport.write(data)

            def connectionLost(self, reason):
                proxy.transport.loseConnection()

        cf = protocol.ClientFactory()
        cf.protocol = Back
        reactor.connectTCP("127.0.0.1", self.factory.target, cf)

    def connectionLost(self, reason):
        if self.peer is not None:
            self.peer.transport.loseConnection()


def start_socks_proxy(testcase, target_port, refuse=False):
    from twisted.internet import reactor

    factory = protocol.Factory()
    factory.protocol = SOCKS5TestProxy
    factory.target = target_port
    factory.requests = []
    factory.refuse = refuse
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return factory, port.getHost().port


def closed_port():
    """A loopback port with nothing listening (bound then closed)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


__all__ = ["start_sink", "start_socks_proxy", "closed_port"]
