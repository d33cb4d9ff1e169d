"""QueueService: picks due queue entries, hands them to a delivery function, records results.

Deliveries go where the application says: with ``router`` (a ``moxtw.delivery.Router``)
and ``outbound`` (``moxtw.queue.outbound.Outbound``), recipients in domains the router
calls local get the message through local delivery, the others are sent by the SMTP
client, the due recipients of one message in one domain together (one SMTP
transaction). Tests may inject a function instead: ``deliver(entry) ->
Deferred[DeliveryResult]`` per recipient, or ``deliver_group(entries) ->
Deferred[list[DeliveryResult]]`` per group. Temporary failures are retried
on the schedule in ``RETRY_SCHEDULE``; an entry is given up only when it has a
``max_attempts`` limit.

Delivery status notifications go through an optional ``dsn(entry, kind, error)`` hook
(``moxtw.queue.dsn.QueueDSN`` in the application): "failed" when a delivery fails permanently or
is given up, "delayed" once, when the attempt after which the retry delay reaches
``DELAYED_DSN_AFTER`` fails temporarily. The hook is never called for DSNs themselves, for
the null reverse-path, or against the recipient's RFC 3461 NOTIFY.
"""

from datetime import datetime, timedelta, timezone

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger

from moxtw.clock import default_reactor
from moxtw.delivery import DeliveryResult
from moxtw.metrics import QUEUE_OLDEST_AGE, QUEUE_SIZE
from moxtw.queue.model import EntryNotFound
from moxtw.smtp import codes as c

log = Logger(namespace="moxtw.queue")

# Delay before the next attempt after the 1st, 2nd, ... failed attempt (as mox); attempts
# after the last keep its delay.
RETRY_SCHEDULE = (
    timedelta(minutes=7.5),
    timedelta(minutes=15),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=4),
    timedelta(hours=8),
    timedelta(hours=16),
)

# As mox: one "delayed" DSN, after the attempt whose retry delay reaches 2 hours
# (the 5th: about 2 hours after queueing).
DELAYED_DSN_AFTER = timedelta(hours=2)

MAX_CONCURRENT = 10  # deliveries in flight at once
STOP_TIMEOUT = 30.0  # seconds stopService waits for deliveries before cancelling them
# Attempts before a message is given up: the first at once, then one after each delay
# of the schedule (the last 16 hours after the one before), as mox.
DEFAULT_MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
GROUP_FETCH = 20  # with grouping, due entries read per free slot


def retry_delay(attempts):
    """Delay after ``attempts`` (>= 1) failed attempts."""
    return RETRY_SCHEDULE[min(max(attempts, 1), len(RETRY_SCHEDULE)) - 1]


# The attempt number (1-based) whose temporary failure sends the delayed DSN. The
# attempts counter only grows, so reaching it once is the record that the DSN was sent.
DELAYED_DSN_ATTEMPT = next(
    n for n in range(1, len(RETRY_SCHEDULE) + 1) if retry_delay(n) >= DELAYED_DSN_AFTER
)

# The NOTIFY keyword that asks for each kind of DSN (RFC 3461 4.1).
_NOTIFY_KEYWORD = {"failed": "FAILURE", "delayed": "DELAY"}


def wants_dsn(entry, kind):
    """Whether the sender of ``entry`` gets a DSN of ``kind`` ("failed" or "delayed")."""
    if entry.is_dsn:
        return False  # RFC 5321 4.5.5: no notification about a notification
    if entry.sender == "":
        return False  # RFC 5321 4.5.5, 6.1: no notifications to the null reverse-path
    notify = set(entry.dsn_notify)
    if "NEVER" in notify:
        return False  # RFC 3461 4.1
    if not notify:
        return True  # RFC 3461 4.1: without NOTIFY, ours is FAILURE,DELAY
    return _NOTIFY_KEYWORD[kind] in notify


