"""Reuse of outgoing connections (moxtw.smtpclient.pool) through the queue's Outbound:
messages for one destination over one connection with RSET between, limits on
messages, age, idle time and connections per destination, and recovery when the server
closed an idle connection."""

from twisted.internet import defer, reactor, task

from moxtw.smtpclient.pool import ConnectionPool
from moxtw.test.test_outbound import OutboundTestBase


class PoolHelpers:
    """For OutboundTestBase cases: a pool on a Clock, deliveries one at a time."""

    def pool(self, **kw):
        clock = task.Clock()
        clock.advance(1000)
        pool = ConnectionPool(reactor=clock, **kw)
        self.addCleanup(pool.close)
        return pool, clock

    @defer.inlineCallbacks
    def deliver(self, ob, rcpt="x@example.net", **kw):
        seen = {e.id for e in (yield self.queue.list())}
        entries = yield self.entries([rcpt], **kw)
        [r] = yield ob.deliver_group([e for e in entries if e.id not in seen])
        return r

    @defer.inlineCallbacks
    def wait(self, check):
        for _ in range(500):
            if check():
                return
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.fail("condition not reached")


class PoolTests(PoolHelpers, OutboundTestBase):
    @defer.inlineCallbacks
    def test_sequential_messages_one_connection(self):
        sink = self.sink("192.0.2.10")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        self.resolver.add("example.com", "MX", [(10, "mx.example.net")])
        pool, clock = self.pool()
        ob = self.outbound(pool=pool)
        for i in range(4):
            r = yield self.deliver(ob, "x@example.net" if i % 2 else "y@example.com")
            self.assertTrue(r.ok, r.error)
        self.assertEqual(sink.connections, 1)
        self.assertEqual(len(sink.transactions), 4)
        # RFC 5321 4.1.1.5: RSET before each further transaction, one EHLO in all.
        self.assertEqual([c.split()[0] for c in sink.commands].count("RSET"), 3)
        self.assertEqual([c.split()[0] for c in sink.commands].count("EHLO"), 1)
        self.assertEqual(pool.connections_opened, 1)
        # Idle too long: closed with QUIT; the next message opens a new connection.
        clock.advance(11)
        yield self.wait(lambda: not sink.live)
        self.assertEqual(sink.commands[-1], "QUIT")
        r = yield self.deliver(ob)
        self.assertTrue(r.ok, r.error)
        self.assertEqual(sink.connections, 2)

    @defer.inlineCallbacks
    def test_message_and_age_limits(self):
        sink = self.sink("192.0.2.10")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        pool, clock = self.pool(max_messages=2)
        ob = self.outbound(pool=pool)
        for _ in range(5):
            r = yield self.deliver(ob)
            self.assertTrue(r.ok, r.error)
        self.assertEqual(sink.connections, 3)
        pool2, clock2 = self.pool(max_age=60)
        ob = self.outbound(pool=pool2)
        yield self.deliver(ob)
        clock2.advance(61)
        yield self.deliver(ob)
        self.assertEqual(sink.connections, 5)

    @defer.inlineCallbacks
    def test_server_closed_idle_connection(self):
        sink = self.sink("192.0.2.10")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        pool, _ = self.pool()
        ob = self.outbound(pool=pool)
        yield self.deliver(ob)
        # The server ends the idle connection (its own timeout, RFC 5321 4.5.3.2.7).
        for p in list(sink.live):
            p.reply("421 4.4.2 idle timeout")
            p.transport.loseConnection()
        yield self.wait(lambda: not sink.live)
        r = yield self.deliver(ob)
        self.assertTrue(r.ok, r.error)
        self.assertEqual(sink.connections, 2)
        # A 421 that arrives while idle, with the connection still open: not reused.
        for p in list(sink.live):
            p.reply("421 4.4.2 going away")
        yield task.deferLater(reactor, 0.05, lambda: None)
        r = yield self.deliver(ob)
        self.assertTrue(r.ok, r.error)
        self.assertEqual(sink.connections, 3)

    @defer.inlineCallbacks
    def test_concurrent_deliveries_bounded_per_destination(self):
        sink = self.sink("192.0.2.10")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        pool, _ = self.pool(per_key=2)
        ob = self.outbound(pool=pool)
        entries = yield self.entries([f"u{i}@example.net" for i in range(8)])
        results = yield defer.gatherResults([ob.deliver_group([e]) for e in entries])
        results = [r for [r] in results]
        self.assertTrue(all(r.ok for r in results))
        self.assertEqual(len(sink.transactions), 8)
        self.assertLessEqual(sink.connections, 2)

    @defer.inlineCallbacks
    def test_requiretls_and_other_hosts_not_shared(self):
        sink = self.sink("192.0.2.10")
        other = self.sink("192.0.2.11")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        self.mx("example.org", ("mx.example.org", "192.0.2.11"))
        pool, _ = self.pool()
        ob = self.outbound(pool=pool)
        yield self.deliver(ob)
        yield self.deliver(ob, "z@example.org")
        self.assertEqual((sink.connections, other.connections), (1, 1))
        # A REQUIRETLS message needs a connection of its own (verified TLS): the sink
        # has no TLS, so it fails, and the plain connection was not used for it.
        r = yield self.deliver(ob, requiretls=True)
        self.assertFalse(r.ok)
        self.assertEqual(len(sink.transactions), 1)

    @defer.inlineCallbacks
    def test_rejected_recipient_keeps_connection_mail_refusal_closes(self):
        sink = self.sink("192.0.2.10")
        self.mx("example.net", ("mx.example.net", "192.0.2.10"))
        sink.rcpt_replies["bad@example.net"] = "550 5.1.1 no such user"
        pool, _ = self.pool()
        ob = self.outbound(pool=pool)
        r = yield self.deliver(ob, "bad@example.net")
        self.assertFalse(r.ok)
        r = yield self.deliver(ob)
        self.assertTrue(r.ok, r.error)
        self.assertEqual(sink.connections, 1)
        sink.mail_reply = "451 4.3.0 try later"
        r = yield self.deliver(ob)
        self.assertFalse(r.ok)
        sink.mail_reply = "250 2.1.0 ok"
        r = yield self.deliver(ob)
        self.assertTrue(r.ok, r.error)
        self.assertEqual(sink.connections, 2)
