"""Database: one SQLite file with a versioned schema, a writer and a reader thread.

The base of the queue (``moxtw.queue.db``), the received report databases
(``moxtw.reports.received``) and the DMARC evaluations (``moxtw.reports.dmarc.evaluations``). SQLite runs
off the reactor thread (``moxtw.db.worker``), with WAL and ``synchronous=FULL``: the
Deferred of a write fires only once it is on disk. (Account indexes have more to them and
use the workers directly: ``moxtw.store.account``.)
"""

import os
from datetime import datetime, timezone

from twisted.internet import defer, threads

from moxtw import durable
from moxtw.clock import default_reactor
from moxtw.db.worker import Worker


class Database:
    """Subclasses set ``db_name`` (the file in the data directory), ``schema`` (the
    module of its schema package, see ``moxtw.db.schema``) and ``thread_name``. ``open()``
    before use, ``close()`` at the end; ``clock`` (an ``IReactorTime``, default the
    reactor) gives "now". All public methods return Deferreds."""

    db_name = None
    schema = None
    thread_name = "db"

    def __init__(self, data_dir, reactor=None, clock=None):
        reactor = default_reactor(reactor)
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, self.db_name)
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._writer = None
        self._reader = None

    def open(self):
        """Create or upgrade the database and start its threads. Deferred[self]."""
        if self._writer is not None:
            return defer.succeed(self)

        def opened(_):
            self._writer = Worker(self.path, self._reactor, self.thread_name + "-w", writer=True)
            self._reader = Worker(self.path, self._reactor, self.thread_name + "-r", writer=False)
            return self

        return self._in_thread(self._prepare).addCallback(opened)

    def _prepare(self):
        """Create the directory and the database, upgrade its schema. Blocking: runs in
        a thread at ``open``."""
        if not os.path.isdir(self.data_dir):
            durable.make_dirs(self.data_dir)
            self.schema.fsync_dir(os.path.dirname(os.path.abspath(self.data_dir)))
        conn = self.schema.connect(self.path)
        try:
            self.schema.upgrade(conn)
        finally:
            conn.close()

    def close(self):
        """Finish pending work and close the database. Deferred[None]."""
        if self._writer is None:
            return defer.succeed(None)
        workers = [self._writer.stop(), self._reader.stop()]
        self._writer = self._reader = None
        return defer.gatherResults(workers).addCallback(lambda _: None)

    def now(self):
        return datetime.fromtimestamp(self._clock.seconds(), timezone.utc)

    def _in_thread(self, fn, *args):
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fn, *args)

    def _write_op(self, fn):
        """Run ``fn(conn, ctx)`` in a write transaction (``ctx``: a
        ``moxtw.db.worker.OpContext`` for directories to fsync and file work to do or
        undo); the Deferred fires after the COMMIT."""
        if self._writer is None:
            return defer.fail(RuntimeError(f"{self.db_name} is not open"))
        return self._writer.submit(fn)

    def _write(self, fn):
        """Run ``fn(conn)`` in a write transaction; the Deferred fires after the COMMIT."""
        return self._write_op(lambda conn, ctx: fn(conn))

    def _read(self, fn):
        """Run ``fn(conn)`` on the reader's connection (committed state)."""
        if self._reader is None:
            return defer.fail(RuntimeError(f"{self.db_name} is not open"))
        return self._reader.submit(lambda conn, ctx: fn(conn))
