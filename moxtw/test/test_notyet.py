"""The responders on listeners whose protocol is not built yet answer honestly."""

from twisted.internet.testing import StringTransport
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from moxtw import notyet


class SMTPTests(unittest.SynchronousTestCase):
    def connect(self):
        proto = notyet.SMTPUnavailableFactory("mail.example.org").buildProtocol(None)
        tr = StringTransport()
        proto.makeConnection(tr)
        return proto, tr

    def test_greeting_and_quit(self):
        proto, tr = self.connect()
        self.assertTrue(tr.value().startswith(b"554 5.3.2 mail.example.org "))
        tr.clear()
        proto.dataReceived(b"EHLO client\r\nMAIL FROM:<a@b>\r\n")
        self.assertEqual(tr.value().count(b"503 5.5.1"), 2)
        tr.clear()
        proto.dataReceived(b"quit\r\n")
        self.assertEqual(tr.value(), b"221 2.0.0 bye\r\n")
        self.assertTrue(tr.disconnecting)

    def test_hostile(self):
        proto, tr = self.connect()
        proto.dataReceived(b"x" * 10000 + b"\r\n")
        self.assertTrue(tr.disconnecting)
        proto, tr = self.connect()
        proto.dataReceived(b"NOOP\r\n" * 50)
        self.assertIn(b"421 4.7.0", tr.value())
        self.assertTrue(tr.disconnecting)


class IMAPTests(unittest.SynchronousTestCase):
    def test_bye(self):
        proto = notyet.IMAPUnavailableFactory().buildProtocol(None)
        tr = StringTransport()
        proto.makeConnection(tr)
        self.assertTrue(tr.value().startswith(b"* BYE [UNAVAILABLE] "))
        self.assertTrue(tr.disconnecting)


class WebTests(unittest.SynchronousTestCase):
    def test_503(self):
        req = DummyRequest([b"admin"])
        body = notyet.WebUnavailable().render(req)
        self.assertEqual(req.responseCode, 503)
        self.assertIn(b"not part of this version", body)
