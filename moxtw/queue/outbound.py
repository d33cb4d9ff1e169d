"""Delivery of queued messages to other mail servers: routes, transports, MX lookup.

:class:`Outbound` is the queue's ``deliver_group`` for remote recipients: it gets the due
recipients of one message in one domain, picks a route (account, then sender domain,
then global routes; the first that matches the sender domain, recipient domain and the
number of attempts made), and delivers with its transport:

- Direct (the default, also without any route): MX lookup of the recipient domain
  (RFC 5321 5.1), each MX host in preference order, each of its IPs, opportunistic
  STARTTLS, all recipients in one SMTP transaction (split per the server's RCPTMAX).
- Socks: as Direct, with connections made through a SOCKS5 proxy and the proxy's
  host name in EHLO.
- SMTP, Submission, Submissions: to one configured host (a smarthost), with STARTTLS or
  implicit TLS with certificate verification, and optional authentication with the
  strongest mechanism offered.
- Fail: every attempt fails with the configured reply.

Results are per recipient. Retrying, DSNs and the schedule are the QueueService's.
"""

import os
import random
import time
from dataclasses import dataclass

from twisted.internet import defer, endpoints, threads
from twisted.logger import Logger

from moxtw import dns
from moxtw.dane import TLSALookupFailed, tlsa_for_host
from moxtw.mtasts.cache import Lookup
from moxtw.mtasts.client import PolicyError
from moxtw.clock import default_reactor
from moxtw.delivery import DeliveryResult
from moxtw.metrics import QUEUE_ATTEMPT_DURATION, QUEUE_DELIVERIES
from moxtw.smtp import codes as c
from moxtw.smtpclient import SMTPClientError
from moxtw.smtpclient import deliver as smtp_deliver
from moxtw.smtpclient.socks import SOCKS5ClientEndpoint, SOCKSError
from moxtw.tls.client import trust_root, verifying_client
from moxtw.tls.policyclient import PolicyClientTLS, TLSAttempt

log = Logger(namespace="moxtw.queue")

SMTP_PORT = 25
MAX_MX_HOSTS = 10  # MX hosts tried per attempt
MAX_IPS_PER_HOST = 4  # addresses tried per MX host
DEFAULT_PORTS = {"SMTP": 25, "Submission": 587, "Submissions": 465}


class DeliveryError(Exception):
    """A failure for all recipients of an attempt; ``permanent`` ends retrying."""

    def __init__(self, text, permanent=False):
        super().__init__(text)
        self.permanent = permanent


@dataclass(frozen=True)
class Route:
    """The route chosen for an attempt: ``name`` of the transport ("" for direct
    delivery without a route), ``transport`` its config (None for plain direct)."""

    name: str
    transport: object = None
    where: str = ""  # "account", "domain", "global" or ""


def _domain_matches(patterns, domain):
    """RFC-less config rule: an entry matches the domain itself, an entry with a
    leading dot also its subdomains; no entries match everything."""
    if not patterns:
        return True
    domain = domain.lower()
    for p in patterns:
        if p.startswith("."):
            if domain == p[1:] or domain.endswith(p):
                return True
        elif domain == p:
            return True
    return False


def select_route(static, dynamic, account, sender_domain, recipient_domain, attempts):
    """The first matching route of the account, then the sender domain, then the global
    routes (every attempt anew: MinimumAttempts can switch transports); Direct when none
    matches."""
    levels = []
    acc = dynamic.Accounts.get(account) if account else None
    if acc is not None:
        levels.append(("account", acc.Routes))
    dom = dynamic.Domains.get(sender_domain) if sender_domain else None
    if dom is not None:
        levels.append(("domain", dom.Routes))
    levels.append(("global", dynamic.Routes))
    for where, routes in levels:
        for route in routes:
            if (_domain_matches(route.FromDomain, sender_domain)
                    and _domain_matches(route.ToDomain, recipient_domain)
                    and attempts >= route.MinimumAttempts):
                return Route(route.Transport, static.Transports.get(route.Transport), where)
    return Route("")


