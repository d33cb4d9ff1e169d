"""StoreService: the store's part of the service tree.

Opens the configured accounts at start and applies each account's settings from every
(re)loaded domains.toml: the message size quota (the account's ``QuotaMessageSize``, else
the static default; negative means no limit) and the automatic junk flags. Closes the
databases at stop.
"""

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from moxtw import metrics
from moxtw.store.junkflags import JunkFlagRules

log = Logger(namespace="moxtw.store")


def quota_for(static, dynamic, account):
    """The message size quota of ``account`` in bytes, 0 for no limit."""
    acc = dynamic.Accounts.get(account)
    limit = acc.QuotaMessageSize if acc is not None else 0
    if limit == 0:
        limit = static.QuotaMessageSize
    return max(limit, 0)  # negative: no limit


class StoreService(service.Service):
    name = "store"

    def __init__(self, store, watcher, static):
        self.store = store
        self.watcher = watcher
        self.static = static
        self.ready = None
        self._unsubscribe = None

    @defer.inlineCallbacks
    def open_configured(self, dynamic):
        for name in dynamic.Accounts:
            yield self.store.open_account(name)
        for acc in self.store.open_accounts():
            acc.quota = quota_for(self.static, dynamic, acc.name)
            conf = dynamic.Accounts.get(acc.name)
            acc.junk_rules = JunkFlagRules.from_config(conf.AutomaticJunkFlags if conf else None)
            acc.rejects_mailbox = conf.RejectsMailbox if conf else ""
        metrics.STORE_ACCOUNTS_OPEN.set(len(self.store.open_accounts()))

    def startService(self):
        super().startService()
        self._unsubscribe = self.watcher.subscribe(self._reloaded)
        self.ready = self.open_configured(self.watcher.current)
        self.ready.addErrback(lambda f: log.failure("opening accounts", f))

    def _reloaded(self, dynamic):
        self.open_configured(dynamic).addErrback(lambda f: log.failure("opening accounts", f))

    def stopService(self):
        super().stopService()
        if self._unsubscribe:
            self._unsubscribe()
        return self.store.close()
