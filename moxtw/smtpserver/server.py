"""The ESMTP server protocol: incoming mail (port 25) and submission (587, 465).

A protocol of our own rather than ``twisted.mail.smtp.ESMTP`` (design notes §5): commands are
parsed from a byte buffer and run one at a time; a handler that returns a Deferred holds
back the commands after it, so pipelined commands (RFC 2920) are answered in order. Message
data (DATA, BDAT) is streamed to a spool file by ``moxtw.smtpserver.data`` and never falls
back into command mode. The protocol touches neither files nor databases: it calls a
backend (``moxtw.smtpserver.backend.SMTPBackend``) for recipients, delivery, submission
and authentication.

Extensions: PIPELINING (RFC 2920), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), SIZE
(RFC 1870), ENHANCEDSTATUSCODES (RFC 2034), STARTTLS (RFC 3207), AUTH (RFC 4954), CHUNKING
and BINARYMIME (RFC 3030), REQUIRETLS (RFC 8689), FUTURERELEASE (RFC 4865), LIMITS
(RFC 9422), DSN (RFC 3461).
"""

import base64
import binascii
import itertools
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from twisted.internet import defer, protocol, task
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from moxtw import log as mlog
from moxtw.clock import default_reactor
from moxtw.commandinput import SerialInput
from moxtw.sasl import server as sasl
from moxtw.sasl.channelbinding import channel_binding_for
from moxtw.sasl.server import server_mechanisms
from moxtw.smtp import codes as c
from moxtw.smtp.address import AddressError, parse_domain, parse_path
from moxtw.smtpserver.data import ChunkReader, DataReader, spool_error_reply

log = Logger(namespace="moxtw.smtpserver")

MAX_COMMAND_LINE = 4096  # RFC 5321 4.5.3.1.4 is 512; extensions (RFC 1869) make it larger
MAX_ERRORS = 10
MAX_RECIPIENTS = 1000
MAX_BDAT_CHUNK = 1 << 40
COMMAND_TIMEOUT = 300  # RFC 5321 4.5.3.2.7: at least 5 minutes
DATA_TIMEOUT = 600  # RFC 5321 4.5.3.2.6: 10 minutes for data blocks
MAX_HOLD = 30 * 24 * 3600  # FUTURERELEASE max-future-release-interval, 30 days

_cid_counter = itertools.count(int(time.time() * 1000) & 0xFFFFFFFF)

CMD, DISCARD_LINE, DATA, BDAT, AUTH, CLOSED = range(6)


def new_cid():
    return format(next(_cid_counter), "x")


class SMTPReply(Exception):
    """A reply to send: raised or returned by handlers and the backend."""

    def __init__(self, code, se, text, close=False):
        super().__init__(f"{code} {se} {text}")
        self.code = code
        self.se = se
        self.text = text
        self.close = close


@dataclass
class Session:
    """Per-connection state."""

    cid: str
    kind: str  # "smtp", "submission" or "submissions"
    remote_ip: str = ""
    local_ip: str = ""
    ehlo: str = ""
    esmtp: bool = False
    tls: bool = False
    tls_version: str = ""
    tls_cipher: str = ""
    account: object = None  # authenticated Account (submission)
    login: str = ""
    errors: int = 0
    transactions: int = 0
    closed: bool = False  # the connection is gone (a reply would go nowhere)


@dataclass
class Envelope:
    """Per-transaction state: from MAIL to the end of DATA/BDAT LAST, or RSET."""

    mailfrom: object = None  # Address, or None for the null reverse-path
    smtputf8: bool = False
    body: str = "7BIT"
    size: int = 0  # SIZE parameter
    requiretls: bool = False
    hold_until: object = None
    ret: str = ""
    envid: str = ""
    recipients: list = field(default_factory=list)  # [Rcpt]


@dataclass
class Rcpt:
    address: object  # Address
    resolved: object = None  # backend's resolution (incoming)
    notify: str = ""
    orcpt: str = ""


