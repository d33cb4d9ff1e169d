"""Hold rules: matching, and newly queued recipients starting on hold."""

from twisted.internet import defer
from twisted.trial import unittest

from moxtw.config.schema import HoldRule
from moxtw.queue import Queue, holdrules
from moxtw.queue.service import DEFAULT_MAX_ATTEMPTS, RETRY_SCHEDULE
from moxtw.test.test_queue import make_message


class MatcherTests(unittest.SynchronousTestCase):
    def test_no_rules(self):
        self.assertFalse(holdrules.matcher([], "mjl", "example.org"))

    def test_empty_rule_holds_everything(self):
        held = holdrules.matcher([HoldRule()], "mjl", "example.org")
        self.assertTrue(held("a@x.example"))

    def test_fields(self):
        rules = [HoldRule(Account="mjl", RecipientDomain="Gmail.example"),
                 HoldRule(SenderDomain="spammy.example")]
        held = holdrules.matcher(rules, "mjl", "example.org")
        self.assertTrue(held("a@gmail.example"))
        self.assertFalse(held("a@other.example"))
        self.assertFalse(holdrules.matcher(rules, "other", "example.org"))
        held = holdrules.matcher(rules, "other", "SPAMMY.example")
        self.assertTrue(held("a@anything.example"))

    def test_idna_domains_normalised(self):
        held = holdrules.matcher([HoldRule(RecipientDomain="XN--BCHER-KVA.example")], "mjl", "example.org")
        self.assertTrue(held("a@bücher.example"))

    def test_schedule_length(self):
        # The first attempt, then one after each delay: the last one 16 hours later.
        self.assertEqual(DEFAULT_MAX_ATTEMPTS, 9)
        self.assertEqual(RETRY_SCHEDULE[DEFAULT_MAX_ATTEMPTS - 2].total_seconds(), 16 * 3600)


class QueueHoldTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_add_with_hold_predicate(self):
        q = Queue(self.mktemp())
        yield q.open()
        self.addCleanup(q.close)
        held = holdrules.matcher([HoldRule(RecipientDomain="b.example")], "mjl", "example.org")
        yield q.add(make_message(), "mjl@example.org", ["x@a.example", "y@b.example"],
                    sender_account="mjl", hold=held)
        entries = yield q.list()
        self.assertEqual([(e.recipient, e.hold) for e in entries],
                         [("x@a.example", False), ("y@b.example", True)])
        yield q.add(make_message(), "mjl@example.org", ["z@a.example"], sender_account="mjl", hold=True)
        self.assertEqual(len((yield q.list(hold=True))), 2)


class DSNHoldTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_dsn_held_by_rules(self):
        from moxtw.queue.dsn import QueueDSN

        q = Queue(self.mktemp())
        yield q.open()
        self.addCleanup(q.close)
        [i] = yield q.add(make_message(), "mjl@example.org", ["x@a.example"], sender_account="mjl")
        entry = yield q.get(i)
        seen = []

        def rules(account, sender_domain):
            seen.append((account, sender_domain))
            return holdrules.matcher([HoldRule()], account, sender_domain)

        dsn = QueueDSN(q, "mail.example.org", hold_rules=rules)
        [d] = yield dsn(entry, "failed", "550 no")
        self.assertEqual(seen, [(None, "")])
        self.assertTrue((yield q.get(d)).hold)
