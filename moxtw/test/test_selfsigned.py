"""Tests for moxtw.tls.selfsigned: the localserve CA and certificate, and TLS serving."""

import datetime
import ipaddress
import os
import socket
import ssl
import stat

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, wrapServerTLS
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThread
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from moxtw.tls import selfsigned

T0 = 1795294800.0  # 2026-11-21T21:00:00Z
DAY = 86400.0


def _load(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())


class GenerateTests(SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()

    def ensure(self, t=T0, **kw):
        return selfsigned.ensure_localserve_cert(self.dir, clock=lambda: t, **kw)

    def test_files(self):
        cert_path, key_path, ca_path = self.ensure()
        self.assertEqual(
            (cert_path, key_path, ca_path),
            tuple(os.path.join(self.dir, n) for n in ("localhost.crt", "localhost.key", "ca.crt")),
        )
        self.assertEqual(
            sorted(os.listdir(self.dir)), ["ca.crt", "ca.key", "localhost.crt", "localhost.key"]
        )
        for name in ("ca.key", "localhost.key"):
            mode = stat.S_IMODE(os.stat(os.path.join(self.dir, name)).st_mode)
            self.assertEqual(mode, 0o600, name)
        self.assertEqual(stat.S_IMODE(os.stat(self.dir).st_mode), 0o700)

    def test_certificates(self):
        cert_path, key_path, ca_path = self.ensure()
        leaf, ca_in_chain = _load(cert_path)
        [ca] = _load(ca_path)
        self.assertEqual(ca, ca_in_chain)
        now = datetime.datetime.fromtimestamp(T0, datetime.timezone.utc)

        # CA: P-256, about 10 years, a CA.
        self.assertIsInstance(ca.public_key(), ec.EllipticCurvePublicKey)
        self.assertEqual(ca.public_key().curve.name, "secp256r1")
        self.assertTrue(ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        self.assertEqual((ca.not_valid_after_utc - now).days, 3650)

        # Leaf: P-256, about 2 years, SANs, serverAuth, signed by the CA.
        self.assertEqual(leaf.public_key().curve.name, "secp256r1")
        self.assertEqual((leaf.not_valid_after_utc - now).days, 730)
        self.assertLessEqual(leaf.not_valid_before_utc, now)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["localhost"])
        self.assertEqual(
            san.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")],
        )
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        self.assertEqual(list(eku), [ExtendedKeyUsageOID.SERVER_AUTH])
        self.assertFalse(leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        leaf.verify_directly_issued_by(ca)

        # Full path validation as a TLS client would do it, by name and by IP.
        at = now + datetime.timedelta(days=1)
        for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("::1"))):
            verifier = PolicyBuilder().store(Store([ca])).time(at).build_server_verifier(name)
            chain = verifier.verify(leaf, [])
            self.assertEqual(chain[-1], ca)

        # The key matches the leaf.
        from cryptography.hazmat.primitives import serialization

        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
        self.assertEqual(key.public_key(), leaf.public_key())

    def test_reuse(self):
        first = self.ensure()
        contents = {n: open(os.path.join(self.dir, n), "rb").read() for n in os.listdir(self.dir)}
        second = self.ensure(T0 + 100 * DAY)
        self.assertEqual(first, second)
        for n, data in contents.items():
            self.assertEqual(open(os.path.join(self.dir, n), "rb").read(), data, n)

    def test_leaf_renewed_before_expiry(self):
        cert_path, key_path, ca_path = self.ensure()
        [leaf1, ca1] = _load(cert_path)
        key1 = open(key_path, "rb").read()
        self.ensure(T0 + 700 * DAY)  # 30 days before the leaf expires
        [leaf2, ca2] = _load(cert_path)
        self.assertNotEqual(leaf1.serial_number, leaf2.serial_number)
        self.assertNotEqual(open(key_path, "rb").read(), key1)
        self.assertEqual(ca1, ca2)
        self.assertEqual(_load(ca_path), [ca1])
        now = datetime.datetime.fromtimestamp(T0 + 700 * DAY, datetime.timezone.utc)
        self.assertEqual((leaf2.not_valid_after_utc - now).days, 730)

    def test_ca_renewed_before_expiry(self):
        cert_path, _, ca_path = self.ensure()
        [ca1] = _load(ca_path)
        self.ensure(T0 + 3630 * DAY)
        [ca2] = _load(ca_path)
        self.assertNotEqual(ca1, ca2)
        leaf, chain_ca = _load(cert_path)
        self.assertEqual(chain_ca, ca2)
        leaf.verify_directly_issued_by(ca2)

    def test_leaf_not_beyond_ca(self):
        cert_path, _, ca_path = self.ensure()
        # Leaf regenerated late in the CA's life ends with the CA.
        self.ensure(T0 + 3000 * DAY)
        leaf, ca = _load(cert_path)
        self.assertEqual(leaf.not_valid_after_utc, ca.not_valid_after_utc)

    def test_missing_leaf_regenerated(self):
        cert_path, key_path, ca_path = self.ensure()
        [ca] = _load(ca_path)
        os.unlink(key_path)
        self.ensure()
        self.assertTrue(os.path.exists(key_path))
        self.assertEqual(_load(ca_path), [ca])
        _load(cert_path)[0].verify_directly_issued_by(ca)

    def test_corrupt_leaf_regenerated(self):
        cert_path, _, _ = self.ensure()
        with open(cert_path, "wb") as f:
            f.write(b"garbage")
        self.ensure()
        self.assertEqual(len(_load(cert_path)), 2)

    def test_missing_ca_regenerates_all(self):
        cert_path, _, ca_path = self.ensure()
        leaf1 = _load(cert_path)[0]
        os.unlink(os.path.join(self.dir, "ca.key"))
        self.ensure()
        leaf2, ca2 = _load(cert_path)
        self.assertNotEqual(leaf1, leaf2)
        leaf2.verify_directly_issued_by(ca2)

    def test_new_names_regenerate_leaf(self):
        cert_path, _, _ = self.ensure()
        leaf1 = _load(cert_path)[0]
        self.ensure(hostnames=("localhost", "mail.localhost"), ips=("127.0.0.1",))
        leaf2 = _load(cert_path)[0]
        self.assertNotEqual(leaf1, leaf2)
        san = leaf2.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["localhost", "mail.localhost"])
        # A subset of the names is covered already.
        self.ensure(hostnames=("mail.localhost",), ips=())
        self.assertEqual(_load(cert_path)[0], leaf2)

    def test_no_tmp_files_left(self):
        self.ensure()
        self.assertFalse([n for n in os.listdir(self.dir) if ".tmp" in n])

    def test_needs_a_name(self):
        self.assertRaises(ValueError, self.ensure, hostnames=(), ips=())


