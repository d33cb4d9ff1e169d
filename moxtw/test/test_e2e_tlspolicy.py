"""Outgoing TLS policies end to end: two moxtw instances, a real DNS server on loopback
(with the AD bit for DANE), B serving its MTA-STS policy on its HTTPS listener. A
delivers to B under MTA-STS enforce and under DANE, refuses when STARTTLS is stripped by
a proxy in between, and sends B a TLS report that B receives and parses.
"""

import hashlib
import os
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from moxtw.dns import TLSA
from moxtw.test import servertree
from moxtw.test.dnsserver import loopback_dns
from moxtw.test.test_e2e_outbound import PASSWORD, allow_test_settings, message, wait_for
from moxtw.test.test_localserve import free_offset
from moxtw.tls import selfsigned

STATIC = """
DataDir = "data"
LogLevel = "info"
Hostname = "mail.{domain}"
TestDirectDeliveryPort = {peer_port}
TestMTASTSPort = {peer_https}
[DNS]
Servers = ["{dns}"]
TrustAD = true
{tls}
[Postmaster]
Account = "admin"
Mailbox = "Postmaster"
[Listeners.main]
IPs = ["127.0.0.1"]
[Listeners.main.TLS]
KeyCerts = [{{CertFile = "tls/mail.crt", KeyFile = "tls/mail.key"}},
            {{CertFile = "tls/sts.crt", KeyFile = "tls/sts.key"}}]
[Listeners.main.SMTP]
Enabled = true
Port = {smtp}
[Listeners.main.Submission]
Enabled = true
Port = {submission}
NoRequireSTARTTLS = true
[Listeners.main.MTASTSHTTPS]
Enabled = true
Port = {https}
"""

DYNAMIC = """
[Domains."{domain}"]
[Domains."{domain}".MTASTS]
PolicyID = "1"
Mode = "enforce"
MaxAge = "24h"
MX = ["mail.{domain}"]
[Domains."{domain}".TLSRPT]
Localpart = "tls-reports"
Account = "{user}"
Mailbox = "TLSRPT"
[Accounts.admin]
Domain = "{domain}"
[Accounts.admin.Destinations."postmaster@{domain}"]
[Accounts.{user}]
Domain = "{domain}"
[Accounts.{user}.Destinations."{user}@{domain}"]
"""


class Instance:
    def __init__(self, testcase, domain, user):
        self.testcase, self.domain, self.user = testcase, domain, user
        self.dir = os.path.abspath(testcase.mktemp())
        off = free_offset()
        self.ports = {"smtp": 25 + off, "submission": 587 + off, "https": 443 + off}
        tls = os.path.join(self.dir, "tls")
        self.mail_cert, _, self.ca = selfsigned.ensure_localserve_cert(
            tls, hostnames=[f"mail.{domain}"], ips=["127.0.0.1"], leaf_name="mail")
        selfsigned.ensure_localserve_cert(tls, hostnames=[f"mta-sts.{domain}"], ips=[], leaf_name="sts")

    def spki_sha256(self):
        with open(self.mail_cert, "rb") as f:
            cert = x509.load_pem_x509_certificates(f.read())[0]
        spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(spki).digest()

    def dns_records(self):
        d = self.domain
        return {
            (d, "MX"): [(10, f"mail.{d}")],
            (f"mail.{d}", "A"): ["127.0.0.1"],
            (f"mta-sts.{d}", "A"): ["127.0.0.1"],
            (d, "TXT"): ["v=spf1 ip4:127.0.0.1 -all"],
            (f"_smtp._tls.{d}", "TXT"): [f"v=TLSRPTv1; rua=mailto:tls-reports@{d}"],
        }

    @defer.inlineCallbacks
    def start(self, dns_address, peer_port, peer_https, trust_ca=None):
        tls = ""
        if trust_ca:
            tls = f'[TLS.CA]\nCertFiles = ["{trust_ca}"]\n'
        cfg, _ = servertree.write_config(
            self.dir,
            STATIC.format(domain=self.domain, dns=dns_address, peer_port=peer_port, peer_https=peer_https,
                          tls=tls, **self.ports),
            DYNAMIC.format(domain=self.domain, user=self.user),
        )
        self.root = yield servertree.start(self.testcase, cfg)
        acc = yield self.root.store.open_account(self.user)
        yield acc.set_password(PASSWORD)

    def submit(self, rcpt, subject):
        import smtplib
        import ssl

        from twisted.internet import threads

        frm = f"{self.user}@{self.domain}"

        def send():
            with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=30) as s:
                s.ehlo("client.example")
                s.starttls(context=ssl.create_default_context(cafile=self.ca))
                s.login(frm, PASSWORD)
                return s.sendmail(frm, [rcpt], message(frm, rcpt, subject))

        return threads.deferToThread(send)

    @defer.inlineCallbacks
    def settled(self):
        yield self.root.queue_service.kick()
        yield self.root.queue_service.idle()

    @defer.inlineCallbacks
    def subjects(self, mailbox="Inbox"):
        acc = yield self.root.store.open_account(self.user)
        mb = yield acc.mailbox(mailbox)
        if mb is None:
            return []
        msgs = yield acc.messages(mb.id)
        return [m.subject for m in msgs]


