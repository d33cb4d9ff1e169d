"""IMAP connection framing: lines and literals in, responses out, one command at a time.

A protocol of our own, not ``twisted.mail.imap4.IMAP4Server`` (design notes §5). Bytes are
cut into complete commands (a line, plus literals when the line ends in a literal header,
RFC 9051 4.3 and 7.5; RFC 7888 LITERAL+/LITERAL-), each parsed by
``moxtw.imapserver.parser`` and run by ``moxtw.imapserver.session.Session``. A command
whose handler returns a Deferred holds back the commands after it, so pipelined commands
are answered in order. IDLE (RFC 2177), AUTHENTICATE continuations and COMPRESS=DEFLATE
(RFC 4978) are handled here too. Limits: line length, literal size (APPENDLIMIT for
APPEND, small otherwise, a few KB before login), total command size. Message literals
of APPEND and REPLACE over SPOOL_THRESHOLD are written to a spool file in the account's
tmp/ as they arrive, one slice at a time with reading paused meanwhile, so a large
upload costs a slice of memory, not its size. Replies are written no faster than the
client reads them (``moxtw.commandinput``).
"""

import zlib

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from moxtw import log as mlog
from moxtw.clock import default_reactor
from moxtw.commandinput import SerialInput
from moxtw.imapserver import parser
from moxtw.imapserver.session import NOT_AUTHENTICATED, IMAPError, Session

log = Logger(namespace="moxtw.imapserver")

MAX_LINE = 64 * 1024
MAX_LITERAL = 1024 * 1024  # for commands other than APPEND/REPLACE
MAX_PREAUTH_LITERAL = 8 * 1024  # before login: a LOGIN/AUTHENTICATE/ID argument at most
MAX_NONSYNC_LITERAL = 4096  # RFC 7888 LITERAL-
SPOOL_THRESHOLD = 128 * 1024  # APPEND/REPLACE literals over this go to a spool file
SPOOL_SLICE = 64 * 1024  # bytes written to a spool at a time
STREAM_SLICE = 16 * 1024  # bytes of a message file sent at a time
MAX_COMMAND = 2 * 1024 * 1024  # bytes of a command in memory (spooled literals aside)
MAX_COMMAND_LITERALS = 1000  # literals in one command (messages of a MULTIAPPEND)
TIMEOUT_UNAUTHENTICATED = 60
TIMEOUT_AUTHENTICATED = 30 * 60  # RFC 9051 5.4: at least 30 minutes
ABORT_GRACE = 60  # seconds after an autologout before a connection that does not drain is cut

LINE, LITERAL, IDLE, CONTINUATION, CLOSED = range(5)


