"""makeService: the moxtw service tree, built from a loaded configuration.

Used by the twistd plugin (``twistd moxtw serve`` / ``localserve``) and by ``.tac`` files
for custom deployments. Only wiring lives here: each part comes from its own package, is
built after the parts it needs and gets them in its constructor.
"""

import errno
import os
import time

from twisted.application import service
from twisted.internet import threads
from twisted.logger import Logger

from moxtw import durable, listeners
from moxtw import log as mlog
from moxtw import metrics, privileges
from moxtw.auth import Authenticator, LoginLimits
from moxtw.clock import default_reactor
from moxtw.config import DynamicConfigWatcher
from moxtw.config.notbuilt import not_built
from moxtw.ctl import BackupCommands, CtlService, ImportCommands, JunkCommands, QueueCommands, ServerCommands
from moxtw.delivery import Router
from moxtw.dns.service import ResolverService, configured_resolver
from moxtw.dnsblmonitor import DNSBLMonitor
from moxtw.filemodes import FileModesService
from moxtw.imapserver.backend import IMAPBackend
from moxtw.imapserver.server import IMAPFactory
from moxtw.junk.rejects import RejectsCleanupService
from moxtw.junk.train import Trainer, TrainerService
from moxtw.mtasts.cache import PolicyCache, RefreshService
from moxtw.queue import Queue, QueueService, holdrules
from moxtw.queue.dsn import QueueDSN
from moxtw.queue.outbound import SMTP_PORT, Outbound, read_queued_message
from moxtw.queue.runner import QueueRunner
from moxtw.reports.service import ReportsService
from moxtw.smtpclient.pool import ConnectionPool, PoolService
from moxtw.smtpserver.backend import SMTPBackend
from moxtw.smtpserver.dkimsign import DKIMSigners
from moxtw.smtpserver.server import SMTPFactory
from moxtw.staletmp import StaleTmpService
from moxtw.store import Store
from moxtw.store.service import StoreService
from moxtw.mtasts.serve import MTASTSResource
from moxtw.tls import acme
from moxtw.tls.certstore import CertReloadService, CertStore
from moxtw.web.account import AccountApp
from moxtw.web.admin import AdminApp
from moxtw.web.admin_queue import QueueReports
from moxtw.web.sessions import DatabaseService, SessionStore
from moxtw.tls.client import trust_root

log = Logger(namespace="moxtw.app")


class MoxtwService(service.MultiService):
    """The root service. Attributes give tests and .tac files access to the parts."""

    def __init__(self, config, switch_user=False, localserve=False):
        super().__init__()
        self.config = config
        self.switch_user = switch_user
        self.is_localserve = localserve
        self.listeners = []

    def privilegedStartService(self):
        # Listeners bind first (ports below 1024 need root), then root is given up.
        try:
            super().privilegedStartService()
        except listeners.BindError as e:
            # One line naming the address and what to do instead of a traceback.
            raise SystemExit(f"moxtw: {e}{self._bind_hint(e)}")
        if self.switch_user:
            try:
                privileges.drop(self.config.static, self.config.data_dir, config_dir=self.config.config_dir)
            except privileges.PrivilegeError as e:
                # One clear line and exit status 1, not a traceback; never go on as root.
                raise SystemExit(f"moxtw: {e}")

    def _bind_hint(self, e):
        if e.errno != errno.EADDRINUSE:
            return ""
        if self.is_localserve:
            return "; another localserve may be running: start this one with another --port-offset and --dir"
        return f"; stop that program or change the port in {self.config.static_path}"

    def startService(self):
        self._make_spool_dir()
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


    def _make_spool_dir(self):
        """The SMTP spool directory for large incoming messages, made after root was
        given up (startService runs after privilegedStartService) so it belongs to the
        user that writes it, NoFixPermissions or not."""
        spool = os.path.join(self.config.data_dir, "tmp")
        try:
            durable.make_dirs(spool)
        except OSError as e:
            log.error("cannot create the SMTP spool directory {path}: {error}", path=spool, error=e)
            return
        if not os.access(spool, os.W_OK | os.X_OK):
            # Messages larger than the in-memory spool get a temporary error (451).
            log.error("the SMTP spool directory {path} is not writable for uid {uid}: large incoming "
                      "messages are refused temporarily; give it to this user", path=spool, uid=os.getuid())


def _tls_context(config, managers):
    """``tls_context(name, listener)`` for implicit TLS listeners (Submissions, IMAPS,
    HTTPS); they need KeyCerts or ACME."""

    def context(name, lst, strict=False):
        opts = _listener_tls(config, managers, lst, strict)
        if opts is None:
            raise listeners.ListenerError(f"listener {name}: implicit TLS needs TLS.KeyCerts or TLS.ACME")
        return opts

    return context


