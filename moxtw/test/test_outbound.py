"""Outgoing delivery (moxtw.queue.outbound): MX lookup, routes, transports, per-recipient
results, against scriptable SMTP servers on loopback with a mock resolver."""

import random
from types import SimpleNamespace

from twisted.internet import defer, endpoints, reactor
from twisted.trial import unittest

from moxtw.config.schema import Route, Transport
from moxtw.dns import MockResolver, NoRecords, TemporaryFailure
from moxtw.queue import Queue
from moxtw.smtp import codes as c
from moxtw.queue.outbound import (
    DeliveryError,
    Outbound,
    mx_hosts,
    needs_smtputf8,
    read_queued_message,
    select_route,
)
from moxtw.test.smtpsink import closed_port, start_sink, start_socks_proxy

MSG = (b"From: mjl@example.org\r\nTo: x@example.net\r\nSubject: hi\r\n"
       b"Message-ID: <1@example.org>\r\n\r\nbody\r\n.leading dot\r\n")


def make_config(transports=None, routes=(), account_routes=(), domain_routes=()):
    static = SimpleNamespace(Transports=dict(transports or {}), TLS=SimpleNamespace(CA=None))
    dynamic = SimpleNamespace(
        Accounts={"mjl": SimpleNamespace(Routes=list(account_routes))},
        Domains={"example.org": SimpleNamespace(Routes=list(domain_routes))},
        Routes=list(routes),
    )
    return static, dynamic


class RouteTests(unittest.SynchronousTestCase):
    def test_no_routes_is_direct(self):
        static, dynamic = make_config()
        r = select_route(static, dynamic, "mjl", "example.org", "example.net", 0)
        self.assertEqual(r.name, "")
        self.assertIsNone(r.transport)

    def test_order_account_domain_global(self):
        t = {n: Transport(Fail={"SMTPCode": 451}) for n in ("a", "d", "g")}
        static, dynamic = make_config(
            t,
            routes=[Route(Transport="g")],
            domain_routes=[Route(Transport="d", ToDomain=[".example.net"])],
            account_routes=[Route(Transport="a", ToDomain=["other.example"])],
        )
        pick = lambda acc, frm, to, n=0: select_route(static, dynamic, acc, frm, to, n)  # noqa: E731
        self.assertEqual(pick("mjl", "example.org", "other.example").where, "account")
        self.assertEqual(pick("mjl", "example.org", "sub.example.net").name, "d")
        self.assertEqual(pick("mjl", "example.org", "example.net").name, "d")
        self.assertEqual(pick("mjl", "example.org", "notexample.net").name, "g")
        self.assertEqual(pick(None, "", "x.example").name, "g")

    def test_minimum_attempts_and_from_domain(self):
        t = {"smarthost": Transport(Fail={"SMTPCode": 451})}
        static, dynamic = make_config(t, routes=[
            Route(Transport="smarthost", MinimumAttempts=3, FromDomain=["example.org"]),
        ])
        self.assertEqual(select_route(static, dynamic, "mjl", "example.org", "x.example", 2).name, "")
        self.assertEqual(select_route(static, dynamic, "mjl", "example.org", "x.example", 3).name, "smarthost")
        self.assertEqual(select_route(static, dynamic, "mjl", "other.org", "x.example", 5).name, "")


