"""Outgoing TLS policies: MTA-STS (RFC 8461) fetched from a loopback HTTPS server and
cached, DANE (RFC 7672) against TLSA records, the results recorded for TLS reports
(RFC 8460), over real loopback connections to an SMTP sink with STARTTLS."""

import gzip
import hashlib
import json
from datetime import datetime, timedelta, timezone

from twisted.application import internet
from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.web import resource, server

from moxtw import dane
from moxtw.dns import TLSA, NoRecords, TemporaryFailure
from moxtw.mtasts.cache import PolicyCache, RefreshService
from moxtw.mtasts.client import PolicyError, RecordError, parse_policy, parse_record
from moxtw.reports.tls import parse as tlsparse
from moxtw.reports.tls.received import ReportDB
from moxtw.reports.tls.results import results_for
from moxtw.test import testca
from moxtw.test.test_outbound import OutboundTestBase
from moxtw.tls.client import _FilesTrustRoot

POLICY = "version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n"


class PolicyParsingTests(unittest.TestCase):
    def test_record(self):
        self.assertEqual(parse_record("v=STSv1; id=20240101T000000"), "20240101T000000")
        self.assertEqual(parse_record("v=STSv1;id=abc;"), "abc")
        for bad in ("v=STSv2; id=1", "id=1", "v=STSv1", "v=STSv1; id=", "v=STSv1; id=a-b",
                    "v=STSv1; id=" + "a" * 33, "v=STSv1; junk", "v=STSv1; id=\u00e9"):
            self.assertRaises(RecordError, parse_record, bad)

    def test_policy(self):
        p = parse_policy("version: STSv1\nmode: enforce\nmx: mx1.example.net\nmx: *.example.org\nmax_age: 604800\n")
        self.assertEqual((p.mode, p.mx, p.max_age), ("enforce", ("mx1.example.net", "*.example.org"), 604800))
        self.assertTrue(p.allows("mx1.example.net"))
        self.assertTrue(p.allows("MX.example.org."))
        # RFC 8461 4.1: a wildcard covers exactly one label.
        self.assertFalse(p.allows("a.b.example.org"))
        self.assertFalse(p.allows("example.org"))
        self.assertFalse(p.allows("mx2.example.net"))
        # max_age is capped at about a year (RFC 8461 3.2).
        self.assertEqual(parse_policy("version: STSv1\nmode: none\nmax_age: 9999999999\n").max_age, 31557600)

    def test_hostile_policies(self):
        for bad in ("", "version: STSv2\nmode: enforce\nmx: a\nmax_age: 1", "version: STSv1\nmode: always\nmx: a\nmax_age: 1",
                    "version: STSv1\nmode: enforce\nmax_age: 1", "version: STSv1\nmode: enforce\nmx: a\nmax_age: -1",
                    "version: STSv1\nmode: enforce\nmx: a\nmax_age: 1e5", "garbage", "\x00" * 100,
                    "version: STSv1\nmode: enforce\nmx: bad..name\nmax_age: 1"):
            with self.assertRaises(PolicyError) as cm:
                parse_policy(bad)
            self.assertEqual(cm.exception.result, "sts-policy-invalid")


