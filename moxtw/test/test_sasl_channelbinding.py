"""Tests for moxtw.sasl.channelbinding over real loopback TLS connections: both ends
compute the same tls-exporter (TLS 1.3) and tls-unique (TLS 1.2) binding, Python's ssl
module agrees on tls-unique, and SCRAM-SHA-256-PLUS works across it."""

import os
import socket
import ssl

from twisted.internet import defer, endpoints, protocol, reactor, threads
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.ssl import Certificate, TLSVersion, optionsForClientTLS
from twisted.trial import unittest
from zope.interface import implementer

from moxtw.sasl.channelbinding import (
    EXPORTER_LABEL,
    ChannelBinding,
    channel_binding_for,
)
from moxtw.sasl.client import new_client_mechanism
from moxtw.sasl.server import SASLError, new_server_mechanism, server_mechanisms
from moxtw.test.test_sasl_server import make_backend
from moxtw.tls import selfsigned


@implementer(IHandshakeListener)
class BindingProtocol(protocol.Protocol):
    """Records the channel binding when the handshake completes, then echoes a line."""

    def __init__(self):
        self.handshake = defer.Deferred()
        self.binding = None
        self.version = None

    def handshakeCompleted(self):
        self.binding = channel_binding_for(self.transport)
        self.version = self.transport.getHandle().get_protocol_version_name()
        self.handshake.callback(self)

    def dataReceived(self, data):
        self.transport.write(data)


class StartTLSProtocol(BindingProtocol):
    """Starts TLS on a plain connection right away, as after SMTP STARTTLS."""

    def __init__(self, tls_options):
        super().__init__()
        self.tls_options = tls_options

    def connectionMade(self):
        self.transport.startTLS(self.tls_options)


class ServerFactory(protocol.Factory):
    def __init__(self):
        self.connected = defer.DeferredQueue()

    def buildProtocol(self, addr):
        p = BindingProtocol()
        p.handshake.addCallback(self.connected.put)
        return p