class IMAPServer(SerialInput, protocol.Protocol, TimeoutMixin):
    closed_mode = CLOSED

    @property
    def max_backlog(self):
        """Unprocessed input kept while a command runs: before login a line and a login
        literal (so a connection costs KBs), after it a whole command."""
        session = getattr(self, "session", None)
        if session is None or session.state == NOT_AUTHENTICATED:
            return MAX_LINE + MAX_PREAUTH_LITERAL
        return MAX_COMMAND

    def __init__(self):
        self._init_input()
        self._mode = LINE
        self._cmd = []  # parts of the command being received
        self._cmd_size = 0
        self._cmd_literals = 0  # literals in the command so far
        self._literal_left = 0
        self._cmd_len = 0  # bytes in self._cmd
        self._spools = {}  # offset in the command -> Spool, for spooled literals
        self._spool = None  # the Spool the current literal goes to
        self._spool_pending = []
        self._spool_pending_len = 0
        self._spool_writing = False
        self._continuation = None  # Deferred waiting for a continuation line
        self._idle_tag = None
        self._inflate = None
        self._inflate_tail = b""  # compressed input not inflated yet
        self._inflating = False
        self._deflate = None
        self._abort_call = None

    # -- connection

    def connectionMade(self):
        f = self.factory
        if f.clock is not None:
            self.callLater = f.clock.callLater
        self.session = Session(self, f)
        refusal = f.backend.connection_allowed(self.session)
        if refusal:
            self.write(f"* BYE [UNAVAILABLE] {refusal}\r\n".encode())
            self.close()
            return
        self._watch_output()
        self.setTimeout(TIMEOUT_UNAUTHENTICATED)
        self.write(self.session.greeting())

    def connectionLost(self, reason):
        self.setTimeout(None)
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._mode = CLOSED
        self._output_stopped()
        self._reset_command()  # discards a literal being spooled
        self.session.connection_lost()

    def timeoutConnection(self):
        self.write(b"* BYE [UNAVAILABLE] autologout, idle for too long\r\n")
        self.close()
        # loseConnection waits until the output is sent: a client that stopped reading
        # would keep the connection (and a paused response) forever. Cut it after a grace.
        self._abort_call = self.callLater(ABORT_GRACE, self.transport.abortConnection)

    def close(self):
        self._mode = CLOSED
        self._lose_connection()

    def authenticated(self):
        self.setTimeout(TIMEOUT_AUTHENTICATED)

    def unauthenticated(self):
        self.setTimeout(TIMEOUT_UNAUTHENTICATED)  # RFC 8437: back to not authenticated

    # -- output

    def write(self, data):
        if self._mode == CLOSED and not data.startswith(b"* BYE"):
            return
        if self.factory.trace:
            mlog.trace(log, "S: {data}", data=data[:500].decode("utf-8", "replace"), cid=self.session.cid)
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.transport.write(data)

    def flow_gate(self):
        """A FlowGate for writing a long response at the client's pace."""
        return FlowGate(self)

    @defer.inlineCallbacks
    def stream_file(self, f, length):
        """Send ``length`` bytes from file ``f`` (positioned) as it is consumed, in
        slices, waiting for the output to drain in between. Deferred fires when done."""
        left = length
        while left > 0:
            yield self.wait_output()
            if self.output_stopped:
                return
            n = min(STREAM_SLICE, left)
            data = f.read(n)
            if not data:
                # The file is shorter than the index says: pad, so the literal stays valid.
                data = b" " * n
            left -= len(data)
            self.write(data)

    def start_compression(self):
        """RFC 4978: everything after the tagged OK is deflated, both ways."""
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._inflate = zlib.decompressobj(-15)
        rest, self._buf = bytes(self._buf), bytearray()
        if rest:
            self.dataReceived(rest, _raw=False)

    def start_tls(self, context):
        # RFC 9051 6.2.1: nothing pipelined after STARTTLS may be used.
        del self._buf[:]
        self.transport.startTLS(context)

    # -- input

    def dataReceived(self, data, _raw=True):
        if self._mode == CLOSED:
            return
        if self._inflate is not None and _raw:
            self._inflate_tail += data
            self._inflate_more()
            return
        self._received(data)

    def _inflate_more(self):
        """Inflate in bounded steps; each step's output is processed before the next, so
        a small compressed chunk cannot balloon the buffer, and nothing is lost when a
        chunk inflates to more than one step (unconsumed_tail). While a command runs and
        the backlog is full, the rest waits compressed (and reading pauses)."""
        if self._inflating:
            return
        self._inflating = True
        try:
            while self._inflate_tail and self._mode != CLOSED:
                if (self._busy or self.output_full) and len(self._buf) > self.max_backlog:
                    self._pause_reading("inflate")
                    return
                try:
                    out = self._inflate.decompress(self._inflate_tail, STREAM_SLICE * 4)
                except zlib.error:
                    self.write(b"* BYE [PARSE] invalid compressed data\r\n")
                    self.close()
                    return
                self._inflate_tail = self._inflate.unconsumed_tail
                self._received(out)
            self._resume_reading("inflate")
        finally:
            self._inflating = False

    def _process(self):
        super()._process()
        if self._inflate_tail and not self._inflating and self._mode != CLOSED:
            self._inflate_more()

    def _received(self, data):
        self.resetTimeout()
        self._feed(data)

    def _process_buffer(self):
        # While a command runs, only the lines it waits for (IDLE's DONE, AUTHENTICATE
        # responses) are read; other pipelined commands wait their turn.
        while self._buf and (
            self._may_process()
            or (self._mode in (IDLE, CONTINUATION) and not self.output_full)
        ):
            if self._mode == LITERAL and self._spool is not None:
                if not self._spool_step():
                    return
                continue
            if self._mode == LITERAL:
                take = bytes(self._buf[: self._literal_left])
                del self._buf[: len(take)]
                self._cmd.append(take)
                self._cmd_len += len(take)
                self._literal_left -= len(take)
                if self._literal_left:
                    return
                self._mode = LINE
                continue
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_LINE:
                    self._too_long()
                return
            line = bytes(self._buf[: nl + 1])
            del self._buf[: nl + 1]
            if len(line) > MAX_LINE:
                self._too_long()
                return
            if not line.endswith(b"\r\n"):
                line = line[:-1] + b"\r\n"  # tolerate bare LF (RFC 9051 requires CRLF)
            if self._mode == IDLE:
                self._idle_line(line)
            elif self._mode == CONTINUATION:
                d, self._continuation = self._continuation, None
                self._mode = LINE
                d.callback(line[:-2])
            else:
                self._line(line)

    def _too_long(self):
        self.write(b"* BYE [TOOBIG] line too long\r\n")
        self.close()

    def _line(self, line):
        self._cmd.append(line)
        self._cmd_len += len(line)
        self._cmd_size += len(line)
        try:
            lit = parser.literal_at_end(line)
        except parser.ParseError as e:
            # The tag is known even when the literal header is not: answer with it, or a
            # client waiting for its tagged reply (or the "+") hangs.
            tag = e.tag or parser.tag_of(self._cmd[0])
            self._reset_command()
            self.write(_bad(tag, e.text))
            self.session.bad_command()
            return
        if lit is None:
            data = b"".join(self._cmd)
            spools, self._spools = self._spools, {}
            self._reset_command()
            self._run_command(data, spools)
            return
        size, sync, _binary = lit
        limit = self._literal_limit()
        self._cmd_literals += 1
        refusal = None
        if size > limit or self._cmd_size + size > limit + MAX_LINE:
            refusal = f"[TOOBIG] literal too large, limit is {limit} bytes"
        elif self._cmd_literals > MAX_COMMAND_LITERALS:
            # A MULTIAPPEND of many tiny messages: each costs a spool file.
            refusal = f"[LIMIT] at most {MAX_COMMAND_LITERALS} literals in one command"
        elif self._cmd_len > MAX_COMMAND:
            # Text between literals (flag lists) is kept in memory; literals are spooled.
            refusal = f"[TOOBIG] command over {MAX_COMMAND} bytes besides its messages"
        if refusal is not None:
            tag = parser.tag_of(self._cmd[0]) or "*"
            self._reset_command()
            if not sync:
                # A non-synchronizing literal is on its way; we cannot skip it safely.
                self.write(f"* BYE {refusal}\r\n".encode())
                self.close()
                return
            # RFC 7889 (APPENDLIMIT) and RFC 9051 7.1: refuse instead of the continuation.
            self.write(f"{tag} NO {refusal}\r\n".encode())
            return
        if not sync and size > MAX_NONSYNC_LITERAL and not self.factory.literal_plus:
            self._reset_command()
            self.write(b"* BYE [TOOBIG] non-synchronizing literal over 4096 bytes (LITERAL-)\r\n")
            self.close()
            return
        if sync:
            self.write(b"+ Ready for literal data\r\n")
        self._cmd_size += size
        self._literal_left = size
        self._mode = LITERAL
        authenticated = self.session.state != NOT_AUTHENTICATED
        in_memory = self._cmd_len + size > SPOOL_THRESHOLD + MAX_LINE
        if (size > SPOOL_THRESHOLD or in_memory) and authenticated and self._is_message_command():
            # Only a message literal becomes a spool (the parser refuses one elsewhere).
            # Counting the command's bytes in memory spools the small literals of a long
            # MULTIAPPEND too, once they add up (a mailbox name literal comes first and
            # could only get here at over 128 KB, refused anyway).
            self._spool = self.session.account.spool()
            self._spools[self._cmd_len] = self._spool

    def _spool_step(self):
        """Move literal bytes from the buffer towards the spool, a slice per write.
        Returns whether to go on with the buffer (false while a write is in flight or
        more data is needed)."""
        if self._spool_writing:
            return False
        take = bytes(self._buf[: self._literal_left])
        del self._buf[: len(take)]
        self._literal_left -= len(take)
        self._spool_pending.append(take)
        self._spool_pending_len += len(take)
        last = not self._literal_left
        if not last and self._spool_pending_len < SPOOL_SLICE:
            return False  # the buffer is empty: wait for more
        data = b"".join(self._spool_pending)
        self._spool_pending = []
        self._spool_pending_len = 0
        spool = self._spool
        self._spool_writing = True
        self._pause_reading("spool")
        d = spool.write(data)
        if last:
            d.addCallback(lambda _: spool.finish())
        d.addCallbacks(self._spool_written, self._spool_failed, callbackArgs=(spool, last))
        return not self._spool_writing  # the write may have completed already

    def _spool_written(self, _, spool, last):
        if spool is not self._spool:
            return  # the command was dropped (connection lost) meanwhile
        self._spool_writing = False
        if last:
            self._spool = None
            self._mode = LINE
        self._resume_reading("spool")
        if self._mode != CLOSED:
            self._process()

    def _spool_failed(self, failure, spool, last):
        log.failure("writing literal to spool file", failure, cid=self.session.cid)
        if spool is not self._spool:
            return
        self._spool_writing = False
        self._reset_command()
        self.write(b"* BYE [UNAVAILABLE] cannot store message data now, try again later\r\n")
        self.close()

    def _literal_limit(self):
        """The largest literal accepted at this point of the command being received."""
        if self.session.state == NOT_AUTHENTICATED:
            # Before login only small arguments (LOGIN, AUTHENTICATE, ID) are accepted:
            # an anonymous client must not make the server hold megabytes.
            return MAX_PREAUTH_LITERAL
        if self._is_message_command():
            return self.factory.append_limit
        return MAX_LITERAL

    def _is_message_command(self):
        """Whether the command being received is APPEND, REPLACE or UID REPLACE."""
        first = self._cmd[0].split(b" ", 3)
        if len(first) >= 2 and first[1].upper() in (b"APPEND", b"REPLACE"):
            return True
        return len(first) >= 3 and first[1].upper() == b"UID" and first[2].upper() == b"REPLACE"

    def _reset_command(self):
        self._cmd = []
        self._cmd_literals = 0
        self._cmd_size = 0
        self._cmd_len = 0
        self._literal_left = 0
        spools, self._spools = self._spools, {}
        self._spool = None
        self._spool_pending = []
        self._spool_pending_len = 0
        self._spool_writing = False
        self._resume_reading("spool")
        _discard(spools)

    def _run_command(self, data, spools=None):
        spools = spools or {}
        try:
            cmd = parser.parse_command(data, utf8=self.session.utf8, spooled=spools)
        except parser.ParseError as e:
            _discard(spools)
            code = getattr(e, "code", None)
            if (code == "BADCHARSET" or e.no) and e.tag:
                # RFC 9051 6.4.4: an unsupported charset gets NO [BADCHARSET], not BAD.
                self.write(f"{e.tag} NO [{code}] {e.text}\r\n".encode("utf-8", "replace"))
                if e.no:
                    return
            else:
                self.write(_bad(e.tag, (f"[{code}] " if code else "") + e.text))
            self.session.bad_command(data)
            return
        except Exception:
            _discard(spools)
            log.failure("parser failed", cid=self.session.cid)
            self.write(b"* BAD internal error parsing command\r\n")
            return
        self._busy = True
        d = defer.maybeDeferred(self.session.execute, cmd)
        d.addErrback(self._command_failed, cmd)
        if spools:
            # Delivered spools were renamed into the store; the rest are removed.
            d.addBoth(lambda r: (_discard(spools), r)[1])
        d.addBoth(self._resume)

    def _command_failed(self, failure, cmd):
        if failure.check(IMAPError):
            e = failure.value
            self.write(f"{cmd.tag} {e.kind} {e.text}\r\n".encode("utf-8"))
            return None
        log.failure("command {command} failed", failure, command=cmd.name, cid=self.session.cid)
        self.write(f"{cmd.tag} NO [SERVERBUG] internal error (cid {self.session.cid})\r\n".encode())
        return None

    # -- continuations (AUTHENTICATE) and IDLE

    def read_continuation(self):
        """The next line from the client (without CRLF), for AUTHENTICATE."""
        self._continuation = defer.Deferred()
        self._mode = CONTINUATION
        return self._continuation

    def start_idle(self, tag):
        self._idle_tag = tag
        self._mode = IDLE
        self._idle_done = defer.Deferred()
        return self._idle_done

    def _idle_line(self, line):
        # RFC 2177 3: only "DONE" ends IDLE.
        self._mode = LINE
        d, self._idle_done = self._idle_done, None
        if line[:-2].upper() == b"DONE":
            d.callback(True)
        else:
            d.callback(False)


class FlowGate:
    """For a writer of a long response: ``wait()`` fires once the client has read
    enough of what was written (at once when the output is not full); ``stopped``
    says the connection is gone and the writer should stop early."""

    def __init__(self, conn):
        self._conn = conn

    @property
    def stopped(self):
        return self._conn.output_stopped

    def wait(self):
        return self._conn.wait_output()

    def close(self):
        pass


def _discard(spools):
    for spool in spools.values():
        spool.discard()


def _bad(tag, text):
    return f"{tag or '*'} BAD {text}\r\n".encode("utf-8", "replace")


class IMAPFactory(protocol.Factory):
    protocol = IMAPServer
    noisy = False

    def __init__(
        self, kind, hostname, backend, *, tls_context=None, require_tls_for_login=True,
        append_limit=100 * 1024 * 1024, clock=None, trace=False, literal_plus=True,
    ):
        self.kind = kind  # "imap" or "imaps"
        self.hostname = hostname
        self.backend = backend
        self.tls_context = tls_context
        self.require_tls_for_login = require_tls_for_login
        self.append_limit = append_limit
        self.clock = clock
        self.trace = trace
        self.literal_plus = literal_plus

    def clock_or_reactor(self):
        return default_reactor(self.clock)
