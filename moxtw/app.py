"""makeService: the moxtw service tree, built from a loaded configuration.

Used by the twistd plugin (``twistd moxtw serve`` / ``localserve``) and by ``.tac`` files
for custom deployments. Nothing else lives here: each service comes from its own module.
"""

import os
import time

from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger

from moxtw import fsutil, listeners, metrics
from moxtw.auth import Authenticator, LoginLimits
from moxtw.dsn import QueueDSN
from moxtw.filemodes import FileModesService
from moxtw.imapserver.backend import IMAPBackend
from moxtw.imapserver.server import IMAPFactory
from moxtw.ctl import CtlService, QueueCommands
from moxtw.queue import Queue, QueueService, holdrules
from moxtw.queue.outbound import SMTP_PORT, Outbound, read_queued_message
from moxtw.dnsblmonitor import DNSBLMonitor
from moxtw.reports import ReportsService
from moxtw.smtpserver.backend import SMTPBackend
from moxtw.smtpserver.dkimsign import DKIMSigners
from moxtw.smtpserver.server import SMTPFactory
from moxtw.staletmp import StaleTmpService
from moxtw import log as mlog
from moxtw.config import DynamicConfigWatcher
from moxtw.store import Store
from moxtw.store.junkflags import JunkFlagRules
from moxtw.tls import server_context_factory

log = Logger(namespace="moxtw.app")


class StoreService(service.Service):
    """Owns the Store: opens configured accounts at start, applies quota settings from
    each (re)loaded domains.toml, closes databases at stop."""

    name = "store"

    def __init__(self, store, watcher, static):
        self.store = store
        self.watcher = watcher
        self.static = static
        self._unsubscribe = None

    def quota_for(self, dynamic, account):
        acc = dynamic.Accounts.get(account)
        limit = acc.QuotaMessageSize if acc is not None else 0
        if limit == 0:
            limit = self.static.QuotaMessageSize
        return max(limit, 0)  # negative: no limit

    @defer.inlineCallbacks
    def open_configured(self, dynamic):
        for name in dynamic.Accounts:
            yield self.store.open_account(name)
        for acc in self.store.open_accounts():
            acc.quota = self.quota_for(dynamic, acc.name)
            conf = dynamic.Accounts.get(acc.name)
            acc.junk_rules = JunkFlagRules.from_config(conf.AutomaticJunkFlags if conf else None)
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


class QueueRunner(service.MultiService):
    """Opens the queue database, then runs the QueueService; closes it at stop."""

    name = "queue-runner"

    def __init__(self, queue, queue_service):
        super().__init__()
        self.queue = queue
        self.queue_service = queue_service
        self._ready = None

    def startService(self):
        service.Service.startService(self)
        self._ready = self.queue.open()

        def opened(_):
            if self.running:
                self.queue_service.setServiceParent(self)
            return None

        self._ready.addCallback(opened)
        self._ready.addErrback(lambda f: log.failure("opening the queue", f))

    def wait_ready(self):
        """A Deferred that fires once the queue is open."""
        d = defer.Deferred()
        self._ready.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    def stopService(self):
        d = defer.maybeDeferred(super().stopService)
        return d.addBoth(lambda _: self.queue.close())


