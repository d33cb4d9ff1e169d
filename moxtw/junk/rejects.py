"""Cleaning the Rejects mailboxes: messages older than 14 days (mox's period) are removed
from each account's RejectsMailbox, unless the account has KeepRejects. Hourly, at most
a batch per account per run, through the store's expunge (IMAP sessions are told)."""

import time

from twisted.application import internet
from twisted.internet import defer
from twisted.logger import Logger

log = Logger(namespace="moxtw.junk")

KEEP_SECONDS = 14 * 24 * 3600
INTERVAL = 3600.0
BATCH = 1000


async def clean_account(acc, mailbox, now=None):
    """Remove messages received more than 14 days before ``now`` from ``mailbox``;
    returns how many."""
    now = time.time() if now is None else now
    mb = await acc.mailbox(mailbox)
    if mb is None:
        return 0
    cutoff = int(now - KEEP_SECONDS)
    uids = await acc.read(lambda conn: [r[0] for r in conn.execute(
        "SELECT uid FROM message WHERE mailbox_id = ? AND received < ? ORDER BY uid LIMIT ?",
        (mb.id, cutoff, BATCH))])
    if not uids:
        return 0
    await acc.store_flags(mb.id, uids, "add", ["\\Deleted"])
    removed = await acc.expunge(mb.id, uids)
    log.info("removed {n} old messages from {account}/{mailbox}", n=len(removed), account=acc.name, mailbox=mailbox)
    return len(removed)


class RejectsCleanupService(internet.TimerService):
    """``accounts()``: (name, RejectsMailbox) of the accounts to clean."""

    def __init__(self, store, accounts, interval=INTERVAL, clock=None):
        super().__init__(interval, self._run)
        self.store = store
        self.accounts = accounts
        if clock is not None:
            self.clock = clock

    async def run_once(self, now=None):
        total = 0
        for name, mailbox in self.accounts():
            try:
                acc = await self.store.open_account(name)
                total += await clean_account(acc, mailbox, now)
            except Exception:
                log.failure("cleaning rejects of {account}", account=name)
        return total

    def _run(self):
        return defer.Deferred.fromCoroutine(self.run_once())


__all__ = ["RejectsCleanupService", "clean_account"]