def _acme_managers(config, current, reactor):
    """One acme.Manager per provider some listener uses, each knowing its listeners
    (names from the running config, challenge types, host keys). Blocking: loads the
    stored certificates and makes missing host keys."""
    static = config.static
    managers = {}
    challenges = acme.Challenges()
    verify = None
    for lname, lst in static.Listeners.items():
        if lst.TLS is None or lst.TLS.ACME is None:
            continue
        provider = lst.TLS.ACME
        conf = static.ACME[provider]
        manager = managers.get(provider)
        if manager is None:
            if verify is None:
                verify = _acme_verify(config)
            manager = managers[provider] = acme.Manager(
                provider, conf, config.data_dir, config.path, challenges, reactor, verify=verify)
        host = acme.listener_hostname(static, lst)
        manager.add_site(acme.Site(
            lname, lambda lst=lst: acme.listener_names(current()[0], current()[1], lst),
            acme.challenge_types(lst, conf), host,
            acme.host_key_paths(config.data_dir, config.path, lst, host)))
    return managers, challenges


def _acme_verify(config):
    """``verify`` for the ACME client's HTTPS: True (the system's CAs), or a CA bundle
    with Static.TLS.CA's files (and the system's when AdditionalToSystem)."""
    ca = config.static.TLS.CA
    if ca is None or not ca.CertFiles:
        return True
    return acme.ca_bundle([config.path(f) for f in ca.CertFiles], ca.AdditionalToSystem,
                          os.path.join(config.data_dir, "acme"))


def _listener_tls(config, managers, lst, strict=False):
    """The TLS server options of a listener (for STARTTLS and implicit TLS alike: one
    configuration, see moxtw.tls): its CertStore, choosing among its KeyCerts by SNI
    (``strict`` for HTTPS: unknown names refused), or its ACMECertStore; None without
    TLS."""
    if lst.TLS is None:
        return None
    name = next(n for n, other in config.static.Listeners.items() if other is lst)
    store = config.cert_stores.get((name, strict))
    if store is None and lst.TLS.ACME is not None:
        store = config.cert_stores[(name, strict)] = acme.ACMECertStore(
            name, managers[lst.TLS.ACME], acme.listener_hostname(config.static, lst), strict=strict)
    if store is None:
        pairs = [(os.path.join(config.config_dir, kc.CertFile), os.path.join(config.config_dir, kc.KeyFile))
                 for kc in lst.TLS.KeyCerts]
        store = config.cert_stores[(name, strict)] = CertStore(name, pairs, strict=strict)
    return store


def _own_smtp(static):
    for lst in static.Listeners.values():
        if lst.SMTP.Enabled and lst.IPs:
            ip = str(lst.IPs[0])
            if ip in ("0.0.0.0", "::"):
                ip = "127.0.0.1" if ip == "0.0.0.0" else "::1"
            return ip, lst.SMTP.Port
    return None


_SMTP_KINDS = {"SMTP": "smtp", "Submission": "submission", "Submissions": "submissions"}


def _smtp_factory(config, backend, managers):
    static = config.static
    spool = os.path.join(config.data_dir, "tmp")

    def make(kind, name, lst):
        tls = (_tls_context(config, managers)(name, lst) if kind == "Submissions"
               else _listener_tls(config, managers, lst))
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


def _imap_factory(config, backend, managers):
    static = config.static

    def make(kind, name, lst):
        tls = (_tls_context(config, managers)(name, lst) if kind == "IMAPS"
               else _listener_tls(config, managers, lst))
        return IMAPFactory(
            kind.lower(),
            str(lst.Hostname or static.Hostname),
            backend,
            tls_context=tls,
            require_tls_for_login=not (kind == "IMAP" and lst.IMAP.NoRequireSTARTTLS),
            append_limit=lst.SMTPMaxMessageSize,
        )

    return make


