"""Tests for QueueService: delivery passes over a task.Clock with a fake delivery function."""

import os
from datetime import timedelta

from twisted.internet import defer, task
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from moxtw.queue import (
    RETRY_SCHEDULE,
    DeliveryResult,
    EntryNotFound,
    Queue,
    QueueService,
    retry_delay,
)
from moxtw.queue import db as qdb
from moxtw.queue.service import DELAYED_DSN_ATTEMPT
from moxtw.test.test_queue import NOW, T0, make_message

OK = DeliveryResult(ok=True, permanent=False, error="")
REMOTE_UNAVAILABLE = DeliveryResult(
    ok=False, permanent=False, error="remote delivery is not available in this version"
)


class FakeDeliver:
    """A deliver function: answers with ``result`` (a DeliveryResult, an exception to
    raise, or None to return a pending Deferred the test fires)."""

    def __init__(self, result=OK):
        self.result = result
        self.calls = []
        self.pending = {}
        self._waiters = []

    def __call__(self, entry):
        self.calls.append(entry)
        try:
            if isinstance(self.result, Exception):
                raise self.result
            if self.result is None:
                d = self.pending[entry.id] = defer.Deferred()
                return d
            return defer.succeed(self.result)
        finally:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(entry)

    def next_call(self):
        d = defer.Deferred()
        self._waiters.append(d)
        return d

    def finish(self, entry_id, result=OK):
        self.pending.pop(entry_id).callback(result)


class _StallingQueue(Queue):
    """A queue whose due() answers only when the test fires ``stall`` (if set); ``read``
    fires when the stalled query has read the database."""

    stall = None
    read = None

    def due(self, now, limit=100):
        d = super().due(now, limit)
        if self.stall is not None:
            stall, read, self.stall = self.stall, self.read, None

            def stalled(entries):
                read.callback(None)
                return stall.addCallback(lambda _: entries)

            d.addCallback(stalled)
        return d


class RetryScheduleTests(unittest.SynchronousTestCase):
    def test_schedule(self):
        self.assertEqual(
            [retry_delay(n) for n in range(1, 11)],
            [timedelta(minutes=m) for m in (7.5, 15, 30, 60, 120, 240, 480, 960, 960, 960)],
        )
        self.assertEqual(len(RETRY_SCHEDULE), 8)