def needs_smtputf8(mailfrom, recipients, data):
    """Whether the message can only be sent with SMTPUTF8 (RFC 6531 3.4): non-ASCII in an
    address localpart, or in the header section. Non-ASCII domains alone are sent as
    A-labels instead."""
    for addr in [mailfrom, *recipients]:
        localpart = addr.rpartition("@")[0]
        if not localpart.isascii():
            return True
    end = data.find(b"\r\n\r\n")
    header = data if end < 0 else data[:end]
    return not header.isascii()


def ascii_domain_address(addr):
    """The address with its domain in A-labels (localpart unchanged)."""
    localpart, at, domain = addr.rpartition("@")
    if not at or domain.startswith("["):
        return addr
    try:
        return f"{localpart}@{dns.normalize(domain)}"
    except dns.DNSError:
        return addr


async def mx_hosts(resolver, domain, rng=random):
    """Host names to deliver to for ``domain``, in order (RFC 5321 5.1).

    Raises DeliveryError: permanent for a domain that does not exist or has a null MX
    (RFC 7505 3.2), temporary when DNS fails."""
    hosts, _ = await mx_lookup(resolver, domain, rng)
    return hosts


async def mx_lookup(resolver, domain, rng=random):
    """``(hosts, authentic)``: :func:`mx_hosts` and whether the MX answer was
    DNSSEC-authentic (for DANE, RFC 7672 2.2.1)."""
    try:
        answer = await resolver.mx(domain)
    except dns.NotFound:
        raise DeliveryError(c.reply_text(c.C550_MAILBOX_UNAVAILABLE, c.SE_ADDR_UNKNOWN_DEST_SYSTEM2, f"recipient domain {domain} does not exist"), permanent=True)
    except dns.NoRecords:
        # RFC 5321 5.1: no MX records: the domain itself is the implicit MX, if it has
        # addresses (checked when connecting). (The denial's authenticity is not known:
        # no DANE for an implicit MX.)
        return [dns.normalize(domain)], False
    except dns.InvalidName as e:
        raise DeliveryError(c.reply_text(c.C550_MAILBOX_UNAVAILABLE, c.SE_ADDR_UNKNOWN_DEST_SYSTEM2, f"invalid recipient domain {domain}: {e.text}"), permanent=True)
    except dns.DNSError as e:
        raise DeliveryError(c.reply_text(c.C451_LOCAL_ERROR, c.SE_NET_DIRECTORY_FAILURE3, f"looking up MX records of {domain}: {e}"))
    records = list(answer.records)
    if any(r.host == "" for r in records):
        # RFC 7505 3.2: a null MX says the domain accepts no email.
        raise DeliveryError(c.reply_text(c.C556_DOMAIN_NO_MAIL, c.SE_ADDR_NULL_MX10, f"recipient domain {domain} accepts no email (null MX)"),
                            permanent=True)
    # RFC 5321 5.1: lowest preference first, randomised among equal preferences.
    shuffled = list(records)
    rng.shuffle(shuffled)
    shuffled.sort(key=lambda r: r.preference)
    hosts = []
    for r in shuffled:
        if r.host not in hosts:
            hosts.append(r.host)
    return hosts[:MAX_MX_HOSTS], answer.authentic


def pick_addresses(records, limit=MAX_IPS_PER_HOST):
    """At most ``limit`` addresses, IPv6 and IPv4 alternating (RFC 8305 4 interleaves
    families), so a host with many AAAA records is still tried over IPv4."""
    import ipaddress

    v6 = [r for r in records if ipaddress.ip_address(r).version == 6]
    v4 = [r for r in records if ipaddress.ip_address(r).version == 4]
    out = []
    while (v6 or v4) and len(out) < limit:
        for family in (v6, v4):
            if family and len(out) < limit:
                out.append(family.pop(0))
    return out


def _error_text(e: SMTPClientError):
    code = f"{e.code} " if e.code else ""
    enhanced = f"{e.enhanced} " if e.enhanced else ""
    return f"{code}{enhanced}{e.text}".strip()


def _result_text(r):
    parts = [str(r.code) if r.code else "", r.enhanced or "", r.text]
    return " ".join(p for p in parts if p)