class MXTests(unittest.TestCase):
    def hosts(self, records, domain="example.net"):
        r = MockResolver(records)
        return defer.Deferred.fromCoroutine(mx_hosts(r, domain, random.Random(1)))

    @defer.inlineCallbacks
    def test_preference_order(self):
        hosts = yield self.hosts({("example.net", "MX"): [(20, "b.example.net"), (10, "a.example.net"),
                                                          (30, "c.example.net")]})
        self.assertEqual(hosts, ["a.example.net", "b.example.net", "c.example.net"])

    @defer.inlineCallbacks
    def test_equal_preferences_shuffled(self):
        seen = set()
        records = {("example.net", "MX"): [(10, f"mx{i}.example.net") for i in range(4)]}
        for seed in range(20):
            r = MockResolver(records)
            hosts = yield defer.Deferred.fromCoroutine(mx_hosts(r, "example.net", random.Random(seed)))
            self.assertEqual(sorted(hosts), [f"mx{i}.example.net" for i in range(4)])
            seen.add(hosts[0])
        self.assertGreater(len(seen), 1)

    @defer.inlineCallbacks
    def test_no_mx_is_implicit(self):
        hosts = yield self.hosts({("example.net", "A"): ["192.0.2.1"]})
        self.assertEqual(hosts, ["example.net"])

    @defer.inlineCallbacks
    def test_null_mx_permanent(self):
        err = yield self.assertFailure(self.hosts({("example.net", "MX"): [(0, ".")]}), DeliveryError)
        self.assertTrue(err.permanent)
        self.assertIn(f"{c.C556_DOMAIN_NO_MAIL} {c.enhanced(c.C556_DOMAIN_NO_MAIL, c.SE_ADDR_NULL_MX10)}", str(err))

    @defer.inlineCallbacks
    def test_nxdomain_permanent_servfail_temporary(self):
        err = yield self.assertFailure(self.hosts({}), DeliveryError)
        self.assertTrue(err.permanent)
        err = yield self.assertFailure(self.hosts({("example.net", "MX"): TemporaryFailure}), DeliveryError)
        self.assertFalse(err.permanent)

    @defer.inlineCallbacks
    def test_idna_domain_and_underscore_host(self):
        hosts = yield self.hosts({("xn--bcher-kva.example", "MX"): [(10, "mail_1.xn--bcher-kva.example")]},
                                 domain="bücher.example")
        self.assertEqual(hosts, ["mail_1.xn--bcher-kva.example"])

    def test_needs_smtputf8(self):
        self.assertFalse(needs_smtputf8("a@bücher.example", ["b@example.net"], b"Subject: x\r\n\r\n\xff"))
        self.assertTrue(needs_smtputf8("ä@example.org", ["b@example.net"], b"\r\n\r\n"))
        self.assertTrue(needs_smtputf8("a@example.org", ["b@example.net"], "Subject: ä\r\n\r\n".encode()))