class SMTPServer(SerialInput, protocol.Protocol, TimeoutMixin):
    """One SMTP connection. Configured through its factory."""

    closed_mode = CLOSED
    # Unprocessed input kept while a command runs (pipelined commands, the next BDAT
    # chunk); beyond it reading pauses, so a connection costs at most this in its buffer.
    max_backlog = 256 * 1024

    def __init__(self):
        self._init_input()
        self._mode = CMD
        self.envelope = None
        self._reader = None
        self._bdat_last = False
        self._bdat_error = None
        self._auth = None
        self._auth_backend = None

    # -- connection

    def connectionMade(self):
        f = self.factory
        if f.clock is not None:
            self.callLater = f.clock.callLater
        peer = self.transport.getPeer()
        host = self.transport.getHost()
        self.session = Session(
            cid=new_cid(),
            kind=f.kind,
            remote_ip=getattr(peer, "host", ""),
            local_ip=getattr(host, "host", ""),
            tls=f.kind == "submissions",
        )
        self.pedantic = f.pedantic
        if self.session.tls:
            self._note_tls()
        log.info(
            "new connection from {remote} on {kind}",
            cid=self.session.cid, remote=self.session.remote_ip, kind=f.kind,
        )
        refusal = f.backend.connection_allowed(self.session)
        if refusal:
            self._write_reply(c.C421_SERVICE_UNAVAILABLE, None, refusal)
            self._close()
            return
        self._watch_output()
        self.setTimeout(COMMAND_TIMEOUT)
        self._write_reply(c.C220_SERVICE_READY, None, f"{f.hostname} ESMTP moxtw")

    def connectionLost(self, reason):
        self.setTimeout(None)
        self._mode = CLOSED
        self.session.closed = True
        self._output_stopped()
        self._discard_reader()
        self.factory.backend.connection_closed(self.session)

    def timeoutConnection(self):
        # RFC 5321 4.5.3.2: the server may close after its timeout; say why first.
        self._write_reply(c.C421_SERVICE_UNAVAILABLE, c.SE_NET_BAD_CONNECTION2, f"{self.factory.hostname} timeout, closing")
        self._close()

    def _close(self):
        self._mode = CLOSED
        self._lose_connection()

    # -- input

    def dataReceived(self, data):
        if self._mode == CLOSED:
            return
        self.resetTimeout()
        self._feed(data)

    def _process_buffer(self):
        # Handlers whose Deferred already fired continue this loop instead of recursing.
        while self._buf and self._may_process():
            if self._mode == CMD or self._mode == AUTH:
                nl = self._buf.find(b"\n")
                if nl < 0:
                    if len(self._buf) > MAX_COMMAND_LINE:
                        del self._buf[:]
                        self._mode = DISCARD_LINE
                        self._error(c.C500_SYNTAX_ERROR, c.SE_PROTO_LINE_TOO_LONG, "line too long")
                    return
                line = bytes(self._buf[:nl + 1])
                del self._buf[:nl + 1]
                if len(line) > MAX_COMMAND_LINE:
                    self._error(c.C500_SYNTAX_ERROR, c.SE_PROTO_LINE_TOO_LONG, "line too long")
                    continue
                if line.endswith(b"\r\n"):
                    line = line[:-2]
                else:
                    line = line[:-1]
                    if self.pedantic:
                        # RFC 5321 2.3.8: lines end with CRLF.
                        self._error(c.C500_SYNTAX_ERROR, c.SE_PROTO_SYNTAX2, "bare newline in command (pedantic mode)")
                        continue
                if self._mode == AUTH:
                    self._run(self._auth_response, line)
                else:
                    self._run(self._command, line)
            elif self._mode == DISCARD_LINE:
                nl = self._buf.find(b"\n")
                if nl < 0:
                    del self._buf[:]
                    return
                del self._buf[:nl + 1]
                self._mode = CMD
            elif self._mode == DATA:
                rest = self._reader.feed(bytes(self._buf))
                if rest is None:
                    del self._buf[:]
                    return
                self._buf = bytearray(rest)
                self._mode = CMD
                self.setTimeout(COMMAND_TIMEOUT)
                self._run(self._data_done)
            elif self._mode == BDAT:
                rest = self._reader.feed(bytes(self._buf))
                if rest is None:
                    del self._buf[:]
                    return
                self._buf = bytearray(rest)
                self._mode = CMD
                self.setTimeout(COMMAND_TIMEOUT)
                self._run(self._bdat_done)

    def _run(self, fn, *args):
        try:
            result = fn(*args)
        except SMTPReply as e:
            self._send(e)
            return
        except Exception:
            self._internal_error(Failure())
            return
        if isinstance(result, defer.Deferred):
            self._busy = True
            result.addCallbacks(self._handled, self._handler_failed)
            result.addBoth(self._resume)
        elif isinstance(result, SMTPReply):
            self._send(result)

    def _handled(self, result):
        if isinstance(result, SMTPReply):
            self._send(result)

    def _handler_failed(self, failure):
        if failure.check(SMTPReply):
            self._send(failure.value)
        else:
            self._internal_error(failure)

    def _internal_error(self, failure):
        log.failure("internal error", failure, cid=self.session.cid)
        self._write_reply(
            c.C451_LOCAL_ERROR, c.SE_MAIL_SYSTEM_OTHER0,
            f"internal error, try again later (cid {self.session.cid})",
        )

    # -- output

    def _send(self, reply):
        if reply.code >= 500:
            self.session.errors += 1
        text = reply.text
        if reply.code >= 400 and "(cid " not in text:
            text = f"{text} (cid {self.session.cid})"  # users can quote it; logs carry it
        self._write_reply(reply.code, reply.se, text)
        if reply.close:
            self._close()
        elif self.session.errors >= MAX_ERRORS:
            self._write_reply(c.C421_SERVICE_UNAVAILABLE, c.SE_SEC_OTHER0, "too many errors, closing")
            self._close()

    def _error(self, code, se, text):
        self._send(SMTPReply(code, se, text))

    def _write_reply(self, code, se, text):
        if self._mode == CLOSED and code != c.C421_SERVICE_UNAVAILABLE:
            return
        lines = text.split("\n")
        # RFC 2034: enhanced status codes on every line, once EHLO was used.
        prefix = f"{c.enhanced(code, se)} " if (se and self.session.esmtp) else ""
        out = []
        for i, line in enumerate(lines):
            sep = "-" if i < len(lines) - 1 else " "
            out.append(f"{code}{sep}{prefix}{line}\r\n")
        data = "".join(out).encode("utf-8")
        mlog.trace(log, "S: {line}", line=data.decode("utf-8", "replace").rstrip(), cid=self.session.cid)
        self.transport.write(data)

    # -- commands

    def _command(self, line):
        mlog.trace(log, "C: {line}", line=line[:200].decode("utf-8", "replace"), cid=self.session.cid)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise SMTPReply(c.C500_SYNTAX_ERROR, c.SE_PROTO_SYNTAX2, "command is not valid UTF-8")
        if any(ord(ch) < 0x20 and ch != "\t" for ch in text):
            raise SMTPReply(c.C500_SYNTAX_ERROR, c.SE_PROTO_SYNTAX2, "control characters in command")
        verb, _, arg = text.partition(" ")
        handler = getattr(self, "cmd_" + verb.upper(), None) if verb.isalpha() else None
        if handler is None:
            raise SMTPReply(c.C500_SYNTAX_ERROR, c.SE_PROTO_CMD_UNKNOWN1, "unknown command")
        return handler(arg)

    def cmd_HELO(self, arg):
        """HELO domain (RFC 5321 4.1.1.1). Any state; resets the transaction."""
        return self._hello(arg, esmtp=False)

    def cmd_EHLO(self, arg):
        """EHLO domain|address-literal (RFC 5321 4.1.1.1). Any state; resets."""
        return self._hello(arg, esmtp=True)

    def _hello(self, arg, esmtp):
        arg = arg.strip()
        if not arg:
            raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_SYNTAX2, "missing domain")
        if self.pedantic or " " in arg:
            self._check_ehlo_domain(arg)
        self._reset()
        self.session.ehlo = arg
        self.session.esmtp = esmtp
        f = self.factory
        if not esmtp:
            return SMTPReply(c.C250_COMPLETED, None, f"{f.hostname} hello {arg}")
        exts = [f"{f.hostname} hello {arg}", "PIPELINING", "8BITMIME", "SMTPUTF8",
                f"SIZE {f.max_message_size}", "ENHANCEDSTATUSCODES", "CHUNKING", "BINARYMIME"]
        if self._starttls_allowed():
            exts.append("STARTTLS")
        if self.session.tls:
            exts.append("REQUIRETLS")  # RFC 8689 2: only over TLS
        if self._submission and (self.session.tls or not f.require_tls_for_auth):
            # The rule and RFC 4954 14: no authentication in the clear.
            mechs = self._auth_mechanisms()
            if mechs:
                exts.append("AUTH " + " ".join(mechs))
            # RFC 4865 3: max-future-release-interval and max-future-release-date-time.
            until = datetime.now(timezone.utc) + timedelta(seconds=MAX_HOLD)
            exts.append(f"FUTURERELEASE {MAX_HOLD} {until.strftime('%Y-%m-%dT%H:%M:%SZ')}")
        exts.append(f"LIMITS RCPTMAX={MAX_RECIPIENTS}")
        exts.append("DSN")
        return SMTPReply(c.C250_COMPLETED, None, "\n".join(exts))

    def _check_ehlo_domain(self, arg):
        try:
            if arg.startswith("[") and arg.endswith("]"):
                parse_path(f"<x@{arg}>")
            else:
                parse_domain(arg)
        except AddressError:
            raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_PARAM_SYNTAX4, "invalid EHLO domain")

    @property
    def _submission(self):
        return self.factory.kind in ("submission", "submissions")

    def _starttls_allowed(self):
        f = self.factory
        return f.tls_context is not None and not self.session.tls and not f.no_starttls

    def _auth_mechanisms(self):
        tls_ok = self.session.tls or not self.factory.require_tls_for_auth
        return server_mechanisms(tls_ok, self._channel_binding())

    def _channel_binding(self):
        if not self.session.tls:
            return None

        try:
            return channel_binding_for(self.transport)
        except Exception:
            return None

    def _note_tls(self):
        try:
            conn = self.transport.getHandle()
            self.session.tls_version = conn.get_protocol_version_name() or ""
            self.session.tls_cipher = conn.get_cipher_name() or ""
        except Exception:
            pass

    def cmd_STARTTLS(self, arg):
        """STARTTLS (RFC 3207). After EHLO, outside a transaction."""
        if arg:
            raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_SYNTAX2, "no parameters allowed")
        if self.session.tls:
            raise SMTPReply(c.C503_BAD_CMD_SEQUENCE, c.SE_PROTO_CMD_OUT_OF_SEQUENCE1, "already in TLS")
        if not self._starttls_allowed():
            raise SMTPReply(c.C502_CMD_NOT_IMPLEMENTED, c.SE_PROTO_CMD_UNKNOWN1, "STARTTLS not available")
        # RFC 3207 6 / CVE-2011-0411: data pipelined after STARTTLS must not be used.
        del self._buf[:]
        self._write_reply(c.C220_SERVICE_READY, c.SE_OTHER0, "ready to start TLS")
        self.transport.startTLS(self.factory.tls_context)
        # RFC 3207 4.2: forget everything learned before TLS.
        self._reset()
        self.session.tls = True
        self.session.ehlo = ""
        self.session.esmtp = False

    def cmd_AUTH(self, arg):
        """AUTH mechanism [initial-response] (RFC 4954 4). Submission, after EHLO, outside
        a transaction, once."""
        if not self._submission:
            raise SMTPReply(c.C502_CMD_NOT_IMPLEMENTED, c.SE_PROTO_CMD_UNKNOWN1, "AUTH only on submission")
        if not self.session.esmtp:
            raise SMTPReply(c.C503_BAD_CMD_SEQUENCE, c.SE_PROTO_CMD_OUT_OF_SEQUENCE1, "EHLO first")
        if self.session.account is not None:
            raise SMTPReply(c.C503_BAD_CMD_SEQUENCE, c.SE_PROTO_CMD_OUT_OF_SEQUENCE1, "already authenticated")
        if self.envelope is not None:
            raise SMTPReply(c.C503_BAD_CMD_SEQUENCE, c.SE_PROTO_CMD_OUT_OF_SEQUENCE1, "AUTH not allowed during a transaction")
        if not self.session.tls and self.factory.require_tls_for_auth:
            # RFC 4954 4 and 6: 538 when the mechanism needs encryption.
            raise SMTPReply(c.C538_ENCRYPT_NEEDED, c.SE_SEC_ENCRYPTION_NEEDED11, "STARTTLS first")
        refusal = self.factory.backend.auth_allowed(self.session)
        if refusal:
            raise SMTPReply(c.C454_TEMP_AUTH_FAILURE, c.SE_SEC_OTHER0, refusal)

        parts = arg.split(" ")
        name = parts[0].upper()
        if len(parts) > 2 or not name:
            raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_SYNTAX2, "bad AUTH syntax")
        if name not in self._auth_mechanisms():
            raise SMTPReply(c.C504_PARAM_NOT_IMPLEMENTED, c.SE_PROTO_PARAM_SYNTAX4, "mechanism not supported")
        self._auth_backend = self.factory.backend.sasl_backend(self.session)
        try:
            self._auth = sasl.new_server_mechanism(
                name,
                self._auth_backend,
                channel_binding=self._channel_binding(),
                hostname=self.factory.hostname,
                tls=self.session.tls or not self.factory.require_tls_for_auth,
            )
        except sasl.SASLError:
            raise SMTPReply(c.C504_PARAM_NOT_IMPLEMENTED, c.SE_PROTO_PARAM_SYNTAX4, "mechanism not supported")
        initial = None
        if len(parts) == 2:
            initial = self._b64(parts[1], allow_equals=True)
        return self._auth_step(initial)

    def _b64(self, text, allow_equals=False):
        if allow_equals and text == "=":
            return b""  # RFC 4954 4: "=" is an empty initial response
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            self._auth = None
            self._mode = CMD
            raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_SYNTAX2, "invalid base64")

    def _auth_response(self, line):
        text = line.decode("ascii", "replace").strip()
        if text == "*":
            # RFC 4954 4: client cancelled.
            self._auth = None
            self._mode = CMD
            raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_SEC_OTHER0, "authentication cancelled")
        return self._auth_step(self._b64(text))

    def _auth_step(self, data):
        d = self._auth.step(data)

        def stepped(step):
            if not step.done:
                self._mode = AUTH
                challenge = base64.b64encode(step.challenge or b"").decode("ascii")
                return SMTPReply(c.C334_CONTINUE_AUTH, None, challenge)
            self._mode = CMD
            mech = self._auth.name
            self._auth = None
            self.session.account = step.account
            self.factory.backend.auth_result(self.session, True, self._auth_backend.login)
            log.info("authenticated {account} with {mech}", cid=self.session.cid,
                     account=step.account.name, mech=mech)
            return SMTPReply(c.C235_AUTH_SUCCESS, c.SE_SEC_OTHER0, "authentication successful")

        def failed(failure):
            self._mode = CMD
            self._auth = None
            if failure.check(sasl.SASLError):
                err = failure.value
                if err.reason in ("auth-failed", "login-disabled"):
                    delay = self.factory.backend.auth_result(self.session, False, self._auth_backend.login)
                    log.info("authentication failed", cid=self.session.cid, remote=self.session.remote_ip)
                    text = str(err) if err.reason == "login-disabled" else "authentication failed"
                    reply = SMTPReply(c.C535_AUTH_BAD_CREDS, c.SE_SEC_AUTH_CREDENTIALS_INVALID8, text)
                    if delay:
                        return task.deferLater(self.factory.clock_or_reactor(), delay, lambda: reply)
                    return reply
                if err.reason == "temporary":
                    return SMTPReply(c.C454_TEMP_AUTH_FAILURE, c.SE_SEC_OTHER0, "temporary authentication failure")
                return SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_SYNTAX2, str(err) or "malformed")
            return failure

        return d.addCallbacks(stepped, failed)

    def cmd_MAIL(self, arg):
        """MAIL FROM:<reverse-path> [params] (RFC 5321 4.1.1.2). After EHLO/HELO (and AUTH on
        submission), outside a transaction."""
        s = self.session
        if not s.ehlo:
            raise SMTPReply(c.C503_BAD_CMD_SEQUENCE, c.SE_PROTO_CMD_OUT_OF_SEQUENCE1, "EHLO first")
        if self.envelope is not None:
            raise SMTPReply(c.C503_BAD_CMD_SEQUENCE, c.SE_PROTO_CMD_OUT_OF_SEQUENCE1, "already in a transaction")
        if self._submission and s.account is None:
            raise SMTPReply(c.C530_SECURITY_REQUIRED, c.SE_SEC_AUTH_REQUIRED0, "authentication required")
        if self.factory.require_starttls and not s.tls:
            raise SMTPReply(c.C530_SECURITY_REQUIRED, c.SE_SEC_OTHER0, "STARTTLS required")
        path, params = self._split_path_arg(arg, "FROM:")
        if s.tls:
            self._note_tls()  # the handshake is complete by now
        env = Envelope()
        for key, value in params:
            self._mail_param(env, key, value)
        try:
            env.mailfrom = parse_path(path, utf8=env.smtputf8, allow_null=True)
        except AddressError as e:
            if not env.smtputf8 and not path.isascii():
                raise SMTPReply(c.C553_BAD_MAILBOX_NAME, c.SE_MSG_8BIT_NOT_SUPPORTED,
                                "non-ASCII address requires SMTPUTF8")
            raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_ADDR_BAD_SENDER_SYNTAX7, f"bad sender address: {e}")
        d = defer.maybeDeferred(self.factory.backend.check_sender, s, env)

        def ok(_):
            self.envelope = env
            s.transactions += 1
            return SMTPReply(c.C250_COMPLETED, c.SE_ADDR_OTHER0, "sender ok")

        return d.addCallback(ok)

    def _split_path_arg(self, arg, keyword):
        if not arg[: len(keyword)].upper() == keyword:
            raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_SYNTAX2, f"expected {keyword}<address>")
        rest = arg[len(keyword):]
        if rest.startswith(" "):
            if self.pedantic:
                # RFC 5321 4.1.1.2: no space between the colon and the path.
                raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_SYNTAX2,
                                "space after colon not allowed (pedantic mode)")
            rest = rest.lstrip(" ")
        if not rest.startswith("<"):
            raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_SYNTAX2, "address must be in <>")
        end = _path_end(rest)
        if end < 0:
            raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_SYNTAX2, "unterminated address")
        path, tail = rest[: end + 1], rest[end + 1:]
        if tail and not tail.startswith(" "):
            raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_SYNTAX2, "junk after address")
        params = []
        for word in tail.split():
            key, eq, value = word.partition("=")
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", key):
                raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_PARAM_SYNTAX4, f"bad parameter {key!r}")
            params.append((key.upper(), value if eq else None))
        keys = [k for k, _ in params]
        if len(keys) != len(set(keys)):
            raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_PARAM_SYNTAX4, "duplicate parameter")
        return path, params

    def _mail_param(self, env, key, value):
        f = self.factory
        bad = SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_PARAM_SYNTAX4, f"bad value for {key}")
        if key == "SIZE":
            # RFC 1870 6: refuse early when the declared size is over the limit.
            if value is None or not value.isdigit() or len(value) > 20:
                raise bad
            env.size = int(value)
            if env.size > f.max_message_size:
                raise SMTPReply(c.C552_STORAGE_EXCEEDED, c.SE_MAIL_SYSTEM_MSG_TOO_LARGE4,
                                f"message too large, limit is {f.max_message_size} bytes")
        elif key == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME", "BINARYMIME"):
                raise bad
            env.body = value.upper()
        elif key == "SMTPUTF8":
            if value is not None:
                raise bad
            env.smtputf8 = True
        elif key == "REQUIRETLS":
            # RFC 8689 4.1: only valid on a TLS-protected session.
            if value is not None:
                raise bad
            if not self.session.tls:
                raise SMTPReply(c.C530_SECURITY_REQUIRED, c.SE_SEC_REQUIRETLS10, "REQUIRETLS needs TLS")
            env.requiretls = True
        elif key == "RET":
            if value is None or value.upper() not in ("FULL", "HDRS"):
                raise bad
            env.ret = value.upper()
        elif key == "ENVID":
            if not value or len(value) > 100:
                raise bad
            env.envid = value
        elif key in ("HOLDFOR", "HOLDUNTIL") and self._submission:
            env.hold_until = self._hold_until(key, value)
        elif key == "AUTH":
            pass  # RFC 4954 5: accepted; we do not relay the identity
        else:
            raise SMTPReply(c.C555_UNRECOGNIZED_PARAMS, c.SE_PROTO_PARAM_UNRECOGNIZED4, f"unknown parameter {key}")

    def _hold_until(self, key, value):
        # RFC 4865 4: HOLDFOR=seconds or HOLDUNTIL=date-time (RFC 3339).
        now = datetime.now(timezone.utc)
        bad = SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_PARAM_SYNTAX4, f"bad value for {key}")
        if value is None:
            raise bad
        if key == "HOLDFOR":
            if not value.isdigit() or len(value) > 12:
                raise bad
            when = now + timedelta(seconds=int(value))
        else:
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise bad
            if when.tzinfo is None:
                raise bad
        if when - now > timedelta(seconds=MAX_HOLD):
            raise SMTPReply(c.C554_TRANSACTION_FAILED, c.SE_MAIL_SYSTEM_HOLD_TOO_LONG4, "release time too far in the future")
        return when

    def cmd_RCPT(self, arg):
        """RCPT TO:<forward-path> [params] (RFC 5321 4.1.1.3). After MAIL."""
        env = self.envelope
        if env is None:
            raise SMTPReply(c.C503_BAD_CMD_SEQUENCE, c.SE_PROTO_CMD_OUT_OF_SEQUENCE1, "MAIL first")
        if len(env.recipients) >= MAX_RECIPIENTS:
            # RFC 5321 4.5.3.1.10 and RFC 9422 RCPTMAX.
            raise SMTPReply(c.C452_STORAGE_FULL, c.SE_PROTO_TOO_MANY_RCPTS3, "too many recipients")
        path, params = self._split_path_arg(arg, "TO:")
        rcpt = Rcpt(None)
        for key, value in params:
            if key == "NOTIFY" and value:
                words = value.upper().split(",")
                if not set(words) <= {"NEVER", "SUCCESS", "FAILURE", "DELAY"} or (
                    "NEVER" in words and len(words) > 1
                ):
                    raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_PARAM_SYNTAX4, "bad NOTIFY")
                rcpt.notify = ",".join(words)
            elif key == "ORCPT" and value:
                rcpt.orcpt = value  # RFC 3461 4.2
            else:
                raise SMTPReply(c.C555_UNRECOGNIZED_PARAMS, c.SE_PROTO_PARAM_UNRECOGNIZED4, f"unknown parameter {key}")
        if path.lower() == "<postmaster>":
            # RFC 5321 4.1.1.3: <Postmaster> without domain must be accepted.
            path = f"<postmaster@{self.factory.hostname}>"
        try:
            rcpt.address = parse_path(path, utf8=env.smtputf8)
        except AddressError as e:
            if not env.smtputf8 and not path.isascii():
                raise SMTPReply(c.C553_BAD_MAILBOX_NAME, c.SE_MSG_8BIT_NOT_SUPPORTED,
                                "non-ASCII address requires SMTPUTF8")
            raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_ADDR_BAD_DEST_SYNTAX3, f"bad recipient address: {e}")
        d = defer.maybeDeferred(self.factory.backend.check_recipient, self.session, env, rcpt)

        def ok(resolved):
            rcpt.resolved = resolved
            env.recipients.append(rcpt)
            return SMTPReply(c.C250_COMPLETED, c.SE_ADDR_DEST_VALID5, "recipient ok")

        return d.addCallback(ok)

    def cmd_DATA(self, arg):
        """DATA (RFC 5321 4.1.1.4). After at least one accepted RCPT."""
        if arg:
            raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_SYNTAX2, "no parameters allowed")
        env = self.envelope
        if env is None:
            raise SMTPReply(c.C503_BAD_CMD_SEQUENCE, c.SE_PROTO_CMD_OUT_OF_SEQUENCE1, "MAIL first")
        if not env.recipients:
            raise SMTPReply(c.C554_TRANSACTION_FAILED, c.SE_ADDR_OTHER0, "no valid recipients")
        if self._reader is not None:
            raise SMTPReply(c.C503_BAD_CMD_SEQUENCE, c.SE_PROTO_CMD_OUT_OF_SEQUENCE1, "BDAT in progress")
        if env.body == "BINARYMIME":
            # RFC 3030 3: BINARYMIME messages must be sent with BDAT.
            raise SMTPReply(c.C503_BAD_CMD_SEQUENCE, c.SE_PROTO_CMD_OUT_OF_SEQUENCE1, "BINARYMIME needs BDAT")
        self._reader = DataReader(self.factory.max_message_size, self.pedantic, self.factory.spool_dir)
        self._mode = DATA
        self.setTimeout(DATA_TIMEOUT)
        self._write_reply(c.C354_START_DATA, None, "go ahead, end with <CR><LF>.<CR><LF>")

    def _data_done(self):
        reader, self._reader = self._reader, None
        if reader.smuggling:
            reader.close()
            self._reset()
            log.info("refused message: {what}", what=reader.smuggling, cid=self.session.cid)
            raise SMTPReply(
                c.C554_TRANSACTION_FAILED, c.SE_MSG_OTHER0,
                f"message refused: {reader.smuggling} (protection against SMTP smuggling);"
                " lines must end with CRLF",
            )
        return self._finish_message(reader)

    def cmd_BDAT(self, arg):
        """BDAT size [LAST] (RFC 3030 2). The chunk is read even when refused."""
        parts = arg.split()
        if not parts or len(parts) > 2 or not parts[0].isdigit() or len(parts[0]) > 14 or (
            len(parts) == 2 and parts[1].upper() != "LAST"
        ):
            # Without a valid size the chunk cannot be skipped: close (RFC 3030 2).
            raise SMTPReply(c.C501_BAD_PARAM_SYNTAX, c.SE_PROTO_SYNTAX2, "bad BDAT syntax, closing", close=True)
        size = int(parts[0])
        last = len(parts) == 2
        error = None
        env = self.envelope
        if env is None:
            error = SMTPReply(c.C503_BAD_CMD_SEQUENCE, c.SE_PROTO_CMD_OUT_OF_SEQUENCE1, "MAIL first")
        elif not env.recipients:
            error = SMTPReply(c.C554_TRANSACTION_FAILED, c.SE_ADDR_OTHER0, "no valid recipients")
        if self._reader is None:
            self._reader = ChunkReader(self.factory.max_message_size, self.factory.spool_dir)
        self._bdat_error = error
        self._bdat_last = last
        self._reader.start_chunk(size)
        self._mode = BDAT
        self.setTimeout(DATA_TIMEOUT)
        if size == 0:
            self._mode = CMD
            return self._bdat_done()

    def _bdat_done(self):
        if self._bdat_error is not None:
            error = self._bdat_error
            self._discard_reader()
            self._bdat_error = None
            raise error
        if not self._bdat_last:
            return SMTPReply(c.C250_COMPLETED, c.SE_OTHER0, f"{self._reader.size} bytes received")
        reader, self._reader = self._reader, None
        return self._finish_message(reader)

    def _finish_message(self, reader):
        env = self.envelope
        f = self.factory
        if reader.too_large:
            reader.close()
            self._reset()
            raise SMTPReply(c.C552_STORAGE_EXCEEDED, c.SE_MAIL_SYSTEM_MSG_TOO_LARGE4,
                            f"message too large, limit is {f.max_message_size} bytes")
        if reader.spool_error is not None:
            log.error("spooling message to {dir}: {error}", dir=f.spool_dir, error=reader.spool_error,
                      cid=self.session.cid)
            reader.close()
            self._reset()
            code, se, text = spool_error_reply(reader.spool_error)
            raise SMTPReply(code, se, text)
        if reader.has_8bit and env.body == "7BIT" and self.pedantic:
            reader.close()
            self._reset()
            raise SMTPReply(c.C554_TRANSACTION_FAILED, c.SE_MSG_OTHER0,
                            "8-bit data without BODY=8BITMIME (pedantic mode)")
        if reader.has_nul and env.body != "BINARYMIME" and self.pedantic:
            # RFC 5322 3.5 (text excludes %d0), RFC 2045 2.7/2.8: no NUL in 7bit or
            # 8bit data; only BINARYMIME (RFC 3030 3) may carry any octet.
            reader.close()
            self._reset()
            raise SMTPReply(c.C554_TRANSACTION_FAILED, c.SE_MSG_OTHER0,
                            "NUL byte in message (pedantic mode)")
        d = f.read_spool(reader)

        def unreadable(failure):
            # The end of the data could not be written out or read back (disk full).
            failure.trap(OSError)
            log.error("reading spooled message from {dir}: {error}", dir=f.spool_dir, error=failure.value,
                      cid=self.session.cid)
            reader.close()
            code, se, text = spool_error_reply(failure.value)
            raise SMTPReply(code, se, text)

        d.addErrback(unreadable)

        def got(data):
            reader.close()
            if self._submission:
                return f.backend.submit(self.session, env, data, has_8bit=reader.has_8bit)
            return f.backend.deliver(self.session, env, data, has_8bit=reader.has_8bit)

        def done(result):
            self._reset()
            return result

        return d.addCallback(got).addBoth(done)

    def cmd_RSET(self, arg):
        """RSET (RFC 5321 4.1.1.5). Any state."""
        self._reset()
        return SMTPReply(c.C250_COMPLETED, c.SE_OTHER0, "reset")

    def cmd_NOOP(self, arg):
        return SMTPReply(c.C250_COMPLETED, c.SE_OTHER0, "ok")

    def cmd_QUIT(self, arg):
        self._write_reply(c.C221_CLOSING, c.SE_OTHER0, f"{self.factory.hostname} closing")
        self._close()

    def cmd_VRFY(self, arg):
        # RFC 5321 3.5.3: 252 when we will not tell.
        return SMTPReply(c.C252_CANNOT_VRFY, c.SE_PROTO_VRFY_NOT_VERIFIED3, "not verifying addresses, send mail to find out")

    def cmd_EXPN(self, arg):
        return SMTPReply(c.C502_CMD_NOT_IMPLEMENTED, c.SE_SEC_EXPN_NOT_AUTHORIZED2, "EXPN not available")

    def cmd_HELP(self, arg):
        return SMTPReply(c.C214_HELP, c.SE_OTHER0, "see RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH")

    # -- helpers

    def _reset(self):
        self.envelope = None
        self._discard_reader()

    def _discard_reader(self):
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _path_end(text):
    """Index of the ">" closing a path that may contain quoted strings."""
    quoted = False
    i = 1
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return i
        i += 1
    return -1


class SMTPFactory(protocol.Factory):
    """Builds SMTPServer connections for one listener kind."""

    protocol = SMTPServer
    noisy = False

    def __init__(
        self, kind, hostname, backend, *, tls_context=None, max_message_size=100 * 1024 * 1024,
        pedantic=False, no_starttls=False, require_starttls=False, require_tls_for_auth=True,
        spool_dir=None, clock=None, threadpool_run=None,
    ):
        self.kind = kind
        self.hostname = hostname
        self.backend = backend
        self.tls_context = tls_context
        self.max_message_size = max_message_size
        self.pedantic = pedantic
        self.no_starttls = no_starttls
        self.require_starttls = require_starttls
        self.require_tls_for_auth = require_tls_for_auth
        self.spool_dir = spool_dir
        self.clock = clock
        self._threadpool_run = threadpool_run

    def clock_or_reactor(self):
        return default_reactor(self.clock)

    def read_spool(self, reader):
        """The spooled message as bytes; read off the reactor when it went to disk."""
        if not getattr(reader.file, "_rolled", False) or self._threadpool_run is None:
            return defer.succeed(reader.read_all())
        return self._threadpool_run(reader.read_all)
