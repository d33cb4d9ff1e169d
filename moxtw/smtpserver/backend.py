"""The SMTP server's backend: what the protocol asks of the rest of moxtw.

The protocol (``moxtw.smtpserver.server``) calls these methods and never touches the
store, the queue or the configuration itself. One backend serves all SMTP listeners.
"""

from datetime import datetime, timezone

from twisted.internet import defer, task, threads
from twisted.logger import Logger

from moxtw import ratelimit
from moxtw.auth import LoginLimits
from moxtw.clock import default_reactor
from moxtw.delivery import recipients as rcpts
from moxtw.delivery.localserve import localserve_rule
from moxtw.delivery.router import JunkContext
from moxtw.queue import holdrules
from moxtw.queue.service import DEFAULT_MAX_ATTEMPTS
from moxtw.smtp.xtext import xtext_encode
from moxtw.smtp import codes as c
from moxtw.smtpserver import msgauth, submission
from moxtw.smtpserver.server import SMTPReply
from moxtw.smtpserver.trace import authentication_results, received_header
from moxtw.store import DeliveryFacts, OutgoingLimitExceeded

log = Logger(namespace="moxtw.smtpserver")

# Connections per IP, failed authentications per IP (as mox: slowed down, then refused).
CONNECTION_LIMITS = [(60, 300), (3600, 3000), (86400, 30000)]


def _orcpt(rcpt, target):
    """RFC 3461 4.2 ORCPT for a queued account address that is not what the sender wrote
    (a +tag, other case, a catchall): the envelope address, when it is ASCII."""
    given = f"{rcpt.address.localpart}@{rcpt.address.domain.unicode}"
    if target.alias or given == target.address or not given.isascii():
        return ""
    return "rfc822;" + xtext_encode(given)


def _rule_reply(rule):
    code = rule.code
    se = c.SE_OTHER0
    return SMTPReply(code, se, f"error requested by localserve test address ({code})")