class MoxtwService(service.MultiService):
    """The root service. Attributes give tests and .tac files access to the parts."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.store = None
        self.watcher = None
        self.auth = None
        self.queue = None
        self.queue_service = None
        self.queue_runner = None
        self.smtp_backend = None
        self.listeners = []

    def startService(self):
        super().startService()
        for svc in self.listeners:
            if svc.port is not None:
                host = svc.port.getHost()
                log.info(
                    "listening for {kinds} on {ip} port {port}{tls}",
                    kinds="+".join(svc.spec.kinds),
                    ip=host.host,
                    port=host.port,
                    tls=" (TLS)" if svc.spec.tls else "",
                )


def _tls_context(config):
    """``tls_context(name, listener)`` for implicit TLS listeners (Submissions, IMAPS,
    HTTPS); they need KeyCerts."""

    def context(name, lst):
        opts = _listener_tls(config, lst)
        if opts is None:
            raise listeners.ListenerError(
                f"listener {name}: implicit TLS needs TLS.KeyCerts"
                " (ACME is not part of this version yet)"
            )
        return opts

    return context


def _listener_tls(config, lst):
    """The TLS server options of a listener (for STARTTLS and implicit TLS alike: one
    configuration, see moxtw.tls), or None without KeyCerts."""
    if lst.TLS is None or not lst.TLS.KeyCerts:
        return None
    kc = lst.TLS.KeyCerts[0]
    return server_context_factory(
        os.path.join(config.config_dir, kc.CertFile), os.path.join(config.config_dir, kc.KeyFile)
    )


def _own_smtp(static):
    for lst in static.Listeners.values():
        if lst.SMTP.Enabled and lst.IPs:
            ip = str(lst.IPs[0])
            if ip in ("0.0.0.0", "::"):
                ip = "127.0.0.1" if ip == "0.0.0.0" else "::1"
            return ip, lst.SMTP.Port
    return None


_SMTP_KINDS = {"SMTP": "smtp", "Submission": "submission", "Submissions": "submissions"}


def _smtp_factory(config, root, localserve):
    static = config.static
    spool = os.path.join(config.data_dir, "tmp")
    backend = SMTPBackend(
        hostname=str(static.Hostname),
        store=root.store,
        authenticator=root.auth,
        login_limits=root.login_limits,
        current=lambda: (static, root.watcher.current),
        queue=root.queue,
        queue_service=root.queue_service,
        queue_ready=root.queue_runner.wait_ready,
        localserve=localserve,
        # localserve: applications under test send with any From address, and queued
        # mail comes back in over our own SMTP listener.
        check_from=not localserve,
        own_smtp=_own_smtp(static) if localserve else None,
        dkim=root.dkim,
        # localserve never looks up DNS: tests of applications run offline.
        resolver=None if localserve else root.resolver,
    )
    root.smtp_backend = backend

    def make(kind, name, lst):
        fsutil.make_dirs(spool)
        tls = _tls_context(config)(name, lst) if kind == "Submissions" else _listener_tls(config, lst)
        return SMTPFactory(
            _SMTP_KINDS[kind],
            str(lst.Hostname or static.Hostname),
            backend,
            tls_context=tls,
            max_message_size=lst.SMTPMaxMessageSize,
            pedantic=static.Pedantic,
            no_starttls=lst.SMTP.NoSTARTTLS if kind == "SMTP" else False,
            require_starttls=lst.SMTP.RequireSTARTTLS if kind == "SMTP" else False,
            require_tls_for_auth=not (kind == "Submission" and lst.Submission.NoRequireSTARTTLS),
            spool_dir=spool,
            threadpool_run=threads.deferToThread,
        )

    return make


def _imap_factory(config, root, reactor):
    static = config.static
    backend = IMAPBackend(root.auth, clock=reactor, login_limits=root.login_limits)
    root.imap_backend = backend

    def make(kind, name, lst):
        tls = _tls_context(config)(name, lst) if kind == "IMAPS" else _listener_tls(config, lst)
        return IMAPFactory(
            kind.lower(),
            str(lst.Hostname or static.Hostname),
            backend,
            tls_context=tls,
            require_tls_for_login=not (kind == "IMAP" and lst.IMAP.NoRequireSTARTTLS),
            append_limit=lst.SMTPMaxMessageSize,
        )

    return make


def _resolver(static, reactor):
    from moxtw.dns.resolver import Resolver

    dns_conf = static.DNS
    servers = list(dns_conf.Servers) if dns_conf is not None and dns_conf.Servers else None
    trust_ad = dns_conf.TrustAD if dns_conf is not None else False
    return Resolver(servers=servers, trust_ad=trust_ad, reactor=reactor)


class ResolverService(service.Service):
    """Stops the resolver's thread pool with the server."""

    name = "resolver"

    def __init__(self, root):
        self.root = root

    def stopService(self):
        super().stopService()
        stop = getattr(self.root.resolver, "stop", None)
        if stop is not None:
            stop()