class StrippingProxy(protocol.Protocol):
    """Between A and B: overwrites STARTTLS in B's replies, as a downgrade attacker does."""

    def connectionMade(self):
        self.transport.pauseProducing()
        self.buffer = []
        client = protocol.ClientCreator(reactor, _Back, self)
        client.connectTCP("127.0.0.1", self.factory.target).addCallback(self._connected)

    def _connected(self, back):
        self.back = back
        self.transport.resumeProducing()

    def dataReceived(self, data):
        self.back.transport.write(data)

    def connectionLost(self, reason):
        if getattr(self, "back", None) is not None:
            self.back.transport.loseConnection()


class _Back(protocol.Protocol):
    def __init__(self, front):
        self.front = front

    def dataReceived(self, data):
        self.front.transport.write(data.replace(b"STARTTLS", b"XXXXXXXX"))

    def connectionLost(self, reason):
        self.front.transport.loseConnection()


class TLSPolicyE2ETests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def start(self, records_extra=None, trust=True, proxy=False):
        allow_test_settings(self)
        self.a = Instance(self, "a.example", "alice")
        self.b = Instance(self, "b.example", "bob")
        records = {**self.a.dns_records(), **self.b.dns_records()}
        records.update(records_extra or {})
        # TTL 0: changes to the zone are seen at once (no caching).
        self.dns = yield loopback_dns(self, records, ad=True, ttl=0)
        peer = self.b.ports["smtp"]
        if proxy:
            f = protocol.Factory.forProtocol(StrippingProxy)
            f.target = peer
            port = reactor.listenTCP(0, f, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            peer = port.getHost().port
        yield self.a.start(self.dns.address, peer, self.b.ports["https"], trust_ca=self.b.ca if trust else None)
        yield self.b.start(self.dns.address, self.a.ports["smtp"], self.a.ports["https"], trust_ca=self.a.ca)

    def sts_record(self):
        return {("_mta-sts.b.example", "TXT"): ["v=STSv1; id=1"]}

    @defer.inlineCallbacks
    def test_mtasts_enforce_and_tls_report_received(self):
        # A second MX, not in B's policy: skipped under enforce (and reported).
        extra = self.sts_record()
        extra[("b.example", "MX")] = [(5, "rogue.b.example"), (10, "mail.b.example")]
        extra[("rogue.b.example", "A")] = ["127.0.0.1"]
        yield self.start(extra)
        yield self.a.submit("bob@b.example", "under policy")
        yield self.a.settled()
        self.assertEqual((yield self.a.root.queue.list()), [])
        self.assertEqual((yield wait_for(self.b.subjects)), ["under policy"])
        [row] = yield self.a.root.mtasts.list()
        self.assertEqual((row["domain"], row["mode"], row["policy_id"]), ("b.example", "enforce", "1"))
        # The next day A reports to B's _smtp._tls address; B stores the parsed report.
        tomorrow = datetime.now(timezone.utc) + timedelta(days=1)
        n = yield defer.Deferred.fromCoroutine(self.a.root.reports.send_tls_due(now=tomorrow))
        self.assertEqual(n, 1)
        yield self.a.settled()
        self.assertEqual((yield wait_for(lambda: self.b.subjects("TLSRPT")))[0][:25], "Report Domain: b.example ")
        stored = yield wait_for(lambda: self.b.root.reports.tlsrpt.list())
        [s] = stored
        report = s.report
        self.assertEqual(report.organization_name, "mail.a.example")
        [pol] = [p for p in report.policies if p.policy.domain == "b.example"]
        self.assertEqual(pol.policy.type, "sts")
        self.assertEqual(pol.summary.total_successful_session_count, 1)
        self.assertEqual(pol.summary.total_failure_session_count, 1)
        self.assertEqual([(d.result_type, d.receiving_mx_hostname) for d in pol.failure_details],
                         [("validation-failure", "rogue.b.example")])

    @defer.inlineCallbacks
    def test_dane_delivers_without_ca_and_mismatch_refused(self):
        # A does not trust B's CA: only DANE (TLSA 3 1 1 on B's key) verifies B.
        yield self.start(trust=False)
        self.dns.add("_25._tcp.mail.b.example", "TLSA", [TLSA(3, 1, 1, self.b.spki_sha256())])
        yield self.a.submit("bob@b.example", "with dane")
        yield self.a.settled()
        self.assertEqual((yield self.a.root.queue.list()), [])
        self.assertEqual((yield wait_for(self.b.subjects)), ["with dane"])
        # A TLSA record that does not match: not delivered, retried later.
        self.dns.set({**self.a.dns_records(), **self.b.dns_records(),
                      ("_25._tcp.mail.b.example", "TLSA"): [TLSA(3, 1, 1, b"\x00" * 32)]})
        yield self.a.submit("bob@b.example", "mismatch")
        yield self.a.settled()
        [entry] = yield self.a.root.queue.list()
        self.assertIn("TLSA", entry.last_error)
        self.assertEqual((yield self.b.subjects()), ["with dane"])

    @defer.inlineCallbacks
    def test_stripped_starttls_refused_under_dane(self):
        yield self.start(trust=False, proxy=True)
        self.dns.add("_25._tcp.mail.b.example", "TLSA", [TLSA(3, 1, 1, self.b.spki_sha256())])
        yield self.a.submit("bob@b.example", "downgraded")
        yield self.a.settled()
        [entry] = yield self.a.root.queue.list()
        self.assertIn("STARTTLS", entry.last_error)
        self.assertEqual((yield self.b.subjects()), [])
