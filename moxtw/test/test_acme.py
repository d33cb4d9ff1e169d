"""ACME end to end against Debian's pebble (RFC 8555): a running server gets certificates
for its host name and mta-sts.<domain> with tls-alpn-01 (RFC 8737) and with http-01,
serves them by SNI (checked with Python's ssl client against pebble's root), renews them
when the clock passes RenewBefore, registers with external account binding, and retries
the nonces pebble rejects on purpose. Unit tests: the challenge certificate, the names and
challenge types of a listener, backoff with a task.Clock, the DNS records (CAA with the
account URI, TLSA for the current and next host key)."""

import datetime
import hashlib
import ipaddress
import json
import os
import shutil
import smtplib
import socket
import ssl
import sys
import time
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, protocol, reactor, task, threads
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from moxtw import metrics
from moxtw.admin import records
from moxtw.config import schema
from moxtw.config.load import validate_dynamic, validate_static
from moxtw.test import servertree
from moxtw.test.dnsserver import loopback_dns
from moxtw.tls import acme

PEBBLE = shutil.which("pebble")
HOST = "mail.example.org"
STS = "mta-sts.example.org"
EAB_KID = "kid-1"
EAB_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"

STATIC = """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.example.org"
[Postmaster]
Account = "a"
Mailbox = "Inbox"
[TLS.CA]
CertFiles = ["pebble-ca.pem"]
[ACME.pebble]
DirectoryURL = "https://127.0.0.1:{acme}/dir"
ContactEmail = "hostmaster@example.net"
Port = {alpn}
IssuerDomainName = "pebble.example"
{eab}
[Listeners.public]
IPs = ["127.0.0.1"]
[Listeners.public.TLS]
ACME = "pebble"
[Listeners.public.SMTP]
Enabled = true
Port = {smtp}
[Listeners.public.MTASTSHTTPS]
Enabled = true
Port = {https}
[Listeners.public.WebserverHTTP]
Enabled = {http_enabled}
Port = {http}
"""

DYNAMIC = """
[Domains."example.org"]
[Domains."example.org".MTASTS]
PolicyID = "20261207T000000"
Mode = "enforce"
MaxAge = "168h"
MX = ["mail.example.org"]
[Accounts.a]
Domain = "example.org"
[Accounts.a.Destinations."a@example.org"]
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _self_signed_ca(directory):
    """A CA and a certificate for 127.0.0.1 signed by it: pebble's HTTPS."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test pebble HTTPS CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    os.makedirs(directory, exist_ok=True)
    paths = {n: os.path.join(directory, n) for n in ("ca.pem", "cert.pem", "key.pem")}
    with open(paths["ca.pem"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert.pem"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key.pem"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths


class _Output(protocol.ProcessProtocol):
    def __init__(self):
        self.output = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(None)


class Pebble:
    """pebble on loopback with its own HTTPS CA; challenges validated against
    ``http_port``/``tls_port`` of the names ``dns`` resolves."""

    def __init__(self, testcase, directory, http_port, tls_port, dns_address, eab=False, nonce_reject=5):
        self.paths = _self_signed_ca(directory)
        self.port, self.mgmt = free_port(), free_port()
        conf = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt}",
            "certificate": self.paths["cert.pem"], "privateKey": self.paths["key.pem"],
            "httpPort": http_port, "tlsPort": tls_port, "ocspResponderURL": "",
            "externalAccountBindingRequired": eab,
        }}
        if eab:
            conf["pebble"]["externalAccountMACKeys"] = {EAB_KID: EAB_KEY}
        cfile = os.path.join(directory, "pebble.json")
        with open(cfile, "w") as f:
            json.dump(conf, f)
        env = {"PATH": os.environ.get("PATH", "/usr/bin"), "PEBBLE_VA_NOSLEEP": "1",
               "PEBBLE_WFE_NONCEREJECT": str(nonce_reject), "PEBBLE_AUTHZREUSE": "0"}
        self.proto = _Output()
        self.process = reactor.spawnProcess(self.proto, PEBBLE, [PEBBLE, "-config", cfile, "-dnsserver", dns_address],
                                            env=env, path=directory)
        testcase.addCleanup(self.stop)

    def stop(self):
        if self.process.pid is not None:
            self.process.signalProcess("KILL")
        return self.proto.ended

    @defer.inlineCallbacks
    def ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while b"ACME directory available" not in self.proto.output:
            if time.monotonic() > deadline or self.proto.ended.called:
                raise AssertionError("pebble did not start: " + self.proto.output.decode("utf-8", "replace"))
            yield task.deferLater(reactor, 0.05, lambda: None)

    def root(self):
        """pebble's issuing root (management interface /roots/0), PEM."""
        def get():
            ctx = ssl.create_default_context(cafile=self.paths["ca.pem"])
            with urllib.request.urlopen(f"https://127.0.0.1:{self.mgmt}/roots/0", context=ctx, timeout=10) as r:
                return r.read()
        return threads.deferToThread(get)

    def orders(self):
        return self.proto.output.count(b"/order-plz")