class DANETests(unittest.TestCase):
    def setUp(self):
        self.ca = testca.make_ca()
        self.leaf = testca.make_leaf(["mx.example.net"], self.ca)
        self.selfsigned = testca.make_leaf(["whatever.invalid"])

    def host(self, *records):
        return dane.DANEHost("mx.example.net", "mx.example.net", records, False, ("mx.example.net",))

    def test_usable(self):
        self.assertTrue(dane.usable(TLSA(3, 1, 1, b"x" * 32)))
        self.assertTrue(dane.usable(TLSA(2, 0, 2, b"x" * 64)))
        self.assertTrue(dane.usable(TLSA(3, 0, 0, b"der")))
        # RFC 7672 3.1.3: PKIX usages are not for SMTP; wrong digest sizes are unusable.
        for r in (TLSA(1, 1, 1, b"x" * 32), TLSA(0, 0, 1, b"x" * 32), TLSA(3, 1, 1, b"x" * 31),
                  TLSA(3, 2, 1, b"x" * 32), TLSA(3, 1, 3, b"x" * 32), TLSA(3, 0, 0, b"")):
            self.assertFalse(dane.usable(r), r)

    def test_dane_ee(self):
        leaf = self.selfsigned.cert
        for rec in (TLSA(3, 1, 1, hashlib.sha256(testca.spki(leaf)).digest()),
                    TLSA(3, 0, 1, hashlib.sha256(testca.der(leaf)).digest()),
                    TLSA(3, 1, 2, hashlib.sha512(testca.spki(leaf)).digest()),
                    TLSA(3, 0, 0, testca.der(leaf))):
            self.assertEqual(dane.verify_chain([leaf], self.host(rec)), (True, "DANE-EE match"))
        other = TLSA(3, 1, 1, hashlib.sha256(testca.spki(self.leaf.cert)).digest())
        self.assertFalse(dane.verify_chain([leaf], self.host(other))[0])
        self.assertFalse(dane.verify_chain([], self.host(other))[0])

    def test_dane_ta(self):
        rec = TLSA(2, 1, 1, hashlib.sha256(testca.spki(self.ca.cert)).digest())
        self.assertEqual(dane.verify_chain([self.leaf.cert, self.ca.cert], self.host(rec)), (True, "DANE-TA match"))
        # The anchor must be presented (or the chain cannot be built) ...
        self.assertFalse(dane.verify_chain([self.leaf.cert], self.host(rec))[0])
        # ... the leaf must carry the host's name ...
        wrong = testca.make_leaf(["other.example.net"], self.ca)
        ok, reason = dane.verify_chain([wrong.cert, self.ca.cert], self.host(rec))
        self.assertFalse(ok)
        self.assertIn("not for", reason)
        # ... and be signed by the anchor, not merely presented beside it.
        rogue = testca.make_leaf(["mx.example.net"], testca.make_ca("rogue"))
        self.assertFalse(dane.verify_chain([rogue.cert, self.ca.cert], self.host(rec))[0])
        # An intermediate between leaf and anchor.
        inter = testca.make_ca("intermediate", issuer=self.ca)
        leaf2 = testca.make_leaf(["mx.example.net"], inter)
        self.assertTrue(dane.verify_chain([leaf2.cert, inter.cert, self.ca.cert], self.host(rec))[0])


