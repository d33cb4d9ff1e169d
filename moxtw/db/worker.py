"""Database workers: one thread per database connection, results as Deferreds. Used by
every SQLite database of moxtw (account indexes, the queue, report databases).

The writer runs every write operation of a database on one thread, in submission order.
Operations that arrive while a commit is in progress are batched: each runs inside a
SAVEPOINT of one transaction, directories touched by the batch are fsynced once, and one
COMMIT (with ``synchronous=FULL``, an fsync of the WAL) makes them all durable together
(group commit). Only then are the Deferreds fired, on the reactor thread, in order.

The reader runs read-only queries on a second connection; with WAL it never waits for the
writer and always sees committed state.
"""

import queue
import threading
import time

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from moxtw import metrics
from moxtw.db import schema

log = Logger(namespace="moxtw.db")

MAX_BATCH = 256


class OpContext:
    """Per-operation side effects that depend on whether the transaction commits."""

    def __init__(self):
        self.changes = []  # published on the change bus after commit
        self.sync_dirs = set()  # fsynced before COMMIT
        self.after_commit = []  # callables run on the worker thread after COMMIT
        self.on_rollback = []  # callables undoing file work when the op or batch fails


class _Op:
    __slots__ = ("fn", "deferred", "ctx", "result")

    def __init__(self, fn):
        self.fn = fn
        self.deferred = defer.Deferred()
        self.ctx = OpContext()
        self.result = None


class Worker:
    """A thread owning one SQLite connection."""

    def __init__(self, path, reactor, name, writer, on_committed=None, store_metrics=False):
        """``on_committed(changes)``: called on the reactor thread with the changes of a
        committed batch. ``store_metrics``: record fsync times and batch sizes in the
        ``store_*`` metrics (the account indexes' writers)."""
        self._path = path
        self._store_metrics = store_metrics
        self._reactor = reactor
        self._writer = writer
        self._on_committed = on_committed
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopped = defer.Deferred()
        self.conn = None
        self._thread.start()

    def submit(self, fn):
        """Run ``fn(conn, ctx)`` on the worker thread; return a Deferred of its result."""
        op = _Op(fn)
        self._queue.put(op)
        return op.deferred

    def stop(self):
        """Finish queued work, close the connection; Deferred fires when done."""
        self._queue.put(None)
        return self._stopped

    def _run(self):
        try:
            self.conn = schema.connect(self._path)
            if not self._writer:
                self.conn.execute("PRAGMA query_only=ON")
        except BaseException:
            f = Failure()
            self._fail_all(f)
            return
        stopping = False
        while not stopping:
            op = self._queue.get()
            if op is None:
                break
            batch = [op]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            if self._writer:
                self._run_write_batch(batch)
            else:
                self._run_read_batch(batch)
        self.conn.close()
        self._reactor.callFromThread(self._stopped.callback, None)

    def _fail_all(self, failure):
        while True:
            op = self._queue.get()
            if op is None:
                break
            self._reactor.callFromThread(op.deferred.errback, failure)
        self._reactor.callFromThread(self._stopped.errback, failure)

    def _run_read_batch(self, batch):
        done = []
        for op in batch:
            try:
                op.result = op.fn(self.conn, op.ctx)
                done.append((op, True))
            except BaseException:
                op.result = Failure()
                done.append((op, False))
        self._reactor.callFromThread(self._deliver, done)

    def _run_write_batch(self, batch):
        conn = self.conn
        done = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            f = Failure()
            self._reactor.callFromThread(self._deliver, [(op, False) for op in batch], f)
            return
        for op in batch:
            conn.execute("SAVEPOINT op")
            try:
                op.result = op.fn(conn, op.ctx)
                conn.execute("RELEASE op")
                done.append((op, True))
            except BaseException:
                op.result = Failure()
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                _undo(op.ctx)
                done.append((op, False))
        batch_failure = None
        try:
            dirs = set()
            for op, ok in done:
                if ok:
                    dirs |= op.ctx.sync_dirs
            for d in sorted(dirs):
                t0 = time.monotonic()
                schema.fsync_dir(d)
                self._observe_fsync(time.monotonic() - t0)
            t0 = time.monotonic()
            conn.execute("COMMIT")
            self._observe_fsync(time.monotonic() - t0)
        except BaseException:
            batch_failure = Failure()
            log.failure("database commit failed", batch_failure, path=self._path)
            try:
                conn.execute("ROLLBACK")
            except Exception:
                pass
            for op, ok in done:
                if ok:
                    _undo(op.ctx)
        if batch_failure is None:
            for op, ok in done:
                if ok:
                    for fn in op.ctx.after_commit:
                        try:
                            fn()
                        except Exception:
                            log.failure("store after-commit step failed")
        if self._store_metrics:
            metrics.STORE_COMMIT_BATCH_SIZE.observe(len(batch))
        self._reactor.callFromThread(self._deliver, done, batch_failure)

    def _observe_fsync(self, seconds):
        if self._store_metrics:
            metrics.STORE_FSYNC_DURATION.observe(seconds)

    def _deliver(self, done, batch_failure=None):
        changes = []
        for op, ok in done:
            if batch_failure is not None:
                op.deferred.errback(batch_failure)
                continue
            if ok:
                changes.extend(op.ctx.changes)
        # Subscribers see changes before the operation's caller continues, so an IMAP
        # session's own APPEND is known to the bus by the time its OK is written.
        if changes and self._on_committed is not None:
            self._on_committed(changes)
        if batch_failure is not None:
            return
        for op, ok in done:
            if ok:
                op.deferred.callback(op.result)
            else:
                op.deferred.errback(op.result)


def _undo(ctx):
    for fn in reversed(ctx.on_rollback):
        try:
            fn()
        except Exception:
            log.failure("store rollback step failed")