class QueueService(service.Service):
    """Runs delivery passes every ``interval`` seconds on ``clock`` and on ``kick()``.

    A pass asks the queue for due entries (not held, next attempt reached) and starts a
    delivery for each, keeping at most ``concurrency`` in flight; when a delivery finishes
    while entries were left waiting, another pass starts. An exception from ``deliver``
    counts as a temporary failure. Stopping waits for deliveries in flight, and cancels
    those still running after ``stop_timeout`` seconds (their entries are not changed and
    are attempted again after the next start).

    ``dsn(entry, kind, error) -> Deferred``, when given, queues a DSN (see the module
    docstring); it is awaited within the attempt, before a failed entry is removed, its
    errors are logged, and a pass is kicked after it so the DSN goes out at once.
    """

    name = "queue"

    def __init__(self, queue, deliver=None, clock=None, interval=30.0, concurrency=MAX_CONCURRENT,
                 stop_timeout=STOP_TIMEOUT, dsn=None, deliver_group=None, router=None, outbound=None):
        if sum(x is not None for x in (deliver, deliver_group, router)) != 1:
            raise ValueError("give exactly one of router, deliver and deliver_group")
        self.router = router
        self.outbound = outbound
        if router is not None:
            deliver_group = self._route
        clock = default_reactor(clock)
        self.queue = queue
        self.deliver = deliver
        self.clock = clock
        self.interval = interval
        self.concurrency = concurrency
        self.stop_timeout = stop_timeout
        self.dsn = dsn
        self.deliver_group = deliver_group
        self._loop = None
        self._passing = False  # a pass is running
        self._kicks = []  # Deferreds of kick() waiting for the next pass to finish
        self._backlog = False  # the last pass filled every free slot; more may be due
        self._inflight = {}  # entry id -> Deferred of the whole attempt (shared by a group)
        self._attempts = set()  # Deferreds of attempts in flight; each takes one slot
        self._delivering = {}  # entry id -> Deferred returned by deliver (cancellable)
        self._finished_during_query = None  # ids whose attempt ended while due() ran
        self._idle_waiters = []

    def now(self):
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc)

    def _route(self, entries):
        return defer.Deferred.fromCoroutine(self._route_group(entries))

    async def _route_group(self, entries):
        """One message's due recipients in one domain: local delivery or the SMTP client."""
        if not self.router.is_local(entries[0].recipient_domain):
            if self.outbound is None:
                return [DeliveryResult(False, False, "no outbound delivery configured")] * len(entries)
            return await self.outbound.deliver_group(entries)
        results = []
        for entry in entries:
            try:
                data = await threads.deferToThread(_read_file, self.queue.message_path(entry))
            except FileNotFoundError:
                results.append(_missing_file(entry))
                continue
            # msg_prefix: header fields added at queueing (a DKIM-Signature).
            try:
                results.append(await self.router.deliver_queued(entry, entry.msg_prefix + data))
            except Exception as e:
                # This entry only: the others of the group keep their results.
                log.failure("local delivery of queue entry {id}", id=entry.id)
                results.append(DeliveryResult(False, False, c.reply_text(
                    c.C451_LOCAL_ERROR, c.SE_MAIL_SYSTEM_OTHER0, f"local delivery error: {e.__class__.__name__}")))
        if any(r.requeued for r in results):
            self.kick()  # alias members still to deliver were queued anew
        return results

    # -- service

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self.kick)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        for d in self._kicks:
            d.callback(None)
        self._kicks = []
        if self.is_idle():
            return defer.succeed(None)
        log.info("queue stopping, waiting for {count} deliveries", count=len(self._attempts))
        timer = self.clock.callLater(self.stop_timeout, self._cancel_deliveries)
        d = self.idle()

        def stopped(result):
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(stopped)

    def _cancel_deliveries(self):
        cancelled = set()
        for qid, d in list(self._delivering.items()):
            log.warn("queue stopping, cancelling delivery", queueid=qid)
            if id(d) not in cancelled:
                cancelled.add(id(d))
                d.cancel()

    # -- passes

    def kick(self):
        """Run a delivery pass now (or right after the one running). The Deferred fires
        when that pass has started its deliveries, not when they finish (see ``idle``)."""
        d = defer.Deferred()
        if not self.running:
            d.callback(None)
            return d
        self._kicks.append(d)
        if not self._passing:
            self._passing = True
            defer.Deferred.fromCoroutine(self._run_passes()).addErrback(
                lambda f: log.failure("queue pass failed", f)
            )
        return d

    async def _run_passes(self):
        try:
            while self._kicks and self.running:
                kicks, self._kicks = self._kicks, []
                try:
                    await self._pass()
                except Exception:
                    log.failure("queue pass failed")
                try:
                    await self._update_gauges()
                except Exception:
                    log.failure("queue statistics failed")
                for d in kicks:
                    d.callback(None)
        finally:
            self._passing = False
            self._check_idle()

    async def _pass(self):
        free = self.concurrency - len(self._attempts)
        if free <= 0:
            self._backlog = True
            return
        # In-flight entries are still due; ask for enough to fill the free slots anyway.
        # An attempt that ends while the query runs may have been read before its result
        # was recorded: such entries are left for the next pass.
        self._finished_during_query = finished = set()
        per_slot = GROUP_FETCH if self.deliver_group is not None else 1
        try:
            entries = await self.queue.due(self.now(), limit=free * per_slot + len(self._inflight))
        finally:
            self._finished_during_query = None
        started = 0
        groups = self._groups(e for e in entries if e.id not in self._inflight and e.id not in finished)
        for group in groups:
            if not self.running or started >= free or len(self._attempts) >= self.concurrency:
                break
            self._start(group)
            started += 1
        self._backlog = started >= free

    async def _update_gauges(self):
        count, oldest = await self.queue.stats()
        QUEUE_SIZE.set(count)
        QUEUE_OLDEST_AGE.set(max(0.0, (self.now() - oldest).total_seconds()) if oldest else 0)

    def _groups(self, entries):
        """Due entries in attempts: one each with ``deliver``; with ``deliver_group``, the
        recipients of one message in one domain together (one SMTP transaction for
        them), in order of their first entry."""
        if self.deliver_group is None:
            return [[e] for e in entries]
        groups = {}
        for e in entries:
            key = (e.base_id, e.recipient_domain.lower(), e.sender_account, e.transport)
            groups.setdefault(key, []).append(e)
        return list(groups.values())

    def _start(self, group):
        d = defer.Deferred.fromCoroutine(self._attempt(group))
        self._attempts.add(d)
        for entry in group:
            self._inflight[entry.id] = d
        ids = [e.id for e in group]
        d.addErrback(lambda f: log.failure("queue attempt failed", f, queueids=ids))

        def done(_):
            self._attempts.discard(d)
            for qid in ids:
                self._inflight.pop(qid, None)
                if self._finished_during_query is not None:
                    self._finished_during_query.add(qid)
            if self._backlog and self.running:
                self._backlog = False
                self.kick()
            self._check_idle()

        d.addBoth(done)

    async def _attempt(self, group):
        ids = dict(queueid=group[0].id)
        if len(group) > 1:
            ids["queueids"] = ",".join(str(e.id) for e in group)
        try:
            if self.deliver_group is not None:
                d = defer.maybeDeferred(self.deliver_group, list(group))
            else:
                d = defer.maybeDeferred(self.deliver, group[0])
            for entry in group:
                self._delivering[entry.id] = d
            try:
                results = await d
            finally:
                for entry in group:
                    self._delivering.pop(entry.id, None)
            if self.deliver_group is None:
                results = [results]
            if not isinstance(results, (list, tuple)) or len(results) != len(group):
                raise TypeError(f"deliver returned {results!r}, not {len(group)} DeliveryResult(s)")
            for result in results:
                if not isinstance(result, DeliveryResult):
                    raise TypeError(f"deliver returned {result!r}, not a DeliveryResult")
        except defer.CancelledError:
            log.info("delivery cancelled, entries left unchanged", **ids)
            return
        except Exception as e:
            log.failure("delivery raised an error, treating as temporary failure", **ids)
            results = [DeliveryResult(ok=False, permanent=False, error=f"internal error: {e}")] * len(group)
        failed = []  # (entry, result, give_up): final failures, settled together
        delayed = []  # (entry, error): delayed DSNs due
        for entry, result in zip(group, results):
            await self._settle(entry, result, failed, delayed)
        if delayed:
            # Recorded first: a crash right here loses the delay notice rather than
            # sending it twice; the final failure still gets its DSN.
            await self._send_dsns("delayed", delayed)
        if failed:
            await self._fail_entries(failed)

    async def _settle(self, entry, result, failed, delayed):
        """Record the outcome of an attempt for one entry: delivered, or retried later
        (delayed DSN at its step); final failures are collected in ``failed``."""
        fields = dict(queueid=entry.id, baseid=entry.base_id, attempt=entry.attempts + 1)
        n = entry.attempts + 1
        # A limit in max_attempts turns the last temporary failure into a final one.
        give_up = (not result.ok and not result.permanent
                   and entry.max_attempts > 0 and n >= entry.max_attempts)
        try:
            if result.ok:
                log.info("delivered", **fields)
                await self._record(entry, result)
            elif result.permanent or give_up:
                failed.append((entry, result, give_up))
            else:
                next_attempt = self.now() + retry_delay(n)
                log.info("delivery failed temporarily", error=result.error,
                         next_attempt=next_attempt.isoformat(), **fields)
                updated = await self._record(entry, result, next_attempt=next_attempt)
                if n == DELAYED_DSN_ATTEMPT and wants_dsn(updated, "delayed"):
                    delayed.append((updated, result.error))
        except EntryNotFound:
            log.info("entry removed during delivery attempt", **fields)

    async def _fail_entries(self, failed, removal=None):
        """Final failures: one DSN per message for the recipients that want one, durable
        in the queue before the entries go (a crash in between means a second attempt
        and maybe a second DSN, never a lost one). When the DSN cannot be queued the
        entries stay, retried later, so the sender still hears of it. Returns the
        entries removed. ``removal(entry)``: how to remove (default: record the final
        failure)."""
        current = []
        for entry, result, give_up in failed:
            try:
                # Dropped while the attempt ran (e.g. by the operator): no DSN.
                current.append((await self.queue.get(entry.id), result, give_up))
            except EntryNotFound:
                log.info("entry removed during delivery attempt", queueid=entry.id, baseid=entry.base_id)
        by_message = {}
        for item in current:
            by_message.setdefault(item[0].base_id, []).append(item)
        removed = []
        for items in by_message.values():
            wanting = [(e, r.error) for e, r, _ in items if wants_dsn(e, "failed")]
            dsn_ok = await self._send_dsns("failed", wanting) if wanting else True
            for entry, result, give_up in items:
                fields = dict(queueid=entry.id, baseid=entry.base_id, attempt=entry.attempts + 1)
                try:
                    if not dsn_ok and wants_dsn(entry, "failed"):
                        next_attempt = self.now() + retry_delay(1)
                        log.error("DSN could not be queued, keeping the entry", error=result.error,
                                  next_attempt=next_attempt.isoformat(), **fields)
                        await self.queue.record_attempt(
                            entry.id, ok=False, permanent=False,
                            error=f"{result.error} (failure notice could not be queued, will retry)",
                            next_attempt=next_attempt)
                        continue
                    log.warn("delivery failed permanently, removing", error=result.error,
                             gave_up=give_up, dsn=wants_dsn(entry, "failed"), **fields)
                    if removal is not None:
                        await removal(entry)
                    else:
                        await self._record(entry, DeliveryResult(ok=False, permanent=True, error=result.error))
                    removed.append(entry)
                except EntryNotFound:
                    log.info("entry removed during delivery attempt", **fields)
        return removed

    def _record(self, entry, result, next_attempt=None):
        return self.queue.record_attempt(
            entry.id, ok=result.ok, permanent=result.permanent, error=result.error,
            next_attempt=next_attempt,
        )

    async def _send_dsns(self, kind, items):
        """Queue DSNs of ``kind`` for ``items`` [(entry, error)]: one per message when the
        hook has ``many(kind, items)``, else one per entry. True when all were queued;
        failures are logged."""
        if self.dsn is None or not items:
            return True
        by_message = {}
        for entry, error in items:
            by_message.setdefault(entry.base_id, []).append((entry, error))
        ok = True
        for group in by_message.values():
            calls = ([lambda g=group: self.dsn.many(kind, g)] if hasattr(self.dsn, "many")
                     else [lambda e=e, err=err: self.dsn(e, kind, err) for e, err in group])
            for call in calls:
                try:
                    await defer.maybeDeferred(call)
                except Exception:
                    log.failure("queueing {kind} DSN failed", kind=kind,
                                queueids=",".join(str(e.id) for e, _ in group))
                    ok = False
        if self.running:
            self.kick()
        return ok

    # -- administration

    async def fail(self, entries, reason):
        """Give up ``entries`` now, as after a permanent failure: one DSN per message to
        the sender (where one is wanted), then removal. Returns the entries failed;
        entries whose DSN could not be queued are left in the queue."""
        result = DeliveryResult(ok=False, permanent=True, error=reason)
        for entry in entries:
            log.warn("delivery failed by the administrator", reason=reason, queueid=entry.id, baseid=entry.base_id)

        async def drop(entry):
            await self.queue.drop([entry.id])

        return await self._fail_entries([(e, result, False) for e in entries], removal=drop)

    # -- idleness

    def is_idle(self):
        return not self._passing and not self._attempts

    def idle(self):
        """Deferred firing once no pass runs and no delivery is in flight."""
        if self.is_idle():
            return defer.succeed(None)
        d = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    def _check_idle(self):
        if self.is_idle():
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)


def _read_file(path):
    with open(path, "rb") as f:
        return f.read()


def _missing_file(entry):
    """A queue entry whose message file is gone can never be delivered: fail it (DSN to
    the sender) and say so in the log, never drop it silently."""
    log.error("message file of queue entry missing, failing delivery", queueid=entry.id, baseid=entry.base_id)
    return DeliveryResult(False, True, c.reply_text(c.C554_TRANSACTION_FAILED, c.SE_MAIL_SYSTEM_OTHER0, "message file missing from the queue"))