class _Echo(LineReceiver):
    """Echoes lines; on STARTTLS switches to TLS first."""

    def connectionMade(self):
        self.lost = Deferred()
        self.factory.connections.append(self)
        self.sendLine(b"ready")

    def connectionLost(self, reason):
        self.lost.callback(None)

    def lineReceived(self, line):
        if line == b"STARTTLS":
            self.sendLine(b"go ahead")
            self.transport.startTLS(self.factory.tls)
            return
        self.sendLine(b"echo " + line)


def _client_context(ca_path):
    ctx = ssl.create_default_context(cafile=ca_path)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _readline(sock):
    buf = b""
    while not buf.endswith(b"\r\n"):
        c = sock.recv(1)
        if not c:
            raise EOFError(buf)
        buf += c
    return buf[:-2]


def _tls_client(port, ca_path, server_hostname, starttls=False, max_version=None):
    """Blocking client, run in a thread: connect, verify, echo one line."""
    ctx = _client_context(ca_path)
    if max_version is not None:
        ctx.maximum_version = max_version
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        sock = raw
        if starttls:
            assert _readline(raw) == b"ready"
            raw.sendall(b"STARTTLS\r\n")
            assert _readline(raw) == b"go ahead"
        with ctx.wrap_socket(sock, server_hostname=server_hostname) as tls:
            if not starttls:
                assert _readline(tls) == b"ready"
            tls.sendall(b"hello\r\n")
            line = _readline(tls)
            return line, tls.version(), tls.getpeercert()


class HandshakeTests(TestCase):
    def setUp(self):
        self.cert_path, self.key_path, self.ca_path = selfsigned.ensure_localserve_cert(
            self.mktemp()
        )
        self.tls = selfsigned.server_context_factory(self.cert_path, self.key_path)
        self.factory = Factory.forProtocol(_Echo)
        self.factory.tls = self.tls
        self.factory.connections = []
        # Wait until the server has seen every connection close, so the reactor is clean.
        self.addCleanup(lambda: gatherResults([c.lost for c in self.factory.connections]))

    @inlineCallbacks
    def listen(self, endpoint):
        port = yield endpoint.listen(self.factory)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @inlineCallbacks
    def test_tls_listener(self):
        port = yield self.listen(SSL4ServerEndpoint(reactor, 0, self.tls, interface="127.0.0.1"))
        line, version, peer = yield deferToThread(_tls_client, port, self.ca_path, "localhost")
        self.assertEqual(line, b"echo hello")
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        self.assertIn(("DNS", "localhost"), peer["subjectAltName"])

    @inlineCallbacks
    def test_ip_address_and_tls12(self):
        port = yield self.listen(
            wrapServerTLS(self.tls, TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
        )
        line, version, _ = yield deferToThread(
            _tls_client, port, self.ca_path, "127.0.0.1", max_version=ssl.TLSVersion.TLSv1_2
        )
        self.assertEqual((line, version), (b"echo hello", "TLSv1.2"))

    @inlineCallbacks
    def test_starttls(self):
        port = yield self.listen(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
        line, _, _ = yield deferToThread(
            _tls_client, port, self.ca_path, "localhost", starttls=True
        )
        self.assertEqual(line, b"echo hello")

    @inlineCallbacks
    def test_wrong_hostname_rejected(self):
        port = yield self.listen(SSL4ServerEndpoint(reactor, 0, self.tls, interface="127.0.0.1"))
        d = deferToThread(_tls_client, port, self.ca_path, "example.com")
        yield self.assertFailure(d, ssl.SSLCertVerificationError)

    def test_minimum_tls12(self):
        """TLS 1.0 and 1.1 are disabled in the server context (design notes §8)."""
        ctx = self.tls.getContext()
        options = ctx.set_options(0)  # ORs nothing in, returns the current options
        self.assertTrue(options & SSL.OP_NO_TLSv1)
        self.assertTrue(options & SSL.OP_NO_TLSv1_1)
        self.assertFalse(options & SSL.OP_NO_TLSv1_2)
        self.assertFalse(options & SSL.OP_NO_TLSv1_3)