class PolicyServer(resource.Resource):
    """A loopback HTTPS server for mta-sts.<domain>, answering as told."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.body = b""
        self.status = 200
        self.ctype = b"text/plain"
        self.headers = {}
        self.requests = []

    def render_GET(self, request):
        self.requests.append((request.getHeader("host"), request.path))
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", self.ctype)
        for k, v in self.headers.items():
            request.setHeader(k, v)
        return self.body


class PolicyTestBase(OutboundTestBase):
    """Outbound with a PolicyCache fetching from a loopback HTTPS server, CA-signed
    certificates, and TLS results collected in ``self.results``."""

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.ca = testca.make_ca()
        self.ca_path = testca.write_ca(self.mktemp(), self.ca)
        self.trust = _FilesTrustRoot([self.ca_path], False)
        self.web = PolicyServer()
        web_leaf = testca.make_leaf(["mta-sts.example.net"], self.ca)
        port = reactor.listenSSL(0, server.Site(self.web), testca.server_options(web_leaf), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.resolver.add("mta-sts.example.net", "A", ["127.0.0.1"])
        self.clock = task.Clock()
        self.clock.advance(1_800_000_000)
        self.cache = PolicyCache(self.mktemp(), self.resolver, reactor=reactor, clock=self.clock, trust=self.trust,
                                 https_port=port.getHost().port)
        yield self.cache.open()
        self.addCleanup(self.cache.close)
        self.results = []
        static, _ = self.config
        from types import SimpleNamespace
        static.TLS = SimpleNamespace(CA=SimpleNamespace(CertFiles=[self.ca_path], AdditionalToSystem=False))

    def outbound(self, **kw):
        kw.setdefault("sts", self.cache)
        kw.setdefault("tls_results", lambda attempt: self.results.extend(results_for(attempt)))
        return super().outbound(**kw)

    def publish(self, mode="enforce", mx="mx.example.net", policy_id="1"):
        self.resolver.add("_mta-sts.example.net", "TXT", [f"v=STSv1; id={policy_id}"])
        self.web.body = POLICY.format(mode=mode, mx=mx).encode()

    def tls_sink(self, ip, names=("mx.example.net",), issuer="ca", **kw):
        issuer = self.ca if issuer == "ca" else issuer
        leaf = testca.make_leaf(list(names), issuer)
        factory = self.sink(ip, tls=testca.server_options(leaf, [self.ca] if issuer is self.ca else []), **kw)
        factory.leaf = leaf
        return factory

    @defer.inlineCallbacks
    def deliver(self, **kw):
        seen = {e.id for e in (yield self.queue.list())}
        entries = yield self.entries(["x@example.net"], **kw)
        [r] = yield self.outbound().deliver_group([e for e in entries if e.id not in seen])
        return r

    def result_types(self):
        return [(r.policy["policy-type"], r.ok, r.result_type) for r in self.results if not r.is_host]


class MTASTSDeliveryTests(PolicyTestBase):
    @defer.inlineCallbacks
    def test_enforce_matching_mx_verified_tls(self):
        self.publish()
        sink = self.tls_sink("192.0.2.10")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        r = yield self.deliver()
        self.assertTrue(r.ok, r.error)
        self.assertTrue(sink.transactions[0].tls)
        self.assertEqual(self.result_types(), [("sts", True, "")])
        self.assertEqual(self.results[0].policy["mx-host"], ["mx.example.net"])
        self.assertEqual(len(self.web.requests), 1)
        self.assertEqual(self.web.requests[0], ("mta-sts.example.net", b"/.well-known/mta-sts.txt"))

    @defer.inlineCallbacks
    def test_enforce_mx_not_in_policy_not_used(self):
        self.publish(mx="other.example.net")
        sink = self.tls_sink("192.0.2.10")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        r = yield self.deliver()
        self.assertEqual((r.ok, r.permanent), (False, False))
        self.assertIn("not allowed by the MTA-STS policy", r.error)
        self.assertEqual(sink.connections, 0)
        self.assertEqual(self.result_types(), [("sts", False, "validation-failure")])

    @defer.inlineCallbacks
    def test_enforce_wrong_certificate_refused(self):
        self.publish()
        sink = self.tls_sink("192.0.2.10", names=["other.example.net"])
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        r = yield self.deliver()
        self.assertEqual((r.ok, r.permanent), (False, False))
        self.assertIn("certificate is not for mx.example.net", r.error)
        self.assertEqual(sink.transactions, [])
        self.assertEqual(self.result_types(), [("sts", False, "certificate-host-mismatch")])

    @defer.inlineCallbacks
    def test_enforce_untrusted_and_expired(self):
        self.publish()
        self.tls_sink("192.0.2.10", issuer=testca.make_ca("unknown"))
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        r = yield self.deliver()
        self.assertFalse(r.ok)
        self.assertEqual(self.result_types(), [("sts", False, "certificate-not-trusted")])

    @defer.inlineCallbacks
    def test_enforce_starttls_stripped(self):
        # A man in the middle removing STARTTLS from EHLO: refused under enforce.
        self.publish()
        sink = self.tls_sink("192.0.2.10", offer_starttls=False)
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        r = yield self.deliver()
        self.assertEqual((r.ok, r.permanent), (False, False))
        self.assertIn("STARTTLS", r.error)
        self.assertEqual(sink.transactions, [])
        self.assertEqual(self.result_types(), [("sts", False, "starttls-not-supported")])

    @defer.inlineCallbacks
    def test_testing_mode_delivers_and_reports(self):
        self.publish(mode="testing")
        sink = self.tls_sink("192.0.2.10", names=["other.example.net"])
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        r = yield self.deliver()
        self.assertTrue(r.ok, r.error)
        self.assertEqual(len(sink.transactions), 1)
        self.assertEqual(self.result_types(), [("sts", False, "certificate-host-mismatch")])

    @defer.inlineCallbacks
    def test_tls_required_no_ignores_policy(self):
        # RFC 8689 5: "TLS-Required: No" (require_tls False) delivers despite the policy.
        self.publish()
        sink = self.tls_sink("192.0.2.10", names=["other.example.net"])
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        r = yield self.deliver(requiretls=False)
        self.assertTrue(r.ok, r.error)
        self.assertEqual(len(sink.transactions), 1)
        self.assertEqual(self.web.requests, [])

    @defer.inlineCallbacks
    def test_no_policy(self):
        sink = self.tls_sink("192.0.2.10", names=["other.example.net"])
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        r = yield self.deliver()
        self.assertTrue(r.ok, r.error)
        self.assertTrue(sink.transactions[0].tls)
        self.assertEqual(self.result_types(), [("no-policy-found", True, "")])


class PolicyCacheTests(PolicyTestBase):
    @defer.inlineCallbacks
    def test_cached_refetched_on_new_id_kept_when_record_or_fetch_fails(self):
        self.publish(policy_id="1")
        got = yield defer.Deferred.fromCoroutine(self.cache.get("example.net"))
        self.assertEqual((got.policy.mode, got.cached, got.policy_id), ("enforce", False, "1"))
        got = yield defer.Deferred.fromCoroutine(self.cache.get("example.net"))
        self.assertTrue(got.cached)
        self.assertEqual(len(self.web.requests), 1)
        # A new id: fetched again.
        self.publish(mode="testing", policy_id="2")
        got = yield defer.Deferred.fromCoroutine(self.cache.get("example.net"))
        self.assertEqual((got.policy.mode, got.cached), ("testing", False))
        # The record disappears (an attacker blocking DNS): the cached policy stays.
        self.resolver.add("_mta-sts.example.net", "TXT", TemporaryFailure)
        got = yield defer.Deferred.fromCoroutine(self.cache.get("example.net"))
        self.assertEqual((got.policy.mode, got.cached), ("testing", True))
        self.assertIsInstance(got.error, RecordError)
        # A new id but the fetch fails: the cached policy stays, the error is reported.
        self.resolver.add("_mta-sts.example.net", "TXT", ["v=STSv1; id=3"])
        self.web.status = 500
        got = yield defer.Deferred.fromCoroutine(self.cache.get("example.net"))
        self.assertEqual((got.policy.mode, got.cached), ("testing", True))
        self.assertEqual(got.error.result, "sts-policy-fetch-error")
        # Once max_age has passed, the cached policy no longer counts.
        self.clock.advance(86401)
        got = yield defer.Deferred.fromCoroutine(self.cache.get("example.net"))
        self.assertIsNone(got.policy)

    @defer.inlineCallbacks
    def test_hostile_policy_servers(self):
        self.publish()
        cases = [
            (dict(status=302, headers={b"location": b"https://evil.example/"}), "sts-policy-fetch-error"),
            (dict(ctype=b"text/html"), "sts-policy-invalid"),
            (dict(body=b"version: STSv1\r\nmode: enforce\r\n" + b"mx: a.example\r\n" * 5000), "sts-policy-invalid"),
            (dict(body=b"\xff\xfe garbage"), "sts-policy-invalid"),
            (dict(body=b"version: STSv1\r\nmode: enforce\r\nmax_age: 1\r\n"), "sts-policy-invalid"),
        ]
        for changes, result in cases:
            self.web.status, self.web.ctype, self.web.headers = 200, b"text/plain", {}
            self.publish()
            for k, v in changes.items():
                setattr(self.web, k, v)
            with self.assertRaises(PolicyError) as cm:
                yield defer.Deferred.fromCoroutine(self.cache.fetch("example.net"))
            self.assertEqual(cm.exception.result, result, changes)

    @defer.inlineCallbacks
    def test_untrusted_policy_host(self):
        self.publish()
        self.cache.trust = _FilesTrustRoot([testca.write_ca(self.mktemp(), testca.make_ca("other"))], False)
        with self.assertRaises(PolicyError) as cm:
            yield defer.Deferred.fromCoroutine(self.cache.fetch("example.net"))
        self.assertEqual(cm.exception.result, "sts-webpki-invalid")

    @defer.inlineCallbacks
    def test_refresh_service_on_clock(self):
        self.publish(policy_id="1")
        yield defer.Deferred.fromCoroutine(self.cache.get("example.net"))
        self.assertEqual(len(self.web.requests), 1)
        svc = RefreshService(self.cache, clock=self.clock)
        svc.startService()
        # Stop the timer only: the test's cleanup closes the cache.
        self.addCleanup(lambda: internet.TimerService.stopService(svc))
        # The first run at start finds nothing due (just fetched); wait until it is done.
        for _ in range(500):
            if svc._loop.call is not None:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.publish(mode="testing", policy_id="2")
        self.clock.advance(86400)
        for _ in range(500):
            rows = yield self.cache.list()
            if rows and rows[0]["mode"] == "testing":
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual((rows[0]["mode"], rows[0]["policy_id"]), ("testing", "2"))
        self.assertEqual(rows[0]["valid_end"], self.clock.seconds() + 86400)
        self.assertEqual(len(self.web.requests), 2)


class DANEDeliveryTests(PolicyTestBase):
    def dane_zone(self, *records, authentic=True):
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        self.resolver.add("_25._tcp.mx.example.net", "TLSA", list(records))
        self.resolver.authentic = authentic

    def ee(self, cert, selector=1):
        data = testca.spki(cert) if selector == 1 else testca.der(cert)
        return TLSA(3, selector, 1, hashlib.sha256(data).digest())

    @defer.inlineCallbacks
    def test_dane_ee_spki_and_cert(self):
        for selector in (1, 0):
            self.results.clear()
            sink = self.tls_sink("192.0.2.10", names=["not-the-mx.example"], issuer=None)
            self.dane_zone(self.ee(sink.leaf.cert, selector))
            r = yield self.deliver()
            self.assertTrue(r.ok, r.error)
            self.assertTrue(sink.transactions[-1].tls)
            host = [x for x in self.results if x.is_host]
            self.assertEqual([(x.policy_domain, x.policy["policy-type"], x.ok) for x in host],
                             [("mx.example.net", "tlsa", True)])

    @defer.inlineCallbacks
    def test_dane_ta_with_chain(self):
        sink = self.tls_sink("192.0.2.10")
        self.dane_zone(TLSA(2, 1, 1, hashlib.sha256(testca.spki(self.ca.cert)).digest()))
        # The CA is not trusted for PKIX here: only DANE can make this work.
        static, _ = self.config
        static.TLS = None
        r = yield self.deliver()
        self.assertTrue(r.ok, r.error)
        self.assertEqual(len(sink.transactions), 1)

    @defer.inlineCallbacks
    def test_dane_mismatch_refused(self):
        sink = self.tls_sink("192.0.2.10")
        self.dane_zone(TLSA(3, 1, 1, b"\x01" * 32))
        r = yield self.deliver()
        self.assertEqual((r.ok, r.permanent), (False, False))
        self.assertEqual(sink.transactions, [])
        self.assertEqual([(x.is_host, x.result_type) for x in self.results],
                         [(False, "validation-failure"), (True, "validation-failure")])

    @defer.inlineCallbacks
    def test_tlsa_servfail_temporary(self):
        sink = self.tls_sink("192.0.2.10")
        self.dane_zone()
        self.resolver.add("_25._tcp.mx.example.net", "TLSA", TemporaryFailure)
        r = yield self.deliver()
        self.assertEqual((r.ok, r.permanent), (False, False))
        self.assertIn("TLSA lookup", r.error)
        self.assertEqual(sink.connections, 0)
        self.assertEqual([x.result_type for x in self.results], ["dnssec-invalid", "dnssec-invalid"])

    @defer.inlineCallbacks
    def test_not_authentic_no_dane(self):
        # Without DNSSEC the TLSA records mean nothing (RFC 7672 2.2): opportunistic.
        sink = self.tls_sink("192.0.2.10")
        self.dane_zone(TLSA(3, 1, 1, b"\x01" * 32), authentic=False)
        r = yield self.deliver()
        self.assertTrue(r.ok, r.error)
        self.assertEqual(len(sink.transactions), 1)

    @defer.inlineCallbacks
    def test_dane_starttls_stripped(self):
        sink = self.tls_sink("192.0.2.10", offer_starttls=False)
        self.dane_zone(self.ee(testca.make_leaf(["x"]).cert))
        r = yield self.deliver()
        self.assertFalse(r.ok)
        self.assertEqual(sink.transactions, [])
        self.assertEqual([x.result_type for x in self.results], ["dane-required", "dane-required"])

    @defer.inlineCallbacks
    def test_dane_over_mtasts(self):
        # The MTA-STS policy does not list the host, but DANE applies and wins (RFC 8461 2).
        self.publish(mx="elsewhere.example.net")
        sink = self.tls_sink("192.0.2.10", issuer=None)
        self.dane_zone(self.ee(sink.leaf.cert))
        r = yield self.deliver()
        self.assertTrue(r.ok, r.error)
        self.assertEqual(len(sink.transactions), 1)

    @defer.inlineCallbacks
    def test_only_unusable_records_tls_mandatory(self):
        # RFC 7672 3.1: authentic TLSA records none of which is usable: TLS without
        # authentication, but TLS.
        sink = self.tls_sink("192.0.2.10", issuer=testca.make_ca("unknown"))
        self.dane_zone(TLSA(1, 1, 1, b"\x01" * 32))
        r = yield self.deliver()
        self.assertTrue(r.ok, r.error)
        self.assertTrue(sink.transactions[0].tls)
        stripped = self.tls_sink("192.0.2.10", offer_starttls=False)
        r = yield self.deliver()
        self.assertFalse(r.ok)
        self.assertEqual(stripped.transactions, [])


class TLSReportTests(PolicyTestBase):
    @defer.inlineCallbacks
    def test_results_aggregated_and_reported(self):
        from moxtw.reports.service import ReportsService
        from types import SimpleNamespace

        self.publish()
        good = self.tls_sink("192.0.2.10")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        for _ in range(3):
            r = yield self.deliver()
            self.assertTrue(r.ok, r.error)
        self.tls_sink("192.0.2.10", names=["wrong.example.net"])
        for _ in range(2):
            r = yield self.deliver()
            self.assertFalse(r.ok)
        self.assertEqual(len(good.transactions), 3)
        static = SimpleNamespace(NoOutgoingDMARCReports=True, NoOutgoingTLSReports=False,
                                 OutgoingTLSReportsForAllSuccess=False)
        svc = ReportsService(self.mktemp(), "mail.example.org", self.queue, self.resolver, static, reactor=reactor)
        yield svc.dmarc.open()
        yield svc.tlsrpt.open()
        yield svc.evaluations.open()
        self.addCleanup(svc.evaluations.close)
        self.addCleanup(svc.tlsrpt.close)
        self.addCleanup(svc.dmarc.close)
        day = datetime(2027, 1, 15, 12, tzinfo=timezone.utc)
        yield svc.tlsrpt.add_results(self.results, now=day.timestamp())
        self.resolver.add("_smtp._tls.example.net", "TXT", ["v=TLSRPTv1; rua=mailto:tlsrpt@example.net"])
        # The day is not over: nothing yet.
        n = yield defer.Deferred.fromCoroutine(svc.send_tls_due(now=day))
        self.assertEqual(n, 0)
        before = {e.id for e in (yield self.queue.list())}
        n = yield defer.Deferred.fromCoroutine(svc.send_tls_due(now=day + timedelta(days=1)))
        self.assertEqual(n, 1)
        [entry] = [e for e in (yield self.queue.list()) if e.id not in before]
        self.assertTrue(entry.is_tls_report)
        self.assertEqual(entry.recipient, "tlsrpt@example.net")
        with open(self.queue.message_path(entry), "rb") as f:
            msg = entry.msg_prefix + f.read()
        self.assertIn(b"TLS-Report-Domain: example.net", msg)
        self.assertIn(b'report-type="tlsrpt"', msg)
        report = tlsparse.parse_message(msg)
        self.assertEqual(report.organization_name, "mail.example.org")
        [pol] = report.policies
        self.assertEqual((pol.policy.type, pol.policy.domain), ("sts", "example.net"))
        self.assertEqual((pol.summary.total_successful_session_count, pol.summary.total_failure_session_count), (3, 2))
        [detail] = pol.failure_details
        self.assertEqual((detail.result_type, detail.failed_session_count, detail.receiving_mx_hostname),
                         ("certificate-host-mismatch", 2, "mx.example.net"))
        self.assertEqual(report.date_range.start, datetime(2027, 1, 15, tzinfo=timezone.utc))
        # Reported once.
        n = yield defer.Deferred.fromCoroutine(svc.send_tls_due(now=day + timedelta(days=2)))
        self.assertEqual(n, 0)

    @defer.inlineCallbacks
    def test_no_results_for_reports_and_all_success_not_sent(self):
        self.publish()
        self.tls_sink("192.0.2.10")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        r = yield self.deliver(is_tls_report=True)
        self.assertTrue(r.ok, r.error)
        self.assertEqual(self.results, [])
        db = ReportDB(self.mktemp())
        yield db.open()
        self.addCleanup(db.close)
        r = yield self.deliver()
        yield db.add_results(self.results, now=datetime(2027, 1, 15, tzinfo=timezone.utc).timestamp())
        rows = yield db.results()
        self.assertEqual([(x["policy_domain"], x["success"], x["failure"]) for x in rows], [("example.net", 1, 0)])
        self.assertEqual(json.loads(rows[0]["policy"])["policy-type"], "sts")

    def test_report_is_gzip_json(self):
        from moxtw.reports.tls import outgoing

        rows = [{"policy": json.dumps({"policy-type": "no-policy-found", "policy-domain": "example.net"}),
                 "success": 1, "failure": 1,
                 "failure_details": json.dumps([{"result-type": "starttls-not-supported", "failed-session-count": 1}])}]
        report = outgoing.build_report(rows, "example.net", "2027-01-15", "mail.example.org", "postmaster@mail.example.org")
        data = gzip.decompress(outgoing.gzip_report(outgoing.report_json(report)))
        doc = json.loads(data)
        self.assertEqual(doc["date-range"], {"start-datetime": "2027-01-15T00:00:00Z", "end-datetime": "2027-01-15T23:59:59Z"})
        self.assertEqual(tlsparse.parse_report(data).policies[0].summary.total_failure_session_count, 1)
        self.assertEqual(outgoing.parse_record("v=TLSRPTv1; rua=mailto:a@b.example,https://r.example/x, ftp://no"),
                         ["mailto:a@b.example", "https://r.example/x"])
        self.assertIsNone(outgoing.parse_record("v=spf1 -all"))



class DanetoolCrossCheckTests(unittest.TestCase):
    """Our TLSA matching and the TLSA records we publish agree with GnuTLS's danetool."""

    def setUp(self):
        import shutil

        if shutil.which("danetool") is None:
            raise unittest.SkipTest("danetool (gnutls-bin) not installed")

    def danetool(self, cert_path, selector, hash_name):
        import subprocess

        args = ["danetool", "--tlsa-rr", "--host=mx.example.net", "--port=25", f"--load-certificate={cert_path}",
                f"--hash={hash_name}"]
        if selector == 0:
            args.append("--x509")
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        fields = out.split("(")[1].split(")")[0].split()
        return TLSA(3, int(fields[1]), int(fields[2]), bytes.fromhex("".join(fields[3:])))

    def test_matching_agrees(self):
        from cryptography.hazmat.primitives import serialization

        from moxtw.admin.records import _cert_spki_sha256

        leaf = testca.make_leaf(["mx.example.net"])
        other = testca.make_leaf(["mx.example.net"])
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(leaf.cert.public_bytes(serialization.Encoding.PEM))
        for selector in (0, 1):
            for hash_name, mtype in (("sha256", 1), ("sha512", 2)):
                rec = self.danetool(path, selector, hash_name)
                self.assertEqual((rec.selector, rec.mtype), (selector, mtype))
                self.assertTrue(dane.matches(rec, leaf.cert))
                self.assertFalse(dane.matches(rec, other.cert))
        # The 3 1 1 record `moxtw config dnsrecords` prints is danetool's.
        self.assertEqual(_cert_spki_sha256(path)[0], self.danetool(path, 1, "sha256").data)


