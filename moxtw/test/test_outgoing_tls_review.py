"""Regression tests from the hostile review of outgoing MTA-STS, DANE, TLS reports and
connection reuse: unusable TLSA records that must not weaken REQUIRETLS or MTA-STS
enforce, slow policy and report servers, pool leaks and orphaned connections, cancelled
waiters, 421 on a reused connection, the opportunistic fallback."""

import time

from twisted.internet import defer, reactor, task
from twisted.web import resource, server

from moxtw.dns import TLSA
from moxtw.mtasts.client import PolicyError, fetch_policy
from moxtw.smtpclient.pool import ConnectionPool
from moxtw.test import testca
from moxtw.test.test_outbound import OutboundTestBase
from moxtw.test.test_outgoing_tls import PolicyTestBase
from moxtw.test.test_smtp_pool import PoolHelpers

EXT_RT = ("PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "SIZE 0", "REQUIRETLS")


class DANEUnusableTests(PolicyTestBase):
    def dane_zone(self, *records):
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        self.resolver.add("_25._tcp.mx.example.net", "TLSA", list(records))
        self.resolver.authentic = True

    @defer.inlineCallbacks
    def test_requiretls_not_satisfied_by_unusable_tlsa(self):
        # RFC 8689 4.2.1: REQUIRETLS needs a certificate verified by PKIX or DANE. With
        # only unusable TLSA records (here PKIX-EE, usage 1) nothing is verified, so an
        # attacker's untrusted certificate must not get the message.
        sink = self.tls_sink("192.0.2.10", issuer=testca.make_ca("attacker"), extensions=EXT_RT)
        self.dane_zone(TLSA(1, 1, 1, b"\x01" * 32))
        r = yield self.deliver(requiretls=True)
        self.assertEqual(sink.transactions, [], "REQUIRETLS message delivered over unverified TLS")
        self.assertFalse(r.ok)

    @defer.inlineCallbacks
    def test_unusable_tlsa_does_not_override_mtasts_enforce(self):
        # MTA-STS enforce: MX host must be in the policy and the certificate PKIX
        # verified. Unusable TLSA records give no authentication at all, so letting them
        # take precedence removes both checks.
        self.publish(mx="elsewhere.example.net")
        sink = self.tls_sink("192.0.2.10", issuer=testca.make_ca("attacker"))
        self.dane_zone(TLSA(1, 1, 1, b"\x01" * 32))
        r = yield self.deliver()
        self.assertEqual(sink.transactions, [], "MTA-STS enforce bypassed by unusable TLSA records")
        self.assertFalse(r.ok)


class Trickle(resource.Resource):
    """Headers at once, then one byte of body every 0.2 s, forever."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.calls = []

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")

        def drip():
            if request.finished or request.channel is None:
                return
            request.write(b"#")
            self.calls.append(reactor.callLater(0.2, drip))

        drip()
        return server.NOT_DONE_YET

    render_POST = render_GET


class SlowPolicyServerTests(PolicyTestBase):
    @defer.inlineCallbacks
    def test_fetch_timeout_covers_body(self):
        trickle = Trickle()
        leaf = testca.make_leaf(["mta-sts.example.org"], self.ca)
        site = server.Site(trickle)
        site.timeOut = None
        port = reactor.listenSSL(0, site, testca.server_options(leaf), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.resolver.add("mta-sts.example.org", "A", ["127.0.0.1"])
        start = time.monotonic()
        d = defer.Deferred.fromCoroutine(fetch_policy(reactor, self.resolver, "example.org", trust=self.trust,
                                                      port=port.getHost().port, timeout=1.0))
        # Give it 4x the timeout.
        timer = reactor.callLater(4.0, d.cancel)
        try:
            yield d
        except PolicyError:
            pass
        except defer.CancelledError:
            self.fail("fetch_policy with timeout=1 still running after 4 s (body has no timeout)")
        finally:
            if timer.active():
                timer.cancel()
            for c in trickle.calls:
                if c.active():
                    c.cancel()
            for ch in list(getattr(site, "_channels", [])):
                pass
        self.assertLess(time.monotonic() - start, 3.0)


class PoolCancelTests(PolicyTestBase):
    @defer.inlineCallbacks
    def test_cancelled_waiter_does_not_eat_wakeup(self):
        pool = ConnectionPool(reactor=task.Clock(), per_key=1)
        gate = defer.Deferred()

        class R:
            connection = None

        def fresh_blocking():
            return gate.addCallback(lambda _: R())

        first = defer.Deferred.fromCoroutine(pool.deliver("k", fresh_blocking, {}))
        # A second delivery waits for the slot, then is cancelled (queue shutdown,
        # a timeout around the attempt, ...).
        second = defer.Deferred.fromCoroutine(pool.deliver("k", lambda: defer.succeed(R()), {}))
        second.addErrback(lambda f: f.trap(defer.CancelledError))
        second.cancel()
        # A third delivery waits too.
        third = defer.Deferred.fromCoroutine(pool.deliver("k", lambda: defer.succeed(R()), {}))
        gate.callback(None)
        yield first
        self.assertTrue(third.called, "third delivery hangs: the cancelled waiter took its wake-up")
        yield third


class SlowReportServerTests(PolicyTestBase):
    @defer.inlineCallbacks
    def test_post_report_timeout_covers_body(self):
        from moxtw.reports.tls import outgoing

        trickle = Trickle()
        leaf = testca.make_leaf(["rua.example.org"], self.ca)
        site = server.Site(trickle)
        site.timeOut = None
        port = reactor.listenSSL(0, site, testca.server_options(leaf), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.resolver.add("rua.example.org", "A", ["127.0.0.1"])
        url = f"https://rua.example.org:{port.getHost().port}/tlsrpt"
        start = time.monotonic()
        d = defer.Deferred.fromCoroutine(outgoing.post_report(reactor, self.resolver, url, b"gz",
                                                              trust=self.trust, timeout=1.0))
        timer = reactor.callLater(4.0, d.cancel)
        try:
            yield d
        except Exception:
            pass
        finally:
            if timer.active():
                timer.cancel()
            for c in trickle.calls:
                if c.active():
                    c.cancel()
        self.assertLess(time.monotonic() - start, 3.0, "post_report(timeout=1) still reading the body after 4 s")


class PoolLeakTests(PoolHelpers, OutboundTestBase):

    @defer.inlineCallbacks
    def test_lost_idle_connection_forgotten(self):
        sink = self.sink("192.0.2.10")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        pool, _ = self.pool()
        ob = self.outbound(pool=pool)
        for i in range(5):
            r = yield self.deliver(ob)
            self.assertTrue(r.ok, r.error)
            # The server closes the idle connection before our idle timer fires.
            for p in list(sink.live):
                p.reply("421 4.4.2 idle timeout")
                p.transport.loseConnection()
            yield self.wait(lambda: not sink.live)
        r = yield self.deliver(ob)
        self.assertTrue(r.ok, r.error)
        # Only the one live connection should be remembered; the lost ones (each holding
        # its last message's data in .o.data) must not pile up.
        self.assertLessEqual(len(pool._opened), 1, f"{len(pool._opened)} connections kept in pool._opened")

    @defer.inlineCallbacks
    def test_421_to_mail_on_reused_connection_retried_fresh(self):
        # Receivers limit messages per connection with a 421 to the next MAIL (and close).
        # On a reused connection that is not the message's fault: a fresh connection
        # would take it. The attempt must not end in a deferral (backoff of minutes/hours).
        from moxtw.test.smtpsink import SinkProtocol

        class OnePerConnection(SinkProtocol):
            def lineReceived(self, line):
                if line.upper().startswith(b"MAIL"):
                    self.mails = getattr(self, "mails", 0) + 1
                    if self.mails > 1:
                        self.reply("421 4.7.0 one message per connection")
                        self.transport.loseConnection()
                        return
                return super().lineReceived(line)

        sink = self.sink("192.0.2.10")
        sink.protocol = OnePerConnection
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        pool, _ = self.pool()
        ob = self.outbound(pool=pool)
        r = yield self.deliver(ob)
        self.assertTrue(r.ok, r.error)
        r = yield self.deliver(ob)
        self.assertTrue(r.ok, f"second message deferred: {r.error}")


class OpportunisticHandshakeFailureTests(PolicyTestBase):
    @defer.inlineCallbacks
    def test_failed_handshake_opportunistic_falls_back(self):
        # No policy: opportunistic TLS. The server offers STARTTLS but the handshake
        # fails (broken TLS stack, or an attacker corrupting it). mox then retries the
        # host without TLS, since without a policy TLS is not required. A server whose
        # TLS is broken would otherwise never get mail.
        from moxtw.test.smtpsink import SinkProtocol

        class BrokenTLS(SinkProtocol):
            def lineReceived(self, line):
                if line.upper() == b"STARTTLS" and not getattr(self, "broke", False):
                    self.broke = True
                    self.reply("220 2.0.0 go ahead")
                    reactor.callLater(0.1, self.transport.write, b"\x15\x03\x03\x00\x02\x02\x28")  # alert
                    return
                return super().lineReceived(line)

        sink = self.tls_sink("192.0.2.10")
        sink.protocol = BrokenTLS
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        r = yield self.deliver()
        self.results_seen = self.result_types()
        self.assertTrue(r.ok, f"not delivered: {r.error}; results {self.results_seen}")


class PoolOrphanTests(PoolHelpers, OutboundTestBase):

    @defer.inlineCallbacks
    def test_precheck_failure_on_reused_connection_does_not_orphan_it(self):
        # A message that fails the client's precheck (bare CR) on a taken idle
        # connection: the connection must go back to the pool or be closed, not be left
        # open with no timer and no owner.
        sink = self.sink("192.0.2.10")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        pool, clock = self.pool()
        ob = self.outbound(pool=pool)
        r = yield self.deliver(ob)
        self.assertTrue(r.ok, r.error)
        self.assertEqual(len(sink.live), 1)
        bad = b"From: a@example.org\r\nTo: x@example.net\r\nSubject: cr\r\n\r\nbare\rcr\r\n"
        r = yield self.deliver(ob, msg=bad)
        self.assertFalse(r.ok)
        clock.advance(3600)  # every pool timer has long fired
        yield task.deferLater(reactor, 0.1, lambda: None)
        in_pool = sum(len(v) for v in pool._idle.values())
        self.assertFalse(len(sink.live) == 1 and in_pool == 0,
                         "connection still open on the wire but not in the pool: orphaned")
