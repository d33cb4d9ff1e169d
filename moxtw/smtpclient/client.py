"""SMTP client: one connection, one message, many recipients (RFC 5321).

Used by the queue for outgoing delivery; MX lookup, retries and DSNs are the caller's.
Extensions: STARTTLS (RFC 3207), AUTH (RFC 4954, mechanisms from :mod:`moxtw.sasl.client`),
PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531),
ENHANCEDSTATUSCODES (RFC 2034, RFC 3463), REQUIRETLS (RFC 8689), LIMITS RCPTMAX (RFC 9422:
recipients split over several transactions). CHUNKING/BDAT (RFC 3030)
is not used: DATA works with every server.

``deliver(reactor, host, port, ...)`` returns a Deferred firing with a :class:`Result`
(per-recipient results) or failing with :class:`SMTPClientError` for failures that affect
all recipients.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections import deque
from dataclasses import dataclass, replace

from OpenSSL import SSL
from twisted.internet import defer, endpoints, error as ierror, protocol
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IPullProducer

from moxtw.sasl.channelbinding import channel_binding_for
from moxtw.sasl.client import choose_client_mechanism, new_client_mechanism
from moxtw.sasl.server import SASLError
from moxtw.smtpclient.data import CHUNK_SIZE, dot_stuffed_chunks, has_bare_cr
from moxtw.smtpclient.reply import Reply, ReplyError, ReplyParser

__all__ = ["deliver", "send_next", "Result", "RcptResult", "SMTPClientError", "SMTPClientProtocol", "Options"]

log = Logger(namespace="moxtw.smtpclient")

TLS_MODES = ("none", "opportunistic", "required", "implicit")
MAX_AUTH_ROUNDS = 10
MAX_TRANSACTIONS = 100  # per connection, for RCPTMAX batches and 452 retries
QUIT_TIMEOUT = 30


class SMTPClientError(Exception):
    """A failure for all recipients of the message.

    ``stage``: "connect", "banner", "ehlo", "starttls", "auth", "mail" or "data".
    ``code``/``enhanced``: from the server's reply, None for local or network errors.
    ``text``: the full (multi-line) reply text or a description. ``permanent``: whether
    retrying is pointless. ``recipients``: per-recipient results known when the failure
    happened (RCPT replies before a failed DATA), else None."""

    def __init__(self, stage, text, *, permanent=False, code=None, enhanced=None, recipients=None):
        super().__init__(" ".join(str(x) for x in (f"{stage}:", code, enhanced, text) if x))
        self.stage = stage
        self.text = text
        self.permanent = permanent
        self.code = code
        self.enhanced = enhanced
        self.recipients = recipients


@dataclass
class RcptResult:
    """Outcome for one recipient. For accepted recipients of a delivered message, the
    code and text are those of the final DATA reply; for refused ones, the RCPT reply."""

    address: str
    ok: bool
    code: int | None
    enhanced: str | None
    text: str


@dataclass
class Result:
    recipients: list[RcptResult]
    tls_version: str | None  # e.g. "TLSv1.3", None without TLS
    remote_banner: str
    auth_mechanism: str | None = None  # the SASL mechanism used, if any
    # With ``reuse``: the protocol, still connected and idle, for :func:`send_next`.
    connection: object = None


@dataclass
class Options:
    host: str
    ehlo_hostname: str
    mailfrom: str
    recipients: list[str]
    data: bytes
    tls: str = "opportunistic"
    tls_context_factory: object = None
    auth: tuple[str, str] | None = None
    auth_mechanism: str | None = None
    smtputf8: bool = False
    has_8bit: bool = False
    requiretls: bool = False
    size: bool = True
    connect_timeout: float = 30
    command_timeout: float = 300
    data_timeout: float = 600
    chunk_size: int = CHUNK_SIZE
    reuse: bool = False  # keep the connection open after success (moxtw.smtpclient.pool)


@implementer(IOpenSSLClientConnectionCreator)
class NoVerifyClientTLS:
    """TLS client without certificate verification, for opportunistic STARTTLS between
    MTAs (RFC 3207 4.1: a failed check is no reason not to use the encryption); still
    sends SNI for a host name."""

    def __init__(self, host):
        self._ctx = CertificateOptions().getContext()
        self._sni = None
        try:
            ipaddress.ip_address(host)
        except ValueError:
            try:
                self._sni = host.encode("idna")
            except UnicodeError:
                self._sni = None

    def clientConnectionForTLS(self, tlsProtocol):
        conn = SSL.Connection(self._ctx, None)
        conn.set_app_data(tlsProtocol)
        if self._sni:
            conn.set_tlsext_host_name(self._sni)
        conn.set_connect_state()
        return conn


def _check_options(o: Options):
    if o.tls not in TLS_MODES:
        raise ValueError(f"tls must be one of {TLS_MODES}, not {o.tls!r}")
    if not o.recipients:
        raise ValueError("no recipients")
    for a in [o.mailfrom, o.ehlo_hostname, *o.recipients]:
        if any(ch in a for ch in "\r\n<>") or any(ord(ch) < 0x20 for ch in a):
            raise ValueError(f"invalid address or hostname {a!r}")
    if o.auth is not None and o.tls == "none":
        raise ValueError("AUTH needs TLS, tls='none' was given")


def _precheck(o: Options):
    """Failures known before connecting."""
    if o.requiretls and o.tls == "none":
        # RFC 8689 4.1: a REQUIRETLS message is only sent over TLS.
        return SMTPClientError("starttls", "REQUIRETLS message but TLS disabled", permanent=True, enhanced="5.7.10")
    if has_bare_cr(o.data):
        return SMTPClientError("data", "message has a bare CR", permanent=True, enhanced="5.6.0")
    return None


@implementer(IPullProducer)
class _DataProducer:
    """Writes the dot-stuffed message one chunk per resumeProducing (RFC 5321 4.5.2)."""

    def __init__(self, proto, chunks):
        self._proto = proto
        self._chunks = chunks
        self.done = defer.Deferred()
        self._finished = False

    def resumeProducing(self):
        if self._finished:
            return
        chunk = next(self._chunks, None)
        if chunk is None:
            self._finished = True
            self._proto.transport.unregisterProducer()
            self.done.callback(None)
            return
        self._proto.transport.write(chunk)
        self._proto._progress()

    def stopProducing(self):
        if not self._finished:
            self._finished = True
            self.done.errback(SMTPClientError("data", "connection closed while sending data"))


class SMTPClientProtocol(protocol.Protocol):
    """Runs one delivery over a connected transport. ``done`` fires with a Result or
    fails with SMTPClientError once the exchange finished and the connection is closed."""

    def __init__(self, clock, options: Options):
        self.clock = clock
        self.o = options
        self.done = defer.Deferred()
        self._parser = ReplyParser()
        self._replies: deque[Reply] = deque()
        self._waiter = None  # (Deferred, stage)
        self._timer = None
        self._timeout = 0.0
        self._error = None
        self._lost = False
        self._outcome = None
        self._tls = False
        self._esmtp = False
        self._ext: dict[str, list[str]] = {}
        self._enhanced = False
        self.tls_version = None
        self.remote_banner = ""
        self.auth_mechanism = None
        self._max_queued = len(options.recipients) + 10
        self._cur_stage = "connect"
        self.idle = False  # connected, between messages (reuse)
        self.messages = 0  # messages delivered on this connection

    # -- transport events

    def connectionMade(self):
        if self.o.tls == "implicit":
            self._start_tls()
        d = defer.Deferred.fromCoroutine(self._run())
        d.addBoth(self._finished)

    def dataReceived(self, data):
        if self._error is not None:
            return
        try:
            replies = self._parser.feed(data)
        except ReplyError as e:
            self._abort(SMTPClientError(self._stage(), f"protocol error: {e}"))
            return
        self._replies.extend(replies)
        if len(self._replies) > self._max_queued:
            self._abort(SMTPClientError(self._stage(), "protocol error: unexpected replies"))
            return
        self._deliver_reply()

    def connectionLost(self, reason=None):
        self._lost = True
        self._cancel_timer()
        if self._error is None:
            why = reason.getErrorMessage() if reason is not None else "connection lost"
            self._error = SMTPClientError(self._stage(), f"connection lost: {why}")
        self._fail_waiter(self._error)
        self._maybe_done()

    # -- replies

    def _stage(self):
        return self._waiter[1] if self._waiter is not None else self._cur_stage

    def _reply(self, stage, timeout) -> defer.Deferred:
        """The next reply, failing with SMTPClientError after timeout seconds."""
        self._cur_stage = stage
        if self._error is not None:
            return defer.fail(self._error)
        d = defer.Deferred()
        self._waiter = (d, stage)
        self._timeout = timeout
        self._timer = self.clock.callLater(timeout, self._timed_out)
        self._deliver_reply()
        return d

    def _deliver_reply(self):
        if self._waiter is None or not self._replies:
            return
        d, _ = self._waiter
        self._waiter = None
        self._cancel_timer()
        d.callback(self._replies.popleft())

    def _progress(self):
        """Data was written: restart the running timeout."""
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._timeout)

    def _cancel_timer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self):
        self._timer = None
        self._abort(SMTPClientError(self._stage(), f"timeout after {self._timeout:g}s waiting for reply"))

    def _fail_waiter(self, err):
        if self._waiter is not None:
            d, _ = self._waiter
            self._waiter = None
            self._cancel_timer()
            d.errback(err)

    def _abort(self, err):
        if self._error is None:
            self._error = err
        self._fail_waiter(self._error)
        if not self._lost:
            self.transport.abortConnection()

    def _send(self, *lines):
        out = []
        for line in lines:
            log.debug("C: {line}", line=line if not line.startswith("AUTH") else line.split(" ")[0] + " ...")
            out.append(line.encode("utf-8") + b"\r\n")
        self.transport.write(b"".join(out))

    def _fail(self, stage, reply: Reply, **kw):
        se, text = reply.enhanced_and_text(self._enhanced)
        return SMTPClientError(stage, text, permanent=reply.code >= 500, code=reply.code, enhanced=se, **kw)

    # -- the conversation

    async def _run(self):
        o = self.o
        # RFC 5321 4.5.3.2.1: initial 220 message.
        banner = await self._reply("banner", o.command_timeout)
        if banner.code != 220:
            if 200 <= banner.code < 300:
                raise SMTPClientError("banner", f"protocol error: unexpected banner code {banner.code}")
            raise self._fail("banner", banner)  # 554: permanent (RFC 5321 3.1)
        self.remote_banner = banner.text
        await self._hello("ehlo")
        await self._starttls()
        self._check_extensions()
        if o.auth is not None:
            await self._authenticate()
        return await self._transactions()

    def _rcptmax(self):
        """RCPTMAX from the server's LIMITS (RFC 9422 4.2), or None for no limit."""
        for word in self._ext.get("LIMITS", []):
            name, _, value = word.partition("=")
            if name.upper() == "RCPTMAX" and value.isdigit() and int(value) > 0:
                return int(value)
        return None

    async def _transactions(self):
        """All recipients, in as many transactions on this connection as the server's
        RCPTMAX needs; recipients refused with 452 "too many recipients" while others
        were accepted go in a next transaction (RFC 5321 4.5.3.1.10). The message data is
        sent once per transaction. Only a failure before anything was delivered fails the
        whole delivery; later failures become per-recipient results."""
        o = self.o
        pending = list(o.recipients)
        results: dict[str, RcptResult] = {}
        rcptmax = self._rcptmax()
        first = True
        rounds = 0
        while pending:
            rounds += 1
            batch = pending[:rcptmax] if rcptmax else pending
            pending = pending[len(batch):]
            if not first:
                self._send("RSET")  # RFC 5321 4.1.1.5: a clean state for the next one
                r = await self._reply("mail", o.command_timeout)
                if r.code != 250:
                    err = self._fail("mail", r)
                    for addr in batch + pending:
                        results[addr] = RcptResult(addr, False, err.code, err.enhanced, err.text)
                    break
            try:
                batch_results = await self._transaction(batch)
            except SMTPClientError as e:
                if first:
                    raise
                for addr in batch:
                    results[addr] = RcptResult(addr, False, e.code, e.enhanced, e.text)
                if self._error is not None:
                    for addr in pending:
                        results[addr] = RcptResult(addr, False, None, None, f"not attempted: {e}")
                    break
                first = False
                continue
            first = False
            retry = []
            accepted = any(r.ok for r in batch_results)
            for r in batch_results:
                # RFC 5321 4.5.3.1.10: 452 for too many recipients: try them again in
                # a later transaction (bounded by the number of rounds).
                if not r.ok and r.code == 452 and accepted and rounds < MAX_TRANSACTIONS:
                    retry.append(r.address)
                else:
                    results[r.address] = r
            pending = retry + pending
        return [results[a] for a in o.recipients]

    async def _hello(self, stage):
        o = self.o
        self._send(f"EHLO {o.ehlo_hostname}")
        r = await self._reply(stage, o.command_timeout)
        if r.code == 250:
            self._esmtp = True
            self._ext = {}
            # RFC 5321 4.1.1.1: the first line greets, each further line is an extension.
            for line in r.lines[1:]:
                words = line.split()
                if words:
                    self._ext[words[0].upper()] = words[1:]
            self._enhanced = "ENHANCEDSTATUSCODES" in self._ext
            return
        if r.code in (500, 502):
            # RFC 5321 3.2: a server without EHLO; fall back to HELO, no extensions.
            self._send(f"HELO {o.ehlo_hostname}")
            r = await self._reply("ehlo", o.command_timeout)
            if r.code == 250:
                self._esmtp = False
                self._ext = {}
                self._enhanced = False
                return
        raise self._fail("ehlo", r)

    def _start_tls(self):
        creator = self.o.tls_context_factory or NoVerifyClientTLS(self.o.host)
        self.transport.startTLS(creator)
        self._tls = True

    async def _starttls(self):
        o = self.o
        mode = o.tls
        if o.requiretls and mode == "opportunistic":
            mode = "required"  # RFC 8689 4.1: REQUIRETLS needs TLS
        if self._tls or mode == "none":
            pass
        elif "STARTTLS" in self._ext:
            self._send("STARTTLS")
            r = await self._reply("starttls", o.command_timeout)
            if r.code == 220:
                # RFC 3207 5 / CVE-2011-0411: nothing may follow the 220 in plaintext.
                if self._replies or self._parser.pending:
                    raise SMTPClientError("starttls", "protocol error: data after STARTTLS reply")
                self._start_tls()
                # RFC 3207 4.2: discard all knowledge from before TLS; EHLO again.
                self._ext = {}
                await self._hello("starttls")
            elif mode == "required" or r.code == 421:
                raise self._fail("starttls", r)
            else:
                log.info("STARTTLS refused by {host}, continuing without TLS: {code}", host=o.host, code=r.code)
        elif mode == "required":
            if o.requiretls:
                # RFC 8689 5: cannot be delivered with the required protection.
                raise SMTPClientError("starttls", "REQUIRETLS message but server does not offer STARTTLS",
                                      permanent=True, enhanced="5.7.10")
            raise SMTPClientError("starttls", "TLS required but server does not offer STARTTLS",
                                  permanent=False, enhanced="4.7.10")
        if self._tls:
            try:
                self.tls_version = self.transport.getHandle().get_protocol_version_name() or None
            except Exception:
                self.tls_version = "TLS"

    def _check_extensions(self):
        o = self.o
        if o.requiretls and "REQUIRETLS" not in self._ext:
            # RFC 8689 4.2.1: the next hop must support REQUIRETLS, else the message is
            # not sent (bounced).
            raise SMTPClientError("mail", "REQUIRETLS message but server does not support REQUIRETLS",
                                  permanent=True, enhanced="5.7.30")
        if o.size and "SIZE" in self._ext:
            # RFC 1870 4: SIZE 0 or no number means no fixed limit.
            limit = self._ext["SIZE"][0] if self._ext["SIZE"] else "0"
            if limit.isdigit() and 0 < int(limit) < len(o.data):
                raise SMTPClientError("mail", f"message of {len(o.data)} bytes larger than server limit of {limit}",
                                      permanent=True, enhanced="5.3.4")
        if o.has_8bit and "8BITMIME" not in self._ext:
            # RFC 6152 3: 8-bit data only to servers announcing 8BITMIME; we do not convert.
            raise SMTPClientError("mail", "message has 8-bit data but server does not support 8BITMIME",
                                  permanent=True, enhanced="5.6.3")
        if o.smtputf8 and "SMTPUTF8" not in self._ext:
            # RFC 6531 3.5: no SMTPUTF8 at the server: the message cannot be delivered.
            raise SMTPClientError("mail", "message needs SMTPUTF8 but server does not support it",
                                  permanent=True, enhanced="5.6.7")

    async def _authenticate(self):
        o = self.o
        user, password = o.auth
        if "AUTH" not in self._ext:
            raise SMTPClientError("auth", "server does not offer AUTH", permanent=True, enhanced="5.7.4")
        offered = [m.upper() for m in self._ext["AUTH"]]
        cb = channel_binding_for(self.transport, server=False) if self._tls else None
        # RFC 4954 4: PLAIN/LOGIN are refused without TLS by choose_client_mechanism.
        name = choose_client_mechanism(offered, self._tls, cb is not None, o.auth_mechanism)
        if name is None:
            raise SMTPClientError("auth", f"no usable authentication mechanism among {' '.join(offered)}",
                                  permanent=True, enhanced="5.7.4")
        # RFC 5802 6: pass the binding for a non-PLUS SCRAM only when the server offered
        # no -PLUS (GS2 flag "y"), else a downgrade would be detected.
        use_cb = None
        if cb is not None and name.startswith("SCRAM"):
            if name.endswith("-PLUS") or not any(m.endswith("-PLUS") for m in offered):
                use_cb = cb
        try:
            mech = new_client_mechanism(name, user, password, use_cb)
        except (SASLError, ValueError) as e:
            raise SMTPClientError("auth", f"authentication mechanism {name}: {e}", permanent=True)
        initial = mech.initial()
        if initial is None:
            self._send(f"AUTH {name}")
        else:
            # RFC 4954 4: "=" is an empty initial response.
            self._send(f"AUTH {name} {base64.b64encode(initial).decode('ascii') or '='}")
        for _ in range(MAX_AUTH_ROUNDS):
            r = await self._reply("auth", o.command_timeout)
            if r.code == 235:
                try:
                    mech.finish(None)
                except SASLError as e:
                    raise SMTPClientError("auth", f"authentication: {e}", permanent=True)
                log.info("authenticated to {host} with {mech}", host=o.host, mech=name)
                self.auth_mechanism = name
                return
            if r.code != 334:
                raise self._fail("auth", r)
            try:
                challenge = base64.b64decode(r.lines[0].strip().encode("ascii"), validate=True)
                response = mech.step(challenge)
            except (binascii.Error, ValueError, UnicodeEncodeError, SASLError) as e:
                # RFC 4954 4: "*" cancels the exchange.
                self._send("*")
                await self._reply("auth", o.command_timeout)
                raise SMTPClientError("auth", f"authentication: {e}", permanent=True)
            self._send(base64.b64encode(response).decode("ascii"))
        raise SMTPClientError("auth", "protocol error: too many authentication rounds")

    async def _transaction(self, recipients):
        o = self.o
        params = []
        if o.size and "SIZE" in self._ext:
            params.append(f"SIZE={len(o.data)}")  # RFC 1870 6
        if o.has_8bit:
            params.append("BODY=8BITMIME")  # RFC 6152 2
        if o.smtputf8:
            params.append("SMTPUTF8")  # RFC 6531 3.4
        if o.requiretls:
            params.append("REQUIRETLS")  # RFC 8689 4.1
        mail = " ".join([f"MAIL FROM:<{o.mailfrom}>", *params])
        rcpts = [f"RCPT TO:<{r}>" for r in recipients]
        ct = o.command_timeout
        results: list[RcptResult] = []

        def rcpt_result(addr, r):
            se, text = r.enhanced_and_text(self._enhanced)
            return RcptResult(addr, r.code // 100 == 2, r.code, se, text)

        if "PIPELINING" in self._ext:
            # RFC 2920 3.1: MAIL, all RCPTs and DATA in one go, replies read in order.
            self._send(mail, *rcpts, "DATA")
            mail_r = await self._reply("mail", ct)
            for addr in recipients:
                results.append(rcpt_result(addr, await self._reply("mail", ct)))
            data_r = await self._reply("data", ct)
            accepted = mail_r.code == 250 and any(r.ok for r in results)
            if data_r.code == 354 and not accepted:
                # RFC 2920 3.1: DATA was accepted regardless; end it without content.
                self._send(".")
                await self._reply("data", o.data_timeout)
            if mail_r.code != 250:
                raise self._fail("mail", mail_r)
            if not accepted:
                return results
            if data_r.code != 354:
                raise self._fail("data", data_r, recipients=results)
        else:
            self._send(mail)
            mail_r = await self._reply("mail", ct)
            if mail_r.code != 250:
                raise self._fail("mail", mail_r)
            for addr, cmd in zip(recipients, rcpts):
                self._send(cmd)
                results.append(rcpt_result(addr, await self._reply("mail", ct)))
            if not any(r.ok for r in results):
                self._send("RSET")
                await self._reply("mail", ct)
                return results
            self._send("DATA")
            data_r = await self._reply("data", ct)
            if data_r.code != 354:
                raise self._fail("data", data_r, recipients=results)

        # RFC 5321 4.5.3.2.5/6: the data timeout runs while sending (restarted on each
        # chunk) and until the final reply.
        final = self._reply("data", o.data_timeout)
        producer = _DataProducer(self, dot_stuffed_chunks(o.data, o.chunk_size))
        self.transport.registerProducer(producer, False)
        try:
            await producer.done
        except SMTPClientError:
            pass  # the reply wait fails with the connection's error
        r = await final
        if r.code != 250:
            raise self._fail("data", r, recipients=results)
        se, text = r.enhanced_and_text(self._enhanced)
        return [RcptResult(x.address, True, r.code, se, text) if x.ok else x for x in results]

    # -- ending

    # -- reuse (RFC 5321 4.1.1.5: RSET between transactions on one connection)

    def next_message(self, o: Options) -> defer.Deferred:
        """Deliver another message on this idle connection (same host and TLS; the
        message fields of ``o`` are used). Fires like ``done``; fails with stage "reuse"
        when the connection turned out unusable before anything was sent."""
        if self._lost or self._error is not None or not self.idle or self._replies:
            # A reply while idle (a 421 on timeout) means the server is done with us.
            self.close()
            return defer.fail(SMTPClientError("reuse", "connection no longer usable"))
        self.idle = False
        self.o = o
        self.done = defer.Deferred()
        self._outcome = None
        self._max_queued = len(o.recipients) + 10
        d = defer.Deferred.fromCoroutine(self._next())
        d.addBoth(self._finished)
        return self.done

    async def _next(self):
        self._send("RSET")
        r = await self._reply("reuse", self.o.command_timeout)
        if r.code != 250:
            raise SMTPClientError("reuse", f"RSET refused: {r.code}")
        self._check_extensions()
        return await self._transactions()

    def close(self):
        """End an idle connection: QUIT (RFC 5321 4.1.1.10) and close."""
        self.idle = False
        if not self._lost:
            self._send("QUIT")
            self.transport.loseConnection()

    def _finished(self, outcome):
        """The conversation ended with a result or a failure: QUIT when the connection
        is still usable, then close; with ``reuse`` and success, stay connected."""
        self._outcome = outcome
        if isinstance(outcome, Failure) and not outcome.check(SMTPClientError):
            log.failure("smtp client internal error", outcome)
            self._outcome = Failure(SMTPClientError(self._stage(), f"internal error: {outcome.value}"))
        if (self.o.reuse and not isinstance(self._outcome, Failure) and self._error is None
                and not self._lost):
            self.idle = True
            self.messages += 1
            self._outcome = None
            # The message is not kept while idle (memory of pooled connections).
            self.o = replace(self.o, data=b"", recipients=[])
            self.done.callback(Result(outcome, self.tls_version, self.remote_banner, self.auth_mechanism, self))
            return
        if self._error is not None or self._lost:
            if not self._lost:
                self.transport.abortConnection()
            self._maybe_done()
            return
        # RFC 5321 4.1.1.10: QUIT, then close when the server answered.
        self._send("QUIT")
        d = self._reply("quit", min(self.o.command_timeout, QUIT_TIMEOUT))
        d.addErrback(lambda f: None)
        d.addCallback(lambda _: None if self._lost else self.transport.loseConnection())

    def _maybe_done(self):
        if self._outcome is None or not self._lost or self.done.called:
            return
        outcome = self._outcome
        if isinstance(outcome, Failure):
            self.done.errback(outcome)
        else:
            self.done.callback(Result(outcome, self.tls_version, self.remote_banner, self.auth_mechanism))


class _Factory(protocol.ClientFactory):
    def __init__(self, clock, options):
        self.clock = clock
        self.options = options
        self.proto = None

    def buildProtocol(self, addr):
        self.proto = SMTPClientProtocol(self.clock, self.options)
        self.proto.factory = self
        return self.proto


def _endpoint(reactor, host, port, timeout):
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return endpoints.HostnameEndpoint(reactor, host.encode("idna"), port, timeout=timeout)
    if ip.version == 6:
        return endpoints.TCP6ClientEndpoint(reactor, str(ip), port, timeout=timeout)
    return endpoints.TCP4ClientEndpoint(reactor, str(ip), port, timeout=timeout)


def deliver(reactor, host: str, port: int, *, ehlo_hostname: str, mailfrom: str, recipients: list[str],
            data: bytes, tls: str = "opportunistic", tls_context_factory=None,
            auth: tuple[str, str] | None = None, auth_mechanism: str | None = None,
            smtputf8: bool = False, has_8bit: bool = False, requiretls: bool = False, size: bool = True,
            connect_timeout: float = 30, command_timeout: float = 300, data_timeout: float = 600,
            endpoint=None, reuse: bool = False) -> defer.Deferred:
    """Deliver data to recipients over one SMTP connection to host:port. Fires with a
    :class:`Result`, or fails with :class:`SMTPClientError`. ``endpoint`` overrides the
    TCP endpoint (tests). ValueError for inconsistent arguments."""
    o = Options(host=host, ehlo_hostname=ehlo_hostname, mailfrom=mailfrom, recipients=list(recipients),
                data=data, tls=tls, tls_context_factory=tls_context_factory, auth=auth,
                auth_mechanism=auth_mechanism, smtputf8=smtputf8, has_8bit=has_8bit,
                requiretls=requiretls, size=size, connect_timeout=connect_timeout,
                command_timeout=command_timeout, data_timeout=data_timeout, reuse=reuse)
    _check_options(o)
    err = _precheck(o)
    if err is not None:
        return defer.fail(err)
    if endpoint is None:
        endpoint = _endpoint(reactor, host, port, connect_timeout)
    factory = _Factory(reactor, o)
    connecting = endpoint.connect(factory)
    timer = reactor.callLater(connect_timeout, connecting.cancel)

    def connected(proto):
        if timer.active():
            timer.cancel()
        return proto.done

    def connect_failed(f):
        if timer.active():
            timer.cancel()
        if f.check(SMTPClientError):
            return f
        if f.check(defer.CancelledError, ierror.TimeoutError):
            raise SMTPClientError("connect", f"timeout connecting to {host}:{port} after {connect_timeout:g}s")
        raise SMTPClientError("connect", f"connecting to {host}:{port}: {f.getErrorMessage()}")

    connecting.addCallbacks(connected, connect_failed)
    return connecting


def send_next(connection, *, mailfrom: str, recipients: list[str], data: bytes, smtputf8: bool = False,
              has_8bit: bool = False, requiretls: bool = False, size: bool = True) -> defer.Deferred:
    """Deliver a message on an idle ``connection`` (``Result.connection`` of a
    ``deliver(..., reuse=True)``). Same results as :func:`deliver`."""
    o = replace(connection.o, mailfrom=mailfrom, recipients=list(recipients), data=data, smtputf8=smtputf8,
                has_8bit=has_8bit, requiretls=requiretls, size=size)
    _check_options(o)
    err = _precheck(o)
    if err is not None:
        return defer.fail(err)
    return connection.next_message(o)