class OutboundTestBase(unittest.TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.queue = Queue(self.mktemp())
        yield self.queue.open()
        self.addCleanup(self.queue.close)
        self.ports = {}  # fake IP -> loopback port
        self.resolver = MockResolver({})
        self.config = make_config()

    def endpoint(self, host, port, timeout):
        target = self.ports.get(host, closed_port())
        return endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", target, timeout=timeout)

    def outbound(self, **kw):
        return Outbound(self.resolver, lambda: self.config, read_queued_message(self.queue),
                        "mail.example.org", reactor=reactor, endpoint_factory=self.endpoint,
                        rng=random.Random(0), connect_timeout=5, **kw)

    def sink(self, ip, **kw):
        factory, port = start_sink(self, **kw)
        self.ports[ip] = port
        return factory

    @defer.inlineCallbacks
    def entries(self, recipients, msg=MSG, **kw):
        kw.setdefault("sender_account", "mjl")
        yield self.queue.add(msg, "mjl@example.org", recipients, **kw)
        entries = yield self.queue.list()
        return entries

    def mx(self, domain, *hosts):
        self.resolver.add(domain, "MX", [(10 * (i + 1), h) for i, (h, _) in enumerate(hosts)])
        for h, ip in hosts:
            self.resolver.add(h, "A", [ip])


class AddressPickTests(unittest.SynchronousTestCase):
    def test_families_alternate(self):
        from moxtw.queue.outbound import pick_addresses

        many6 = ["2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8::4", "2001:db8::5"]
        self.assertEqual(pick_addresses(many6 + ["192.0.2.1"]),
                         ["2001:db8::1", "192.0.2.1", "2001:db8::2", "2001:db8::3"])
        self.assertEqual(pick_addresses(["192.0.2.1", "192.0.2.2"]), ["192.0.2.1", "192.0.2.2"])


class DirectTests(OutboundTestBase):
    @defer.inlineCallbacks
    def test_one_transaction_for_recipients_of_a_domain(self):
        sink = self.sink("192.0.2.10")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        entries = yield self.entries(["a@example.net", "b@example.net"])
        results = yield self.outbound().deliver_group(entries)
        self.assertEqual([r.ok for r in results], [True, True])
        [txn] = sink.transactions
        self.assertEqual(txn.mailfrom, "mjl@example.org")
        self.assertEqual(txn.recipients, ["a@example.net", "b@example.net"])
        self.assertEqual(txn.data, MSG)
        self.assertEqual(txn.ehlo, "mail.example.org")

    @defer.inlineCallbacks
    def test_falls_back_to_next_mx(self):
        sink = self.sink("192.0.2.20")
        self.mx("example.net", ("mx1.example.net", "192.0.2.10"), ("mx2.example.net", "192.0.2.20"))
        entries = yield self.entries(["a@example.net"])
        results = yield self.outbound().deliver_group(entries)
        self.assertTrue(results[0].ok)
        self.assertEqual(len(sink.transactions), 1)

    @defer.inlineCallbacks
    def test_mx_host_without_address_skipped(self):
        sink = self.sink("192.0.2.20")
        self.resolver.add("example.net", "MX", [(10, "gone.example.net"), (20, "mx2.example.net")])
        self.resolver.add("mx2.example.net", "AAAA", NoRecords)
        self.resolver.add("mx2.example.net", "A", ["192.0.2.20"])
        entries = yield self.entries(["a@example.net"])
        results = yield self.outbound().deliver_group(entries)
        self.assertTrue(results[0].ok)
        self.assertEqual(len(sink.transactions), 1)

    @defer.inlineCallbacks
    def test_all_unreachable_is_temporary(self):
        self.mx("example.net", ("mx1.example.net", "192.0.2.10"))
        entries = yield self.entries(["a@example.net"])
        [r] = yield self.outbound().deliver_group(entries)
        self.assertFalse(r.ok)
        self.assertFalse(r.permanent)
        self.assertIn("connecting", r.error)

    @defer.inlineCallbacks
    def test_implicit_mx(self):
        sink = self.sink("192.0.2.30")
        self.resolver.add("example.net", "A", ["192.0.2.30"])
        entries = yield self.entries(["a@example.net"])
        [r] = yield self.outbound().deliver_group(entries)
        self.assertTrue(r.ok)
        self.assertEqual(len(sink.transactions), 1)

    @defer.inlineCallbacks
    def test_null_mx_and_nxdomain_fail_permanently(self):
        self.resolver.add("example.net", "MX", [(0, ".")])
        entries = yield self.entries(["a@example.net"])
        [r] = yield self.outbound().deliver_group(entries)
        self.assertEqual((r.ok, r.permanent), (False, True))
        self.assertIn("null MX", r.error)
        yield self.queue.drop([e.id for e in entries])
        entries = yield self.entries(["a@nowhere.example"])
        [r] = yield self.outbound().deliver_group(entries)
        self.assertEqual((r.ok, r.permanent), (False, True))

    @defer.inlineCallbacks
    def test_mixed_recipient_results(self):
        sink = self.sink("192.0.2.10")
        sink.rcpt_replies["b@example.net"] = "550-5.1.1 no such user\r\n550 5.1.1 really"
        sink.rcpt_replies["c@example.net"] = "451 4.2.0 greylisted"
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        entries = yield self.entries(["a@example.net", "b@example.net", "c@example.net"])
        results = yield self.outbound().deliver_group(entries)
        self.assertEqual([r.ok for r in results], [True, False, False])
        # A 5xx to RCPT is retried once (first attempt: temporary).
        self.assertFalse(results[1].permanent)
        self.assertIn("550 5.1.1 no such user\nreally", results[1].error)
        self.assertFalse(results[2].permanent)
        # On a later attempt the 5xx is final.
        yield self.queue.record_attempt(entries[1].id, ok=False, permanent=False, error="x")
        [again] = yield self.queue.list(recipient="b@example.net")
        [r] = yield self.outbound().deliver_group([again])
        self.assertTrue(r.permanent)

    @defer.inlineCallbacks
    def test_rcptmax_split(self):
        sink = self.sink("192.0.2.10", extensions=["PIPELINING", "LIMITS RCPTMAX=2"])
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        rcpts = [f"u{i}@example.net" for i in range(5)]
        entries = yield self.entries(rcpts)
        results = yield self.outbound().deliver_group(entries)
        self.assertTrue(all(r.ok for r in results))
        self.assertEqual([t.recipients for t in sink.transactions], [rcpts[:2], rcpts[2:4], rcpts[4:]])
        self.assertEqual(sink.connections, 1)

    @defer.inlineCallbacks
    def test_452_too_many(self):
        sink = self.sink("192.0.2.10")
        sink.max_rcpts = 2
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        rcpts = [f"u{i}@example.net" for i in range(5)]
        entries = yield self.entries(rcpts)
        results = yield self.outbound().deliver_group(entries)
        self.assertTrue(all(r.ok for r in results))
        self.assertEqual([len(t.recipients) for t in sink.transactions], [2, 2, 1])

    @defer.inlineCallbacks
    def test_requiretls_refused_without_tls(self):
        sink = self.sink("192.0.2.10")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        entries = yield self.entries(["a@example.net"], requiretls=True)
        [r] = yield self.outbound().deliver_group(entries)
        self.assertEqual((r.ok, r.permanent), (False, True))
        self.assertIn("REQUIRETLS", r.error)
        self.assertEqual(sink.transactions, [])

    @defer.inlineCallbacks
    def test_requiretls_certificate_verified(self):
        # RFC 8689 4.2.1: a REQUIRETLS message goes only over TLS with a verified
        # certificate: moxtw's own self-signed one is refused without its CA.
        from moxtw.test.test_smtp_e2e import SMTPTreeBase

        tree = SMTPTreeBase("run")
        tree.mktemp = self.mktemp
        tree.addCleanup = self.addCleanup
        yield tree.setUp()
        self.ports["192.0.2.10"] = tree.ports["smtp"]
        self.mx("example.org", ("localhost", "192.0.2.10"))
        entries = yield self.entries(["other@example.org"], requiretls=True)
        [r] = yield self.outbound().deliver_group(entries)
        self.assertFalse(r.ok)
        self.assertIn("certificate verify failed", r.error)
        # With the CA trusted, it is delivered.
        static, dynamic = self.config
        static.TLS = SimpleNamespace(CA=SimpleNamespace(CertFiles=[tree.ca], AdditionalToSystem=False))
        [r] = yield self.outbound().deliver_group(entries)
        self.assertTrue(r.ok, r.error)

    @defer.inlineCallbacks
    def test_smtputf8_only_when_needed(self):
        sink = self.sink("192.0.2.10", extensions=["8BITMIME"])
        self.resolver.add("xn--bcher-kva.example", "MX", [(10, "mx.example.net")])
        self.resolver.add("mx.example.net", "A", ["192.0.2.10"])
        # Submitted with SMTPUTF8 but only the domain is non-ASCII: sent as A-label.
        entries = yield self.entries(["a@bücher.example"], smtputf8=True)
        [r] = yield self.outbound().deliver_group(entries)
        self.assertTrue(r.ok, r.error)
        self.assertEqual(sink.transactions[0].recipients, ["a@xn--bcher-kva.example"])
        self.assertNotIn("SMTPUTF8", sink.transactions[0].mail_params)

    @defer.inlineCallbacks
    def test_smtputf8_needed_but_missing(self):
        self.sink("192.0.2.10", extensions=["8BITMIME"])
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        entries = yield self.entries(["ä@example.net"], smtputf8=True)
        [r] = yield self.outbound().deliver_group(entries)
        self.assertEqual((r.ok, r.permanent), (False, True))

    @defer.inlineCallbacks
    def test_missing_message_file_fails_loudly(self):
        import os

        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        entries = yield self.entries(["a@example.net"])
        os.remove(self.queue.message_path(entries[0]))
        [r] = yield self.outbound().deliver_group(entries)
        self.assertEqual((r.ok, r.permanent), (False, True))
        self.assertIn("missing", r.error)

    @defer.inlineCallbacks
    def test_address_literal(self):
        sink = self.sink("192.0.2.44")
        entries = yield self.entries(["a@[192.0.2.44]"])
        [r] = yield self.outbound().deliver_group(entries)
        self.assertTrue(r.ok, r.error)
        self.assertEqual(len(sink.transactions), 1)
        self.assertEqual(self.resolver.lookups, [])

    @defer.inlineCallbacks
    def test_ipv4_disabled(self):
        self.config = make_config({"v6": Transport(Direct={"DisableIPv4": True})}, routes=[Route(Transport="v6")])
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        self.sink("192.0.2.10")
        entries = yield self.entries(["a@example.net"])
        [r] = yield self.outbound().deliver_group(entries)
        self.assertFalse(r.ok)
        self.assertNotIn(("mx.example.net", "A"), self.resolver.lookups)


class TransportTests(OutboundTestBase):
    @defer.inlineCallbacks
    def test_fail_transport(self):
        self.config = make_config({"f": Transport(Fail={"SMTPCode": 554, "SMTPMessage": "no outgoing mail"})},
                                  routes=[Route(Transport="f")])
        entries = yield self.entries(["a@example.net"])
        [r] = yield self.outbound().deliver_group(entries)
        self.assertEqual((r.ok, r.permanent, r.error), (False, True, "554 no outgoing mail"))

    @defer.inlineCallbacks
    def test_smtp_smarthost(self):
        sink = self.sink("192.0.2.99")
        self.resolver.add("smarthost.example", "A", ["192.0.2.99"])
        self.config = make_config(
            {"relay": Transport(SMTP={"Host": "smarthost.example", "Port": 2525, "NoSTARTTLS": True})},
            routes=[Route(Transport="relay", ToDomain=[".example.net"])],
        )
        entries = yield self.entries(["a@example.net", "b@example.net"])
        results = yield self.outbound().deliver_group(entries)
        self.assertTrue(all(r.ok for r in results))
        self.assertEqual(sink.transactions[0].recipients, ["a@example.net", "b@example.net"])
        # No MX lookup for a smarthost route.
        self.assertNotIn(("example.net", "MX"), self.resolver.lookups)

    @defer.inlineCallbacks
    def test_socks_transport(self):
        factory, sink_port = start_sink(self)
        proxy, proxy_port = start_socks_proxy(self, sink_port)
        self.ports["127.0.0.1"] = proxy_port
        self.config = make_config(
            {"socks": Transport(Socks={"Address": f"127.0.0.1:{proxy_port}", "RemoteIPs": ["198.51.100.1"],
                                       "RemoteHostname": "proxy.example.org"})},
            routes=[Route(Transport="socks")],
        )
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        entries = yield self.entries(["a@example.net"])
        [r] = yield self.outbound().deliver_group(entries)
        self.assertTrue(r.ok, r.error)
        self.assertEqual(proxy.requests, [(1, bytes([192, 0, 2, 10]), 25)])
        self.assertEqual(factory.transactions[0].ehlo, "proxy.example.org")

    @defer.inlineCallbacks
    def test_socks_proxy_by_host_name(self):
        factory, sink_port = start_sink(self)
        proxy, proxy_port = start_socks_proxy(self, sink_port)
        self.config = make_config(
            {"socks": Transport(Socks={"Address": f"localhost:{proxy_port}", "RemoteIPs": ["198.51.100.1"],
                                       "RemoteHostname": "proxy.example.org"})},
            routes=[Route(Transport="socks")],
        )
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        entries = yield self.entries(["a@example.net"])
        ob = Outbound(self.resolver, lambda: self.config, read_queued_message(self.queue),
                      "mail.example.org", reactor=reactor, connect_timeout=5)
        [r] = yield ob.deliver_group(entries)
        self.assertTrue(r.ok, r.error)
        self.assertEqual(len(factory.transactions), 1)

    @defer.inlineCallbacks
    def test_socks_refused(self):
        _, sink_port = start_sink(self)
        proxy, proxy_port = start_socks_proxy(self, sink_port, refuse=True)
        self.ports["127.0.0.1"] = proxy_port
        self.config = make_config(
            {"socks": Transport(Socks={"Address": f"127.0.0.1:{proxy_port}", "RemoteIPs": ["198.51.100.1"],
                                       "RemoteHostname": "proxy.example.org"})},
            routes=[Route(Transport="socks")],
        )
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        entries = yield self.entries(["a@example.net"])
        [r] = yield self.outbound().deliver_group(entries)
        self.assertFalse(r.ok)
        self.assertFalse(r.permanent)
        self.assertIn("connection refused", r.error)



class OwnSubmissionTransportTests(OutboundTestBase):
    """The Submission and Submissions transports against moxtw's own submission
    listeners: certificate verified with the tree's CA, AUTH with SCRAM."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        from moxtw.test.test_smtp_e2e import PASSWORD, SMTPTreeBase

        self.tree = SMTPTreeBase("run")
        # Run the tree's setUp with our mktemp; its cleanups become ours.
        self.tree.mktemp = self.mktemp
        self.tree.addCleanup = self.addCleanup
        yield self.tree.setUp()
        self.password = PASSWORD
        self.resolver.add("localhost", "A", ["127.0.0.1"])

    def transport_config(self, kind, **extra):
        auth = {"Username": "mjl@example.org", "Password": self.password}
        auth.update(extra.pop("auth", {}))
        conf = {"Host": "localhost", "Port": self.tree.ports[kind.lower()], "Auth": auth, **extra}
        static, dynamic = make_config({"own": Transport(**{kind: conf})}, routes=[Route(Transport="own")])
        static.TLS = SimpleNamespace(CA=SimpleNamespace(CertFiles=[self.tree.ca], AdditionalToSystem=False))
        return static, dynamic

    def outbound(self, **kw):
        # Real connections to the tree's listeners.
        return Outbound(self.resolver, lambda: self.config, read_queued_message(self.queue),
                        "client.example.org", reactor=reactor, connect_timeout=5, **kw)

    @defer.inlineCallbacks
    def check_delivered(self, kind, subject, **extra):
        self.config = self.transport_config(kind, **extra)
        msg = MSG.replace(b"Subject: hi", b"Subject: " + subject.encode()).replace(
            b"To: x@example.net", b"To: other@example.org")
        entries = yield self.entries(["other@example.org"], msg=msg)
        [r] = yield self.outbound().deliver_group(entries)
        self.assertTrue(r.ok, r.error)
        yield self.tree.queue_settled()
        got = yield self.tree.messages("other")
        self.assertEqual([m.subject for m, _ in got], [subject])

    def test_submission_starttls_scram(self):
        return self.check_delivered("Submission", "via submission")

    def test_submissions_implicit_tls_configured_mechanism(self):
        return self.check_delivered("Submissions", "via submissions", auth={"Mechanisms": ["PLAIN"]})

    @defer.inlineCallbacks
    def test_wrong_password_fails_permanently(self):
        self.config = self.transport_config("Submission", auth={"Password": "wrong"})
        entries = yield self.entries(["other@example.org"])
        [r] = yield self.outbound().deliver_group(entries)
        self.assertEqual((r.ok, r.permanent), (False, True))
        self.assertIn("535", r.error)

    @defer.inlineCallbacks
    def test_certificate_checked(self):
        # Without the tree's CA the self-signed certificate is not trusted.
        self.config = self.transport_config("Submissions")
        self.config[0].TLS = SimpleNamespace(CA=None)
        entries = yield self.entries(["other@example.org"])
        [r] = yield self.outbound().deliver_group(entries)
        self.assertFalse(r.ok)
        self.assertIn("certificate verify failed", r.error)
