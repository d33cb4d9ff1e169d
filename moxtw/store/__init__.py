"""The message store: accounts with mailboxes and messages.

Layout under the data directory::

    accounts/<name>/index.db          SQLite index (WAL, synchronous=FULL), all state
    accounts/<name>/maildir/tmp/      message files being written
    accounts/<name>/maildir/cur/N/ID  immutable message files, sharded by id

``Store(data_dir).open_account(name)`` returns a Deferred firing with an
``moxtw.store.account.Account``; see there for the operations. ``moxtw.store.verify``
checks files against the index after a crash.
"""

import os
import re
import time

from twisted.internet import defer, threads
from twisted.python.failure import Failure

from moxtw import durable
from moxtw.clock import default_reactor
from moxtw.store import schema
from moxtw.store.account import (
    Account,
    fill_fts_hook,
    init_account_db,
    message_file,
    search_text_hook,
)
from moxtw.store.changes import ChangeBus  # noqa: F401 (public API)
from moxtw.store.errors import *  # noqa: F401,F403 (public API)
from moxtw.store.errors import AccountNameError
from moxtw.store.hold import clean_held_files
from moxtw.store.model import (  # noqa: F401 (public API)
    DeliveryFacts,
    Mailbox,
    Message,
    SearchCriteria,
)

_ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
STALE_TMP = 36 * 3600


def account_dir(data_dir, name):
    if not _ACCOUNT_NAME.match(name) or ".." in name:
        raise AccountNameError(f"invalid account name {name!r}")
    return os.path.join(data_dir, "accounts", name)


def prepare_account_dir(path, now=None, owner=True):
    """Create directories and the index, upgrade its schema. Blocking; off the reactor.
    ``owner``: this process runs the server (or no server runs), so files the previous
    run held for IMAP sessions are removed; a command beside a running server (False)
    must leave them, the server's sessions may still read them."""
    maildir = os.path.join(path, "maildir")
    for d in (path, maildir, os.path.join(maildir, "tmp"), os.path.join(maildir, "cur")):
        if not os.path.isdir(d):
            durable.make_dirs(d)
            schema.fsync_dir(os.path.dirname(d))
    conn = schema.connect(os.path.join(path, "index.db"))
    try:
        schema.upgrade(conn, hooks={2: fill_fts_hook(maildir), 5: search_text_hook(maildir)})
        init_account_db(conn, now)
        # Files of expunged messages held for IMAP sessions when the process stopped.
        if owner:
            clean_held_files(conn, maildir, message_file)
    finally:
        conn.close()
    # Files in tmp/ belong to deliveries that were never acknowledged. Only old ones are
    # removed: another process (a CLI command) may be delivering right now.
    tmp = os.path.join(maildir, "tmp")
    cutoff = (now or time.time()) - STALE_TMP
    for entry in os.scandir(tmp):
        try:
            if entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
        except FileNotFoundError:
            pass


class Store:
    """All accounts under one data directory."""

    def __init__(self, data_dir, reactor=None, threadpool=None, owner=True):
        """``owner=False`` for commands that may run beside the server (export,
        setaccountpassword): opening an account then leaves the server's held files
        alone and does not start the search-text indexer."""
        reactor = default_reactor(reactor)
        self.data_dir = data_dir
        self.owner = owner
        self._reactor = reactor
        self._threadpool = threadpool
        self._accounts = {}
        self._opening = {}

    def account_names(self):
        d = os.path.join(self.data_dir, "accounts")
        if not os.path.isdir(d):
            return []
        return sorted(n for n in os.listdir(d) if _ACCOUNT_NAME.match(n))

    def open_account(self, name):
        """Deferred[Account]; the account's directory and index are created on first use."""
        if name in self._accounts:
            return defer.succeed(self._accounts[name])
        if name in self._opening:
            d = defer.Deferred()
            self._opening[name].append(d)
            return d
        try:
            path = account_dir(self.data_dir, name)
        except AccountNameError:
            return defer.fail()
        waiting = self._opening[name] = []

        def opened(_):
            acc = Account(name, path, self._reactor, self._threadpool)
            self._accounts[name] = acc
            if self.owner:
                acc._kick_indexer(delay=False)  # texts a crash left to make (text_pending)
            return acc

        def done(result):
            del self._opening[name]
            for d in waiting:
                d.errback(result) if isinstance(result, Failure) else d.callback(result)
            return result

        if self._threadpool is None:
            d = threads.deferToThread(prepare_account_dir, path, None, self.owner)
        else:
            d = threads.deferToThreadPool(self._reactor, self._threadpool, prepare_account_dir, path, None,
                                          self.owner)
        return d.addCallback(opened).addBoth(done)

    def open_accounts(self):
        return list(self._accounts.values())

    def close(self):
        accounts = list(self._accounts.values())
        self._accounts.clear()
        return defer.gatherResults([a.close() for a in accounts])
