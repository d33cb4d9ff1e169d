"""The Router: the one object through which SMTP and the queue deliver locally.

``moxtw.smtpserver.backend.SMTPBackend`` resolves recipients at RCPT TO and delivers
accepted messages with it; ``moxtw.queue.service.QueueService`` asks it which domains are
local and hands it the queued messages for them. The order of the steps is in the
package docstring (``moxtw.delivery``).
"""

import dataclasses

from twisted.internet import defer, threads
from twisted.logger import Logger

from moxtw.clock import default_reactor
from moxtw.delivery import recipients as rcpts
from moxtw.delivery.local import LocalDelivery, RcptResult
from moxtw.delivery.localserve import localserve_rule
from moxtw.delivery.result import DeliveryResult
from moxtw.junk import subjectpass
from moxtw.delivery.rules import domain_verified, choose_mailbox, message_headers
from moxtw.smtp import codes as c
from moxtw.smtp.xtext import xtext_encode
from moxtw.smtpclient import SMTPClientError
from moxtw.smtpclient import deliver as smtp_deliver

log = Logger(namespace="moxtw.delivery")


class JunkContext:
    """What the junk decision needs from the SMTP server: ``resolver`` and
    ``dnsbl_zones`` for the block lists, ``delay`` (seconds) for first-time senders and
    ``sleep(seconds) -> Deferred`` to wait without blocking."""

    def __init__(self, resolver=None, dnsbl_zones=(), delay=0.0, sleep=None, alive=None):
        self.resolver = resolver
        self.dnsbl_zones = list(dnsbl_zones)
        self.delay = delay
        self.sleep = sleep
        self.alive = alive or (lambda: True)  # whether the sender still waits for our answer


