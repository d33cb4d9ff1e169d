"""A message being received into an account's ``maildir/tmp/`` while it arrives.

IMAP APPEND of a large literal writes the bytes here as they come in (``Spool.write``,
off the reactor thread) instead of keeping them in memory; the protocol pauses reading
from the client until each slice is written, so a connection holds at most one slice.
``Account.append``/``append_many`` take a finished Spool in place of the message bytes:
the file is fsynced and renamed into place, not copied. A Spool that is not delivered
must be ``discard``ed; one left over by a crash is an unacknowledged file in tmp/, which
startup and ``verifydata --fix`` remove.
"""

import os
import time
import uuid

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

# Adding a spooled message reads it into memory once to parse it. That happens in one
# thread of its own, one message at a time whatever the number of connections uploading:
# the C allocator keeps memory a thread freed for that thread's later use, so large
# messages parsed in every thread of a pool would each leave their size behind.
_prepare_pool = None


def prepare_in_thread(reactor, fn, *args):
    """Run ``fn(*args)`` in the thread that prepares spooled messages; Deferred."""
    global _prepare_pool
    if _prepare_pool is None or _prepare_pool.joined:  # none yet, or stopped at a shutdown
        pool = ThreadPool(1, 1, name="moxtw-spool-prepare")
        pool.start()
        reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
        _prepare_pool = pool
    return threads.deferToThreadPool(reactor, _prepare_pool, fn, *args)


class Spool:
    def __init__(self, maildir, in_thread):
        """``in_thread(fn, *args)``: runs fn off the reactor thread, Deferred result."""
        self.path = os.path.join(maildir, "tmp", f"{time.time_ns()}.{uuid.uuid4().hex}.spool")
        self.size = 0
        self._in_thread = in_thread
        self._fd = None
        self._last = defer.succeed(None)
        self.closed = False

    def write(self, data):
        """Append ``data``; Deferred firing when written. Writes run one after another."""
        if self.closed:
            return defer.fail(ValueError("spool is closed"))
        self.size += len(data)
        return self._after_last(self._write, data)

    def _after_last(self, fn, *args):
        """Run ``fn`` in a thread after the previous operation; Deferred of its result."""
        result = defer.Deferred()

        def run(_):
            d = self._in_thread(fn, *args)
            d.chainDeferred(result)
            return d  # the chain waits for it, then goes on with None

        self._last.addBoth(run)
        return result

    def _write(self, data):
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def finish(self):
        """Close the file (the store fsyncs it when the message is added); Deferred."""
        self.closed = True
        return self._after_last(self._close)

    def _close(self):
        if self._fd is None:
            # An empty literal: still a file, so the store treats it like any other.
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        fd, self._fd = self._fd, None
        os.close(fd)

    def discard(self):
        """Remove the file unless it was delivered (renamed away); Deferred, never fails."""
        self.closed = True
        d = self._after_last(self._discard)
        d.addErrback(lambda _: None)
        return d

    def _discard(self):
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