class ChannelBindingTests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        d = os.path.abspath(self.mktemp())
        self.cert, self.key, self.ca = selfsigned.ensure_localserve_cert(d)
        self.factory = ServerFactory()
        ep = endpoints.SSL4ServerEndpoint(
            reactor,
            0,
            selfsigned.server_context_factory(self.cert, self.key),
            interface="127.0.0.1",
        )
        return ep.listen(self.factory).addCallback(self._listening)

    def _listening(self, port):
        self.port = port
        self.addCleanup(port.stopListening)

    @defer.inlineCallbacks
    def connect(self, max_version=None):
        """(client protocol, server protocol) after the handshake, over Twisted."""
        with open(self.ca, "rb") as f:
            ca = Certificate.loadPEM(f.read())
        extra = {}
        if max_version is not None:
            extra["lowerMaximumSecurityTo"] = max_version
        opts = optionsForClientTLS("localhost", trustRoot=ca, extraCertificateOptions=extra)
        ep = endpoints.SSL4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port, opts)
        client = BindingProtocol()
        yield ep.connect(protocol.Factory.forProtocol(lambda: client))
        self.addCleanup(client.transport.loseConnection)
        yield client.handshake
        server = yield self.factory.connected.get()
        self.addCleanup(server.transport.loseConnection)
        return client, server

    @defer.inlineCallbacks
    def test_tls13_exporter(self):
        client, server = yield self.connect()
        self.assertEqual(client.version, "TLSv1.3")
        self.assertEqual(server.binding.type, "tls-exporter")
        self.assertEqual(len(server.binding.data), 32)
        self.assertEqual(client.binding, server.binding)
        # RFC 8446 7.5: in TLS 1.3 an absent context equals an empty one.
        conn = server.transport.getHandle()
        self.assertEqual(conn.export_keying_material(EXPORTER_LABEL, 32, None), server.binding.data)
        # Another connection has another binding.
        client2, server2 = yield self.connect()
        self.assertNotEqual(server2.binding, server.binding)

    @defer.inlineCallbacks
    def test_tls12_unique(self):
        client, server = yield self.connect(TLSVersion.TLSv1_2)
        self.assertEqual(client.version, "TLSv1.2")
        self.assertEqual(server.binding.type, "tls-unique")
        # RFC 5929 3.1: the client's Finished after a full handshake (12 bytes verify_data).
        self.assertEqual(len(server.binding.data), 12)
        self.assertEqual(client.binding, server.binding)
        self.assertEqual(server.binding.data, client.transport.getHandle().get_finished())
        # The side can also be given explicitly; the wrong side gives the server's Finished.
        self.assertEqual(channel_binding_for(server.transport, server=True), server.binding)
        self.assertNotEqual(channel_binding_for(server.transport, server=False), server.binding)

    @defer.inlineCallbacks
    def test_tls12_python_ssl_agrees(self):
        """Python's ssl computes tls-unique itself (TLS 1.2 only); our server agrees."""
        port = self.port.getHost().port
        ca = self.ca

        def talk():
            ctx = ssl.create_default_context(cafile=ca)
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    cb = s.get_channel_binding("tls-unique")
                    s.sendall(b"ping")
                    s.recv(4)
                    return cb

        cb = yield threads.deferToThread(talk)
        server = yield self.factory.connected.get()
        self.assertEqual(server.binding, ChannelBinding("tls-unique", cb))

    @defer.inlineCallbacks
    def test_scram_plus_across_tls(self):
        for version in (None, TLSVersion.TLSv1_2):
            client, server = yield self.connect(version)
            offered = server_mechanisms(True, server.binding)
            self.assertIn("SCRAM-SHA-256-PLUS", offered)
            account = yield plus_exchange(server.binding, client.binding)
            self.assertEqual(account.name, "mjl")

    @defer.inlineCallbacks
    def test_scram_plus_mismatch(self):
        # The client's binding from one connection, the server's from another: a
        # man in the middle terminating TLS would see exactly this.
        client1, server1 = yield self.connect()
        client2, server2 = yield self.connect()
        try:
            yield plus_exchange(server1.binding, client2.binding)
        except SASLError as e:
            self.assertEqual(e.reason, "auth-failed")
        else:
            self.fail("exchange with mismatched channel binding succeeded")

    @defer.inlineCallbacks
    def test_starttls(self):
        """After startTLS, getHandle is the TLS connection and the side comes from the
        TCP transport."""
        server_opts = selfsigned.server_context_factory(self.cert, self.key)
        with open(self.ca, "rb") as f:
            ca = Certificate.loadPEM(f.read())
        for max_version in (TLSVersion.TLSv1_2, None):
            extra = {} if max_version is None else {"lowerMaximumSecurityTo": max_version}
            client_opts = optionsForClientTLS(
                "localhost", trustRoot=ca, extraCertificateOptions=extra
            )
            server = StartTLSProtocol(server_opts)
            port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
                protocol.Factory.forProtocol(lambda: server)
            )
            self.addCleanup(port.stopListening)
            client = StartTLSProtocol(client_opts)
            ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
            yield ep.connect(protocol.Factory.forProtocol(lambda: client))
            self.addCleanup(client.transport.loseConnection)
            yield client.handshake
            yield server.handshake
            self.addCleanup(server.transport.loseConnection)
            want = "tls-unique" if max_version else "tls-exporter"
            self.assertEqual(server.binding.type, want)
            self.assertEqual(client.binding, server.binding)
            account = yield plus_exchange(server.binding, client.binding)
            self.assertEqual(account.name, "mjl")

    def test_no_tls(self):
        class Plain:
            def getHandle(self):
                return socket.socket()

        s = Plain().getHandle()
        self.addCleanup(s.close)
        self.assertIsNone(channel_binding_for(object()))
        self.assertIsNone(channel_binding_for(Plain()))


@defer.inlineCallbacks
def plus_exchange(server_cb, client_cb):
    server = new_server_mechanism("SCRAM-SHA-256-PLUS", make_backend(), channel_binding=server_cb)
    client = new_client_mechanism("SCRAM-SHA-256-PLUS", "mjl@example.org", "test1234", client_cb)
    step = yield server.step(client.initial())
    while not step.done:
        step = yield server.step(client.step(step.challenge))
    client.finish(None)
    return step.account