def _deliver_group(static, root, localserve):
    """The queue's delivery function: recipients in our own domains (and, in
    localserve, everyone) through local delivery, others with the outbound client."""

    async def deliver(entries):
        backend = root.smtp_backend
        domain = entries[0].recipient_domain
        dynamic = root.watcher.current
        local = (localserve or domain in dynamic.Domains
                 or domain == str(static.Hostname).lower())
        if local:
            return [await defer.maybeDeferred(backend.deliver_queued, e) for e in entries]
        return await root.outbound.deliver_group(entries)

    return lambda entries: defer.Deferred.fromCoroutine(deliver(entries))


def makeService(config, reactor=None, localserve=False):
    """Build the service tree for a loaded ``moxtw.config.Config``."""
    started = time.time()
    if reactor is None:
        from twisted.internet import reactor
    mlog.configure(
        mlog.LogConfig(
            default=config.static.LogLevel, packages=dict(config.static.PackageLogLevels)
        )
    )
    root = MoxtwService(config)
    # First: files an older moxtw made readable by others are private before any opens.
    FileModesService(config.data_dir).setServiceParent(root)
    # Leftovers of operations an earlier run never acknowledged; files from this run stay.
    StaleTmpService(config.data_dir, started=started).setServiceParent(root)
    root.watcher = DynamicConfigWatcher(config, clock=reactor)
    root.watcher.setName("config")
    root.watcher.setServiceParent(root)
    root.store = Store(config.data_dir, reactor=reactor)
    StoreService(root.store, root.watcher, config.static).setServiceParent(root)
    root.auth = Authenticator(root.store, lambda: root.watcher.current)
    # Failed logins on SMTP, IMAP and web count together.
    root.login_limits = LoginLimits(root.auth, reactor)
    root.queue = Queue(config.data_dir, reactor=reactor)
    root.queue_service = None
    root.queue_runner = QueueRunner(root.queue, None)
    root.queue_runner.setServiceParent(root)
    root.resolver = _resolver(config.static, reactor)
    root.dkim = DKIMSigners(lambda: (config.static, root.watcher.current), config.config_dir)
    smtp = _smtp_factory(config, root, localserve)
    # DSNs about failed and delayed deliveries are queued to the sender like other mail.
    def hold_rules(account, sender_domain):
        return holdrules.matcher(root.watcher.current.QueueHoldRules, account, sender_domain)

    notify = QueueDSN(root.queue, str(config.static.Hostname), reactor=reactor, dkim=root.dkim,
                      hold_rules=hold_rules)
    root.outbound = Outbound(
        root.resolver,
        lambda: (config.static, root.watcher.current),
        read_queued_message(root.queue),
        str(config.static.Hostname),
        reactor=reactor,
        port=config.static.TestDirectDeliveryPort or SMTP_PORT,
        config_path=config.path,
    )
    root.queue_service = QueueService(
        root.queue, clock=reactor, dsn=notify,
        deliver_group=_deliver_group(config.static, root, localserve),
    )
    root.queue_runner.queue_service = root.queue_service
    root.smtp_backend.queue_service = root.queue_service
    root.reports = ReportsService(
        config.data_dir, str(config.static.Hostname), root.queue, root.resolver, config.static,
        reactor=reactor, dkim=root.dkim, queue_service=root.queue_service, hold_rules=hold_rules,
    )
    root.reports.setServiceParent(root)
    root.smtp_backend.reports = root.reports

    def evaluated(session, env, auth):
        mailfrom = str(env.mailfrom) if env.mailfrom is not None else ""
        rcpt_domain = env.recipients[0].address.domain.unicode if env.recipients else ""
        root.reports.record_evaluation(session.remote_ip, mailfrom, rcpt_domain, auth)

    root.smtp_backend.on_authenticated = evaluated
    if not localserve:
        DNSBLMonitor(root.resolver, lambda: (config.static, root.watcher.current),
                     clock=reactor).setServiceParent(root)
    ResolverService(root).setServiceParent(root)
    for svc in listeners.build(
        config.static,
        reactor,
        tls_context=_tls_context(config),
        metrics_resource=metrics.MetricsResource(),
        smtp_factory=smtp,
        imap_factory=_imap_factory(config, root, reactor),
    ):
        svc.setServiceParent(root)
        root.listeners.append(svc)
    # Last, so a listener that cannot bind stops the start before it.
    CtlService(config.data_dir, QueueCommands(root.queue, root.queue_service),
               reactor=reactor).setServiceParent(root)
    return root
