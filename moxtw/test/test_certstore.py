"""Several certificates on one listener, chosen by SNI, with unrecognized_name for other
names, and reloaded when their files change; checked with Python's ssl client over a real
loopback TLS listener."""

import os
import shutil
import socket
import ssl

from twisted.internet import defer, endpoints, protocol, reactor, threads
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest

from moxtw import metrics
from moxtw.tls import certstore, selfsigned


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


def peer_names(port, server_name, cafiles):
    """The DNS names of the certificate the server sends for ``server_name`` (None:
    no SNI); the chain is verified against ``cafiles``."""
    ctx = ssl.create_default_context()
    for ca in cafiles:
        ctx.load_verify_locations(ca)
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            s.sendall(b"ping")
            assert s.recv(4) == b"ping"
            return sorted(v for k, v in s.getpeercert()["subjectAltName"] if k == "DNS")


class CertStoreTests(unittest.TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        self.pairs, self.cas = [], []
        for name, hosts in (("one", ["mail.example.org", "example.org"]), ("two", ["*.example.net"])):
            d = os.path.join(self.dir, name)
            cert, key, ca = selfsigned.ensure_localserve_cert(d, hostnames=hosts, ips=[], leaf_name=name)
            self.pairs.append((cert, key))
            self.cas.append(ca)
        self.store = certstore.CertStore("public", self.pairs)
        ep = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        factory = protocol.Factory.forProtocol(Echo)
        self.port = yield ep.listen(TLSMemoryBIOFactory(self.store, False, factory))
        self.addCleanup(self.port.stopListening)
        self.portnum = self.port.getHost().port

    def names(self, server_name):
        return threads.deferToThread(peer_names, self.portnum, server_name, self.cas)

    @defer.inlineCallbacks
    def test_sni_chooses_and_refuses(self):
        self.assertEqual((yield self.names("mail.example.org")), ["example.org", "mail.example.org"])
        self.assertEqual((yield self.names("EXAMPLE.org")), ["example.org", "mail.example.org"])
        self.assertEqual((yield self.names("imap.example.net")), ["*.example.net"])
        self.assertEqual((yield self.names(None)), ["example.org", "mail.example.org"])  # no SNI: the first
        self.assertEqual(self.store.pair_for("127.0.0.1"), self.store.pair_for(None))  # an IP: as none
        for other in ("a.b.example.net", "example.net", "evil.example"):
            e = yield self.assertFailure(self.names(other), ssl.SSLError)
            self.assertIn("UNRECOGNIZED_NAME", str(e).upper(), other)
        g = metrics.REGISTRY.get_sample_value("tls_cert_expiry_seconds",
                                              {"listener": "public", "name": "*.example.net"})
        self.assertGreater(g, 0)

    def test_mail_ports_serve_the_first_for_unknown_names(self):
        lenient = certstore.CertStore("public", self.pairs, strict=False)
        self.assertIsNone(lenient.pair_for("mx.alias.example"))

        class Conn:
            ctx = None

            def get_servername(self):
                return b"mx.alias.example"

            def get_context(self):
                return self.ctx

            def set_context(self, ctx):
                self.ctx = ctx

        conn = Conn()
        lenient._servername(conn)
        self.assertIs(conn.ctx, lenient.pair_for(None).context)
        with self.assertRaises(certstore.UnknownServerName):
            self.store._servername(conn)

    @defer.inlineCallbacks
    def test_reload_on_change(self):
        cert, key = self.pairs[1]
        # A broken replacement: the certificate in service stays.
        shutil.copy(cert, cert + ".good")
        with open(cert, "wb") as f:
            f.write(b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
        n = yield threads.deferToThread(self.store.check)
        self.assertEqual(n, 0)
        self.assertEqual((yield self.names("x.example.net")), ["*.example.net"])
        # A new certificate for other names, written the way certbot does (new files).
        d = os.path.join(self.dir, "new")
        ncert, nkey, nca = selfsigned.ensure_localserve_cert(d, hostnames=["*.example.com"], ips=[], leaf_name="n")
        self.cas.append(nca)
        os.replace(nkey, key)
        os.replace(ncert, cert)
        n = yield threads.deferToThread(self.store.check)
        self.assertEqual(n, 1)
        self.assertEqual((yield self.names("x.example.com")), ["*.example.com"])
        yield self.assertFailure(self.names("x.example.net"), ssl.SSLError)
        # The other pair was untouched.
        self.assertEqual((yield self.names("mail.example.org")), ["example.org", "mail.example.org"])

    def test_reload_service_runs_on_clock(self):
        from twisted.internet import task

        clock = task.Clock()
        calls = []
        svc = certstore.CertReloadService([self.store], interval=60, clock=clock)
        self.patch(self.store, "check", lambda: calls.append(1) or 0)
        self.patch(certstore.threads, "deferToThread", lambda fn: defer.maybeDeferred(fn))
        svc.startService()
        self.addCleanup(svc.stopService)
        clock.advance(60)
        clock.advance(60)
        self.assertEqual(len(calls), 3)  # at start, then every minute