def makeService(config, reactor=None, localserve=False, resolver=None, switch_user=False):
    """Build the service tree for a loaded ``moxtw.config.Config``.

    ``resolver``: the DNS resolver for every part (default: one for the config's
    ``DNS`` section); tests give a mock or one for a name server on loopback.
    ``switch_user``: started as root, run as the config's ``User`` once the listeners
    are bound (``serve`` and ``moxtw.tac``; see ``moxtw.privileges``)."""
    started = time.time()
    reactor = default_reactor(reactor)
    static = config.static
    hostname = str(static.Hostname)
    log_config = mlog.LogConfig(default=static.LogLevel, packages=dict(static.PackageLogLevels))
    mlog.configure(log_config)
    root = MoxtwService(config, switch_user=switch_user, localserve=localserve)
    # Settings accepted but not built yet say so (domains.toml again at each reload).
    for fname, key, why in not_built(static, config.dynamic):
        log.warn("{file}: {key} has no effect in this version: {why}", file=fname, key=key, why=why)
    # First: files an older moxtw made readable by others are private before any opens.
    if not static.NoFixPermissions:
        FileModesService(config.data_dir).setServiceParent(root)
    # Leftovers of operations an earlier run never acknowledged; files from this run stay.
    StaleTmpService(config.data_dir, started=started).setServiceParent(root)

    root.watcher = watcher = DynamicConfigWatcher(config, clock=reactor)
    watcher.setName("config")
    watcher.setServiceParent(root)

    def current():
        return static, watcher.current

    root.store = Store(config.data_dir, reactor=reactor)
    StoreService(root.store, watcher, static).setServiceParent(root)

    # Junk filtering: the Bayesian filters learn from the users' classifications, and
    # the Rejects mailboxes are emptied of messages older than 14 days.
    def junk_accounts():
        return [(n, a.JunkFilter) for n, a in watcher.current.Accounts.items() if a.JunkFilter is not None]

    def rejects_accounts():
        return [(n, a.RejectsMailbox) for n, a in watcher.current.Accounts.items()
                if a.RejectsMailbox and not a.KeepRejects]

    root.junk_trainer = Trainer(root.store, junk_accounts, reactor=reactor)
    TrainerService(root.junk_trainer, clock=reactor).setServiceParent(root)
    RejectsCleanupService(root.store, rejects_accounts, clock=reactor).setServiceParent(root)
    root.auth = Authenticator(root.store, lambda: watcher.current)
    # Failed logins on SMTP, IMAP and web count together.
    root.login_limits = LoginLimits(root.auth, reactor)

    root.resolver = resolver if resolver is not None else configured_resolver(static, reactor)
    root.dkim = DKIMSigners(current, config.config_dir)

    def hold_rules(account, sender_domain):
        return holdrules.matcher(watcher.current.QueueHoldRules, account, sender_domain)

    # Local delivery for SMTP and the queue alike. localserve delivers queued mail over
    # its own SMTP listener, so it takes the path of mail from the internet.
    root.queue = Queue(config.data_dir, reactor=reactor)
    root.router = Router(root.store, current, hostname=hostname, queue=root.queue, localserve=localserve,
                         own_smtp=_own_smtp(static) if localserve else None, reactor=reactor)
    # MTA-STS policies of recipient domains (data/mtasts.db), refreshed daily; closed
    # after the queue runner stops (services stop in reverse order).
    root.mtasts = PolicyCache(config.data_dir, root.resolver, reactor=reactor,
                              trust=trust_root(static, config.path), https_port=static.TestMTASTSPort)
    RefreshService(root.mtasts, clock=reactor).setServiceParent(root)
    # Outgoing connections reused for messages to the same destination; idle ones
    # closed at stop (after the queue runner, services stop in reverse order).
    root.smtp_pool = ConnectionPool(reactor)
    PoolService(root.smtp_pool).setServiceParent(root)
    root.outbound = Outbound(
        root.resolver, current, read_queued_message(root.queue), hostname, reactor=reactor,
        port=static.TestDirectDeliveryPort or SMTP_PORT, config_path=config.path,
        sts=root.mtasts, tls_results=lambda attempt: root.reports.record_tls_results(attempt),
        pool=root.smtp_pool,
    )
    # DSNs about failed and delayed deliveries are queued to the sender like other mail.
    notify = QueueDSN(root.queue, hostname, reactor=reactor, dkim=root.dkim, hold_rules=hold_rules)
    root.queue_service = QueueService(root.queue, clock=reactor, dsn=notify, router=root.router,
                                      outbound=root.outbound)
    root.queue_runner = QueueRunner(root.queue, root.queue_service)
    root.queue_runner.setServiceParent(root)

    root.reports = ReportsService(
        config.data_dir, hostname, root.queue, root.resolver, static, reactor=reactor,
        dkim=root.dkim, queue_service=root.queue_service, hold_rules=hold_rules,
    )
    root.reports.setServiceParent(root)

    def evaluated(session, env, auth):
        mailfrom = str(env.mailfrom) if env.mailfrom is not None else ""
        rcpt_domain = env.recipients[0].address.domain.unicode if env.recipients else ""
        root.reports.record_evaluation(session.remote_ip, mailfrom, rcpt_domain, auth)

    root.smtp_backend = SMTPBackend(
        hostname=hostname, router=root.router, authenticator=root.auth,
        login_limits=root.login_limits, current=current, queue=root.queue,
        queue_service=root.queue_service, queue_ready=root.queue_runner.wait_ready,
        # localserve: applications under test send with any From address.
        check_from=not localserve, dkim=root.dkim,
        # localserve never looks up DNS: tests of applications run offline.
        resolver=None if localserve else root.resolver,
        on_authenticated=evaluated, reports=root.reports,
    )
    def delivery_mailboxes(account):
        # RFC 5465 6 "inboxes": where delivery puts mail, by Destination or Ruleset.
        acc = current()[1].Accounts.get(account)
        names = {"Inbox"}
        for dest in (acc.Destinations.values() if acc is not None else ()):
            names.add(dest.Mailbox or "Inbox")
            names.update(rs.Mailbox for rs in dest.Rulesets if rs.Mailbox)
        return names

    root.imap_backend = IMAPBackend(root.auth, clock=reactor, login_limits=root.login_limits,
                                    delivery_mailboxes=delivery_mailboxes)
    if not localserve:
        DNSBLMonitor(root.resolver, current, clock=reactor).setServiceParent(root)
    ResolverService(root.resolver).setServiceParent(root)
    # Web interfaces: login sessions in data/auth.db, the account pages at / and the
    # admin pages at /admin/ of the listeners that serve them.
    root.web_sessions = SessionStore(config.data_dir, reactor=reactor)
    DatabaseService(root.web_sessions).setServiceParent(root)
    # One app per path prefix a listener mounts it at (links and cookie paths follow it).
    root.web_apps = {"account": {}, "admin": {}}
    # The control socket's server commands (reload, log levels) serve the admin pages too.
    server_commands = ServerCommands(watcher, log_config, lambda: reactor.stop(), reactor=reactor)
    queue_reports = QueueReports(root.queue, root.queue_service, root.reports, root.resolver, current,
                                 config.config_dir, watcher.reload)

    def account_app(prefix):
        if prefix not in root.web_apps["account"]:
            root.web_apps["account"][prefix] = AccountApp(
                root.store, root.auth, root.login_limits, root.web_sessions, current, clock=reactor, path=prefix,
                config_dir=config.config_dir, reload=watcher.reload, data_dir=config.data_dir)
        return root.web_apps["account"][prefix].resource()

    def admin_app(prefix):
        if prefix not in root.web_apps["admin"]:
            root.web_apps["admin"][prefix] = AdminApp(
                config.path, lambda: static.AdminPasswordFile, root.login_limits, root.web_sessions, current,
                root.queue, queue_service=root.queue_service, clock=reactor, path=prefix,
                queue_reports=queue_reports, config_dir=config.config_dir, data_dir=config.data_dir,
                store=root.store, resolver=root.resolver, server=server_commands)
        return root.web_apps["admin"][prefix].resource()
    # ACME: certificates ordered for the configured names, renewed ahead of expiry.
    root.acme, challenges = _acme_managers(config, current, reactor)
    for svc in listeners.build(
        static,
        reactor,
        tls_context=_tls_context(config, root.acme),
        metrics_resource=metrics.MetricsResource(),
        mtasts_resource=MTASTSResource(current),
        acme_resource=acme.ChallengeResource(challenges) if root.acme else None,
        web_apps={"account": account_app, "admin": admin_app},
        smtp_factory=_smtp_factory(config, root.smtp_backend, root.acme),
        imap_factory=_imap_factory(config, root.imap_backend, root.acme),
    ):
        svc.setServiceParent(root)
        root.listeners.append(svc)
    # The apps at their default paths (or the first mounted), for tests and tools.
    root.web_account = root.web_apps["account"].get("/") or next(iter(root.web_apps["account"].values()), None)
    root.web_admin = root.web_apps["admin"].get("/admin/") or next(iter(root.web_apps["admin"].values()), None)
    # Certificate files replaced on disk (a renewal by certbot) are served without restart.
    files = [s for s in config.cert_stores.values() if isinstance(s, CertStore)]
    if files:
        CertReloadService(files, clock=reactor).setServiceParent(root)
    if root.acme:
        # After the listeners: tls-alpn-01 and http-01 are answered on them.
        root.acme_renew = acme.RenewService(root.acme.values(), clock=reactor)
        root.acme_renew.setServiceParent(root)
    # Last, so a listener that cannot bind stops the start before it.
    CtlService(config.data_dir, QueueCommands(root.queue, root.queue_service),
               reactor=reactor, server=server_commands,
               importer=ImportCommands(root.store, lambda: watcher.current.Accounts),
               backup=BackupCommands(config.config_dir, config.data_dir, root.store, reactor=reactor),
               junk=JunkCommands(root.store, lambda: watcher.current.Accounts, root.junk_trainer),
               ).setServiceParent(root)
    return root