class SMTPBackend:
    def __init__(
        self, *, hostname, router, authenticator, current, queue=None, queue_service=None,
        queue_ready=None, clock=None, check_from=True, dkim=None, resolver=None,
        on_authenticated=None, reports=None, login_limits=None,
    ):
        """``current()`` returns (static, dynamic) config in force. ``router``: the
        :class:`moxtw.delivery.Router` that resolves recipients and delivers accepted
        messages (None: a backend for submission checks only). ``dkim``: a
        :class:`moxtw.smtpserver.dkimsign.DKIMSigners` for submitted mail."""
        self.hostname = hostname
        self.router = router
        self.authenticator = authenticator
        self.current = current
        self.queue = queue
        self.queue_service = queue_service
        self.queue_ready = queue_ready
        self.clock = clock
        # localserve: the test addresses' rules apply, every recipient is accepted.
        self.localserve = router is not None and router.localserve
        self.check_from = check_from
        self.dkim = dkim
        # Incoming messages are authenticated (SPF, DKIM, DMARC, iprev) with this
        # resolver; None skips the checks (Authentication-Results: none).
        self.resolver = resolver
        # Called with (session, env, AuthResults) for each authenticated message (DMARC
        # evaluations for aggregate reports).
        self.on_authenticated = on_authenticated
        # moxtw.reports.service.ReportsService: reports to reporting addresses are stored.
        self.reports = reports
        self.connections = ratelimit.Limiter(CONNECTION_LIMITS, clock)
        # One LoginLimits for all protocols (app wiring); a private one otherwise.
        self.login_limits = login_limits or LoginLimits(authenticator, clock)

    # -- connection and authentication

    def connection_allowed(self, session):
        if self.localserve:
            return None  # a test server: test suites open connections as fast as they like
        if not self.connections.add(session.remote_ip):
            return "too many connections from your IP address, try again later"
        return None

    def connection_closed(self, session):
        pass

    def auth_allowed(self, session):
        return self.login_limits.allowed(session.remote_ip)

    def sasl_backend(self, session):
        """What one AUTH exchange authenticates against (records the login tried)."""
        return self.login_limits.sasl_backend(session.remote_ip)

    def auth_result(self, session, ok, login=""):
        """Returns the delay (seconds) before a failure reply (see LoginLimits)."""
        return self.login_limits.record(session.remote_ip, login, ok)

    # -- transaction

    def check_sender(self, session, env):
        if self.localserve and env.mailfrom is not None:
            rule = localserve_rule(env.mailfrom.localpart)
            if rule and rule.stage == "mailfrom":
                return self._apply_rule(rule)
        if session.kind == "smtp" or not self.check_from or env.mailfrom is None:
            return None
        static, dynamic = self.current()
        a = env.mailfrom
        if not rcpts.may_send_as(dynamic, session.account.name, a.localpart, a.domain.unicode):
            raise SMTPReply(c.C550_MAILBOX_UNAVAILABLE, c.SE_SEC_SENDER_NOT_AUTHORIZED,
                            f"account {session.account.name} may not send as {a}")
        return None

    def _apply_rule(self, rule):
        if rule.code is None:
            # "timeout": no reply for an hour, then the connection closes.
            d = defer.Deferred()
            clock = self.clock
            clock = default_reactor(clock)
            clock.callLater(3600, d.errback, SMTPReply(c.C421_SERVICE_UNAVAILABLE, c.SE_NET_BAD_CONNECTION2, "timeout requested by test address", close=True))
            return d
        raise _rule_reply(rule)

    def check_recipient(self, session, env, rcpt):
        a = rcpt.address
        if self.localserve:
            rule = localserve_rule(a.localpart)
            if rule and rule.stage == "rcptto":
                return self._apply_rule(rule)
        if session.kind != "smtp":
            return None  # submission: any recipient; delivery decides
        try:
            resolved = self.router.resolve(a.localpart, a.domain.unicode)
        except rcpts.NotLocal:
            # RFC 5321 3.6.2: no relaying for unauthenticated clients.
            raise SMTPReply(c.C550_MAILBOX_UNAVAILABLE, c.SE_SEC_DELIVERY_NOT_AUTHORIZED1,
                            "not accepting email for this domain (relaying not permitted)")
        except rcpts.DomainDisabled:
            raise SMTPReply(c.C450_MAILBOX_UNAVAILABLE, c.SE_MAILBOX_DISABLED1,
                            "domain temporarily not accepting email")
        if resolved is None:
            raise SMTPReply(c.C550_MAILBOX_UNAVAILABLE, c.SE_ADDR_UNKNOWN_DEST_MAILBOX1, "no such user")
        if isinstance(resolved, rcpts.Recipient) and resolved.destination is not None:
            err = resolved.destination.SMTPError
            if err:
                code = int(err.split(" ", 1)[0])
                raise SMTPReply(code, c.SE_OTHER0 if code < 500 else c.SE_ADDR_UNKNOWN_DEST_MAILBOX1, err.split(" ", 1)[1] if " " in err else "refused")
        if isinstance(resolved, rcpts.AliasRecipient) and not resolved.alias.PostPublic:
            sender = env.mailfrom
            members = {m.lower() for m in resolved.members}
            if sender is None or f"{sender.localpart}@{sender.domain.unicode}".lower() not in members:
                raise SMTPReply(c.C550_MAILBOX_UNAVAILABLE, c.SE_SEC_DELIVERY_NOT_AUTHORIZED1,
                                "only members may post to this list")
        return resolved

    # -- message

    def _data_rule(self, env):
        if not self.localserve:
            return None
        for r in env.recipients:
            rule = localserve_rule(r.address.localpart)
            if rule and rule.stage == "data":
                return rule
        return None

    def _with_proto(self, session, env):
        # RFC 3848 and RFC 6531 4.3 protocol types.
        proto = "UTF8SMTP" if env.smtputf8 else ("ESMTP" if session.esmtp else "SMTP")
        if session.tls:
            proto += "S"
        if session.account is not None:
            proto += "A"
        return proto

    def _received(self, session, env, rcpt, now, remote_name=None):
        tls = ""
        if session.tls:
            tls = f"version={session.tls_version or 'TLS'} cipher={session.tls_cipher or 'unknown'}"
        return received_header(
            from_ehlo=session.ehlo, remote_ip=session.remote_ip, remote_name=remote_name,
            hostname=self.hostname, local_ip=session.local_ip,
            with_proto=self._with_proto(session, env), msg_id=session.cid,
            rcpt=rcpt, now=now, tls=tls,
        )

    @defer.inlineCallbacks
    def deliver(self, session, env, data, has_8bit=False):
        """Incoming message (port 25): deliver to each recipient's account."""
        rule = self._data_rule(env)
        if rule is not None:
            yield self._apply_rule(rule)
        static, dynamic = self.current()
        targets = []
        origins = []  # the envelope recipient each target came from
        for r in env.recipients:
            for t in self.router.expand(r.resolved):
                targets.append(t)
                origins.append(r)
        if not targets:
            raise SMTPReply(c.C550_MAILBOX_UNAVAILABLE, c.SE_ADDR_UNKNOWN_DEST_MAILBOX1, "no deliverable recipients")
        now = datetime.now(timezone.utc)
        only = str(env.recipients[0].address) if len(env.recipients) == 1 else ""
        mailfrom = str(env.mailfrom) if env.mailfrom is not None else ""
        auth_facts = {}
        verified = ()
        remote_name = None
        if self.resolver is not None:
            auth = yield defer.Deferred.fromCoroutine(msgauth.authenticate(
                self.resolver, remote_ip=session.remote_ip, ehlo=session.ehlo or "",
                mailfrom=mailfrom, data=data,
            ))
            verified = auth.verified_domains()
            if self.on_authenticated is not None:
                # Before enforcement: refused messages are part of DMARC reports too.
                self.on_authenticated(session, env, auth)
            yield self._enforce(session, static, targets, mailfrom, data, auth, verified)
            # RFC 8601 5: results claiming to be ours come only from us.
            data = yield threads.deferToThread(msgauth.strip_own_authres, data, self.hostname)
            authres = auth.header(self.hostname)
            if auth.spf is not None:
                authres = auth.spf.mailfrom.received_spf_header(self.hostname).encode("utf-8") + authres
            auth_facts = auth.facts()
            if auth.iprev is not None and auth.iprev.result == "pass":
                remote_name = auth.iprev.name  # forward-confirmed (RFC 5321 4.4 TCP-info)
            log.info("message authentication", cid=session.cid, spf=auth_facts["spf_result"],
                     dkim=",".join(auth_facts["dkim_domains"]) or "none",
                     dmarc=auth_facts["dmarc_result"] or "none", iprev=auth_facts["iprev_result"])
        else:
            authres = authentication_results(self.hostname)
        prefix = self._received(session, env, only, now, remote_name) + authres
        facts = DeliveryFacts(
            remote_ip=session.remote_ip, ehlo_domain=session.ehlo, mailfrom=mailfrom,
            rcptto=str(env.recipients[0].address), tls_version=session.tls_version,
            tls_cipher=session.tls_cipher, requiretls=env.requiretls, **auth_facts,
        )
        junk = JunkContext(resolver=self.resolver, dnsbl_zones=self.dnsbl_zones(static),
                           delay=0.0 if self.localserve else self.first_time_delay(static), sleep=self._sleep,
                           alive=lambda: not session.closed)
        results = yield self.router.deliver(data, targets, mailfrom=mailfrom, prefix=prefix, facts=facts,
                                            verified_domains=verified, junk=junk)
        if self.reports is not None:
            # Reports are parsed after delivery: a malformed one stays a message.
            kinds = {r.recipient.report for r in results if r.ok and r.recipient.report}
            for kind in sorted(kinds):
                d = defer.Deferred.fromCoroutine(self.reports.incoming_report(kind, data, mailfrom))
                d.addErrback(lambda f: log.failure("processing incoming report", f))
        ok = [r for r in results if r.ok]
        failed = [r for r in results if not r.ok]
        if not failed:
            return SMTPReply(c.C250_COMPLETED, c.SE_OTHER0, f"delivered (cid {session.cid})")
        if ok:
            # Some delivered: answering an error now would make the sender deliver those
            # again, so we take responsibility with 250 (RFC 5321 6.1) and queue the
            # failed accounts: the queue retries a temporary failure and sends a DSN for
            # a permanent one or when retries run out.
            origin = {id(t): o for t, o in zip(targets, origins)}
            try:
                if self.queue_ready is not None:
                    yield self.queue_ready()
                origs = [origin[id(r.recipient)] for r in failed]
                ids = yield self.router.queue_failed(
                    [(r, o.notify, o.orcpt or _orcpt(o, r.recipient)) for r, o in zip(failed, origs)], prefix + data,
                    mailfrom=mailfrom, smtputf8=env.smtputf8 or any(o.address.needs_smtputf8 for o in origs),
                    has_8bit=has_8bit, dsn_ret=env.ret or None, dsn_envid=env.envid or None,
                    max_attempts=DEFAULT_MAX_ATTEMPTS)
            except Exception:
                log.failure("queueing failed local recipients", cid=session.cid)
                # Nothing durable for them: the sender must try again (the accounts that
                # got the message may get it twice, which is better than not at all).
                return SMTPReply(c.C451_LOCAL_ERROR, c.SE_MAIL_SYSTEM_OTHER0,
                                 f"error queueing for some recipients, try again later (cid {session.cid})")
            if self.queue_service is not None:
                self.queue_service.kick()
            return SMTPReply(c.C250_COMPLETED, c.SE_OTHER0,
                             f"delivered to {len(ok)} of {len(results)} mailboxes, the others queued as "
                             f"{','.join(str(i) for i in ids)} (cid {session.cid})")
        first = failed[0]
        temporary = any(not r.permanent for r in failed)
        code = first.code if (first.code < 500) == temporary else (c.C451_LOCAL_ERROR if temporary else first.code)
        return SMTPReply(code, first.se, f"{first.text} (cid {session.cid})")

    @defer.inlineCallbacks
    def _enforce(self, session, static, targets, mailfrom, data, auth, verified):
        """Refuse the message for a DMARC reject/quarantine policy (unless every recipient
        takes it as a forward, by ruleset) or a DNSBL listing (only when DMARC did not
        pass: without a reputation of our own yet, an authenticated From domain is the
        only thing that outweighs a listing)."""
        if not auth.single_from:
            # RFC 5322 3.6 wants one From field; DMARC can only judge one author domain
            # (RFC 7489 6.6.1), and skipping it for several would let spoofers through.
            raise SMTPReply(c.C550_MAILBOX_UNAVAILABLE, c.SE_SEC_DELIVERY_NOT_AUTHORIZED1,
                            f"message must have exactly one From header field with one address "
                            f"(has {auth.from_fields} field(s), {auth.from_addresses} address(es)) "
                            f"(cid {session.cid})")
        d = auth.dmarc
        if d is not None and d.reject:
            forwarded = yield self.router.all_forwarded(targets, data, mailfrom, verified)
            if not forwarded:
                log.info("refusing message: DMARC policy {policy} of {domain}", policy=d.published_policy,
                         domain=auth.from_domain, cid=session.cid)
                # RFC 7489 10.3: reject with 550 5.7.1.
                raise SMTPReply(c.C550_MAILBOX_UNAVAILABLE, c.SE_SEC_DELIVERY_NOT_AUTHORIZED1,
                                f"DMARC policy ({d.published_policy}) of {auth.from_domain} rejects this "
                                f"message: no aligned SPF or DKIM pass (cid {session.cid})")
        zones = self.dnsbl_zones(static)
        _, dynamic = self.current()
        judged = all(getattr(dynamic.Accounts.get(t.account), "JunkFilter", None) is not None for t in targets)
        # Accounts with a junk filter consult the block lists themselves, only when
        # their reputation gives no answer (mox); for the others the rule below.
        if zones and not judged and (d is None or d.result != "pass"):
            listed = yield defer.Deferred.fromCoroutine(
                msgauth.dnsbl_listed(self.resolver, zones, session.remote_ip))
            if listed is not None:
                zone, reason = listed
                raise SMTPReply(c.C554_TRANSACTION_FAILED, c.SE_SEC_DELIVERY_NOT_AUTHORIZED1, f"your IP is listed in DNS block list {zone}"
                                + (f": {reason}" if reason else "") + f" (cid {session.cid})")

    def _sleep(self, seconds):
        return task.deferLater(default_reactor(self.clock), seconds, lambda: None)

    @staticmethod
    def first_time_delay(static):
        """FirstTimeSenderDelay of the (first) listener with SMTP, in seconds."""
        for lst in static.Listeners.values():
            if lst.SMTP is not None and lst.SMTP.Enabled:
                return lst.SMTP.FirstTimeSenderDelay.total_seconds()
        return 0.0

    @staticmethod
    def dnsbl_zones(static):
        zones = []
        for lst in static.Listeners.values():
            for z in lst.SMTP.DNSBLs:
                if z not in zones:
                    zones.append(z)
        return zones

    @defer.inlineCallbacks
    def submit(self, session, env, data, has_8bit=False):
        """Submitted message: checks, then into the queue, durable before 250."""
        rule = self._data_rule(env)
        if rule is not None:
            yield self._apply_rule(rule)
        static, dynamic = self.current()
        now = datetime.now(timezone.utc)
        data, message_id, froms, senders = yield threads.deferToThread(
            submission.prepare, data, self.hostname, now
        )
        account = session.account.name
        if self.check_from:
            if len(froms) != 1:
                raise SMTPReply(c.C550_MAILBOX_UNAVAILABLE, c.SE_MSG_OTHER0,
                                "message must have exactly one From address")
            for who, addrs in (("From", froms), ("Sender", senders)):
                for a in addrs:
                    if not rcpts.may_send_as(dynamic, account, a.localpart, a.domain.lower()):
                        raise SMTPReply(
                            c.C550_MAILBOX_UNAVAILABLE, c.SE_SEC_SENDER_NOT_AUTHORIZED,
                            f"message {who} address {a.localpart}@{a.domain} does not belong to account {account}",
                        )
        recipients = [r.address for r in env.recipients]
        acc_conf = dynamic.Accounts.get(account)
        if acc_conf is not None:
            try:
                yield session.account.record_outgoing(
                    message_id or session.cid,
                    [f"{a.localpart}@{a.domain.unicode}" for a in recipients],
                    acc_conf.MaxOutgoingMessagesPerDay,
                    acc_conf.MaxFirstTimeRecipientsPerDay,
                )
            except OutgoingLimitExceeded as e:
                raise SMTPReply(c.C451_LOCAL_ERROR, c.SE_SEC_OTHER0, f"{e}; try again later")
        if self.queue_ready is not None:
            yield self.queue_ready()
        prefix = self._received(session, env, str(recipients[0]) if len(recipients) == 1 else "", now)
        if self.dkim is not None:
            # Signed after Date and Message-ID were added (RFC 6409 8), before queueing.
            signature = yield threads.deferToThread(self.dkim.sign, data, now.timestamp())
            prefix = signature + prefix
        mailfrom_domain = env.mailfrom.domain.unicode if env.mailfrom is not None else ""
        hold = holdrules.matcher(dynamic.QueueHoldRules, account, mailfrom_domain)
        ids = yield self.queue.add(
            prefix + data,
            str(env.mailfrom) if env.mailfrom is not None else "",
            [f"{a.localpart}@{a.domain.unicode}" for a in recipients],
            sender_account=account,
            smtputf8=env.smtputf8 or any(a.needs_smtputf8 for a in recipients),
            has_8bit=has_8bit,
            requiretls=True if env.requiretls else None,
            hold_until=env.hold_until,
            message_id=message_id,
            dsn_ret=env.ret or None,
            dsn_envid=env.envid or None,
            rcpt_dsn={
                f"{r.address.localpart}@{r.address.domain.unicode}": {"notify": r.notify, "orcpt": r.orcpt}
                for r in env.recipients if r.notify or r.orcpt
            } or None,
            hold=hold,
            max_attempts=DEFAULT_MAX_ATTEMPTS,
        )
        log.info("queued message {msgid} for {n} recipients", msgid=message_id, n=len(ids), cid=session.cid)
        if self.queue_service is not None:
            self.queue_service.kick()
        return SMTPReply(c.C250_COMPLETED, c.SE_OTHER0,
                         f"queued as {','.join(str(i) for i in ids)} (cid {session.cid})")