class Router:
    """Local delivery for one configuration.

    ``current()`` returns the (static, dynamic) configuration in force. ``localserve``:
    every address is local and goes to the postmaster account, and localparts may ask for
    errors (``moxtw.delivery.localserve``). ``own_smtp``: (ip, port) of our own SMTP
    listener, where localserve delivers queued mail, so it takes the path of mail from
    the internet without leaving the machine. ``queue``: the queue, for the accounts of a
    message that failed while others stored it (``queue_failed``)."""

    def __init__(self, store, current, *, hostname, queue=None, localserve=False, own_smtp=None,
                 reactor=None):
        self.store = store
        self.queue = queue  # moxtw.queue.db.Queue: where failed accounts wait (queue_failed)
        self.current = current
        self.hostname = hostname
        self.localserve = localserve
        self.own_smtp = own_smtp
        self.local = LocalDelivery(store)
        self._reactor = reactor

    # -- step 1: recipients

    def is_local(self, domain):
        """Whether mail for ``domain`` (lower-case unicode) is delivered here rather than
        sent to another server."""
        if self.localserve:
            return True
        static, dynamic = self.current()
        return domain in dynamic.Domains or domain == str(static.Hostname).lower()

    def resolve(self, localpart, domain):
        """The recipient of ``localpart@domain``: a Recipient, an AliasRecipient, or None
        for an unknown address of ours. Raises ``recipients.NotLocal`` (not our domain;
        in localserve every such address is the postmaster account's) or
        ``recipients.DomainDisabled``."""
        static, dynamic = self.current()
        try:
            return rcpts.resolve(static, dynamic, localpart, domain)
        except rcpts.NotLocal:
            if self.localserve:
                return rcpts.Recipient("", static.Postmaster.Account, "Inbox", None)
            raise

    def expand(self, resolved):
        """The account Recipients of a resolved recipient (alias members)."""
        static, dynamic = self.current()
        return rcpts.expand(static, dynamic, resolved)

    @defer.inlineCallbacks
    def all_forwarded(self, targets, data, mailfrom, verified_domains):
        """Whether every one of ``targets`` takes the message by a Ruleset with
        IsForward (step 4 asked early, for the DMARC policy decision: a forward is
        delivered even when DMARC would reject it). Deferred bool."""
        if not targets:
            return False
        headers, msgfrom = yield threads.deferToThread(message_headers, data)
        for t in targets:
            _mailbox, rs = choose_mailbox(t.destination, t.mailbox, mailfrom, msgfrom, verified_domains, headers)
            if rs is None or not rs.IsForward:
                return False
        return True

    # -- steps 3 to 5: junk decision, rules, mailbox

    @defer.inlineCallbacks
    def deliver(self, data, targets, *, mailfrom, prefix, facts=None, verified_domains=(), junk=None):
        """Deliver ``prefix + data`` to the account Recipients ``targets``. ``facts``
        (``moxtw.store.DeliveryFacts``) and ``verified_domains`` carry step 2, the
        authentication results. ``junk``: a :class:`JunkContext` for messages from the
        internet (resolver, DNSBL zones, first-time sender delay): step 3, the junk
        decision, for accounts with a JunkFilter. Deferred [RcptResult], in the order of
        ``targets``."""
        decisions = {}
        if junk is not None and facts is not None and facts.remote_ip:
            decisions = yield self._junk_decisions(data, targets, mailfrom, facts, verified_domains, junk)
        rejected = {a for a, d in decisions.items() if not d.accept}
        if rejected:
            # Mail judged junk by any of its accounts is refused for all with a neutral
            # temporary error: we never answer 250 and then hide a message. The
            # accounts keep a copy in their Rejects mailbox.
            static, dynamic = self.current()
            for account in sorted(rejected):
                t = next(t for t in targets if t.account == account)
                conf = dynamic.Accounts.get(account)
                yield self.local.deliver_reject(t, conf.RejectsMailbox if conf else "", data, mailfrom, prefix, facts,
                                                decisions[account].junk_score, decisions[account].reason)
            if junk.delay > 0:
                yield junk.sleep(2 * junk.delay)  # junk senders are slowed more (mox)
            # Subject pass (550 with tokens) only when every refusing account gave a
            # token: a retry with them all in the Subject then passes each, while a
            # refusal without one would make the 550's promise false.
            refusals = [decisions[a] for a in sorted(rejected)]
            tokens = [d.token for d in refusals]
            if all(tokens) and len(tokens) <= subjectpass.MAX_TOKENS:
                code, se, _text = refusals[0].reply
                text = subjectpass.explanation(tokens)
                return [RcptResult(t, False, code, se, text) for t in targets]
            return [RcptResult(t, False, c.C451_LOCAL_ERROR, c.SE_SEC_DELIVERY_NOT_AUTHORIZED1,
                               "not accepted at this time, try again later") for t in targets]
        if junk is not None and junk.delay > 0 and self._delay_first_time(decisions):
            # A first-time sender waits (mox's 15 s) before the message is stored and
            # acknowledged: a spammer's connection stays busy, an expected message
            # (a signup) still comes soon. Stored after the wait, so a sender giving up
            # in between gets no duplicate.
            yield junk.sleep(junk.delay)
            if not junk.alive():
                # The sender left during the wait: it never got an answer and will try
                # again, so nothing is stored now (no duplicate).
                log.info("sender disconnected during the first-time sender delay, message not stored")
                return [RcptResult(t, False, c.C451_LOCAL_ERROR, c.SE_MAIL_SYSTEM_OTHER0, "connection closed")
                        for t in targets]
        scores = {a: (d.junk_score, d.reason) for a, d in decisions.items()}
        mailboxes = {a: d.mailbox for a, d in decisions.items() if d.mailbox}
        results = yield self.local.deliver(data, targets, mailfrom=mailfrom, prefix=prefix, facts=facts,
                                           verified_domains=verified_domains, scores=scores, mailboxes=mailboxes)
        return results

    def _delay_first_time(self, decisions):
        if self.localserve or not decisions:
            return False
        static, dynamic = self.current()
        for account, d in decisions.items():
            conf = dynamic.Accounts.get(account)
            if d.first_time and conf is not None and not conf.NoFirstTimeSenderDelay:
                return True
        return False

    @defer.inlineCallbacks
    def _junk_decisions(self, data, targets, mailfrom, facts, verified_domains, junk):
        from moxtw.junk.analysis import Decision, decide_deferred
        from moxtw.store.account import facts_columns

        static, dynamic = self.current()
        todo = []
        for t in targets:
            conf = dynamic.Accounts.get(t.account)
            if t.report or t.disabled or conf is None or conf.JunkFilter is None:
                continue  # reports are wanted; accounts without a JunkFilter take all
            if t.account not in {x.account for x in todo}:
                todo.append(t)
        if not todo:
            return {}
        headers, msgfrom = yield threads.deferToThread(message_headers, data)
        header_map = {}
        for name, value in headers:
            header_map.setdefault(name, []).append(value)
        cols = facts_columns(facts)
        out = {}
        for t in todo:
            conf = dynamic.Accounts[t.account]
            _mailbox, rs = choose_mailbox(t.destination, t.mailbox, mailfrom or "", msgfrom, verified_domains, headers)
            if rs is not None and rs.ListAllowDomain and domain_verified(rs.ListAllowDomain, verified_domains):
                continue  # a mailing list whose domain is verified: no spam checks
            forward = rs is not None and rs.IsForward
            mcols = cols
            if forward:
                # The forwarder's IP, SPF, DKIM and EHLO say nothing about the original
                # sender: only the From address's evidence counts.
                mcols = dict(cols, remote_ip_masked1="", remote_ip_masked2="", remote_ip_masked3="",
                             mailfrom_validated=0, ehlo_validated=0, dkim_domains="[]", spf_result="")
            try:
                acc = yield self.store.open_account(t.account)
                d = yield decide_deferred(
                    acc, conf, mcols, data, remote_ip=facts.remote_ip, tls=bool(facts.tls_version),
                    rcptto=t.address, headers=header_map, forward=forward, resolver=junk.resolver,
                    dnsbl_zones=[] if forward else junk.dnsbl_zones)
            except Exception:
                log.failure("junk analysis for {account}", account=t.account)
                # As mox: an error in the analysis is a temporary failure, not a pass.
                d = Decision(False, "junk-error", "error in the junk analysis", first_time=False)
            if not d.accept and rs is not None and rs.AcceptRejectsToMailbox and d.reason != "junk-error":
                # The ruleset takes what would be rejected, into its own mailbox.
                d = dataclasses.replace(d, accept=True, mailbox=rs.AcceptRejectsToMailbox)
            out[t.account] = d
        return out

    # -- queued messages

    @defer.inlineCallbacks
    def deliver_queued(self, entry, data):
        """Deliver a queued message (``data``: the whole message, ``msg_prefix``
        included) to its local recipient ``entry.recipient``: a DeliveryResult."""
        localpart, _, domain = entry.recipient.rpartition("@")
        if self.localserve:
            rule = localserve_rule(localpart)
            if rule is not None and rule.queue:
                return DeliveryResult(False, True, c.reply_text(
                    c.C550_MAILBOX_UNAVAILABLE, c.SE_OTHER0, "delivery failure requested by localserve test address"))
            if self.own_smtp is not None:
                result = yield self._deliver_own_smtp(entry, data)
                return result
        try:
            resolved = self.resolve(localpart, domain)
        except rcpts.NotLocal:
            # The host name's domain: only postmaster and the TLS reporting address exist.
            resolved = None
        except rcpts.DomainDisabled:
            return DeliveryResult(False, False, c.reply_text(
                c.C450_MAILBOX_UNAVAILABLE, c.SE_MAILBOX_DISABLED1, "domain temporarily disabled"))
        if resolved is None:
            return DeliveryResult(False, True, c.reply_text(c.C550_MAILBOX_UNAVAILABLE, c.SE_ADDR_UNKNOWN_DEST_MAILBOX1, f"no such user {entry.recipient}"))
        targets = self.expand(resolved)
        if not targets:
            return DeliveryResult(False, True, c.reply_text(
                c.C550_MAILBOX_UNAVAILABLE, c.SE_ADDR_UNKNOWN_DEST_MAILBOX1,
                f"alias {entry.recipient} has no deliverable members"))
        results = yield self.deliver(data, targets, mailfrom=entry.sender, prefix=b"")
        failed = [r for r in results if not r.ok]
        if not failed:
            return DeliveryResult(True, False, "")
        if len(failed) < len(results):
            # An alias whose members partly got it: attempting the entry again would
            # deliver twice to those, so the rest become entries of their own.
            try:
                ids = yield self.queue_failed(
                    [(r, entry.dsn_notify, entry.dsn_orcpt) for r in failed], data, mailfrom=entry.sender,
                    sender_account=entry.sender_account, smtputf8=entry.smtputf8, has_8bit=entry.has_8bit,
                    dsn_ret=entry.dsn_ret or None, dsn_envid=entry.dsn_envid or None, is_dsn=entry.is_dsn,
                    max_attempts=entry.max_attempts, message_id=entry.message_id, subject=entry.subject)
            except Exception:
                # Nothing durable for the rest: this entry is tried again, whole (the
                # members that got it may get it twice, which is better than never).
                log.failure("queueing the remaining members of {alias}", alias=entry.recipient)
                return DeliveryResult(False, False, c.reply_text(
                    c.C451_LOCAL_ERROR, c.SE_MAIL_SYSTEM_OTHER0, "error queueing remaining alias members"))
            return DeliveryResult(True, False, "", requeued=tuple(ids))
        # Nobody got it: a temporary failure of any member makes the entry wait (the
        # permanent ones fail again and get their DSN once the others succeed).
        temporary = [r for r in failed if not r.permanent]
        first = (temporary or failed)[0]
        return DeliveryResult(False, not temporary, f"{first.code} {c.enhanced(first.code, first.se)} {first.text}")

    @defer.inlineCallbacks
    def queue_failed(self, failed, msg, *, mailfrom, sender_account=None, smtputf8=False, has_8bit=False,
                     dsn_ret=None, dsn_envid=None, is_dsn=False, max_attempts=0, message_id="", subject=""):
        """Queue ``msg`` (the whole message, trace headers included) for the accounts of
        ``failed`` [(RcptResult, notify, orcpt)] after others stored it, so the queue
        retries a temporary failure and sends the DSN for a permanent one (RFC 5321 6.1:
        we took responsibility). Each is queued at its account address and delivered
        through ``deliver_queued``; an alias member without an ORCPT gets the alias as
        its original recipient (RFC 3461 4.2). Deferred [entry id], durable when fired."""
        if self.queue is None:
            raise RuntimeError("no queue to retry failed local recipients")
        addresses, rcpt_dsn = [], {}
        for r, notify, orcpt in failed:
            if r.duplicate:
                continue  # the same account and mailbox as an earlier one: one copy
            addr = r.recipient.address
            if addr in addresses:
                continue
            addresses.append(addr)
            if not orcpt and r.recipient.alias and r.recipient.alias.isascii():
                orcpt = "rfc822;" + xtext_encode(r.recipient.alias)
            rcpt_dsn[addr] = {"notify": list(notify) if not isinstance(notify, str) else notify, "orcpt": orcpt}
        ids = yield self.queue.add(
            msg, mailfrom, addresses, sender_account=sender_account, smtputf8=smtputf8, has_8bit=has_8bit,
            dsn_ret=dsn_ret, dsn_envid=dsn_envid, rcpt_dsn=rcpt_dsn, is_dsn=is_dsn,
            max_attempts=max_attempts, message_id=message_id, subject=subject)
        for r, _, _ in failed:
            log.info("delivery to {address} failed, queued for retry or DSN: {text}",
                     address=r.recipient.address, text=r.text)
        return ids

    @defer.inlineCallbacks
    def _deliver_own_smtp(self, entry, data):
        reactor = self._reactor
        reactor = default_reactor(reactor)
        ip, port = self.own_smtp
        try:
            result = yield smtp_deliver(
                reactor, ip, port, ehlo_hostname=self.hostname, mailfrom=entry.sender,
                recipients=[entry.recipient], data=data, tls="none",
                smtputf8=entry.smtputf8, has_8bit=entry.has_8bit,
            )
        except SMTPClientError as e:
            return DeliveryResult(False, e.permanent, f"{e.code or ''} {e.enhanced or ''} {e.text}".strip())
        r = result.recipients[0]
        if r.ok:
            return DeliveryResult(True, False, "")
        return DeliveryResult(False, r.code >= 500, f"{r.code} {r.enhanced or ''} {r.text}".strip())
