"""DMARC and TLS reports in the running server: incoming reports stored, DMARC evaluations
of incoming mail recorded, and aggregate reports sent to domains that ask for them.

:class:`ReportsService` owns ``data/dmarc.db``, ``data/tlsrpt.db`` and
``data/dmarceval.db``. The SMTP server calls :meth:`ReportsService.incoming_report` for
messages to reporting addresses (after delivering them: a malformed report stays a
message in the mailbox, only logged) and :meth:`ReportsService.record_evaluation` for every
DMARC evaluation. Every hour, reports that are due are composed, DKIM-signed and queued
like other outgoing mail (RFC 7489 7.2), unless Static.NoOutgoingDMARCReports.

Outgoing delivery hands the results of its TLS connections to
:meth:`ReportsService.record_tls_results`; once a UTC day is over, the day's results
become a TLS report per policy domain (RFC 8460), sent by mail (DKIM-signed) or HTTPS
POST to the domain's ``_smtp._tls`` addresses, unless Static.NoOutgoingTLSReports. As
mox, a day with only successes is not reported unless
Static.OutgoingTLSReportsForAllSuccess. Both kinds skip addresses on the DMARC
suppression list.
"""

from datetime import datetime, timezone

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger

from moxtw.clock import default_reactor
from moxtw.queue.service import DEFAULT_MAX_ATTEMPTS
from moxtw.reports.dmarc import parse as dmarcparse
from moxtw.reports.dmarc import received as dmarcdb
from moxtw.reports.dmarc.evaluations import EvaluationStore
from moxtw.reports.tls import parse as tlsparse
from moxtw.reports.tls import received as tlsdb

log = Logger(namespace="moxtw.reports")

SEND_INTERVAL = 3600.0  # seconds between checks for due outgoing reports