class ServiceTestBase(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.data_dir = self.mktemp()
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.queue = _StallingQueue(self.data_dir, clock=self.clock)
        yield self.queue.open()
        self.addCleanup(self.queue.close)
        self.deliver = FakeDeliver()

    def make_service(self, **kw):
        svc = QueueService(self.queue, self.deliver, clock=self.clock, **kw)
        self.addCleanup(self.stop, svc)
        return svc

    def stop(self, svc):
        if not svc.running:
            return None
        d = svc.stopService()
        self.clock.advance(svc.stop_timeout)  # cancels deliveries a failed test left pending
        return d

    def add(self, recipients=("bob@example.com",), **kw):
        kw.setdefault("sender_account", "mjl")
        return self.queue.add(make_message(), "mjl@example.org", list(recipients), **kw)


class ServiceTests(ServiceTestBase):
    @defer.inlineCallbacks
    def test_start_delivers_due(self):
        ids = yield self.add(["a@example.com", "b@example.com"])
        svc = self.make_service()
        svc.startService()
        yield svc.idle()
        self.assertEqual(sorted(e.id for e in self.deliver.calls), ids)
        self.assertEqual((yield self.queue.list()), [])
        self.assertFalse(os.path.exists(qdb.message_file(self.data_dir, ids[0])))

    @defer.inlineCallbacks
    def test_kick_delivers_at_once(self):
        svc = self.make_service()
        svc.startService()
        yield svc.idle()
        [i] = yield self.add()
        self.assertEqual(self.deliver.calls, [])
        yield svc.kick()
        yield svc.idle()
        self.assertEqual([e.id for e in self.deliver.calls], [i])
        yield self.assertFailure(self.queue.get(i), EntryNotFound)

    @defer.inlineCallbacks
    def test_kick_when_stopped(self):
        svc = self.make_service()
        yield self.add()
        yield svc.kick()
        self.assertEqual(self.deliver.calls, [])

    @defer.inlineCallbacks
    def test_interval(self):
        svc = self.make_service(interval=30)
        svc.startService()
        yield svc.idle()
        [i] = yield self.add()
        self.clock.advance(29)
        yield svc.idle()
        self.assertEqual(self.deliver.calls, [])
        self.clock.advance(1)
        yield svc.idle()
        self.assertEqual([e.id for e in self.deliver.calls], [i])

    @defer.inlineCallbacks
    def test_temporary_failures_follow_schedule(self):
        self.deliver.result = REMOTE_UNAVAILABLE
        [i] = yield self.add()
        svc = self.make_service()
        svc.startService()
        yield svc.idle()
        for n in range(1, 11):
            e = yield self.queue.get(i)
            self.assertEqual(e.attempts, n)
            self.assertEqual(e.last_error, REMOTE_UNAVAILABLE.error)
            self.assertEqual(e.next_attempt, e.last_attempt + retry_delay(n))
            self.assertEqual(len(e.results), n)
            # Not a second earlier.
            self.clock.advance((e.next_attempt - self.queue.now()).total_seconds() - 1)
            yield svc.kick()
            yield svc.idle()
            self.assertEqual(len(self.deliver.calls), n)
            self.clock.advance(1)
            yield svc.kick()
            yield svc.idle()
            self.assertEqual(len(self.deliver.calls), n + 1)
        # Still queued and listed: temporary failures never drop an entry in this version.
        self.assertEqual([e.id for e in (yield self.queue.list())], [i])

    @defer.inlineCallbacks
    def test_permanent_failure_removes(self):
        self.deliver.result = DeliveryResult(ok=False, permanent=True, error="550 no such user")
        ids = yield self.add(["a@example.com", "b@example.com"])
        svc = self.make_service()
        svc.startService()
        yield svc.idle()
        self.assertEqual(len(self.deliver.calls), 2)
        self.assertEqual((yield self.queue.list()), [])
        self.assertFalse(os.path.exists(qdb.message_file(self.data_dir, ids[0])))

    @defer.inlineCallbacks
    def test_exception_is_temporary_failure(self):
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.deliver.result = ZeroDivisionError("boom")
        [i] = yield self.add()
        svc = self.make_service()
        svc.startService()
        yield svc.idle()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        e = yield self.queue.get(i)
        self.assertEqual(e.attempts, 1)
        self.assertIn("boom", e.last_error)
        self.assertEqual(e.next_attempt, NOW + RETRY_SCHEDULE[0])
        failures = [ev for ev in logged if "log_failure" in ev]
        self.assertEqual(failures[0]["queueid"], i)
        self.assertEqual(failures[0]["log_namespace"], "moxtw.queue")
        # The loop keeps running.
        self.assertTrue(svc.running)
        self.deliver.result = OK
        self.clock.advance(RETRY_SCHEDULE[0].total_seconds())
        yield svc.idle()
        self.assertEqual((yield self.queue.list()), [])

    @defer.inlineCallbacks
    def test_bad_result_is_temporary_failure(self):
        self.deliver.result = "delivered"  # not a DeliveryResult
        [i] = yield self.add()
        svc = self.make_service()
        svc.startService()
        yield svc.idle()
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)
        self.assertEqual((yield self.queue.get(i)).attempts, 1)

    @defer.inlineCallbacks
    def test_held_and_futurerelease(self):
        # RFC 4865: not before the release time; held entries not at all.
        [held] = yield self.add(["held@example.com"])
        yield self.queue.hold([held])
        [later] = yield self.add(hold_until=NOW + timedelta(hours=1))
        svc = self.make_service()
        svc.startService()
        yield svc.idle()
        self.assertEqual(self.deliver.calls, [])
        self.clock.advance(3599)
        yield svc.idle()
        self.assertEqual(self.deliver.calls, [])
        self.clock.advance(30)
        yield svc.idle()
        self.assertEqual([e.id for e in self.deliver.calls], [later])
        yield self.queue.unhold([held])
        yield svc.kick()
        yield svc.idle()
        self.assertEqual([e.id for e in self.deliver.calls], [later, held])

    @defer.inlineCallbacks
    def test_concurrency_limit(self):
        self.deliver.result = None
        ids = yield self.add([f"r{n}@example.com" for n in range(7)])
        svc = self.make_service(concurrency=3)
        svc.startService()
        yield svc.kick()
        self.assertEqual([e.id for e in self.deliver.calls], ids[:3])
        # Entries in flight are not started twice.
        yield svc.kick()
        self.clock.advance(30)
        yield svc.kick()
        self.assertEqual(len(self.deliver.calls), 3)
        # A finished delivery frees a slot for the next due entry.
        nxt = self.deliver.next_call()
        self.deliver.finish(ids[0])
        e = yield nxt
        self.assertEqual(e.id, ids[3])
        self.assertEqual(len(self.deliver.pending), 3)
        while self.deliver.pending:
            nxt = self.deliver.next_call()
            for qid in list(self.deliver.pending):
                self.deliver.finish(qid)
            if len(self.deliver.calls) < len(ids):
                yield nxt
                self.assertLessEqual(len(self.deliver.pending), 3)
        yield svc.idle()
        self.assertEqual(sorted(e.id for e in self.deliver.calls), ids)
        self.assertEqual((yield self.queue.list()), [])

    @defer.inlineCallbacks
    def test_stale_due_result_not_attempted_again(self):
        # A pass's query can read an entry before the result of its running attempt is
        # recorded; the entry must not be attempted again right away.
        self.deliver.result = None
        [i] = yield self.add()
        svc = self.make_service()
        svc.startService()
        yield svc.kick()
        self.queue.stall = stall = defer.Deferred()
        self.queue.read = read = defer.Deferred()
        kicked = svc.kick()
        yield read
        attempt = svc._inflight[i]
        self.deliver.finish(i, REMOTE_UNAVAILABLE)
        yield attempt  # recorded
        stall.callback(None)
        yield kicked
        yield svc.idle()
        self.assertEqual(len(self.deliver.calls), 1)
        self.assertEqual((yield self.queue.get(i)).attempts, 1)

    @defer.inlineCallbacks
    def test_dropped_during_delivery(self):
        self.deliver.result = None
        [i] = yield self.add()
        svc = self.make_service()
        svc.startService()
        yield svc.kick()
        yield self.queue.drop([i])
        self.deliver.finish(i, REMOTE_UNAVAILABLE)
        yield svc.idle()
        self.assertEqual((yield self.queue.list()), [])

    @defer.inlineCallbacks
    def test_stop_waits_for_deliveries(self):
        self.deliver.result = None
        [i] = yield self.add()
        svc = self.make_service()
        svc.startService()
        yield svc.kick()
        stopped = svc.stopService()
        self.assertFalse(stopped.called)
        self.assertFalse(svc.running)
        self.deliver.finish(i)
        yield stopped
        self.assertEqual((yield self.queue.list()), [])
        # No pass after stop.
        [j] = yield self.add()
        self.clock.advance(60)
        yield svc.kick()
        self.assertEqual([e.id for e in self.deliver.calls], [i])

    @defer.inlineCallbacks
    def test_stop_cancels_after_timeout(self):
        self.deliver.result = None
        [i] = yield self.add()
        svc = self.make_service(stop_timeout=10)
        svc.startService()
        yield svc.kick()
        pending = self.deliver.pending[i]
        stopped = svc.stopService()
        self.clock.advance(9)
        self.assertFalse(stopped.called)
        self.clock.advance(1)
        yield stopped
        self.assertTrue(pending.called)
        self.flushLoggedErrors(defer.CancelledError)
        # The interrupted attempt is not recorded; the entry is tried again after a restart.
        e = yield self.queue.get(i)
        self.assertEqual((e.attempts, e.next_attempt), (0, NOW))

    @defer.inlineCallbacks
    def test_stop_idle(self):
        svc = self.make_service()
        svc.startService()
        yield svc.idle()
        yield svc.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class GroupDeliver:
    """A deliver_group function answering each recipient from ``results`` (by address,
    default OK)."""

    def __init__(self, results=None):
        self.results = results or {}
        self.calls = []

    def __call__(self, entries):
        self.calls.append([e.recipient for e in entries])
        return defer.succeed([self.results.get(e.recipient, OK) for e in entries])


