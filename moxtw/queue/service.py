"""QueueService: picks due queue entries, hands them to a delivery function, records results.

The delivery function is injected (``deliver(entry) -> Deferred[DeliveryResult]``): the
application wires one that delivers local recipients through the SMTP server's local
delivery path and, for remote recipients, the SMTP client. Temporary failures are retried
on the schedule in ``RETRY_SCHEDULE``; nothing is given up in this version (DSNs for delays
and final failures come with the SMTP client).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from moxtw.queue.model import EntryNotFound

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

MAX_CONCURRENT = 10  # deliveries in flight at once
STOP_TIMEOUT = 30.0  # seconds stopService waits for deliveries before cancelling them


def retry_delay(attempts):
    """Delay after ``attempts`` (>= 1) failed attempts."""
    return RETRY_SCHEDULE[min(max(attempts, 1), len(RETRY_SCHEDULE)) - 1]


@dataclass(frozen=True)
class DeliveryResult:
    """Outcome of one delivery attempt to one recipient."""

    ok: bool
    permanent: bool = False
    error: str = ""


class QueueService(service.Service):
    """Runs delivery passes every ``interval`` seconds on ``clock`` and on ``kick()``.

    A pass asks the queue for due entries (not held, next attempt reached) and starts a
    delivery for each, keeping at most ``concurrency`` in flight; when a delivery finishes
    while entries were left waiting, another pass starts. An exception from ``deliver``
    counts as a temporary failure. Stopping waits for deliveries in flight, and cancels
    those still running after ``stop_timeout`` seconds (their entries are not changed and
    are attempted again after the next start).
    """

    name = "queue"

    def __init__(self, queue, deliver, clock=None, interval=30.0, concurrency=MAX_CONCURRENT,
                 stop_timeout=STOP_TIMEOUT):
        if clock is None:
            from twisted.internet import reactor as clock
        self.queue = queue
        self.deliver = deliver
        self.clock = clock
        self.interval = interval
        self.concurrency = concurrency
        self.stop_timeout = stop_timeout
        self._loop = None
        self._passing = False  # a pass is running
        self._kicks = []  # Deferreds of kick() waiting for the next pass to finish
        self._backlog = False  # the last pass filled every free slot; more may be due
        self._inflight = {}  # entry id -> Deferred of the whole attempt
        self._delivering = {}  # entry id -> Deferred returned by deliver (cancellable)
        self._finished_during_query = None  # ids whose attempt ended while due() ran
        self._idle_waiters = []

    def now(self):
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc)

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
        log.info("queue stopping, waiting for {count} deliveries", count=len(self._inflight))
        timer = self.clock.callLater(self.stop_timeout, self._cancel_deliveries)
        d = self.idle()

        def stopped(result):
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(stopped)

    def _cancel_deliveries(self):
        for qid, d in list(self._delivering.items()):
            log.warn("queue stopping, cancelling delivery", queueid=qid)
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
                for d in kicks:
                    d.callback(None)
        finally:
            self._passing = False
            self._check_idle()

    async def _pass(self):
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            self._backlog = True
            return
        # In-flight entries are still due; ask for enough to fill the free slots anyway.
        # An attempt that ends while the query runs may have been read before its result
        # was recorded: such entries are left for the next pass.
        self._finished_during_query = finished = set()
        try:
            entries = await self.queue.due(self.now(), limit=free + len(self._inflight))
        finally:
            self._finished_during_query = None
        started = 0
        for entry in entries:
            if not self.running or started >= free or len(self._inflight) >= self.concurrency:
                break
            if entry.id in self._inflight or entry.id in finished:
                continue
            self._start(entry)
            started += 1
        self._backlog = started >= free

    def _start(self, entry):
        d = defer.Deferred.fromCoroutine(self._attempt(entry))
        self._inflight[entry.id] = d
        d.addErrback(lambda f: log.failure("queue attempt failed", f, queueid=entry.id))

        def done(_):
            self._inflight.pop(entry.id, None)
            if self._finished_during_query is not None:
                self._finished_during_query.add(entry.id)
            if self._backlog and self.running:
                self._backlog = False
                self.kick()
            self._check_idle()

        d.addBoth(done)

    async def _attempt(self, entry):
        fields = dict(queueid=entry.id, baseid=entry.base_id, attempt=entry.attempts + 1)
        try:
            d = defer.maybeDeferred(self.deliver, entry)
            self._delivering[entry.id] = d
            try:
                result = await d
            finally:
                self._delivering.pop(entry.id, None)
            if not isinstance(result, DeliveryResult):
                raise TypeError(f"deliver returned {result!r}, not a DeliveryResult")
        except defer.CancelledError:
            log.info("delivery cancelled, entry left unchanged", **fields)
            return
        except Exception as e:
            log.failure("delivery raised an error, treating as temporary failure", **fields)
            result = DeliveryResult(ok=False, permanent=False, error=f"internal error: {e}")

        next_attempt = None
        if result.ok:
            log.info("delivered", **fields)
        elif result.permanent:
            # Loud: delivery status notifications (DSNs) to the sender are not part of this
            # version yet, so this log line is the only trace of the failure.
            log.error("delivery failed permanently, removing (no DSN sent)", error=result.error, **fields)
        else:
            next_attempt = self.now() + retry_delay(entry.attempts + 1)
            log.info("delivery failed temporarily", error=result.error,
                     next_attempt=next_attempt.isoformat(), **fields)
        try:
            await self.queue.record_attempt(
                entry.id, ok=result.ok, permanent=result.permanent, error=result.error,
                next_attempt=next_attempt,
            )
        except EntryNotFound:
            log.info("entry removed during delivery attempt", **fields)

    # -- idleness

    def is_idle(self):
        return not self._passing and not self._inflight

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