class ReportsService(service.Service):
    name = "reports"

    def __init__(self, data_dir, hostname, queue, resolver, static, reactor=None, dkim=None,
                 queue_service=None, interval=SEND_INTERVAL, hold_rules=None):
        reactor = default_reactor(reactor)
        self.reactor = reactor
        self.hostname = hostname
        self.queue = queue
        self.resolver = resolver
        self.static = static
        self.dkim = dkim
        self.queue_service = queue_service
        self.hold_rules = hold_rules  # (account, sender_domain) -> hold predicate
        self.interval = interval
        self.dmarc = dmarcdb.ReportDB(data_dir, reactor=reactor)
        self.tlsrpt = tlsdb.ReportDB(data_dir, reactor=reactor)
        self.evaluations = EvaluationStore(data_dir, reactor=reactor)
        self.ready = None
        self._loop = None
        self._tls_loop = None
        self.trust = None  # IOpenSSLTrustRoot for HTTPS report destinations (tests)

    def startService(self):
        super().startService()
        self.ready = defer.gatherResults(
            [self.dmarc.open(), self.tlsrpt.open(), self.evaluations.open()], consumeErrors=True)
        self.ready.addErrback(lambda f: log.failure("opening report databases", f))
        if not self.static.NoOutgoingDMARCReports:
            self._loop = task.LoopingCall(self._send_due)
            self._loop.clock = self.reactor
            self.ready.addCallback(lambda _: self._loop.start(self.interval, now=False) and None)
        if not self.static.NoOutgoingTLSReports:
            self._tls_loop = task.LoopingCall(self._send_tls_due)
            self._tls_loop.clock = self.reactor
            self.ready.addCallback(lambda _: self._tls_loop.start(self.interval, now=False) and None)

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        for loop in (self._loop, self._tls_loop):
            if loop is not None and loop.running:
                loop.stop()
        if self.ready is not None:
            yield self.ready
        for db in (self.dmarc, self.tlsrpt, self.evaluations):
            try:
                yield db.close()
            except Exception:
                log.failure("closing report database")

    def when_ready(self):
        """A new Deferred firing when the databases are open (``ready`` itself is shared);
        for readers of the stores such as the admin pages."""
        return self._when_ready()

    def _when_ready(self):
        """A new Deferred firing when the databases are open (``ready`` itself is shared)."""
        d = defer.Deferred()
        if self.ready is None:
            d.callback(None)
            return d

        def fire(result):
            d.callback(None)
            return result

        self.ready.addBoth(fire)
        return d

    # -- incoming

    async def incoming_report(self, kind, data, from_address):
        """Parse and store a report message received at a reporting address. Returns
        the stored id, or None when it held no (valid) report."""
        parse = dmarcparse.parse_message if kind == "dmarc" else tlsparse.parse_message
        error = dmarcparse.ReportError if kind == "dmarc" else tlsparse.ReportError
        try:
            report = await threads.deferToThread(parse, data)
        except error as e:
            log.warn("malformed {kind} report from {sender}: {error}", kind=kind, sender=from_address,
                     error=str(e))
            return None
        if report is None:
            log.info("no {kind} report found in message from {sender}", kind=kind, sender=from_address)
            return None
        await self._when_ready()
        if kind == "dmarc":
            rid = await self.dmarc.add(report, from_address, report.domain)
            log.info("stored DMARC report {id} about {domain} from {org}", id=rid, domain=report.domain,
                     org=report.report_metadata.org_name)
        else:
            domains = report.domains()
            rid = await self.tlsrpt.add(report, from_address, domains[0] if domains else "")
            log.info("stored TLS report {id} from {org}", id=rid, org=report.organization_name)
        return rid

    # -- evaluations for outgoing reports

    def record_evaluation(self, remote_ip, mailfrom, rcpt_domain, auth):
        """Store the DMARC evaluation of an incoming message when its domain asks for
        aggregate reports (rua). Deferred; errors are logged."""
        d = auth.dmarc
        if d is None or d.record is None or not d.record.rua or self.static.NoOutgoingDMARCReports:
            return defer.succeed(None)
        rec = d.record
        published = {"domain": d.record_domain, "adkim": rec.adkim, "aspf": rec.aspf, "p": rec.p,
                     "sp": rec.sp or rec.p, "pct": rec.pct, "fo": rec.fo}
        dkim_results = [(r.domain, r.selector, r.result) for r in auth.dkim]
        spf_results = []
        if auth.spf is not None:
            spf_results.append((auth.spf_domain, "mfrom", auth.spf.mailfrom.result))
        out = self._when_ready()
        out.addCallback(lambda _: self.evaluations.add_evaluation(
            d.record_domain or d.domain, published, remote_ip, d.policy,
            d.aligned_dkim, d.aligned_spf, d.domain,
            envelope_from=mailfrom.rpartition("@")[2] if mailfrom else "",
            envelope_to=rcpt_domain, dkim_results=dkim_results, spf_results=spf_results,
            rua=[str(u) for u in rec.rua], ri=rec.ri,
        ))
        out.addErrback(lambda f: log.failure("storing DMARC evaluation", f))
        return out

    # -- outgoing

    async def _send_due(self):
        try:
            await self.send_due()
        except Exception:
            log.failure("sending DMARC reports")

    async def send_due(self, now=None):
        """Compose and queue all due aggregate reports; returns how many were queued."""
        await self._when_ready()
        now = now or datetime.now(timezone.utc)
        reports = await self.evaluations.prepare_reports(
            now, self.resolver, self.hostname, f"postmaster@{self.hostname}")
        sent = 0
        for r in reports:
            msg = r.message_bytes
            if self.dkim is not None:
                signature = await threads.deferToThread(self.dkim.sign, msg)
                msg = signature + msg
            hold = self.hold_rules(None, r.mail_from.rpartition("@")[2]) if self.hold_rules else False
            await self.queue.add(
                msg, r.mail_from, list(r.to_addresses), sender_account=None,
                is_dmarc_report=True, max_attempts=DEFAULT_MAX_ATTEMPTS, hold=hold,
                subject=f"Report Domain: {r.domain}",
            )
            # Queued (durable) before marked: a crash in between sends a report twice
            # rather than never.
            await self.evaluations.mark_sent(r)
            log.info("queued DMARC aggregate report for {domain} to {to}", domain=r.domain,
                     to=",".join(r.to_addresses))
            sent += 1
        if sent and self.queue_service is not None and self.queue_service.running:
            self.queue_service.kick()
        return sent

    # -- outgoing TLS reports

    def record_tls_results(self, attempt):
        """Count the results of an outgoing connection attempt (a
        ``moxtw.tls.policyclient.TLSAttempt``) for TLS reports."""
        from moxtw.reports.tls.results import results_for

        if self.static.NoOutgoingTLSReports:
            return defer.succeed(None)
        results = results_for(attempt)
        d = self._when_ready()
        d.addCallback(lambda _: self.tlsrpt.add_results(results, now=self.reactor.seconds()))
        d.addErrback(lambda f: log.failure("storing TLS results", f))
        return d

    async def _send_tls_due(self):
        try:
            await self.send_tls_due()
        except Exception:
            log.failure("sending TLS reports")

    async def send_tls_due(self, now=None):
        """Send the reports of ended UTC days; returns how many went out. Days whose
        destinations could not be looked up (DNS failure) are kept for a later try, at
        most two days."""
        from moxtw import dns
        from moxtw.reports.dmarc.evaluations import _is_suppressed
        from moxtw.reports.dmarc.outgoing import parse_rua
        from moxtw.reports.tls import outgoing

        await self._when_ready()
        now = now or datetime.fromtimestamp(self.reactor.seconds(), timezone.utc)
        today = now.strftime("%Y-%m-%d")
        rows = await self.tlsrpt.results(before_day=today)
        groups = {}
        for row in rows:
            groups.setdefault((row["policy_domain"], row["day"], row["is_host"]), []).append(row)
        suppressed = [s.entry for s in await self.evaluations.suppressions(now)]
        submitter = self.hostname
        sent = 0
        for (policy_domain, day, is_host), group in groups.items():
            ids = [r["id"] for r in group]
            if not any(r["failure"] for r in group) and not self.static.OutgoingTLSReportsForAllSuccess:
                await self.tlsrpt.remove_results(ids)
                continue
            try:
                uris = await outgoing.destinations(self.resolver, policy_domain)
            except dns.DNSError as e:
                if (now - outgoing.day_range(day)[1]).total_seconds() < 2 * 86400:
                    log.info("looking up TLS report destinations of {domain}: {error}, trying later",
                             domain=policy_domain, error=str(e))
                    continue
                uris = []
            report = outgoing.build_report(group, policy_domain, day, submitter, f"postmaster@{submitter}")
            gz = outgoing.gzip_report(outgoing.report_json(report))
            mailto = []
            for uri in uris:
                if uri.startswith("mailto:"):
                    dest = parse_rua(uri)
                    if dest is not None and not _is_suppressed(dest, suppressed):
                        mailto.append(dest.address)
                    continue
                host = uri.split("/")[2].split(":")[0].lower()
                if any(host == e or host.endswith("." + e) for e in suppressed if "@" not in e):
                    continue
                try:
                    code = await outgoing.post_report(self.reactor, self.resolver, uri, gz, trust=self.trust)
                    log.info("posted TLS report for {domain} to {url}: HTTP {code}", domain=policy_domain,
                             url=uri, code=code)
                    sent += 1
                except Exception as e:
                    log.info("posting TLS report for {domain} to {url} failed: {error}", domain=policy_domain,
                             url=uri, error=str(e) or type(e).__name__)
            if mailto:
                from_address = f"postmaster@{submitter}"
                msg = outgoing.compose_message(from_address, mailto, policy_domain, submitter, report, gz, date=now)
                if self.dkim is not None:
                    signature = await threads.deferToThread(self.dkim.sign, msg)
                    msg = signature + msg
                hold = self.hold_rules(None, submitter) if self.hold_rules else False
                # RFC 8460 3: is_tls_report, so the delivery of a report makes no report.
                # TLS-Required: No (RFC 8689 5) in the queue too: the report is delivered even
                # when the policy it reports about fails.
                await self.queue.add(msg, from_address, mailto, sender_account=None, is_tls_report=True,
                                     requiretls=False,
                                     max_attempts=DEFAULT_MAX_ATTEMPTS, hold=hold,
                                     subject=f"Report Domain: {policy_domain}")
                log.info("queued TLS report for {domain} to {to}", domain=policy_domain, to=",".join(mailto))
                sent += 1
            # Queued (durable) before removed: a crash in between sends a report twice
            # rather than never.
            await self.tlsrpt.remove_results(ids)
        if sent and self.queue_service is not None and self.queue_service.running:
            self.queue_service.kick()
        return sent