class GroupTests(ServiceTestBase):
    def make_group_service(self, deliver, **kw):
        svc = QueueService(self.queue, clock=self.clock, deliver_group=deliver, **kw)
        self.addCleanup(self.stop, svc)
        return svc

    @defer.inlineCallbacks
    def test_gauges_after_pass(self):
        from moxtw.metrics import QUEUE_OLDEST_AGE, QUEUE_SIZE

        yield self.add(["a@one.example", "b@one.example"], hold_until=self.queue.now() + timedelta(hours=1))
        svc = self.make_group_service(GroupDeliver())
        self.clock.advance(90)
        svc.startService()
        yield svc.idle()
        self.assertEqual(QUEUE_SIZE._value.get(), 2)
        self.assertEqual(QUEUE_OLDEST_AGE._value.get(), 90)

    @defer.inlineCallbacks
    def test_one_dsn_per_message(self):
        class ManyDSN:
            def __init__(self):
                self.calls = []

            def __call__(self, entry, kind, error):
                raise AssertionError("many() is used when there")

            def many(self, kind, items):
                self.calls.append((kind, sorted(e.recipient for e, _ in items)))
                return defer.succeed([])

        dsn = ManyDSN()
        perm = DeliveryResult(ok=False, permanent=True, error="556 null MX")
        yield self.add(["a@one.example", "b@one.example", "c@two.example"])
        svc = self.make_group_service(GroupDeliver({r: perm for r in ("a@one.example", "b@one.example",
                                                                      "c@two.example")}), dsn=dsn)
        svc.startService()
        yield svc.idle()
        # One per attempt group of the message: one.example's two recipients together.
        self.assertEqual(sorted(dsn.calls), [("failed", ["a@one.example", "b@one.example"]),
                                             ("failed", ["c@two.example"])])
        self.assertEqual((yield self.queue.list()), [])
        # queue fail of several recipients of one message: one DSN.
        dsn.calls.clear()
        yield self.add(["x@three.example", "y@four.example"])
        entries = yield self.queue.list()
        failed = yield defer.Deferred.fromCoroutine(svc.fail(entries, "given up"))
        self.assertEqual(len(failed), 2)
        self.assertEqual(dsn.calls, [("failed", ["x@three.example", "y@four.example"])])

    def test_needs_one_deliver_function(self):
        self.assertRaises(ValueError, QueueService, self.queue, clock=self.clock)
        self.assertRaises(ValueError, QueueService, self.queue, self.deliver, clock=self.clock,
                          deliver_group=GroupDeliver())

    @defer.inlineCallbacks
    def test_recipients_of_one_domain_together(self):
        yield self.add(["a@one.example", "b@two.example", "c@one.example"])
        yield self.add(["d@one.example"])
        deliver = GroupDeliver()
        svc = self.make_group_service(deliver)
        svc.startService()
        yield svc.idle()
        self.assertEqual(sorted(deliver.calls), sorted([
            ["a@one.example", "c@one.example"], ["b@two.example"], ["d@one.example"],
        ]))
        self.assertEqual((yield self.queue.list()), [])

    @defer.inlineCallbacks
    def test_mixed_results_per_recipient(self):
        ids = yield self.add(["a@one.example", "b@one.example", "c@one.example"])
        deliver = GroupDeliver({
            "b@one.example": DeliveryResult(ok=False, permanent=False, error="451 later"),
            "c@one.example": DeliveryResult(ok=False, permanent=True, error="550 no"),
        })
        svc = self.make_group_service(deliver)
        svc.startService()
        yield svc.idle()
        [left] = yield self.queue.list()
        self.assertEqual(left.id, ids[1])
        self.assertEqual(left.attempts, 1)
        self.assertEqual(left.last_error, "451 later")
        # The retry is a group of the one recipient left.
        self.clock.advance(retry_delay(1).total_seconds())
        yield svc.kick()
        yield svc.idle()
        self.assertEqual(deliver.calls[-1], ["b@one.example"])

    @defer.inlineCallbacks
    def test_wrong_number_of_results_is_temporary(self):
        yield self.add(["a@one.example", "b@one.example"])
        svc = self.make_group_service(lambda entries: defer.succeed([OK]))
        svc.startService()
        yield svc.idle()
        entries = yield self.queue.list()
        self.assertEqual([e.attempts for e in entries], [1, 1])
        self.assertTrue(all(e.last_error.startswith("internal error") for e in entries))
        self.flushLoggedErrors(TypeError)

    @defer.inlineCallbacks
    def test_group_takes_one_slot(self):
        for _ in range(3):
            yield self.add(["a@one.example", "b@one.example"])
        pending = []
        waiters = []

        def deliver(entries):
            d = defer.Deferred()
            pending.append((entries, d))
            while waiters:
                waiters.pop().callback(None)
            return d

        svc = self.make_group_service(deliver, concurrency=2)
        svc.startService()
        yield svc.kick()
        self.assertEqual([len(e) for e, _ in pending], [2, 2])
        entries, d = pending.pop(0)
        third = defer.Deferred()
        waiters.append(third)
        d.callback([OK] * len(entries))
        yield third  # the freed slot went to the third message's group
        self.assertEqual(len(pending), 2)
        while pending:
            entries, d = pending.pop(0)
            d.callback([OK] * len(entries))
        yield svc.idle()
        self.assertEqual((yield self.queue.list()), [])