def served(port, server_name, cafile):
    """(serial, DNS names) of the certificate served for ``server_name``, verified against
    ``cafile`` with host name checks, as a client does."""
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            cert = x509.load_der_x509_certificate(s.getpeercert(True))
            return cert.serial_number, acme.cert_names(cert)


def starttls_names(port, server_name, cafile):
    """The names of the certificate SMTP STARTTLS gives for ``server_name``."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=10) as c:
        c._host = server_name  # smtplib sends its host as SNI
        c.starttls(context=ctx)
        return acme.cert_names(x509.load_der_x509_certificate(c.sock.getpeercert(True)))


@defer.inlineCallbacks
def wait_for(check, timeout=60, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        yield task.deferLater(reactor, interval, lambda: None)


class _PebbleCase(unittest.TestCase):
    timeout = 120
    eab = False
    nonce_reject = 5
    http01 = False

    @defer.inlineCallbacks
    def setUp(self):
        if PEBBLE is None:
            raise unittest.SkipTest("pebble is not installed (apt-get install pebble)")
        self.dir = os.path.abspath(self.mktemp())
        self.acme_errors = []

        def observe(event):
            if event.get("log_level") == LogLevel.error and "ACME" in str(event.get("log_format", "")):
                self.acme_errors.append(formatEvent(event))
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        # A failed order is retried after a second, not a minute (the backoff's growth is
        # UnitTests.test_backoff's); the failure is still reported below.
        self.patch(acme, "BACKOFF_FIRST", 1.0)
        self.https, self.http, self.smtp = free_port(), free_port(), free_port()
        self.dns = loopback_dns(self, {(HOST, "A"): ["127.0.0.1"], (STS, "A"): ["127.0.0.1"],
                                       ("evil.example.org", "A"): ["127.0.0.1"]})
        self.pebble = Pebble(self, os.path.join(self.dir, "pebble"), self.http, self.https, self.dns.address,
                             eab=self.eab, nonce_reject=self.nonce_reject)
        yield self.pebble.ready()
        os.makedirs(self.dir, exist_ok=True)
        shutil.copy(self.pebble.paths["ca.pem"], os.path.join(self.dir, "pebble-ca.pem"))
        eab = ""
        if self.eab:
            with open(os.path.join(self.dir, "eab.key"), "w") as f:
                f.write(EAB_KEY + "\n")
            eab = f'[ACME.pebble.ExternalAccountBinding]\nKeyID = "{EAB_KID}"\nKeyFile = "eab.key"\n'
        static = STATIC.format(acme=self.pebble.port, alpn=free_port() if self.http01 else self.https,
                               eab=eab, smtp=self.smtp, https=self.https, http=self.http,
                               http_enabled="true" if self.http01 else "false")
        self.cfg, _ = servertree.write_config(self.dir, static, DYNAMIC)
        self.root = yield servertree.start(self, self.cfg)
        self.manager = self.root.acme["pebble"]
        self.root_ca = os.path.join(self.dir, "pebble-root.pem")
        with open(self.root_ca, "wb") as f:
            f.write((yield self.pebble.root()))

    def served(self, name):
        return threads.deferToThread(served, self.https, name, self.root_ca)

    @defer.inlineCallbacks
    def issued(self):
        """Both names get certificates (ordered at start), served by SNI."""
        try:
            yield wait_for(lambda: self.manager.cert(HOST) and self.manager.cert(STS))
        except AssertionError:
            # Say why: the orders' failures and what pebble saw.
            raise AssertionError("no certificates: failures %r, errors %r; pebble said:\n%s" % (
                self.manager._failures, self.acme_errors, self.pebble.proto.output[-6000:].decode("utf-8", "replace")))
        if self.acme_errors:
            # Issued after a retry: say why the first order failed (CI shows stderr).
            sys.__stderr__.write(f"\nnote: {self.id()}: ACME order retried after: {self.acme_errors}\n")
        for name in (HOST, STS):
            serial, names = yield self.served(name)
            self.assertEqual(names, [name])
            self.assertEqual(serial, self.manager.cert(name).serial)
            stored = os.path.join(self.cfg.data_dir, "acme", "pebble", "certs", name + ".pem")
            self.assertTrue(os.path.exists(stored))
            self.assertEqual(os.stat(stored).st_mode & 0o777, 0o600)
        # Without SNI: the host name's certificate.
        self.assertEqual(self.manager.cert(HOST).names, [HOST])
        value = metrics.TLS_CERT_EXPIRY.labels(listener="public", name=HOST)._value.get()
        self.assertEqual(value, self.manager.cert(HOST).not_after)


class TLSALPN01Tests(_PebbleCase):
    @defer.inlineCallbacks
    def test_issue_serve_renew(self):
        yield self.issued()
        # Validated with tls-alpn-01 only (no WebserverHTTP on this listener).
        self.assertGreaterEqual(self.root.acme["pebble"].challenges.served["tls-alpn-01"], 2)
        self.assertEqual(self.root.acme["pebble"].challenges.served["http-01"], 0)
        # The host name's certificate has the generated host key (stable TLSA).
        keys = acme.host_key_paths(self.cfg.data_dir, self.cfg.path, self.cfg.static.Listeners["public"], HOST)
        host_key = acme.load_key(keys[0])
        pub = lambda k: k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.assertEqual(pub(self.manager.cert(HOST).chain[0].public_key()), pub(host_key.public_key()))
        self.assertTrue(os.path.exists(keys[1]))
        # Renewal: nothing is due now; past RenewBefore both are renewed, served at once.
        orders = self.pebble.orders()
        yield self.manager.check()
        self.assertEqual(self.pebble.orders(), orders)
        old = {n: self.manager.cert(n).serial for n in (HOST, STS)}
        later = self.manager.cert(HOST).not_after - self.cfg.static.ACME["pebble"].RenewBefore.total_seconds() + 60
        self.manager.now = lambda: later
        yield self.root.acme_renew._check()
        for name in (HOST, STS):
            self.assertNotEqual(self.manager.cert(name).serial, old[name])
            serial, _ = yield self.served(name)
            self.assertEqual(serial, self.manager.cert(name).serial)
        self.assertEqual(pub(self.manager.cert(HOST).chain[0].public_key()), pub(host_key.public_key()))
        # The CAA records name the account.
        uri = acme.account_uri(self.cfg.data_dir, "pebble")
        self.assertTrue(uri.startswith(f"https://127.0.0.1:{self.pebble.port}/"))
        recs, _ = records.domain_records(self.cfg.static, self.cfg.dynamic, self.cfg.path, "example.org",
                                         ips=["192.0.2.1"], data_dir=self.cfg.data_dir)
        caa = [r.value for r in recs if r.rdtype == "CAA"]
        self.assertIn(f'0 issue "pebble.example; accounturi={uri}; validationmethods=tls-alpn-01,http-01"', caa)

    @defer.inlineCallbacks
    def test_ca_down_keeps_serving(self):
        yield self.issued()
        serial = self.manager.cert(HOST).serial
        errors = metrics.ACME_ORDERS.labels(provider="pebble", result="error")._value.get()
        yield self.pebble.stop()
        later = self.manager.cert(HOST).not_after - self.cfg.static.ACME["pebble"].RenewBefore.total_seconds() + 60
        self.manager.now = lambda: later
        yield self.manager.check()
        # Logged, counted, retried later; the certificate in service stays.
        self.assertEqual(metrics.ACME_ORDERS.labels(provider="pebble", result="error")._value.get(), errors + 2)
        self.assertEqual(self.manager._failures[HOST][0], 1)
        self.assertIn(HOST, self.manager._retries)
        got, _ = yield self.served(HOST)
        self.assertEqual(got, serial)

    @defer.inlineCallbacks
    def test_unknown_sni_never_orders(self):
        yield self.issued()
        orders = self.pebble.orders()
        for name in ("evil.example.org", "x." + HOST, "MAIL.EXAMPLE.ORG.evil", "a" * 63 + ".example"):
            with self.assertRaises(ssl.SSLError):
                yield self.served(name)
        # The mail port gives the host name's certificate, and orders nothing either.
        names = yield threads.deferToThread(starttls_names, self.smtp, "evil.example.org", self.root_ca)
        self.assertEqual(names, [HOST])
        yield task.deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(self.pebble.orders(), orders)
        self.assertEqual(self.manager._pending, {})
        self.assertFalse(self.manager.allowed("evil.example.org"))
        yield self.assertFailure(self.manager.request("evil.example.org"), acme.NotAllowed)


class HTTP01Tests(_PebbleCase):
    http01 = True
    nonce_reject = 30  # many rejected nonces: all retried

    @defer.inlineCallbacks
    def test_issue_serve(self):
        before = acme._Network.bad_nonces
        yield self.issued()
        # Validated with http-01 only (ACME's Port is not one of the listener's).
        self.assertGreaterEqual(self.manager.challenges.served["http-01"], 2)
        self.assertEqual(self.manager.challenges.served["tls-alpn-01"], 0)
        self.assertGreater(acme._Network.bad_nonces, before)


    @defer.inlineCallbacks
    def test_on_demand_after_reload(self):
        """A name added to domains.toml is ordered when a client first asks for it."""
        yield self.issued()
        new = "imap.example.net"
        self.dns.add(new, "A", ["127.0.0.1"])
        with open(self.cfg.dynamic_path, "w") as f:
            f.write(DYNAMIC + f'[Domains."example.net"]\nClientSettingsDomain = "{new}"\n')
        self.assertTrue(self.root.watcher.check())
        self.assertIsNone(self.manager.cert(new))
        # The first client gets the interim self-signed certificate (not verifiable) and starts the order.
        with self.assertRaises(ssl.SSLCertVerificationError):
            yield self.served(new)
        yield wait_for(lambda: self.manager.cert(new))
        serial, names = yield self.served(new)
        self.assertEqual((serial, names), (self.manager.cert(new).serial, [new]))


class EABTests(_PebbleCase):
    eab = True

    @defer.inlineCallbacks
    def test_issue_with_eab(self):
        yield self.issued()
        self.assertIsNotNone(acme.account_uri(self.cfg.data_dir, "pebble"))


class UnitTests(unittest.SynchronousTestCase):
    def test_alpn_challenge_cert(self):
        # RFC 8737 3: SAN of the name alone, critical acmeIdentifier with the digest.
        cert, key = acme.alpn_challenge_cert("mail.example.org", "token.thumb")
        self.assertEqual(acme.cert_names(cert), ["mail.example.org"])
        ext = cert.extensions.get_extension_for_oid(acme.OID_ACME_IDENTIFIER)
        self.assertTrue(ext.critical)
        self.assertEqual(ext.value.value, b"\x04\x20" + hashlib.sha256(b"token.thumb").digest())

    def test_http01_resource(self):
        pending = acme.Challenges()
        pending.add("http-01", HOST, "tok", "tok.thumb")
        res = acme.ChallengeResource(pending)

        def get(path):
            req = DummyRequest(path.split(b"/")[1:])
            req.path = path
            body = res.render(req)
            return req.responseCode or 200, body

        self.assertEqual(get(b"/.well-known/acme-challenge/tok"), (200, b"tok.thumb"))
        # Unknown tokens, other paths, and tokens once withdrawn: 404.
        self.assertEqual(get(b"/.well-known/acme-challenge/other")[0], 404)
        self.assertEqual(get(b"/.well-known/acme-challenge/tok/x")[0], 404)
        self.assertEqual(get(b"/.well-known/acme-challenge/")[0], 404)
        pending.remove("http-01", HOST, "tok")
        self.assertEqual(get(b"/.well-known/acme-challenge/tok")[0], 404)

    def _static(self, extra=""):
        static = validate_static(STATIC.format(acme=1, alpn=443, eab="", smtp=25, https=443, http=80,
                                               http_enabled="true") + extra, "moxtw.toml")
        dynamic = validate_dynamic(DYNAMIC + '[Domains."example.net"]\nClientSettingsDomain = "mail.example.net"\n'
                                   '[Domains."off.example"]\nDisabled = true\nClientSettingsDomain = "x.off.example"\n',
                                   "domains.toml", static)
        return static, dynamic

    def test_names_and_types(self):
        static, dynamic = self._static()
        lst = static.Listeners["public"]
        self.assertEqual(list(acme.listener_names(static, dynamic, lst)), [HOST, STS, "mail.example.net"])
        self.assertEqual(acme.challenge_types(lst, static.ACME["pebble"]), ["tls-alpn-01", "http-01"])
        lst.WebserverHTTP.Enabled = False
        lst.MTASTSHTTPS.Port = 8443
        self.assertEqual(acme.challenge_types(lst, static.ACME["pebble"]), [])

    def test_backoff(self):
        clock = task.Clock()
        calls = []

        def run(f, *args):
            calls.append(args[0])
            return defer.fail(acme.ACMEError("CA down"))

        conf = schema.ACMEConfig(DirectoryURL="https://ca.example/dir", ContactEmail="a@example.net")
        m = acme.Manager("ca", conf, self.mktemp(), lambda p: p, acme.Challenges(), clock, run=run,
                         now=clock.seconds)
        m.add_site(acme.Site("public", lambda: [HOST], ["http-01"], HOST, []))
        self.failureResultOf(m.request(HOST), acme.ACMEError)
        self.assertEqual(calls, [HOST])
        # Backing off: no new order, not even when a handshake asks for the name.
        self.failureResultOf(m.request(HOST), acme.ACMEError)
        m.want(HOST)
        m.check()
        self.assertEqual(calls, [HOST])
        clock.advance(acme.BACKOFF_FIRST)
        self.assertEqual(calls, [HOST, HOST])
        clock.advance(acme.BACKOFF_FIRST)  # the second wait is twice as long
        self.assertEqual(len(calls), 2)
        clock.advance(acme.BACKOFF_FIRST)
        self.assertEqual(len(calls), 3)
        self.flushLoggedErrors()
        m.stop()

    def test_concurrent_requests_share_one_order(self):
        clock = task.Clock()
        orders = []

        def run(f, *args):
            orders.append(defer.Deferred())
            return orders[-1]

        conf = schema.ACMEConfig(DirectoryURL="https://ca.example/dir", ContactEmail="a@example.net")
        m = acme.Manager("ca", conf, self.mktemp(), lambda p: p, acme.Challenges(), clock, run=run,
                         now=clock.seconds)
        m.add_site(acme.Site("public", lambda: [HOST], ["http-01"], HOST, []))
        one, two = m.request(HOST), m.request(HOST)
        m.want(HOST)
        self.assertEqual(len(orders), 1)
        self.failureResultOf(m.request("other.example"), acme.NotAllowed)
        orders[0].errback(acme.ACMEError("rate limited"))
        # Both callers see the failure; neither consumes it for the other.
        self.failureResultOf(one, acme.ACMEError)
        self.failureResultOf(two, acme.ACMEError)
        self.assertEqual(m._pending, {})
        m.stop()

    def test_records_tlsa_current_and_next(self):
        static, dynamic = self._static()
        data = self.mktemp()
        lst = static.Listeners["public"]
        paths = acme.host_key_paths(data, lambda p: p, lst, HOST)
        acme.ensure_host_keys(paths)
        recs = records.host_records(static, lambda p: p, ips=["192.0.2.1"], data_dir=data)
        tlsa = [r.value for r in recs if r.rdtype == "TLSA"]
        want = []
        for p in paths:
            spki = acme.load_key(p).public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            want.append(hashlib.sha256(spki).digest())
        self.assertEqual([t.data for t in tlsa], want)
        self.assertEqual([(t.usage, t.selector, t.mtype) for t in tlsa], [(3, 1, 1), (3, 1, 1)])
        self.assertEqual([r.standby for r in recs if r.rdtype == "TLSA"], [False, True])
        text = records.zone_text(recs)
        self.assertIn(f"_25._tcp.{HOST}. 300 IN TLSA 3 1 1 {want[1].hex()}", text)
        # No account yet: CAA for the issuer with the validation methods.
        recs, _ = records.domain_records(static, dynamic, lambda p: p, "example.org", ips=["192.0.2.1"],
                                         data_dir=data)
        self.assertIn('0 issue "pebble.example; validationmethods=tls-alpn-01,http-01"',
                      [r.value for r in recs if r.rdtype == "CAA"])
