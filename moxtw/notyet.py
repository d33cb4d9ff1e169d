"""Honest answers on listeners whose protocol is not part of this version yet.

The service tree opens every configured listener so that ports, TLS and privilege
dropping work from day one. Until the SMTP, IMAP and web issues land, those ports answer
with the protocol's own way of saying "no service here", never with something that looks
like a working server:

- SMTP: greeting ``554 5.3.2`` (RFC 5321 3.1: the server does not accept mail), QUIT
  answered with 221, every other command with ``503 5.5.1``.
- IMAP: ``* BYE [UNAVAILABLE]`` (RFC 5530) and the connection closes.
- HTTP: status 503 with a plain-text explanation.
"""

from twisted.internet import protocol
from twisted.protocols.basic import LineOnlyReceiver
from twisted.web import resource, server

SMTP_TEXT = "moxtw SMTP service is not part of this version yet"
IMAP_TEXT = "moxtw IMAP service is not part of this version yet"
WEB_TEXT = "moxtw web interfaces (account, admin, webmail, webapi) are not part of this version yet"


class SMTPUnavailable(LineOnlyReceiver):
    MAX_LENGTH = 4096
    max_commands = 20

    def connectionMade(self):
        self.commands = 0
        # RFC 5321 3.1: a 554 greeting means no SMTP service; the client should QUIT.
        self.sendLine(f"554 5.3.2 {self.factory.hostname} {SMTP_TEXT}".encode())

    def lineReceived(self, line):
        self.commands += 1
        if line.strip().upper() == b"QUIT":
            self.sendLine(b"221 2.0.0 bye")
            self.transport.loseConnection()
        elif self.commands >= self.max_commands:
            self.sendLine(b"421 4.7.0 too many commands")
            self.transport.loseConnection()
        else:
            self.sendLine(f"503 5.5.1 {SMTP_TEXT}".encode())

    def lineLengthExceeded(self, line):
        self.sendLine(b"500 5.5.2 line too long")
        self.transport.loseConnection()


class SMTPUnavailableFactory(protocol.Factory):
    protocol = SMTPUnavailable
    noisy = False

    def __init__(self, hostname):
        self.hostname = hostname


class IMAPUnavailable(protocol.Protocol):
    def connectionMade(self):
        # RFC 9051 7.1.5 (BYE as greeting), RFC 5530 UNAVAILABLE response code.
        self.transport.write(f"* BYE [UNAVAILABLE] {IMAP_TEXT}\r\n".encode())
        self.transport.loseConnection()


class IMAPUnavailableFactory(protocol.Factory):
    protocol = IMAPUnavailable
    noisy = False


class WebUnavailable(resource.Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(503)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (WEB_TEXT + "\n").encode()


def web_unavailable_site():
    return server.Site(WebUnavailable())