class FakeDSN:
    """A dsn hook: records calls; fails with ``error`` when set."""

    def __init__(self):
        self.calls = []
        self.error = None

    def __call__(self, entry, kind, error):
        self.calls.append((entry, kind, error))
        if self.error is not None:
            return defer.fail(self.error)
        return defer.succeed([])


class DSNTests(ServiceTestBase):
    """When the dsn hook is called (RFC 3461, RFC 3464)."""

    PERMANENT = DeliveryResult(ok=False, permanent=True, error="550 5.1.1 no such user")

    def make_service(self, **kw):
        self.dsn = FakeDSN()
        return super().make_service(dsn=self.dsn, **kw)

    @defer.inlineCallbacks
    def run_attempts(self, svc, i, count):
        """Let ``count`` more attempts of entry ``i`` happen on the clock."""
        for _ in range(count):
            e = yield self.queue.get(i)
            self.clock.advance(max((e.next_attempt - self.queue.now()).total_seconds(), 0))
            yield svc.kick()
            yield svc.idle()

    @defer.inlineCallbacks
    def test_full_schedule_of_submitted_mail(self):
        # As mox: attempts at once, then after 7.5 min, 15 min, 30 min, 1 h, 2 h (delayed
        # DSN), 4 h, 8 h and 16 h (failed DSN): nine attempts over about 32 hours.
        from moxtw.queue.service import DEFAULT_MAX_ATTEMPTS

        self.deliver.result = REMOTE_UNAVAILABLE
        [i] = yield self.add(max_attempts=DEFAULT_MAX_ATTEMPTS)
        start = self.clock.seconds()
        svc = self.make_service()
        svc.startService()
        yield svc.idle()
        times = [self.clock.seconds()]
        for n in range(1, DEFAULT_MAX_ATTEMPTS):
            yield self.run_attempts(svc, i, 1)
            times.append(self.clock.seconds())
            attempts = n + 1
            kinds = [k for _, k, _ in self.dsn.calls]
            expected = ["delayed"] if attempts >= DELAYED_DSN_ATTEMPT else []
            if attempts == DEFAULT_MAX_ATTEMPTS:
                expected.append("failed")
            self.assertEqual(kinds, expected, f"after attempt {attempts}")
        gaps = [round((b - a) / 60, 1) for a, b in zip(times, times[1:])]
        self.assertEqual(gaps, [7.5, 15, 30, 60, 120, 240, 480, 960])
        self.assertEqual(len(self.deliver.calls), 9)
        self.assertEqual(times[-1] - start, (7.5 + 15 + 30 + 60 + 120 + 240 + 480 + 960) * 60)
        self.assertEqual((yield self.queue.list()), [])

    @defer.inlineCallbacks
    def test_permanent_failure_one_failed_dsn(self):
        self.deliver.result = self.PERMANENT
        [i] = yield self.add()
        svc = self.make_service()
        svc.startService()
        yield svc.idle()
        [(entry, kind, error)] = self.dsn.calls
        self.assertEqual((entry.id, kind, error), (i, "failed", self.PERMANENT.error))
        self.assertEqual((yield self.queue.list()), [])

    @defer.inlineCallbacks
    def test_dsn_before_removal(self):
        # The entry is still queued while the hook runs: its DSN is durable first.
        self.deliver.result = self.PERMANENT
        [i] = yield self.add()
        seen = []
        svc = self.make_service()

        def hook(entry, kind, error):
            return self.queue.get(entry.id).addCallback(seen.append)

        svc.dsn = hook
        svc.startService()
        yield svc.idle()
        self.assertEqual([e.id for e in seen], [i])
        self.assertEqual((yield self.queue.list()), [])

    @defer.inlineCallbacks
    def test_delayed_dsn_once_at_2h_step(self):
        self.assertEqual(retry_delay(DELAYED_DSN_ATTEMPT), timedelta(hours=2))
        self.assertEqual(retry_delay(DELAYED_DSN_ATTEMPT - 1), timedelta(hours=1))
        self.deliver.result = REMOTE_UNAVAILABLE
        [i] = yield self.add()
        svc = self.make_service()
        svc.startService()
        yield svc.idle()
        yield self.run_attempts(svc, i, DELAYED_DSN_ATTEMPT - 2)
        self.assertEqual(len(self.deliver.calls), DELAYED_DSN_ATTEMPT - 1)
        self.assertEqual(self.dsn.calls, [])
        yield self.run_attempts(svc, i, 1)
        [(entry, kind, error)] = self.dsn.calls
        self.assertEqual((entry.id, kind, error), (i, "delayed", REMOTE_UNAVAILABLE.error))
        # The updated entry: the attempt is recorded before the hook runs.
        self.assertEqual(entry.attempts, DELAYED_DSN_ATTEMPT)
        self.assertEqual(entry.next_attempt - entry.last_attempt, timedelta(hours=2))
        self.assertEqual(entry.last_attempt - NOW, timedelta(minutes=7.5 + 15 + 30 + 60))
        yield self.run_attempts(svc, i, 5)
        self.assertEqual(len(self.deliver.calls), DELAYED_DSN_ATTEMPT + 5)
        self.assertEqual(len(self.dsn.calls), 1)

    @defer.inlineCallbacks
    def test_max_attempts_gives_up_with_failed_dsn(self):
        self.deliver.result = DeliveryResult(ok=False, permanent=False, error="451 4.3.0 busy")
        [i] = yield self.add(max_attempts=3)
        svc = self.make_service()
        svc.startService()
        yield svc.idle()
        yield self.run_attempts(svc, i, 2)
        self.assertEqual(len(self.deliver.calls), 3)
        self.assertEqual([(e.id, k, err) for e, k, err in self.dsn.calls],
                         [(i, "failed", "451 4.3.0 busy")])
        self.assertEqual((yield self.queue.list()), [])

    @defer.inlineCallbacks
    def test_notify(self):
        # RFC 3461 4.1: NEVER, or only the events listed.
        cases = {
            "never@example.com": ["NEVER"],
            "success@example.com": ["SUCCESS"],
            "delay@example.com": ["DELAY"],
            "failure@example.com": ["FAILURE"],
            "both@example.com": ["FAILURE", "DELAY"],
            "default@example.com": None,
        }
        rcpt_dsn = {r: {"notify": n} for r, n in cases.items() if n}
        self.deliver.result = self.PERMANENT
        ids = yield self.add(list(cases), rcpt_dsn=rcpt_dsn)
        svc = self.make_service()
        svc.startService()
        yield svc.idle()
        byid = dict(zip(ids, cases))
        self.assertEqual(sorted(byid[e.id] for e, k, _ in self.dsn.calls),
                         ["both@example.com", "default@example.com", "failure@example.com"])
        self.assertEqual((yield self.queue.list()), [])

        self.deliver.result = REMOTE_UNAVAILABLE
        self.dsn.calls = []
        ids = yield self.add(list(cases), rcpt_dsn=rcpt_dsn)
        byid = dict(zip(ids, cases))
        yield svc.kick()
        yield svc.idle()
        for _ in range(DELAYED_DSN_ATTEMPT - 1):
            self.clock.advance(4 * 3600)
            yield svc.kick()
            yield svc.idle()
        self.assertEqual({k for e, k, _ in self.dsn.calls}, {"delayed"})
        self.assertEqual(sorted(byid[e.id] for e, k, _ in self.dsn.calls),
                         ["both@example.com", "default@example.com", "delay@example.com"])

    @defer.inlineCallbacks
    def test_no_dsn_about_dsn_or_null_sender(self):
        self.deliver.result = self.PERMANENT
        yield self.queue.add(make_message(), "", ["postmaster@example.com"],
                             sender_account=None, is_dsn=True)
        yield self.queue.add(make_message(), "mjl@example.org", ["bob@example.com"],
                             sender_account="mjl", is_dsn=True)
        yield self.queue.add(make_message(), "", ["bob@example.com"], sender_account="mjl")
        svc = self.make_service()
        svc.startService()
        yield svc.idle()
        self.assertEqual(len(self.deliver.calls), 3)
        self.assertEqual(self.dsn.calls, [])
        self.assertEqual((yield self.queue.list()), [])

    @defer.inlineCallbacks
    def test_dsn_error_keeps_entry(self):
        # A failure notice that cannot be queued (disk full, ...) must not be lost: the
        # entry stays and is tried again, and the loop goes on.
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.deliver.result = self.PERMANENT
        [i] = yield self.add()
        svc = self.make_service()
        self.dsn.error = ZeroDivisionError("no disk")
        svc.startService()
        yield svc.idle()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        [ev] = [ev for ev in logged if "log_failure" in ev]
        self.assertEqual((ev["queueids"], ev["kind"]), (str(i), "failed"))
        self.assertEqual(ev["log_namespace"], "moxtw.queue")
        [e] = yield self.queue.list()
        self.assertEqual(e.attempts, 1)
        self.assertIn("failure notice could not be queued", e.last_error)
        self.assertTrue(svc.running)
        # Once the DSN can be queued, the next attempt fails the entry with its DSN.
        self.dsn.error = None
        yield self.run_attempts(svc, i, 1)
        self.assertEqual([k for _, k, _ in self.dsn.calls], ["failed", "failed"])
        self.assertEqual((yield self.queue.list()), [])

    @defer.inlineCallbacks
    def test_dropped_during_delivery_no_dsn(self):
        self.deliver.result = None
        [i] = yield self.add()
        svc = self.make_service()
        svc.startService()
        yield svc.kick()
        yield self.queue.drop([i])
        self.deliver.finish(i, self.PERMANENT)
        yield svc.idle()
        self.assertEqual(self.dsn.calls, [])

    @defer.inlineCallbacks
    def test_dsn_kicks_queue(self):
        # A DSN added by the hook is attempted at once, not at the next interval.
        self.deliver.result = self.PERMANENT
        yield self.add()
        svc = self.make_service(interval=3600)
        queue = self.queue

        def hook(entry, kind, error):
            return queue.add(b"Subject: dsn\r\n\r\nx\r\n", "", [entry.sender],
                             sender_account=None, is_dsn=True)

        svc.dsn = hook
        svc.startService()
        yield svc.idle()
        self.assertEqual([e.is_dsn for e in self.deliver.calls], [False, True])
        self.assertEqual((yield self.queue.list()), [])