class OpportunisticFallbackTests(PolicyTestBase):
    def broken_tls_sink(self, ip):
        from OpenSSL import crypto
        from twisted.internet import ssl

        leaf = testca.make_leaf(["mx.example.net"], self.ca)
        # TLS 1.1 at most: our client needs 1.2, so the handshake fails.
        options = ssl.CertificateOptions(privateKey=crypto.PKey.from_cryptography_key(leaf.key),
                                         certificate=crypto.X509.from_cryptography(leaf.cert),
                                         lowerMaximumSecurityTo=ssl.TLSVersion.TLSv1_1)
        return self.sink(ip, tls=options)

    @defer.inlineCallbacks
    def test_failed_handshake_retried_without_tls(self):
        # RFC 7435: without a policy, a server whose TLS we cannot use still gets mail.
        sink = self.broken_tls_sink("192.0.2.10")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        r = yield self.deliver()
        self.assertTrue(r.ok, r.error)
        self.assertEqual(sink.connections, 2)
        self.assertFalse(sink.transactions[0].tls)
        self.assertEqual([(x.ok, x.result_type) for x in self.results],
                         [(False, "validation-failure")])

    @defer.inlineCallbacks
    def test_no_fallback_under_policy_or_requiretls(self):
        self.publish()
        sink = self.broken_tls_sink("192.0.2.10")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        r = yield self.deliver()
        self.assertFalse(r.ok)
        self.resolver.add("_mta-sts.example.net", "TXT", NoRecords)
        self.clock.advance(10 ** 6)
        r = yield self.deliver(requiretls=True)
        self.assertFalse(r.ok)
        self.assertEqual(sink.transactions, [])
