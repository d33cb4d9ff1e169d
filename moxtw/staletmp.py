"""Startup removal of temporary files an earlier run left behind.

Files in a ``tmp/`` directory belong to operations that were never acknowledged: a
message being received over SMTP (``DataDir/tmp/``), a delivery or APPEND being written
into an account (``DataDir/accounts/<name>/maildir/tmp/``), a message being added to the
queue (``DataDir/queue/tmp/``). A file is renamed out of tmp/ before its operation is
acknowledged, so whatever is still there after a crash or kill is a leftover (the same
notion as ``verifydata``, see ``moxtw.store.verify`` and ``moxtw.queue.verify``).

At start the server removes the regular files directly in those directories whose
modification time is older than the start of the process: this process wrote none of
them, and the operations that did were cut off. Subdirectories (``DataDir/tmp/backup``)
and symbolic links are left alone. The store and the queue also remove tmp files older
than 36 hours whenever they are opened, also by a command running next to the server.
"""

import os
import time

from twisted.application import service
from twisted.internet import threads
from twisted.logger import Logger

from moxtw.queue import db as qdb
from moxtw.store import account_dir
from moxtw.store.errors import AccountNameError

log = Logger(namespace="moxtw.staletmp")

# File systems store modification times coarser than time.time() (a kernel tick, 2 s on
# FAT): a file written just after the start may look a little older than the start.
MTIME_SLACK = 2.0


def tmp_dirs(data_dir):
    """The temporary directories under a data directory (existing or not)."""
    dirs = [os.path.join(data_dir, "tmp"), qdb.tmp_dir(data_dir)]
    accounts = os.path.join(data_dir, "accounts")
    for name in sorted(_listdir(accounts)):
        try:
            path = account_dir(data_dir, name)
        except AccountNameError:
            continue  # not an account the store would open
        dirs.append(os.path.join(path, "maildir", "tmp"))
    return dirs


def remove_stale(data_dir, before):
    """Remove files in the tmp directories modified before ``before`` (a time.time()
    value, minus MTIME_SLACK). Blocking: run off the reactor thread. Returns the count."""
    cutoff = before - MTIME_SLACK
    removed = 0
    for d in tmp_dirs(data_dir):
        try:
            entries = list(os.scandir(d))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue  # written since the start: may be in progress
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass  # removed by someone else meanwhile
            except OSError as e:
                log.warn("removing stale temporary file {path}: {err}", path=entry.path, err=e)
    return removed


class StaleTmpService(service.Service):
    """Runs ``remove_stale`` once at start, in a thread, and logs the count.
    ``done`` is a Deferred firing with the count (tests wait for it)."""

    name = "staletmp"

    def __init__(self, data_dir, started=None, in_thread=threads.deferToThread):
        self.data_dir = data_dir
        self.started = time.time() if started is None else started
        self._in_thread = in_thread
        self.done = None

    def startService(self):
        super().startService()
        self.done = self._in_thread(remove_stale, self.data_dir, self.started)

        def removed(count):
            if count:
                log.info("removed {count} stale temporary files of an earlier run", count=count)
            return count

        self.done.addCallback(removed)
        self.done.addErrback(lambda f: log.failure("removing stale temporary files", f))


def _listdir(path):
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