class Outbound:
    """Delivers groups of queue entries to remote servers.

    ``resolver``: a :class:`moxtw.dns.BaseResolver`. ``current()`` returns (static,
    dynamic) config. ``read_message(entry) -> Deferred[bytes]`` gives the message as it
    is sent (prefix included). ``port`` replaces 25 for direct delivery: test-only (see
    Static.TestDirectDeliveryPort). ``connect(host, port, timeout)`` makes the TCP
    endpoint (tests)."""

    def __init__(self, resolver, current, read_message, hostname, reactor=None, port=SMTP_PORT,
                 config_path=None, rng=random, connect_timeout=30.0, endpoint_factory=None,
                 sts=None, tls_results=None, dane=True, pool=None):
        reactor = default_reactor(reactor)
        self.resolver = resolver
        self.current = current
        self.read_message = read_message
        self.hostname = hostname
        self.reactor = reactor
        self.port = port
        self.config_path = config_path or (lambda p: p)
        self.rng = rng
        self.connect_timeout = connect_timeout
        self.endpoint_factory = endpoint_factory
        self.sts = sts  # a moxtw.mtasts.cache.PolicyCache, None: MTA-STS not applied
        self.tls_results = tls_results  # called with a moxtw.tls.policyclient.TLSAttempt per attempt
        self.dane = dane
        self.pool = pool  # a moxtw.smtpclient.pool.ConnectionPool: connections reused

    def deliver_group(self, entries):
        return defer.Deferred.fromCoroutine(self._deliver_group(list(entries)))

    async def _deliver_group(self, entries):
        first = entries[0]
        static, dynamic = self.current()
        route = select_route(static, dynamic, first.sender_account, first.sender_domain,
                             first.recipient_domain, min(e.attempts for e in entries))
        # cid: one connection id per attempt, in every log line of it (as mox).
        fields = dict(cid=os.urandom(6).hex(), queueid=first.id, baseid=first.base_id,
                      attempt=first.attempts + 1, recipients=len(entries),
                      transport=route.name or "direct", domain=first.recipient_domain)
        if route.name and route.transport is None:
            return self._all(entries, DeliveryResult(False, False, f"transport {route.name!r} not configured"))
        started = time.monotonic()
        try:
            data = await self.read_message(first)
        except FileNotFoundError:
            # A queue entry whose message is gone cannot be delivered, ever: fail it
            # loudly (DSN to the sender) rather than drop it silently.
            log.error("message file of queue entry missing", **fields)
            return self._all(entries, DeliveryResult(False, True, c.reply_text(c.C554_TRANSACTION_FAILED, c.SE_MAIL_SYSTEM_OTHER0, "message file missing from the queue")))
        t = route.transport
        try:
            if t is not None and t.Fail is not None:
                code = t.Fail.SMTPCode
                text = t.Fail.SMTPMessage or "delivery failed by configured transport"
                results = self._all(entries, DeliveryResult(False, code >= 500, f"{code} {text}"))
            elif t is not None and (t.SMTP or t.Submission or t.Submissions) is not None:
                results = await self._smarthost(entries, data, route, fields)
            else:
                results = await self._direct(entries, data, route, fields)
        except DeliveryError as e:
            log.info("delivery attempt failed: {error}", error=str(e), **fields)
            results = self._all(entries, DeliveryResult(False, e.permanent, str(e)))
        _observe(results, time.monotonic() - started, route)
        return results

    @staticmethod
    def _all(entries, result):
        return [result] * len(entries)

    def _message_options(self, entries, data):
        first = entries[0]
        recipients = [e.recipient for e in entries]
        smtputf8 = first.smtputf8 and needs_smtputf8(first.sender, recipients, data)
        mailfrom = first.sender
        if not smtputf8:
            # RFC 6531 3.2: without SMTPUTF8, domains go as A-labels.
            mailfrom = ascii_domain_address(mailfrom) if mailfrom else ""
            recipients = [ascii_domain_address(r) for r in recipients]
        has_8bit = first.has_8bit and not data.isascii()
        return dict(mailfrom=mailfrom, recipients=recipients, smtputf8=smtputf8, has_8bit=has_8bit,
                    requiretls=bool(first.require_tls), data=data)

    def _endpoint(self, host, port, socks=None):
        if socks is not None:
            proxy_host, _, proxy_port = socks.Address.rpartition(":")
            proxy = self._tcp_endpoint(proxy_host.strip("[]"), int(proxy_port))
            return SOCKS5ClientEndpoint(proxy, host, port)
        return self._tcp_endpoint(host, port)

    def _tcp_endpoint(self, host, port):
        if self.endpoint_factory is not None:
            return self.endpoint_factory(host, port, self.connect_timeout)
        import ipaddress

        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            # A host name (e.g. a SOCKS proxy configured as localhost:1080).
            return endpoints.HostnameEndpoint(self.reactor, host.encode("idna"), port,
                                              timeout=self.connect_timeout)
        cls = endpoints.TCP6ClientEndpoint if ip.version == 6 else endpoints.TCP4ClientEndpoint
        return cls(self.reactor, str(ip), port, timeout=self.connect_timeout)

    # -- direct delivery (also through a SOCKS proxy)

    async def _direct(self, entries, data, route, fields):
        t = route.transport
        socks = t.Socks if t is not None else None
        direct = t.Direct if t is not None else None
        ipv4 = not (direct is not None and direct.DisableIPv4)
        ipv6 = not (direct is not None and direct.DisableIPv6)
        ehlo = socks.RemoteHostname if socks is not None else self.hostname
        domain = entries[0].recipient_domain
        opts = self._message_options(entries, data)
        static, _ = self.current()
        trust = trust_root(static, self.config_path)
        # RFC 8689 5: "TLS-Required: No" asks to ignore TLS policies (MTA-STS, DANE).
        policies = entries[0].require_tls is not False
        # No TLS results for the delivery of TLS reports (RFC 8460 3: no report loops).
        record = self.tls_results is not None and not entries[0].is_tls_report
        mx_authentic = False
        sts = Lookup(None)
        if domain.startswith("["):
            # RFC 5321 4.1.3: an address literal names the host directly.
            literal = domain.strip("[]")
            if literal.lower().startswith("ipv6:"):
                literal = literal[5:]
            targets = [(literal, [literal], None)]
        else:
            hosts, mx_authentic = await mx_lookup(self.resolver, domain, self.rng)
            targets = [(h, None, None) for h in hosts]
            if self.sts is not None and policies:
                sts = await self.sts.get(domain)
        policy = sts.policy if sts.policy is not None and sts.policy.mode != "none" else None
        if sts.error is not None and record:
            # The policy in force is the cached one, if any (RFC 8460 4.4 reports it).
            self._record(domain, policy, None, False, sts.error.result if isinstance(sts.error, PolicyError)
                         else "sts-policy-fetch-error", str(sts.error), "")
        last_error = None
        permanent_errors = 0
        tried = 0
        for host, ips, _ in targets:
            dane_host = None
            if ips is None:
                try:
                    answer = await self.resolver.ip(host, ipv4=ipv4, ipv6=ipv6)
                except dns.DNSError as e:
                    last_error = DeliveryError(c.reply_text(c.C451_LOCAL_ERROR, c.SE_NET_DIRECTORY_FAILURE3, f"looking up addresses of MX host {host}: {e}"))
                    log.info("mx host lookup failed: {error}", error=str(e), mx=host, **fields)
                    continue
                ips = pick_addresses(answer.records)
                if self.dane and policies and mx_authentic and answer.authentic and socks is None:
                    # RFC 7672 2.2: TLSA records count only when the MX and address
                    # lookups were DNSSEC-authentic too.
                    try:
                        # Port 25 always: ``self.port`` only redirects connections in tests.
                        dane_host = await tlsa_for_host(self.resolver, host, SMTP_PORT, answer.canonical or host)
                    except TLSALookupFailed as e:
                        # RFC 7672 2.2: neither with nor without TLS to this host now.
                        last_error = DeliveryError(c.reply_text(c.C451_LOCAL_ERROR, c.SE_NET_DIRECTORY_FAILURE3, str(e)))
                        log.info("tlsa lookup failed: {error}", error=str(e), mx=host, **fields)
                        if record:
                            self._record(domain, policy, host, False, "dnssec-invalid", str(e), "",
                                         dane_base=dns.normalize(answer.canonical or host))
                        continue
            plan = self._tls_plan(host, dane_host, policy, opts["requiretls"], trust)
            if plan is None:
                # RFC 8461 4.1: with an enforced policy, an MX host it does not list is
                # not used.
                text = f"MX host {host} not allowed by the MTA-STS policy of {domain}"
                last_error = DeliveryError(c.reply_text(c.C451_LOCAL_ERROR, c.SE_SEC_OTHER0, text))
                log.info("skipping mx host: {error}", error=text, mx=host, **fields)
                if record:
                    self._record(domain, policy, host, False, "validation-failure", text, "")
                continue
            tls_mode, _, applied = plan
            for ip in ips:
                # RFC 7435 (opportunistic security): a failed handshake is retried on the
                # same address without TLS, as Postfix and mox do; never under a policy.
                modes = [tls_mode]
                while modes:
                    mode = modes.pop(0)
                    tried += 1
                    log.debug("connecting", mx=host, ip=ip, tls_policy=applied, **fields)
                    # A new creator per connection: it keeps that connection's outcome.
                    creator = self._tls_plan(host, dane_host, policy, opts["requiretls"], trust)[1]
                    key = ("direct", host, ip, self.port, ehlo, socks.Address if socks else "", mode, applied,
                           dane_host.records if dane_host else (), opts["requiretls"])

                    def connect(reuse, ip=ip, creator=creator, mode=mode):
                        return smtp_deliver(
                            self.reactor, host, self.port, ehlo_hostname=ehlo, tls=mode,
                            tls_context_factory=creator, connect_timeout=self.connect_timeout,
                            endpoint=self._endpoint(ip, self.port, socks), reuse=reuse, **opts,
                        )

                    try:
                        result, reused = await self._send(key, connect, opts)
                    except SMTPClientError as e:
                        text = _error_text(e)
                        outcome = getattr(creator, "outcome", None)
                        if outcome is not None and not outcome[0]:
                            text = f"{text} ({outcome[2]}, {applied})"
                        log.info("delivery attempt to {mx} ({ip}) failed: {error}", mx=host, ip=ip,
                                 error=text, stage=e.stage, tls_policy=applied, **fields)
                        if record and e.stage != "connect":
                            self._record_attempt(domain, policy, host, ip, dane_host, e, outcome)
                        if (mode == "opportunistic" and e.stage == "starttls" and e.code is None
                                and "does not offer STARTTLS" not in e.text and not opts["requiretls"]):
                            log.info("TLS with {mx} ({ip}) failed, trying again without TLS: {error}", mx=host,
                                     ip=ip, error=text, **fields)
                            modes.append("none")
                            continue
                        if e.stage in ("mail", "data") and e.code is not None:
                            # The server took part in the transaction: its answer is final
                            # for this attempt (another MX would say the same).
                            return self._all(entries, DeliveryResult(False, self._permanent(e, entries), text))
                        if e.permanent and e.stage in ("banner", "ehlo"):
                            permanent_errors += 1
                        if e.permanent and e.stage not in ("banner", "ehlo", "connect"):
                            # Local refusals (REQUIRETLS, SIZE, 8BITMIME, SMTPUTF8).
                            return self._all(entries, DeliveryResult(False, True, text))
                        last_error = DeliveryError(text, permanent=False)
                        continue
                    except SOCKSError as e:
                        last_error = DeliveryError(c.reply_text(c.C451_LOCAL_ERROR, c.SE_NET_NO_ANSWER1, f"socks proxy: {e}"))
                        continue
                    if record and not reused and mode != "none":
                        # RFC 8460 4.4 counts sessions: a reused connection is not a new one
                        # (and the plain-text retry after a failed handshake was counted).
                        outcome = getattr(creator, "outcome", None)
                        self._record_success(domain, policy, host, ip, dane_host, result, outcome)
                    log.info("delivered to {mx} ({ip})", mx=host, ip=ip, tls=result.tls_version or "none",
                             banner=result.remote_banner, tls_policy=applied, reused=reused,
                             **fields)
                    return [self._rcpt_result(r, entries) for r in result.recipients]
        if last_error is None:
            raise DeliveryError(c.reply_text(c.C451_LOCAL_ERROR, c.SE_NET_ROUTING4, f"no addresses for the MX hosts of {domain}"))
        if tried and permanent_errors == tried and entries[0].attempts >= 1:
            # Every host refused us with 5xx at connection level, twice: give up.
            raise DeliveryError(str(last_error), permanent=True)
        raise last_error

    def _tls_plan(self, host, dane_host, policy, requiretls, trust):
        """``(tls mode, connection creator, policy name)`` for one MX host, or None when
        an enforced MTA-STS policy excludes it. DANE takes precedence over MTA-STS
        (RFC 8461 2); either satisfies REQUIRETLS (RFC 8689 4.2.1)."""
        if dane_host is not None and dane_host.records:
            # RFC 7672 8.1: SNI is the TLSA base domain.
            creator = PolicyClientTLS(dane_host.base, dane_host=dane_host, enforce=True)
            return "required", creator, "dane"
        # Authentic TLSA records none of which is usable make TLS mandatory but give no
        # authentication (RFC 7672 3.1): MTA-STS and REQUIRETLS still apply in full.
        if policy is not None and policy.mode == "enforce":
            if not policy.allows(host):
                return None
            return "required", PolicyClientTLS(host, pkix_name=host, trust=trust, enforce=True), "mtasts-enforce"
        if requiretls:
            # RFC 8689 4.2.1: the certificate is verified (PKIX against the MX host name).
            return "required", PolicyClientTLS(host, pkix_name=host, trust=trust, enforce=True), "requiretls"
        if dane_host is not None:
            return "required", PolicyClientTLS(dane_host.base, dane_host=dane_host, enforce=True), "dane-unusable"
        if policy is not None:
            # MTA-STS testing (RFC 8461 5): deliver as usual, report what failed.
            return "opportunistic", PolicyClientTLS(host, pkix_name=host, trust=trust, enforce=False), "mtasts-testing"
        return "opportunistic", None, "opportunistic"

    # -- TLS results for reports (RFC 8460)

    def _record(self, domain, policy, host, ok, result_type, detail, ip, dane_host=None, dane_base=None):
        try:
            self.tls_results(TLSAttempt(domain, policy, host or "", ip, ok, result_type, detail,
                                        dane_host=dane_host, dane_base=dane_base or ""))
        except Exception:
            log.failure("recording TLS result")

    def _record_attempt(self, domain, policy, host, ip, dane_host, err, outcome):
        if outcome is not None and not outcome[0]:
            result_type, detail = outcome[1], outcome[2]
        elif err.stage == "starttls" and "does not offer STARTTLS" in err.text:
            result_type, detail = "starttls-not-supported", err.text
        elif err.stage == "starttls":
            result_type, detail = "validation-failure", err.text
        else:
            return  # not a TLS matter (the server refused us before TLS)
        if dane_host is not None and result_type == "starttls-not-supported":
            result_type = "dane-required"
        self._record(domain, policy, host, False, result_type, detail, ip, dane_host=dane_host)

    def _record_success(self, domain, policy, host, ip, dane_host, result, outcome):
        if result.tls_version is None:
            # Opportunistic (or testing mode): delivered, but without TLS.
            self._record(domain, policy, host, False, "starttls-not-supported", "server does not offer STARTTLS", ip)
            return
        if outcome is not None and not outcome[0]:
            # Delivered in testing mode, but the policy check failed.
            self._record(domain, policy, host, False, outcome[1], outcome[2], ip)
            return
        self._record(domain, policy, host, True, "", "", ip, dane_host=dane_host)

    async def _send(self, key, connect, opts):
        """``(Result, reused)``: on an idle connection of the pool for ``key`` when there
        is one, else on a new connection (``connect(reuse)``)."""
        if self.pool is None:
            return await connect(False), False
        message = {k: opts[k] for k in ("mailfrom", "recipients", "data", "smtputf8", "has_8bit", "requiretls")}
        return await self.pool.deliver(key, lambda: connect(True), message)

    @staticmethod
    def _permanent(err, entries):
        # As mox: a 5xx to MAIL or RCPT on the first attempt is retried once, like a
        # 5xx to EHLO, in case it came from a temporary condition answered wrongly.
        return err.permanent and min(e.attempts for e in entries) >= 1

    def _rcpt_result(self, r, entries):
        if r.ok:
            return DeliveryResult(True, False, "")
        permanent = r.code is not None and r.code >= 500 and min(e.attempts for e in entries) >= 1
        return DeliveryResult(False, permanent, _result_text(r))

    # -- smarthost transports

    async def _smarthost(self, entries, data, route, fields):
        static, _ = self.current()
        t = route.transport
        kind, conf = next((k, getattr(t, k)) for k in ("Submissions", "Submission", "SMTP") if getattr(t, k))
        port = conf.Port or DEFAULT_PORTS[kind]
        host = dns.normalize(conf.Host)
        if kind == "Submissions":
            tls = "implicit"
        elif conf.NoSTARTTLS:
            tls = "none"
        else:
            # A smarthost gets the message (and maybe credentials): never fall back to
            # plain text when STARTTLS is stripped; NoSTARTTLS is the explicit choice.
            tls = "required"
        creator = None
        if tls != "none" and not conf.STARTTLSInsecureSkipVerify:
            creator = verifying_client(conf.Host, trust_root(static, self.config_path))
        auth = None
        mechanisms = None
        if conf.Auth is not None:
            auth = (conf.Auth.Username, conf.Auth.Password)
            mechanisms = list(conf.Auth.Mechanisms) or None
        opts = self._message_options(entries, data)
        try:
            answer = await self.resolver.ip(host)
            ips = pick_addresses(answer.records)
        except dns.DNSError as e:
            try:
                import ipaddress

                ips = [str(ipaddress.ip_address(conf.Host))]
            except ValueError:
                raise DeliveryError(c.reply_text(c.C451_LOCAL_ERROR, c.SE_NET_DIRECTORY_FAILURE3, f"looking up smarthost {host}: {e}")) from None
        last = None
        for ip in ips:
            key = ("smarthost", route.name, host, ip, port, tls, auth, tuple(mechanisms or ()), opts["requiretls"])

            def connect(reuse, ip=ip):
                return smtp_deliver(
                    self.reactor, host, port, ehlo_hostname=self.hostname, tls=tls,
                    tls_context_factory=creator, auth=auth, auth_mechanism=mechanisms,
                    connect_timeout=self.connect_timeout, endpoint=self._tcp_endpoint(ip, port), reuse=reuse,
                    **opts,
                )

            try:
                result, _ = await self._send(key, connect, opts)
            except SMTPClientError as e:
                text = _error_text(e)
                log.info("delivery to smarthost {host} ({ip}) failed: {error}", host=host, ip=ip,
                         error=text, stage=e.stage, **fields)
                if e.stage == "connect":
                    last = DeliveryError(text)
                    continue
                return self._all(entries, DeliveryResult(False, e.permanent, text))
            log.info("delivered to smarthost {host} ({ip})", host=host, ip=ip,
                     tls=result.tls_version or "none", auth=result.auth_mechanism or "none", **fields)
            return [DeliveryResult(True, False, "") if r.ok
                    else DeliveryResult(False, r.code is not None and r.code >= 500, _result_text(r))
                    for r in result.recipients]
        raise last or DeliveryError(c.reply_text(c.C451_LOCAL_ERROR, c.SE_NET_ROUTING4, f"no addresses for smarthost {host}"))


def read_queued_message(queue):
    """``read_message`` for :class:`Outbound`: the queue file with its prefix, in a thread."""

    def read(entry):
        def blocking():
            with open(queue.message_path(entry), "rb") as f:
                return entry.msg_prefix + f.read()

        return threads.deferToThread(blocking)

    return read


def _observe(results, duration, route):
    QUEUE_ATTEMPT_DURATION.labels(transport=route.name or "direct").observe(duration)
    for r in results:
        outcome = "ok" if r.ok else ("permanent" if r.permanent else "temporary")
        QUEUE_DELIVERIES.labels(transport=route.name or "direct", result=outcome).inc()
